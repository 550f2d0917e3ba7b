"""Group splits (no group in two splits, seeded) and nested subsets (prefixes of one permutation)."""

import numpy as np
import pytest

from nnip_scale.data import nested_subset, split_by_group


def _groups(n_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_groups), rng.integers(1, 6, n_groups))


def test_split_by_group_disjoint_complete_seeded():
    g = _groups()
    train, val, test = split_by_group(g, 0.1, 0.2, seed=3)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(g)))
    gs = [set(g[x].tolist()) for x in (train, val, test)]
    assert not (gs[0] & gs[1]) and not (gs[0] & gs[2]) and not (gs[1] & gs[2])
    # whole groups fill val up to >= 10 %, then val + test up to >= 30 %, overshooting by less than a group
    n, nv, nvt = len(g), len(val), len(val) + len(test)
    assert 0.1 * n <= nv < 0.1 * n + 5 and 0.3 * n <= nvt < 0.3 * n + 5 and len(test) > 0
    again = split_by_group(g, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = split_by_group(g, 0.1, 0.2, seed=4)
    assert not np.array_equal(other[1], val)
    t0, v0, s0 = split_by_group(g, 0.0, 0.0)
    assert len(v0) == len(s0) == 0 and len(t0) == len(g)


def test_nested_subsets_are_prefixes():
    train = np.arange(100, 160)
    atoms = np.arange(60) % 7 + 3
    small = nested_subset(train, atoms, size=10, seed=1)
    mid = nested_subset(train, atoms, size=0.5, seed=1)
    full = nested_subset(train, atoms, seed=1)
    assert (small.n_structures, mid.n_structures, full.n_structures) == (10, 30, 60)
    np.testing.assert_array_equal(mid.indices[:10], small.indices)
    np.testing.assert_array_equal(full.indices[:30], mid.indices)
    assert sorted(full.indices.tolist()) == train.tolist()
    assert small.n_atoms == int(atoms[small.indices - 100].sum())
    by_atoms = nested_subset(train, atoms, atoms=50, seed=1)
    # the shortest prefix holding >= 50 atoms
    cum = np.cumsum(atoms[full.indices - 100])
    k = int(np.argmax(cum >= 50)) + 1
    assert by_atoms.n_structures == k and by_atoms.n_atoms == cum[k - 1] >= 50 > cum[k - 2]
    np.testing.assert_array_equal(by_atoms.indices, full.indices[:k])
    assert np.array_equal(nested_subset(train, atoms, size=10, seed=1).indices, small.indices)
    assert not np.array_equal(nested_subset(train, atoms, size=10, seed=2).indices, small.indices)
    with pytest.raises(ValueError, match="not both"):
        nested_subset(train, atoms, size=3, atoms=10)


def test_stratified_subset_covers_groups_in_proportion():
    from nnip_scale.data import stratified_subset
    from nnip_scale.data.structure import DataError

    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 60, 30)  # 30 groups (trajectories) of 5..59 frames, in file order
    groups = np.repeat(np.arange(30), sizes)
    atoms = np.repeat(rng.integers(3, 20, 30), sizes)  # one molecule per group: its atom count
    idx = np.arange(len(groups)) + 1000
    k = len(groups) // 5
    chosen = stratified_subset(idx, groups, atoms, structures=k, seed=1)
    assert len(chosen) == k and len(np.unique(chosen)) == k and np.isin(chosen, idx).all()
    counts = np.bincount(groups[chosen - 1000], minlength=30)
    assert np.all(np.abs(counts - k * sizes / sizes.sum()) < 1.0)  # each group within one frame of its share
    # unlike the first k in file order (what limit_val_batches validates), which covers few groups
    assert (counts > 0).sum() == 30 and len(np.unique(groups[:k])) <= 10
    assert np.array_equal(chosen, stratified_subset(idx, groups, atoms, structures=k, seed=1))
    assert not np.array_equal(chosen, stratified_subset(idx, groups, atoms, structures=k, seed=2))
    # by atoms: at least the budget, each group's atoms within one structure of its share
    budget = int(atoms.sum() // 4)
    by_atoms = stratified_subset(idx, groups, atoms, atoms=budget, seed=0)
    got = np.bincount(groups[by_atoms - 1000], weights=atoms[by_atoms - 1000], minlength=30)
    share = budget * np.bincount(groups, weights=atoms) / atoms.sum()
    per_structure = np.bincount(groups, weights=atoms) / sizes
    assert atoms[by_atoms - 1000].sum() >= budget
    assert np.all(np.abs(got - share) <= 2 * per_structure + 1e-9)
    with pytest.raises(DataError, match="a validation subset of 99999 structures was asked"):
        stratified_subset(idx, groups, atoms, structures=99999)
