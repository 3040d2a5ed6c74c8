"""The bundled embedder: offline, measured identity, unit vectors, clear errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lvm_pipeline.embedding import (
    DEFAULT_EMBEDDER,
    Embedder,
    EmbedderConfig,
    EmbedderError,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EmbedderConfig())


def test_bundled_model_loads_offline_with_a_measured_fingerprint(embedder, monkeypatch):
    assert embedder.dim == 384
    weights = resolve_model_dir(DEFAULT_EMBEDDER) / "model.safetensors"
    digest = hashlib.sha256(b"model.safetensors" + weights.read_bytes()).hexdigest()
    assert embedder.fingerprint["weights_sha256"] == digest


def test_vectors_are_unit_norm_in_input_order(embedder):
    texts = ["A short one.", "A much longer sentence about the history of sailing ships.", "x"]
    v = embedder.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    one = embedder.encode([texts[1]])
    np.testing.assert_allclose(v[1], one[0], atol=1e-5)


def test_unknown_embedder_says_it_never_downloads():
    with pytest.raises(EmbedderError, match=r"unknown embedder 'no-such-model'.*never download"):
        Embedder(EmbedderConfig(model="no-such-model"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_raises_instead_of_falling_back():
    with pytest.raises(EmbedderError, match=r"device 'cuda' requested but torch .* sees no CUDA"):
        Embedder(EmbedderConfig(device="cuda"))
