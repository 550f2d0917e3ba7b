"""The structure record and the data-layer error type (see docs/conventions.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file, the structure index and what was expected."""

    def __init__(self, source: str, index: int | None, problem: str, expected: str):
        where = f"{source}: structure {index}" if index is not None else f"{source}"
        super().__init__(f"{where}: {problem}; expected {expected}")
        self.source, self.index, self.problem, self.expected = source, index, problem, expected


@dataclass
class Structure:
    """One labelled structure. Units: Å, eV, eV/Å, eV/Å³.

    ``numbers`` int64 [n]; ``positions`` float64 [n,3]; ``cell`` float64 [3,3] (rows are lattice
    vectors, zeros when non-periodic); ``pbc`` bool [3]; ``energy`` total energy (eV);
    ``forces`` float64 [n,3]; ``stress`` float64 [3,3] or None; ``charge`` (e); ``spin``
    multiplicity 2S+1; ``group`` trajectory/molecule id; ``source``/``index`` locate the record.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None
    charge: int = 0
    spin: int = 1
    group: str = ""
    source: str = ""
    index: int = 0

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.stress is not None:
            self.stress = voigt_to_matrix(np.asarray(self.stress, dtype=np.float64))
        self.energy = float(self.energy)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


def voigt_to_matrix(stress: np.ndarray) -> np.ndarray:
    """Stress as a 3x3 matrix from a 3x3 matrix, a flat 9-vector or ASE's 6-vector Voigt form
    (xx, yy, zz, yz, xz, xy)."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (3, 3):
        return s
    s = s.reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"stress with {s.size} components; expected 3x3, 9 or 6 (Voigt) values")
