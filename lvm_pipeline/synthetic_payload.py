"""A seeded synthetic payload at the reference project's scale, for measuring time and memory.

The reference data: 8,447 Wikipedia articles, 584,545 chunks, GTR-T5-base 768-d unit vectors,
article length median 28 / p95 290 chunks, mean cosine 0.48 between adjacent chunks of an
article and ~0.14 between two unrelated chunks. Embedding that many real texts takes hours on a
CPU; this generator writes a payload of the same shape and structure in about a minute, in the
real payload format (``vectors.npy``, ``chunks.parquet``, manifest), so that every later stage
(sequences, guards, index, training, report) can be measured at scale.

It is not an embedding of anything, and its manifest says so: the ``embedder`` block has
``synthetic: true`` and, as its id, the generator's spec (``synthetic:articles=…,seed=…``).
That spec is the "encoder" the embedder canary re-runs: :class:`SyntheticEncoder` regenerates
the vector of a placeholder text (``Synthetic article A chunk C: …``) from the seed, so a
payload that claims to be synthetic but holds other vectors is blocked like any other encoder
mismatch. The texts are unique per chunk, so a text-hash leakage check still means something.

Structure (each term an independent Gaussian direction, rows L2-normalised at the end)::

    v = sqrt(g)·c + sqrt(a)·topic[article] + sqrt(s)·u[t],   u[t] = r·u[t-1] + sqrt(1-r²)·e[t]

with ``c`` shared by every row (the anisotropy of real encoders: unrelated chunks still have
cosine ``g``), a topic per article (far-apart chunks of one article: ``g + a``) and an AR(1)
drift along the article (adjacent chunks: ``g + a + s·r``). In high dimension the cosines
concentrate on those values; the manifest records the measured adjacent cosine.

Article lengths: the quantiles of a log-normal through the median and the p95, shuffled by the
seed; the tail above the p95 is compressed (or stretched) linearly so that the lengths add up
to exactly the requested number of chunks while the median and the p95 stay put.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from lvm_pipeline.artifacts import ArtifactStore, Build
from lvm_pipeline.payload import (
    CHUNKS,
    KIND,
    PAYLOAD_DTYPES,
    VECTORS,
    adjacent_cosine,
    chunk_table,
    release_pages,
)
from lvm_pipeline.progress import Progress, silent

# Rows generated per step: bounds the float32 temporaries (~4 arrays × 16384 × 768 × 4 B ≈ 200 MB).
BLOCK_ROWS = 16384
SPEC_PREFIX = "synthetic:"
TEXT_PATTERN = re.compile(r"^Synthetic article (\d+) chunk (\d+):")
_FIELD_TYPES = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class SyntheticPayloadConfig:
    """Shape and structure of a synthetic payload; the defaults are the reference project's."""

    articles: int = 8447
    chunks: int = 584_545
    dim: int = 768
    median_chunks: float = 28.0
    p95_chunks: float = 290.0
    adjacent_cosine: float = 0.48
    # Far-apart chunks of one article, and two chunks of different articles (the founding
    # incident measured 0.14 between mismatched encoders: "the same as two random chunks").
    article_cosine: float = 0.30
    random_cosine: float = 0.14
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.articles < 1 or self.chunks < self.articles or self.dim < 2:
            raise ValueError(f"need articles >= 1, chunks >= articles and dim >= 2: {self}")
        if not 0 <= self.random_cosine <= self.article_cosine <= self.adjacent_cosine < 1:
            raise ValueError("need 0 <= random_cosine <= article_cosine <= adjacent_cosine < 1, "
                             f"got {self.random_cosine}, {self.article_cosine}, "
                             f"{self.adjacent_cosine}")
        if not 1 <= self.median_chunks <= self.p95_chunks:
            raise ValueError(f"need 1 <= median_chunks <= p95_chunks: {self}")
        if self.dtype not in PAYLOAD_DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(PAYLOAD_DTYPES)}")

    def spec(self) -> str:
        """The generator as an embedder id: every field that shapes the vectors."""
        return SPEC_PREFIX + ",".join(f"{k}={v}" for k, v in asdict(self).items() if k != "dtype")

    @classmethod
    def from_spec(cls, spec: str) -> SyntheticPayloadConfig:
        """Inverse of :meth:`spec`; a malformed spec raises naming the bad part."""
        if not spec.startswith(SPEC_PREFIX):
            raise ValueError(f"{spec!r} is not a synthetic payload spec ({SPEC_PREFIX}…)")
        types = {f.name: _FIELD_TYPES[str(f.type)] for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for part in spec[len(SPEC_PREFIX):].split(","):
            key, _, value = part.partition("=")
            if key not in types or key == "dtype" or not value:
                raise ValueError(f"synthetic payload spec {spec!r}: bad part {part!r}")
            values[key] = types[key](value)
        return cls(**values)

    @property
    def mix(self) -> tuple[float, float, float, float]:
        """(g, a, s, r): weights of the shared, topic and drift terms, and the drift's AR
        coefficient, from the three target cosines."""
        g = self.random_cosine
        a = self.article_cosine - g
        s = 1.0 - self.article_cosine
        r = (self.adjacent_cosine - self.article_cosine) / s
        return g, a, s, r


def article_lengths(config: SyntheticPayloadConfig) -> np.ndarray:
    """(articles,) int64 chunks per article, summing to ``config.chunks`` (see module doc)."""
    n, total = config.articles, config.chunks
    mu = np.log(config.median_chunks)
    sigma = (np.log(config.p95_chunks) - mu) / NormalDist().inv_cdf(0.95)
    z = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    q = np.exp(mu + sigma * z)  # ascending quantiles
    tail = q > config.p95_chunks
    # Scale the excess above the p95 so the total is exact: sum(body) + sum(p95 + α·excess).
    excess = float((q[tail] - config.p95_chunks).sum())
    room = total - float(q[~tail].sum()) - tail.sum() * config.p95_chunks
    alpha = room / excess if excess > 0 else 0.0
    if alpha < 0:
        raise ValueError(f"{total} chunks are too few for {n} articles with median "
                         f"{config.median_chunks} and p95 {config.p95_chunks}")
    q[tail] = config.p95_chunks + alpha * (q[tail] - config.p95_chunks)
    lengths = np.maximum(1, np.round(q)).astype(np.int64)
    diff = total - int(lengths.sum())  # rounding: a few rows, taken from / given to the longest
    step = 1 if diff > 0 else -1
    i = n - 1
    while diff != 0:
        if lengths[i] + step >= 1:
            lengths[i] += step
            diff -= step
        i = i - 1 if i > 0 else n - 1
    return np.random.default_rng([config.seed, 1]).permutation(lengths)


def placeholder_chunks(lengths: np.ndarray) -> pd.DataFrame:
    """Corpus-style chunk rows (article_id, title, chunk_index, text) with a unique text each."""
    article = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    chunk = np.arange(int(lengths.sum())) - starts
    ids = np.array([f"synthetic-{a:06d}" for a in range(len(lengths))], dtype=object)
    titles = np.array([f"Synthetic article {a}" for a in range(len(lengths))], dtype=object)
    texts = [f"Synthetic article {a} chunk {c}: placeholder text, the vector was generated."
             for a, c in zip(article.tolist(), chunk.tolist(), strict=True)]
    return pd.DataFrame({"article_id": ids[article], "title": titles[article],
                         "chunk_index": chunk.astype(np.int32), "text": texts})


def shared_direction(config: SyntheticPayloadConfig) -> np.ndarray:
    """(D,) the direction every row shares (see the module doc)."""
    rng = np.random.default_rng([config.seed, 2])
    return rng.standard_normal(config.dim, dtype=np.float32) / np.float32(np.sqrt(config.dim))


def article_vectors(config: SyntheticPayloadConfig, shared: np.ndarray, article: int,
                    length: int) -> np.ndarray:
    """(length, D) float32 unit rows of one article, from its own seeded stream, so any
    article can be regenerated alone (what :class:`SyntheticEncoder` does)."""
    g, a, s, r = config.mix
    rng = np.random.default_rng([config.seed, 3, article])
    scale = np.float32(1 / np.sqrt(config.dim))
    topic = rng.standard_normal(config.dim, dtype=np.float32) * scale  # (D,)
    u = rng.standard_normal((length, config.dim), dtype=np.float32) * scale  # noise → drift
    keep = np.float32(np.sqrt(1 - r * r))
    for i in range(1, length):  # AR(1) along the article
        u[i] *= keep
        u[i] += np.float32(r) * u[i - 1]
    v = np.float32(np.sqrt(s)) * u
    v += np.float32(np.sqrt(a)) * topic
    v += np.float32(np.sqrt(g)) * shared
    norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))[:, None]  # (L, 1)
    return (v / norms).astype(np.float32)


def generate_vectors(config: SyntheticPayloadConfig, lengths: np.ndarray, out: np.ndarray,
                     progress: Progress = silent) -> None:
    """Fill ``out`` (chunks, dim) — e.g. a memory map of vectors.npy — with unit vectors,
    article by article; the result depends only on the config."""
    shared = shared_direction(config)
    lo = 0
    for article, length in enumerate(lengths.tolist()):
        out[lo:lo + length] = article_vectors(config, shared, article, length).astype(out.dtype)
        lo += length
        if lo // BLOCK_ROWS != (lo - length) // BLOCK_ROWS or lo == len(out):
            release_pages(out)  # written pages stay in the page cache, not in this RSS
            progress(lo, len(out))


class SyntheticEncoder:
    """The "embedder" of a synthetic payload: maps a placeholder text back to its vector.

    Lets the embedder canary verify a synthetic payload for real (see the module doc). A text
    that is not a placeholder of this generator has no vector: it gets a zero row, which no
    canary threshold accepts. Cannot embed a corpus.
    """

    def __init__(self, config: SyntheticPayloadConfig) -> None:
        self.config = config
        self.dim = config.dim
        self._lengths = article_lengths(config)
        self._shared = shared_direction(config)

    def _article(self, article: int) -> np.ndarray:
        return article_vectors(self.config, self._shared, article, int(self._lengths[article]))

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        articles: dict[int, np.ndarray] = {}
        for i, text in enumerate(texts):
            match = TEXT_PATTERN.match(text)
            if match is None:
                continue
            article, chunk = int(match[1]), int(match[2])
            if article < len(self._lengths) and chunk < self._lengths[article]:
                if article not in articles:
                    articles[article] = self._article(article)
                out[i] = articles[article][chunk]
        return out

    def identity(self) -> dict[str, object]:
        spec = self.config.spec()
        return {"id": spec, "synthetic": True, "dim": self.dim,
                "config_sha256": hashlib.sha256(spec.encode()).hexdigest()}


def publish_synthetic_payload(store: ArtifactStore, config: SyntheticPayloadConfig,
                              progress: Progress = silent) -> Build:
    """Generate and publish a payload build; its manifest records the config and what was
    measured on the result (article length median / p95, adjacent cosine, seconds)."""
    t0 = time.perf_counter()
    lengths = article_lengths(config)
    table = chunk_table(placeholder_chunks(lengths))
    with store.stage(KIND) as staged:
        vectors = np.lib.format.open_memmap(staged / VECTORS, mode="w+", dtype=config.dtype,
                                            shape=(config.chunks, config.dim))
        generate_vectors(config, lengths, vectors, progress)
        vectors.flush()
        adjacent = adjacent_cosine(vectors, table["article_index"].to_numpy())
        del vectors  # unmap before the store hashes and moves the file
        table.to_parquet(staged / CHUNKS, index=False)
        measured = {"article_length_median": float(np.median(lengths)),
                    "article_length_p95": float(np.percentile(lengths, 95)),
                    "article_length_max": int(lengths.max()),
                    "adjacent_cosine_mean": adjacent,
                    "seconds": time.perf_counter() - t0}
        manifest = {
            "embedder": {
                **SyntheticEncoder(config).identity(),
                "note": "no text encoder: seeded synthetic vectors with placeholder texts "
                        "(lvm_pipeline.synthetic_payload); the canary regenerates them from "
                        "this id"},
            "source": {"kind": "synthetic", "config": asdict(config), "measured": measured},
            "dim": config.dim,
            "dtype": config.dtype,
            "norm": "l2",
            "metric": "ip",
            "n_rows": config.chunks,
            "n_articles": config.articles,
            "adjacent_cosine_mean": adjacent,
            "corpus_build_id": None,
        }
        return store.publish(KIND, staged, manifest)
