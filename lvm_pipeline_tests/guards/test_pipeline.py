"""Each known way LVM training data goes wrong, reproduced end to end through Dagster.

Every test builds the bad input on a private copy of the small default run, materializes with
Dagster and asserts that the check fails with its message (rule, figure, threshold, example
rows), that no training or evaluation asset downstream materializes, and that no good artifact
already under the data root was rewritten. docs/guards.md maps each failure to its test here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, main
from lvm_pipeline.cli.run_config import PayloadParams, TrainingSequencesParams
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, PickleImportsResource
from lvm_pipeline.embedding.encoder import DEFAULT_EMBEDDER, Embedder, EmbedderConfig, resolve_model_dir
from lvm_pipeline.interop.reference_npz import export_training_npz
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.payload.payload import current_payload
from lvm_pipeline.sequences.windows import load_sets
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore
from lvm_pipeline_tests.conftest import (
    assert_untouched,
    check_evaluations,
    materialize_all,
    materialized,
    reference_payload_dict,
    save_pickled,
    snapshot_files,
    step_errors,
)

TRAINING = ["aligned_training_sequences", *VARIANTS]
DOWNSTREAM_OF_PAYLOAD = {"aligned_training_sequences", "aligned_eval", "faiss_index",
                         "retrieval_report", *VARIANTS}
# Where the canary is not the point, it re-embeds 8 texts instead of 64 (seconds per run).
QUICK_CANARY = {"guards": GuardsResource(canary_sample=8)}
# What `lvm import-payload --allow-pickle` binds for its own run.
PICKLES_ALLOWED = {**QUICK_CANARY, "pickle_imports": PickleImportsResource(allowed=True)}


@pytest.fixture(scope="session")
def cls_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled MiniLM, same weights, CLS pooling instead of mean: "same name, other
    encoder". Built offline from the installed model (weights linked, configs copied)."""
    src = resolve_model_dir(DEFAULT_EMBEDDER)
    dst = tmp_path_factory.mktemp("minilm_cls")
    for file in src.rglob("*"):
        if file.is_file():
            target = dst / file.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if file.suffix == ".safetensors":
                target.symlink_to(file)
            else:
                shutil.copyfile(file, target)
    pooling = dst / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    return dst


def _train_windows(data_dir: Path):
    store = ArtifactStore(data_dir)
    return current_payload(store), load_sets(store.current(kinds.TRAIN_SEQUENCES))


def _write_npz(path: Path, context: np.ndarray, target: np.ndarray, keys: np.ndarray) -> Path:
    np.savez(path, context_sequences=context.astype(np.float32),
             target_vectors=target.astype(np.float32), truth_keys=keys.astype(np.int64),
             provenance=np.array(json.dumps({"made_by": "test"})))
    return path


def _import(data_dir: Path, npz: Path, selection=TRAINING):
    return materialize_all(data_dir, selection=selection,
                           ops={"aligned_training_sequences": TrainingSequencesParams(import_npz=str(npz))})


# --------------------------------------------------------------------------- 1, 2


@pytest.mark.parametrize("how", ["other_encoder", "unrelated", "foreign_contexts"])
def test_foreign_training_sets_are_blocked_with_the_figure(how, small_run_copy, tmp_path,
                                                           cls_embedder_dir):
    """1. The founding incident (another encoder of the same texts; unrelated vectors) and
    2. the reference's "aligned" eval (payload targets, foreign contexts)."""
    data_dir = small_run_copy
    payload, sets = _train_windows(data_dir)
    s = sets["train"]
    ctx_rows, tgt_rows, keys = s.context_rows[:12], s.target_row[:12], s.truth_keys[:12]
    context, target = gather(payload.vectors, ctx_rows), gather(payload.vectors, tgt_rows)
    if how == "unrelated":
        rng = np.random.default_rng(0)
        context, target = rng.standard_normal(context.shape), rng.standard_normal(target.shape)
    else:  # the same texts through the same weights with CLS pooling
        rows = np.unique(np.concatenate([ctx_rows.ravel(), tgt_rows]))
        other = Embedder(EmbedderConfig(model=str(cls_embedder_dir))).encode(
            payload.chunks.text[rows].tolist())
        lookup = np.zeros((len(payload), payload.dim), np.float32)
        lookup[rows] = other
        context = lookup[ctx_rows]
        if how == "other_encoder":
            target = lookup[tgt_rows]
    npz = _write_npz(tmp_path / "foreign.npz", context, target, keys)
    before = snapshot_files(data_dir)
    result = _import(data_dir, npz)
    check = check_evaluations(result)["check_training_sequences_aligned"]
    stats = check.metadata["details"].value["splits"]["train"]
    print(how, check.description.splitlines()[0])
    assert not check.passed and check.metadata["threshold"].value == 0.99
    assert "MISALIGNED" in check.description and "threshold 0.99" in check.description
    assert "truth key (article" in check.description  # example rows with their text
    if how == "foreign_contexts":  # the targets half alone would have passed
        assert stats["target_cos_min"] > 0.99 and stats["context_cos_min"] < 0.9
        assert f"contexts min {stats['context_cos_min']:.3f}" in check.description
    else:
        assert check.metadata["min_cosine_to_payload"].value < 0.9 and stats["target_cos_mean"] < 0.9
    assert materialized(result) == {"aligned_training_sequences"}
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 3


def test_broken_truth_keys_are_blocked(small_run_copy, tmp_path):
    """3. Duplicate keys, keys off by one article, windows that are not consecutive chunks."""
    data_dir = small_run_copy
    payload, sets = _train_windows(data_dir)
    npz = export_training_npz(tmp_path / "train.npz", payload, sets, {"test": "keys"})
    with np.load(npz) as f:
        data = dict(f)
    dup = np.concatenate([np.arange(len(data["target_vectors"])), [0, 1, 2]])
    for key in ("context_sequences", "target_vectors", "truth_keys"):
        data[key] = data[key][dup]  # three windows twice
    keys = data["truth_keys"]
    # The reference's off-by-one article index, on 10 windows whose shifted key exists.
    shifted = np.flatnonzero(payload.rows_for_keys(keys[:, 0] + 1, keys[:, 1]) >= 0)[:10]
    keys[shifted, 0] += 1
    data["context_sequences"][30] = data["context_sequences"][30][::-1]  # chunks out of order
    np.savez(npz, **data)
    before = snapshot_files(data_dir)
    result = _import(data_dir, npz)
    check = check_evaluations(result)["check_training_truth_keys"]
    counts = check.metadata["details"].value["counts"]
    print(check.description)
    assert not check.passed and "TRUTH KEYS BROKEN" in check.description
    assert counts["duplicate truth keys in the sets"] >= 3
    assert counts["truth keys naming another chunk than the window's target"] >= 10
    assert counts["windows outside the payload or not 6 consecutive chunks of one article"] >= 1
    assert "but the target vector is row" in check.description
    assert materialized(result) == {"aligned_training_sequences"}
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 4


def test_leakage_between_splits_is_blocked_with_counts_per_pair(small_run, small_run_copy,
                                                                tmp_path):
    """4. Train, val and eval sharing articles, texts and vectors: an imported training set
    that also holds the eval windows. The default run itself is disjoint."""
    assert check_evaluations(small_run[1])["check_splits_disjoint"].passed
    data_dir = small_run_copy
    store = ArtifactStore(data_dir)
    payload, sets = _train_windows(data_dir)
    sets = {**sets, **load_sets(store.current(kinds.EVAL_SEQUENCES))}
    npz = export_training_npz(tmp_path / "leaky.npz", payload, sets, {"test": "leak"})
    before = snapshot_files(data_dir)
    result = _import(data_dir, npz)
    check = check_evaluations(result)["check_splits_disjoint@aligned_training_sequences"]
    pair = check.metadata["details"].value["pairs"]["train/eval"]
    n_eval_articles = len(sets["eval"].articles())
    print(check.description.splitlines()[0])
    assert not check.passed and "LEAKAGE between splits" in check.description
    assert pair["articles"] == n_eval_articles and pair["texts"] > 0
    assert (f"train/eval: {n_eval_articles} articles, {pair['texts']} texts, "
            f"{pair['near_duplicates']} near-duplicates") in check.description
    assert "share article" in check.description
    assert materialized(result) == {"aligned_training_sequences"}
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 5, 10


def test_broken_payload_is_blocked_and_every_consumer_refuses_it(small_run_copy, tmp_path):
    """5. NaN / inf, off-unit norms, duplicate rows, empty texts, another dim; and 10. the
    reference payload converts only on an explicit opt-in."""
    data_dir = small_run_copy
    payload = current_payload(ArtifactStore(data_dir))
    ref = reference_payload_dict(payload)
    ids = list(ref)
    text, meta, vec = ref[ids[3]]
    ref[ids[3]] = (text, meta, np.where(np.arange(payload.dim) == 5, np.nan, vec))
    text, meta, vec = ref[ids[8]]
    ref[ids[8]] = (text, meta, vec * 1.3)
    text, meta, vec = ref[ids[12]]
    ref[ids[12]] = (text, {**meta, "chunk_index": meta["chunk_index"] - 1}, vec)
    ref[ids[20]] = (ref[ids[20]][0], ref[ids[20]][1], ref[ids[19]][2])
    ref[ids[25]] = ("", ref[ids[25]][1], ref[ids[25]][2])
    broken = save_pickled(tmp_path / "broken.npy", ref)
    before = snapshot_files(data_dir)
    everything = dg.AssetSelection.assets("payload").downstream()

    refused = materialize_all(data_dir, selection=everything, resources=PICKLES_ALLOWED,
                              ops={"payload": PayloadParams(import_npy=str(broken))})
    assert "executes code stored in the file" in step_errors(refused)["payload"]
    assert materialized(refused) == set()
    # What a UI's launchpad can send: asking in the run's config is not enough.
    launchpad = materialize_all(data_dir, selection=everything, resources=QUICK_CANARY,
                                ops={"payload": PayloadParams(import_npy=str(broken),
                                                              allow_pickle=True)})
    assert "pickled imports are not allowed in this deployment" in step_errors(
        launchpad)["payload"]
    assert materialized(launchpad) == set()

    result = materialize_all(data_dir, selection=everything, resources=PICKLES_ALLOWED,
                             ops={"payload": PayloadParams(import_npy=str(broken),
                                                           allow_pickle=True)})
    check = check_evaluations(result)["check_payload_integrity"]
    print(check.description)
    assert not check.passed and "PAYLOAD BROKEN" in check.description
    for rule in ("1 rows with NaN or inf", "1 rows with norm off 1 by more than 0.001",
                 "1 duplicate (article, chunk) keys", "1 duplicate vectors", "1 empty texts"):
        assert rule in check.description
    assert materialized(result) == {"payload"}  # nothing downstream

    wide = {k: (t, m, np.concatenate([v, np.zeros(16, np.float32)]))  # unit norm, 400-d
            for k, (t, m, v) in reference_payload_dict(payload).items()}
    result = materialize_all(data_dir, selection=everything, resources=PICKLES_ALLOWED, ops={
        "payload": PayloadParams(import_npy=str(save_pickled(tmp_path / "wide.npy", wide)),
                                 allow_pickle=True)})
    checks = check_evaluations(result)
    assert (f"PAYLOAD BROKEN: {len(wide)} rows of dim 400 instead of the embedder's 384 "
            "(threshold 0") in checks["check_payload_integrity"].description
    assert "makes 384-d vectors, the payload holds 400-d" in (
        checks["check_payload_embedder_canary"].description)
    assert materialized(result) == {"payload"}
    # A run that does not include the payload's checks: the consumer verifies on its own.
    alone = materialize_all(data_dir, selection=["aligned_eval"], resources=QUICK_CANARY)
    assert "PAYLOAD BROKEN" in step_errors(alone)["aligned_eval"]
    assert materialized(alone) == set()
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 6


def test_same_name_other_encoder_fails_the_canary(small_run_copy, cls_embedder_dir):
    """6. The configured embedder is the same weights with another pooling."""
    data_dir = small_run_copy
    other = {"embedder": EmbedderResource(model=str(cls_embedder_dir)),
             "guards": GuardsResource(canary_sample=16)}
    before = snapshot_files(data_dir)
    downstream = [a for a in DOWNSTREAM_OF_PAYLOAD if a != "retrieval_report"]
    result = materialize_all(data_dir, resources=other,
                             selection=dg.AssetSelection.checks_for_assets("payload")
                             | dg.AssetSelection.assets(*downstream))
    checks = check_evaluations(result)
    canary = checks["check_payload_embedder_canary"]
    print(canary.description.splitlines()[0])
    assert checks["check_payload_integrity"].passed
    assert not canary.passed and canary.metadata["min_cosine_reembedded"].value < 0.9
    assert "ENCODER MISMATCH" in canary.description and "below 0.99" in canary.description
    assert "same weights, other configuration (pooling / normalisation)" in canary.description
    assert materialized(result) == set()
    alone = materialize_all(data_dir, resources=other, selection=["faiss_index"])
    assert "ENCODER MISMATCH" in step_errors(alone)["faiss_index"]
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 7


def test_stale_lineage_is_refused_in_later_runs_naming_both_builds(small_run_copy, tmp_path,
                                                                   capsys):
    """7. The payload is rebuilt (P2, here the reference conversion of P1 minus one article);
    sequences, index, checkpoints and report still describe P1. A later run reads each input
    as the instance recorded it, so a trainer keeps training on S1 over P1 (one consistent
    lineage, which the UI shows as stale), but a report over an eval set of P2 and the index
    and checkpoints of P1 is refused naming both, and `lvm report` refuses the P1 report."""
    data_dir = small_run_copy
    store = ArtifactStore(data_dir)
    p1 = current_payload(store)
    s1 = store.current(kinds.TRAIN_SEQUENCES).build_id
    index_1 = store.current("index").build_id
    keep = np.flatnonzero(p1.chunks.article_index != p1.chunks.article_index.max())
    npy = save_pickled(tmp_path / "p2.npy", reference_payload_dict(p1, keep))
    assert main(["import-payload", str(npy), "--data-dir", str(data_dir)]) == EXIT_FAILED
    assert "add --allow-pickle" in capsys.readouterr().err
    assert main(["import-payload", str(npy), "--allow-pickle", "--data-dir", str(data_dir)]
                ) == EXIT_OK
    out = capsys.readouterr()
    assert "executes code" in out.err and "check_payload_integrity" in out.out
    p2 = current_payload(store)
    assert p2.build_id != p1.build_id
    before = snapshot_files(data_dir)

    trainer = materialize_all(data_dir, selection=["mamba_s"])
    assert trainer.success, step_errors(trainer)
    [event] = trainer.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["sequences_build_id"].value == s1 and meta["payload_build_id"].value == p1.build_id
    assert materialize_all(data_dir, selection=["aligned_eval"]).success  # eval set over P2
    report = step_errors(materialize_all(data_dir, selection=["retrieval_report"]))
    eval_2 = store.current("sequences/eval").build_id
    assert (f"sequences/eval {eval_2[:12]} indexes payload {p2.build_id[:12]}, the index "
            f"{index_1[:12]} payload {p1.build_id[:12]}") in report["retrieval_report"]
    assert main(["report", "--data-dir", str(data_dir)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "STALE LINEAGE" in err and f"was built from payload {p1.build_id[:12]}" in err
    assert_untouched(data_dir, before)


# --------------------------------------------------------------------------- 8


@pytest.mark.parametrize("pattern, consumer", [
    ("payload/*/vectors.npy", "mamba_s"),
    ("sequences/train/*/train/context_rows.npy", "mamba_s"),
    ("index/*/index.faiss", "retrieval_report"),
    ("models/mamba_s/*/model.safetensors", "retrieval_report"),
])
def test_tampered_files_fail_to_load_naming_the_file(pattern, consumer, small_run_copy, capsys):
    """8. A truncated vectors file, an edited sequence file, index or checkpoint."""
    data_dir = small_run_copy
    (path,) = data_dir.glob(pattern)
    raw = path.read_bytes()
    if path.name == "vectors.npy":
        path.write_bytes(raw[: len(raw) // 2])  # truncated
    else:
        path.write_bytes(raw[:-9] + bytes([raw[-9] ^ 1]) + raw[-8:])  # one bit flipped
    assert main(["verify", "--keep", "--data-dir", str(data_dir)]) == EXIT_FAILED
    err = capsys.readouterr().err
    build_dir = next(p for p in path.parents if (p / "manifest.json").exists())
    assert f"FAILED  {build_dir.relative_to(data_dir)} (current): {path}: sha256 mismatch" in err
    assert f"{path}: sha256 mismatch, file was truncated or edited" in err
    before = snapshot_files(data_dir)
    result = materialize_all(data_dir, selection=[consumer])
    assert f"{path}: sha256 mismatch" in step_errors(result)[consumer]
    assert materialized(result) == set()
    assert_untouched(data_dir, before)
    if consumer == "mamba_s":  # the checks refuse the file too (never a remembered verdict)
        assert main(["check", "--data-dir", str(data_dir)]) == EXIT_FAILED
        out = capsys.readouterr()
        assert "check_training_sequences_aligned" in out.out
        assert f"INPUT REFUSED: {path}: sha256 mismatch" in out.err


# --------------------------------------------------------------------------- 9


def test_unlearnable_windows_no_rule_names_are_blocked_by_the_smoke_test(small_run_copy,
                                                                         tmp_path):
    """9. A kind of misalignment no other rule catches: a payload whose ingest lost the order,
    so "articles" are runs of unrelated chunks. Keys, vectors, texts and the encoder are all
    consistent; only the learnability smoke test sees that contexts predict nothing."""
    data_dir = small_run_copy
    payload = current_payload(ArtifactStore(data_dir))
    order = np.random.default_rng(0).permutation(len(payload))
    scrambled = {f"cpe-{i}": (payload.chunks.text[r],
                              {"article_index": i // 10, "chunk_index": i % 10,
                               "article_id": f"scrambled-{i // 10}"},
                              np.asarray(payload.vectors[r])) for i, r in enumerate(order)}
    npy = save_pickled(tmp_path / "scrambled.npy", scrambled)
    before = snapshot_files(data_dir)
    result = materialize_all(data_dir, selection=dg.AssetSelection.assets("payload").downstream(),
                             resources=PICKLES_ALLOWED,
                             ops={"payload": PayloadParams(import_npy=str(npy), allow_pickle=True)})
    checks = check_evaluations(result)
    learnable = checks["check_training_learnable"]
    print(learnable.description.splitlines()[0])
    assert not learnable.passed and "NOT LEARNABLE" in learnable.description
    measured = next(v.value for k, v in learnable.metadata.items() if k.startswith("ridge_contain"))
    assert "chance" in learnable.description and measured < learnable.metadata["threshold"].value
    others = {k: c.passed for k, c in checks.items() if "@" not in k and k != "check_training_learnable"}
    assert all(others.values()), others
    assert not materialized(result) & {*VARIANTS, "retrieval_report"}
    assert_untouched(data_dir, before)
