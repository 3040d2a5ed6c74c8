"""Pickle runs code: the reference payload converts only on an explicit opt-in, our own formats
never need it, and training's resume file loads with ``weights_only=True``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvm_pipeline.interop.reference_payload import (
    PickleRefusedError,
    import_reference_payload,
    read_reference_payload,
)
from lvm_pipeline.payload.payload import load_payload
from lvm_pipeline.sequences.windows import SplitConfig, build_windows
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactError
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.loop import train
from lvm_pipeline.training.resume import RESUME_FILE
from lvm_pipeline_tests.conftest import reference_payload_dict, save_pickled


class _Trap:
    """Unpickling this writes a file: proof that a load executed code from the data."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_reference_payload_is_refused_without_the_opt_in_and_runs_no_code(tmp_path,
                                                                         synthetic_payload):
    marker = tmp_path / "pwned"
    path = save_pickled(tmp_path / "payload.npy",
                 {**reference_payload_dict(synthetic_payload, range(3)), "x": _Trap(str(marker))})
    with pytest.raises(PickleRefusedError, match=r"pickled object array; loading it executes "
                                                 r"code.*--allow-pickle"):
        read_reference_payload(path)
    assert not marker.exists()
    # With the opt-in the file is unpickled (and the trap fires: that is what pickle does).
    with pytest.raises(ArtifactError):
        read_reference_payload(path, allow_pickle=True)
    assert marker.exists()


def test_reference_payload_converts_keeping_its_keys_and_vectors(tmp_path, store,
                                                                 synthetic_payload):
    ref = reference_payload_dict(synthetic_payload)
    shuffled = dict(sorted(ref.items(), key=lambda kv: hash(kv[0]) % 97))  # any dict order
    path = save_pickled(tmp_path / "payload.npy", shuffled)
    build = import_reference_payload(store, path, allow_pickle=True)
    imported = load_payload(build)
    # Rows come back in (article, chunk) order with the reference's keys and vectors.
    np.testing.assert_array_equal(imported.chunks.article_index, synthetic_payload.chunks.article_index)
    np.testing.assert_array_equal(imported.chunks.chunk_index, synthetic_payload.chunks.chunk_index)
    np.testing.assert_array_equal(imported.vectors, synthetic_payload.vectors)
    assert imported.chunks.source_id[0] == "cpe-0"
    assert build.manifest["source"]["kind"] == "reference payload (pickle)"
    assert build.manifest["norm"] == "as imported (unchecked)"
    # Windows (and, with the article ids kept, the split) over the imported payload are ours.
    ours = build_windows(synthetic_payload, SplitConfig())["train"]
    theirs = build_windows(imported, SplitConfig())["train"]
    np.testing.assert_array_equal(ours.truth_keys, theirs.truth_keys)


def test_malformed_reference_payloads_are_refused_with_the_reason(tmp_path, synthetic_payload):
    np.save(tmp_path / "plain.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ArtifactError, match="plain float32 array"):
        read_reference_payload(tmp_path / "plain.npy")
    bad_meta = {"a": ("text", {"article": 1}, np.zeros(4, np.float32))}
    with pytest.raises(ArtifactError, match=r"entry 'a': meta must hold article_index and "
                                            r"chunk_index, has \['article'\]"):
        read_reference_payload(save_pickled(tmp_path / "meta.npy", bad_meta), allow_pickle=True)
    sizes = {"a": ("t", {"article_index": 0, "chunk_index": 0}, np.zeros(4)),
             "b": ("u", {"article_index": 0, "chunk_index": 1}, np.zeros(5))}
    with pytest.raises(ArtifactError, match=r"vectors of several sizes \[4, 5\]"):
        read_reference_payload(save_pickled(tmp_path / "sizes.npy", sizes), allow_pickle=True)


def test_our_npy_files_load_without_pickle(store, synthetic_payload):
    from lvm_pipeline.sequences.windows import native_info, publish_sequences

    build = publish_sequences(store, kinds.TRAIN_SEQUENCES, synthetic_payload,
                              build_windows(synthetic_payload, SplitConfig()),
                              native_info(SplitConfig()))
    for root in (build.path, store.current("payload").path):
        for npy in root.rglob("*.npy"):
            np.load(npy, allow_pickle=False)


def test_a_resume_file_carrying_code_is_refused_not_run(tmp_path, synthetic_payload):
    from lvm_pipeline.models import LVM, preset

    marker = tmp_path / "pwned"
    work = tmp_path / "work"
    work.mkdir()
    torch.save({"model": {}, "epoch": _Trap(str(marker))}, work / RESUME_FILE)
    sets = build_windows(synthetic_payload, SplitConfig())
    model = LVM(preset("mamba_s", "tiny", d_in=synthetic_payload.dim))
    with pytest.raises(Exception, match="Weights only load failed"):
        train(model, synthetic_payload.vectors, sets["train"], sets["val"],
              TrainConfig(epochs=1, batch_size=16), work_dir=work,
              article_of_row=synthetic_payload.chunks["article_index"].to_numpy())
    assert not marker.exists()


def test_a_file_that_needs_no_pickle_is_refused_for_what_it_is(tmp_path):
    """Only an object array is worth the --allow-pickle advice: a truncated or empty file was
    sent for it too, since np.load(allow_pickle=False) raises ValueError for both."""
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((10, 4), np.float32))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(plain.read_bytes()[:140])
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    for path, reason in ((plain, "holds a plain float32 array (10, 4)"),
                         (truncated, "truncated: 140 bytes, where its header announces a "
                                     "float32 array (10, 4) of 288"),
                         (empty, "not a .npy file")):
        with pytest.raises(ArtifactError) as refused:
            read_reference_payload(path)
        assert not isinstance(refused.value, PickleRefusedError)
        assert str(refused.value).startswith(f"{path}: {reason}")


@pytest.mark.parametrize(("entry", "reason"), [
    ({None: ("t", {"article_index": 0, "chunk_index": 0}, np.ones(4))},
     "entry None: its id (the dict's key) is a NoneType; ids must be non-empty strings"),
    ({"": ("t", {"article_index": 0, "chunk_index": 0}, np.ones(4))},
     "entry '': its id (the dict's key) is empty"),
    ({"a": ("t", {"article_index": 0, "chunk_index": 0, "article_id": None}, np.ones(4))},
     "entry 'a': meta article_id is a NoneType"),
    ({"a": ("t", {"article_index": 2**31 + 5, "chunk_index": 0}, np.ones(4))},
     "entry 'a': meta article_index 2147483653 does not fit int32"),
    ({"a": ("t", {"article_index": 0, "chunk_index": 1.5}, np.ones(4))},
     "entry 'a': meta chunk_index is 1.5 (float); truth-key fields must be integers"),
    ({"a": ("t", {"article_index": 0, "chunk_index": 0}, np.ones(0))},
     "every vector is empty"),
])
def test_bad_ids_and_keys_in_a_reference_payload_are_refused_naming_the_entry(tmp_path, entry,
                                                                             reason):
    path = save_pickled(tmp_path / "ref.npy", entry)
    with pytest.raises(ArtifactError) as refused:
        read_reference_payload(path, allow_pickle=True)
    assert str(refused.value).startswith(f"{path}") and reason in str(refused.value)
