"""Small labelled datasets for tests that train: rattled fcc Cu (or Cu/Al) cells labelled with ASE's EMT.

One writer, :func:`write_emt`; :func:`write_cu_emt` and :func:`write_cual_emt` are its two presets.
Tests get them through the session fixture ``emt_dataset`` of ``tests/conftest.py`` (generated once per
session and arguments) rather than calling the writers themselves.
"""

from pathlib import Path

import numpy as np
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write


def label_emt(atoms, group: str):
    """``atoms`` with its EMT energy and forces frozen in a SinglePointCalculator and ``info["group"]``."""
    atoms.calc = EMT()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    atoms.info["group"] = group
    return atoms


def write_emt(
    path: Path,
    *,
    groups: int,
    per_group: int,
    seed: int,
    rattle: float,
    al_fraction: float = 0.0,
    a_jitter: float = 0.0,
    repeat: tuple[int, int, int] = (1, 1, 1),
    group_prefix: str = "g",
) -> Path:
    """``groups`` × ``per_group`` frames written as extxyz to ``path``: per group one cubic fcc Cu cell
    (lattice constant 3.6 Å + ``a_jitter``·N(0, 1), repeated ``repeat``, each site Al with probability
    ``al_fraction``), per frame that cell rattled by ``rattle`` Å, labelled with EMT energy and forces and
    ``info["group"]`` = ``<group_prefix><k>`` (splits are by group). Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(groups):
        a0 = 3.6 + a_jitter * rng.standard_normal() if a_jitter else 3.6
        base = bulk("Cu", "fcc", a=a0, cubic=True).repeat(repeat)
        if al_fraction:
            base.numbers[rng.random(len(base)) < al_fraction] = 13
        for _ in range(per_group):
            a = base.copy()
            a.rattle(rattle, seed=int(rng.integers(1 << 30)))
            frames.append(label_emt(a, f"{group_prefix}{g}"))
    write(path, frames, format="extxyz")
    return path


def write_emt_molecules(path: Path, specs, rattle: float) -> Path:
    """Small molecules (non-periodic) labelled with EMT, one frame per ``(name, rattle_seed, group)`` of
    ``specs``: ASE's ``molecule(name)`` rattled by ``rattle`` Å with that seed. Written as extxyz."""
    frames = []
    for name, seed, group in specs:
        a = molecule(name)
        a.rattle(rattle, seed=int(seed))
        frames.append(label_emt(a, group))
    write(path, frames, format="extxyz")
    return path


def write_cu_emt(path: Path, groups: int, per_group: int, seed: int) -> Path:
    """4-atom Cu cells rattled 0.05 Å, groups ``g<k>``."""
    return write_emt(path, groups=groups, per_group=per_group, seed=seed, rattle=0.05)


def write_cual_emt(path: Path, groups: int = 10, per_group: int = 8, seed: int = 0) -> Path:
    """8-atom Cu/Al cells (periodic, ~30 % Al, lattice constant jittered per group) rattled 0.08 Å,
    groups ``cell<k>``."""
    return write_emt(
        path, groups=groups, per_group=per_group, seed=seed, rattle=0.08,
        al_fraction=0.3, a_jitter=0.05, repeat=(2, 1, 1), group_prefix="cell",
    )
