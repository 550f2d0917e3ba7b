"""Exact neighbour lists (full list, both directions, periodic images, no truncation) via vesin."""

from __future__ import annotations

import numpy as np
import vesin

_CACHE: dict[float, "vesin.NeighborList"] = {}


def _calculator(cutoff: float) -> "vesin.NeighborList":
    nl = _CACHE.get(cutoff)
    if nl is None:
        nl = _CACHE[cutoff] = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    return nl


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                  cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j, S) with |pos[j] − pos[i] + S @ cell| < cutoff, i ≠ j or S ≠ 0.

    positions float64 [n,3] Å; cell [3,3] (rows are lattice vectors, ignored along non-periodic
    directions); pbc bool [3]. Returns ``edge_index`` int64 [2,E] (row 0 = centre i, row 1 =
    neighbour j) and ``shifts`` float64 [E,3] (integer cell shifts). Every neighbour within the
    cutoff is returned: there is no maximum neighbour count.
    """
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if pbc.any():
        box = np.ascontiguousarray(cell, dtype=np.float64)
        periodic = pbc.tolist() if not pbc.all() else True
    else:
        box = np.zeros((3, 3))
        periodic = False
    i, j, S = _calculator(cutoff).compute(positions, box, periodic, quantities="ijS", copy=True)
    edge_index = np.stack([i.astype(np.int64, copy=False), j.astype(np.int64, copy=False)])
    return edge_index, S.astype(np.float64, copy=False)


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, below: float):
    """The closest pair ``(i, j, S, distance)`` among pairs closer than ``below`` Å (periodic
    images included), or None. Searches with a 1 Å cell list (a tiny search cutoff would make
    the cell list huge and slow)."""
    pbc = np.asarray(pbc, dtype=bool)
    search = max(float(below), 1.0)
    box = np.ascontiguousarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    periodic = (pbc.tolist() if not pbc.all() else True) if pbc.any() else False
    i, j, S, d = _calculator(search).compute(np.ascontiguousarray(positions, dtype=np.float64), box, periodic,
                                             quantities="ijSd", copy=True)
    if len(d) == 0 or d.min() >= below:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), S[k].astype(np.int64), float(d[k])


def brute_force_neighbor_list(positions, cell, pbc, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """O(n² · images) reference of :func:`neighbor_list` (for tests; slow). Output sorted by
    (i, j, S)."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    reps = np.zeros(3, dtype=int)
    if pbc.any():
        inv = np.linalg.inv(cell)
        # number of images along a: cutoff / (distance between lattice planes) + 1
        heights = 1.0 / np.linalg.norm(inv, axis=0)
        extent = np.ptp(positions @ inv, axis=0) if len(positions) else np.zeros(3)
        reps = np.where(pbc, np.ceil(cutoff / heights + extent).astype(int) + 1, 0)
    rows = []
    n = len(positions)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reps], indexing="ij")
    for S in np.stack([g.ravel() for g in grids], axis=1):
        d = positions[None, :, :] - positions[:, None, :] + S @ cell
        dist = np.linalg.norm(d, axis=-1)
        mask = dist < cutoff
        if not S.any():
            mask &= ~np.eye(n, dtype=bool)
        ii, jj = np.nonzero(mask)
        rows += [(a, b, *S) for a, b in zip(ii, jj)]
    arr = np.array(sorted(rows), dtype=np.int64).reshape(-1, 5)
    return arr[:, :2].T.copy(), arr[:, 2:].astype(np.float64)
