"""The bundled embedder: offline, measured identity, unit vectors, clear errors."""

from __future__ import annotations

import hashlib
import os
import socket

import numpy as np
import pytest
import torch

from lvm_pipeline.embedding.encoder import (
    DEFAULT_EMBEDDER,
    Embedder,
    EmbedderConfig,
    EmbedderError,
    length_batches,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EmbedderConfig())


def test_bundled_model_loads_offline_with_a_measured_fingerprint(embedder, monkeypatch):
    assert embedder.dim == 384
    # device "auto" by default, and the identity records the device it resolved to.
    assert EmbedderConfig().device == "auto"
    assert embedder.identity()["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    weights = resolve_model_dir(DEFAULT_EMBEDDER) / "model.safetensors"
    digest = hashlib.sha256(b"model.safetensors" + weights.read_bytes()).hexdigest()
    assert embedder.fingerprint["weights_sha256"] == digest


def test_loading_opens_no_connection_and_sets_no_environment(monkeypatch):
    """Nothing downloads: the load reads the local folder only, with no network at all, and
    leaves the process's environment as it found it (no HF_HUB_OFFLINE written)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"the embedder opened a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    before = dict(os.environ)
    assert Embedder(EmbedderConfig()).dim == 384
    assert dict(os.environ) == before


def test_vectors_are_unit_norm_in_input_order(embedder):
    texts = ["A short one.", "A much longer sentence about the history of sailing ships.", "x"]
    v = embedder.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    one = embedder.encode([texts[1]])
    np.testing.assert_allclose(v[1], one[0], atol=1e-5)


BATCH_TEXTS_WORDS = ["the", "tide", "rose", "over", "harbour", "wall", "while", "ships",
                     "waited", "outside", "in", "fog"]


def batch_texts() -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(BATCH_TEXTS_WORDS, size=int(rng.integers(2, 40)))) + f" {i}."
            for i in range(48)]


def test_a_texts_vector_is_the_same_bytes_whatever_batch_it_is_in(embedder):
    """The embedding cache serves each text's vector from whichever batch first embedded it,
    so a payload is byte-identical to an empty cache's only if the batch does not matter."""
    texts = batch_texts()
    np.testing.assert_array_equal(embedder.encode(texts[::5]), embedder.encode(texts)[::5])


@pytest.mark.xfail(strict=True, reason="measured 2026-12-01: a batch of one short text (6-9 "
                   "tokens) runs other GEMM shapes; row 7 (6 tokens) differed by 6.5e-8 "
                   "(see embedding_cache)")
def test_a_text_embedded_alone_is_the_same_bytes_as_in_a_batch(embedder):
    texts = batch_texts()
    np.testing.assert_array_equal(np.stack([embedder.encode([t])[0] for t in texts[:8]]),
                                  embedder.encode(texts)[:8])


def test_unknown_embedder_says_it_never_downloads():
    with pytest.raises(EmbedderError, match=r"unknown embedder 'no-such-model'.*never download"):
        Embedder(EmbedderConfig(model="no-such-model"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_raises_instead_of_falling_back():
    with pytest.raises(EmbedderError, match=r"device 'cuda' requested but torch .* sees no CUDA"):
        Embedder(EmbedderConfig(device="cuda"))


def test_length_bucketed_batches_match_fixed_order_batches(embedder):
    """The fast path (sorted, token-budget batches) gives the reference's vectors in input
    order, even when every batch mixes texts of very different lengths in the reference."""
    words = ["the", "tide", "rose", "over", "the", "harbour", "wall", "while", "ships", "waited",
             "outside"]
    texts = [" ".join(words[: 1 + (7 * i) % len(words)] * (1 + i % 4)) for i in range(40)]
    small = Embedder(EmbedderConfig(max_batch_tokens=96, batch_size=8))
    fast = small.encode(texts)
    ref = embedder.encode_ref(texts, batch_size=7)
    np.testing.assert_allclose(fast, ref, atol=2e-5)
    assert len(length_batches(small.token_lengths(texts), 96, 8)) > 40 // 8  # budget-bound


def test_length_batches_cover_every_text_once_within_the_token_budget():
    lengths = np.random.default_rng(0).integers(1, 300, size=500)
    batches = length_batches(lengths, max_tokens=1024, max_texts=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 64 and (len(b) == 1 or len(b) * lengths[b].max() <= 1024)
        assert (lengths[b] == lengths[b[0]]).all()  # one length per batch: nothing padded
    assert [len(b) for b in length_batches(np.array([5000, 3]), 1024, 64)] == [1, 1]


def test_half_precision_is_refused_off_cuda():
    with pytest.raises(EmbedderError, match="precision 'bfloat16' needs a CUDA device"):
        Embedder(EmbedderConfig(precision="bfloat16"))
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        EmbedderConfig(precision="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 on CUDA)")
def test_bfloat16_on_cuda_reproduces_float32_on_cpu(embedder):
    """A payload embedded in bf16 on a GPU passes the canary of a float32 CPU embedder."""
    texts = [f"chunk {i}: the harbour wall held while the tide rose {i} times" for i in range(64)]
    gpu = Embedder(EmbedderConfig(device="cuda"))
    assert gpu.precision == "bfloat16"
    cos = np.einsum("ij,ij->i", gpu.encode(texts), embedder.encode(texts))
    assert cos.min() > 0.99


def test_a_zero_embedding_is_refused_not_left_at_zero():
    from lvm_pipeline.embedding.encoder import l2_normalise

    v = np.ones((4, 3), np.float32)
    np.testing.assert_allclose(np.linalg.norm(l2_normalise(v), axis=1), 1.0, atol=1e-7)
    v[2] = 0.0
    with pytest.raises(EmbedderError, match=r"zero-length embedding at rows \[2\]"):
        l2_normalise(v)
