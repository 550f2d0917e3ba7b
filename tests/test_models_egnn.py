"""Physics and contract tests of the multi-channel EGNN (fp64): O(3)/translation/permutation
symmetry in both force modes, conservative forces and stress, backend parity, N, config, learning."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models.egnn import MCEGNN

CUTOFF = 4.0


def make_model(**kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = MCEGNN(width=16, depth=2, vector_channels=4, cutoff=CUTOFF, num_radial=8, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


def systems():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.numbers[[1, 4]] = 13
    cell.rattle(0.05, seed=2)
    return [mol, cell]


def transformed(atoms, Q, shift):
    """Copy of ``atoms`` with positions (and cell) mapped by x -> Q x + shift."""
    a = atoms.copy()
    a.positions = a.positions @ Q.T + shift
    if a.pbc.any():
        a.set_cell(a.cell.array @ Q.T, scale_atoms=False)
    return a


def orthogonal_maps():
    rots = Rotation.random(3, random_state=7).as_matrix()
    reflect = np.diag([1.0, 1.0, -1.0])
    return [*rots, reflect, rots[0] @ reflect, -np.eye(3)]  # rotations, mirrors, inversion


def assert_rel_close(a, b, tol=1e-10):
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_o3_and_translation_symmetry(forces):
    model = make_model(forces=forces)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    assert float(out["forces"].abs().max()) > 1e-3  # the check below is not trivially 0 = 0
    shift = np.array([1.3, -0.7, 2.1])
    for Q in orthogonal_maps():
        moved = [transformed(a, Q, shift) for a in atoms]
        out_q = model(batch_from_atoms(moved, CUTOFF))
        assert_rel_close(out_q["energy"], out["energy"])
        assert_rel_close(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_permutation_equivariance(forces):
    model = make_model(forces=forces)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(a)) for a in atoms]
    out_p = model(batch_from_atoms([a[p] for a, p in zip(atoms, perms)], CUTOFF))
    assert_rel_close(out_p["energy"], out["energy"])
    offset = np.cumsum([0] + [len(a) for a in atoms])[:-1]
    full = torch.as_tensor(np.concatenate([p + o for p, o in zip(perms, offset)]))
    assert_rel_close(out_p["forces"], out["forces"][full])


def test_conservative_forces_match_finite_differences():
    model = make_model(forces="conservative")
    mol = systems()[0]
    f = model(batch_from_atoms([mol], CUTOFF))["forces"].detach()
    h = 1e-5
    for atom, comp in [(0, 0), (3, 1), (8, 2)]:
        e = []
        for sign in (1, -1):
            m2 = mol.copy()
            m2.positions[atom, comp] += sign * h
            e.append(float(model(batch_from_atoms([m2], CUTOFF))["energy"][0]))
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(f[atom, comp])) < 1e-7 * max(1.0, abs(fd))


def test_conservative_stress_matches_strain_derivative():
    model = make_model(forces="conservative", compute_stress=True)
    cu = systems()[1]
    out = model(batch_from_atoms([cu], CUTOFF))
    vol = cu.get_volume()
    h = 1e-6
    for a, b in [(0, 0), (1, 2)]:
        e = []
        for sign in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sign * h / (2 if a != b else 1)
            if a != b:
                eps[b, a] += sign * h / 2
            c2 = cu.copy()
            c2.set_cell(cu.cell.array @ eps, scale_atoms=True)
            e.append(float(model(batch_from_atoms([c2], CUTOFF))["energy"][0]))
        fd = (e[0] - e[1]) / (2 * h) / vol
        assert abs(fd - float(out["stress"][0, a, b])) < 1e-6
    assert float(out["stress"].abs().max()) > 1e-6
    assert torch.allclose(out["stress"][0], out["stress"][0].T, atol=1e-12)


def test_edges_at_the_cutoff_contribute_nothing():
    """An edge just inside the cutoff changes nothing (envelope → 0 smoothly): dropping it from
    the neighbour list leaves energy and forces unchanged."""
    from ase import Atoms

    d = CUTOFF - 1e-4
    trimer = Atoms("COH", positions=[[0, 0, 0], [d, 0, 0], [0.3, 1.1, 0.2]])
    for forces in ("direct", "conservative"):
        model = make_model(forces=forces)
        with_edge = model(batch_from_atoms([trimer], CUTOFF))
        without = model(batch_from_atoms([trimer], CUTOFF - 2e-4))
        assert batch_from_atoms([trimer], CUTOFF)["n_edges"] == batch_from_atoms([trimer], CUTOFF - 2e-4)["n_edges"] + 2
        assert abs(float((with_edge["energy"] - without["energy"]).detach()[0])) < 1e-9
        assert float((with_edge["forces"] - without["forces"]).abs().max()) < 1e-8


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_backends_agree_in_fp64(forces):
    from nnip_scale.ops import available_backends

    batch = batch_from_atoms(systems(), CUTOFF)
    ref = make_model(backend="torch", forces=forces)(batch)
    others = [b for b in available_backends() if b not in ("torch", "auto")]
    for backend in others:
        out = make_model(backend=backend, forces=forces)(batch)
        assert torch.allclose(ref["energy"], out["energy"], rtol=0, atol=1e-10), backend
        assert torch.allclose(ref["forces"], out["forces"], rtol=0, atol=1e-10), backend


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_parameter_count_excludes_embedding(forces):
    w, c, r, depth = 8, 3, 4, 2
    model = MCEGNN(width=w, depth=depth, vector_channels=c, num_radial=r, max_atomic_number=10, forces=forces)
    message = (2 * w + r + 3 * c) * w + w + w * w + w
    update = 2 * w * w + w + w * w + w
    vector_message = w * w + w + w * 2 * c + 2 * c
    mix, gate = c * c, w * c + c
    energy_head = (w + c) * w + w + w + 1
    force_head = c if forces == "direct" else 0
    counts = model.count_parameters()
    assert counts["n_params"] == depth * (message + update + vector_message + mix + gate) + energy_head + force_head
    assert counts["n_params_total"] == counts["n_params"] + 11 * w


def test_every_parameter_gets_a_gradient_in_both_modes():
    batch = batch_from_atoms(systems(), CUTOFF)
    for forces in ("direct", "conservative"):
        model = make_model(forces=forces)
        out = model(batch)
        (out["energy"].sum() + out["forces"].square().sum()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == [], (forces, missing)


def test_init_config_round_trip_and_defaults():
    m = MCEGNN(width=24, depth=2, cutoff=4.5, num_radial=6, forces="conservative", compute_stress=True)
    assert m.vector_channels == 4  # default max(4, width // 8)
    assert MCEGNN(width=128).vector_channels == 16
    m2 = MCEGNN(**m.init_config())
    assert m2.init_config() == m.init_config()
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in m2.state_dict().items()}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="compute_stress=True needs forces='conservative'"):
        MCEGNN(width=8, depth=1, forces="direct", compute_stress=True)
    with pytest.raises(ValueError, match="vector_channels must be >= 1, got 0"):
        MCEGNN(width=8, depth=1, vector_channels=0)
    with pytest.raises(ValueError, match="width and depth must be >= 1, got width=8, depth=0"):
        MCEGNN(width=8, depth=0)
