"""scatter_sum / gather_rows: native vs torch parity, autograd to 2nd order, opcheck, compile."""

import pytest
import torch

from nnip_scale.ops import (
    available_backends,
    flops,
    gather_rows,
    native_available,
    resolve_backend,
    scatter_sum,
)

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def _case(E, N, trailing, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn((E, *trailing), generator=g, dtype=torch.float64).to(device, dtype)
    # unsorted indices that never hit the last quarter of the atoms (they receive nothing)
    index = torch.randint(0, max(1, 3 * N // 4), (E,), generator=g).to(device)
    return src, index


SHAPES = [(50, 12, (1,)), (200, 40, (256,)), (30, 9, (4, 3)), (0, 5, (7,)), (64, 20, ())]


@needs_native
@pytest.mark.parametrize("E,N,trailing", SHAPES)
def test_native_matches_torch_fp64(E, N, trailing):
    src, index = _case(E, N, trailing)
    ref = scatter_sum(src, index, N, backend="torch")
    out = scatter_sum(src, index, N, backend="native")
    assert out.shape == (N, *trailing) and out.dtype == torch.float64
    if E:
        assert (out - ref).abs().max().item() <= 1e-12
        assert out[3 * N // 4 :].abs().max().item() == 0.0  # atoms receiving nothing are zero
    assert torch.equal(gather_rows(ref, index, backend="native"), ref.index_select(0, index))


def test_torch_reference_values():
    src = torch.tensor([[1.0], [2.0], [4.0], [8.0]], dtype=torch.float64)
    index = torch.tensor([2, 0, 2, 0])
    out = scatter_sum(src, index, 4, backend="torch")
    assert out.squeeze(1).tolist() == [10.0, 0.0, 5.0, 0.0]


@needs_native
def test_native_reduced_precision_cpu_accumulates_in_fp32():
    src = torch.full((4096, 2), 0.01, dtype=torch.bfloat16)
    index = torch.zeros(4096, dtype=torch.int64)
    out = scatter_sum(src, index, 1, backend="native")
    ref = torch.full((1, 2), 4096 * float(torch.tensor(0.01, dtype=torch.bfloat16)))
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, rtol=8e-3)  # pure bf16 accumulation stalls at 2-4


@needs_native
@pytest.mark.parametrize("trailing", [(3,), (2, 5)])
def test_gradcheck_and_gradgradcheck_native(trailing):
    src, index = _case(20, 7, trailing)
    src.requires_grad_(True)
    x = torch.randn((7, *trailing), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: scatter_sum(s, index, 7, backend="native"), (src,))
    assert torch.autograd.gradgradcheck(lambda s: scatter_sum(s, index, 7, backend="native"), (src,))
    assert torch.autograd.gradcheck(lambda v: gather_rows(v, index, backend="native"), (x,))
    assert torch.autograd.gradgradcheck(lambda v: gather_rows(v, index, backend="native"), (x,))


@needs_native
def test_double_backward_forces_match_torch():
    """Conservative forces: d/dθ of a force loss through gather + scatter, native vs torch."""
    pos0, index = _case(30, 8, (3,), seed=3)
    w = torch.randn(3, dtype=torch.float64)
    grads = []
    for backend in ("torch", "native"):
        pos = pos0.clone().requires_grad_(True)
        theta = w.clone().requires_grad_(True)
        atom = scatter_sum(torch.tanh(pos * theta), index, 8, backend=backend)
        energy = gather_rows(atom, index, backend=backend).pow(2).sum()
        (forces,) = torch.autograd.grad(-energy, pos, create_graph=True)
        (g,) = torch.autograd.grad(forces.pow(2).sum(), theta)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("E,N,trailing", [(40, 9, (3,)), (25, 6, (2, 4)), (0, 3, (5,))])
def test_opcheck(dtype, E, N, trailing):
    src, index = _case(E, N, trailing, dtype=dtype)
    torch.library.opcheck(torch.ops.nnip_scale.scatter_sum.default, (src.requires_grad_(), index, N))
    x = torch.randn((N, *trailing), dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.nnip_scale.gather_rows.default, (x, index))


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_compile_fullgraph_matches_eager(backend):
    src, index = _case(60, 11, (8,), dtype=torch.float32)

    def f(s, i):
        return gather_rows(scatter_sum(s, i, 11, backend=backend).sin(), i, backend=backend)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(src, index), f(src, index), rtol=1e-6, atol=1e-6)
    src2, index2 = _case(70, 11, (8,), dtype=torch.float32, seed=1)  # new E: dynamic shape
    assert torch.allclose(compiled(src2, index2), f(src2, index2), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_compile_dynamic_dim_size_with_grad(backend):
    """dim_size (n_atoms) varies between batches: traced as a SymInt, no recompiles needed."""

    def f(s, i, n):
        return gather_rows(scatter_sum(s, i, n, backend=backend), i, backend=backend).pow(2).sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    for E, N in ((50, 10), (70, 13)):
        src, index = _case(E, N, (4,), dtype=torch.float32, seed=E)
        src.requires_grad_(True)
        (g_c,) = torch.autograd.grad(compiled(src, index, N), src)
        (g_e,) = torch.autograd.grad(f(src, index, N), src)
        assert torch.allclose(g_c, g_e, rtol=1e-5, atol=1e-5)


@needs_native
def test_compile_inductor_native_with_grad():
    src, index = _case(40, 9, (4,), dtype=torch.float32)
    src.requires_grad_(True)

    def f(s, i):
        return scatter_sum(s, i, 9, backend="native").pow(2).sum()

    compiled = torch.compile(f, fullgraph=True)
    (g_c,) = torch.autograd.grad(compiled(src, index), src)
    (g_e,) = torch.autograd.grad(f(src, index), src)
    assert torch.allclose(g_c, g_e, rtol=1e-6, atol=1e-6)


@needs_native
def test_invalid_index_rejected_by_native_cpu():
    src = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match=r"1 index entries are outside \[0, 4\)"):
        scatter_sum(src, torch.tensor([0, 4, 1]), 4, backend="native")


def test_bad_arguments_have_clear_errors():
    src = torch.ones(3, 2)
    with pytest.raises(ValueError, match="src has 3 rows but index has 2 entries"):
        scatter_sum(src, torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="index must be a 1-D int64 tensor"):
        scatter_sum(src, torch.tensor([0, 1, 2], dtype=torch.int32), 4)
    with pytest.raises(TypeError, match="dim_size must be a Python int"):
        scatter_sum(src, torch.tensor([0, 1, 2]), torch.tensor(4))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        scatter_sum(src, torch.tensor([0, 1, 2]), 4, backend="fast")


def test_flops_formula_and_counter():
    src, index = _case(100, 10, (16,), dtype=torch.float32)
    assert flops("scatter_sum", src, index, 10) == 1600
    assert flops("scatter_sum", (100, 4, 3), (100,), 10) == 1200
    assert flops("gather_rows", (10, 16), (100,)) == 0
    if native_available():
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            scatter_sum(src, index, 10, backend="native")
        assert counter.get_total_flops() == 1600


def test_backend_resolution():
    assert resolve_backend("torch", "cpu", torch.float32) == "torch"
    expected = "native" if native_available() else "torch"
    assert resolve_backend("auto", "cpu", torch.float64) == expected
    assert resolve_backend("cueq", "cpu", torch.float32) == expected  # no cueq scatter: fallback
    assert resolve_backend("auto", "cpu", torch.int64) == "torch"  # ints: reference only
    assert available_backends()[0] == "torch"


def test_pyg_backend():
    src, index = _case(50, 12, (5,))
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="backend='pyg' unavailable: needs torch-scatter"):
            scatter_sum(src, index, 12, backend="pyg")
        pytest.skip("torch-scatter not installed: checked the error message only")
    out = scatter_sum(src, index, 12, backend="pyg")
    assert torch.allclose(out, scatter_sum(src, index, 12, backend="torch"), atol=1e-12)


@needs_cuda
@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cuda_matches_torch(dtype):
    if not resolve_backend("auto", "cuda", dtype) == "native":
        pytest.skip("nnip_scale._C built without CUDA kernels")
    src, index = _case(5000, 300, (64,), dtype=dtype, device="cuda")
    ref = scatter_sum(src.double(), index, 300, backend="torch")
    out = scatter_sum(src, index, 300, backend="native")
    tol = {torch.float32: 1e-4, torch.float64: 1e-12, torch.bfloat16: 5e-2}[dtype]
    assert out.dtype == dtype
    assert torch.allclose(out.double(), ref, rtol=tol, atol=tol)
    assert torch.equal(gather_rows(src, index, backend="native"), src.index_select(0, index))
    if dtype == torch.float64:
        s = src[:40, :3].clone().requires_grad_(True)
        i = index[:40] % 7
        assert torch.autograd.gradgradcheck(lambda t: scatter_sum(t, i, 7, backend="native"), (s,))
