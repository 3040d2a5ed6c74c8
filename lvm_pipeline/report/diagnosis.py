"""What a model actually retrieves: rank of truth, margins, impostors, and example queries.

Reads the current report's ``queries.parquet`` (written by the report asset) with the payload's
texts, so a user sees *what* comes back instead of one more number: the context a query read,
the chunk it should have found and the chunks that beat it.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd

from lvm_pipeline.evaluation import describe_sequence_use
from lvm_pipeline.payload import Payload, current_payload
from lvm_pipeline.sequences import SequenceSet
from lvm_pipeline.store import ArtifactError, ArtifactStore, kinds

RANK_BANDS = ((1, 1), (2, 5), (6, 10), (11, 50), (51, 500), (501, None))
WIDTH = 96


def _snippet(payload: Payload, row: int, width: int = 150) -> str:
    text = " ".join(str(payload.chunks.iloc[int(row)]["text"]).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _key(payload: Payload, row: int) -> str:
    rec = payload.chunks.iloc[int(row)]
    return f"{rec['article_id']} #{rec['chunk_index']}"


def diagnose(store: ArtifactStore, name: str, n_examples: int = 3) -> str:
    """The diagnosis of predictor ``name`` (a model or a baseline) in the current report."""
    build = store.current(kinds.REPORT)
    report = json.loads(build.file("report.json").read_text())
    queries = pd.read_parquet(build.file("queries.parquet"))
    valid = sorted(queries["predictor"].unique())
    if name not in valid:
        raise ArtifactError(f"no predictor {name!r} in the current report; valid: "
                            f"{', '.join(valid)}")
    payload = current_payload(store)
    if payload.build_id != report["payload_build_id"]:
        raise ArtifactError(f"the current report scored payload {report['payload_build_id'][:12]} "
                            f"but the current payload is {payload.build_id[:12]}; rerun the report")
    eval_set = SequenceSet.load(store.get(kinds.EVAL_SEQUENCES, report["eval_id"]), "eval")
    q = queries[queries["predictor"] == name].sort_values("query")
    ranks = q["rank"].to_numpy()
    margin = (q["cos_truth"] - q["cos_impostor"]).to_numpy()
    out = [f"# {name}: {len(q)} eval queries (report {build.build_id[:12]})", "",
           "Rank of the true next chunk among all payload rows:"]
    for lo, hi in RANK_BANDS:
        share = np.mean((ranks >= lo) & (ranks <= (hi or np.inf)))
        label = f"{lo}" if lo == hi else f"{lo}–{hi}" if hi else f"> {lo - 1}"
        out.append(f"  {label:>9}: {share:6.1%} {'#' * round(share * 50)}")
    out += [f"  median {np.median(ranks):.0f}, p90 {np.percentile(ranks, 90):.0f}", "",
            f"Margin cos(truth) − cos(best impostor): mean {margin.mean():+.3f}, "
            f"> 0 in {np.mean(margin > 0):.1%}, > 0.05 in {np.mean(margin > 0.05):.1%}",
            f"Paraphrase ratio (max cos to a context / cos to truth): median "
            f"{q['paraphrase_ratio'].median():.2f}, > 1 in {np.mean(q['paraphrase_ratio'] > 1):.1%}"]
    interval = report.get("confidence", {}).get("intervals", {}).get(name)
    if interval:
        level = f"{report['confidence']['level']:.0%}"
        out += ["", f"{level} paired-bootstrap intervals: " + ", ".join(
            f"{m} {i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}]" for m, i in interval.items())]
        for base, d in report["confidence"]["differences"].get(name, {}).items():
            m = d["mrr_at_10"]
            out.append(f"  MRR@10 − {base}: {m['value']:+.3f} [{m['low']:+.3f}, {m['high']:+.3f}]"
                       f" {m['verdict']}")
    if name in report.get("sequence_use", {}):
        out += ["", *describe_sequence_use(name, report["sequence_use"][name])]
    article = payload.chunks["article_index"].to_numpy()
    chunk = payload.chunks["chunk_index"].to_numpy()
    truth, imp = q["target_row"].to_numpy(), q["impostor_1_row"].to_numpy()
    same = article[imp] == article[truth]
    offsets = pd.Series(chunk[imp][same] - chunk[truth][same]).value_counts().head(5)
    out += ["", f"Rank-1 impostor from the truth's own article in {same.mean():.1%} of queries"
            + (": chunk offsets " + ", ".join(f"{o:+d} ({c})" for o, c in offsets.items())
               if same.any() else "")]
    picks = np.argsort(ranks, kind="stable")[np.linspace(0, len(ranks) - 1,
                                                          num=min(n_examples, len(ranks))
                                                          ).astype(int)]
    for i in picks:
        rec = q.iloc[int(i)]
        out += ["", "-" * WIDTH,
                f"query {rec['query']}: rank of truth {rec['rank']}, cos to truth "
                f"{rec['cos_truth']:.3f} vs best impostor {rec['cos_impostor']:.3f}"]
        for j, row in enumerate(eval_set.context_rows[int(rec["query"])]):
            out.append(_wrap(f"context -{5 - j} [{_key(payload, row)}]", _snippet(payload, row)))
        out.append(_wrap(f"TRUTH [{_key(payload, rec['target_row'])}]",
                         _snippet(payload, rec["target_row"])))
        for k in range(1, 4):
            row = rec.get(f"impostor_{k}_row")
            if row is not None and row >= 0:
                out.append(_wrap(f"impostor {k} [{_key(payload, row)}]", _snippet(payload, row)))
    return "\n".join(out)


def _wrap(label: str, text: str) -> str:
    return textwrap.fill(text, width=WIDTH, initial_indent=f"  {label}: ",
                         subsequent_indent=" " * 6)
