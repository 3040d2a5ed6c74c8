"""``lvm models``: each variant's config, measured parameter counts and Mamba block keys."""

from __future__ import annotations

import json

from lvm_pipeline.cli import main
from lvm_pipeline.models import LVM, VARIANTS, preset

MIXER_KEYS = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
              "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"}


def test_models_json_lists_every_variant_with_measured_counts_and_mamba_ssm_keys(capsys):
    assert main(["models", "--preset", "paper", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    records = {r["variant"]: r for r in report["variants"]}
    assert list(records) == list(VARIANTS)
    for record in records.values():
        assert record["config"]["size"] == "paper"
        assert record["n_params"]["768"] > record["n_params"]["384"]
        assert set(record["mamba_block_keys"]) == {"norm.weight"} | {f"mixer.{k}"
                                                                     for k in MIXER_KEYS}
    xl = records["mamba_xl"]
    assert xl["mamba_block_keys"]["mixer.A_log"] == [768, 192]  # d_inner × d_state
    assert xl["mamba_block_keys"]["mixer.x_proj.weight"] == [24 + 2 * 192, 768]  # dt_rank 24
    assert records["mamba_sandwich"]["mamba_block"] == "blocks.2"  # after two attention layers
    # The counts are those of the real model, not a formula.
    assert records["mamba_s"]["n_params"]["768"] == LVM(preset("mamba_s", "paper",
                                                               d_in=768)).num_params()


def test_models_table_names_each_variant(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "preset 'tiny'" in out and "mixer.dt_proj.bias" in out
    assert all(f"\n{v} " in out for v in VARIANTS)
