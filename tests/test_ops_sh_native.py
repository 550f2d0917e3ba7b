"""Native spherical harmonics (``torch.ops.nnip_scale.spherical_harmonics``, its backward and double backward:
the harmonics' polynomial on the symmetric contraction's kernels, ``nnip_scale/ops/sh_native.py``): what is
specific to them. The generic checks (fp64 parity with the reference to the second derivative,
gradcheck/gradgradcheck, opcheck of the three ops, compile of ℓ = 1, FLOPs of forward, backward and double
backward with a constant cotangent, empty inputs, bad input through the public function) run for every op
in ``tests/test_ops_harness.py``.

Here: edge counts around the edge blocks (padding), non-contiguous vectors and an expanded cotangent; fp32
against the fp64 reference; bitwise determinism across runs and thread counts; the FLOP counts of the double
backward when the cotangent itself requires a gradient (a conservative model's force loss); compile at ℓ = 3;
third derivatives → a clear error; the raw ops' own argument checks; the resolver's limits; and a MACE on
``backend: native`` that runs every hot op natively (no torch harmonics anywhere) and equals ``torch``.
"""

import itertools

import pytest
import torch
from ase.build import molecule
from batch_utils import FakeStats, batch_from_atoms
from op_cases import F64, assert_bitwise_deterministic, assert_native_close_to_fp64_reference, rel_err, sh_plan
from torch.utils.flop_counter import FlopCounterMode

from nnip_scale.models.mace import MACE
from nnip_scale.nn.irreps import spherical_harmonics_polynomial
from nnip_scale.ops import native_available, resolve_backend
from nnip_scale.ops import registry as ops_registry
from nnip_scale.ops.equivariant import PolynomialPlan, spherical_harmonics
from nnip_scale.ops.registry import backend_table, get_op, per_op_backend
from nnip_scale.ops.sh_native import EDGE_BLOCK, native_args
from nnip_scale.training.flops import count_flops

pytestmark = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
OP = "spherical_harmonics"
SH_OPS = {"nnip_scale.spherical_harmonics", "nnip_scale.spherical_harmonics_backward",
          "nnip_scale.spherical_harmonics_double_backward"}
TOL = 1e-10


def unit_vectors(n: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    v = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.nn.functional.normalize(v, dim=1).to(dtype)


def derivatives(plan, vectors: torch.Tensor, backend: str) -> list[torch.Tensor]:
    """Y, the gradient of Σ Y (an expanded cotangent) and the second derivative of the squared gradient."""
    x = vectors.detach().clone().requires_grad_()
    y = spherical_harmonics(plan, x, backend=backend)
    (g,) = torch.autograd.grad((y * y.cos()).sum() + y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g * g.sin()).sum(), x, materialize_grads=True, allow_unused=True)
    return [y.detach(), g.detach(), h]


@pytest.mark.parametrize("ell", [1, 2, 3])
@pytest.mark.parametrize("n_edges", [0, 1, EDGE_BLOCK - 1, EDGE_BLOCK, EDGE_BLOCK + 1, 3 * EDGE_BLOCK + 5])
def test_edge_blocks_and_padding_match_the_reference(ell, n_edges):
    """Edges are the contraction's channels in blocks of EDGE_BLOCK, the last one zero-padded: every edge
    count gives the reference's values and first and second derivatives (fp64, ≤ 1e-10)."""
    plan = sh_plan(ell)
    v = unit_vectors(n_edges, seed=ell) * 1.7  # not unit: Y is a polynomial, the scale must not matter
    for a, b in zip(derivatives(plan, v, "native"), derivatives(plan, v, "torch"), strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) <= TOL


def test_non_contiguous_vectors():
    plan = sh_plan(3)
    base = torch.randn(2 * EDGE_BLOCK + 3, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    v = base[:, 1:4]
    assert not v.is_contiguous()
    for a, b in zip(derivatives(plan, v, "native"), derivatives(plan, v.contiguous(), "torch"), strict=True):
        assert rel_err(a, b) <= TOL


def test_fp32_close_to_the_fp64_reference():
    plan = sh_plan(3)
    assert_native_close_to_fp64_reference(lambda b, v: spherical_harmonics(plan, v, backend=b), [unit_vectors(500)],
                                          {torch.float32: 2e-6, F64: 1e-13})


def test_bitwise_deterministic_across_runs_and_threads():
    plan, v = sh_plan(3), unit_vectors(20 * EDGE_BLOCK + 7)
    assert_bitwise_deterministic(lambda: derivatives(plan, v, "native"))


@pytest.mark.parametrize("ell", [1, 2, 3])
def test_flops_equal_the_reference_when_the_cotangent_requires_grad(ell):
    """In a conservative model's force loss the cotangent of Y depends on the parameters: the double
    backward then also differentiates with respect to it. With a cotangent that requires a gradient and
    one that does not, the native forward, backward and double backward count what FlopCounterMode counts
    on the reference (differentiating with respect to every input that requires a gradient, as
    ``loss.backward()`` does: like every registered op's autograd, the native one sees which inputs
    require a gradient, not which ones a particular ``autograd.grad`` call asks for)."""
    plan, v = sh_plan(ell), unit_vectors(37, seed=ell)

    def counts(backend, cotangent_requires_grad):
        x = v.clone().requires_grad_()
        y = spherical_harmonics(plan, x, backend=backend)
        g = torch.randn(y.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
        g.requires_grad_(cotangent_requires_grad)
        fwd = count_flops(lambda: spherical_harmonics(plan, x, backend=backend))
        bwd = count_flops(lambda: torch.autograd.grad(y, x, g, retain_graph=True))
        (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
        scalar = gx.square().sum()
        inputs = [x, g] if cotangent_requires_grad else [x]
        dbl = count_flops(lambda: torch.autograd.grad(scalar, inputs, allow_unused=True)) if scalar.requires_grad else 0
        return fwd, bwd, dbl

    for cotangent_requires_grad in (True, False):
        assert counts("native", cotangent_requires_grad) == counts("torch", cotangent_requires_grad)


def test_compile_fullgraph_l3_forward_and_backward():
    """torch.compile(fullgraph=True, dynamic=True) of Σ Y·cos Y and its gradient at ℓ = 3, two edge counts
    (the harness compiles the first case, ℓ = 1, only)."""
    torch._dynamo.reset()
    plan = sh_plan(3)

    def loss(v):
        y = spherical_harmonics(plan, v, backend="native")
        return (y * y.cos()).sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (3 * EDGE_BLOCK + 5, EDGE_BLOCK - 9):
        x1, x2 = unit_vectors(n).requires_grad_(), unit_vectors(n).requires_grad_()
        eager, got = loss(x1), compiled(x2)
        assert rel_err(got, eager) <= TOL
        assert rel_err(torch.autograd.grad(got, x2)[0], torch.autograd.grad(eager, x1)[0]) <= TOL


def test_third_derivative_raises_naming_the_op():
    plan = sh_plan(3)
    x = unit_vectors(10).requires_grad_()
    y = spherical_harmonics(plan, x, backend="native")
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"nnip_scale::spherical_harmonics_double_backward: third and higher"):
        torch.autograd.grad(h.sum(), x)


def test_raw_ops_name_the_op_and_the_argument():
    plan = sh_plan(2)
    ops, rest, v = torch.ops.nnip_scale, native_args(plan, F64), unit_vectors(6)
    g, t = torch.zeros(6, plan.n_out, dtype=F64), torch.zeros(6, 3, dtype=F64)
    cases = [
        (lambda: ops.spherical_harmonics(v[:, :2], *rest), "spherical_harmonics", "vectors"),
        (lambda: ops.spherical_harmonics(v.float(), *rest), "spherical_harmonics", "entry_coeff"),
        (lambda: ops.spherical_harmonics_backward(g[:, :-1], v, *rest), "spherical_harmonics_backward", "grad_out"),
        (lambda: ops.spherical_harmonics_backward(g.float(), v, *rest), "spherical_harmonics_backward", "grad_out"),
        (lambda: ops.spherical_harmonics_double_backward(g, v, t[:-1], *rest, True, True),
         "spherical_harmonics_double_backward", "tangent"),
    ]
    for call, op, arg in cases:
        with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: {arg}\b"):
            call()
    # tables inconsistent with n_out (those of ℓ = 3: 16 outputs, not 9) are rejected by the contraction's checks
    with pytest.raises(RuntimeError, match=r"nnip_scale::spherical_harmonics \(on the symmetric contraction's kernels\): "
                                           r".*inconsistent product-basis tables: row_out"):
        ops.spherical_harmonics(v, *native_args(sh_plan(3), F64)[:7], plan.n_out, 1)


def test_outputs_not_requested_have_zero_rows():
    plan = sh_plan(3)
    rest, v = native_args(plan, F64), unit_vectors(9)
    g, t = torch.randn(9, plan.n_out, dtype=F64), torch.randn(9, 3, dtype=F64)
    for need_g, need_v in itertools.product((True, False), repeat=2):
        dg, dv = torch.ops.nnip_scale.spherical_harmonics_double_backward(g, v, t, *rest, need_g, need_v)
        assert dg.shape == ((9 if need_g else 0), plan.n_out) and dv.shape == ((9 if need_v else 0), 3)


def test_resolver_limits_and_backend_table():
    """ℓ ≤ 3 (at most 16 components, degree ≤ 3) on CPU in fp32/fp64; ℓ = 4 raises under an explicit
    ``native`` and runs torch under ``auto``; no CUDA kernel registered."""
    for dtype in (torch.float32, F64):
        assert resolve_backend("auto", "cpu", dtype, OP, components=16, degree=3) == "native"
    assert resolve_backend("auto", "cpu", torch.bfloat16, OP, components=4, degree=1) == "torch"
    assert resolve_backend("auto", "cuda", torch.float32, OP, components=4, degree=1) in ("cueq", "torch")
    assert backend_table()[OP]["native"] == "cpu: float32, float64"
    assert per_op_backend("native", OP) == "native"
    plan4 = PolynomialPlan(spherical_harmonics_polynomial(4), weighted=False)
    v = unit_vectors(8)
    with pytest.raises(RuntimeError, match=r"nnip_scale\.ops\.spherical_harmonics: backend='native' unavailable: "
                                           r"25 components of degree 4"):
        spherical_harmonics(plan4, v, backend="native")
    assert torch.equal(spherical_harmonics(plan4, v, backend="auto"), spherical_harmonics(plan4, v, backend="torch"))


# ============================================================================ model level
def _mace(backend: str, forces: str, seed: int = 0) -> MACE:
    torch.manual_seed(seed)
    model = MACE(width=4, depth=2, max_ell=1, sh_max_ell=3, correlation=3, cutoff=4.0, num_radial=4, radial_hidden=8,
                 radial_layers=1, readout_hidden=4, elements=[1, 6, 8], forces=forces, backend=backend).double()
    model.set_statistics(FakeStats([1, 6, 8], force_rms=0.7, avg_num_neighbors=6.0))
    return model


@pytest.mark.parametrize("forces", ["conservative", "direct"])
def test_native_mace_runs_no_torch_harmonics_and_equals_torch(forces, monkeypatch):
    """``backend: native`` on CPU: every hot op of MACE is called with ``native`` (op_backends), the
    harmonics run the native ops (the double backward too, for conservative forces), a force-loss step
    never reaches the torch (or cueq) harmonics, and energies, forces and every parameter gradient
    equal the torch model's (fp64, ≤ 1e-10)."""
    mols = [molecule("CH3CH2OH"), molecule("H2O")]
    for k, m in enumerate(mols):
        m.rattle(0.05, seed=k + 1)
    batch = batch_from_atoms(mols, 4.0)
    ref, nat = _mace("torch", forces), _mace("native", forces, seed=1)
    nat.load_state_dict(ref.state_dict())
    assert set(nat.op_backends.values()) == {"native"}, nat.op_backends

    def step(model):
        model.zero_grad()
        out = model(batch)
        ((out["energy"] - 0.3).square().sum() + (out["forces"] - 0.1).square().sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out1, grads1 = step(ref)

    def refuse(*args, **kwargs):
        raise AssertionError("a native MACE called a non-native spherical-harmonics implementation")

    spec = get_op(OP)
    for backend in ("torch", "cueq"):
        monkeypatch.setitem(spec.impls, backend, refuse)
    monkeypatch.setattr(ops_registry, "_RESOLVED", {})  # no cached implementation from earlier calls
    with FlopCounterMode(display=False) as counter:  # it sees each op with a FLOP formula: ours are three of them
        out2, grads2 = step(nat)
    counted = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    expected = SH_OPS if forces == "conservative" else {"nnip_scale.spherical_harmonics"}
    assert all(counted.get(op, 0) > 0 for op in expected), counted
    assert rel_err(out2["energy"], out1["energy"]) <= TOL
    assert rel_err(out2["forces"], out1["forces"]) <= TOL
    assert grads1.keys() == grads2.keys()
    for name in grads1:
        assert rel_err(grads2[name], grads1[name]) <= TOL, name
