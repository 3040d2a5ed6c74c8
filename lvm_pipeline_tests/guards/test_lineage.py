"""The lineage guard: a build made from a build that is no longer current is stale."""

from __future__ import annotations

from lvm_pipeline.guards import check_lineage
from lvm_pipeline.sequences.windows import SplitConfig, build_windows, native_info, publish_sequences
from lvm_pipeline.store import kinds
from lvm_pipeline_tests.conftest import publish_synthetic_payload


def test_lineage_names_both_build_ids(store, synthetic_payload):
    build = publish_sequences(store, kinds.EVAL_SEQUENCES, synthetic_payload,
                              build_windows(synthetic_payload, SplitConfig()),
                              native_info(SplitConfig()))
    assert check_lineage(store, build).passed
    other = publish_synthetic_payload(store, [10] * 12, seed=9)
    result = check_lineage(store, build)
    assert not result.passed and "STALE LINEAGE" in result.message
    assert (f"built from payload {synthetic_payload.build_id[:12]}, but the current payload is "
            f"{other.build_id[:12]}") in result.examples[0]
