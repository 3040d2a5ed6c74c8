"""The GPU search path (torch GEMM + top-k) against the CPU path (FAISS + numpy ranks)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from lvm_pipeline.evaluation.metrics import EvalConfig, evaluate
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.search.exact import top_k as search
from lvm_pipeline.search.exact import truth_ranks
from lvm_pipeline.search.torch_search import DevicePayload
from lvm_pipeline.sequences.windows import SplitConfig, build_windows


def _queries(v: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(v), n)
    q = v[truth] + 0.6 * rng.standard_normal((n, v.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return q, truth, rng.integers(0, len(v), (n, 5))


@pytest.mark.parametrize("exclude", [True, False])
def test_exact_pass_matches_faiss_top_k_and_numpy_ranks_across_blocks(synthetic_payload, exclude):
    v = np.asarray(synthetic_payload.vectors)
    q, truth, excluded = _queries(v, 40, seed=1)
    excluded = excluded if exclude else None
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    want_s, want_i = search(index, q, 10, excluded)
    want_rank = truth_ranks(q, v, truth, excluded)
    # Blocks of 97 rows: the top-k is merged across blocks and truths fall in every block.
    got_s, got_i, got_rank = DevicePayload(v, "cpu", block=97).exact_pass(q, truth, excluded, 10)
    np.testing.assert_array_equal(got_rank, want_rank)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    # Same rows up to the order of exact ties.
    assert (got_i == want_i).mean() > 0.99
    if excluded is not None:
        assert not any(set(got_i[i]) & set(excluded[i].tolist()) for i in range(len(q)))


def test_evaluation_on_a_torch_device_gives_the_cpu_report(synthetic_payload):
    v = np.asarray(synthetic_payload.vectors)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    predictions = {"copy_last": gather(v, seqs.context_rows[:, -1]),
                   "mean": gather(v, seqs.context_rows).mean(axis=1)}
    cpu = evaluate(predictions, v, index, seqs)
    torch_cpu = evaluate(predictions, v, index, seqs, EvalConfig(device="cpu:0"))
    for name in predictions:
        np.testing.assert_array_equal(torch_cpu[name].ranks, cpu[name].ranks)
        for key, value in cpu[name].metrics.items():
            assert torch_cpu[name].metrics[key] == pytest.approx(value, abs=1e-6), (name, key)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match=r"search device 'cuda' requested but torch .* sees no"):
        DevicePayload(np.eye(4, dtype=np.float32), "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_pass_matches_the_cpu_pass(synthetic_payload, dtype):
    v = np.asarray(synthetic_payload.vectors)
    q, truth, excluded = _queries(v, 64, seed=2)
    _, cpu_i, cpu_rank = DevicePayload(v, "cpu").exact_pass(q, truth, excluded, 20)
    _, gpu_i, gpu_rank = DevicePayload(v, "cuda", dtype).exact_pass(q, truth, excluded, 20)
    if dtype == "float32":
        np.testing.assert_array_equal(gpu_rank, cpu_rank)
    else:  # half precision: rank of truth within a few places, top-20 mostly the same rows
        assert np.abs(gpu_rank - cpu_rank).max() <= max(3, int(0.02 * len(v)))
        assert np.mean([len(set(a) & set(b)) / 20 for a, b in zip(gpu_i, cpu_i, strict=True)]) > 0.9
