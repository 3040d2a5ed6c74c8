"""The synthetic reference-scale payload: its shape, its structure, and that a run can use it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, main
from lvm_pipeline.guards import GuardConfig, check_embedder_canary
from lvm_pipeline.payload.payload import import_payload, load_payload
from lvm_pipeline.sequences.windows import SplitConfig, build_windows
from lvm_pipeline.store.artifacts import ArtifactError, ArtifactStore
from lvm_pipeline.synthetic.neighbour_stats import CALIBRATED, neighbour_statistics
from lvm_pipeline.synthetic.payload import (
    CALIBRATION_SHAPE,
    TARGETS,
    SyntheticEncoder,
    SyntheticPayloadConfig,
    article_lengths,
    generate_vectors,
    publish_synthetic_payload,
)

SMALL = SyntheticPayloadConfig(articles=100, chunks=7000, dim=768, seed=3)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("synth"))
    build = publish_synthetic_payload(store, SMALL)
    store.set_current(build)  # a data dir whose payload `lvm run --payload` takes
    return build


def test_reference_article_lengths_have_the_reference_median_p95_and_total():
    lengths = article_lengths(SyntheticPayloadConfig())
    assert len(lengths) == 8447 and lengths.sum() == 584_545 and lengths.min() >= 1
    assert np.median(lengths) == 28
    assert abs(np.percentile(lengths, 95) - 290) <= 3
    # Windows of 6 chunks: about the reference's 495k (its count excluded a few articles).
    assert 480_000 < int(np.maximum(lengths - 5, 0).sum()) < 560_000
    again = article_lengths(SyntheticPayloadConfig())
    other = article_lengths(SyntheticPayloadConfig(seed=1))
    assert np.array_equal(lengths, again) and not np.array_equal(lengths, other)
    assert sorted(lengths) == sorted(other)  # the seed shuffles, the distribution stays


def test_impossible_shapes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="too few"):
        article_lengths(SyntheticPayloadConfig(articles=100, chunks=200))
    with pytest.raises(ValueError, match="random_cosine <= article_cosine"):
        SyntheticPayloadConfig(article_cosine=0.6)
    with pytest.raises(ValueError, match="unknown dtype"):
        SyntheticPayloadConfig(dtype="int8")
    with pytest.raises(ValueError, match=r"adjacent_cosine 0\.3 is out of reach"):
        SyntheticPayloadConfig(adjacent_cosine=0.3, theme_stay=0.9)
    with pytest.raises(ValueError, match="theme_weight < 1 - article_cosine"):
        SyntheticPayloadConfig(theme_weight=0.8)


def test_vectors_have_the_configured_cosine_structure(small_build):
    payload = load_payload(small_build)
    v = np.asarray(payload.vectors)
    article = payload.chunks["article_index"].to_numpy()
    assert v.shape == (7000, 768) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    adjacent = payload.manifest["adjacent_cosine_mean"]
    assert abs(adjacent - SMALL.adjacent_cosine) < 0.02  # revisits raise it a little
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(v), 20000), rng.integers(0, len(v), 20000)
    cos = np.einsum("ij,ij->i", v[i], v[j])
    unrelated = cos[article[i] != article[j]].mean()
    far_same = cos[(article[i] == article[j]) & (np.abs(i - j) > 30)].mean()
    assert abs(unrelated - SMALL.random_cosine) < 0.02
    assert SMALL.article_cosine - 0.02 < far_same < SMALL.article_cosine + 0.12  # + revisits
    # Placeholder texts are unique per chunk, so text-hash leakage checks keep their meaning.
    assert payload.chunks["text_sha256"].is_unique
    windows = build_windows(payload, SplitConfig())
    assert sum(len(s) for s in windows.values()) == int(
        np.maximum(np.bincount(article) - 5, 0).sum())


def _neighbours(config: SyntheticPayloadConfig, sample: int) -> dict:
    lengths = article_lengths(config)
    vectors = np.empty((config.chunks, config.dim), np.float32)
    generate_vectors(config, lengths, vectors)
    article = np.repeat(np.arange(len(lengths)), lengths)
    chunk = np.arange(config.chunks) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return neighbour_statistics(vectors, article, chunk, sample)


def test_defaults_reproduce_the_neighbour_statistics_of_a_real_payload():
    """At the real corpus's shape, the calibrated structure lands on what was measured there:
    impostors as close as real ones, and copy-last as weak."""
    stats = _neighbours(SyntheticPayloadConfig(**CALIBRATION_SHAPE), sample=600)
    for name in CALIBRATED:
        measured = stats[name] if name.startswith("copy_last") else stats[name]["mean"]
        tolerance = 0.05 if name.startswith("copy_last") else 0.03
        assert abs(measured - TARGETS[name]) < tolerance, (name, measured, TARGETS[name])
    assert stats["truth_beats_impostor_share"] < 0.3  # the truth loses to an impostor mostly


def test_without_the_calibrated_structure_the_next_chunk_is_always_nearest():
    """What the calibration fixed: isotropic noise and no themes (the old generator) make
    copy-last perfect, which no real payload is."""
    old = SyntheticPayloadConfig(articles=100, chunks=7000, adjacent_cosine=0.48,
                                 article_cosine=0.30, random_cosine=0.14, spectrum_decay=0.0,
                                 theme_weight=0.0)
    stats = _neighbours(old, sample=300)
    assert stats["copy_last_mrr_at_10"] > 0.95 and stats["truth_beats_impostor_share"] > 0.95


def test_manifest_records_the_neighbour_statistics_beside_the_targets(small_build):
    recorded = small_build.manifest["source"]["neighbour_targets"]
    assert {k: recorded[k] for k in CALIBRATED} == TARGETS
    assert recorded["calibrated_at"] == CALIBRATION_SHAPE
    measured = recorded["measured"]
    assert set(measured) == set(CALIBRATED)
    full = small_build.manifest["source"]["measured"]["neighbours"]
    assert measured["copy_last_mrr_at_10"] == full["copy_last_mrr_at_10"] < 0.5


def test_manifest_says_plainly_that_it_is_synthetic(small_build):
    m = small_build.manifest
    assert m["embedder"]["id"] == SMALL.spec() and m["embedder"]["synthetic"] is True
    assert SyntheticPayloadConfig.from_spec(m["embedder"]["id"]) == SMALL
    assert "weights_sha256" not in m["embedder"] and "canary" in m["embedder"]["note"]
    assert m["source"]["config"]["chunks"] == 7000 and m["corpus_build_id"] is None
    with pytest.raises(ValueError, match="bad part 'seed='"):
        SyntheticPayloadConfig.from_spec("synthetic:articles=3,seed=")


def test_canary_regenerates_a_synthetic_payload_and_blocks_another_seed(small_build):
    """The generator is the synthetic payload's encoder: the canary re-runs it for real."""
    payload = load_payload(small_build)
    config = GuardConfig(canary_sample=32)
    same = check_embedder_canary(payload, SyntheticEncoder(SMALL), config)
    assert same.passed and same.figure > 0.9999
    other = check_embedder_canary(
        payload, SyntheticEncoder(dataclasses.replace(SMALL, seed=4)), config)
    assert not other.passed and other.figure < 0.9 and "ENCODER MISMATCH" in other.message
    # A text the generator never wrote has no vector: it cannot pass.
    assert not SyntheticEncoder(SMALL).encode(["an unrelated sentence"]).any()


def test_same_config_same_build_and_float16_halves_the_file(tmp_path, small_build):
    store = ArtifactStore(tmp_path / "data")
    again = publish_synthetic_payload(store, SMALL)
    assert again.build_id == small_build.build_id
    half = publish_synthetic_payload(store, SyntheticPayloadConfig(
        articles=100, chunks=7000, dim=768, seed=3, dtype="float16"))
    payload = load_payload(half)
    assert payload.vectors.dtype == np.float16 and half.manifest["dtype"] == "float16"
    ratio = half.manifest["files"]["vectors.npy"]["bytes"] / again.manifest["files"][
        "vectors.npy"]["bytes"]
    assert 0.49 < ratio < 0.51
    full = np.asarray(load_payload(again).vectors)
    assert np.abs(np.asarray(payload.vectors, np.float32) - full).max() < 1e-3


def test_import_links_the_files_and_keeps_the_build_id(tmp_path, small_build):
    store = ArtifactStore(tmp_path / "data")
    build, how = import_payload(store, small_build.path.parent.parent)  # the data dir
    assert how == "hardlink" and build.build_id == small_build.build_id
    assert (build.path / "vectors.npy").stat().st_ino == (
        small_build.path / "vectors.npy").stat().st_ino
    assert build.manifest["run"]["imported_from"]["build_id"] == small_build.build_id
    _, how = import_payload(store, build.path)
    assert how == "already in the store"


def test_import_refuses_an_edited_payload_naming_the_file(tmp_path):
    source = publish_synthetic_payload(ArtifactStore(tmp_path / "src"), SyntheticPayloadConfig(
        articles=10, chunks=300, dim=16, median_chunks=20, p95_chunks=60))
    with open(source.path / "vectors.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")
    with pytest.raises(ArtifactError, match=r"vectors\.npy: sha256 mismatch"):
        import_payload(ArtifactStore(tmp_path / "data"), source.path)
    with pytest.raises(ArtifactError, match="neither a payload build folder"):
        import_payload(ArtifactStore(tmp_path / "data"), tmp_path)


def test_cli_writes_one_and_explains_bad_arguments(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth-payload", "--articles", "20", "--chunks", "600", "--dim", "32",
                 "--median-chunks", "20", "--p95-chunks", "80", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "600 chunks × 32 float32" in printed and f"lvm run --payload {out}" in printed
    manifest = json.loads(next(out.glob("payload/*/manifest.json")).read_text())
    assert manifest["embedder"]["synthetic"] is True
    assert main(["synth-payload", "--articles", "50", "--chunks", "60", str(out)]) == EXIT_FAILED
    assert "too few" in capsys.readouterr().err


@pytest.mark.slow
def test_lvm_run_uses_a_synthetic_payload_as_its_payload(tmp_path, capsys):
    """The whole graph on a synthetic payload: no embedding, five checkpoints, a report."""
    synth = tmp_path / "synth"
    assert main(["synth-payload", "--articles", "40", "--chunks", "1200", "--dim", "64",
                 "--median-chunks", "25", "--p95-chunks", "70", str(synth)]) == EXIT_OK
    synth_id = json.loads(next(synth.glob("payload/*/manifest.json")).read_text())["build_id"]
    data = tmp_path / "data"
    code = main(["run", "--data-dir", str(data), "--payload", str(synth), "--max-chunks", "40",
                 "--epochs", "1", "--index", "sq8", "--log-level", "WARNING"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err[-3000:]
    assert "| mamba_s |" in out.out
    report = json.loads((data / "report").glob("*/report.json").__next__().read_text())
    assert report["payload_build_id"] == synth_id and report["oracle_ok"]
    index = json.loads(next((data / "index").glob("*/manifest.json")).read_text())
    assert index["type"] == "sq8" and index["payload_build_id"] == synth_id
