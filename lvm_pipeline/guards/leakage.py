"""Leakage guard: train, val and eval share no article, chunk text or near-duplicate chunk."""

from __future__ import annotations

import itertools

import numpy as np

from lvm_pipeline.guards.result import N_EXAMPLES, GuardResult, verdict
from lvm_pipeline.payload import Payload
from lvm_pipeline.sequences import NEAR_DUPLICATE_COSINE, SPLITS, SequenceSet, near_duplicates


def check_split_leakage(payload: Payload, sets: dict[str, SequenceSet],
                        threshold: float = NEAR_DUPLICATE_COSINE,
                        name: str = "check_split_leakage") -> GuardResult:
    """Train, val and eval share no article, no chunk text and no near-duplicate chunk.

    Compares every chunk each split's windows read (contexts and targets): by article, by
    normalised text hash (``corpus.text_sha256``) and by vector (nearest neighbour at cosine
    >= ``threshold``, found with FAISS). Counts per pair of splits; the reference's eval shared
    90 % of its articles with training.
    """
    rule = (f"no two splits share an article, a chunk text (normalised hash) or a "
            f"near-duplicate chunk (cosine >= {threshold})")
    article = payload.chunks["article_index"].to_numpy(np.int64)
    text_hash = payload.chunks["text_sha256"].to_numpy().astype(str)
    present = [s for s in (*SPLITS, *sorted(set(sets) - set(SPLITS))) if s in sets and len(sets[s])]
    rows = {s: sets[s].rows() for s in present}
    pairs: dict[str, dict[str, int]] = {}
    examples: list[str] = []
    for a, b in itertools.combinations(present, 2):
        shared_articles = np.intersect1d(article[rows[a]], article[rows[b]])
        shared_texts = np.intersect1d(text_hash[rows[a]], text_hash[rows[b]])
        # The smaller split goes into the index (memory: 470k train rows are 1.4 GB at 768-d);
        # a pair exists either way round.
        small, large = (a, b) if len(rows[a]) <= len(rows[b]) else (b, a)
        large_rows, small_rows, cos = near_duplicates(payload.vectors, rows[small], rows[large],
                                                      threshold)
        pair = f"{a}/{b}"
        pairs[pair] = {"articles": len(shared_articles), "texts": len(shared_texts),
                       "near_duplicates": len(large_rows)}
        for art in shared_articles[:2]:
            ra = rows[a][article[rows[a]] == art][0]
            rb = rows[b][article[rows[b]] == art][0]
            examples.append(f"{pair} share article {payload.chunks['article_id'].iloc[ra]!r}: "
                            f"{a} {payload.describe_row(int(ra))} | {b} "
                            f"{payload.describe_row(int(rb))}")
        for h in shared_texts[:2]:
            ra = rows[a][text_hash[rows[a]] == h][0]
            rb = rows[b][text_hash[rows[b]] == h][0]
            examples.append(f"{pair} share a chunk text: {a} {payload.describe_row(int(ra))} | "
                            f"{b} {payload.describe_row(int(rb))}")
        for i in np.argsort(-cos)[:2]:
            examples.append(f"{pair} near-duplicate chunks (cos {cos[i]:.4f}): {small} "
                            f"{payload.describe_row(int(small_rows[i]))} | {large} "
                            f"{payload.describe_row(int(large_rows[i]))}")
    total = sum(sum(p.values()) for p in pairs.values())
    passed = total == 0
    per_pair = "; ".join(f"{pair}: {p['articles']} articles, {p['texts']} texts, "
                         f"{p['near_duplicates']} near-duplicates" for pair, p in pairs.items())
    message = verdict(
        passed,
        f"splits disjoint: {per_pair or 'only one split present'} "
        f"(cosine threshold {threshold}, payload {payload.build_id[:12]})",
        f"LEAKAGE between splits: {per_pair} (threshold 0 of each; near-duplicate at cosine "
        f">= {threshold}, payload {payload.build_id[:12]}). A model scored on chunks it trained "
        "on looks better than it is; split by article and drop the shared chunks")
    return GuardResult(name, passed, rule, float(total), 0.0, message, examples[:N_EXAMPLES + 1],
                       {"pairs": pairs, "splits": {s: len(sets[s]) for s in present},
                        "near_duplicate_cosine": threshold},
                       measure="shared_articles_texts_and_near_duplicates")
