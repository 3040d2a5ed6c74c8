"""The embedding cache: incremental payload builds that are byte-identical to a full build,
isolated per encoder, refusing corrupt shards, surviving a crash, reported and pruned."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lvm_pipeline.corpus.build import CHUNK_COLUMNS
from lvm_pipeline.embedding.cache import CACHE_DIR, KEYS, VECTORS, CacheError, EmbeddingCache, fingerprint
from lvm_pipeline.guards import GuardConfig, check_embedder_canary
from lvm_pipeline.payload.payload import build_payload, load_payload
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore, Build, sha256_file

REPO = Path(__file__).resolve().parents[2]
WORDS = ["tide", "harbour", "wall", "ship", "rope", "sail", "storm", "anchor", "mast", "deck",
         "keel", "wave", "gull", "pier", "lantern", "fog", "reef", "compass", "chart", "current",
         "island", "beacon", "crew", "cargo", "hull", "bow", "stern"]


class HashEncoder:
    """Seeded per-text unit vectors (the text's sha256 seeds them), in fixed batches; records
    every text it embeds. ``salt`` makes another encoder; ``crash_at`` kills the process while
    that batch is in flight."""

    def __init__(self, dim: int = 16, salt: str = "a", batch: int = 4,
                 crash_at: int | None = None) -> None:
        self.dim, self.salt, self.batch, self.crash_at = dim, salt, batch, crash_at
        self.embedded: list[str] = []

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.salt}:{text}".encode()).digest()[:8])
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode_batches(self, texts):
        for k, lo in enumerate(range(0, len(texts), self.batch)):
            if k == self.crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            idx = np.arange(lo, min(lo + self.batch, len(texts)))
            self.embedded += [texts[i] for i in idx]
            yield idx, np.stack([self.vector(texts[i]) for i in idx])

    def encode(self, texts):
        return np.stack([self.vector(t) for t in texts])

    def identity(self):
        return {"id": f"hash-{self.salt}", "dim": self.dim, "device": "cpu",
                "precision": "float32", "weights_sha256": self.salt * 64,
                "config_sha256": "c" * 64}

    def output_identity(self):
        return {"weights_sha256": self.salt * 64, "config_sha256": "c" * 64, "dim": self.dim,
                "precision": "float32", "device_type": "cpu"}


def articles(n: int, chunks: int = 3, seed: int = 0) -> list[list[str]]:
    """``n`` articles of ``chunks`` distinct seeded sentences of 6-24 words."""
    rng = np.random.default_rng(seed)
    return [[f"{a}.{c} " + " ".join(rng.choice(WORDS, size=int(rng.integers(6, 25))))
             for c in range(chunks)] for a in range(n)]


def publish_corpus(store: ArtifactStore, texts: list[list[str]]) -> Build:
    rows = [(f"art-{a}", f"Article {a}", "", c, t) for a, chunk_texts in enumerate(texts)
            for c, t in enumerate(chunk_texts)]
    frame = pd.DataFrame(rows, columns=CHUNK_COLUMNS).astype({"chunk_index": "int32"})
    with store.stage(kinds.CORPUS) as staged:
        frame.to_parquet(staged / "chunks.parquet", index=False)
        return store.publish(kinds.CORPUS, staged, {"n_chunks": len(frame)})


def edit(texts: list[list[str]], fraction: float) -> tuple[list[list[str]], set[str]]:
    """The corpus with ``fraction`` of its articles' chunks rewritten; the new texts."""
    edited = [list(a) for a in texts]
    changed = set()
    for a in range(0, len(texts), round(1 / fraction)):
        edited[a] = [t + " (revised)" for t in texts[a]]
        changed.update(edited[a])
    return edited, changed


def shards(store: ArtifactStore) -> list[Path]:
    return sorted(p.parent for p in (store.root / CACHE_DIR).glob("*/*/manifest.json"))


def test_a_rebuild_embeds_only_what_changed_and_matches_an_empty_cache_build(tmp_path):
    original = articles(200)
    edited, changed = edit(original, 0.01)
    store = ArtifactStore(tmp_path / "warm")
    first = HashEncoder()
    build_payload(store, publish_corpus(store, original), first)
    assert len(first.embedded) == 600
    again = HashEncoder()
    rebuilt, stats = build_payload(store, publish_corpus(store, edited), again)
    assert set(again.embedded) == changed and len(again.embedded) == 6  # 2 articles of 200
    assert (stats.hits, stats.misses, stats.texts) == (594, 6, 600)
    cold = ArtifactStore(tmp_path / "cold")
    fresh, cold_stats = build_payload(cold, publish_corpus(cold, edited), HashEncoder())
    assert cold_stats.hits == 0 and cold_stats.misses == 600
    assert rebuilt.build_id == fresh.build_id
    assert sha256_file(rebuilt.file(VECTORS)) == sha256_file(fresh.file(VECTORS))


class CountingEmbedder:
    """The real embedder, recording the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.dim, self.embedded = inner, inner.dim, []

    def encode_batches(self, texts):
        self.embedded += texts
        return self.inner.encode_batches(texts)

    def identity(self):
        return self.inner.identity()

    def output_identity(self):
        return self.inner.output_identity()


def test_with_the_bundled_encoder_a_1pct_edit_embeds_only_its_chunks_byte_identically(tmp_path):
    """The same with the real encoder, whose batches differ between the three builds."""
    from lvm_pipeline.embedding.encoder import Embedder, EmbedderConfig

    real = Embedder(EmbedderConfig())
    original = articles(100, chunks=2, seed=3)
    edited, changed = edit(original, 0.01)
    store = ArtifactStore(tmp_path / "warm")
    build_payload(store, publish_corpus(store, original), real)
    counting = CountingEmbedder(real)
    rebuilt, stats = build_payload(store, publish_corpus(store, edited), counting)
    assert sorted(counting.embedded) == sorted(changed) and stats.hits == 198
    cold = ArtifactStore(tmp_path / "cold")
    fresh, _ = build_payload(cold, publish_corpus(cold, edited), real)
    assert sha256_file(rebuilt.file(VECTORS)) == sha256_file(fresh.file(VECTORS))
    assert rebuilt.build_id == fresh.build_id


def test_another_encoder_never_reads_the_first_encoders_vectors(store):
    texts = [t for a in articles(10) for t in a]
    cache = EmbeddingCache.of_store(store)
    a, b = HashEncoder(salt="a"), HashEncoder(salt="b")
    cache.embed(a, texts)
    vectors, stats = cache.embed(b, texts)
    assert stats.hits == 0 and len(b.embedded) == len(texts)
    np.testing.assert_array_equal(vectors, b.encode(texts))
    assert len(cache.folders()) == 2
    # A shard of a's copied into b's folder is refused: it names a's fingerprint.
    a_shard = shards(store)[0] if shards(store)[0].parent.name == fingerprint(a)[0][:16] else (
        shards(store)[-1])
    b_folder = store.root / CACHE_DIR / fingerprint(b)[0][:16]
    for shard in [p for p in b_folder.iterdir() if p.is_dir()]:
        shutil.rmtree(shard)
    shutil.copytree(a_shard, b_folder / a_shard.name)
    again = HashEncoder(salt="b")
    vectors, stats = cache.embed(again, texts)
    assert stats.corrupt_shards == (a_shard.name,) and stats.hits == 0
    np.testing.assert_array_equal(vectors, again.encode(texts))


def test_the_canary_re_embeds_its_sample_instead_of_reading_the_cache(store):
    """A cache that serves wrong vectors (here: planted under the encoder's own fingerprint)
    makes a wrong payload; the canary catches it because it asks the encoder itself."""
    corpus = publish_corpus(store, articles(20))
    encoder = HashEncoder()
    texts = pd.read_parquet(corpus.file("chunks.parquet"))["text"].tolist()
    cache = EmbeddingCache.of_store(store)
    wrong = HashEncoder(salt="z").encode(texts)
    from lvm_pipeline.embedding.cache import text_keys

    fp, identity = fingerprint(encoder)
    cache._write_shard(cache._folder(fp, identity), fp, text_keys(texts), wrong)
    build, stats = build_payload(store, corpus, encoder)
    assert stats.hits == len(texts) and not encoder.embedded  # all served by the cache
    result = check_embedder_canary(load_payload(build), encoder, GuardConfig(canary_sample=8))
    assert not result.passed and "ENCODER MISMATCH" in result.message


def test_the_payload_step_reports_cache_hits_and_misses(tmp_path):
    """A payload rebuilt from an unchanged corpus (``rebuild: true``, past the step's reuse)
    embeds nothing, builds the same payload, and says so in its metadata and its log."""
    from lvm_pipeline.defs.assets.payload import PayloadParams
    from lvm_pipeline_tests.conftest import instance_at, materialize_all, materialized_metadata

    data_dir = tmp_path / "data"
    runs = [materialize_all(data_dir, selection=["corpus", "payload"], corpus={"max_chunks": 40},
                            ops={"payload": PayloadParams(rebuild=rebuild)})
            for rebuild in (False, True)]
    assert all(r.success for r in runs)
    first, second = (materialized_metadata(r)["payload"] for r in runs)
    n = first["n_rows"]
    assert (first["cache_hits"], first["cache_misses"], first["cache_hit_rate"]) == (0, n, 0.0)
    assert (second["cache_hits"], second["cache_misses"], second["cache_hit_rate"]) == (n, 0, 1.0)
    assert first["build_id"] == second["build_id"]
    with instance_at(data_dir) as instance:
        logs = [e.user_message for e in instance.all_logs(runs[1].run_id)]
    assert any(f"{n}/{n} texts from the cache (100.0 %), 0 embedded" in line for line in logs)


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", [VECTORS, KEYS])
def test_a_corrupted_shard_is_refused_by_its_hash_and_re_embedded(store, damaged):
    texts = [t for a in articles(4) for t in a]  # 12 texts: 3 shards of 4
    cache = EmbeddingCache.of_store(store)
    cache.embed(HashEncoder(), texts)
    bad = shards(store)[1]
    flip_last_byte(bad / damaged)
    encoder = HashEncoder()
    vectors, stats = cache.embed(encoder, texts)
    assert stats.corrupt_shards == (bad.name,)
    assert len(encoder.embedded) == 4 and stats.hits == 8
    np.testing.assert_array_equal(vectors, encoder.encode(texts))
    _, healed = cache.embed(HashEncoder(), texts)
    assert healed.hits == 12 and not healed.corrupt_shards


def test_a_crash_while_filling_loses_only_the_batch_in_flight(store):
    """The process is SIGKILLed while its third batch of 4 is being embedded."""
    texts = [t for a in articles(6) for t in a]  # 18 texts
    script = (
        "import sys; from lvm_pipeline.embedding.cache import EmbeddingCache\n"
        "from lvm_pipeline_tests.embedding.test_cache import HashEncoder, articles\n"
        "texts = [t for a in articles(6) for t in a]\n"
        f"EmbeddingCache({str(store.root / CACHE_DIR)!r}).embed(HashEncoder(crash_at=2), "
        "texts)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(shards(store)) == 2
    encoder = HashEncoder()
    vectors, stats = EmbeddingCache.of_store(store).embed(encoder, texts)
    assert (stats.hits, stats.misses) == (8, 10) and not stats.corrupt_shards
    np.testing.assert_array_equal(vectors, encoder.encode(texts))


def test_prune_keeps_what_payload_builds_use_and_removes_the_rest(store):
    kept, dropped = articles(6, seed=1), articles(6, seed=2)
    build_payload(store, publish_corpus(store, kept), HashEncoder())
    gone, _ = build_payload(store, publish_corpus(store, dropped), HashEncoder())
    shutil.rmtree(gone.path)  # that payload build no longer exists
    cache = EmbeddingCache.of_store(store)
    cache.embed(HashEncoder(salt="b"), [kept[0][0]])  # an encoder no payload was built with
    removed, freed = cache.prune(store)
    assert removed == 19 and freed > 0
    [folder] = cache.folders()
    assert folder.entries == 18 and folder.fingerprint == fingerprint(HashEncoder())[0]
    encoder = HashEncoder()
    _, stats = build_payload(store, publish_corpus(store, kept), encoder)
    assert stats.hits == 18 and not encoder.embedded


def test_prune_refuses_while_a_build_fills_the_cache(store):
    cache = EmbeddingCache.of_store(store)
    with cache._lock(fcntl.LOCK_SH), pytest.raises(CacheError, match="is filling"):
        cache.prune(store)


def test_lvm_cache_shows_entries_size_and_the_last_hit_rate_and_prunes(store, capsys):
    from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, main

    data_dir = ["--data-dir", str(store.root)]
    assert main(["cache", *data_dir]) == EXIT_FAILED
    assert "lvm cache: no embedding cache under" in capsys.readouterr().err
    original = articles(4)
    first, _ = build_payload(store, publish_corpus(store, original), HashEncoder())
    rebuilt, _ = build_payload(store, publish_corpus(store, edit(original, 0.25)[0]),
                               HashEncoder())
    assert main(["cache", *data_dir]) == EXIT_OK
    out = capsys.readouterr().out
    assert "15 entries" in out and " MB" in out  # 12 texts, then 3 of them edited
    assert (f"last build: payload {rebuilt.build_id[:12]}" in out and "9/12 texts" in out
            and "hit rate 75.0 %" in out)
    shutil.rmtree(first.path)
    assert main(["cache", "--prune", *data_dir]) == EXIT_OK
    out = capsys.readouterr().out
    assert "removed 3 entries" in out and ": 12 entries" in out
    with EmbeddingCache.of_store(store)._lock(fcntl.LOCK_SH):
        assert main(["cache", "--prune", *data_dir]) == EXIT_FAILED
    assert "a payload build is filling the embedding cache" in capsys.readouterr().err
