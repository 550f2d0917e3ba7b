"""CUDA kernels of the native eSEN edge rotations (``torch.ops.nnip_scale.so2_rotate_in`` /
``so2_rotate_out_scatter`` and their ``*_backward`` ops; ``csrc/so2/cuda/``), called directly on a GPU.

The kernels are compiled in CI (ctest's nvcc step, the CUDA build of the extension) and their device code
is checked on the host by ctest's ``so2_cuda_emulated``, but they are not registered with the resolver
(``native_dtypes`` of the ops lists ``cpu`` only) until these tests have run on a GPU. Each test skips
cleanly without a GPU or without a CUDA build of ``nnip_scale._C``. Against the CPU kernels on the same
inputs: forward, backward (every subset of requested gradients), the double backward composed by
``so2_native.py``, fp32, determinism (bitwise across runs), empty inputs, the argument checks, and the
inputs the CUDA path does not validate (indices outside their range add nothing; an invalid block_rows
table gives NaN, never an out-of-bounds read).
"""

import pytest
import torch

from nnip_scale.ops import native_available
from nnip_scale.ops._native import native_state
from nnip_scale.ops.so2 import so2_block_rows, so2_num_blocks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (native_available() and torch.cuda.is_available() and native_state()["with_cuda"]),
        reason="no GPU or nnip_scale._C without CUDA kernels",
    ),
]
F64 = torch.float64
DEV = "cuda"
NEEDS = [(True, True), (True, False), (False, True), (False, False)]
ops = torch.ops.nnip_scale


def inputs(lmax, mmax, channels, n_atoms, n_edges, seed=0, dtype=F64):
    """x [A, K, C], y [E, R, C], compact Wigner blocks [E, NB], src, dst, block_rows (CPU); the last two
    atoms have no edges. The kernels are bilinear, so random blocks test them as well as Wigner-D ones."""
    g = torch.Generator().manual_seed(seed)
    rows = so2_block_rows(lmax, mmax)
    K, R, NB = (lmax + 1) ** 2, rows.shape[0], so2_num_blocks(lmax, mmax)
    x = torch.randn(n_atoms, K, channels, generator=g, dtype=dtype)
    y = torch.randn(n_edges, R, channels, generator=g, dtype=dtype)
    w = torch.randn(n_edges, NB, generator=g, dtype=dtype)
    hi = max(n_atoms - 2, 1)
    src = torch.randint(0, hi, (n_edges,), generator=g)
    dst = torch.randint(0, hi, (n_edges,), generator=g)
    return x, y, w, src, dst, rows


def to(dev, *ts):
    return [t.to(dev) for t in ts]


def rel_err(a, b) -> float:
    a, b = a.detach().cpu(), b.detach().cpu()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300) if b.numel() else 0.0



@pytest.mark.parametrize("lmax,mmax,channels", [(1, 0, 1), (1, 1, 7), (2, 1, 16), (2, 2, 33), (4, 2, 7),
                                                (4, 4, 129), (6, 2, 5), (6, 6, 16)])
def test_cuda_forward_backward_match_cpu(lmax, mmax, channels):
    A, E, K = 23, 400, (lmax + 1) ** 2
    x, y, w, src, dst, rows = inputs(lmax, mmax, channels, A, E, seed=10 * lmax + mmax)
    gx, gy, gw, gsrc, gdst, grows = to(DEV, x, y, w, src, dst, rows)
    out_in = ops.so2_rotate_in(gx, gw, gsrc, gdst, grows)
    assert out_in.device.type == DEV
    ref_in = ops.so2_rotate_in(x, w, src, dst, rows)
    assert out_in.shape == ref_in.shape and rel_err(out_in, ref_in) <= 1e-12
    out_out = ops.so2_rotate_out_scatter(gy, gw, gdst, A, grows, K)
    ref_out = ops.so2_rotate_out_scatter(y, w, dst, A, rows, K)
    assert out_out.shape == ref_out.shape and rel_err(out_out, ref_out) <= 1e-12
    g_in, g_out = torch.randn_like(ref_in), torch.randn_like(ref_out)
    for need in NEEDS:
        ref = ops.so2_rotate_in_backward(g_in, x, w, src, dst, rows, *need)
        got = ops.so2_rotate_in_backward(g_in.to(DEV), gx, gw, gsrc, gdst, grows, *need)
        for a, b, n in zip(got, ref, need):
            assert a.shape == b.shape and a.device.type == DEV
            if n:
                assert rel_err(a, b) <= 1e-12
        ref = ops.so2_rotate_out_scatter_backward(g_out, y, w, dst, rows, *need)
        got = ops.so2_rotate_out_scatter_backward(g_out.to(DEV), gy, gw, gdst, grows, *need)
        for a, b, n in zip(got, ref, need):
            assert a.shape == b.shape and a.device.type == DEV
            if n:
                assert rel_err(a, b) <= 1e-12


def test_cuda_float32_matches_cpu():
    A, E, K = 40, 3000, 25
    x, y, w, src, dst, rows = inputs(4, 2, 32, A, E, seed=5, dtype=torch.float32)
    dev = to(DEV, x, y, w, src, dst, rows)
    assert rel_err(ops.so2_rotate_in(*dev[:1], *dev[2:]), ops.so2_rotate_in(x, w, src, dst, rows)) <= 1e-5
    got = ops.so2_rotate_out_scatter(dev[1], dev[2], dev[4], A, dev[5], K)
    assert got.dtype == torch.float32 and rel_err(got, ops.so2_rotate_out_scatter(y, w, dst, A, rows, K)) <= 1e-5


@pytest.mark.parametrize("lmax,mmax,channels", [(2, 1, 7), (4, 2, 3)])
def test_cuda_double_backward_matches_cpu(lmax, mmax, channels):
    """Second derivatives through the autograd of so2_native.py (forward and backward ops on CUDA), in x,
    y and the Wigner blocks, as a conservative eSEN's force loss needs them."""
    A, E, K = 11, 90, (lmax + 1) ** 2
    base = inputs(lmax, mmax, channels, A, E, seed=lmax)
    res = {}
    for dev in ("cpu", DEV):
        x, y, w = (t.to(dev).clone().requires_grad_(True) for t in base[:3])
        src, dst, rows = to(dev, *base[3:])
        e = ops.so2_rotate_in(x, w, src, dst, rows)
        o = ops.so2_rotate_out_scatter(y, w, dst, A, rows, K)
        loss = (e * torch.cos(e)).sum() + (o * torch.sin(o)).sum()
        g1 = torch.autograd.grad(loss, (x, y, w), create_graph=True)
        g2 = torch.autograd.grad(sum((t * torch.sin(t)).sum() for t in g1), (x, y, w))
        res[dev] = [e, o, *g1, *g2]
    for a, b in zip(res[DEV], res["cpu"]):
        assert a.device.type == DEV and rel_err(a, b) <= 1e-10


def test_cuda_deterministic():
    """Many edges per atom (the receiver-sorted scatters sum long segments): bitwise equal across runs."""
    A, E, K = 30, 20000, 16
    x, y, w, src, dst, rows = to(DEV, *inputs(3, 2, 24, A, E, seed=7))
    g_in = torch.randn(E, rows.shape[0], 48, dtype=F64, device=DEV)
    g_out = torch.randn(A, K, 24, dtype=F64, device=DEV)
    first = None
    for _ in range(3):
        res = [ops.so2_rotate_in(x, w, src, dst, rows), ops.so2_rotate_out_scatter(y, w, dst, A, rows, K),
               *ops.so2_rotate_in_backward(g_in, x, w, src, dst, rows, True, True),
               *ops.so2_rotate_out_scatter_backward(g_out, y, w, dst, rows, True, True)]
        if first is None:
            first = res
        assert all(torch.equal(a, b) for a, b in zip(res, first))


def test_cuda_empty_inputs():
    A, K, C = 6, 9, 4
    x, y, w, src, dst, rows = to(DEV, *inputs(2, 1, C, A, 10, seed=1))
    e0 = [t[:0] for t in (y, w, src, dst)]
    # no edges: an empty rotate-in, a zero scatter, zero grad_x and empty grad_wigner/grad_y
    assert ops.so2_rotate_in(x, e0[1], e0[2], e0[3], rows).shape == (0, rows.shape[0], 2 * C)
    out = ops.so2_rotate_out_scatter(e0[0], e0[1], e0[2], A, rows, K)
    assert out.shape == (A, K, C) and not out.abs().any()
    gx, gw = ops.so2_rotate_in_backward(torch.zeros(0, rows.shape[0], 2 * C, dtype=F64, device=DEV), x, e0[1], e0[2],
                                        e0[3], rows, True, True)
    assert gx.shape == x.shape and not gx.abs().any() and gw.shape == (0, w.shape[1])
    gy, gw = ops.so2_rotate_out_scatter_backward(torch.randn(A, K, C, dtype=F64, device=DEV), e0[0], e0[1], e0[2],
                                                 rows, True, True)
    assert gy.shape == (0, rows.shape[0], C) and gw.shape == (0, w.shape[1])
    # no atoms to scatter onto; no channels
    assert ops.so2_rotate_out_scatter(e0[0], e0[1], e0[2], 0, rows, K).shape == (0, K, C)
    assert ops.so2_rotate_in(x[..., :0], w, src, dst, rows).shape == (10, rows.shape[0], 0)
    # atoms without edges get zero rows of the scatter and of grad_x
    out = ops.so2_rotate_out_scatter(y, w, dst, A, rows, K)
    assert not out[A - 2:].abs().any()
    gx, _ = ops.so2_rotate_in_backward(torch.randn(10, rows.shape[0], 2 * C, dtype=F64, device=DEV), x, w, src, dst,
                                       rows, True, False)
    assert not gx[A - 2:].abs().any()


def test_cuda_argument_checks_name_the_op():
    """The checks shared with the CPU glue (so2/glue.h): shapes, dtypes, devices."""
    A, K = 6, 9
    x, y, w, src, dst, rows = to(DEV, *inputs(2, 1, 3, A, 10, seed=2))
    op_in, op_out = "nnip_scale::so2_rotate_in", "nnip_scale::so2_rotate_out_scatter"
    with pytest.raises(RuntimeError, match=rf"{op_in}: wigner must have the dtype of x"):
        ops.so2_rotate_in(x, w.float(), src, dst, rows)
    with pytest.raises(RuntimeError, match=rf"{op_in}: src must be int64"):
        ops.so2_rotate_in(x, w, src.int(), dst, rows)
    with pytest.raises(RuntimeError, match=rf"{op_in}: dst must have E = wigner.size\(0\) = 10"):
        ops.so2_rotate_in(x, w, src, dst[:4], rows)
    with pytest.raises(RuntimeError, match=rf"{op_in}: block_rows must be on the device of x"):
        ops.so2_rotate_in(x, w, src, dst, rows.cpu())
    with pytest.raises(RuntimeError, match=rf"{op_in}: dst must be on the device of x"):
        ops.so2_rotate_in(x, w, src, dst.cpu(), rows)
    with pytest.raises(RuntimeError, match=rf"{op_out}: y must have R = block_rows.size\(0\) = 7"):
        ops.so2_rotate_out_scatter(y[:, :5], w, src, A, rows, K)
    with pytest.raises(RuntimeError, match=rf"{op_in}_backward: grad_out must be \[E=10, R=7, 2C=6\]"):
        ops.so2_rotate_in_backward(y, x, w, src, dst, rows, True, True)
    with pytest.raises(RuntimeError, match=rf"{op_out}_backward: grad_out must be \[N, K, C=3\]"):
        ops.so2_rotate_out_scatter_backward(torch.zeros(A, K, 2, dtype=F64, device=DEV), y, w, src, rows, True, True)


def test_cuda_unvalidated_inputs_never_read_out_of_bounds():
    """Indices and block_rows values are not checked on CUDA (a host sync; the CPU path raises): an endpoint
    outside [0, A) adds nothing, and a table the CPU rejects gives NaN where it is read."""
    A, K, C = 7, 9, 5
    x, y, w, src, dst, rows = inputs(2, 1, C, A, 40, seed=4)
    bad_src, bad_dst = src.clone(), dst.clone()
    bad_src[3], bad_dst[8], bad_src[9], bad_dst[9] = -1, A, A + 100, -5
    ok = (bad_src >= 0) & (bad_src < A), (bad_dst >= 0) & (bad_dst < A)
    got = ops.so2_rotate_in(*to(DEV, x, w, bad_src, bad_dst, rows)).cpu()
    ref = ops.so2_rotate_in(x, w, bad_src.clamp(0, A - 1), bad_dst.clamp(0, A - 1), rows)
    ref[~ok[0], :, :C] = 0
    ref[~ok[1], :, C:] = 0
    assert rel_err(got, ref) <= 1e-12
    out = ops.so2_rotate_out_scatter(*to(DEV, y, w, bad_dst), A, rows.to(DEV), K).cpu()
    keep = ok[1]
    ref = ops.so2_rotate_out_scatter(y[keep], w[keep], bad_dst[keep], A, rows, K)
    assert rel_err(out, ref) <= 1e-12
    broken = rows.clone()
    broken[3, 1] = w.shape[1] - 1  # a block past the compact row
    with pytest.raises(RuntimeError, match="inconsistent block_rows"):
        ops.so2_rotate_in(x, w, src, dst, broken)
    got = ops.so2_rotate_in(*to(DEV, x, w, src, dst, broken)).cpu()
    assert got[:, 3].isnan().all() and not torch.cat([got[:, :3], got[:, 4:]], 1).isnan().any()
    assert ops.so2_rotate_out_scatter(*to(DEV, y, w, dst), A, broken.to(DEV), K).isnan().all()
    torch.cuda.synchronize()  # no illegal memory access surfaced asynchronously
