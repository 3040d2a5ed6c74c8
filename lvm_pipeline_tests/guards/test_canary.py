"""The embedder canary: the configured encoder must reproduce the stored vectors."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.guards import GuardConfig, check_embedder_canary
from lvm_pipeline_tests.conftest import LookupEncoder
from lvm_pipeline_tests.guard_cases import sound_payload


def test_canary_passes_when_the_encoder_reproduces_the_payload():
    p = sound_payload()
    result = check_embedder_canary(p, LookupEncoder(p), GuardConfig(canary_sample=16))
    assert result.passed and result.figure > 0.9999
    assert len(result.details["rows"]) == 16


def test_canary_blocks_same_name_other_encoder():
    p = sound_payload()
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((p.dim, p.dim)))
    other = LookupEncoder(p, transform=lambda v: (v @ q).astype(np.float32))
    result = check_embedder_canary(p, other, GuardConfig(canary_sample=16))
    assert not result.passed and result.figure < 0.9
    assert "ENCODER MISMATCH" in result.message and "below 0.99" in result.message
    assert "configured embedder 'synthetic'" in result.message
    assert result.examples and "article 'art-" in result.examples[0]
    wrong_dim = check_embedder_canary(p, LookupEncoder(p, dim=48))
    assert not wrong_dim.passed and "makes 48-d vectors, the payload holds 32-d" in wrong_dim.message
