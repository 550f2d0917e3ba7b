"""vesin neighbour lists against a brute-force O(n² · images) reference."""

import numpy as np
import pytest
from ase.build import bulk

from nnip_scale.data import brute_force_neighbor_list, neighbor_list


def _sorted(ei, S):
    rows = np.concatenate([ei.T, S.astype(np.int64)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def _check(positions, cell, pbc, cutoff):
    ei, S = neighbor_list(positions, cell, pbc, cutoff)
    ref_ei, ref_S = brute_force_neighbor_list(positions, cell, pbc, cutoff)
    assert ei.dtype == np.int64 and S.shape == (ei.shape[1], 3)
    np.testing.assert_array_equal(_sorted(ei, S), _sorted(ref_ei, ref_S))
    # every returned pair is within the cutoff, by the conventions' formula r_ij = pos[j] - pos[i] + S @ cell
    d = np.linalg.norm(positions[ei[1]] - positions[ei[0]] + S @ cell, axis=1)
    assert (d < cutoff).all()
    return ei, S


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triclinic_periodic_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.0, 5.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
    frac = rng.random((7, 3))
    positions = frac @ cell + rng.normal(0, 0.1, (7, 3))  # some atoms slightly outside the cell
    ei, S = _check(positions, cell, np.array([True, True, True]), 6.5)
    assert np.abs(S).max() >= 2  # cutoff larger than the cell: several images per pair


def test_mixed_pbc_and_molecule():
    rng = np.random.default_rng(5)
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.0, 0.0, 10.0]])
    positions = rng.random((6, 3)) @ cell
    _, S = _check(positions, cell, np.array([True, True, False]), 3.5)
    assert (S[:, 2] == 0).all()
    mol = rng.uniform(0, 4, (9, 3))
    ei, S = _check(mol, np.zeros((3, 3)), np.array([False] * 3), 3.0)
    assert not S.any() and (ei[0] != ei[1]).all()
    # full list: (i, j) present iff (j, i) present
    assert set(map(tuple, ei.T)) == set(map(tuple, ei[::-1].T))


def test_dense_structure_not_truncated():
    a = bulk("Cu", "fcc", a=3.6)  # one atom per cell: all neighbours are periodic images
    cutoff = 6.0
    ei, S = _check(a.positions, a.cell.array, a.pbc, cutoff)
    # fcc shells within 6 Å (a = 3.6; 2.55, 3.6, 4.41, 5.09, 5.69 Å): 12 + 6 + 24 + 12 + 24 = 78
    assert ei.shape[1] == 78 > 32
