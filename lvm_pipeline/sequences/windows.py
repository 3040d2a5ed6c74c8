"""Training and eval windows, stored as row indices into one payload build.

A window is 5 consecutive chunks of one article (the context) and the chunk after them (the
target). Windows hold *payload rows*, never copied vectors: contexts and targets are payload
vectors by construction (the reference's "aligned" eval replaced only the targets), and a
window costs 6 int32 row numbers instead of 6 × D float32 (the sizes at the reference's scale
are in benchmarks/RESULTS.md, "Reference scale on 2 CPU cores").

Splits are by **article**: every article is ranked by ``sha256(seed:article_id)`` and the first
``eval_fraction`` go to eval, the next ``val_fraction`` to val, the rest to train, so no article
is in two splits and the assignment does not depend on corpus order. Articles are not the only
way text leaks (near-identical boilerplate paragraphs, :mod:`.near_duplicates`), so
after the article split a val window that uses a chunk nearly identical to an eval chunk is
dropped, and so is a train window that uses a chunk nearly identical to an eval or val chunk
(eval stays whole: it is the yardstick). The leakage guard measures the same thing, with the
same search, on whatever sets it is given.

Files of a build (``sequences/train`` holds splits ``train`` and ``val``; ``sequences/eval``
holds ``eval``), per split folder: ``context_rows.npy`` (N, 5) int32, ``target_row.npy`` (N,)
int32, ``truth_keys.npy`` (N, 2) int32 = (article_index, chunk_index) of the target; imported
sets add ``target_cos.npy`` (N,) and ``context_cos.npy`` (N, 5) float32, the measured cosine of
each foreign vector to the payload row it was aligned to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.payload import Payload, int32_keys
from lvm_pipeline.sequences.near_duplicates import NEAR_DUPLICATE_COSINE, near_duplicates
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds

CONTEXT = 5
SPLITS_OF_KIND = {kinds.TRAIN_SEQUENCES: ("train", "val"), kinds.EVAL_SEQUENCES: ("eval",)}
ARRAYS = ("context_rows", "target_row", "truth_keys")
OPTIONAL_ARRAYS = ("target_cos", "context_cos")
SPLITS = ("train", "val", "eval")
# The fewest articles a split may hold (require_meaningful_split).
MIN_SPLIT_ARTICLES = 2


@dataclass(frozen=True)
class SplitConfig:
    """How articles are assigned to train / val / eval; written into every sequence manifest."""

    seed: int = 0
    val_fraction: float = 0.1
    eval_fraction: float = 0.1
    # Windows using a chunk this close to a chunk of a later split are dropped (module docstring).
    near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction < 1 and 0 < self.eval_fraction < 1
                and self.val_fraction + self.eval_fraction < 1):
            raise ValueError(f"split fractions must be in (0, 1) and sum below 1: {self}")
        if not 0 < self.near_duplicate_cosine <= 1:
            raise ValueError(f"near_duplicate_cosine must be in (0, 1]: {self}")


@dataclass
class SequenceSet:
    """One split's windows. Shapes: context_rows (N, 5) int32, target_row (N,) int32,
    truth_keys (N, 2) int32; optional target_cos (N,), context_cos (N, 5) float32."""

    split: str
    context_rows: np.ndarray
    target_row: np.ndarray
    truth_keys: np.ndarray
    target_cos: np.ndarray | None = None
    context_cos: np.ndarray | None = None

    def __post_init__(self) -> None:
        # An explicit error, not an assert: `python -O` strips asserts, and a window set whose
        # arrays disagree on N would pair contexts with the wrong targets.
        n = len(self.target_row)
        expected = {"target_row": (n,), "context_rows": (n, CONTEXT), "truth_keys": (n, 2),
                    "target_cos": (n,), "context_cos": (n, CONTEXT)}
        wrong = [f"{name}.npy has shape {getattr(self, name).shape}, expected {shape}"
                 for name, shape in expected.items()
                 if getattr(self, name) is not None and getattr(self, name).shape != shape]
        if wrong:
            raise ValueError(f"split {self.split!r} ({n} windows in target_row.npy): "
                             + "; ".join(wrong))

    def __len__(self) -> int:
        return len(self.target_row)

    def articles(self) -> np.ndarray:
        """Sorted unique article indices of the targets."""
        return np.unique(self.truth_keys[:, 0])

    def window_rows(self) -> np.ndarray:
        """Every payload row of each window, contexts then target: (N, 6) int64."""
        return np.concatenate([self.context_rows, self.target_row[:, None]], axis=1).astype(np.int64)

    def rows(self) -> np.ndarray:
        """Sorted unique payload rows the windows read (contexts and targets)."""
        return np.unique(self.window_rows())

    def subset(self, mask: np.ndarray) -> SequenceSet:
        """The windows where ``mask`` (N,) bool is true, optional arrays included."""
        return SequenceSet(self.split, self.context_rows[mask], self.target_row[mask],
                           self.truth_keys[mask],
                           None if self.target_cos is None else self.target_cos[mask],
                           None if self.context_cos is None else self.context_cos[mask])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (*ARRAYS, *OPTIONAL_ARRAYS):
            array = getattr(self, name)
            if array is not None:
                np.save(folder / f"{name}.npy", array)

    @classmethod
    def load(cls, build: Build, split: str, verify: bool = True) -> SequenceSet:
        arrays: dict[str, Any] = {}
        for name in (*ARRAYS, *OPTIONAL_ARRAYS):
            key = f"{split}/{name}.npy"
            if key in build.manifest["files"]:
                # allow_pickle=False: our arrays are plain numbers; a file that needs pickle is not ours.
                arrays[name] = np.load(build.file(key, verify), allow_pickle=False)
            elif name in ARRAYS:
                raise ArtifactError(f"{build.path}: split {split!r} has no {name}.npy")
        try:
            return cls(split=split, **arrays)
        except ValueError as err:
            raise ArtifactError(f"{build.path / split}: {err}") from None


def windows(article_index: np.ndarray, chunk_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every window of payload rows whose 6 chunks are consecutive chunks of one article.

    article_index, chunk_index: (R,) int, the payload table in row order.
    Returns context_rows (N, 5) int32 and target_row (N,) int32, in row order.
    """
    a = np.asarray(article_index, dtype=np.int64)
    c = np.asarray(chunk_index, dtype=np.int64)
    rows = len(a)
    if rows <= CONTEXT:
        return np.empty((0, CONTEXT), np.int32), np.empty(0, np.int32)
    # Row t may be a target when rows t-5..t are one article with chunk indices c[t]-5..c[t].
    step_ok = (a[1:] == a[:-1]) & (c[1:] == c[:-1] + 1)  # (R-1,): row i+1 follows row i
    run = np.convolve(step_ok.astype(np.int64), np.ones(CONTEXT, np.int64), mode="valid")
    target_row = np.flatnonzero(run == CONTEXT) + CONTEXT  # (N,)
    context_rows = target_row[:, None] - np.arange(CONTEXT, 0, -1)[None, :]  # (N, 5)
    return context_rows.astype(np.int32), target_row.astype(np.int32)


def windows_ref(article_index: np.ndarray, chunk_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious version of :func:`windows` for the parity test."""
    contexts, targets = [], []
    for t in range(CONTEXT, len(article_index)):
        span = range(t - CONTEXT, t + 1)
        if all(article_index[r] == article_index[t] for r in span) and all(
            chunk_index[r] == chunk_index[t] - (t - r) for r in span
        ):
            contexts.append(list(range(t - CONTEXT, t)))
            targets.append(t)
    return (np.array(contexts, np.int32).reshape(-1, CONTEXT), np.array(targets, np.int32))


def assign_splits(article_ids: list[str], config: SplitConfig) -> dict[str, str]:
    """article id → ``train`` / ``val`` / ``eval`` by a seeded hash rank (see module docstring)."""
    ranked = sorted(article_ids,
                    key=lambda a: hashlib.sha256(f"{config.seed}:{a}".encode()).hexdigest())
    n = len(ranked)
    counts = split_counts(n, config)
    n_eval, n_val = counts["eval"], counts["val"]
    if n < 3:
        raise ValueError(f"need at least 3 articles with {CONTEXT + 1}+ chunks to split, got {n}")
    return {a: "eval" if i < n_eval else "val" if i < n_eval + n_val else "train"
            for i, a in enumerate(ranked)}


def split_counts(n: int, config: SplitConfig) -> dict[str, int]:
    """How many of ``n`` articles :func:`assign_splits` gives each split."""
    n_eval = max(1, round(n * config.eval_fraction))
    n_val = max(1, round(n * config.val_fraction))
    return {"train": n - n_eval - n_val, "val": n_val, "eval": n_eval}


def require_meaningful_split(split_of: Mapping[int, str], sets: Mapping[str, SequenceSet],
                             config: SplitConfig) -> None:
    """Refuse, with the numbers, a corpus whose split leaves a split under
    :data:`MIN_SPLIT_ARTICLES` articles: one article's windows measure one text, so such an
    eval set tells no two models apart and such a training set sees no variation across
    articles, however green the run. Says how many articles would do."""
    articles = {split: sum(1 for s in split_of.values() if s == split) for split in SPLITS}
    if min(articles.values()) >= MIN_SPLIT_ARTICLES:
        return
    need = next(n for n in range(3, 100_000) if min(split_counts(n, config).values())
                >= MIN_SPLIT_ARTICLES)
    got = ", ".join(f"{split} {articles[split]} article{'s' * (articles[split] != 1)} "
                    f"({len(sets[split])} windows)" for split in SPLITS)
    raise ValueError(
        f"the corpus is too small to split meaningfully: its {len(split_of)} articles with "
        f"{CONTEXT + 1}+ chunks give {got}; every split needs at least {MIN_SPLIT_ARTICLES} "
        f"articles (one article's windows measure one text). Give at least {need} such "
        f"articles (eval_fraction {config.eval_fraction}, val_fraction {config.val_fraction})")


def article_splits(payload: Payload, config: SplitConfig) -> dict[int, str]:
    """article_index → split, for every article long enough to hold a window."""
    article_index = payload.chunks["article_index"].to_numpy()
    _, target_row = windows(article_index, payload.chunks["chunk_index"].to_numpy())
    eligible = np.unique(article_index[target_row])
    id_of = payload.chunks.drop_duplicates("article_index").set_index("article_index")["article_id"]
    split_of = assign_splits([str(id_of[a]) for a in eligible], config)
    return {int(a): split_of[str(id_of[a])] for a in eligible}


def build_windows(payload: Payload, config: SplitConfig, facts: dict[str, Any] | None = None,
                  drop_near_duplicates: bool = True) -> dict[str, SequenceSet]:
    """All windows of the payload, split by article into train / val / eval, with windows
    that would leak a near-duplicate chunk into an earlier split dropped (module docstring).

    ``facts``, when given, receives what was dropped, for the manifest. The dropping never
    changes eval, so a caller that keeps only eval may skip its search
    (``drop_near_duplicates=False``).
    """
    article_index = payload.chunks["article_index"].to_numpy()
    chunk_index = payload.chunks["chunk_index"].to_numpy()
    context_rows, target_row = windows(article_index, chunk_index)
    split_of = article_splits(payload, config)
    window_split = np.array([split_of[int(a)] for a in article_index[target_row]])
    sets = {}
    for split in SPLITS:
        mask = window_split == split
        keys = np.stack([article_index[target_row[mask]], chunk_index[target_row[mask]]], axis=1)
        # A payload published elsewhere may carry int64 keys: one beyond int32 is refused.
        sets[split] = SequenceSet(split, context_rows[mask], target_row[mask], int32_keys(
            keys, f"payload {payload.manifest.get('build_id', '?')[:12]} {split} truth keys "
            "(article_index, chunk_index)", ArtifactError))
    if not drop_near_duplicates:
        return sets
    sets, dropped = drop_near_duplicate_windows(payload.vectors, sets,
                                                config.near_duplicate_cosine)
    if facts is not None:
        facts["near_duplicate_windows_dropped"] = dropped
    return sets


def drop_near_duplicate_windows(vectors: np.ndarray, sets: dict[str, SequenceSet],
                                threshold: float) -> tuple[dict[str, SequenceSet], dict[str, int]]:
    """Drop val windows using a chunk near-identical to an eval chunk, then train windows
    using a chunk near-identical to an eval or (kept) val chunk. Eval is never changed."""
    kept = dict(sets)
    dropped = {}
    for split, later in (("val", ("eval",)), ("train", ("eval", "val"))):
        seqs = kept[split]
        protected = np.unique(np.concatenate([kept[s].rows() for s in later]))
        bad_rows, _, _ = near_duplicates(vectors, protected, seqs.rows(), threshold)
        leaking = np.isin(seqs.window_rows(), bad_rows).any(axis=1)  # (N,)
        kept[split] = seqs.subset(~leaking)
        dropped[split] = int(leaking.sum())
    return kept, dropped


def publish_sequences(
    store: ArtifactStore,
    kind: str,
    payload: Payload,
    sets: dict[str, SequenceSet],
    info: dict[str, Any],
    recipe: Mapping[str, Any] | None = None,
) -> Build:
    """Write the splits of one sequences asset and publish them against ``payload``
    (``recipe``: :meth:`lvm_pipeline.store.ArtifactStore.publish`)."""
    with store.stage(kind) as staged:
        for split in SPLITS_OF_KIND[kind]:
            sets[split].save(staged / split)
        manifest = {
            **info,
            "payload_build_id": payload.build_id,
            "context": CONTEXT,
            "splits": {split: {"windows": len(sets[split]),
                               "articles": len(sets[split].articles())}
                       for split in SPLITS_OF_KIND[kind]},
        }
        return store.publish(kind, staged, manifest, upstream={"payload": payload.build_id},
                             recipe=recipe)


def native_info(config: SplitConfig) -> dict[str, Any]:
    return {"source": {"kind": "payload windows"}, "split_config": asdict(config)}


def load_sets(build: Build, verify: bool = True) -> dict[str, SequenceSet]:
    kind = build.manifest["kind"]
    return {split: SequenceSet.load(build, split, verify) for split in SPLITS_OF_KIND[kind]}


def require_payload(build: Build, payload: Payload) -> None:
    """Refuse sequences that index another payload build (stale lineage across runs)."""
    if build.manifest.get("payload_build_id") != payload.build_id:
        raise ArtifactError(
            f"{build.path}: {build.kind} build {build.build_id[:12]} indexes payload "
            f"{str(build.manifest.get('payload_build_id'))[:12]}, but the current payload is "
            f"{payload.build_id[:12]}; rebuild the sequences against the current payload"
        )
