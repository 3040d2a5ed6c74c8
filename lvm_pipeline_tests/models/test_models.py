"""The Mamba block against an independent float64 reference, and the five presets."""

from __future__ import annotations

import math

import pytest
import torch

from lvm_pipeline.models import LVM, PRESETS, VARIANTS, preset
from lvm_pipeline.models.mamba import Mamba
from lvm_pipeline.models.scan import selective_scan

MAMBA_SSM_KEYS = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                  "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"}


def sequential_scan_f64(u, delta, A, B, C, D, z, delta_bias):
    """Element-by-element recurrence in float64, written independently of models/scan.py."""
    u, delta, A, B, C, D, z, delta_bias = (t.double() for t in (u, delta, A, B, C, D, z,
                                                                 delta_bias))
    batch, dim, length = u.shape
    n = A.shape[1]
    y = torch.zeros(batch, dim, length, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            h = torch.zeros(n, dtype=torch.float64)
            for t in range(length):
                dt = torch.nn.functional.softplus(delta[b, d, t] + delta_bias[d])
                h = torch.exp(dt * A[d]) * h + dt * B[b, :, t] * u[b, d, t]
                out = (h * C[b, :, t]).sum() + D[d] * u[b, d, t]
                y[b, d, t] = out * z[b, d, t] * torch.sigmoid(z[b, d, t])
    return y


def _inputs(seed: int, batch=2, dim=6, length=5, n=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, dim, length, generator=g, dtype=dtype),
        delta=torch.randn(batch, dim, length, generator=g, dtype=dtype),
        A=-torch.rand(dim, n, generator=g, dtype=dtype) * 2,
        B=torch.randn(batch, n, length, generator=g, dtype=dtype),
        C=torch.randn(batch, n, length, generator=g, dtype=dtype),
        D=torch.randn(dim, generator=g, dtype=dtype),
        z=torch.randn(batch, dim, length, generator=g, dtype=dtype),
        delta_bias=torch.randn(dim, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("backend", ["torch", "ref", "recompute"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_matches_float64_sequential_reference(backend, seed):
    inputs = _inputs(seed)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = selective_scan(**leaves, delta_softplus=True, backend=backend)
    ref_leaves = {k: v.clone().double().requires_grad_(True) for k, v in inputs.items()}
    y_ref = sequential_scan_f64(**ref_leaves)
    rel = (y.double() - y_ref).norm() / y_ref.norm()
    print(f"{backend} seed {seed}: forward rel err {rel:.2e}")
    assert rel < 1e-5
    grad_out = torch.randn_like(y_ref)
    (y.double() * grad_out).sum().backward()
    (y_ref * grad_out).sum().backward()
    for name in inputs:
        g, g_ref = leaves[name].grad.double(), ref_leaves[name].grad
        rel = (g - g_ref).norm() / g_ref.norm()
        print(f"  grad {name}: rel err {rel:.2e}")
        assert rel < 1e-5, name


def test_mamba_parameters_carry_mamba_ssm_names_shapes_and_init():
    torch.manual_seed(0)
    m = Mamba(d_model=64, d_state=16, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert set(shapes) == MAMBA_SSM_KEYS
    d_inner, dt_rank = 128, math.ceil(64 / 16)
    assert shapes["in_proj.weight"] == (2 * d_inner, 64)
    assert shapes["conv1d.weight"] == (d_inner, 1, 4)
    assert shapes["x_proj.weight"] == (dt_rank + 2 * 16, d_inner)
    assert shapes["dt_proj.weight"] == (d_inner, dt_rank)
    assert shapes["A_log"] == (d_inner, 16) and shapes["D"] == (d_inner,)
    torch.testing.assert_close(m.A_log.exp()[0], torch.arange(1, 17, dtype=torch.float32))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    assert (m.D == 1).all()


def test_mamba_is_causal():
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4)
    x = torch.randn(1, 5, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 3:] += 1.0
    torch.testing.assert_close(m(x2)[:, :3], y[:, :3])


def test_state_dict_round_trip_with_mamba_ssm():
    mamba_ssm = pytest.importorskip(
        "mamba_ssm", reason="mamba-ssm is not installed (optional CUDA extra: pip install -e "
                            "'.[cuda]' on a CUDA machine)")
    if not torch.cuda.is_available():
        pytest.skip("mamba-ssm's kernels need a CUDA GPU")
    torch.manual_seed(0)
    ours = Mamba(d_model=64, d_state=16).cuda()
    theirs = mamba_ssm.Mamba(d_model=64, d_state=16, d_conv=4, expand=2).cuda()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 5, 64, device="cuda")
    expected = theirs(x)
    for backend in ("mamba_ssm", "triton", "recompute", "torch"):  # one checkpoint, any path
        ours.scan_backend = backend
        torch.testing.assert_close(ours(x), expected, rtol=1e-3, atol=1e-3, msg=backend)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_predicts_unit_vectors_at_both_sizes(variant):
    for size in ("tiny", "paper"):
        model = LVM(preset(variant, size, d_in=48))
        out = model(torch.randn(3, 5, 48))
        assert out.shape == (3, 48)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_variant_layouts_follow_the_design():
    assert PRESETS[("mamba_s", "paper")].layout == ("mamba",) * 8
    h = PRESETS[("mamba_h", "paper")].layout
    assert len(h) == 12 and [i for i, k in enumerate(h) if k == "attn"] == [3, 7, 11]
    assert PRESETS[("mamba_xl", "paper")].layout == ("mamba",) * 16
    s = PRESETS[("mamba_sandwich", "paper")].layout
    assert s[:2] == ("attn", "attn") and s[-2:] == ("attn", "attn") and s[2:-2] == ("mamba",) * 8
    assert PRESETS[("mamba_gr", "paper")].layout == ("mamba", "gru") * 10


def test_unknown_preset_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown variant 'mamba_q'; valid: mamba_s"):
        preset("mamba_q")
    with pytest.raises(ValueError, match="unknown preset size 'huge'; valid: tiny, paper"):
        preset("mamba_s", "huge")
    with pytest.raises(ValueError, match=r"unknown LVMConfig field\(s\) \['width'\]"):
        preset("mamba_s", width=3)


def test_missing_fused_kernel_raises_with_install_command():
    try:
        import mamba_ssm  # noqa: F401
        pytest.skip("mamba-ssm is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"pip install -e '\.\[cuda\]'"):
        selective_scan(**_inputs(0), backend="mamba_ssm")


@pytest.mark.parametrize("context_skip", [True, False])
def test_forward_is_the_normalised_sum_of_its_parts(context_skip):
    torch.manual_seed(0)
    model = LVM(preset("mamba_h", "tiny", d_in=24, context_skip=context_skip)).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a non-zero correction
    context = torch.randn(3, 5, 24)
    blend, correction = model.forward_parts(context)
    assert blend.shape == correction.shape == (3, 24)
    torch.testing.assert_close(torch.nn.functional.normalize(blend + correction, dim=-1),
                               model(context), rtol=0, atol=0)
    if context_skip:
        torch.testing.assert_close(blend, context[:, -1])  # the mix starts at copy-last
    else:
        assert not blend.any()
