"""Training-split statistics (docs/conventions.md): per-element reference energies, force RMS,
average neighbour count, residual per-atom energy spread. Saved atomically as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nnip_scale.atomic_io import atomic_write_json

from .neighbors import neighbor_list

N_ELEMENTS = 119  # index = atomic number; 0 unused


@dataclass
class DatasetStatistics:
    """``element_energies`` float64 [119] (eV/atom by Z; 0 where absent), ``elements`` sorted Z
    present, ``force_rms`` (eV/Å, RMS over all force components), ``avg_num_neighbors`` (mean
    neighbours per atom at ``cutoff`` Å), ``energy_per_atom_residual_std`` (eV/atom, std of
    (E − Σ n_Z e_Z) / n), ``n_structures``, ``n_atoms``."""

    element_energies: np.ndarray = field(default_factory=lambda: np.zeros(N_ELEMENTS))
    elements: list[int] = field(default_factory=list)
    force_rms: float = 1.0
    avg_num_neighbors: float = 1.0
    energy_per_atom_residual_std: float = 1.0
    n_structures: int = 0
    n_atoms: int = 0
    cutoff: float = 0.0

    def __repr__(self) -> str:
        e = {z: round(float(self.element_energies[z]), 6) for z in self.elements}
        return (f"DatasetStatistics(elements={self.elements}, element_energies={e}, force_rms={self.force_rms:.6g}, "
                f"avg_num_neighbors={self.avg_num_neighbors:.6g}, "
                f"energy_per_atom_residual_std={self.energy_per_atom_residual_std:.6g}, "
                f"n_structures={self.n_structures}, n_atoms={self.n_atoms}, cutoff={self.cutoff})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["element_energies"] = np.asarray(self.element_energies, dtype=np.float64).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStatistics":
        d = dict(d)
        d["element_energies"] = np.asarray(d["element_energies"], dtype=np.float64)
        d["elements"] = [int(z) for z in d["elements"]]
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (:mod:`nnip_scale.atomic_io`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetStatistics":
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit_element_energies(composition: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Least-squares e [119] with composition @ e ≈ energies. ``composition`` [S,119] atom counts.
    Absent elements get 0; a rank-deficient system gets the minimum-norm solution."""
    present = np.nonzero(composition.sum(axis=0) > 0)[0]
    e = np.zeros(N_ELEMENTS)
    if len(present):
        sol, *_ = np.linalg.lstsq(composition[:, present].astype(np.float64), energies, rcond=None)
        e[present] = sol
    return e


def compute_statistics(data, indices, cutoff: float, max_neighbor_structures: int = 2000,
                       seed: int = 0) -> DatasetStatistics:
    """Statistics of structures ``indices`` of a :class:`CachedData` (the training split). The
    neighbour count uses at most ``max_neighbor_structures`` structures drawn with ``seed``."""
    indices = np.asarray(indices, dtype=np.int64)
    offsets = np.asarray(data.atom_offsets)
    counts = offsets[indices + 1] - offsets[indices]
    starts = offsets[indices]
    # atom rows of the selected structures, and the position (0..S-1) of their structure
    struct_pos = np.repeat(np.arange(len(indices)), counts)
    atom_rows = starts[struct_pos] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    numbers = np.asarray(data.numbers[atom_rows])
    composition = np.zeros((len(indices), N_ELEMENTS))
    np.add.at(composition, (struct_pos, numbers), 1.0)
    energies = np.asarray(data.energy[indices], dtype=np.float64)
    e = fit_element_energies(composition, energies)
    residual_per_atom = (energies - composition @ e) / counts
    forces = np.asarray(data.forces[atom_rows])
    rng = np.random.default_rng(seed)
    sample = indices
    if len(indices) > max_neighbor_structures:
        sample = rng.choice(indices, max_neighbor_structures, replace=False)
    n_edges = n_at = 0
    for i in sample:
        a, b = offsets[i], offsets[i + 1]
        ei, _ = neighbor_list(np.asarray(data.positions[a:b]), np.asarray(data.cell[i]), np.asarray(data.pbc[i]),
                              cutoff)
        n_edges += ei.shape[1]
        n_at += b - a
    return DatasetStatistics(
        element_energies=e, elements=sorted(int(z) for z in np.unique(numbers)),
        force_rms=float(np.sqrt(np.mean(forces ** 2))) if forces.size else 0.0,
        avg_num_neighbors=float(n_edges / max(n_at, 1)),
        energy_per_atom_residual_std=float(residual_per_atom.std()),
        n_structures=int(len(indices)), n_atoms=int(counts.sum()), cutoff=float(cutoff),
    )
