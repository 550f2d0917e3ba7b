"""Physics and contract tests of the unconstrained MPNN (fp64)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from batch_utils import FakeStats, batch_from_atoms
from nnip_scale.models import MPNN

CUTOFF = 4.0


def make_model(**kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = MPNN(width=16, depth=2, cutoff=CUTOFF, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


def systems():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.rattle(0.05, seed=2)
    return [mol, cell]


@pytest.mark.parametrize("force_head", ["edge", "node"])
def test_translation_invariance_and_no_rotation_symmetry(force_head):
    model = make_model(force_head=force_head)
    atoms = systems()
    out = model(batch_from_atoms(atoms, CUTOFF))
    moved = [a.copy() for a in atoms]
    for a in moved:
        a.positions += np.array([1.3, -0.7, 2.1])
    out_t = model(batch_from_atoms(moved, CUTOFF))
    assert torch.allclose(out["energy"], out_t["energy"], rtol=1e-12, atol=1e-10)
    assert torch.allclose(out["forces"], out_t["forces"], rtol=1e-10, atol=1e-10)
    # no built-in rotational symmetry: rotating the molecule changes its energy
    mol = atoms[0].copy()
    R = Rotation.from_euler("xyz", [0.4, 1.1, -0.3]).as_matrix()
    mol.positions = mol.positions @ R.T
    out_rot = model(batch_from_atoms([mol], CUTOFF))
    assert (out_rot["energy"][0] - out["energy"][0]).abs() > 1e-6
    # nor are its direct forces rotation-equivariant
    n = len(mol)
    assert (out_rot["forces"] - out["forces"][:n] @ torch.as_tensor(R).T).abs().max() > 1e-6


@pytest.mark.parametrize("force_head", ["edge", "node"])
def test_permutation_equivariance(force_head):
    model = make_model(force_head=force_head)
    mol = systems()[0]
    perm = np.random.default_rng(0).permutation(len(mol))
    out = model(batch_from_atoms([mol], CUTOFF))
    out_p = model(batch_from_atoms([mol[perm]], CUTOFF))
    assert torch.allclose(out["energy"], out_p["energy"], rtol=1e-12)
    assert torch.allclose(out["forces"][perm], out_p["forces"], atol=1e-12)


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
    assert torch.allclose(out["stress"][0], out["stress"][0].T, atol=1e-12)


def test_energy_smooth_at_cutoff():
    model = make_model(forces="conservative")
    energies = []
    for d in (CUTOFF - 1e-4, CUTOFF + 1e-4):
        dimer = Atoms("CO", positions=[[0, 0, 0], [d, 0, 0]])
        energies.append(model(batch_from_atoms([dimer], CUTOFF + 0.5))["energy"][0])
    assert abs(float(energies[0] - energies[1])) < 1e-9


@pytest.mark.parametrize("force_head", ["edge", "node"])
def test_parameter_count_excludes_embedding(force_head):
    model = MPNN(width=8, depth=2, cutoff=CUTOFF, num_radial=4, max_atomic_number=10, force_head=force_head)
    counts = model.count_parameters()
    w, r = 8, 4
    layer = (2 * w + 3 + r) * w + w + w * w + w + 2 * w * w + w + w * w + w
    energy_head = w * w + w + w + 1
    force_head_params = ((2 * w + 3 + r) * w + w + w + 1) if force_head == "edge" else (w * w + w + 3 * w + 3)
    assert counts["n_params"] == 2 * layer + energy_head + force_head_params
    assert counts["n_params_total"] == counts["n_params"] + 11 * w


def test_element_outside_table_is_a_clear_error():
    model = MPNN(width=8, depth=1, cutoff=CUTOFF, max_atomic_number=20)
    with pytest.raises(ValueError, match=r"element\(s\) Cu \(Z=29\) outside the model's element table \(Z = 1\.\.20\)"):
        model.set_statistics(FakeStats([1, 29]))


def test_backends_agree_in_fp64():
    from nnip_scale.ops import available_backends

    batch = batch_from_atoms(systems(), CUTOFF)
    ref = make_model(backend="torch")(batch)
    for backend in available_backends():
        if backend in ("torch", "auto"):
            continue
        out = make_model(backend=backend)(batch)
        assert torch.allclose(ref["energy"], out["energy"], rtol=0, atol=1e-10), backend
        assert torch.allclose(ref["forces"], out["forces"], rtol=0, atol=1e-10), backend


def test_direct_mode_rejects_stress():
    with pytest.raises(ValueError, match="compute_stress=True needs forces='conservative'"):
        MPNN(width=8, depth=1, forces="direct", compute_stress=True)
