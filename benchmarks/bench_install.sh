#!/usr/bin/env bash
# What the tracking dependency adds to an install: a fresh venv gets the project's other
# dependencies (the README's install, constraints-cpu.txt), then `mlflow-skinny` (what
# pyproject.toml requires) is timed and sized on top of it, then the full `mlflow` on top of
# that, for comparison. pip's cache is warm for all three (each was downloaded before), so the
# times are resolve + unpack + install, not download.
#
#   nice -n 19 bash benchmarks/bench_install.sh [PYTHON] [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
venv=${2:-/tmp/lvm-bench-install}
export PIP_DISABLE_PIP_VERSION_CHECK=1
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/pip" install -q -c constraints-cpu.txt)
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

stamp() { date +%s.%N; }
size_mb() { du -sm "$site" | cut -f1; }
packages() { "$venv/bin/pip" list --format=freeze | wc -l; }
report() { # name, seconds, MB before, MB after, packages before, packages after
  printf '%-42s %7.1f s  +%5d MB  +%3d packages (site-packages %d MB)\n' \
    "$1" "$2" "$(($4 - $3))" "$(($6 - $5))" "$4"
}

# The project's dependencies without the tracking one (pyproject.toml minus mlflow-skinny).
deps=$("$venv/bin/python" - <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith("mlflow")))
EOF
)
mapfile -t deps <<<"$deps"
mb0=$(size_mb); n0=$(packages); t0=$(stamp)
"${pip[@]}" "${deps[@]}"
t1=$(stamp); mb1=$(size_mb); n1=$(packages)
report "project dependencies without tracking" "$(echo "$t1 - $t0" | bc)" "$mb0" "$mb1" "$n0" "$n1"

skinny=$(grep -o '"mlflow-skinny[^"]*"' pyproject.toml | tr -d '"')
"${pip[@]}" "$skinny"
t2=$(stamp); mb2=$(size_mb); n2=$(packages)
report "+ $skinny" "$(echo "$t2 - $t1" | bc)" "$mb1" "$mb2" "$n1" "$n2"

"${pip[@]}" mlflow
t3=$(stamp); mb3=$(size_mb); n3=$(packages)
report "+ mlflow (the full package, for comparison)" "$(echo "$t3 - $t2" | bc)" "$mb2" "$mb3" "$n2" "$n3"
"$venv/bin/pip" list --format=freeze | grep -i -E '^(mlflow|mlflow-skinny|mlflow-tracing|pyarrow)=='
rm -rf "$venv"
