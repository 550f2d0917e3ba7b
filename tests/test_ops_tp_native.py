"""Native fused channel-wise tensor product + gather/scatter (``torch.ops.nnip_scale.channelwise_tp_scatter``)
and the backend contract of the equivariant ops.

Op level (fp64): parity with the torch reference to 1e-10 for ℓ = 0..3 and several channel counts,
including first, second and third derivatives; gradcheck/gradgradcheck; ``torch.library.opcheck``
of the forward and backward ops; ``torch.compile(fullgraph=True)`` forward and backward; empty
inputs; determinism (bitwise across runs and thread counts); bad input → errors naming the op and
the argument; FLOP formulas equal to FlopCounterMode on the reference. Resolver: explicit
``native`` raises (op, backend, why) where it cannot serve, ``auto`` picks native on CPU.
Model level (MACE, fp64): ``backend="native"`` runs the native op and equals ``torch`` (energies,
forces, parameter gradients) for ℓ = 0..3, direct and conservative; conservative ℓ = 3 forces
match finite differences and the finite-difference Hessian is symmetric.
"""

import numpy as np
import pytest
import torch
from ase.build import molecule
from torch.utils._python_dispatch import TorchDispatchMode

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models.mace import MACE
from nnip_scale.nn.irreps import channelwise_tp_descriptor, spherical_harmonics_polynomial, symmetric_contraction_polynomial
from nnip_scale.ops import flops, native_available, resolve_backend
from nnip_scale.ops.equivariant import (
    ChannelwiseTPPlan,
    PolynomialPlan,
    channelwise_tp_scatter,
    spherical_harmonics,
    symmetric_contraction,
)
from nnip_scale.ops.registry import backend_table, per_op_backend
from nnip_scale.training.flops import count_flops

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
F64 = torch.float64


def plan_for(ell: int, channels: int, sh_ell: int | None = None) -> ChannelwiseTPPlan:
    """The interaction of a MACE layer with hidden ℓ ≤ ell and harmonics ℓ ≤ sh_ell (default max(ell, 1))."""
    sh_ell = max(ell, 1) if sh_ell is None else sh_ell
    return ChannelwiseTPPlan(channelwise_tp_descriptor(tuple(range(ell + 1)), sh_ell, sh_ell, channels)[0])


def inputs(plan, n_atoms, n_edges, channels, seed=0, dtype=F64, isolated=2):
    """weights, x, sh, sender, receiver; the last ``isolated`` atoms send and receive nothing."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_edges, plan.n_paths, channels, generator=g, dtype=dtype)
    x = torch.randn(n_atoms, plan.dim_x, channels, generator=g, dtype=dtype)
    sh = torch.randn(n_edges, plan.dim_sh, generator=g, dtype=dtype)
    hi = max(n_atoms - isolated, 1)
    sender = torch.randint(0, hi, (n_edges,), generator=g)
    receiver = torch.randint(0, hi, (n_edges,), generator=g)
    return w, x, sh, sender, receiver


def rel_err(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


# ----------------------------------------------------------------------------- parity
@needs_native
@pytest.mark.parametrize("ell,channels", [(0, 1), (0, 5), (1, 3), (1, 16), (2, 7), (2, 32), (3, 4), (3, 19)])
def test_native_matches_torch_to_third_order(ell, channels):
    """Values, first derivatives (w, x, sh), second derivatives (through create_graph) and one
    third-order contraction agree with the torch reference to 1e-10 (fp64)."""
    plan = plan_for(ell, channels)
    n_atoms, n_edges = 11, 40
    base = inputs(plan, n_atoms, n_edges, channels, seed=ell * 100 + channels)
    snd, rcv = base[3], base[4]
    res = {}
    for backend in ("torch", "native"):
        w, x, sh = (t.clone().requires_grad_(True) for t in base[:3])
        out = channelwise_tp_scatter(plan, w, x, sh, snd, rcv, n_atoms, backend=backend)
        g1 = torch.autograd.grad((out * torch.cos(out)).sum(), (w, x, sh), create_graph=True)
        s2 = sum((t * torch.sin(t)).sum() for t in g1)
        g2 = torch.autograd.grad(s2, (w, x, sh), create_graph=True)
        g3 = torch.autograd.grad(sum(t.square().sum() for t in g2), (w, x, sh))
        res[backend] = [out, *g1, *g2, *g3]
    assert float(res["torch"][0].detach().abs().max()) > 0.1
    assert res["native"][0].shape == (n_atoms, plan.dim_out, channels)
    for a, b in zip(res["native"], res["torch"]):
        assert rel_err(a, b) <= 1e-10
    assert float(res["native"][0][-2:].detach().abs().max()) == 0.0  # atoms that receive nothing


@needs_native
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_mace_default_interaction_both_dtypes(dtype, tol):
    """The default MACE interaction (hidden ℓ ≤ 1, harmonics ℓ ≤ 3), C = 24 (not a multiple of the
    channel block), fp32 and fp64, output and gradients against the fp64 reference."""
    plan = plan_for(1, 24, sh_ell=3)
    base64 = inputs(plan, 30, 200, 24, seed=3)
    outs = {}
    for backend, dt in (("torch", F64), ("native", dtype)):
        w, x, sh = (t.to(dt).requires_grad_(True) for t in base64[:3])
        out = channelwise_tp_scatter(plan, w, x, sh, base64[3], base64[4], 30, backend=backend)
        grads = torch.autograd.grad(out.square().sum(), (w, x, sh))
        outs[backend] = [out, *grads]
    for a, b in zip(outs["native"], outs["torch"]):
        assert a.dtype == dtype
        assert rel_err(a.double(), b) <= tol


# ----------------------------------------------------------------------------- autograd checks
@needs_native
@pytest.mark.parametrize("ell,channels,n_edges,fast", [(1, 3, 9, False), (2, 2, 9, False), (3, 2, 6, True)])
def test_gradcheck_and_gradgradcheck(ell, channels, n_edges, fast):
    """fp64 numerical vs analytical first and second derivatives (ℓ = 3: gradcheck's fast mode,
    random projections of the full Jacobian, to stay under a second)."""
    plan = plan_for(ell, channels)
    w, x, sh, snd, rcv = inputs(plan, 5, n_edges, channels, seed=7, isolated=1)
    leaves = tuple(t.clone().requires_grad_(True) for t in (w, x, sh))

    def f(w_, x_, sh_):
        return channelwise_tp_scatter(plan, w_, x_, sh_, snd, rcv, 5, backend="native")

    assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=fast)


@needs_native
def test_opcheck_forward_and_backward_ops():
    plan = plan_for(2, 3)
    w, x, sh, snd, rcv = inputs(plan, 6, 14, 3, seed=1)
    tables = plan.native_tables(F64)
    dense = plan.dense_pairs
    fwd_args = (w.requires_grad_(), x.requires_grad_(), sh.requires_grad_(), snd, rcv, 6, *tables, dense)
    torch.library.opcheck(torch.ops.nnip_scale.channelwise_tp_scatter.default, fwd_args)
    g = torch.randn(6, plan.dim_out, 3, dtype=F64, requires_grad=True)
    for flags in [(True, True, True), (True, False, True), (False, True, False)]:
        torch.library.opcheck(
            torch.ops.nnip_scale.channelwise_tp_scatter_backward.default,
            (g, w, x, sh, snd, rcv, *tables, dense, *flags),
        )
    # empty gradients that are not requested have zero rows
    gw, gx, gsh = torch.ops.nnip_scale.channelwise_tp_scatter_backward(
        g.detach(), w.detach(), x.detach(), sh.detach(), snd, rcv, *tables, dense, False, True, False
    )
    assert gw.shape == (0, plan.n_paths, 3) and gsh.shape == (0, plan.dim_sh) and gx.shape == x.shape


@needs_native
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_and_backward(dynamic):
    plan = plan_for(2, 4)
    base = inputs(plan, 9, 30, 4, seed=5)

    def f(w, x, sh, snd, rcv):
        out = channelwise_tp_scatter(plan, w, x, sh, snd, rcv, 9, backend="native")
        return (out * out.sin()).sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for n_edges in (30, 21):  # a second edge count: no recompile failure with dynamic shapes
        args = [t[:n_edges].clone() if t.shape[0] == 30 else t.clone() for t in base]
        leaves = [t.requires_grad_(True) for t in args[:3]]
        eager = torch.autograd.grad(f(*args), leaves)
        leaves2 = [t.detach().clone().requires_grad_(True) for t in args[:3]]
        got = torch.autograd.grad(compiled(*leaves2, args[3], args[4]), leaves2)
        for a, b in zip(got, eager):
            assert rel_err(a, b) <= 1e-12


# ----------------------------------------------------------------------------- edge cases
@needs_native
def test_empty_inputs_and_isolated_atoms():
    plan = plan_for(1, 4)
    w, x, sh, snd, rcv = inputs(plan, 7, 0, 4)
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    out = channelwise_tp_scatter(plan, *leaves, snd, rcv, 7, backend="native")
    assert out.shape == (7, plan.dim_out, 4) and float(out.detach().abs().max()) == 0.0
    gw, gx, gsh = torch.autograd.grad(out.sum(), leaves)
    assert gw.shape == (0, plan.n_paths, 4) and gsh.shape == (0, plan.dim_sh)
    assert gx.shape == x.shape and float(gx.abs().max()) == 0.0
    # no atoms at all
    out0 = channelwise_tp_scatter(plan, w, x[:0], sh, snd, rcv, 0, backend="native")
    assert out0.shape == (0, plan.dim_out, 4)
    # atoms that neither send nor receive: zero output rows and zero input gradients
    w, x, sh, snd, rcv = inputs(plan, 12, 50, 4, isolated=3)
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    out = channelwise_tp_scatter(plan, *leaves, snd, rcv, 12, backend="native")
    _, gx, _ = torch.autograd.grad(out.square().sum(), leaves)
    out = out.detach()
    assert float(out[-3:].abs().max()) == 0.0 and float(gx[-3:].abs().max()) == 0.0
    assert float(out[:-3].abs().max()) > 0.0


@needs_native
def test_deterministic_across_runs_threads_and_bitwise():
    """Receiver-owned (forward) and sender-owned (backward) rows, edges summed in their order:
    bitwise equal across runs and thread counts."""
    plan = plan_for(2, 20)
    base = inputs(plan, 300, 20000, 20, seed=9)
    threads = torch.get_num_threads()

    def run():
        w, x, sh = (t.clone().requires_grad_(True) for t in base[:3])
        out = channelwise_tp_scatter(plan, w, x, sh, base[3], base[4], 300, backend="native")
        return [out.detach(), *torch.autograd.grad((out * out).sum(), (w, x, sh))]

    try:
        first = run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    again = run()
    for a, b, c in zip(first, single, again):
        assert torch.equal(a, b) and torch.equal(a, c)


# ----------------------------------------------------------------------------- bad input
@needs_native
def test_bad_input_errors_name_the_op_and_argument():
    plan = plan_for(1, 3)
    w, x, sh, snd, rcv = inputs(plan, 6, 10, 3)
    op = "channelwise_tp_scatter"

    def call(*args, backend="native"):
        return channelwise_tp_scatter(plan, *args, backend=backend)

    with pytest.raises(ValueError, match=rf"{op}: sh has dtype torch.float32 but x has torch.float64"):
        call(w, x, sh.float(), snd, rcv, 6)
    with pytest.raises(ValueError, match=rf"{op}: receiver must be a 1-D int64 tensor"):
        call(w, x, sh, snd, rcv.int(), 6)
    with pytest.raises(ValueError, match=rf"{op}: expected weights \[E=10, P={plan.n_paths}, C\]"):
        call(w[:, :1], x, sh, snd, rcv, 6)
    with pytest.raises(ValueError, match=rf"{op}: sender is on meta but x is on cpu"):
        call(w, x, sh, snd.to("meta"), rcv, 6)
    with pytest.raises(TypeError, match=rf"{op}: n_atoms must be a Python int"):
        call(w, x, sh, snd, rcv, torch.tensor(6))
    with pytest.raises(RuntimeError, match=rf"{op}: backend='native' unavailable: dtype torch.float16"):
        call(w.half(), x.half(), sh.half(), snd, rcv, 6)
    bad = rcv.clone()
    bad[3] = 6
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: receiver has 1 entries outside \[0, n_atoms=6\)"):
        call(w, x, sh, snd, bad, 6)
    bad = snd.clone()
    bad[0] = -1
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: sender has 1 entries outside \[0, x.size\(0\)=6\)"):
        call(w, x, sh, bad, rcv, 6)
    # the raw op checks every argument itself (called without the public function's checks)
    raw = torch.ops.nnip_scale.channelwise_tp_scatter
    tables = list(plan.native_tables(F64))
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: weights must have the dtype of x"):
        raw(w.float(), x, sh, snd, rcv, 6, *tables, plan.dense_pairs)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: sender must be int64"):
        raw(w, x, sh, snd.int(), rcv, 6, *tables, plan.dense_pairs)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: weights must have C = x.size\(2\)"):
        raw(w[..., :2], x, sh, snd, rcv, 6, *tables, plan.dense_pairs)
    broken = list(tables)
    broken[2] = broken[2].clone()
    broken[2][0] = 99  # an x row that does not exist
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}: inconsistent Clebsch–Gordan tables: pair_x"):
        raw(w, x, sh, snd, rcv, 6, *broken, plan.dense_pairs)
    g = torch.zeros(6, plan.dim_out + 1, 3, dtype=F64)
    with pytest.raises(RuntimeError, match=rf"nnip_scale::{op}_backward: grad_out must be \[N, K="):
        torch.ops.nnip_scale.channelwise_tp_scatter_backward(g, w, x, sh, snd, rcv, *tables, plan.dense_pairs,
                                                             True, True, True)


# ----------------------------------------------------------------------------- FLOPs
@needs_native
@pytest.mark.parametrize("ell,sh_ell", [(1, 3), (3, 3)])
def test_flop_formulas_equal_flopcounter_on_the_reference(ell, sh_ell):
    """Forward and backward (each subset of inputs needing a gradient): the native ops' registered
    formulas equal what FlopCounterMode counts on the torch reference, so a model's FLOPs do not
    depend on its backend."""
    plan = plan_for(ell, 5, sh_ell=sh_ell)
    base = inputs(plan, 8, 33, 5)
    snd, rcv = base[3], base[4]

    def counts(backend, needs):
        w, x, sh = (t.clone().requires_grad_(n) for t, n in zip(base[:3], needs))
        fwd = count_flops(lambda: channelwise_tp_scatter(plan, w, x, sh, snd, rcv, 8, backend=backend))
        leaves = [t for t in (w, x, sh) if t.requires_grad]
        if not leaves:
            return fwd, 0
        out = channelwise_tp_scatter(plan, w, x, sh, snd, rcv, 8, backend=backend)
        g = torch.randn_like(out)
        bwd = count_flops(lambda: torch.autograd.grad(out, leaves, g, retain_graph=True))
        return fwd, bwd

    for needs in [(True, True, True), (True, True, False), (True, False, False), (False, False, True)]:
        assert counts("native", needs) == counts("torch", needs), needs
    assert counts("native", (False, False, False))[0] == flops(
        "channelwise_tp_scatter", plan, base[0], base[1], base[2]
    )


# ----------------------------------------------------------------------------- resolver
def test_resolver_contract_for_the_equivariant_ops():
    plan = plan_for(1, 3)
    sc_plan = PolynomialPlan(symmetric_contraction_polynomial((0, 1), (0, 1), 3, 2), weighted=True)
    sh_plan = PolynomialPlan(spherical_harmonics_polynomial(2), weighted=False)
    # explicit native never runs torch for an op without a native kernel: error naming op, backend, why
    with pytest.raises(RuntimeError, match=r"spherical_harmonics: backend='native' unavailable: spherical_harmonics has no native implementation"):
        spherical_harmonics(sh_plan, torch.randn(5, 3), backend="native")
    with pytest.raises(RuntimeError, match=r"symmetric_contraction: backend='pyg' unavailable: symmetric_contraction has no pyg"):
        symmetric_contraction(sc_plan, torch.randn(4, 4, 3), torch.randn(2, sc_plan.n_weights, 3),
                              torch.zeros(4, dtype=torch.long), backend="pyg")
    with pytest.raises(RuntimeError, match=r"channelwise_tp_scatter: backend='native' unavailable: .*(CUDA|cuda)"):
        resolve_backend("native", "cuda", torch.float32, "channelwise_tp_scatter", ell=1)
    # auto: native on CPU where it serves the call, else torch
    expected = "native" if native_available() else "torch"
    for dtype in (torch.float32, torch.float64):
        assert resolve_backend("auto", "cpu", dtype, "channelwise_tp_scatter", ell=3) == expected
    assert resolve_backend("auto", "cpu", torch.float16, "channelwise_tp_scatter", ell=1) == "torch"
    assert resolve_backend("auto", "cpu", torch.float32, "channelwise_tp_scatter", ell=4) == "torch"
    assert resolve_backend("auto", "cpu", torch.float64, "symmetric_contraction") == expected  # tests/test_ops_sc_native.py
    assert resolve_backend("auto", "cuda", torch.float32, "channelwise_tp_scatter", ell=1) in ("cueq", "torch")
    if native_available():
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: ℓ = 4 > 3"):
            resolve_backend("native", "cpu", torch.float32, "channelwise_tp_scatter", ell=4)
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: dtype torch.bfloat16 on cpu"):
            resolve_backend("native", "cpu", torch.bfloat16, "channelwise_tp_scatter", ell=1)
    # declared substitutions are part of the op's contract and listed
    table = backend_table()
    assert table["channelwise_tp_scatter"]["native"] == "cpu: float32, float64"
    assert table["spherical_harmonics"]["native"] == "—"
    assert table["scatter_sum"]["cueq"] == "→ auto (declared)"
    # model-level mapping: ops without a kernel in the model's backend are called with torch
    assert per_op_backend("native", "channelwise_tp_scatter") == "native"
    assert per_op_backend("native", "symmetric_contraction") == "native"
    assert per_op_backend("native", "spherical_harmonics") == "torch"
    assert per_op_backend("native", "scatter_sum") == "native"
    assert per_op_backend("auto", "symmetric_contraction") == "auto"
    assert per_op_backend("pyg", "spherical_harmonics") == "torch"
    assert per_op_backend("cueq", "scatter_sum") == "cueq"
    assert plan.max_ell == 1


# ----------------------------------------------------------------------------- MACE
ELEMENTS = [1, 6, 8]
CUTOFF = 4.0


def make_mace(max_ell, forces, backend, seed=0, width=4):
    torch.manual_seed(seed)
    sh_max_ell = {0: 2, 1: 3, 2: 2, 3: 3}[max_ell]  # ℓ 1: the default config's harmonics ℓ ≤ 3
    m = MACE(width=width, depth=2, max_ell=max_ell, sh_max_ell=sh_max_ell,
             correlation=2, cutoff=CUTOFF, num_radial=5, radial_hidden=8, radial_layers=1, readout_hidden=4,
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
@pytest.mark.parametrize("forces", ["direct", "conservative"])
@pytest.mark.parametrize("max_ell", [0, 1, 2, 3])
def test_mace_native_equals_torch(max_ell, forces):
    """Same parameters, fp64: energies, forces and every parameter gradient of a training loss
    agree to 1e-10; the native model really calls the native op (and the torch one does not)."""
    batch = batch_from_atoms(molecules(), CUTOFF)
    ref = make_mace(max_ell, forces, "torch")
    nat = make_mace(max_ell, forces, "native", seed=1)
    nat.load_state_dict(ref.state_dict())
    assert nat.op_backends["channelwise_tp_scatter"] == "native"
    results = []
    for model in (ref, nat):
        with _OpRecorder() as rec:
            out = model(batch)
            loss = out["energy"].square().sum() + (out["forces"] - 0.1).square().sum()
            loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}, rec.names))
    (o1, g1, ops1), (o2, g2, ops2) = results
    assert "nnip_scale.channelwise_tp_scatter" in ops2 and "nnip_scale.channelwise_tp_scatter_backward" in ops2
    assert not any(n.startswith("nnip_scale.channelwise") for n in ops1)
    assert float(o1["forces"].detach().abs().max()) > 1e-4
    assert rel_err(o2["energy"], o1["energy"]) <= 1e-10
    assert rel_err(o2["forces"], o1["forces"]) <= 1e-10
    for name in g1:
        assert rel_err(g2[name], g1[name]) <= 1e-10, name


@needs_native
def test_mace_auto_runs_native_on_cpu_in_fp32():
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms(molecules(), CUTOFF).items()}
    model = make_mace(1, "conservative", "auto").float()
    with _OpRecorder() as rec:
        out = model(batch)
        out["forces"].square().sum().backward()
    assert "nnip_scale.channelwise_tp_scatter" in rec.names
    assert "nnip_scale.channelwise_tp_scatter_backward" in rec.names
    ref = make_mace(1, "conservative", "torch").float()
    ref.load_state_dict(model.state_dict())
    assert rel_err(out["forces"], ref(batch)["forces"]) <= 1e-4


@needs_native
def test_mace_l3_native_conservative_forces_are_conservative():
    """ℓ = 3 on the native kernels (the setting where a published kernel library shipped
    non-conservative forces): F = −∂E/∂r by central differences, and the finite-difference
    Hessian −∂F_a/∂r_b is symmetric."""
    model = make_mace(3, "conservative", "native", width=3)
    mol = molecules()[0]
    f = model(batch_from_atoms([mol], CUTOFF))["forces"].detach().numpy()
    h = 1e-5

    def energy(m):
        return float(model(batch_from_atoms([m], CUTOFF))["energy"][0].detach())

    def displaced(atom, comp, step):
        m = mol.copy()
        m.positions[atom, comp] += step
        return m

    coords = [(0, 0), (2, 1), (5, 2), (8, 0)]
    for atom, comp in coords:
        fd = -(energy(displaced(atom, comp, h)) - energy(displaced(atom, comp, -h))) / (2 * h)
        assert abs(fd - f[atom, comp]) < 1e-7 * max(1.0, abs(fd)), (atom, comp, fd, f[atom, comp])

    def forces(m):
        return model(batch_from_atoms([m], CUTOFF))["forces"].detach().numpy()

    hess = {}
    for atom, comp in coords:
        diff = (forces(displaced(atom, comp, h)) - forces(displaced(atom, comp, -h))) / (2 * h)
        for other, comp2 in coords:
            hess[(atom, comp), (other, comp2)] = -diff[other, comp2]
    scale = max(abs(v) for v in hess.values())
    assert scale > 1e-3
    for a in coords:
        for b in coords:
            assert abs(hess[a, b] - hess[b, a]) < 1e-6 * scale, (a, b, hess[a, b], hess[b, a])


def test_mace_native_model_level_mapping_is_explicit():
    """A native MACE states which op runs where (no silent per-call fallback)."""
    m = MACE(width=4, depth=1, max_ell=1, sh_max_ell=2, correlation=1, elements=[1, 6], backend="native")
    assert m.op_backends == {
        "spherical_harmonics": "torch",
        "channelwise_tp_scatter": "native",
        "symmetric_contraction": "native",
        "scatter_sum": "native",
    }
    assert np.all([per_op_backend("torch", op) == "torch" for op in m.op_backends])
