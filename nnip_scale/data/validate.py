"""Per-structure validation with errors that name the file, the structure index and what was
expected."""

from __future__ import annotations

import numpy as np

from .structure import DataError, Structure

MIN_DISTANCE = 0.1  # Å: two atoms closer than this are a data error


def validate_structure(s: Structure, min_distance: float = MIN_DISTANCE, labels: bool = True) -> None:
    """Raise :class:`DataError` for empty structures, non-finite values, a periodic structure
    without a valid cell, or two atoms (periodic images included) closer than ``min_distance``.
    ``labels=False`` (structures to predict on) accepts missing (NaN) energies, forces and stress."""
    src, idx = s.source, s.index
    n = s.n_atoms
    if n == 0:
        raise DataError(src, idx, "a structure with no atoms", "at least one atom")
    if s.positions.shape != (n, 3) or s.forces.shape != (n, 3):
        raise DataError(src, idx, f"positions {s.positions.shape} / forces {s.forces.shape}", f"shape ({n}, 3)")
    if np.any(s.numbers < 1) or np.any(s.numbers > 118):
        bad = s.numbers[(s.numbers < 1) | (s.numbers > 118)][0]
        raise DataError(src, idx, f"atomic number {bad}", "atomic numbers between 1 and 118")
    if not np.isfinite(s.positions).all():
        raise DataError(src, idx, "non-finite (NaN or infinite) coordinates", "finite positions in Å")
    if labels and not np.isfinite(s.energy):
        raise DataError(src, idx, f"non-finite energy ({s.energy})", "a finite total energy in eV")
    if labels and not np.isfinite(s.forces).all():
        raise DataError(src, idx, "non-finite (NaN or infinite) forces", "finite forces in eV/Å")
    if labels and s.stress is not None and not np.isfinite(s.stress).all():
        raise DataError(src, idx, "non-finite stress", "a finite stress in eV/Å³")
    if not np.isfinite(s.cell).all():
        raise DataError(src, idx, "non-finite cell", "a finite cell in Å")
    if s.pbc.any():
        vol = abs(float(np.linalg.det(s.cell)))
        lengths = np.linalg.norm(s.cell, axis=1)
        if vol < 1e-6 * max(float(lengths.prod()), 1e-30) or vol < 1e-8:
            raise DataError(src, idx, f"periodic boundaries (pbc={s.pbc.tolist()}) with a zero or singular cell",
                            "three linearly independent lattice vectors (Å) for a periodic structure")
    check_min_distance(s, min_distance)


def check_min_distance(s: Structure, min_distance: float = MIN_DISTANCE) -> None:
    """Raise if two atoms (or an atom and a periodic image, itself included) are closer than
    ``min_distance`` Å."""
    from .neighbors import closest_pair

    if s.n_atoms < 2 and not s.pbc.any():
        return
    found = closest_pair(s.positions, s.cell, s.pbc, min_distance)
    if found is not None:
        i, j, shift, d = found
        image = "" if not shift.any() else f" (periodic image {shift.tolist()})"
        raise DataError(s.source, s.index, f"atoms {i} and {j}{image} are {d:.4f} Å apart",
                        f"all interatomic distances >= {min_distance} Å")
