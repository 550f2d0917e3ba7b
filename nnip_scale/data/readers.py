"""Readers: extxyz and other ``ase.io`` formats, ASE databases (sqlite ``.db``) and ASE-LMDB
(``.aselmdb``, as OMol25/OMat24 ship them). Each yields :class:`Structure` records.

Energy / forces / stress are taken from the attached calculator results first, then from
``atoms.info`` (energy, stress) or ``atoms.arrays`` (forces) under the configured key; for
databases also from the row's key-value pairs and ``data``. Charge, spin and the group id come
from ``atoms.info`` (or the row's key-value pairs / data). Without a group key every structure
is its own group (``"<file>#<index>"``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .structure import DataError, Structure

ASE_IO_SUFFIXES = (".extxyz", ".xyz", ".traj")
DB_SUFFIXES = (".db", ".aselmdb")
SUPPORTED_SUFFIXES = ASE_IO_SUFFIXES + DB_SUFFIXES
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ReaderOptions:
    """Key names under which labels are found (see module docstring)."""

    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    group_key: str = "group"
    charge_key: str = "charge"
    spin_key: str = "spin"
    #: False: structures without energy/forces are read (as NaN), for prediction on new structures
    labels: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _dir_files(d: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(root) / f for f in files if f.lower().endswith(SUPPORTED_SUFFIXES) and not f.startswith(".")]
    return sorted(out)


def resolve_sources(paths: str | os.PathLike | Sequence[str | os.PathLike],
                    builtin_root: str | None = None) -> list[Path]:
    """Expand a file, a directory (all supported files inside, recursively, sorted), a glob,
    ``builtin:NAME`` or a list of those into a list of files (order kept, duplicates dropped)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataError("<no sources>", None, "an empty list of data sources", "at least one file, directory or glob")
    files: list[Path] = []
    for item in items:
        s = str(item)
        if s.startswith(BUILTIN_PREFIX):
            from nnip_scale.data.generate import ensure_builtin  # lazy: the generators are optional

            found = _dir_files(Path(ensure_builtin(s[len(BUILTIN_PREFIX):], root=builtin_root)))
        elif _has_magic(s):
            found = [Path(p) for p in sorted(glob.glob(s, recursive=True)) if Path(p).is_file()]
        elif Path(s).is_dir():
            found = _dir_files(Path(s))
        elif Path(s).is_file():
            found = [Path(s)]
        else:
            raise DataError(s, None, "no such file or directory", "an existing file, directory, glob or builtin:NAME")
        if not found:
            raise DataError(s, None, "no data files found",
                            f"at least one file with a suffix in {', '.join(SUPPORTED_SUFFIXES)}")
        files += found
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def read_structures(path: str | os.PathLike, options: ReaderOptions = ReaderOptions()) -> Iterator[Structure]:
    """Yield every structure of one file. Unreadable records raise :class:`DataError`."""
    p = str(path)
    low = p.lower()
    if low.endswith(".aselmdb") or low.endswith(".db"):
        yield from _read_db(p, options)
    else:
        yield from _read_ase_io(p, options)


def read_all(paths, options: ReaderOptions = ReaderOptions()) -> list[Structure]:
    """Read every structure of every resolved source into a list."""
    return [s for f in resolve_sources(paths) for s in read_structures(f, options)]


# --------------------------------------------------------------------------- helpers
def _read_ase_io(path: str, opt: ReaderOptions) -> Iterator[Structure]:
    import ase.io

    fmt = "extxyz" if path.lower().endswith((".extxyz", ".xyz")) else None
    index = 0
    try:
        it = ase.io.iread(path, index=":", format=fmt)
        for atoms in it:
            yield _from_atoms(atoms, path, index, opt, {})
            index += 1
    except DataError:
        raise
    except Exception as e:  # ase raises many types on truncated/corrupt input
        raise DataError(path, index, f"unreadable record ({type(e).__name__}: {e})",
                        f"a complete, valid {fmt or 'ASE-readable'} record (file truncated or corrupt?)") from e
    if index == 0:
        raise DataError(path, None, "the file holds no structures", "at least one structure")


def _read_db(path: str, opt: ReaderOptions) -> Iterator[Structure]:
    import ase.db

    index, db = 0, None
    try:
        if path.lower().endswith(".aselmdb"):
            db = ase.db.connect(path, type="aselmdb", readonly=True, use_lock_file=False)
        else:
            db = ase.db.connect(path, type="db", use_lock_file=False, create_indices=False)
        for row in db.select():
            extra = dict(row.get("key_value_pairs", {}) or {})
            extra.update(row.get("data", {}) or {})
            yield _from_atoms(row.toatoms(), path, index, opt, extra)
            index += 1
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, index, f"unreadable record ({type(e).__name__}: {e})",
                        "a valid ASE database record (file truncated or corrupt?)") from e
    finally:
        if db is not None and hasattr(db, "close"):
            db.close()
    if index == 0:
        raise DataError(path, None, "the database holds no structures", "at least one structure")


def _lookup(key: str, *dicts):
    for d in dicts:
        if d is not None and key in d and d[key] is not None:
            return d[key]
    return None


def _from_atoms(atoms, path: str, index: int, opt: ReaderOptions, extra: dict) -> Structure:
    results = dict(atoms.calc.results) if atoms.calc is not None and hasattr(atoms.calc, "results") else {}
    info = atoms.info
    energy = _lookup(opt.energy_key, results, info, extra)
    if energy is None and not opt.labels:
        energy = float("nan")
    if energy is None:
        raise DataError(path, index, "no energy found",
                        f"a total energy (eV) under '{opt.energy_key}' in the calculator results or atoms.info")
    forces = _lookup(opt.forces_key, results, atoms.arrays, extra)
    if forces is None and not opt.labels:
        forces = np.full((len(atoms), 3), np.nan)
    if forces is None:
        raise DataError(path, index, "no forces found",
                        f"per-atom forces (eV/Å) in the '{opt.forces_key}' array or a calculator result")
    n = len(atoms)
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (n, 3):
        raise DataError(path, index, f"forces of shape {forces.shape}", f"shape ({n}, 3)")
    try:
        energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
    except (TypeError, ValueError) as e:
        raise DataError(path, index, f"energy {energy!r} is not a number", "one total energy (eV)") from e
    stress = _lookup(opt.stress_key, results, info, extra)
    if stress is not None:
        try:
            from .structure import voigt_to_matrix

            stress = voigt_to_matrix(stress)
        except ValueError as e:
            raise DataError(path, index, str(e), "a 3x3, 9- or 6-component (Voigt) stress in eV/Å³") from e
    charge = _lookup(opt.charge_key, info, extra)
    spin = _lookup(opt.spin_key, info, extra)
    group = _lookup(opt.group_key, info, extra)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    return Structure(
        numbers=atoms.numbers, positions=atoms.positions, cell=cell, pbc=pbc, energy=energy,
        forces=forces, stress=stress, charge=int(charge) if charge is not None else 0,
        spin=int(spin) if spin is not None else 1,
        group=str(group) if group is not None else f"{path}#{index}", source=path, index=index,
    )
