"""The bundled embedder: offline, measured identity, unit vectors, clear errors."""

from __future__ import annotations

import hashlib
import os
import socket

import numpy as np
import pytest
import torch

from lvm_pipeline.embedding.cache import fingerprint
from lvm_pipeline.embedding.encoder import (
    DEFAULT_EMBEDDER,
    Embedder,
    EmbedderConfig,
    EmbedderError,
    fixed_shape_passes,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EmbedderConfig())


@pytest.fixture(scope="module")
def narrow() -> Embedder:
    """Passes of 3 texts padded to multiples of 8: many passes, most lengths' last one filled."""
    return Embedder(EmbedderConfig(batch_size=3, length_multiple=8))


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


def test_the_pass_shape_is_chosen_by_device_and_is_part_of_the_cache_fingerprint(embedder,
                                                                                  narrow):
    assert EmbedderConfig().batch_size is None and EmbedderConfig().length_multiple == 16
    assert embedder.batch_size == (256 if torch.cuda.is_available() else 16)
    for record in (embedder.identity(), embedder.output_identity()):
        assert record["batch_size"] == embedder.batch_size and record["length_multiple"] == 16
        assert record["batching"].startswith("fixed-shape-passes/")
    # Another pass shape makes other bytes: it must not read this one's cache folder.
    assert narrow.output_identity()["batch_size"] == 3
    assert fingerprint(narrow)[0] != fingerprint(embedder)[0]


@pytest.mark.parametrize(("field", "value", "valid"), [
    ("batch_size", 0, r"valid are None \(by device: 16 on a CPU, 256 on CUDA\) or an integer >= 1"),
    ("batch_size", True, "valid are None"),
    ("batch_size", 8.0, "valid are None"),
    ("length_multiple", 0, "valid is an integer >= 1"),
    ("length_multiple", None, "valid is an integer >= 1"),
])
def test_a_bad_pass_shape_is_refused_naming_the_valid_values(field, value, valid):
    with pytest.raises(ValueError, match=f"embedder {field} {value!r}: {valid}"):
        EmbedderConfig(**{field: value})


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


def test_a_text_embedded_alone_is_the_same_bytes_as_in_a_batch(embedder):
    texts = batch_texts()
    np.testing.assert_array_equal(np.stack([embedder.encode([t])[0] for t in texts[:8]]),
                                  embedder.encode(texts)[:8])


def test_texts_truncated_at_the_window_are_the_same_bytes_alone_as_among_shorter_ones(embedder):
    """A pass of texts cut at the model's window has no padding at all; the same texts in a
    pass with texts of 240-255 tokens (the same padded length, padding masked) must give the
    same bytes."""
    rng = np.random.default_rng(1)
    cut = [" ".join(rng.choice(BATCH_TEXTS_WORDS, size=400)) + f" {i}." for i in range(5)]
    near = [" ".join(rng.choice(BATCH_TEXTS_WORDS, size=int(rng.integers(236, 250))))
            + f" near {i}." for i in range(8)]
    window = embedder.window
    assert (embedder.token_lengths(cut) == window).all()
    assert ((embedder.token_lengths(near) >= window - 16)
            & (embedder.token_lengths(near) < window)).all()
    mixed = embedder.encode(near[:3] + cut + near[3:])
    np.testing.assert_array_equal(embedder.encode(cut), mixed[3:8])


def test_unknown_embedder_says_it_never_downloads():
    with pytest.raises(EmbedderError, match=r"unknown embedder 'no-such-model'.*never download"):
        Embedder(EmbedderConfig(model="no-such-model"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_raises_instead_of_falling_back():
    with pytest.raises(EmbedderError, match=r"device 'cuda' requested but torch .* sees no CUDA"):
        Embedder(EmbedderConfig(device="cuda"))


def test_fixed_shape_passes_match_fixed_order_batches(embedder, narrow):
    """The fast path (padded, fixed-shape passes) gives the reference's vectors in input
    order, even when every batch mixes texts of very different lengths in the reference."""
    words = ["the", "tide", "rose", "over", "the", "harbour", "wall", "while", "ships", "waited",
             "outside"]
    texts = [" ".join(words[: 1 + (7 * i) % len(words)] * (1 + i % 4)) for i in range(40)]
    fast = narrow.encode(texts)
    ref = embedder.encode_ref(texts, batch_size=7)
    np.testing.assert_allclose(fast, ref, atol=2e-5)
    passes = fixed_shape_passes(narrow.token_lengths(texts), 3, 8, narrow.window)
    assert len(passes) > 40 // 3 and any(p.n < 3 for p in passes)  # filled passes ran too


def test_fixed_shape_passes_hold_every_text_once_in_passes_of_one_shape():
    window, size, multiple = 256, 16, 16
    lengths = np.random.default_rng(0).integers(1, window + 1, size=500)
    lengths[:40] = window  # truncated at the window
    passes = fixed_shape_passes(lengths, size, multiple, window)
    kept = np.concatenate([p.rows[:p.n] for p in passes])
    assert sorted(kept.tolist()) == list(range(500))
    for p in passes:
        assert len(p.rows) == size and 1 <= p.n <= size
        assert (p.rows[p.n:] == p.rows[0]).all()  # the fill repeats a text of the pass
        texts = lengths[p.rows[:p.n]]
        # Every text below the window gets at least one padding token, in a multiple of 16.
        assert (texts < p.length).all() or (p.length == window and (texts <= window).all())
        assert p.length % multiple == 0 or p.length == window
        assert (texts >= min(p.length - multiple, window - multiple)).all()  # its own multiple
    assert [p.length for p in passes] == sorted((p.length for p in passes), reverse=True)
    assert fixed_shape_passes(np.array([], np.int64), size, multiple, window) == []
    # A window that is no multiple: lengths stop at it.
    assert [p.length for p in fixed_shape_passes(np.array([70, 77, 3]), 2, 16, 77)] == [77, 16]


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


def test_the_embedder_resource_exposes_every_config_field():
    """The UI's launchpad sets the pass shape through the resource: its fields are the
    config's, same names and defaults."""
    import dataclasses

    from lvm_pipeline.defs.resources import EmbedderResource

    assert EmbedderResource().config() == EmbedderConfig()
    assert set(EmbedderResource.model_fields) == {f.name for f in dataclasses.fields(EmbedderConfig)}
    assert EmbedderResource(batch_size=8, length_multiple=32).config() == EmbedderConfig(
        batch_size=8, length_multiple=32)
