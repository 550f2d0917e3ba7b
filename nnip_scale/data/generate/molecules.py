"""Molecular MD trajectories labelled with GFN2-xTB (tblite): ASE g2 + s22 (+ files in ``molecules/``).

Physics: Langevin MD (time step 0.5 fs, friction 0.02 fs⁻¹, seeded RNG) at each temperature, started
from the reference geometry with Maxwell-Boltzmann velocities; after ``n_equil`` steps a frame is saved
every ``stride`` steps. Labels are GFN2-xTB total energies (eV) and forces (eV/Å) from
``tblite.interface.Calculator`` (Hartree, Hartree/Bohr gradients converted with ``ase.units``),
electronic temperature 300 K (tblite default), SCF accuracy ``ACCURACY``.
A frame whose SCF does not converge even from a fresh guess ends the trajectory there (counted as
``scf_failures`` in the manifest); no frame with a bad label is written.
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

from ._common import Task, rng_for, task_seed, write_unit

ACCURACY = 0.01  # tblite SCC accuracy multiplier (1.0 default; smaller = tighter)
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.02
MOLECULE_DIR = pathlib.Path(__file__).parent / "molecules"

# size -> settings. Frames per trajectory, MD stride between saved frames, equilibration steps.
SIZES = {
    "tiny": dict(collections=("g2",), only=("H2O", "CH4", "NH3", "CH3", "NO", "O2", "HCN", "CO2"),
                 temperatures=(300.0, 1000.0), replicas=1, n_frames=8, stride=2, n_equil=4),
    "demo": dict(collections=("g2", "s22", "extra"), only=None,
                 temperatures=(300.0, 600.0, 1000.0), replicas=2, n_frames=20, stride=5, n_equil=20),
    # the demo's molecules and settings with 6 replicas (independent seeded starts) per temperature:
    # 3x the frames, enough for data budgets spanning a decade up to ~400k atoms (staircase-cpu study)
    "large": dict(collections=("g2", "s22", "extra"), only=None,
                  temperatures=(300.0, 600.0, 1000.0), replicas=6, n_frames=20, stride=5, n_equil=20),
}


class SCFFailure(RuntimeError):
    """The xTB SCF did not converge, even when restarted from the superposition-of-atoms guess."""


def multiplicity(atoms, charge: int = 0) -> int:
    """Spin multiplicity 2S+1 from the initial magnetic moments, checked against electron parity."""
    n_el = int(atoms.numbers.sum()) - charge
    uhf = int(round(abs(float(atoms.get_initial_magnetic_moments().sum()))))
    if (n_el - uhf) % 2:
        if uhf:
            raise ValueError(f"{atoms.get_chemical_formula()}: {n_el} electrons cannot have "
                             f"{uhf} unpaired electrons")
        uhf = 1
    return uhf + 1


def molecule_catalogue(collections) -> list[tuple[str, "object"]]:
    """``[(id, atoms)]`` with ids ``"g2/NAME"``, ``"s22/NAME"``, ``"extra/NAME"`` (single atoms skipped)."""
    import ase.io
    from ase.collections import g2, s22

    out = []
    for coll_name in collections:
        if coll_name == "extra":
            items = [(p.stem, ase.io.read(p)) for p in sorted(MOLECULE_DIR.glob("*.xyz"))]
        else:
            coll = {"g2": g2, "s22": s22}[coll_name]
            items = [(name, coll[name]) for name in coll.names]
        out += [(f"{coll_name}/{name}", atoms) for name, atoms in items if len(atoms) > 1]
    return out


def make_tasks(size: str, seed: int) -> list[Task]:
    cfg = SIZES[size]
    tasks = []
    for mol_id, atoms in molecule_catalogue(cfg["collections"]):
        if cfg["only"] is not None and mol_id.split("/", 1)[1] not in cfg["only"]:
            continue
        for temp in cfg["temperatures"]:
            for r in range(cfg["replicas"]):
                group = f"{mol_id}/T{int(temp)}/r{r}"
                tasks.append(Task(group, "molecule", temp, task_seed(seed, group), dict(
                    mol_id=mol_id, n_atoms=len(atoms), n_frames=cfg["n_frames"],
                    stride=cfg["stride"], n_equil=cfg["n_equil"])))
    # Largest molecules first so that the pool finishes together.
    return sorted(tasks, key=lambda t: (-t.params["n_atoms"], t.group))


def _xtb_calculator_class():
    from ase.calculators.calculator import Calculator, all_changes

    class XTBCalculator(Calculator):
        """Minimal ASE calculator over ``tblite.interface.Calculator`` (GFN2-xTB), eV and eV/Å out.

        Reuses the previous wavefunction as SCF guess; on non-convergence restarts once from scratch.
        """

        implemented_properties = ["energy", "forces"]

        def __init__(self, charge: int = 0, uhf: int = 0, accuracy: float = ACCURACY, **kw):
            super().__init__(**kw)
            self.charge, self.uhf, self.accuracy = int(charge), int(uhf), float(accuracy)
            self._tb = self._res = None
            self.n_restarts = 0

        def _new(self, atoms):
            from ase.units import Bohr
            from tblite.interface import Calculator as TB

            tb = TB("GFN2-xTB", atoms.numbers, atoms.positions / Bohr, charge=float(self.charge),
                    uhf=self.uhf)
            tb.set("verbosity", 0)
            tb.set("accuracy", self.accuracy)
            return tb

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            from ase.units import Bohr, Hartree
            from tblite.exceptions import TBLiteRuntimeError

            super().calculate(atoms, properties, system_changes)
            atoms = self.atoms
            if self._tb is None or set(system_changes) - {"positions"}:
                self._tb, self._res = self._new(atoms), None
            else:
                self._tb.update(positions=atoms.positions / Bohr)
            try:
                res = self._tb.singlepoint(self._res)
            except TBLiteRuntimeError:
                self.n_restarts += 1
                self._tb = self._new(atoms)
                try:
                    res = self._tb.singlepoint(None)
                except TBLiteRuntimeError as err:
                    self._tb = self._res = None
                    raise SCFFailure(str(err)) from err
            self._res = res
            energy = float(res.get("energy")) * Hartree
            forces = -np.asarray(res.get("gradient"), dtype=np.float64) * (Hartree / Bohr)
            if not (np.isfinite(energy) and np.isfinite(forces).all()):
                self._tb = self._res = None
                raise SCFFailure("non-finite energy or forces")
            self.results = {"energy": energy, "forces": forces}

    return XTBCalculator


def xtb_calculator(charge: int = 0, spin: int = 1, accuracy: float = ACCURACY):
    """A fresh GFN2-xTB ASE calculator for a molecule of given charge and multiplicity ``spin``."""
    return _xtb_calculator_class()(charge=charge, uhf=spin - 1, accuracy=accuracy)


def run_trajectory(args: tuple) -> dict:
    """Worker: run one Langevin trajectory, label the saved frames, write them (see ``write_unit``)."""
    task, out_dir = args
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    p = task.params
    catalogue = dict(molecule_catalogue((p["mol_id"].split("/", 1)[0],)))
    atoms = catalogue[p["mol_id"]].copy()
    atoms.center()
    spin = multiplicity(atoms)
    atoms.set_initial_magnetic_moments(None)
    calc = xtb_calculator(0, spin)
    atoms.calc = calc
    rng = rng_for(task)
    with warnings.catch_warnings():  # deprecated name in ASE 3.29; same random stream
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=task.temperature_K, rng=rng)
    Stationary(atoms)
    with np.errstate(invalid="ignore", divide="ignore"):  # linear molecules: one zero moment
        ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # no centre-of-mass drift (labels are unconstrained forces)
    dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=task.temperature_K,
                   friction=FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)
    frames, failed = [], 0
    try:
        dyn.run(p["n_equil"])
        for _ in range(p["n_frames"]):
            dyn.run(p["stride"])
            frame = atoms.copy()
            frame.arrays.pop("momenta", None)  # velocities are not labels
            frame.set_constraint()
            frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                               forces=atoms.get_forces(apply_constraint=False).copy())
            frame.info = {"group": task.group, "charge": 0, "spin": spin,
                          "temperature_K": float(task.temperature_K), "source": "gfn2-xtb"}
            frames.append(frame)
    except SCFFailure:
        failed = 1
    return write_unit(out_dir, task, frames, {"scf_failures": failed, "scf_restarts": calc.n_restarts,
                                              "spin": spin})
