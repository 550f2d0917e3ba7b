"""Finite-difference check of stored labels: forces = −∂E/∂x and (periodic) stress = (1/V)·∂E/∂ε.

Energies are recomputed from scratch with the label's method (GFN2-xTB at tight SCF accuracy, or
EMT) at ``x ± h`` along a random sample of Cartesian coordinates of a random sample of frames.
With h = 1e-3 Å the O(h²) truncation error is ~1e-6 eV/Å and SCF noise (~1e-9 Eh) adds
< 1e-4 eV/Å, so GFN2-xTB labels should agree to ≤ 1e-3 eV/Å; EMT agrees to ~1e-6 eV/Å.
"""

from __future__ import annotations

import pathlib

import numpy as np

FD_STEP_A = 1e-3
FD_ACCURACY = 1e-3  # tblite SCC accuracy for the check (tighter than labelling)


def _calculator(frame):
    source = frame.info.get("source")
    if source == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if source == "gfn2-xtb":
        from .molecules import xtb_calculator

        return xtb_calculator(int(frame.info.get("charge", 0)), int(frame.info.get("spin", 1)),
                              accuracy=FD_ACCURACY)
    raise ValueError(f"cannot check labels of source {source!r}: expected 'gfn2-xtb' or 'emt'")


def _energy(frame, calc, positions=None, cell=None) -> float:
    atoms = frame.copy()
    if cell is not None:
        atoms.set_cell(cell, scale_atoms=True)
    if positions is not None:
        atoms.positions = positions
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def check_frame(frame, n_coords: int, rng: np.random.Generator, h: float = FD_STEP_A) -> dict:
    """Max abs errors of one labelled frame: energy (eV), forces (eV/Å), stress (eV/Å³, periodic)."""
    calc = _calculator(frame)
    e_ref, f_ref = frame.get_potential_energy(), frame.get_forces()
    out = {"energy": abs(_energy(frame, calc) - e_ref)}
    n = len(frame)
    picks = rng.choice(3 * n, size=min(n_coords, 3 * n), replace=False)
    err = 0.0
    for k in picks:
        i, d = divmod(int(k), 3)
        pos = frame.positions.copy()
        pos[i, d] += h
        e_plus = _energy(frame, calc, positions=pos)
        pos[i, d] -= 2 * h
        e_minus = _energy(frame, calc, positions=pos)
        err = max(err, abs(-(e_plus - e_minus) / (2 * h) - f_ref[i, d]))
    out["forces"] = err
    if frame.pbc.all():
        s_ref = frame.get_stress(voigt=False)
        cell, vol, err = frame.cell.array, frame.get_volume(), 0.0
        for a, b in ((0, 0), (1, 2)):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))  # symmetric strain: dE = V·σ_ab·h for both cases
                eps[a, b] = eps[b, a] = sign * (h if a == b else h / 2)
                energies.append(_energy(frame, calc, cell=cell @ (np.eye(3) + eps)))
            err = max(err, abs((energies[0] - energies[1]) / (2 * h * vol) - s_ref[a, b]))
        out["stress"] = err
    return out


def check_dataset(path, samples: int = 8, n_coords: int = 6, seed: int = 0) -> dict:
    """FD check on ``samples`` random frames of the dataset directory ``path`` (one per file drawn)."""
    import ase.io

    path = pathlib.Path(path)
    files = sorted(path.glob("*.extxyz"))
    if not files:
        raise FileNotFoundError(f"{path}: no .extxyz files to check")
    rng = np.random.default_rng(seed)
    result = {"n_frames": 0, "n_coords_per_frame": n_coords, "step_A": FD_STEP_A,
              "max_abs_energy_error_eV": 0.0, "max_abs_force_error_eV_per_A": 0.0}
    for fi in rng.choice(len(files), size=min(samples, len(files)), replace=False):
        frames = ase.io.read(files[fi], ":")
        if not frames:
            continue
        j = int(rng.integers(len(frames)))
        try:
            errs = check_frame(frames[j], n_coords, rng)
        except ValueError as err:
            raise ValueError(f"{files[fi]}: frame {j}: {err}") from err
        result["n_frames"] += 1
        result["max_abs_energy_error_eV"] = max(result["max_abs_energy_error_eV"], errs["energy"])
        result["max_abs_force_error_eV_per_A"] = max(result["max_abs_force_error_eV_per_A"], errs["forces"])
        if "stress" in errs:
            result["max_abs_stress_error_eV_per_A3"] = max(
                result.get("max_abs_stress_error_eV_per_A3", 0.0), errs["stress"])
    return result
