"""Small labelled datasets for tests that train: rattled fcc Cu cells labelled with ASE's EMT."""

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write


def write_cu_emt(path: Path, groups: int, per_group: int, seed: int) -> Path:
    """``groups`` × ``per_group`` 4-atom Cu cells (rattled 0.05 Å) with EMT energy and forces and
    ``info["group"]`` = ``g<k>`` (splits are by group), written as extxyz to ``path``."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(groups):
        for _ in range(per_group):
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            a.calc = EMT()
            e, f = a.get_potential_energy(), a.get_forces()
            a.calc = SinglePointCalculator(a, energy=e, forces=f)
            a.info["group"] = f"g{g}"
            frames.append(a)
    write(path, frames, format="extxyz")
    return path
