"""Training statistics: exact element energies, force RMS, neighbour count, save/load."""

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list
from test_data_helpers import cluster, write_extxyz

from nnip_scale.data import DatasetStatistics, compute_statistics, fit_element_energies, load_or_build

E_REF = {1: -13.6, 6: -1027.0, 8: -2041.5, 29: -3.7}


def _synthetic(tmp_path, rng, n=30, noise=0.0):
    frames = []
    for _ in range(n):
        a = cluster(int(rng.integers(2, 7)), rng, symbols=("H", "C", "O", "Cu"))
        e = sum(E_REF[z] for z in a.numbers) + noise * len(a) * rng.normal()
        a.calc = SinglePointCalculator(a, energy=e, forces=rng.normal(0, 0.5, (len(a), 3)))
        frames.append(a)
    return frames, load_or_build(write_extxyz(tmp_path / "s.extxyz", frames))


def test_element_energies_recovered_exactly(tmp_path):
    frames, data = _synthetic(tmp_path, np.random.default_rng(0))
    st = compute_statistics(data, np.arange(len(data)), cutoff=3.0)
    assert st.elements == [1, 6, 8, 29]
    for z, e in E_REF.items():
        assert st.element_energies[z] == pytest.approx(e, abs=1e-8)
    assert np.count_nonzero(st.element_energies) == 4
    assert st.energy_per_atom_residual_std < 1e-9
    forces = np.concatenate([a.get_forces() for a in frames])
    assert st.force_rms == pytest.approx(np.sqrt(np.mean(forces ** 2)), rel=1e-7)  # extxyz keeps 8 decimals
    n_edges = sum(len(ase_neighbor_list("i", a, 3.0)) for a in frames)
    assert st.avg_num_neighbors == pytest.approx(n_edges / sum(len(a) for a in frames), rel=1e-12)
    assert (st.n_structures, st.n_atoms) == (len(frames), sum(len(a) for a in frames))


def test_training_indices_only_and_residual_std(tmp_path):
    rng = np.random.default_rng(1)
    frames, data = _synthetic(tmp_path, rng, n=40, noise=0.01)
    idx = np.arange(0, 40, 2)
    st = compute_statistics(data, idx, cutoff=3.0)
    assert st.n_structures == 20 and st.n_atoms == sum(len(frames[k]) for k in idx)
    comp = np.zeros((20, 119))
    for r, k in enumerate(idx):
        np.add.at(comp[r], frames[k].numbers, 1)
    energies = np.array([frames[k].get_potential_energy() for k in idx])
    resid = (energies - comp @ st.element_energies) / comp.sum(1)
    assert st.energy_per_atom_residual_std == pytest.approx(resid.std(), rel=1e-10)
    assert 0 < st.energy_per_atom_residual_std < 0.05


def test_rank_deficient_composition_and_round_trip(tmp_path):
    # every structure is C1O1 scaled: only e_C + e_O is determined; min-norm split, absent elements 0
    comp = np.zeros((3, 119))
    comp[:, 6] = comp[:, 8] = [1, 2, 3]
    e = fit_element_energies(comp, np.array([-3.0, -6.0, -9.0]))
    assert e[6] == pytest.approx(-1.5) and e[8] == pytest.approx(-1.5) and np.count_nonzero(e) == 2
    st = DatasetStatistics(element_energies=e, elements=[6, 8], force_rms=0.3, avg_num_neighbors=7.5,
                           energy_per_atom_residual_std=0.01, n_structures=3, n_atoms=12, cutoff=5.0)
    st.save(tmp_path / "s" / "stats.json")
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["stats.json"]  # no temp file left
    back = DatasetStatistics.load(tmp_path / "s" / "stats.json")
    np.testing.assert_array_equal(back.element_energies, e)
    assert back.to_dict() == st.to_dict()
