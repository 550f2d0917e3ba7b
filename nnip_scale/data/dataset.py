"""A map-style torch Dataset over a cache; neighbour lists are built in ``__getitem__`` (so in
DataLoader workers, never in the training step)."""

from __future__ import annotations

import numpy as np
import torch.utils.data

from .cache import CachedData
from .neighbors import neighbor_list


class AtomsDataset(torch.utils.data.Dataset):
    """Structures ``indices`` (default: all) of ``data`` with neighbour lists at ``cutoff`` Å.

    Item ``k`` is a dict of numpy arrays (float64): ``numbers`` [n], ``positions`` [n,3], ``cell``
    [3,3], ``pbc`` [3], ``energy`` (), ``forces`` [n,3], ``stress`` [3,3] or None, ``charge``,
    ``spin``, ``index`` (position of the structure in ``data``), ``edge_index`` int64 [2,E],
    ``edge_shift`` [E,3]. :func:`nnip_scale.data.collate` turns a list of them into a batch.
    """

    def __init__(self, data: CachedData, indices=None, cutoff: float = 5.0):
        self.data = data
        self.indices = np.arange(len(data), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self.cutoff = float(cutoff)
        self.num_atoms = np.asarray(data.num_atoms[self.indices], dtype=np.int64)  # [len(self)]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_atoms(self) -> int:
        """Total atoms in this dataset (the data tokens)."""
        return int(self.num_atoms.sum())

    def __getitem__(self, k: int) -> dict:
        d = self.data
        i = int(self.indices[k])
        a, b = d.atom_offsets[i], d.atom_offsets[i + 1]
        positions = np.asarray(d.positions[a:b])
        cell = np.asarray(d.cell[i])
        pbc = np.asarray(d.pbc[i])
        edge_index, shifts = neighbor_list(positions, cell, pbc, self.cutoff)
        return {
            "numbers": np.asarray(d.numbers[a:b]), "positions": positions, "cell": cell, "pbc": pbc,
            "energy": d.energy[i], "forces": np.asarray(d.forces[a:b]),
            "stress": np.asarray(d.stress[i]) if d.has_stress[i] else None,
            "charge": d.charge[i], "spin": d.spin[i], "index": i,
            "edge_index": edge_index, "edge_shift": shifts,
        }
