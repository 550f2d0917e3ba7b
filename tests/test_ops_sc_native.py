"""Native symmetric contraction (``torch.ops.nnip_scale.symmetric_contraction``, its backward and
double backward) and its place in the backend contract.

Op level (fp64): parity with the torch reference to 1e-10 for ℓ = 0..3, correlation 1..3 and several
channel counts, values and first and second derivatives; gradcheck/gradgradcheck;
``torch.library.opcheck`` of the three ops; ``torch.compile(fullgraph=True)`` forward and backward;
empty inputs; determinism (bitwise across runs and thread counts); bad input → errors naming the op
and the argument; third derivatives → a clear error; FLOP formulas equal to FlopCounterMode on the
reference (forward, backward, double backward). Resolver: explicit ``native`` raises (op, backend,
why) where it cannot serve, ``auto`` picks native on CPU. CUDA: parity on a GPU (skipped without).
Model level (MACE, fp64): ``backend="native"`` equals ``torch`` (energies, forces, parameter
gradients) for ℓ 0..3 and correlation 1..3, conservative and direct forces.
"""

import pytest
import torch
from ase.build import molecule
from torch.utils._python_dispatch import TorchDispatchMode

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models.mace import MACE
from nnip_scale.nn.irreps import symmetric_contraction_polynomial
from nnip_scale.ops import flops, native_available, resolve_backend
from nnip_scale.ops._native import native_state
from nnip_scale.ops.equivariant import PolynomialPlan, symmetric_contraction
from nnip_scale.ops.sc_native import sc_native
from nnip_scale.ops.registry import backend_table, per_op_backend, why_not
from nnip_scale.training.flops import count_flops

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
# The CUDA kernels are compiled (CI: ctest's nvcc step; the CUDA build of the extension) but not yet
# registered with the resolver (equivariant.py: CPU only until they have run on a GPU): the GPU tests
# call the native op directly, so a session with a GPU validates them before they are wired in.
needs_cuda = pytest.mark.skipif(
    not (native_available() and torch.cuda.is_available() and native_state()["with_cuda"]),
    reason="no GPU or nnip_scale._C without CUDA kernels",
)
F64 = torch.float64
OP = "symmetric_contraction"


def plan_for(ell: int, correlation: int, channels: int, out_ell: int | None = None) -> PolynomialPlan:
    """Contraction of irreps ℓ ≤ ell to ℓ ≤ out_ell (default ell)."""
    out_ell = ell if out_ell is None else out_ell
    return PolynomialPlan(
        symmetric_contraction_polynomial(tuple(range(ell + 1)), tuple(range(out_ell + 1)), channels, correlation),
        weighted=True,
    )


def inputs(plan, n_atoms, channels, n_elements=3, seed=0, dtype=F64, used=None):
    """x, weights, index; elements ``used`` (default all) are the only ones that occur."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_atoms, plan.n_x, channels, generator=g, dtype=dtype)
    w = torch.randn(n_elements, plan.n_weights, channels, generator=g, dtype=dtype)
    used = list(range(n_elements)) if used is None else used
    index = torch.tensor(used)[torch.randint(0, len(used), (n_atoms,), generator=g)]
    return x, w, index


def rel_err(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


def first_and_second(plan, x, w, index, backend):
    xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = (sc_native(plan, xx, ww, index) if backend == "native-direct"  # the op itself, not the resolver
           else symmetric_contraction(plan, xx, ww, index, backend=backend))
    g1 = torch.autograd.grad((out * torch.cos(out)).sum(), (xx, ww), create_graph=True)
    g2 = torch.autograd.grad(sum((t * torch.sin(t)).sum() for t in g1), (xx, ww))
    return [out, *g1, *g2]


# ----------------------------------------------------------------------------- parity
@needs_native
@pytest.mark.parametrize("correlation", [1, 2, 3])
@pytest.mark.parametrize("ell,channels", [(0, 1), (0, 9), (1, 3), (1, 16), (2, 7), (2, 17), (3, 2), (3, 11)])
def test_native_matches_torch_to_second_order(ell, correlation, channels):
    """Values, first derivatives (x, weights) and second derivatives through create_graph agree with
    the torch reference to 1e-10 (fp64); one element has no atoms (zero weight gradient)."""
    plan = plan_for(ell, correlation, channels)
    x, w, index = inputs(plan, 13, channels, n_elements=4, seed=10 * ell + correlation, used=[0, 1, 3])
    res = {b: first_and_second(plan, x, w, index, b) for b in ("torch", "native")}
    assert float(res["torch"][0].detach().abs().max()) > 0.1
    assert res["native"][0].shape == (13, plan.n_out, channels)
    for a, b in zip(res["native"], res["torch"]):
        assert rel_err(a, b) <= 1e-10
    assert float(res["native"][2][2].detach().abs().max()) == 0.0  # element 2 has no atoms


@needs_native
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-5), (torch.float64, 1e-12)])
def test_mace_default_contraction_both_dtypes(dtype, tol):
    """The default MACE contraction (inputs ℓ ≤ 3, outputs ℓ ≤ 1, correlation 3), C = 24 (not a
    multiple of the channel block), fp32 and fp64 against the fp64 reference."""
    plan = plan_for(3, 3, 24, out_ell=1)
    x64, w64, index = inputs(plan, 40, 24, n_elements=5, seed=3)
    outs = {}
    for backend, dt in (("torch", F64), ("native", dtype)):
        x, w = x64.to(dt).requires_grad_(True), w64.to(dt).requires_grad_(True)
        out = symmetric_contraction(plan, x, w, index, backend=backend)
        outs[backend] = [out, *torch.autograd.grad(out.square().sum(), (x, w))]
    for a, b in zip(outs["native"], outs["torch"]):
        assert a.dtype == dtype
        assert rel_err(a.double(), b) <= tol


# ----------------------------------------------------------------------------- autograd checks
@needs_native
@pytest.mark.parametrize("ell,correlation,channels,fast", [(1, 3, 3, False), (2, 2, 2, False), (3, 3, 2, True)])
def test_gradcheck_and_gradgradcheck(ell, correlation, channels, fast):
    """fp64 numerical vs analytical first and second derivatives (ℓ = 3: gradcheck's fast mode)."""
    plan = plan_for(ell, correlation, channels)
    x, w, index = inputs(plan, 4, channels, n_elements=2, seed=7)
    leaves = (x.requires_grad_(True), w.requires_grad_(True))

    def f(x_, w_):
        return symmetric_contraction(plan, x_, w_, index, backend="native")

    assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=fast)


@needs_native
def test_opcheck_forward_backward_and_double_backward_ops():
    plan = plan_for(2, 3, 3)
    x, w, index = inputs(plan, 6, 3, seed=1)
    tables = plan.native_tables(F64)
    ops = torch.ops.nnip_scale
    torch.library.opcheck(ops.symmetric_contraction.default,
                          (x.clone().requires_grad_(), w.clone().requires_grad_(), index, *tables, plan.n_out))
    g = torch.randn(6, plan.n_out, 3, dtype=F64)
    for flags in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(
            ops.symmetric_contraction_backward.default,
            (g.clone().requires_grad_(), x.clone().requires_grad_(), w.clone().requires_grad_(), index, *tables,
             plan.n_out, *flags),
        )
    vx, vw = torch.randn_like(x), torch.randn_like(w)
    for tangents in [(vx, vw), (vx, None), (None, vw)]:
        for flags in [(True, True, True), (False, True, False), (True, False, True)]:
            torch.library.opcheck(ops.symmetric_contraction_double_backward.default,
                                  (g, x, w, index, *tangents, *tables, plan.n_out, *flags))
    # outputs that are not requested have zero rows
    gx, gw = ops.symmetric_contraction_backward(g, x, w, index, *tables, plan.n_out, False, True)
    assert gx.shape == (0, plan.n_x, 3) and gw.shape == w.shape
    dg, dx, dw = ops.symmetric_contraction_double_backward(g, x, w, index, vx, None, *tables, plan.n_out,
                                                           True, False, False)
    assert dg.shape == g.shape and dx.shape == (0, plan.n_x, 3) and dw.shape == (0, plan.n_weights, 3)


@needs_native
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_and_backward(dynamic):
    plan = plan_for(2, 3, 4)
    x0, w0, index0 = inputs(plan, 11, 4, seed=5)

    def f(x, w, index):
        out = symmetric_contraction(plan, x, w, index, backend="native")
        return (out * out.sin()).sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for n_atoms in (11, 7):  # a second atom count: no recompile failure with dynamic shapes
        x, index = x0[:n_atoms], index0[:n_atoms]
        leaves = [x.clone().requires_grad_(True), w0.clone().requires_grad_(True)]
        eager = torch.autograd.grad(f(*leaves, index), leaves)
        leaves2 = [t.detach().clone().requires_grad_(True) for t in leaves]
        got = torch.autograd.grad(compiled(*leaves2, index), leaves2)
        for a, b in zip(got, eager):
            assert rel_err(a, b) <= 1e-12


# ----------------------------------------------------------------------------- edge cases
@needs_native
def test_empty_inputs():
    plan = plan_for(1, 3, 4)
    x, w, index = inputs(plan, 0, 4)
    xx, ww = x.requires_grad_(True), w.requires_grad_(True)
    out = symmetric_contraction(plan, xx, ww, index, backend="native")
    assert out.shape == (0, plan.n_out, 4)
    gx, gw = torch.autograd.grad(out.sum(), (xx, ww), create_graph=True)
    assert gx.shape == (0, plan.n_x, 4) and gw.shape == w.shape and float(gw.detach().abs().max()) == 0.0
    (d,) = torch.autograd.grad(gw.sum(), (xx,), allow_unused=True)
    assert d is None or d.shape == (0, plan.n_x, 4)
    # no elements at all (and no atoms)
    out = symmetric_contraction(plan, x.detach(), w.detach()[:0], index, backend="native")
    assert out.shape == (0, plan.n_out, 4)


@needs_native
def test_deterministic_across_runs_threads_and_bitwise():
    """Atom-owned rows; the weight gradient summed per element over chunks whose size depends on N
    only: bitwise equal across runs and thread counts."""
    plan = plan_for(2, 3, 12)
    x, w, index = inputs(plan, 3000, 12, n_elements=4, seed=9)
    threads = torch.get_num_threads()

    def run():
        xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = symmetric_contraction(plan, xx, ww, index, backend="native")
        g1 = torch.autograd.grad(out.square().sum(), (xx, ww), create_graph=True)
        return [out.detach(), *(t.detach() for t in g1), *torch.autograd.grad(sum(t.square().sum() for t in g1), (xx, ww))]

    try:
        torch.set_num_threads(2)
        first = run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    again = run()
    for a, b, c in zip(first, single, again):
        assert torch.equal(a, b) and torch.equal(a, c)


@needs_native
def test_third_derivative_raises_naming_the_op():
    plan = plan_for(1, 3, 2)
    x, w, index = inputs(plan, 5, 2)
    xx = x.requires_grad_(True)
    out = symmetric_contraction(plan, xx, w, index, backend="native")
    (g1,) = torch.autograd.grad(out.square().sum(), (xx,), create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), (xx,), create_graph=True)
    with pytest.raises(RuntimeError, match=r"symmetric_contraction_double_backward: third and higher derivatives"):
        torch.autograd.grad(g2.square().sum(), (xx,))


# ----------------------------------------------------------------------------- bad input
@needs_native
def test_bad_input_errors_name_the_op_and_argument():
    plan = plan_for(1, 2, 3)
    x, w, index = inputs(plan, 6, 3)

    def call(x_, w_, i_, backend="native"):
        return symmetric_contraction(plan, x_, w_, i_, backend=backend)

    with pytest.raises(ValueError, match=rf"{OP}: weights has dtype torch.float32 but x has torch.float64"):
        call(x, w.float(), index)
    with pytest.raises(ValueError, match=rf"{OP}: index must be a 1-D int64 tensor of N=6 entries"):
        call(x, w, index.int())
    with pytest.raises(ValueError, match=rf"{OP}: index must be a 1-D int64 tensor of N=6 entries"):
        call(x, w, index[:4])
    with pytest.raises(ValueError, match=rf"{OP}: expected x \[N, {plan.n_x}, C\] and weights \[Z, {plan.n_weights}, C\]"):
        call(x[:, :2], w, index)
    with pytest.raises(ValueError, match=rf"{OP}: expected x \[N, {plan.n_x}, C\]"):
        call(x, w[..., :2], index)
    with pytest.raises(ValueError, match=rf"{OP}: index is on meta but x is on cpu"):
        call(x, w, index.to("meta"))
    with pytest.raises(RuntimeError, match=rf"{OP}: backend='native' unavailable: dtype torch.float16"):
        call(x.half(), w.half(), index)
    bad = index.clone()
    bad[2] = 3
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: index has 1 entries outside \[0, weights.size\(0\)=3\)"):
        call(x, w, bad)
    bad[2] = -1
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: index has 1 entries outside"):
        call(x, w, bad)
    # the raw ops check every argument themselves (called without the public function's checks)
    raw = torch.ops.nnip_scale.symmetric_contraction
    tables = list(plan.native_tables(F64))
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: weights must have the dtype of x"):
        raw(x, w.float(), index, *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: index must be int64"):
        raw(x, w, index.int(), *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: weights must have C = x.size\(2\)"):
        raw(x, w[..., :2], index, *tables, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: entry_coeff must have the dtype of x"):
        raw(x, w, index, *tables[:4], tables[4].float(), *tables[5:], plan.n_out)
    broken = list(tables)
    broken[3] = broken[3].clone()
    broken[3][0] = 10_000  # a monomial that does not exist
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: inconsistent product-basis tables: entry_mono"):
        raw(x, w, index, *broken, plan.n_out)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}: inconsistent product-basis tables: row_out"):
        raw(x, w, index, *tables, plan.n_out - 1)
    g = torch.zeros(6, plan.n_out + 1, 3, dtype=F64)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}_backward: grad_out must be \[N=6, n_out="):
        torch.ops.nnip_scale.symmetric_contraction_backward(g, x, w, index, *tables, plan.n_out, True, True)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{OP}_double_backward: tangent_x must have the shape of x"):
        torch.ops.nnip_scale.symmetric_contraction_double_backward(
            g[:, :-1], x, w, index, x[:3], None, *tables, plan.n_out, True, True, True)


# ----------------------------------------------------------------------------- FLOPs
@needs_native
def test_flop_formulas_equal_flopcounter_on_the_reference():
    """Forward, backward and double backward (each subset of inputs needing a gradient): the native
    ops' registered formulas equal what FlopCounterMode counts on the torch reference."""
    plan = plan_for(2, 3, 5, out_ell=1)
    x, w, index = inputs(plan, 9, 5)

    def counts(backend, needs):
        xx, ww = x.clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])
        fwd = count_flops(lambda: symmetric_contraction(plan, xx, ww, index, backend=backend))
        leaves = [t for t in (xx, ww) if t.requires_grad]
        out = symmetric_contraction(plan, xx, ww, index, backend=backend)
        g = torch.randn_like(out).requires_grad_(needs[2])
        bwd = count_flops(lambda: torch.autograd.grad(out, leaves, g.detach(), retain_graph=True))
        grads = torch.autograd.grad(out, leaves, g, create_graph=True)
        dbl_leaves = leaves + ([g] if needs[2] else [])
        dbl = count_flops(lambda: torch.autograd.grad(sum(t.square().sum() for t in grads), dbl_leaves,
                                                      allow_unused=True))
        return fwd, bwd, dbl

    for needs in [(True, True, True), (True, True, False), (True, False, True), (False, True, True), (True, False, False)]:
        assert counts("native", needs) == counts("torch", needs), needs
    assert count_flops(lambda: symmetric_contraction(plan, x, w, index, backend="native")) == flops(OP, plan, x)


# ----------------------------------------------------------------------------- resolver
def test_resolver_contract():
    plan = plan_for(1, 3, 3)
    x, w, index = inputs(plan, 4, 3)
    with pytest.raises(RuntimeError, match=rf"{OP}: backend='pyg' unavailable: {OP} has no pyg"):
        symmetric_contraction(plan, x, w, index, backend="pyg")
    # an explicit native never runs something else: CUDA without CUDA kernels, fp16, limits
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
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: dtype torch.bfloat16 on cpu"):
            resolve_backend("native", "cpu", torch.bfloat16, OP, components=4, correlation=2)
    assert backend_table()[OP]["native"].startswith("cpu: float32, float64")
    assert per_op_backend("native", OP) == "native"
    assert per_op_backend("auto", OP) == "auto"


# ----------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("ell,correlation,channels", [(1, 3, 5), (2, 2, 33), (3, 3, 16)])
def test_cuda_matches_cpu_to_second_order(ell, correlation, channels):
    plan = plan_for(ell, correlation, channels)
    x, w, index = inputs(plan, 50, channels, n_elements=4, used=[0, 2, 3])
    ref = first_and_second(plan, x, w, index, "torch")
    got = first_and_second(plan.to("cuda"), x.cuda(), w.cuda(), index.cuda(), "native-direct")
    for a, b in zip(got, ref):
        assert rel_err(a.cpu(), b) <= 1e-10


# ----------------------------------------------------------------------------- MACE
ELEMENTS = [1, 6, 8]
CUTOFF = 4.0


def make_mace(max_ell, correlation, forces, backend, seed=0, width=3):
    torch.manual_seed(seed)
    m = MACE(width=width, depth=2, max_ell=max_ell, sh_max_ell=max(max_ell, 1), correlation=correlation,
             cutoff=CUTOFF, num_radial=4, radial_hidden=8, radial_layers=1, readout_hidden=4,
             elements=ELEMENTS, forces=forces, backend=backend).double()
    m.set_statistics(FakeStats(ELEMENTS, force_rms=0.7, avg_num_neighbors=6.0))
    return m


def molecules():
    mols = [molecule("CH3CH2OH"), molecule("H2O")]
    for k, m in enumerate(mols):
        m.rattle(0.05, seed=k + 1)
    return mols


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@needs_native
@pytest.mark.parametrize("max_ell,correlation,forces", [
    (0, 1, "conservative"), (1, 2, "conservative"), (1, 3, "conservative"), (2, 3, "conservative"),
    (3, 2, "conservative"), (3, 3, "conservative"), (1, 3, "direct"),
])
def test_mace_native_equals_torch(max_ell, correlation, forces):
    """Same parameters, fp64: energies, forces and every parameter gradient of a force-loss training
    step agree to 1e-10; the native model runs the native contraction ops (and the torch one does not)."""
    batch = batch_from_atoms(molecules(), CUTOFF)
    ref = make_mace(max_ell, correlation, forces, "torch")
    nat = make_mace(max_ell, correlation, forces, "native", seed=1)
    nat.load_state_dict(ref.state_dict())
    assert nat.op_backends[OP] == "native"
    results = []
    for model in (ref, nat):
        with _OpRecorder() as rec:
            out = model(batch)
            loss = out["energy"].square().sum() + (out["forces"] - 0.1).square().sum()
            loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}, rec.names))
    (o1, g1, ops1), (o2, g2, ops2) = results
    assert {"nnip_scale.symmetric_contraction", "nnip_scale.symmetric_contraction_backward"} <= ops2
    if forces == "conservative":
        assert "nnip_scale.symmetric_contraction_double_backward" in ops2
    assert not any(n.startswith("nnip_scale.symmetric") for n in ops1)
    assert float(o1["forces"].detach().abs().max()) > 1e-4
    assert rel_err(o2["energy"], o1["energy"]) <= 1e-10
    assert rel_err(o2["forces"], o1["forces"]) <= 1e-10
    for name in g1:
        assert rel_err(g2[name], g1[name]) <= 1e-10, name


@needs_native
def test_mace_auto_runs_native_contraction_on_cpu_in_fp32():
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms(molecules(), CUTOFF).items()}
    model = make_mace(1, 3, "conservative", "auto").float()
    with _OpRecorder() as rec:
        out = model(batch)
        out["forces"].square().sum().backward()
    assert {"nnip_scale.symmetric_contraction", "nnip_scale.symmetric_contraction_backward",
            "nnip_scale.symmetric_contraction_double_backward"} <= rec.names
    ref = make_mace(1, 3, "conservative", "torch").float()
    ref.load_state_dict(model.state_dict())
    assert rel_err(out["forces"], ref(batch)["forces"]) <= 1e-4
