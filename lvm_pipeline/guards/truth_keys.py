"""Truth-key guard: keys are unique, name their window's own target, and windows are six
consecutive chunks of one article."""

from __future__ import annotations

from typing import Any

import numpy as np

from lvm_pipeline.guards.result import N_EXAMPLES, GuardResult, verdict
from lvm_pipeline.payload import Payload, pack_keys
from lvm_pipeline.sequences import CONTEXT, SequenceSet

# One rule's finding: (what is wrong, how many rows or windows, example lines).
Finding = tuple[str, int, list[str]]


def check_truth_keys(payload: Payload, sets: dict[str, SequenceSet],
                     name: str = "check_truth_keys") -> GuardResult:
    """Truth keys are unique, resolve to the window's own target row, and every window is six
    consecutive chunks of one article.

    Catches the reference's 25k duplicate keys in 584k windows, keys whose article index is off
    by one (they name a row other than the window's target), and windows stitched from chunks
    of different articles or with a gap. Duplicate ``(article, chunk)`` keys in the payload
    itself count too: with them a key cannot name one chunk.
    """
    rule = ("every (article, chunk) truth key is unique in the payload and across the splits, "
            "names the window's own target row, and each window is 6 consecutive chunks of one "
            "article")
    article = payload.chunks["article_index"].to_numpy(np.int64)
    chunk = payload.chunks["chunk_index"].to_numpy(np.int64)
    present = {s: seqs for s, seqs in sets.items() if len(seqs)}
    findings = [_payload_duplicates(payload, article, chunk)]
    if present:
        findings.append(_duplicate_truth_keys(present))
    split_stats: dict[str, Any] = {}
    for split, seqs in present.items():
        split_findings, split_stats[split] = _split_windows(payload, split, seqs, article, chunk)
        findings.extend(split_findings)
    counts: dict[str, int] = {}
    examples: list[str] = []
    for what, n, lines in findings:
        counts[what] = counts.get(what, 0) + n
        if n:  # at most 2 examples per finding, so that one rule cannot hide the others
            examples.extend(lines[:max(0, N_EXAMPLES - len(examples))][:2])
    bad = sum(counts.values())
    passed = bad == 0
    found = "; ".join(f"{n} {what}" for what, n in counts.items() if n)
    message = verdict(
        passed,
        f"keys unique and exact: {sum(len(s) for s in present.values())} windows "
        f"({', '.join(f'{s} {len(v)}' for s, v in present.items())}) each name their own "
        f"target and span 6 consecutive chunks; payload keys unique "
        f"(payload {payload.build_id[:12]})",
        f"TRUTH KEYS BROKEN: {found} (threshold 0, payload {payload.build_id[:12]}). A key "
        "that names the wrong chunk makes the eval's truth wrong and the training target "
        "ambiguous; rebuild the windows from this payload or fix the keys at their source")
    return GuardResult(name, passed, rule, float(bad), 0.0, message, examples,
                       {"counts": counts, "splits": split_stats}, measure="broken_keys")


def _payload_duplicates(payload: Payload, article: np.ndarray, chunk: np.ndarray) -> Finding:
    """Payload rows beyond the first with the same ``(article, chunk)`` key; article, chunk:
    (R,) int64 per payload row."""
    payload_keys = pack_keys(article, chunk)
    _, first, key_counts = np.unique(payload_keys, return_index=True, return_counts=True)
    repeated = key_counts > 1
    return ("duplicate keys in the payload", int((key_counts - 1).sum()),
            [f"payload key (article {article[r]}, chunk {chunk[r]}) is on {c} rows, e.g. "
             f"{payload.describe_row(int(r))}"
             for r, c in zip(first[repeated], key_counts[repeated], strict=True)])


def _duplicate_truth_keys(present: dict[str, SequenceSet]) -> Finding:
    """Windows beyond the first with the same truth key, within a split or across splits (a
    key in train and eval is leakage as much as a key twice in train)."""
    all_keys = np.concatenate([pack_keys(s.truth_keys[:, 0], s.truth_keys[:, 1])
                               for s in present.values()])
    owner = np.concatenate([[split] * len(s) for split, s in present.items()])
    position = np.concatenate([np.arange(len(s)) for s in present.values()])
    _, inverse, set_counts = np.unique(all_keys, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(set_counts[inverse] > 1)
    seen: set[int] = set()
    lines = []
    for i in repeated:
        if int(all_keys[i]) in seen:
            continue
        seen.add(int(all_keys[i]))
        keys = present[owner[i]].truth_keys[position[i]]
        holders = [f"{owner[j]} window {position[j]}" for j in repeated
                   if all_keys[j] == all_keys[i]][:3]
        lines.append(f"truth key (article {keys[0]}, chunk {keys[1]}) is used by "
                     f"{set_counts[inverse[i]]} windows: {', '.join(holders)}")
        if len(lines) >= N_EXAMPLES:
            break
    return "duplicate truth keys in the sets", int((set_counts - 1).sum()), lines


def _split_windows(payload: Payload, split: str, seqs: SequenceSet, article: np.ndarray,
                   chunk: np.ndarray) -> tuple[list[Finding], dict[str, Any]]:
    """One split's broken windows (outside the payload or not 6 consecutive chunks of one
    article), keys in no payload row and keys naming another row than the target, with the
    split's figures for the details. article, chunk: (R,) int64 per payload row."""
    rows6 = seqs.window_rows()  # (N, 6)
    outside = ((rows6 < 0) | (rows6 >= len(payload))).any(axis=1)
    safe = np.where(outside[:, None], 0, rows6)
    a6, c6 = article[safe], chunk[safe]  # (N, 6)
    consecutive = ((a6 == a6[:, -1:]).all(axis=1)
                   & (c6 == c6[:, -1:] - np.arange(CONTEXT, -1, -1)[None, :]).all(axis=1))
    broken = outside | ~consecutive
    keys = seqs.truth_keys
    key_rows = payload.rows_for_keys(keys[:, 0], keys[:, 1])
    unresolved = key_rows < 0
    wrong = ~unresolved & (key_rows != seqs.target_row)
    findings = [
        ("windows outside the payload or not 6 consecutive chunks of one article",
         int(broken.sum()),
         [f"{split} window {i}: rows {rows6[i].tolist()} are " + (
             "outside the payload" if outside[i] else
             "chunks " + ", ".join(f"{a}:{c}" for a, c in zip(a6[i], c6[i], strict=True))
             + " (article:chunk); target " + payload.describe_row(int(rows6[i, -1])))
          for i in np.flatnonzero(broken)[:2]]),
        ("truth keys not in the payload", int(unresolved.sum()),
         [f"{split} window {i}: truth key (article {keys[i, 0]}, chunk {keys[i, 1]}) is in no "
          "payload row" for i in np.flatnonzero(unresolved)[:2]]),
        ("truth keys naming another chunk than the window's target", int(wrong.sum()),
         [f"{split} window {i}: truth key (article {keys[i, 0]}, chunk {keys[i, 1]}) names "
          f"{payload.describe_row(int(key_rows[i]))}, but the target vector is "
          f"{payload.describe_row(int(seqs.target_row[i]))}" for i in np.flatnonzero(wrong)[:2]]),
    ]
    stats = {"windows": len(seqs), "not_consecutive": int(broken.sum()),
             "unresolved_keys": int(unresolved.sum()), "wrong_keys": int(wrong.sum()),
             "key_coverage": float(1 - unresolved.mean())}
    return findings, stats
