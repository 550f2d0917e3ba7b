"""Periodic fcc alloys of Cu, Ag, Au, Ni, Pd, Pt, Al labelled with ASE's EMT (energy, forces, stress).

Each trajectory: a 2×2×2 conventional fcc supercell (32 atoms) with a random composition (unary,
binary or ternary, cycling with the system index; random fractions), the Vegard-law mean of the
elements' reference lattice constants, a random symmetric strain (|ε_ii| ≤ 4 %, |ε_ij| ≤ 2 %), then
Langevin MD (2 fs, friction 0.01 fs⁻¹) at the trajectory's temperature, one frame every ``stride``
steps after ``n_equil`` steps. Stress is ASE's convention (1/V)·∂E/∂ε in eV/Å³, stored as 3×3.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._common import Task, rng_for, task_seed, write_unit

ELEMENTS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
TIMESTEP_FS = 2.0
FRICTION_PER_FS = 0.01
SIZES = {
    "tiny": dict(n_systems=4, temperatures=(300.0, 900.0), n_frames=6, stride=2, n_equil=4),
    "demo": dict(n_systems=40, temperatures=(300.0, 600.0, 1000.0), n_frames=25, stride=5, n_equil=20),
}


def make_tasks(size: str, seed: int) -> list[Task]:
    cfg = SIZES[size]
    tasks = []
    for i in range(cfg["n_systems"]):
        for temp in cfg["temperatures"]:
            group = f"alloy/s{i:03d}/T{int(temp)}"
            tasks.append(Task(group, "alloy", temp, task_seed(seed, group), dict(
                n_elements=1 + i % 3, n_frames=cfg["n_frames"], stride=cfg["stride"],
                n_equil=cfg["n_equil"])))
    return tasks


def random_alloy(rng: np.random.Generator, n_elements: int, reps: int = 2):
    """A strained random fcc alloy supercell (``4·reps³`` atoms) drawn from ``rng``."""
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    elements = sorted(rng.choice(len(ELEMENTS), size=n_elements, replace=False))
    symbols = [ELEMENTS[e] for e in elements]
    n_atoms = 4 * reps**3
    fractions = rng.dirichlet(np.full(n_elements, 2.0))
    counts = np.maximum(1, np.round(fractions * n_atoms).astype(int))
    counts[np.argmax(counts)] += n_atoms - counts.sum()
    species = np.repeat([atomic_numbers[s] for s in symbols], counts)
    rng.shuffle(species)
    a = float(np.dot(counts, [reference_states[atomic_numbers[s]]["a"] for s in symbols]) / n_atoms)
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((reps, reps, reps))
    atoms.numbers = species
    eps = np.diag(rng.uniform(-0.04, 0.04, 3))
    off = rng.uniform(-0.02, 0.02, 3)
    eps[0, 1] = eps[1, 0] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[1, 2] = eps[2, 1] = off[2]
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def run_trajectory(args: tuple) -> dict:
    """Worker: MD of one random strained alloy with EMT; writes frames with energy, forces, stress."""
    task, out_dir = args
    from ase import units
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    p = task.params
    rng = rng_for(task)
    atoms = random_alloy(rng, p["n_elements"])
    atoms.calc = EMT()
    with warnings.catch_warnings():  # deprecated name in ASE 3.29; same random stream
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=task.temperature_K, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # no centre-of-mass drift (labels are unconstrained forces)
    dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=task.temperature_K,
                   friction=FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)
    dyn.run(p["n_equil"])
    frames = []
    for _ in range(p["n_frames"]):
        dyn.run(p["stride"])
        frame = atoms.copy()
        frame.arrays.pop("momenta", None)
        frame.set_constraint()
        frame.wrap()
        frame.calc = SinglePointCalculator(
            frame, energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(apply_constraint=False).copy(),
            stress=atoms.get_stress(voigt=False).copy())
        frame.info = {"group": task.group, "charge": 0, "spin": 1,
                      "temperature_K": float(task.temperature_K), "source": "emt"}
        frames.append(frame)
    return write_unit(out_dir, task, frames, {"scf_failures": 0, "scf_restarts": 0, "spin": 1})
