"""Per-asset code versions: an edit marks "code version changed" only on the assets whose
computation it can change (lvm_pipeline/defs/code_versions.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from lvm_pipeline.definitions import defs
from lvm_pipeline.defs.code_versions import (
    OWNED,
    PACKAGE,
    UPSTREAM,
    code_version,
    trained_baselines_code_version,
)
from lvm_pipeline.models import VARIANTS

ASSETS = sorted(OWNED)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code") / "lvm_pipeline"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _versions_after_editing(root: Path, relative: str) -> dict[str, str]:
    """Each asset's code version once ``relative`` (a file of the package) gained a line."""
    file = root / relative
    original = file.read_text()
    file.write_text(original + "\n# an edit\n")
    try:
        return {asset: code_version(asset, root) for asset in ASSETS}
    finally:
        file.write_text(original)


def _changed(root: Path, relative: str) -> set[str]:
    before = {asset: code_version(asset, root) for asset in ASSETS}
    after = _versions_after_editing(root, relative)
    return {asset for asset in ASSETS if after[asset] != before[asset]}


def test_each_asset_declares_its_upstream_as_the_graph_has_it():
    graph = defs().resolve_asset_graph()
    for asset in ASSETS:
        upstream = {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}
        ancestors = set(upstream)
        while upstream:
            upstream = {k.to_user_string() for a in upstream
                        for k in graph.get(dg.AssetKey(a)).parent_keys} - ancestors
            ancestors |= upstream
        assert set(UPSTREAM[asset]) == ancestors, asset


def test_the_definitions_carry_the_per_asset_versions():
    graph = defs().resolve_asset_graph()
    versions = {asset: graph.get(dg.AssetKey(asset)).code_version for asset in ASSETS}
    assert versions == {asset: code_version(asset) for asset in ASSETS}
    assert len(set(versions.values())) >= 6  # not one version for everything


@pytest.mark.parametrize(("edited", "changes"), [
    ("report/render.py", {"retrieval_report"}),
    ("models/mamba.py", set(VARIANTS)),
    ("training/loop.py", set(VARIANTS)),
    ("corpus/chunking.py", {"corpus"}),
    ("embedding/encoder.py", {"payload"}),
    ("search/index.py", {"faiss_index", "aligned_training_sequences", "aligned_eval",
                         *VARIANTS}),
    ("cli/report.py", set()),
    ("guards/alignment.py", set()),
])
def test_an_edit_changes_only_the_assets_it_can_change(package_copy, edited, changes):
    assert _changed(package_copy, edited) == changes


@pytest.mark.parametrize(("edited", "changes"), [
    ("report/render.py", False), ("report/build.py", False),
    ("report/trained_baselines.py", True), ("training/loop.py", True),
    ("training/losses.py", True)])
def test_the_report_trains_its_baselines_again_only_after_an_edit_of_their_code(
        package_copy, edited, changes):
    before = trained_baselines_code_version(package_copy)
    file = package_copy / edited
    original = file.read_text()
    file.write_text(original + "\n# an edit\n")
    try:
        assert (trained_baselines_code_version(package_copy) != before) == changes
    finally:
        file.write_text(original)
