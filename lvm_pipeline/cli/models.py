"""``lvm models``: the five variants of a preset size, their sizes and one Mamba block's keys;
``lvm models --promoted``: which checkpoint of each is promoted (lvm_pipeline/cli/promote.py).

Parameter counts are measured by building each model (on PyTorch's ``meta`` device, so nothing
is allocated) at two input dims: 384 (all-MiniLM-L6-v2, the default embedder) and 768
(GTR-T5-base, the reference project's embedder). The key names are those of the first Mamba
block's ``state_dict``, which mamba_ssm's ``Mamba`` shares (see models/mamba.py).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lvm_pipeline.cli.common import EXIT_OK, add_command

INPUT_DIMS = {"384": "all-MiniLM-L6-v2", "768": "GTR-T5-base"}


def describe(size: str) -> list[dict[str, Any]]:
    """One record per variant: config, parameter counts per input dim, Mamba block keys."""
    import torch

    from lvm_pipeline.models import LVM, VARIANTS, preset

    records = []
    for variant in VARIANTS:
        models = {}
        for dim in INPUT_DIMS:
            with torch.device("meta"):
                models[dim] = LVM(preset(variant, size, d_in=int(dim)))
        model = next(iter(models.values()))
        block = f"blocks.{model.config.layout.index('mamba')}"
        keys = {k.removeprefix(block + "."): list(v.shape)
                for k, v in model.state_dict().items() if k.startswith(block + ".")}
        records.append({"variant": variant, "config": model.config.to_dict(),
                        "n_params": {dim: m.num_params() for dim, m in models.items()},
                        "mamba_block": block, "mamba_block_keys": keys})
    return records


def render(size: str, records: list[dict[str, Any]]) -> str:
    from lvm_pipeline.models import layout_text

    header = (f"{'variant':<15} {'layers':<20} {'d_model':>7} {'d_state':>7} {'d_inner':>7} "
              + " ".join(f"{'params@' + d:>11}" for d in INPUT_DIMS))
    lines = [f"preset '{size}'; params@384 = {INPUT_DIMS['384']} inputs, "
             f"params@768 = {INPUT_DIMS['768']} inputs", header, "-" * len(header)]
    for r in records:
        c = r["config"]
        lines.append(f"{r['variant']:<15} {layout_text(c['layout']):<20} {c['d_model']:>7} "
                     f"{c['d_state']:>7} {c['expand'] * c['d_model']:>7} "
                     + " ".join(f"{r['n_params'][d] / 1e6:>10.2f}M" for d in INPUT_DIMS))
    # The key names are the same for every variant; the shapes differ (shown at d_in 384).
    lines += ["", "state_dict of the first Mamba block (mixer.* are mamba_ssm Mamba's names):",
              f"  {'key':<24} " + " ".join(f"{r['variant']:>16}" for r in records),
              f"  {'(prefix)':<24} " + " ".join(f"{r['mamba_block'] + '.':>16}" for r in records)]
    for name in records[0]["mamba_block_keys"]:
        shapes = ["×".join(map(str, r["mamba_block_keys"][name])) for r in records]
        lines.append(f"  {name:<24} " + " ".join(f"{s:>16}" for s in shapes))
    return "\n".join(lines)


def cmd_models(args: argparse.Namespace) -> int:
    if args.promoted:
        from lvm_pipeline.cli.common import resolve_data_dir
        from lvm_pipeline.cli.promote import promoted_table

        print(promoted_table(resolve_data_dir(args.data_dir), args.json))
        return EXIT_OK
    records = describe(args.preset)
    if args.json:
        print(json.dumps({"preset": args.preset, "input_dims": INPUT_DIMS, "variants": records},
                         indent=2))
    else:
        print(render(args.preset, records))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    from lvm_pipeline.models import SIZES

    parser = add_command(sub, "models", "List the five LVM variants of a preset size: config, "
                                        "parameter count, one Mamba block's state_dict keys.")
    parser.add_argument("--preset", choices=SIZES, default="tiny", help="preset size")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--promoted", action="store_true",
                        help="instead: each variant's promoted checkpoint build, when and how it "
                             "was promoted (gate, manual, rollback) and by whom")
    parser.set_defaults(func=cmd_models)
