"""Physics and contract tests of MACE (fp64): O(3)/translation/permutation symmetry of both configs
(ℓ = 1 and the invariant ℓ = 0 model) in both force modes and both backends, torch-vs-cueq parity
of the ops and of the model (energy, forces, parameter gradients), conservative forces and stress
by finite differences, N, config round trip, μP shapes and FLOP counting."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models.mace import MACE
from nnip_scale.ops import flops

CUTOFF = 4.0
ELEMENTS = [1, 6, 8, 13, 29]
CONFIGS = {  # tiny versions of configs/model/mace.yaml and mace_invariant.yaml
    "mace": dict(max_ell=1, sh_max_ell=2, correlation=3),
    "invariant": dict(max_ell=0, sh_max_ell=2, correlation=3),
}


def make_model(config="mace", seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("backend", "torch")
    args = dict(width=4, depth=2, cutoff=CUTOFF, num_radial=6, radial_hidden=16, radial_layers=2,
                readout_hidden=8, elements=ELEMENTS, **CONFIGS.get(config, {}))
    m = MACE(**{**args, **kw}).double()
    m.set_statistics(FakeStats(ELEMENTS, force_rms=0.7, avg_num_neighbors=6.0))
    return m


def backend_param(name):
    marks = []
    if name == "cueq":
        try:
            import cuequivariance_torch  # noqa: F401
        except ImportError:
            marks = [pytest.mark.skip(reason="cuequivariance-torch not installed")]
    return pytest.param(name, marks=marks)


BACKENDS = [backend_param("torch"), backend_param("cueq")]


def systems():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.numbers[[1, 4]] = 13
    cell.rattle(0.05, seed=2)
    return [mol, cell]


def transformed(atoms, Q, shift):
    a = atoms.copy()
    a.positions = a.positions @ Q.T + shift
    if a.pbc.any():
        a.set_cell(a.cell.array @ Q.T, scale_atoms=False)
    return a


def orthogonal_maps():
    from scipy.spatial.transform import Rotation

    rots = Rotation.random(2, random_state=7).as_matrix()
    reflect = np.diag([1.0, 1.0, -1.0])
    return [*rots, reflect, rots[0] @ reflect, -np.eye(3)]  # rotations, mirrors, inversion


def assert_rel_close(a, b, tol=1e-10):
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("forces", ["direct", "conservative"])
@pytest.mark.parametrize("config", ["mace", "invariant"])
def test_o3_and_translation_symmetry(config, forces, backend):
    """E invariant and F equivariant under rotations, reflections, inversion and translations
    (the group is O(3) ⋉ R³: all features have natural parity), molecule and periodic cell."""
    model = make_model(config, forces=forces, backend=backend)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    assert float(out["forces"].detach().abs().max()) > 1e-5  # the check below is not trivially 0 = 0
    shift = np.array([1.3, -0.7, 2.1])
    for Q in orthogonal_maps():
        out_q = model(batch_from_atoms([transformed(a, Q, shift) for a in atoms], CUTOFF))
        assert_rel_close(out_q["energy"], out["energy"])
        assert_rel_close(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T)


def test_higher_ell_features_are_equivariant():
    """max_ell 2 with spherical harmonics to ℓ = 3 (the ℓ ≤ 3 Clebsch–Gordan paths)."""
    model = make_model("l2", max_ell=2, sh_max_ell=3, correlation=2, depth=3)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    for Q in orthogonal_maps()[2:4]:
        out_q = model(batch_from_atoms([transformed(a, Q, np.zeros(3)) for a in atoms], CUTOFF))
        assert_rel_close(out_q["energy"], out["energy"])
        assert_rel_close(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T)


@pytest.mark.parametrize("config", ["mace", "invariant"])
def test_permutation_equivariance(config):
    model = make_model(config)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(a)) for a in atoms]
    out_p = model(batch_from_atoms([a[p] for a, p in zip(atoms, perms)], CUTOFF))
    assert_rel_close(out_p["energy"], out["energy"])
    offset = np.cumsum([0] + [len(a) for a in atoms])[:-1]
    full = torch.as_tensor(np.concatenate([p + o for p, o in zip(perms, offset)]))
    assert_rel_close(out_p["forces"], out["forces"][full])


@pytest.mark.parametrize("config", ["mace", "invariant"])
def test_conservative_forces_match_finite_differences(config):
    model = make_model(config, forces="conservative")
    mol = systems()[0]
    f = model(batch_from_atoms([mol], CUTOFF))["forces"].detach()
    h = 1e-5
    for atom, comp in [(0, 0), (3, 1), (8, 2)]:
        e = []
        for sign in (1, -1):
            m2 = mol.copy()
            m2.positions[atom, comp] += sign * h
            e.append(float(model(batch_from_atoms([m2], CUTOFF))["energy"][0].detach()))
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(f[atom, comp])) < 1e-7 * max(1.0, abs(fd)), (fd, float(f[atom, comp]))


def test_conservative_stress_matches_strain_derivative():
    model = make_model("mace", forces="conservative", compute_stress=True)
    cu = systems()[1]
    out = {k: v.detach() for k, v in model(batch_from_atoms([cu], CUTOFF)).items()}
    vol, h = cu.get_volume(), 1e-6
    for a, b in [(0, 0), (1, 2)]:
        e = []
        for sign in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sign * h / (2 if a != b else 1)
            if a != b:
                eps[b, a] += sign * h / 2
            c2 = cu.copy()
            c2.set_cell(cu.cell.array @ eps, scale_atoms=True)
            e.append(float(model(batch_from_atoms([c2], CUTOFF))["energy"][0].detach()))
        fd = (e[0] - e[1]) / (2 * h) / vol
        assert abs(fd - float(out["stress"][0, a, b])) < 1e-6
    assert float(out["stress"].abs().max()) > 1e-6
    assert torch.allclose(out["stress"][0], out["stress"][0].T, atol=1e-12)


def test_edges_at_the_cutoff_contribute_nothing():
    d = CUTOFF - 1e-4
    trimer = Atoms("COH", positions=[[0, 0, 0], [d, 0, 0], [0.3, 1.1, 0.2]])
    for config in CONFIGS:
        model = make_model(config)
        with_edge = model(batch_from_atoms([trimer], CUTOFF))
        without = model(batch_from_atoms([trimer], CUTOFF - 2e-4))
        assert abs(float((with_edge["energy"] - without["energy"]).detach()[0])) < 1e-9
        assert float((with_edge["forces"] - without["forces"]).detach().abs().max()) < 1e-8


# ----------------------------------------------------------------------------- backend parity
def test_ops_agree_torch_vs_cueq_with_gradients():
    """Each equivariant op (spherical harmonics, channel-wise TP + gather/scatter, symmetric
    contraction) gives the same values and input/weight gradients on both backends (fp64)."""
    pytest.importorskip("cuequivariance_torch")
    from nnip_scale.nn.irreps import (channelwise_tp_descriptor, spherical_harmonics_polynomial,
                                      symmetric_contraction_polynomial)
    from nnip_scale.ops.equivariant import (ChannelwiseTPPlan, PolynomialPlan, channelwise_tp_scatter,
                                            spherical_harmonics, symmetric_contraction)

    g = torch.Generator().manual_seed(0)
    C, A, E = 3, 6, 15
    sh_plan = PolynomialPlan(spherical_harmonics_polynomial(3), weighted=False)
    tp_plan = ChannelwiseTPPlan(channelwise_tp_descriptor((0, 1), 2, 2, C)[0])
    sc_plan = PolynomialPlan(symmetric_contraction_polynomial((0, 1, 2), (0, 1), C, 3), weighted=True)
    vec = torch.randn(E, 3, dtype=torch.float64, generator=g)
    w = torch.randn(E, tp_plan.n_paths, C, dtype=torch.float64, generator=g)
    x = torch.randn(A, 4, C, dtype=torch.float64, generator=g)
    sh9 = torch.randn(E, 9, dtype=torch.float64, generator=g)
    snd, rcv = torch.randint(0, A, (E,), generator=g), torch.randint(0, A, (E,), generator=g)
    m = torch.randn(A, 9, C, dtype=torch.float64, generator=g)
    wsc = torch.randn(3, sc_plan.n_weights, C, dtype=torch.float64, generator=g)
    idx = torch.randint(0, 3, (A,), generator=g)
    cases = [
        (lambda b, v: spherical_harmonics(sh_plan, v[0], b), [vec / vec.norm(dim=1, keepdim=True)]),
        (lambda b, v: channelwise_tp_scatter(tp_plan, v[0], v[1], v[2], snd, rcv, A, b), [w, x, sh9]),
        (lambda b, v: symmetric_contraction(sc_plan, v[0], v[1], idx, b), [m, wsc]),
    ]
    for fn, inputs in cases:
        results = {}
        for backend in ("torch", "cueq"):
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            out = fn(backend, leaves)
            grads = torch.autograd.grad((out * torch.cos(out)).sum(), leaves)
            results[backend] = (out, grads)
        assert float(results["torch"][0].detach().abs().max()) > 0.1
        assert_rel_close(results["cueq"][0], results["torch"][0])
        for gc, gt in zip(results["cueq"][1], results["torch"][1]):
            assert_rel_close(gc, gt)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
@pytest.mark.parametrize("config", ["mace", "invariant"])
def test_model_backends_agree_and_share_the_state_dict(config, forces):
    """A cueq model loaded with a torch model's state_dict gives the same energy, forces and
    parameter gradients (fp64, 1e-10 relative); the state_dicts have identical keys and shapes."""
    pytest.importorskip("cuequivariance_torch")
    batch = batch_from_atoms(systems(), CUTOFF)
    ref = make_model(config, forces=forces, backend="torch", seed=0)
    other = make_model(config, forces=forces, backend="cueq", seed=1)
    sd_ref, sd_other = ref.state_dict(), other.state_dict()
    assert {k: v.shape for k, v in sd_ref.items()} == {k: v.shape for k, v in sd_other.items()}
    other.load_state_dict(sd_ref)
    results = []
    for model in (ref, other):
        out = model(batch)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (o1, g1), (o2, g2) = results
    assert_rel_close(o2["energy"], o1["energy"])
    assert_rel_close(o2["forces"], o1["forces"])
    assert g1.keys() == g2.keys()
    for name in g1:
        assert_rel_close(g2[name], g1[name])


# ----------------------------------------------------------------------------- contract
def test_every_parameter_gets_a_gradient():
    batch = batch_from_atoms(systems(), CUTOFF)
    for config in CONFIGS:
        for forces in ("direct", "conservative"):
            model = make_model(config, forces=forces)
            out = model(batch)
            (out["energy"].sum() + out["forces"].square().sum()).backward()
            used = range(len(ELEMENTS))  # H C O (molecule), Al Cu (cell): every slot is present
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert missing == [], (config, forces, missing)
            for layer in model.layers:  # contraction weights of every present element are trained
                assert all(float(layer.contraction_weights.grad[s].abs().sum()) > 0 for s in used)


def test_parameter_count_excludes_embedding():
    """N by hand for W channels, one layer, ℓ = 0, Y_0..1, correlation 1 (conservative): 2 TP paths
    (0e⊗0e→0e, 0e⊗1o→1o), one contraction weight (0e→0e) per element."""
    W, R, H, Z = 8, 5, 7, 12
    model = MACE(width=W, depth=1, max_ell=0, sh_max_ell=1, correlation=1, num_radial=R, radial_hidden=H,
                 radial_layers=1, readout_hidden=16, elements=[1, 6, 8], max_atomic_number=Z, forces="conservative")
    linear_up, radial = W * W, R * H + H + H * 2 * W + 2 * W
    linear_message, contraction, linear_post = 2 * W * W, 3 * 1 * W, W * W
    readout = W * 16 + 16 + 16 + 1
    counts = model.count_parameters()
    assert counts["n_params"] == linear_up + radial + linear_message + contraction + linear_post + readout
    assert counts["n_params_total"] == counts["n_params"] + (Z + 1) * W


def test_init_config_round_trip_and_mup_shapes():
    from nnip_scale.training.mup import classify_parameters

    m = make_model("mace", forces="conservative", compute_stress=True)
    m2 = MACE(**m.init_config())
    assert m2.init_config() == m.init_config()
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in m2.state_dict().items()}
    wide = MACE(**{**m.init_config(), "width": 8})
    for (n, p), (n2, p2) in zip(m.named_parameters(), wide.named_parameters()):
        assert n == n2 and p.ndim == p2.ndim
    kinds = classify_parameters(m, base_width=4)
    assert kinds["layers.1.linear_up.weights.0"].kind == "hidden"
    assert kinds["layers.1.linear_message.weights.1"].kind == "hidden"
    assert kinds["readouts.0.weight"].kind == "output"
    assert kinds["layers.0.contraction_weights"].kind == "input"  # [elements, n_weights, C]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="correlation must be in 1..3"):
        MACE(width=4, correlation=4)
    with pytest.raises(ValueError, match="expected 0 <= max_ell <= sh_max_ell"):
        MACE(width=4, max_ell=3, sh_max_ell=2)
    with pytest.raises(ValueError, match="elements must be atomic numbers in 1..10"):
        MACE(width=4, elements=[1, 11], max_atomic_number=10)
    model = MACE(width=4, elements=[1, 6], max_atomic_number=10)
    with pytest.raises(ValueError, match=r"element O \(Z=8\) is not among the model's elements H, C; the training data"):
        model.set_statistics(FakeStats([1, 6, 8]))


def test_training_step_flops_are_counted_and_match_the_hot_op_estimate():
    """FlopCounterMode sees the einsum/bmm of the torch reference: the forward count lies between
    the registered hot-op formulas plus the dense layers and 1.3× that. A direct-force training step
    (forward, loss, backward) costs 1.8–3 forwards, not the usual ~3: the products with the constant
    Clebsch–Gordan/product-basis tables need a gradient for one operand only, and the spherical
    harmonics (positions need no gradient) none (measured ≈ 2.2)."""
    from nnip_scale.training.flops import count_flops

    W, R, H = 8, 6, 16
    model = make_model("mace", width=W, num_radial=R, radial_hidden=H).float()
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms(systems(), CUTOFF).items()}
    E, A = batch["n_edges"], batch["n_atoms"]
    hot = flops("spherical_harmonics", model.sh_plan, (E, 3))
    for layer in model.layers:
        P = layer.tp.n_paths
        hot += flops("channelwise_tp_scatter", layer.tp, (E, P, W), (A, layer.tp.dim_x, W), (E, 9))
        hot += flops("symmetric_contraction", layer.contraction, (A, 9, W))
        hot += 2 * E * (R * H + H * H + H * P * W)  # radial MLP
        dense = [layer.linear_up, layer.linear_message, layer.linear_post] + ([layer.skip] if layer.skip else [])
        hot += sum(2 * A * (2 * ell + 1) * w.numel() for lin in dense for ell, w in zip(lin.out_ells, lin.weights))
    with torch.no_grad():
        forward = count_flops(lambda: model(batch))
    assert hot <= forward <= 1.3 * hot, (forward, hot)

    def step():
        out = model(batch)
        ((out["energy"] - batch["energy"]).square().sum() + (out["forces"] - batch["forces"]).square().sum()).backward()

    train = count_flops(step)
    assert 1.8 * forward <= train <= 3.0 * forward, (train, forward)


# ---------------------------------------------------------------------- initial scale
def test_silu_gain_is_the_inverse_rms_of_silu_on_a_unit_gaussian():
    from scipy import integrate

    from nnip_scale.nn.mlp import SILU_GAIN

    second, _ = integrate.quad(lambda z: (z / (1 + np.exp(-z))) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -40, 40)
    assert SILU_GAIN == pytest.approx(second ** -0.5, rel=1e-6)


def test_unit_init_mlp_preserves_unit_variance():
    from nnip_scale.nn import MLP

    torch.manual_seed(0)
    mlp = MLP([16, 256, 256, 256, 512], unit_init=True).double()
    out = mlp(torch.randn(4096, 16, dtype=torch.float64))
    assert float(out.square().mean().sqrt()) == pytest.approx(1.0, abs=0.15)
    assert all(float(m.bias.abs().max()) == 0.0 for m in mlp if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("in_ells,out_ells,correlation", [((0, 1, 2), (0, 1), 3), ((0, 1, 2, 3), (0,), 3), ((0, 1), (0, 1), 2)])
def test_contraction_init_gives_unit_variance_outputs(in_ells, out_ells, correlation):
    """Path-normalised contraction weights: with iid N(0, 1) inputs every output component has
    unit variance (the exact Gaussian second moments of the product basis), instead of the
    ~1/n_weights scale of a randn/n_weights init that left MACE's hidden features ~1e-3 at init."""
    from nnip_scale.nn.irreps import irreps_dim, symmetric_contraction_polynomial
    from nnip_scale.ops.equivariant import PolynomialPlan, symmetric_contraction

    torch.manual_seed(0)
    c, n = 16, 20000
    plan = PolynomialPlan(symmetric_contraction_polynomial(in_ells, out_ells, c, correlation), weighted=True)
    std = plan.weight_init_std
    assert std.shape == (plan.n_weights,) and bool((std > 0).all())
    x = torch.randn(n, irreps_dim(in_ells), c, dtype=torch.float64)
    index = torch.zeros(n, dtype=torch.long)
    # independent zero-mean weights: Var(out) = Σ_w s_w² E[p_w(x)²]; each path's second moment by
    # Monte Carlo over x (the weight draw itself would add a χ² spread over the few channels)
    variance = torch.zeros(irreps_dim(out_ells), dtype=torch.float64)
    for k in range(plan.n_weights):
        w = torch.zeros(1, plan.n_weights, c, dtype=torch.float64)
        w[0, k] = std[k]
        variance += symmetric_contraction(plan, x, w, index, backend="torch").square().mean(dim=(0, 2))
    assert torch.allclose(variance, torch.ones_like(variance), atol=0.05), variance


def test_hidden_features_are_order_one_at_init_and_flat_in_width():
    """At init the hidden features after the first interaction are O(1e-2) whatever the width
    (they were ~5e-4 before the contraction and radial MLP were normalised; mace-torch 0.3.16 gives
    1.5e-3–5e-3 on this batch at widths 8–128, growing with width)."""
    mols = [molecule(n) for n in ("CH4", "H2O", "C2H6", "CH3OH")]
    batch = batch_from_atoms(mols, CUTOFF)
    scales = {}
    for width in (8, 32, 128):
        rms = []
        for seed in range(3):
            model = make_model("mace", seed=seed, width=width, sh_max_ell=3, radial_hidden=64, radial_layers=3,
                               readout_hidden=16)
            seen = {}
            model.layers[0].register_forward_hook(lambda mod, inp, out: seen.__setitem__("h", out))
            with torch.no_grad():
                model(batch)
            rms.append(float(seen["h"].square().mean().sqrt()))
        scales[width] = float(np.mean(rms))
    assert all(5e-3 < s < 1.0 for s in scales.values()), scales
    assert max(scales.values()) / min(scales.values()) < 2.0, scales  # measured 1.7 (3 seeds, ~20 atoms)
