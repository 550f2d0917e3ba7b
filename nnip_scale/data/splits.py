"""Train/val/test splits by group (never by frame) and nested training subsets for data scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .structure import DataError


def split_by_group(group_ids: np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                   source: str = "<dataset>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split structure indices into (train, val, test) so no group is in two splits.

    Groups are shuffled with ``seed`` and walked in that order: a group goes to val while fewer
    than ``val_fraction`` of all structures precede it, then to test while fewer than
    ``val_fraction + test_fraction`` precede it, the rest to train (so val holds at least its
    fraction and val + test at least theirs, each overshooting by less than one group).
    A fraction of 0 gives an empty split; an empty train split is a :class:`DataError` (an empty
    test split is returned: only ``test`` needs it, and refuses it there). Returns sorted int64
    index arrays.
    """
    group_ids = np.asarray(group_ids, dtype=np.int64)
    n = len(group_ids)
    if n == 0:
        raise DataError(source, None, "an empty dataset", "at least one structure to split")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name}={f}; expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction}; expected < 1")
    uniq, inverse, counts = np.unique(group_ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    cum = np.cumsum(counts[order])
    n_val_target, n_test_target = val_fraction * n, (val_fraction + test_fraction) * n
    # group k goes to val if the structures before it are < the val target, etc.
    before = cum - counts[order]
    label_sorted = np.where(before < n_val_target, 1, np.where(before < n_test_target, 2, 0))
    label = np.empty(len(uniq), dtype=np.int64)
    label[order] = label_sorted
    per_structure = label[inverse]
    train, val, test = (np.nonzero(per_structure == k)[0] for k in (0, 1, 2))
    share = 1.0 / len(uniq)
    if len(train) == 0:
        raise DataError(source, None, f"an empty training split ({n} structures in {len(uniq)} groups)",
                        f"val_fraction + test_fraction below 1 − {share:.3g} (one group's share) or more data")
    # a positive val_fraction always gets the first group of the walk; an empty test split is not an error here: fit never uses it; `test` refuses it (datamodule)
    return train, val, test


@dataclass(frozen=True)
class Subset:
    """A nested training subset: ``indices`` (in the order of the fixed permutation),
    ``n_structures`` and ``n_atoms`` (the data tokens)."""

    indices: np.ndarray
    n_structures: int
    n_atoms: int


def nested_subset(train_indices: np.ndarray, num_atoms: np.ndarray, size: int | float | None = None,
                  atoms: int | None = None, seed: int = 0, source: str = "<training split>",
                  atom_fraction: float | None = None) -> Subset:
    """The prefix of a fixed ``seed``-permutation of ``train_indices``, so a smaller subset is
    always contained in a larger one (same seed).

    ``size``: an int number of structures or a float fraction in (0, 1]; ``atoms``: the shortest
    prefix holding at least that many atoms; ``atom_fraction`` (in (0, 1]): the shortest prefix
    holding at least that fraction of the split's atoms (1: all of it), i.e. ``atoms`` =
    ⌈fraction × the split's atoms⌉, so fraction and atom budgets of one seed are prefixes of the
    same permutation. ``num_atoms[k]`` is the atom count of ``train_indices[k]``. None given: all of
    it (still permuted). Too large: :class:`DataError`.
    """
    train_indices = np.asarray(train_indices, dtype=np.int64)
    num_atoms = np.asarray(num_atoms, dtype=np.int64)
    n = len(train_indices)
    if n == 0:
        raise DataError(source, None, "an empty training split", "at least one training structure")
    if sum(x is not None for x in (size, atoms, atom_fraction)) > 1:
        raise ValueError("give a subset as a number/fraction of structures or a number of atoms (or a fraction of "
                         "the atoms), not both")
    perm = np.random.default_rng(seed).permutation(n)
    cum = np.cumsum(num_atoms[perm])
    if atom_fraction is not None:
        if not 0.0 < atom_fraction <= 1.0:
            raise DataError(source, None, f"a subset of {atom_fraction!r} of the training atoms",
                            "a fraction in (0, 1]")
        # ⌈f·A⌉ up to float rounding (0.3 × 1000 must ask for 300 atoms, not 301)
        atoms = max(1, int(np.ceil(atom_fraction * int(cum[-1]) * (1 - 1e-12))))
    if atoms is not None:
        if atoms <= 0 or atoms > cum[-1]:
            raise DataError(source, None, f"a subset of {atoms} atoms was asked but the training split holds "
                            f"{int(cum[-1])} atoms", f"a subset size between 1 and {int(cum[-1])} atoms")
        k = int(np.searchsorted(cum, atoms, side="left")) + 1
    elif size is None:
        k = n
    elif isinstance(size, float):
        if not 0.0 < size <= 1.0:
            raise DataError(source, None, f"a subset fraction of {size}", "a fraction in (0, 1]")
        k = max(1, int(round(size * n)))
    else:
        k = int(size)
        if k <= 0 or k > n:
            raise DataError(source, None, f"a subset of {k} structures was asked but the training split holds {n}",
                            f"a subset size between 1 and {n} structures")
    chosen = perm[:k]
    return Subset(indices=train_indices[chosen], n_structures=k, n_atoms=int(cum[k - 1]))


def stratified_subset(indices: np.ndarray, group_ids: np.ndarray, num_atoms: np.ndarray,
                      structures: int | None = None, atoms: int | None = None, seed: int = 0,
                      source: str = "<validation split>") -> np.ndarray:
    """A seeded subset of ``indices`` whose groups are represented in proportion to their size.

    ``group_ids[k]`` and ``num_atoms[k]`` belong to ``indices[k]``. Give ``structures`` (count) or
    ``atoms`` (the subset holds at least that many atoms, the least prefix that does). Each group's
    share is its share of the split's structures (or atoms): quotas by largest remainders (ties and
    groups too small for a whole share resolved by a seeded draw weighted by size), and within a
    group, frames drawn by a seeded permutation. It depends only on the split and ``seed``, so
    every run of a study that shares the split validates on the same structures. Returns the
    chosen indices, sorted. Asking for more than the split holds is a :class:`DataError`.
    """
    indices = np.asarray(indices, dtype=np.int64)
    group_ids = np.asarray(group_ids, dtype=np.int64)
    num_atoms = np.asarray(num_atoms, dtype=np.int64)
    if (structures is None) == (atoms is None):
        raise ValueError("stratified_subset: give exactly one of structures= or atoms=")
    n, total_atoms = len(indices), int(num_atoms.sum())
    if n == 0:
        raise DataError(source, None, "an empty split", "structures to choose a validation subset from")
    want, total = (int(structures), n) if structures is not None else (int(atoms), total_atoms)
    unit = "structures" if structures is not None else "atoms"
    if not 0 < want <= total:
        raise DataError(source, None, f"a validation subset of {want} {unit} was asked but the split holds {total}",
                        f"a subset size between 1 and {total} {unit}")
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(group_ids, return_inverse=True)
    weight = np.bincount(inverse, weights=np.ones(n) if structures is not None else num_atoms).astype(np.float64)
    exact = want * weight / weight.sum()
    quota = np.floor(exact)
    remainder = exact - quota
    short = int(round(want - quota.sum()))
    if short > 0:  # largest remainders first, ties broken by a seeded key
        order = np.lexsort((rng.random(len(uniq)), -remainder))
        quota[order[:short]] += 1
    chosen = []
    for g in range(len(uniq)):
        members = np.flatnonzero(inverse == g)[rng.permutation(int((inverse == g).sum()))]
        if structures is not None:
            chosen.append(members[: int(quota[g])])
        else:  # the shortest prefix of the group's frames reaching its atom quota
            cum = np.cumsum(num_atoms[members])
            chosen.append(members[: int(np.searchsorted(cum, quota[g], side="left")) + (1 if quota[g] > 0 else 0)])
    picked = np.concatenate(chosen)
    if atoms is not None and num_atoms[picked].sum() < want:  # rounding across groups: top up at random
        rest = np.setdiff1d(np.arange(n), picked)[rng.permutation(n - len(picked))]
        extra = np.searchsorted(np.cumsum(num_atoms[rest]), want - num_atoms[picked].sum(), side="left") + 1
        picked = np.concatenate([picked, rest[:extra]])
    return np.sort(indices[picked])
