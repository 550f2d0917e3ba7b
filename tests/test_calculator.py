"""ASE calculator: NVE energy conservation with a conservative model, stress, clear errors."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from batch_utils import FakeStats

from nnip_scale.calculator import NNIPCalculator, load_backbone
from nnip_scale.models import MPNN


def conservative_model(stress=False):
    torch.manual_seed(0)
    m = MPNN(width=16, depth=2, cutoff=4.0, forces="conservative", compute_stress=stress, backend="torch")
    m.set_statistics(FakeStats([1, 6, 8, 29], force_rms=0.5, avg_num_neighbors=8.0))
    return m


def test_nve_md_conserves_energy():
    atoms = molecule("CH3CH2OH")
    atoms.calc = NNIPCalculator(conservative_model(), dtype=torch.float64)
    kT = 300 * units.kB  # Maxwell-Boltzmann momenta at 300 K
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(np.random.default_rng(0).standard_normal((len(atoms), 3)) * np.sqrt(masses * kT))
    e0 = atoms.get_total_energy()
    energies = []
    dyn = VelocityVerlet(atoms, 0.25 * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(40)
    drift = max(abs(e - e0) for e in energies)
    assert drift < 2e-3, drift
    assert atoms.get_kinetic_energy() > 0


def test_stress_from_calculator_matches_finite_differences():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=3)
    calc = NNIPCalculator(conservative_model(stress=True), dtype=torch.float64)
    cu.calc = calc
    s = cu.get_stress(voigt=False)
    h = 1e-6
    e = []
    for sign in (1, -1):
        c = cu.copy()
        eps = np.eye(3)
        eps[0, 0] += sign * h
        c.set_cell(cu.cell.array @ eps, scale_atoms=True)
        c.calc = calc
        e.append(c.get_potential_energy())
    assert abs((e[0] - e[1]) / (2 * h) / cu.get_volume() - s[0, 0]) < 1e-6


def test_unknown_element_and_missing_stress_are_clear_errors():
    calc = NNIPCalculator(conservative_model(), dtype=torch.float64)
    atoms = molecule("NH3")
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"element\(s\) N \(Z=7\) that the model was not trained on"):
        atoms.get_potential_energy()
    cu = bulk("Cu", "fcc", a=3.6)
    cu.calc = calc
    assert "stress" not in calc.implemented_properties
    with pytest.raises(PropertyNotImplementedError):  # ASE's own error: filters and writers catch it
        cu.get_stress()
    stress_calc = NNIPCalculator(conservative_model(stress=True), dtype=torch.float64)
    assert "stress" in stress_calc.implemented_properties
    water = molecule("H2O")
    water.calc = stress_calc
    with pytest.raises(PropertyNotImplementedError, match="non-periodic structure"):
        water.get_stress()


def test_per_atom_energies_sum_to_the_energy():
    atoms = molecule("CH3CH2OH")
    atoms.calc = NNIPCalculator(conservative_model(), dtype=torch.float64)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    assert len(set(np.round(energies, 8))) > 1  # not one value spread evenly


def test_load_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_backbone(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_backbone(bad)
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="does not record its backbone"):
        load_backbone(tmp_path / "foreign.ckpt")
