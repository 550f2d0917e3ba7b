"""Test helper: build a batch dict (docs/conventions.md) from ASE Atoms with ASE's own neighbour
list, independently of nnip_scale.data (so model tests do not depend on the data layer)."""

import numpy as np
import torch
from ase.neighborlist import neighbor_list


def batch_from_atoms(atoms_list, cutoff: float, dtype=torch.float64, energies=None, forces=None) -> dict:
    numbers, positions, batch_idx, edges, shifts, cells, pbcs, counts = [], [], [], [], [], [], [], []
    offset = 0
    for s, atoms in enumerate(atoms_list):
        n = len(atoms)
        i, j, S = neighbor_list("ijS", atoms, cutoff)
        edges.append(np.stack([i, j]) + offset)
        shifts.append(S)
        numbers.append(atoms.numbers)
        positions.append(atoms.positions)
        batch_idx.append(np.full(n, s))
        cells.append(np.asarray(atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))))
        pbcs.append(atoms.pbc)
        counts.append(n)
        offset += n
    n_atoms = offset
    b = {
        "atomic_numbers": torch.as_tensor(np.concatenate(numbers), dtype=torch.long),
        "positions": torch.as_tensor(np.concatenate(positions), dtype=dtype),
        "cell": torch.as_tensor(np.stack(cells), dtype=dtype),
        "pbc": torch.as_tensor(np.stack(pbcs), dtype=torch.bool),
        "batch": torch.as_tensor(np.concatenate(batch_idx), dtype=torch.long),
        "num_atoms": torch.as_tensor(counts, dtype=torch.long),
        "edge_index": torch.as_tensor(np.concatenate(edges, axis=1), dtype=torch.long),
        "edge_shift": torch.as_tensor(np.concatenate(shifts), dtype=dtype),
        "n_atoms": n_atoms,
        "n_structures": len(atoms_list),
    }
    b["n_edges"] = int(b["edge_index"].shape[1])
    S = len(atoms_list)
    b["energy"] = torch.as_tensor(energies if energies is not None else np.zeros(S), dtype=dtype)
    b["forces"] = torch.as_tensor(forces if forces is not None else np.zeros((n_atoms, 3)), dtype=dtype)
    b["charge"] = torch.zeros(S, dtype=torch.long)
    b["spin"] = torch.ones(S, dtype=torch.long)
    b["structure_index"] = torch.arange(S)
    return b


class FakeStats:
    """Stand-in for DatasetStatistics with the attributes models read."""

    def __init__(self, elements, force_rms=1.0, avg_num_neighbors=10.0, energies=None):
        self.elements = list(elements)
        self.element_energies = np.zeros(119)
        for z in self.elements:
            self.element_energies[z] = -1.0 - 0.1 * z if energies is None else energies[z]
        self.force_rms = force_rms
        self.avg_num_neighbors = avg_num_neighbors
