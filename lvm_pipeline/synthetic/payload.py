"""A seeded synthetic payload at the reference project's scale, for measuring time, memory and
retrieval figures whose difficulty looks like real data's.

The reference data: 8,447 Wikipedia articles, 584,545 chunks, GTR-T5-base 768-d unit vectors,
article length median 28 / p95 290 chunks. Embedding that many real texts takes hours on a
CPU; this generator writes a payload of the same shape in minutes, in the real payload format
(``vectors.npy``, ``chunks.parquet``, manifest), so that every later stage (sequences, guards,
index, training, report) can be measured at scale.

It is not an embedding of anything, and its manifest says so: the ``embedder`` block has
``synthetic: true`` and, as its id, the generator's spec (``synthetic:articles=…,seed=…``).
That spec is the "encoder" the embedder canary re-runs: :class:`SyntheticEncoder` regenerates
the vector of a placeholder text (``Synthetic article A chunk C: …``) from the seed, so a
payload that claims to be synthetic but holds other vectors is blocked like any other encoder
mismatch. The texts are unique per chunk, so a text-hash leakage check still means something.

Structure (rows L2-normalised at the end)::

    v = sqrt(g)·c + sqrt(a)·topic[article] + sqrt(m)·theme[z_t] + sqrt(s)·u[t],
    u[t] = r·u[t-1] + sqrt(1-r²)·e[t]

``c`` is shared by every row (the anisotropy of real encoders: unrelated chunks still have
cosine ~``g``), a topic per article, an AR(1) drift along the article, and a *theme* from a
dictionary shared by all articles (one theme per ``chunks_per_theme`` payload rows): a chunk
keeps the previous chunk's theme with probability ``theme_stay``, else returns to one of its
article's earlier themes with probability ``theme_revisit``, else draws a new one. Topic,
theme, and drift noise are Gaussian with per-coordinate variance falling as
``i ** -spectrum_decay`` (real embeddings' spectra decay like a power law; 1.0 gives a
participation ratio of ~32 of 768 dims), so cosines spread the way real ones do.

Why the themes and the spectrum: with isotropic 768-d noise and no shared structure (this
generator's first version), the next chunk was almost always the nearest non-context row, so
copy-last and every model retrieved it nearly perfectly, while in real payloads the best
impostor beats the truth in most queries (both measured: benchmarks/RESULTS.md, "Neighbour
statistics"). Themes put chunks of other articles near (the
nearest other-article row), revisits put non-adjacent chunks of the same article near, and a
theme change between two chunks makes the truth lose to them. The defaults are calibrated (by
hand, a grid of a dozen configs) so that a payload of :data:`CALIBRATION_SHAPE` lands on
:data:`TARGETS`, the statistics measured by :mod:`lvm_pipeline.synthetic.neighbour_stats` on a real
payload; every build's manifest records its own measured statistics beside those targets
(``source.neighbour_targets``). ``adjacent_cosine``, ``article_cosine`` and ``random_cosine``
are the mix's nominal values (revisits raise the measured ones a little); a larger payload has
more impostors per query, so copy-last's ranks beyond the first spread out at the reference
scale (benchmarks/RESULTS.md).

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

from lvm_pipeline.payload import CHUNKS, PAYLOAD_DTYPES, VECTORS, adjacent_cosine, chunk_table, release_pages
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import ArtifactStore, Build, kinds
from lvm_pipeline.synthetic.neighbour_stats import headline, neighbour_statistics

# Rows generated per step: bounds the float32 temporaries (~4 arrays × 16384 × 768 × 4 B ≈ 200 MB).
BLOCK_ROWS = 16384
SPEC_PREFIX = "synthetic:"
TEXT_PATTERN = re.compile(r"^Synthetic article (\d+) chunk (\d+):")
_FIELD_TYPES = {"int": int, "float": float, "str": str}
# Windows whose neighbour statistics the manifest records (one pass over the payload each).
STATS_SAMPLE = 500
# What the defaults are calibrated to: benchmarks/neighbour_stats.py (2,000 windows, seed 0) on
# a real documentation payload, Python 3.11 + git docs, 25,914 chunks in 731 articles,
# all-MiniLM-L6-v2 (benchmarks/RESULTS.md, "Neighbour statistics"). Chosen over the offline
# sample (6,022 chunks: adjacent 0.429, own 0.639, other 0.601, random 0.133, copy-last MRR@10
# 0.188) as the larger corpus that is not the test fixture; the two agree but for the random
# cosine and the copy-last MRR, which falls as a payload grows.
TARGETS = {"adjacent_cosine": 0.434, "random_cosine": 0.093, "own_article_nn_cosine": 0.642,
           "other_article_nn_cosine": 0.665, "copy_last_mrr_at_10": 0.140}
# The shape the defaults were calibrated at: that corpus's size (its article lengths are capped
# at 60 chunks, median 36; a log-normal through median 32 / p95 60 holds its 25,914 chunks).
CALIBRATION_SHAPE = {"articles": 731, "chunks": 25_914, "median_chunks": 32.0,
                     "p95_chunks": 60.0}


@dataclass(frozen=True)
class SyntheticPayloadConfig:
    """Shape and structure of a synthetic payload: the reference project's shape, and a
    structure calibrated to a real payload's neighbour statistics (module doc)."""

    articles: int = 8447
    chunks: int = 584_545
    dim: int = 768
    median_chunks: float = 28.0
    p95_chunks: float = 290.0
    # Nominal cosines of the mix (random pair, far-apart pair of one article, adjacent pair)
    # and the structure that puts impostors near (module doc); the defaults are calibrated to
    # the neighbour statistics of a real documentation payload (TARGETS).
    adjacent_cosine: float = 0.43
    article_cosine: float = 0.26
    random_cosine: float = 0.087
    spectrum_decay: float = 1.0
    theme_weight: float = 0.44
    theme_stay: float = 0.12
    theme_revisit: float = 0.4
    chunks_per_theme: float = 40.0
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.articles < 1 or self.chunks < self.articles or self.dim < 2:
            raise ValueError(f"need articles >= 1, chunks >= articles and dim >= 2: {self}")
        if not 0 <= self.random_cosine <= self.article_cosine <= self.adjacent_cosine < 1:
            raise ValueError("need 0 <= random_cosine <= article_cosine <= adjacent_cosine < 1, "
                             f"got {self.random_cosine}, {self.article_cosine}, "
                             f"{self.adjacent_cosine}")
        if not 0 <= self.theme_weight < 1 - self.article_cosine:
            raise ValueError(f"need 0 <= theme_weight < 1 - article_cosine, got "
                             f"{self.theme_weight} and {self.article_cosine}")
        if not 0 <= self.mix[4] < 1:
            raise ValueError(f"adjacent_cosine {self.adjacent_cosine} is out of reach: the drift's "
                             f"AR coefficient would be {self.mix[4]:.3f} (need 0 <= r < 1; lower "
                             "theme_weight · theme_stay or raise adjacent_cosine)")
        if not (0 <= self.theme_stay <= 1 and 0 <= self.theme_revisit <= 1
                and self.chunks_per_theme >= 1 and self.spectrum_decay >= 0):
            raise ValueError("need theme_stay and theme_revisit in [0, 1], chunks_per_theme >= 1 "
                             f"and spectrum_decay >= 0: {self}")
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
    def themes(self) -> int:
        """Size of the theme dictionary: grows with the payload, so that a theme's share of
        rows (and the impostors it makes) stays put at any scale."""
        return max(1, round(self.chunks / self.chunks_per_theme))

    @property
    def mix(self) -> tuple[float, float, float, float, float]:
        """(g, a, m, s, r): weights of the shared, topic, theme and drift terms, and the
        drift's AR coefficient, from the three target cosines."""
        g = self.random_cosine
        a = self.article_cosine - g
        m = self.theme_weight
        s = 1.0 - self.article_cosine - m
        r = (self.adjacent_cosine - self.article_cosine - m * self.theme_stay) / s
        return g, a, m, s, r


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


def spectrum(config: SyntheticPayloadConfig) -> np.ndarray:
    """(D,) float32 per-coordinate standard deviation of the topic and drift terms: variances
    falling as ``i ** -spectrum_decay`` and summing to 1 (0: isotropic)."""
    var = np.arange(1, config.dim + 1, dtype=np.float64) ** -config.spectrum_decay
    return np.sqrt(var / var.sum()).astype(np.float32)


def theme_vectors(config: SyntheticPayloadConfig) -> np.ndarray:
    """(themes, D) float32 directions shared across articles."""
    rng = np.random.default_rng([config.seed, 4])
    return rng.standard_normal((config.themes, config.dim), dtype=np.float32) * spectrum(config)


def theme_sequence(config: SyntheticPayloadConfig, rng: np.random.Generator, themes: int,
                   length: int) -> np.ndarray:
    """(length,) int64 theme of each chunk: kept from the previous chunk with probability
    ``theme_stay``, else one of the article's earlier themes with probability
    ``theme_revisit``, else a new draw from all themes."""
    draws = rng.integers(0, themes, length)
    stay = rng.random(length) < config.theme_stay
    revisit = rng.random(length) < config.theme_revisit
    pick = rng.random(length)
    z = np.empty(length, dtype=np.int64)
    used: list[int] = []
    for i in range(length):
        if i and stay[i]:
            z[i] = z[i - 1]
        elif used and revisit[i]:
            z[i] = used[int(pick[i] * len(used))]
        else:
            z[i] = draws[i]
            used.append(int(z[i]))
    return z


def article_vectors(config: SyntheticPayloadConfig, shared: np.ndarray, themes: np.ndarray,
                    article: int, length: int) -> np.ndarray:
    """(length, D) float32 unit rows of one article, from its own seeded stream, so any
    article can be regenerated alone (what :class:`SyntheticEncoder` does)."""
    g, a, m, s, r = config.mix
    rng = np.random.default_rng([config.seed, 3, article])
    scale = spectrum(config)
    topic = rng.standard_normal(config.dim, dtype=np.float32) * scale  # (D,)
    u = rng.standard_normal((length, config.dim), dtype=np.float32) * scale  # noise → drift
    z = theme_sequence(config, rng, len(themes), length)
    keep = np.float32(np.sqrt(1 - r * r))
    for i in range(1, length):  # AR(1) along the article
        u[i] *= keep
        u[i] += np.float32(r) * u[i - 1]
    v = np.float32(np.sqrt(s)) * u
    v += np.float32(np.sqrt(m)) * themes[z]
    v += np.float32(np.sqrt(a)) * topic
    v += np.float32(np.sqrt(g)) * shared
    norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))[:, None]  # (L, 1)
    return (v / norms).astype(np.float32)


def generate_vectors(config: SyntheticPayloadConfig, lengths: np.ndarray, out: np.ndarray,
                     progress: Progress = silent) -> None:
    """Fill ``out`` (chunks, dim) — e.g. a memory map of vectors.npy — with unit vectors,
    article by article; the result depends only on the config."""
    shared = shared_direction(config)
    themes = theme_vectors(config)
    lo = 0
    for article, length in enumerate(lengths.tolist()):
        out[lo:lo + length] = article_vectors(config, shared, themes, article,
                                              length).astype(out.dtype)
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
        self._themes = theme_vectors(config)

    def _article(self, article: int) -> np.ndarray:
        return article_vectors(self.config, self._shared, self._themes, article,
                               int(self._lengths[article]))

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
    measured on the result (article lengths, adjacent cosine, neighbour statistics), and the
    seconds it took go to the build's ``run`` facts beside the content."""
    t0 = time.perf_counter()
    lengths = article_lengths(config)
    table = chunk_table(placeholder_chunks(lengths))
    with store.stage(kinds.PAYLOAD) as staged:
        vectors = np.lib.format.open_memmap(staged / VECTORS, mode="w+", dtype=config.dtype,
                                            shape=(config.chunks, config.dim))
        generate_vectors(config, lengths, vectors, progress)
        vectors.flush()
        adjacent = adjacent_cosine(vectors, table["article_index"].to_numpy())
        neighbours = neighbour_statistics(vectors, table["article_index"].to_numpy(),
                                          table["chunk_index"].to_numpy(), STATS_SAMPLE,
                                          config.seed)
        del vectors  # unmap before the store hashes and moves the file
        table.to_parquet(staged / CHUNKS, index=False)
        measured = {"article_length_median": float(np.median(lengths)),
                    "article_length_p95": float(np.percentile(lengths, 95)),
                    "article_length_max": int(lengths.max()),
                    "adjacent_cosine_mean": adjacent,
                    "neighbours": neighbours}
        manifest = {
            "embedder": {
                **SyntheticEncoder(config).identity(),
                "note": "no text encoder: seeded synthetic vectors with placeholder texts "
                        "(lvm_pipeline.synthetic.payload); the canary regenerates them from "
                        "this id"},
            "source": {"kind": "synthetic", "config": asdict(config), "measured": measured,
                       "neighbour_targets": {
                           **TARGETS, "calibrated_at": CALIBRATION_SHAPE,
                           "measured": headline(neighbours)}},
            "dim": config.dim,
            "dtype": config.dtype,
            "norm": "l2",
            "metric": "ip",
            "n_rows": config.chunks,
            "n_articles": config.articles,
            "adjacent_cosine_mean": adjacent,
            "corpus_build_id": None,
        }
        return store.publish(kinds.PAYLOAD, staged, manifest,
                             run={"seconds": time.perf_counter() - t0})
