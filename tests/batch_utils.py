"""Test helper: build a batch dict (docs/conventions.md) from ASE Atoms with ASE's own neighbour
list, independently of nnip_scale's neighbour lists and cache (so model tests check the models, not
the data layer's pair search); the dict itself comes from the one batch builder,
``nnip_scale.data.batching.build_batch``."""

import numpy as np
import torch
from ase.neighborlist import neighbor_list

from nnip_scale.data.batching import atoms_item, build_batch


def batch_from_atoms(atoms_list, cutoff: float, dtype=torch.float64, energies=None, forces=None) -> dict:
    """A labelled batch of ``atoms_list``: ``energies`` [S] and ``forces`` [A,3] (all atoms, in order)
    default to zeros; charge 0, spin 1, structure index = position in the list."""
    counts = [len(atoms) for atoms in atoms_list]
    energies = np.zeros(len(atoms_list)) if energies is None else np.asarray(energies, dtype=np.float64)
    forces = np.zeros((sum(counts), 3)) if forces is None else np.asarray(forces, dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    items = []
    for s, atoms in enumerate(atoms_list):
        i, j, S = neighbor_list("ijS", atoms, cutoff)
        items.append({**atoms_item(atoms, np.stack([i, j]), S), "energy": energies[s],
                      "forces": forces[bounds[s]:bounds[s + 1]], "charge": 0, "spin": 1, "index": s})
    return build_batch(items, dtype)


class FakeStats:
    """Stand-in for DatasetStatistics with the attributes models read."""

    def __init__(self, elements, force_rms=1.0, avg_num_neighbors=10.0, energies=None):
        self.elements = list(elements)
        self.element_energies = np.zeros(119)
        for z in self.elements:
            self.element_energies[z] = -1.0 - 0.1 * z if energies is None else energies[z]
        self.force_rms = force_rms
        self.avg_num_neighbors = avg_num_neighbors
