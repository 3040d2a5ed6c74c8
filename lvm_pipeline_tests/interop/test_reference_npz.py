"""Importing a reference-layout .npz by nearest-neighbour alignment, and exporting to it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_pipeline.guards import check_alignment
from lvm_pipeline.interop.reference_npz import ForeignSetError, export_training_npz, import_training_npz
from lvm_pipeline.sequences.windows import SplitConfig, build_windows


def _export(tmp_path, payload):
    sets = build_windows(payload, SplitConfig())
    path = export_training_npz(tmp_path / "train.npz", payload,
                               {"train": sets["train"], "val": sets["val"]}, {"by": "test"})
    return path, sets


def test_export_writes_the_reference_layout(tmp_path, synthetic_payload):
    path, sets = _export(tmp_path, synthetic_payload)
    n = len(sets["train"]) + len(sets["val"])
    with np.load(path, allow_pickle=False) as npz:
        assert npz["context_sequences"].shape == (n, 5, synthetic_payload.dim)
        assert npz["target_vectors"].shape == (n, synthetic_payload.dim)
        assert npz["truth_keys"].shape == (n, 2)
        assert json.loads(str(npz["provenance"]))["by"] == "test"


def test_a_set_cut_from_the_payload_imports_at_cosine_one_and_passes(tmp_path,
                                                                      synthetic_payload):
    path, sets = _export(tmp_path, synthetic_payload)
    imported, info = import_training_npz(path, synthetic_payload, SplitConfig())
    assert info["alignment"]["target_cos_min"] > 0.9999
    assert info["alignment"]["context_cos_min"] > 0.9999
    np.testing.assert_array_equal(np.sort(imported["train"].target_row),
                                  np.sort(sets["train"].target_row))
    assert check_alignment(synthetic_payload, imported).passed


def test_vectors_of_another_encoder_are_measured_and_blocked(tmp_path, synthetic_payload):
    path, _ = _export(tmp_path, synthetic_payload)
    with np.load(path) as npz:
        data = dict(npz)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((synthetic_payload.dim,) * 2))
    data["target_vectors"] = (data["target_vectors"] @ q).astype(np.float32)
    data["context_sequences"] = (data["context_sequences"] @ q).astype(np.float32)
    np.savez(path, **data)
    imported, info = import_training_npz(path, synthetic_payload, SplitConfig())
    assert info["alignment"]["target_cos_mean"] < 0.8
    result = check_alignment(synthetic_payload, imported)
    assert not result.passed and result.figure < 0.8


def test_bad_npz_files_are_refused_with_the_reason(tmp_path, synthetic_payload):
    d = synthetic_payload.dim
    with pytest.raises(ForeignSetError, match="does not exist"):
        import_training_npz(tmp_path / "none.npz", synthetic_payload, SplitConfig())
    np.savez(tmp_path / "dim.npz", context_sequences=np.zeros((2, 5, d + 1), np.float32),
             target_vectors=np.zeros((2, d + 1), np.float32))
    with pytest.raises(ForeignSetError, match=f"{d + 1}-d but the payload is {d}-d"):
        import_training_npz(tmp_path / "dim.npz", synthetic_payload, SplitConfig())
    np.savez(tmp_path / "pickled.npz", context_sequences=np.array([{"x": 1}], dtype=object),
             target_vectors=np.zeros((1, d), np.float32))
    with pytest.raises(ForeignSetError, match="pickled objects, which are refused"):
        import_training_npz(tmp_path / "pickled.npz", synthetic_payload, SplitConfig())
    np.savez(tmp_path / "missing.npz", target_vectors=np.zeros((1, d), np.float32))
    with pytest.raises(ForeignSetError, match="missing array 'context_sequences'"):
        import_training_npz(tmp_path / "missing.npz", synthetic_payload, SplitConfig())
    nan = np.full((1, d), np.nan, np.float32)
    np.savez(tmp_path / "nan.npz", context_sequences=np.zeros((1, 5, d), np.float32),
             target_vectors=nan)
    with pytest.raises(ForeignSetError, match="target_vectors row 0 holds NaN"):
        import_training_npz(tmp_path / "nan.npz", synthetic_payload, SplitConfig())


def test_an_npz_without_windows_is_refused_saying_so(tmp_path, synthetic_payload):
    d = synthetic_payload.dim
    path = tmp_path / "empty.npz"
    np.savez(path, context_sequences=np.zeros((0, 5, d), np.float32),
             target_vectors=np.zeros((0, d), np.float32))
    with pytest.raises(ForeignSetError, match=rf"^{path}: holds no windows \(context_sequences "
                                              rf"\(0, 5, {d}\), target_vectors \(0, {d}\)\)"):
        import_training_npz(path, synthetic_payload, SplitConfig())


def test_a_truth_key_beyond_int32_is_refused_not_wrapped(tmp_path, synthetic_payload):
    path, _ = _export(tmp_path, synthetic_payload)
    with np.load(path) as npz:
        data = dict(npz)
    data["truth_keys"][3, 0] = 2**31 + 5
    np.savez(path, **data)
    with pytest.raises(ForeignSetError, match=rf"{path} truth_keys row 3: \[2147483653, \d+\] "
                                              "does not fit int32"):
        import_training_npz(path, synthetic_payload, SplitConfig())
