"""Physics and contract tests of the eSEN-style model (fp64): SO(3)/translation/permutation
symmetry in both force modes (and the documented absence of reflection symmetry), edges exactly
along the frame axis, conservative forces and stress, every lmax, N, config, μP widths, FLOPs."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models import ESEN
from nnip_scale.ops import flops, so2_layout

CUTOFF = 4.0


def make_model(width=8, depth=2, lmax=2, mmax=1, **kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = ESEN(width=width, depth=depth, lmax=lmax, mmax=mmax, cutoff=CUTOFF, num_radial=6, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


def axis_molecule():
    """A bent C-O-H whose C-O bond lies exactly along z (the edge-frame axis) and O-H along -z."""
    return Atoms("COH", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.25], [0.0, 0.0, 2.2]]) + Atoms(
        "H", positions=[[0.9, 0.3, -0.4]]
    )


def systems():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.numbers[[1, 4]] = 13
    cell.rattle(0.05, seed=2)
    return [mol, cell, axis_molecule()]


def transformed(atoms, Q, shift):
    a = atoms.copy()
    a.positions = a.positions @ Q.T + shift
    if a.pbc.any():
        a.set_cell(a.cell.array @ Q.T, scale_atoms=False)
    return a


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def check_so3(model, atoms, tol=1e-10):
    out = model(batch_from_atoms(atoms, CUTOFF))
    assert float(out["forces"].detach().abs().max()) > 1e-3  # not trivially 0 = 0
    shift = np.array([1.3, -0.7, 2.1])
    half_turn = Rotation.from_rotvec([0.0, np.pi, 0.0]).as_matrix()  # maps the z-axis bond onto -z
    for Q in [*Rotation.random(2, random_state=7).as_matrix(), half_turn]:
        out_q = model(batch_from_atoms([transformed(a, Q, shift) for a in atoms], CUTOFF))
        assert rel_err(out_q["energy"], out["energy"]) <= tol
        assert rel_err(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T) <= tol
    return out


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_so3_and_translation_symmetry(forces):
    check_so3(make_model(forces=forces), systems())


def test_reflections_are_not_symmetries():
    """Documented claim: SO(3) only. The imaginary (±m-mixing) SO(2) weights make reflection-odd
    couplings that reach the ℓ ≥ 1 features already in the first block (the edge-degree embedding
    gives the m > 0 rows signal), so mirror images get different energies and forces."""
    mol = systems()[0]
    for depth, forces in [(1, "direct"), (2, "direct"), (2, "conservative")]:
        model = make_model(depth=depth, forces=forces)
        out = model(batch_from_atoms([mol], CUTOFF))
        for Q in (np.diag([1.0, 1.0, -1.0]), -np.eye(3)):
            out_q = model(batch_from_atoms([transformed(mol, Q, 0.0)], CUTOFF))
            assert rel_err(out_q["energy"], out["energy"]) > 1e-5
            assert rel_err(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T) > 1e-3


@pytest.mark.parametrize("lmax", [1, 2, 3, 4, 5, 6])
def test_every_lmax_builds_and_is_equivariant(lmax):
    model = make_model(width=4, depth=1, lmax=lmax, mmax=min(lmax, 2))
    check_so3(model, [systems()[0], axis_molecule()])


def test_mmax_zero_is_equivariant():
    check_so3(make_model(lmax=2, mmax=0), [systems()[2], systems()[1]])


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_permutation_equivariance(forces):
    model = make_model(forces=forces)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(a)) for a in atoms]
    out_p = model(batch_from_atoms([a[p] for a, p in zip(atoms, perms)], CUTOFF))
    assert rel_err(out_p["energy"], out["energy"]) <= 1e-10
    offset = np.cumsum([0] + [len(a) for a in atoms])[:-1]
    full = torch.as_tensor(np.concatenate([p + o for p, o in zip(perms, offset)]))
    assert rel_err(out_p["forces"], out["forces"][full]) <= 1e-10


def test_conservative_forces_match_finite_differences():
    """Including an atom whose bond lies exactly along the frame axis (atom 0 of the axis molecule)."""
    model = make_model(forces="conservative")
    for mol, probes in [(systems()[0], [(0, 0), (3, 1), (8, 2)]), (axis_molecule(), [(0, 0), (1, 2), (2, 1)])]:
        f = model(batch_from_atoms([mol], CUTOFF))["forces"].detach()
        h = 1e-5
        for atom, comp in probes:
            e = []
            for sign in (1, -1):
                m2 = mol.copy()
                m2.positions[atom, comp] += sign * h
                e.append(float(model(batch_from_atoms([m2], CUTOFF))["energy"].detach()[0]))
            fd = -(e[0] - e[1]) / (2 * h)
            assert abs(fd - float(f[atom, comp])) < 1e-7 * max(1.0, abs(fd)), (atom, comp, fd, float(f[atom, comp]))


def test_conservative_stress_matches_strain_derivative():
    model = make_model(forces="conservative", compute_stress=True)
    cu = systems()[1]
    out = model(batch_from_atoms([cu], CUTOFF))
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
            e.append(float(model(batch_from_atoms([c2], CUTOFF))["energy"].detach()[0]))
        assert abs((e[0] - e[1]) / (2 * h) / vol - float(out["stress"].detach()[0, a, b])) < 1e-6
    assert float(out["stress"].detach().abs().max()) > 1e-6


def test_direct_force_head_reads_the_l1_channels_in_cartesian_order():
    """F_i = σ_F·Σ_c w_c h_i^{ℓ=1,c} with the ℓ = 1 rows (y, z, x) mapped to (x, y, z)."""
    model = make_model()
    captured = {}
    model.norm_out.register_forward_hook(lambda mod, inp, out: captured.update(h=out.detach()))
    forces = model(batch_from_atoms(systems()[:2], CUTOFF))["forces"].detach()
    l1 = captured["h"][:, 1:4]  # [A, 3 (y, z, x), W]
    expected = model.force_scale * torch.einsum("akc,c->ak", l1, model.force_head.weight[0].detach())
    assert float(forces.abs().max()) > 1e-3
    assert float((forces - expected[:, [2, 0, 1]]).abs().max()) < 1e-14
    assert float((forces - expected).abs().max()) > 1e-3  # the order matters


def n_params_expected(W, depth, L, M, R, direct):
    n_pos = sum(L - m + 1 for m in range(M + 1))
    norm = (L + 1) * W + W
    radial = R * W + W + W * n_pos * 2 * W + n_pos * 2 * W
    conv1 = (L + 1) * 2 * W * ((L + 1) * W + L * W) + sum(2 * (L - m + 1) ** 2 * 2 * W * W for m in range(1, M + 1))
    conv2 = ((L + 1) * W) ** 2 + sum(2 * ((L - m + 1) * W) ** 2 for m in range(1, M + 1))
    ffn_in = W * (W + L * W) + W + L * W + L * W * W
    ffn_out = W * W + W + L * W * W
    block = 2 * norm + radial + conv1 + conv2 + ffn_in + ffn_out
    degree_embedding = (R + 2 * W) * W + W + W * (L + 1) * W + (L + 1) * W
    return depth * block + degree_embedding + norm + ((L + 1) * W * W + W + W + 1) + (W if direct else 0)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_parameter_count_excludes_embedding(forces):
    W, depth, L, M, R = 8, 2, 3, 2, 5
    model = ESEN(width=W, depth=depth, lmax=L, mmax=M, num_radial=R, max_atomic_number=10, forces=forces)
    counts = model.count_parameters()
    assert counts["n_params"] == n_params_expected(W, depth, L, M, R, forces == "direct")
    assert counts["n_params_total"] == counts["n_params"] + 11 * W


def test_every_parameter_gets_a_gradient_in_both_modes():
    batch = batch_from_atoms(systems(), CUTOFF)
    for forces in ("direct", "conservative"):
        model = make_model(forces=forces)
        out = model(batch)
        (out["energy"].sum() + out["forces"].square().sum()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == [], (forces, missing)


def test_init_config_round_trip_and_width_scaling_for_mup():
    m = ESEN(width=12, depth=3, lmax=3, mmax=2, cutoff=4.5, num_radial=6, forces="conservative", compute_stress=True)
    m2 = ESEN(**m.init_config())
    assert m2.init_config() == m.init_config()
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in m2.state_dict().items()}
    wide = type(m)(**{**m.init_config(), "width": 24})
    shapes = dict(wide.named_parameters())
    for name, p in m.named_parameters():
        if p.ndim >= 2:  # every weight matrix has a dimension that scales with width
            assert shapes[name].shape != p.shape, name
    from nnip_scale.training.mup import classify_parameters

    roles = classify_parameters(m, base_width=6)
    assert roles["blocks.0.conv1.w0"].kind == "hidden" and roles["blocks.0.conv1.wm.0"].kind == "hidden"
    assert roles["blocks.0.radial.0.weight"].kind == "input" and roles["energy_head.2.weight"].kind == "output"


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lmax must be an int in 1..6, got 7"):
        ESEN(lmax=7)
    with pytest.raises(ValueError, match="mmax must be an int in 0..lmax=2, got 3"):
        ESEN(lmax=2, mmax=3)
    with pytest.raises(ValueError, match="width and depth must be >= 1, got width=8, depth=0"):
        ESEN(width=8, depth=0)
    with pytest.raises(ValueError, match="compute_stress=True needs forces='conservative'"):
        ESEN(forces="direct", compute_stress=True)


def test_training_step_flops_are_counted_and_match_the_hot_op_estimate():
    """FlopCounterMode sees the edge ops (bmm/mm/index_add); the forward count is the sum of the
    registered op formulas plus the smaller MLP/Wigner/node terms, and a training step (forward,
    force loss, backward) costs about 3 forwards."""
    from nnip_scale.training.flops import count_flops

    W, L, M, R, depth = 16, 2, 1, 6, 2
    model = make_model(width=W, depth=depth, lmax=L, mmax=M).float()
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms(systems(), CUTOFF).items()}
    E, A = batch["n_edges"], batch["n_atoms"]
    rows, K = len(so2_layout(L, M)), (L + 1) ** 2
    blk = model.blocks[0]
    hot = (
        flops("so2_rotate_in", (A, K, W), (E, rows, K), (E,), (E,))
        + flops("so2_conv", (E, rows, 2 * W), None, blk.conv1.w0.shape, [w.shape for w in blk.conv1.wm])
        + flops("so2_conv", (E, rows, W), None, blk.conv2.w0.shape, [w.shape for w in blk.conv2.wm])
        + flops("so2_rotate_out_scatter", (E, rows, W), (E, rows, K), (E,), A)
        + 2 * E * (R * W + W * blk.n_positive * 2 * W)  # radial MLP
    ) * depth
    with torch.no_grad():
        forward = count_flops(lambda: model(batch))
    assert hot <= forward <= 1.25 * hot, (forward, hot)

    def step():
        out = model(batch)
        ((out["energy"] - batch["energy"]).square().sum() + (out["forces"] - batch["forces"]).square().sum()).backward()

    train = count_flops(step)
    assert 2.5 * forward <= train <= 3.2 * forward, (train, forward)
