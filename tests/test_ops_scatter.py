"""scatter_sum / gather_rows: what is specific to them. The generic checks (fp64 parity with the
reference and its derivatives, gradcheck/gradgradcheck, opcheck, compile with dynamic E and dim_size,
FLOPs, empty inputs, bad input, pyg when installed) run for every op in ``tests/test_ops_harness.py``.

Here: the reference's values by hand, reduced-precision accumulation, inductor, FLOPs from shapes,
the resolver's choices, CUDA parity (skipped without a GPU)."""

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
def test_compile_inductor_native_with_grad():
    src, index = _case(40, 9, (4,), dtype=torch.float32)
    src.requires_grad_(True)

    def f(s, i):
        return scatter_sum(s, i, 9, backend="native").pow(2).sum()

    compiled = torch.compile(f, fullgraph=True)
    (g_c,) = torch.autograd.grad(compiled(src, index), src)
    (g_e,) = torch.autograd.grad(f(src, index), src)
    assert torch.allclose(g_c, g_e, rtol=1e-6, atol=1e-6)


def test_flops_from_shapes():
    """``ops.flops`` takes shapes as well as tensors (the harness checks the formula against
    FlopCounterMode): one FLOP per added element, gathers 0."""
    assert flops("scatter_sum", (100, 4, 3), (100,), 10) == 1200
    assert flops("scatter_sum", (100, 16), (100,), 10) == 1600
    assert flops("gather_rows", (10, 16), (100,)) == 0


def test_backend_resolution():
    assert resolve_backend("torch", "cpu", torch.float32) == "torch"
    expected = "native" if native_available() else "torch"
    assert resolve_backend("auto", "cpu", torch.float64) == expected
    assert resolve_backend("cueq", "cpu", torch.float32) == expected  # no cueq scatter: fallback
    assert resolve_backend("auto", "cpu", torch.int64) == "torch"  # ints: reference only
    assert available_backends()[0] == "torch"
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        scatter_sum(torch.ones(3, 2), torch.tensor([0, 1, 2]), 4, backend="fast")


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
