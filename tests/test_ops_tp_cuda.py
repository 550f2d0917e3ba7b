"""CUDA kernels of the native channel-wise tensor product (``torch.ops.nnip_scale.channelwise_tp_scatter``
and its backward; ``csrc/channelwise_tp/cuda/``), called directly on a GPU.

The kernels are compiled in CI (ctest's nvcc step, the CUDA build of the extension) and their device code is
checked on the host by ctest's ``cuda_tp_emulated``, but they are not registered with the resolver
(``native_dtypes`` of the op lists ``cpu`` only) until these tests have run on a GPU. Each test skips
cleanly without a GPU or without a CUDA build of ``nnip_scale._C``. fp64 against the CPU kernels: forward,
backward (every subset of requested gradients), the double backward composed by ``tp_native.py``,
determinism (bitwise across runs), empty inputs.
"""

import pytest
import torch

from nnip_scale.nn.irreps import channelwise_tp_descriptor
from nnip_scale.ops import native_available
from nnip_scale.ops._native import native_state
from nnip_scale.ops.equivariant import ChannelwiseTPPlan

needs_cuda = pytest.mark.skipif(
    not (native_available() and torch.cuda.is_available() and native_state()["with_cuda"]),
    reason="no GPU or nnip_scale._C without CUDA kernels",
)
F64 = torch.float64


def plan_for(ell: int, channels: int) -> ChannelwiseTPPlan:
    sh_ell = max(ell, 1)
    return ChannelwiseTPPlan(channelwise_tp_descriptor(tuple(range(ell + 1)), sh_ell, sh_ell, channels)[0])


def inputs(plan, n_atoms, n_edges, channels, seed=0):
    """weights, x, sh, sender, receiver (fp64, CPU); the last two atoms send and receive nothing."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_edges, plan.n_paths, channels, generator=g, dtype=F64)
    x = torch.randn(n_atoms, plan.dim_x, channels, generator=g, dtype=F64)
    sh = torch.randn(n_edges, plan.dim_sh, generator=g, dtype=F64)
    hi = max(n_atoms - 2, 1)
    return w, x, sh, torch.randint(0, hi, (n_edges,), generator=g), torch.randint(0, hi, (n_edges,), generator=g)


def call_fwd(plan, w, x, sh, snd, rcv, n_atoms):
    return torch.ops.nnip_scale.channelwise_tp_scatter(w, x, sh, snd, rcv, n_atoms, *plan.native_tables(x.dtype),
                                                       plan.dense_pairs)


def call_bwd(plan, g, w, x, sh, snd, rcv, need):
    return torch.ops.nnip_scale.channelwise_tp_scatter_backward(g, w, x, sh, snd, rcv, *plan.native_tables(x.dtype),
                                                                plan.dense_pairs, *need)


def rel_err(a, b) -> float:
    a, b = a.detach().cpu(), b.detach().cpu()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300) if b.numel() else 0.0


@needs_cuda
@pytest.mark.parametrize("ell,channels", [(0, 1), (1, 5), (1, 32), (2, 37), (3, 16), (3, 130)])
def test_cuda_forward_backward_match_cpu(ell, channels):
    plan = plan_for(ell, channels)
    n_atoms, n_edges = 13, 300
    base = inputs(plan, n_atoms, n_edges, channels, seed=ell * 10 + channels)
    gpu = [t.cuda() for t in base]
    plan_gpu = plan.to("cuda")
    out_cpu = call_fwd(plan, *base, n_atoms)
    out_gpu = call_fwd(plan_gpu, *gpu, n_atoms)
    assert rel_err(out_gpu, out_cpu) <= 1e-10
    g = torch.randn_like(out_cpu)
    for need in [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
                 (False, True, True)]:
        ref = call_bwd(plan, g, *base, need)
        got = call_bwd(plan_gpu, g.cuda(), *gpu, need)
        for a, b, n in zip(got, ref, need):
            assert a.shape == b.shape and a.device.type == "cuda"
            if n:
                assert rel_err(a, b) <= 1e-10


@needs_cuda
@pytest.mark.parametrize("ell,channels", [(1, 7), (3, 4)])
def test_cuda_double_backward_matches_cpu(ell, channels):
    """Second derivatives through the autograd of tp_native.py (forward and backward ops on CUDA)."""
    plan = plan_for(ell, channels)
    n_atoms = 9
    base = inputs(plan, n_atoms, 60, channels, seed=ell)
    res = {}
    for dev in ("cpu", "cuda"):
        p = plan.to(dev)
        w, x, sh = (t.to(dev).clone().requires_grad_(True) for t in base[:3])
        snd, rcv = base[3].to(dev), base[4].to(dev)
        out = call_fwd(p, w, x, sh, snd, rcv, n_atoms)
        g1 = torch.autograd.grad((out * torch.cos(out)).sum(), (w, x, sh), create_graph=True)
        g2 = torch.autograd.grad(sum((t * torch.sin(t)).sum() for t in g1), (w, x, sh))
        res[dev] = [out, *g1, *g2]
    for a, b in zip(res["cuda"], res["cpu"]):
        assert rel_err(a, b) <= 1e-10


@needs_cuda
def test_cuda_deterministic_and_empty():
    plan = plan_for(2, 16).to("cuda")
    w, x, sh, snd, rcv = (t.cuda() for t in inputs(plan, 50, 2000, 16, seed=3))
    a = call_fwd(plan, w, x, sh, snd, rcv, 50)
    b = call_fwd(plan, w, x, sh, snd, rcv, 50)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    ga = call_bwd(plan, g, w, x, sh, snd, rcv, (True, True, True))
    gb = call_bwd(plan, g, w, x, sh, snd, rcv, (True, True, True))
    assert all(torch.equal(u, v) for u, v in zip(ga, gb))
    # no edges: zero output and zero grad_x; n_atoms = 0: an empty output
    e0 = [t[:0] for t in (w, x[:0], sh, snd, rcv)]
    out = call_fwd(plan, e0[0], x, e0[2], e0[3], e0[4], 50)
    assert out.shape == (50, plan.native_tables(x.dtype)[0].shape[0], 16) and not out.abs().any()
    gw, gx, gsh = call_bwd(plan, torch.randn_like(out), e0[0], x, e0[2], e0[3], e0[4], (True, True, True))
    assert gw.shape[0] == 0 and gsh.shape[0] == 0 and not gx.abs().any()
    assert call_fwd(plan, e0[0], x, e0[2], e0[3], e0[4], 0).shape == (0, out.shape[1], 16)


@needs_cuda
def test_cuda_edge_layout_needs_no_sort_and_changes_no_bit():
    """A collated batch's edge layout (edges sorted by receiver; receiver_ptr, sender_order): the CUDA glue
    uses it instead of its device sorts; forward and every gradient are bitwise those without it, and
    match the CPU kernels (fp64)."""
    from nnip_scale.data.batching import edge_layout

    plan, n = plan_for(2, 33), 60
    w, x, sh, snd, rcv = inputs(plan, n, 900, 33, seed=7)
    by_receiver = torch.argsort(rcv, stable=True)
    w, sh, snd, rcv = w[by_receiver], sh[by_receiver], snd[by_receiver], rcv[by_receiver]
    ptr, order = edge_layout(torch.stack([rcv, snd]), n)
    tables = plan.native_tables(F64)
    ops = torch.ops.nnip_scale

    def run(device, layout):
        args = [t.to(device) for t in (w, x, sh, snd, rcv)]
        extra = [t.to(device) for t in (ptr, order)] if layout else [None, None]
        tb = [t.to(device) for t in tables]
        out = ops.channelwise_tp_scatter(*args, n, *tb, plan.dense_pairs, *extra)
        g = torch.linspace(-1, 1, out.numel(), dtype=F64, device=device).reshape(out.shape)
        grads = ops.channelwise_tp_scatter_backward(g, *args, *tb, plan.dense_pairs, True, True, True, *extra)
        return [out, *grads]

    with_layout, without = run("cuda", True), run("cuda", False)
    for a, b in zip(with_layout, without, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(with_layout, run("cpu", True), strict=True):
        assert rel_err(a, b) <= 1e-12
