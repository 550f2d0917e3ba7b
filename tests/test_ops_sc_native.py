"""Native symmetric contraction (``torch.ops.nnip_scale.symmetric_contraction``, its backward and double
backward): what is specific to it. The generic checks (fp64 parity with the reference to the second
derivative, gradcheck/gradgradcheck, opcheck of the three ops, compile, FLOPs of forward, backward and
double backward, empty inputs, bad input through the public function) run for every op in
``tests/test_ops_harness.py``; MACE on the native kernels in ``tests/test_models_mace_native.py``.

Here: fp32 against the fp64 reference at the default MACE contraction; determinism (bitwise across
runs and thread counts); third derivatives → a clear error; the raw ops' own argument and table
checks; outputs that are not requested have zero rows; the resolver's limits; CUDA parity (the op
called directly: the CUDA kernels are not registered with the resolver until they have run on a GPU;
skipped without one).
"""

import pytest
import torch
from op_cases import (
    F64,
    assert_bitwise_deterministic,
    assert_native_close_to_fp64_reference,
    rel_err,
    sc_inputs,
    sc_plan,
)

from nnip_scale.ops import native_available, resolve_backend
from nnip_scale.ops._native import native_state
from nnip_scale.ops.equivariant import symmetric_contraction
from nnip_scale.ops.registry import backend_table, per_op_backend, why_not
from nnip_scale.ops.sc_native import sc_native

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
needs_cuda = pytest.mark.skipif(
    not (native_available() and torch.cuda.is_available() and native_state()["with_cuda"]),
    reason="no GPU or nnip_scale._C without CUDA kernels",
)
OP = "symmetric_contraction"


@needs_native
def test_mace_default_contraction_fp32_and_fp64():
    """The default MACE contraction (inputs ℓ ≤ 3, outputs ℓ ≤ 1, correlation 3), C = 24 (not a
    multiple of the channel block), fp32 and fp64 native against the fp64 reference."""
    plan = sc_plan(3, 3, 24, 1)
    x, w, index = sc_inputs(plan, 40, 24, n_elements=5, seed=3)

    def fn(backend, x_, w_):
        return symmetric_contraction(plan, x_, w_, index, backend=backend)

    assert_native_close_to_fp64_reference(fn, (x, w), {torch.float32: 5e-5, F64: 1e-12})


@needs_native
def test_deterministic_across_runs_threads_and_bitwise():
    """Atom-owned rows; the weight gradient summed per element over chunks whose size depends on N only."""
    plan = sc_plan(2, 3, 12)
    x, w, index = sc_inputs(plan, 3000, 12, n_elements=4, seed=9)

    def run():
        xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = symmetric_contraction(plan, xx, ww, index, backend="native")
        g1 = torch.autograd.grad(out.square().sum(), (xx, ww), create_graph=True)
        g2 = torch.autograd.grad(sum(t.square().sum() for t in g1), (xx, ww))
        return [out.detach(), *(t.detach() for t in g1), *g2]

    assert_bitwise_deterministic(run)


@needs_native
def test_third_derivative_raises_naming_the_op():
    plan = sc_plan(1, 3, 2)
    x, w, index = sc_inputs(plan, 5, 2)
    xx = x.requires_grad_(True)
    out = symmetric_contraction(plan, xx, w, index, backend="native")
    (g1,) = torch.autograd.grad(out.square().sum(), (xx,), create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), (xx,), create_graph=True)
    with pytest.raises(RuntimeError, match=rf"{OP}_double_backward: third and higher derivatives"):
        torch.autograd.grad(g2.square().sum(), (xx,))


@needs_native
def test_raw_ops_check_their_arguments_and_tables():
    """The registered ops, called without the public function's checks, reject bad arguments and
    inconsistent tables themselves (an error naming the op and the argument)."""
    plan = sc_plan(1, 2, 3)
    x, w, index = sc_inputs(plan, 6, 3)
    ops, name = torch.ops.nnip_scale, f"nnip_scale::{OP}"
    tables = list(plan.native_tables(F64))
    with pytest.raises(RuntimeError, match=rf"{name}: weights must have the dtype of x"):
        ops.symmetric_contraction(x, w.float(), index, *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"{name}: index must be int64"):
        ops.symmetric_contraction(x, w, index.int(), *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"{name}: weights must have C = x.size\(2\)"):
        ops.symmetric_contraction(x, w[..., :2], index, *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"{name}: entry_coeff must have the dtype of x"):
        ops.symmetric_contraction(x, w, index, *tables[:4], tables[4].float(), *tables[5:], plan.n_out)
    bad = index.clone()
    bad[2] = 3
    with pytest.raises(RuntimeError, match=rf"{name}: index has 1 entries outside \[0, weights.size\(0\)=3\)"):
        ops.symmetric_contraction(x, w, bad, *tables, plan.n_out)
    broken = list(tables)
    broken[3] = broken[3].clone()
    broken[3][0] = 10_000  # a monomial that does not exist
    with pytest.raises(RuntimeError, match=rf"{name}: inconsistent product-basis tables: entry_mono"):
        ops.symmetric_contraction(x, w, index, *broken, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"{name}: inconsistent product-basis tables: row_out"):
        ops.symmetric_contraction(x, w, index, *tables, plan.n_out - 1)
    g = torch.zeros(6, plan.n_out + 1, 3, dtype=F64)
    with pytest.raises(RuntimeError, match=rf"{name}_backward: grad_out must be \[N=6, n_out="):
        ops.symmetric_contraction_backward(g, x, w, index, *tables, plan.n_out, True, True)
    with pytest.raises(RuntimeError, match=rf"{name}_double_backward: tangent_x must have the shape of x"):
        ops.symmetric_contraction_double_backward(g[:, :-1], x, w, index, x[:3], None, *tables, plan.n_out,
                                                  True, True, True)
    # outputs that are not requested have zero rows
    gx, gw = ops.symmetric_contraction_backward(g[:, :-1], x, w, index, *tables, plan.n_out, False, True)
    assert gx.shape == (0, plan.n_x, 3) and gw.shape == w.shape
    dg, dx, dw = ops.symmetric_contraction_double_backward(g[:, :-1], x, w, index, torch.randn_like(x), None,
                                                           *tables, plan.n_out, True, False, False)
    assert dg.shape == (6, plan.n_out, 3) and dx.shape == (0, plan.n_x, 3) and dw.shape == (0, plan.n_weights, 3)


def test_resolver_limits_and_backend_table():
    with pytest.raises(RuntimeError, match=rf"{OP}: backend='pyg' unavailable: {OP} has no pyg"):
        resolve_backend("pyg", "cpu", torch.float32, OP, components=4, correlation=3)
    # an explicit native never runs something else: CUDA without registered kernels, fp16, limits
    if why_not(OP, "native", "cuda", torch.float32) is not None:
        with pytest.raises(RuntimeError, match=rf"{OP}: backend='native' unavailable: .*(CUDA|cuda)"):
            resolve_backend("native", "cuda", torch.float32, OP, components=4, correlation=3)
    expected = "native" if native_available() else "torch"
    for dtype in (torch.float32, torch.float64):
        assert resolve_backend("auto", "cpu", dtype, OP, components=16, correlation=3) == expected
    assert resolve_backend("auto", "cpu", torch.float16, OP, components=4, correlation=2) == "torch"
    assert resolve_backend("auto", "cpu", torch.float32, OP, components=25, correlation=2) == "torch"
    assert resolve_backend("auto", "cpu", torch.float32, OP, components=4, correlation=4) == "torch"
    if native_available():
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: correlation 4 > 3"):
            resolve_backend("native", "cpu", torch.float32, OP, components=4, correlation=4)
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: x and the output have up to 25 components"):
            resolve_backend("native", "cpu", torch.float32, OP, components=25, correlation=2)
    assert backend_table()[OP]["native"].startswith("cpu: float32, float64")
    assert (per_op_backend("native", OP), per_op_backend("auto", OP)) == ("native", "auto")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("ell,correlation,channels", [(1, 3, 5), (2, 2, 33), (3, 3, 16)])
def test_cuda_matches_the_reference_to_second_order(ell, correlation, channels):
    plan = sc_plan(ell, correlation, channels)
    x, w, index = sc_inputs(plan, 50, channels, n_elements=4, used=[0, 2, 3])

    def first_and_second(plan_, x_, w_, index_, fn):
        xx, ww = x_.clone().requires_grad_(True), w_.clone().requires_grad_(True)
        out = fn(plan_, xx, ww, index_)
        g1 = torch.autograd.grad((out * torch.cos(out)).sum(), (xx, ww), create_graph=True)
        g2 = torch.autograd.grad(sum((t * torch.sin(t)).sum() for t in g1), (xx, ww))
        return [out, *g1, *g2]

    ref = first_and_second(plan, x, w, index, lambda *a: symmetric_contraction(*a, backend="torch"))
    got = first_and_second(plan.to("cuda"), x.cuda(), w.cuda(), index.cuda(), sc_native)  # the op itself
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a.cpu(), b) <= 1e-10
