"""Small labelled datasets for tests that train: rattled fcc Cu cells labelled with ASE's EMT."""

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write


def _labelled(atoms, group: str):
    atoms.calc = EMT()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    atoms.info["group"] = group
    return atoms


def write_cu_emt(path: Path, groups: int, per_group: int, seed: int) -> Path:
    """``groups`` × ``per_group`` 4-atom Cu cells (rattled 0.05 Å) with EMT energy and forces and
    ``info["group"]`` = ``g<k>`` (splits are by group), written as extxyz to ``path``."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(groups):
        for _ in range(per_group):
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            frames.append(_labelled(a, f"g{g}"))
    write(path, frames, format="extxyz")
    return path


def write_cual_emt(path: Path, groups: int = 10, per_group: int = 8, seed: int = 0) -> Path:
    """Rattled 8-atom fcc Cu/Al cells (periodic, ~30 % Al, lattice constant jittered per group)
    labelled with EMT: ``groups`` × ``per_group`` frames, ``info["group"]`` = ``cell<k>``."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(groups):
        base = bulk("Cu", "fcc", a=3.6 + 0.05 * rng.standard_normal(), cubic=True).repeat((2, 1, 1))
        base.numbers[rng.random(len(base)) < 0.3] = 13
        for _ in range(per_group):
            a = base.copy()
            a.rattle(0.08, seed=int(rng.integers(1 << 30)))
            frames.append(_labelled(a, f"cell{g}"))
    write(path, frames, format="extxyz")
    return path
