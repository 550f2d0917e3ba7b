"""Tiny labelled datasets for the data-layer tests (EMT on small Cu/Al clusters and periodic
cells, written with SinglePointCalculator results), plus checks of the helpers themselves."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def labelled(atoms: Atoms, group: str | None = None, stress: bool = False) -> Atoms:
    """A copy of ``atoms`` with EMT energy/forces (and stress if periodic and asked) frozen in a
    SinglePointCalculator, and ``info['group']``."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    if group is not None:
        atoms.info["group"] = group
    return atoms


def cluster(n: int, rng: np.random.Generator, symbols=("Cu", "Al")) -> Atoms:
    """A random non-periodic cluster of ``n`` atoms at least 2.2 Å apart."""
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, 2.0 * n ** (1 / 3) + 2, 3)
        if all(np.linalg.norm(p - q) > 2.2 for q in pos):
            pos.append(p)
    return Atoms(symbols=list(rng.choice(symbols, n)), positions=pos)


def periodic(rng: np.random.Generator) -> Atoms:
    """A rattled, slightly sheared fcc Cu/Al supercell (triclinic)."""
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.symbols[rng.random(len(a)) < 0.3] = "Al"
    cell = a.cell.array + rng.uniform(-0.3, 0.3, (3, 3))
    a.set_cell(cell, scale_atoms=True)
    a.rattle(0.05, seed=int(rng.integers(1 << 30)))
    return a


def trajectory_frames(n_groups: int, frames: int, seed: int = 0, periodic_every: int = 3, stress: bool = False):
    """``n_groups`` trajectories of ``frames`` rattled frames each (groups 'g0', 'g1', ...)."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        base = periodic(rng) if periodic_every and g % periodic_every == 0 else cluster(int(rng.integers(3, 9)), rng)
        for _ in range(frames):
            a = base.copy()
            a.positions += rng.normal(0, 0.03, a.positions.shape)
            out.append(labelled(a, f"g{g}", stress=stress and a.pbc.any()))
    return out


def write_extxyz(path: Path, frames) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_helper_frames_hold_emt_labels():
    frames = trajectory_frames(3, 2, seed=1)
    assert len(frames) == 6 and [f.info["group"] for f in frames] == ["g0", "g0", "g1", "g1", "g2", "g2"]
    a = frames[2].copy()
    a.calc = EMT()
    np.testing.assert_allclose(a.get_forces(), frames[2].get_forces(), atol=1e-12)
    assert frames[0].pbc.all() and not frames[2].pbc.any()
