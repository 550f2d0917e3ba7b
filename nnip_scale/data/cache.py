"""The preprocessed on-disk cache: a directory of ``.npy`` arrays plus ``manifest.json``.

Layout of ``<cache_root>/<key>/`` (``key`` hashes the sources' absolute paths, sizes and mtimes,
the reader options and the format version):

======================  ==================  ==============================================
file                    dtype / shape       content
======================  ==================  ==============================================
``numbers.npy``         int64 [A]           atomic numbers, all structures concatenated
``positions.npy``       float64 [A,3]       Å
``forces.npy``          float64 [A,3]       eV/Å
``atom_offsets.npy``    int64 [S+1]         atoms of structure s are ``offsets[s]:offsets[s+1]``
``energy.npy``          float64 [S]         eV
``cell.npy``            float64 [S,3,3]     Å (zeros for molecules)
``pbc.npy``             bool [S,3]
``stress.npy``          float64 [S,3,3]     eV/Å³, NaN where absent (``has_stress.npy`` bool [S])
``charge.npy``          int64 [S]           ``spin.npy`` int64 [S] (multiplicity)
``group_id.npy``        int64 [S]           index into ``manifest["groups"]``
``source_id.npy``       int64 [S]           index into ``manifest["sources"]``; ``record_index.npy``
======================  ==================  ==============================================

It is built in a temporary sibling directory and renamed into place, so an error (bad data,
interruption) never leaves a half-written cache. A matching cache is memory-mapped on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .readers import ReaderOptions, read_structures, resolve_sources
from .structure import DataError, Structure
from .validate import MIN_DISTANCE, validate_structure

FORMAT_VERSION = 1
PER_STRUCTURE = ("energy", "cell", "pbc", "stress", "has_stress", "charge", "spin", "group_id", "source_id",
                 "record_index")
PER_ATOM = ("numbers", "positions", "forces")


def source_fingerprint(files: Sequence[Path], options: ReaderOptions, min_distance: float = MIN_DISTANCE) -> str:
    """Hex key of the inputs (absolute path, size, mtime of each file), options and format version."""
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"v": FORMAT_VERSION, "files": parts, "options": options.as_dict(), "min_distance": min_distance},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CachedData:
    """Memory-mapped arrays of one cache directory (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        for name in PER_ATOM + PER_STRUCTURE + ("atom_offsets",):
            setattr(self, name, np.load(self.path / f"{name}.npy", mmap_mode="r"))
        self.atom_offsets = np.asarray(self.atom_offsets)  # small; used on every access
        self.num_atoms = np.diff(self.atom_offsets)
        self.groups: list[str] = self.manifest["groups"]
        self.sources: list[str] = self.manifest["sources"]

    def __getstate__(self):  # pickle (e.g. to spawned DataLoader workers) as the path: re-mapped there
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.atom_offsets[-1])

    def structure(self, i: int) -> Structure:
        """The record ``i`` as a :class:`Structure` (copies out of the memory map)."""
        a, b = self.atom_offsets[i], self.atom_offsets[i + 1]
        return Structure(
            numbers=np.array(self.numbers[a:b]), positions=np.array(self.positions[a:b]),
            cell=np.array(self.cell[i]), pbc=np.array(self.pbc[i]), energy=float(self.energy[i]),
            forces=np.array(self.forces[a:b]), stress=np.array(self.stress[i]) if self.has_stress[i] else None,
            charge=int(self.charge[i]), spin=int(self.spin[i]), group=self.groups[int(self.group_id[i])],
            source=self.sources[int(self.source_id[i])], index=int(self.record_index[i]),
        )


def default_cache_root(files: Sequence[Path]) -> Path:
    """``<directory of the first source>/.nnip_cache``."""
    return Path(os.path.abspath(files[0])).parent / ".nnip_cache"


def load_or_build(sources, options: ReaderOptions = ReaderOptions(), cache_dir: str | os.PathLike | None = None,
                  min_distance: float = MIN_DISTANCE, builtin_root: str | None = None) -> CachedData:
    """Return the cache of ``sources`` (files / directories / globs / ``builtin:NAME``), building
    (reading + validating) it when no cache with a matching key exists."""
    files = resolve_sources(sources, builtin_root=builtin_root)
    key = source_fingerprint(files, options, min_distance)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root(files)
    final = root / key
    if (final / "manifest.json").is_file():
        return CachedData(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        _write(tmp, files, options, key, min_distance)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race: use its (identical) cache
            if not (final / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CachedData(final)


def _write(out: Path, files: Sequence[Path], options: ReaderOptions, key: str, min_distance: float) -> None:
    per_atom = {k: [] for k in PER_ATOM}
    per_s = {k: [] for k in PER_STRUCTURE}
    counts: list[int] = []
    group_ids: dict[str, int] = {}
    for sid, f in enumerate(files):
        for s in read_structures(f, options):
            validate_structure(s, min_distance, labels=options.labels)
            per_atom["numbers"].append(s.numbers)
            per_atom["positions"].append(s.positions)
            per_atom["forces"].append(s.forces)
            counts.append(s.n_atoms)
            per_s["energy"].append(s.energy)
            per_s["cell"].append(s.cell)
            per_s["pbc"].append(s.pbc)
            per_s["has_stress"].append(s.stress is not None)
            per_s["stress"].append(s.stress if s.stress is not None else np.full((3, 3), np.nan))
            per_s["charge"].append(s.charge)
            per_s["spin"].append(s.spin)
            per_s["group_id"].append(group_ids.setdefault(s.group, len(group_ids)))
            per_s["source_id"].append(sid)
            per_s["record_index"].append(s.index)
    if not counts:
        raise DataError(str(files[0]), None, "an empty dataset", "at least one structure")
    dtypes = {"energy": np.float64, "cell": np.float64, "pbc": bool, "stress": np.float64, "has_stress": bool,
              "charge": np.int64, "spin": np.int64, "group_id": np.int64, "source_id": np.int64,
              "record_index": np.int64}
    arrays = {k: np.concatenate(v) for k, v in per_atom.items()}
    arrays["numbers"] = arrays["numbers"].astype(np.int64)
    arrays.update({k: np.asarray(v, dtype=dtypes[k]) for k, v in per_s.items()})
    arrays["atom_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for name, arr in arrays.items():
        np.save(out / f"{name}.npy", np.ascontiguousarray(arr))
    manifest = {
        "format_version": FORMAT_VERSION, "key": key, "options": options.as_dict(), "min_distance": min_distance,
        "sources": [os.path.abspath(f) for f in files], "groups": list(group_ids),
        "n_structures": len(counts), "n_atoms": int(arrays["atom_offsets"][-1]),
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
