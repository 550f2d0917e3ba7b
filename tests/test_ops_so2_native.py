"""Native eSEN edge rotations (``torch.ops.nnip_scale.so2_rotate_in`` / ``so2_rotate_out_scatter``) on
compact per-degree Wigner blocks, and their backend contract.

Op level (fp64): parity with the torch reference (dense rows) to 1e-10 for ℓmax 1, 2, 4, 6, mmax
0..ℓmax and C including 7 and 129 (not multiples of any channel block), first and second
derivatives (x/y and the Wigner blocks) and a third-order contraction; gradcheck/gradgradcheck;
``torch.library.opcheck`` of the four ops; ``torch.compile(fullgraph=True)`` forward and backward;
empty inputs (no edges, atoms without edges); bit-wise determinism across runs and thread counts;
bad input → errors naming the op and the argument; FLOP formulas equal to FlopCounterMode on the
reference; the compact-block helpers. Resolver: ``auto`` runs native for compact blocks on CPU and
torch for dense rows; an explicit ``native`` that cannot serve raises (op, backend, why).

Sample inputs for a generic op harness: :func:`rotate_in_sample` and :func:`rotate_out_sample`.
"""

import pytest
import torch

from nnip_scale.nn.wigner import edge_rotation, so2_wigner_blocks, wigner_d
from nnip_scale.ops import flops, native_available, resolve_backend
from nnip_scale.ops.registry import backend_table, per_op_backend
from nnip_scale.ops.so2 import (
    so2_block_rows,
    so2_compact_wigner,
    so2_layout,
    so2_num_blocks,
    so2_rotate_in,
    so2_rotate_out_scatter,
)
from nnip_scale.training.flops import count_flops

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
F64 = torch.float64


# ----------------------------------------------------------------------------- sample inputs
def edge_wigner(lmax: int, mmax: int, n_edges: int, generator: torch.Generator, dtype=F64, poles: bool = True):
    """(dense rows [E, R, K], compact blocks [E, NB], block_rows [R, 2]) of random edge directions
    (with ``poles``: the first four along ±z and ±y)."""
    u = torch.randn(n_edges, 3, generator=generator, dtype=F64)
    if poles and n_edges >= 4:
        u[:4] = torch.tensor([[0, 0, 1.0], [0, 0, -1.0], [0, 1.0, 0], [0, -1.0, 0]], dtype=F64)
    u = torch.nn.functional.normalize(u, dim=-1)
    rot = edge_rotation(u)
    rows = torch.tensor([ell * ell + ell + m for ell, m in so2_layout(lmax, mmax)])
    dense = wigner_d(rot, lmax, rows=rows).to(dtype)
    return dense, so2_wigner_blocks(rot, lmax, mmax).to(dtype), so2_block_rows(lmax, mmax)


def rotate_in_sample(lmax=2, mmax=1, channels=3, n_atoms=7, n_edges=20, seed=0, dtype=F64, isolated=2):
    """Arguments of ``so2_rotate_in`` in compact form: (x, wigner, src, dst) and block_rows; the last
    ``isolated`` atoms have no edges."""
    g = torch.Generator().manual_seed(seed)
    _, wigner, block_rows = edge_wigner(lmax, mmax, n_edges, g, dtype)
    x = torch.randn(n_atoms, (lmax + 1) ** 2, channels, generator=g, dtype=dtype)
    hi = max(n_atoms - isolated, 1)
    src = torch.randint(0, hi, (n_edges,), generator=g)
    dst = torch.randint(0, hi, (n_edges,), generator=g)
    return (x, wigner, src, dst), block_rows


def rotate_out_sample(lmax=2, mmax=1, channels=3, n_atoms=7, n_edges=20, seed=0, dtype=F64, isolated=2):
    """Arguments of ``so2_rotate_out_scatter`` in compact form: (y, wigner, index, n_atoms),
    block_rows and n_components; the last ``isolated`` atoms receive nothing."""
    g = torch.Generator().manual_seed(seed)
    _, wigner, block_rows = edge_wigner(lmax, mmax, n_edges, g, dtype)
    y = torch.randn(n_edges, block_rows.shape[0], channels, generator=g, dtype=dtype)
    index = torch.randint(0, max(n_atoms - isolated, 1), (n_edges,), generator=g)
    return (y, wigner, index, n_atoms), block_rows, (lmax + 1) ** 2


def rel_err(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


# ----------------------------------------------------------------------------- helpers
def test_compact_blocks_are_the_block_diagonal_of_the_dense_rows():
    g = torch.Generator().manual_seed(3)
    for lmax in range(1, 7):
        for mmax in range(lmax + 1):
            dense, compact, rows = edge_wigner(lmax, mmax, 9, g)
            assert compact.shape == (9, so2_num_blocks(lmax, mmax)) and rows.shape == (len(so2_layout(lmax, mmax)), 2)
            assert rel_err(compact, so2_compact_wigner(dense, lmax, mmax)) <= 1e-13
            # every dense entry outside the blocks is zero, so nothing is lost
            mask = torch.zeros(dense.shape[1:], dtype=torch.bool)
            for r, (ell, _) in enumerate(rows.tolist()):
                mask[r, ell * ell:(ell + 1) ** 2] = True
            assert float(dense[:, ~mask].abs().max()) <= 1e-13
            # the m = 0 rows are the first lmax + 1 rows of the table (the degree embedding uses them)
            assert [ell for ell, _ in rows[: lmax + 1].tolist()] == list(range(lmax + 1))


# ----------------------------------------------------------------------------- parity
CASES = [(lmax, mmax) for lmax in (1, 2, 4, 6) for mmax in range(lmax + 1)]


@needs_native
@pytest.mark.parametrize("lmax,mmax", CASES)
def test_native_matches_torch_to_third_order(lmax, mmax):
    """Values, first and second derivatives (x/y and the Wigner blocks, through create_graph) and a
    third-order contraction equal the torch reference on the same compact blocks to 1e-10 (fp64,
    C = 7); values and first derivatives also equal the dense-row reference. (Higher derivatives
    differ from the dense path by construction: there the off-block entries are free variables.)"""
    C, A, E = 7, 9, 31
    g = torch.Generator().manual_seed(100 * lmax + mmax)
    dense, compact, rows = edge_wigner(lmax, mmax, E, g)
    K = (lmax + 1) ** 2
    x = torch.randn(A, K, C, generator=g, dtype=F64)
    y = torch.randn(E, rows.shape[0], C, generator=g, dtype=F64)
    src, dst = torch.randint(0, A - 2, (E,), generator=g), torch.randint(0, A - 2, (E,), generator=g)
    res = {}
    for backend, wig in (("dense", dense), ("torch", compact), ("native", compact)):
        w0 = wig.clone().requires_grad_(True)
        xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        kw = {} if backend == "dense" else {"block_rows": rows, "n_components": K}
        be = "torch" if backend == "dense" else backend
        e = so2_rotate_in(xs, w0, src, dst, backend=be, block_rows=kw.get("block_rows"))
        o = so2_rotate_out_scatter(ys, w0, src, A, backend=be, **kw)
        loss = (e * torch.cos(e)).sum() + (o * torch.sin(o)).sum()
        g1 = torch.autograd.grad(loss, (xs, ys, w0), create_graph=True)
        if backend == "dense":  # the dense rows' first derivatives, on the blocks (off-block entries are free)
            res[backend] = [e, o, *g1[:2], so2_compact_wigner(g1[2], lmax, mmax)]
            continue
        g2 = torch.autograd.grad(sum((t * torch.sin(t)).sum() for t in g1), (xs, ys, w0), create_graph=True)
        g3 = torch.autograd.grad(sum(t.square().sum() for t in g2), (xs, ys, w0))
        res[backend] = [e, o, *g1, *g2, *g3]
    for a, b in zip(res["native"], res["torch"]):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-10
    for a, b in zip(res["native"], res["dense"]):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-10


@needs_native
@pytest.mark.parametrize("lmax,mmax,channels", [(2, 2, 129), (6, 4, 129), (4, 2, 1), (6, 6, 16), (1, 0, 8)])
def test_channel_counts_and_fp32(lmax, mmax, channels):
    """Channel counts at, below and above the 64-byte channel block agree with the reference (fp64
    to 1e-10; fp32 to 1e-5 relative)."""
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-5)):
        (x, w, src, dst), rows = rotate_in_sample(lmax, mmax, channels, 11, 40, seed=channels, dtype=dtype)
        ref = so2_rotate_in(x, w, src, dst, backend="torch", block_rows=rows)
        assert rel_err(so2_rotate_in(x, w, src, dst, backend="native", block_rows=rows), ref) <= tol
        (y, w, idx, n), rows, K = rotate_out_sample(lmax, mmax, channels, 11, 40, seed=channels, dtype=dtype)
        ref = so2_rotate_out_scatter(y, w, idx, n, backend="torch", block_rows=rows, n_components=K)
        got = so2_rotate_out_scatter(y, w, idx, n, backend="native", block_rows=rows, n_components=K)
        assert got.dtype == dtype and rel_err(got, ref) <= tol


# ----------------------------------------------------------------------------- autograd checks
@needs_native
@pytest.mark.parametrize("lmax,mmax", [(1, 1), (2, 1), (4, 2)])
def test_gradcheck_and_gradgradcheck(lmax, mmax):
    (x, w, src, dst), rows = rotate_in_sample(lmax, mmax, 2, 5, 7, seed=4, isolated=1)
    (y, _, idx, n), _, K = rotate_out_sample(lmax, mmax, 2, 5, 7, seed=4, isolated=1)
    fast = lmax >= 4

    def f(x_, y_, w_):
        e = so2_rotate_in(x_, w_, src, dst, backend="native", block_rows=rows)
        o = so2_rotate_out_scatter(y_, w_, idx, n, backend="native", block_rows=rows, n_components=K)
        return e, o

    leaves = tuple(t.clone().requires_grad_(True) for t in (x, y, w))
    assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=fast)


@needs_native
def test_opcheck_forward_and_backward_ops():
    ops = torch.ops.nnip_scale
    (x, w, src, dst), rows = rotate_in_sample(2, 2, 3, 6, 14, seed=1)
    torch.library.opcheck(ops.so2_rotate_in.default, (x.requires_grad_(), w.requires_grad_(), src, dst, rows))
    g = torch.randn(14, rows.shape[0], 6, dtype=F64, requires_grad=True)
    for flags in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(ops.so2_rotate_in_backward.default, (g, x, w, src, dst, rows, *flags))
    (y, w2, idx, n), rows2, K = rotate_out_sample(2, 2, 3, 6, 14, seed=2)
    torch.library.opcheck(ops.so2_rotate_out_scatter.default,
                          (y.requires_grad_(), w2.requires_grad_(), idx, n, rows2, K))
    go = torch.randn(n, K, 3, dtype=F64, requires_grad=True)
    for flags in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(ops.so2_rotate_out_scatter_backward.default, (go, y, w2, idx, rows2, *flags))
    # gradients that are not requested have zero rows
    gx, gw = ops.so2_rotate_in_backward(g.detach(), x.detach(), w.detach(), src, dst, rows, False, True)
    assert gx.shape == (0, 9, 3) and gw.shape == w.shape


@needs_native
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_and_backward(dynamic):
    (x, w, src, dst), rows = rotate_in_sample(4, 2, 5, 9, 30, seed=5)
    K = x.shape[1]

    def f(x, w, src, dst):
        e = so2_rotate_in(x, w, src, dst, backend="native", block_rows=rows)
        o = so2_rotate_out_scatter(e[..., :5], w, src, 9, backend="native", block_rows=rows, n_components=K)
        return (o * o.sin()).sum() + e.square().sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for n_edges in (30, 21):  # a second edge count: no recompile failure with dynamic shapes
        args = [x, w[:n_edges], src[:n_edges], dst[:n_edges]]
        leaves = [t.clone().requires_grad_(True) for t in args[:2]]
        eager = torch.autograd.grad(f(*leaves, *args[2:]), leaves)
        leaves2 = [t.clone().requires_grad_(True) for t in args[:2]]
        got = torch.autograd.grad(compiled(*leaves2, *args[2:]), leaves2)
        for a, b in zip(got, eager):
            assert rel_err(a, b) <= 1e-12


# ----------------------------------------------------------------------------- edge cases
@needs_native
def test_empty_inputs_and_isolated_atoms():
    (x, w, src, dst), rows = rotate_in_sample(2, 1, 4, 7, 0)
    K = x.shape[1]
    xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    e = so2_rotate_in(xs, ws, src, dst, backend="native", block_rows=rows)
    assert e.shape == (0, rows.shape[0], 8)
    o = so2_rotate_out_scatter(e[..., :4], ws, src, 7, backend="native", block_rows=rows, n_components=K)
    assert o.shape == (7, K, 4) and float(o.detach().abs().max()) == 0.0
    gx, gw = torch.autograd.grad(o.sum() + e.sum(), (xs, ws))
    assert gx.shape == x.shape and float(gx.abs().max()) == 0.0 and gw.shape == (0, w.shape[1])
    out0 = so2_rotate_out_scatter(e[..., :4].detach(), w, src, 0, backend="native", block_rows=rows, n_components=K)
    assert out0.shape == (0, K, 4)
    # atoms with no edges: zero output rows and zero gradients
    (x, w, src, dst), rows = rotate_in_sample(2, 1, 4, 12, 50, isolated=3)
    xs = x.clone().requires_grad_(True)
    e = so2_rotate_in(xs, w, src, dst, backend="native", block_rows=rows)
    o = so2_rotate_out_scatter(e[..., 4:], w, src, 12, backend="native", block_rows=rows, n_components=K)
    (gx,) = torch.autograd.grad(o.square().sum(), (xs,))
    assert float(o.detach()[-3:].abs().max()) == 0.0 and float(gx[-3:].abs().max()) == 0.0
    assert float(o.detach()[:-3].abs().max()) > 0.0


@needs_native
def test_deterministic_across_runs_threads_and_bitwise():
    """Atom-owned scatter rows (edges in their order) and edge-owned gather rows: bitwise equal
    across runs and thread counts, first and second derivatives included."""
    (x, w, src, dst), rows = rotate_in_sample(4, 2, 20, 300, 20000, seed=9, dtype=torch.float32)
    K = x.shape[1]
    threads = torch.get_num_threads()

    def run():
        xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        e = so2_rotate_in(xs, ws, src, dst, backend="native", block_rows=rows)
        o = so2_rotate_out_scatter(e[..., :20] * e[..., 20:], ws, dst, 300, backend="native", block_rows=rows,
                                   n_components=K)
        g = torch.autograd.grad((o * o).sum(), (xs, ws), create_graph=True)
        g2 = torch.autograd.grad(sum(t.square().sum() for t in g), (xs, ws))
        return [e.detach(), o.detach(), *(t.detach() for t in g), *g2]

    try:
        first = run()
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(max(threads, 3))
        many = run()
    finally:
        torch.set_num_threads(threads)
    again = run()
    for a, b, c, d in zip(first, single, many, again):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


# ----------------------------------------------------------------------------- bad input
@needs_native
def test_bad_input_errors_name_the_op_and_argument():
    (x, w, src, dst), rows = rotate_in_sample(2, 1, 3, 6, 10)
    K = x.shape[1]
    op_in, op_out = "so2_rotate_in", "so2_rotate_out_scatter"

    def rin(*args, backend="native", **kw):
        return so2_rotate_in(*args, backend=backend, **{"block_rows": rows, **kw})

    def rout(*args, backend="native", **kw):
        return so2_rotate_out_scatter(*args, backend=backend, **{"block_rows": rows, "n_components": K, **kw})

    y = torch.randn(10, rows.shape[0], 3, dtype=F64)
    with pytest.raises(ValueError, match=rf"{op_in}: wigner has dtype torch.float32 but x has torch.float64"):
        rin(x, w.float(), src, dst)
    with pytest.raises(ValueError, match=rf"{op_in}: dst must be an int64 tensor"):
        rin(x, w, src, dst.int())
    with pytest.raises(ValueError, match=rf"{op_in}: expected block_rows int64 \[R, 2\]"):
        rin(x, w, src, dst, block_rows=rows[:, :1])
    with pytest.raises(ValueError, match=rf"{op_in}: expected src/dst \[E=10\]"):
        rin(x, w, src[:3], dst)
    with pytest.raises(ValueError, match=rf"{op_out}: expected y \[E, R=7, C\]"):
        rout(y[:, :3], w, src, 6)
    with pytest.raises(TypeError, match=rf"{op_out}: n_components must be a Python int"):
        rout(y, w, src, 6, n_components=None)
    with pytest.raises(TypeError, match=rf"{op_out}: dim_size must be a Python int"):
        rout(y, w, src, torch.tensor(6))
    with pytest.raises(RuntimeError, match=rf"{op_in}: backend='native' unavailable: dtype torch.float16"):
        rin(x.half(), w.half(), src, dst)
    with pytest.raises(RuntimeError, match=rf"{op_in}: backend='native' unavailable: the native kernels take the compact"):
        so2_rotate_in(x, torch.zeros(10, 7, 9, dtype=F64), src, dst, backend="native")
    bad = src.clone()
    bad[3] = 6
    with pytest.raises(RuntimeError, match=rf"nnip_scale(::|\.ops\.){op_in}: src has 1 entries outside \[0, x.size\(0\)=6\)"):
        rin(x, w, bad, dst)
    bad = src.clone()
    bad[0] = -1
    with pytest.raises(RuntimeError, match=rf"nnip_scale(::|\.ops\.){op_out}: index has 1 entries outside \[0, dim_size=6\)"):
        rout(y, w, bad, 6)
    # the raw ops check every argument themselves (called without the public function's checks)
    ops = torch.ops.nnip_scale
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_in}: wigner must have the dtype of x"):
        ops.so2_rotate_in(x, w.float(), src, dst, rows)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_in}: src must be int64"):
        ops.so2_rotate_in(x, w, src.int(), dst, rows)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_in}: dst must have E = wigner.size\(0\) = 10"):
        ops.so2_rotate_in(x, w, src, dst[:4], rows)
    broken = rows.clone()
    broken[2, 1] = w.shape[1]  # a block beyond the compact row
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_in}: inconsistent block_rows .*outside the compact"):
        ops.so2_rotate_in(x, w, src, dst, broken)
    broken = rows.clone()
    broken[0, 0] = 3  # degree 3 needs 16 components, x has 9
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_out}: inconsistent block_rows .*more components"):
        ops.so2_rotate_out_scatter(y, w, src, 6, broken, K)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_in}_backward: grad_out must be \[E=10, R=7, 2C=6\]"):
        ops.so2_rotate_in_backward(y, x, w, src, dst, rows, True, True)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op_out}_backward: grad_out must be \[N, K, C=3\]"):
        ops.so2_rotate_out_scatter_backward(torch.zeros(6, K, 2, dtype=F64), y, w, src, rows, True, True)


# ----------------------------------------------------------------------------- FLOPs
@needs_native
@pytest.mark.parametrize("lmax,mmax", [(2, 1), (4, 4)])
def test_flop_formulas_equal_flopcounter_on_the_reference(lmax, mmax):
    """Forward and backward (each subset of inputs needing a gradient): the native ops' registered
    formulas equal what FlopCounterMode counts on the torch reference (compact blocks expanded to
    the dense rows), so a model's FLOP count does not depend on its backend."""
    (x, w, src, dst), rows = rotate_in_sample(lmax, mmax, 5, 8, 33)
    (y, _, idx, n), _, K = rotate_out_sample(lmax, mmax, 5, 8, 33)

    def counts(backend, op, needs):
        a, ws = (x if op == "in" else y).clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])

        def call():
            if op == "in":
                return so2_rotate_in(a, ws, src, dst, backend=backend, block_rows=rows)
            return so2_rotate_out_scatter(a, ws, idx, n, backend=backend, block_rows=rows, n_components=K)

        fwd = count_flops(call)
        leaves = [t for t in (a, ws) if t.requires_grad]
        if not leaves:
            return fwd, 0
        out = call()
        bwd = count_flops(lambda: torch.autograd.grad(out, leaves, torch.randn_like(out)))
        return fwd, bwd

    for op in ("in", "out"):
        for needs in [(True, True), (True, False), (False, True), (False, False)]:
            assert counts("native", op, needs) == counts("torch", op, needs), (op, needs)
    dense_shape = (33, rows.shape[0], K)
    assert counts("native", "in", (False, False))[0] == flops("so2_rotate_in", x, w, src, dst, rows) == flops(
        "so2_rotate_in", x, dense_shape, src, dst)
    assert counts("native", "out", (False, False))[0] == flops(
        "so2_rotate_out_scatter", y, w, idx, n, rows, K) == flops("so2_rotate_out_scatter", y, dense_shape, idx, n)


# ----------------------------------------------------------------------------- resolver
def test_resolver_contract_for_the_so2_ops():
    expected = "native" if native_available() else "torch"
    for op in ("so2_rotate_in", "so2_rotate_out_scatter"):
        for dtype in (torch.float32, F64):
            assert resolve_backend("auto", "cpu", dtype, op, compact=True, components=49) == expected
            assert resolve_backend("auto", "cpu", dtype, op, compact=False, components=9) == "torch"
        assert resolve_backend("auto", "cpu", torch.float16, op, compact=True, components=9) == "torch"
        assert resolve_backend("auto", "cpu", F64, op, compact=True, components=64) == "torch"
        assert resolve_backend("auto", "cuda", torch.float32, op, compact=True, components=9) == "torch"
        for backend in ("torch", "pyg", "cueq"):
            assert resolve_backend(backend, "cpu", torch.float32, op, compact=True, components=9) == "torch"
        with pytest.raises(RuntimeError, match=rf"{op}: backend='native' unavailable"):
            resolve_backend("native", "cuda", torch.float32, op, compact=True, components=9)
        if native_available():
            with pytest.raises(RuntimeError, match=rf"{op}: backend='native' unavailable: 64 components > 49"):
                resolve_backend("native", "cpu", torch.float32, op, compact=True, components=64)
            with pytest.raises(RuntimeError, match=rf"{op}: backend='native' unavailable: the native kernels take"):
                resolve_backend("native", "cpu", torch.float32, op, compact=False, components=9)
        assert per_op_backend("native", op) == "native"
        assert backend_table()[op]["native"] == "cpu: float32, float64"
    # the SO(2) convolution stays dense matrix products: its declared substitution is unchanged
    assert resolve_backend("native", "cpu", torch.float32, "so2_conv") == "torch"
    assert backend_table()["so2_conv"]["native"] == "→ torch (declared)"
