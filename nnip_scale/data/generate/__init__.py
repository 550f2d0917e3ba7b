"""Built-in datasets generated offline: GFN2-xTB molecular MD (g2 + s22) and EMT fcc alloys.

``ensure_builtin("molecules-demo")`` returns ``ROOT/molecules-demo`` after generating it if its
``manifest.json`` is missing (resuming partial work); ROOT is resolved by :func:`resolve_root`
($NNIP_SCALE_DATA, else ./data if it holds the dataset, else ~/.cache/nnip-scale/data) and one line
on stderr says where and why. A dataset directory holds one ``.extxyz``
per trajectory (energy eV, forces eV/Å, stress eV/Å³ for alloys; ``info``: group, charge, spin,
temperature_K, source), ``meta/*.json`` per-trajectory counts, and ``manifest.json`` written last.
Importing this package is cheap: ASE/tblite are imported inside the generators. See docs/datasets.md.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time

BUILTIN = {
    "molecules-tiny": ("molecules", "tiny"),
    "molecules-demo": ("molecules", "demo"),
    "molecules-large": ("molecules", "large"),
    "alloys-tiny": ("alloys", "tiny"),
    "alloys-demo": ("alloys", "demo"),
}
DEFAULT_SEED = 0
FD_SAMPLES = {"tiny": 3, "demo": 8, "large": 8}
#: generation wall on 2 cores, measured (docs/datasets.md): said when a dataset is generated
EXPECTED = {"molecules-tiny": "seconds", "molecules-demo": "~2-6 min", "molecules-large": "~6-18 min",
            "alloys-tiny": "seconds", "alloys-demo": "~1.5 min"}

__all__ = ["BUILTIN", "default_root", "ensure_builtin", "generate", "read_manifest", "resolve_root", "user_data_dir"]


def user_data_dir() -> pathlib.Path:
    """The per-user home of built-in datasets: ``${XDG_CACHE_HOME:-~/.cache}/nnip-scale/data``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "nnip-scale" / "data"


def resolve_root(name: str | None = None) -> tuple[pathlib.Path, str]:
    """Where built-in datasets are read or generated, and why, decided once per call in this order:
    ``$NNIP_SCALE_DATA``; ``./data`` of the working directory when it already holds ``name`` (a
    checkout that generated it there before); else :func:`user_data_dir`, one place per user
    whatever the working directory (so a run from another folder never regenerates silently)."""
    env = os.environ.get("NNIP_SCALE_DATA")
    if env:
        return pathlib.Path(env), "from $NNIP_SCALE_DATA"
    local = pathlib.Path("data")
    if name is not None and (local / name).is_dir():
        return local, "found in ./data of the working directory"
    return user_data_dir(), "the user data directory; set NNIP_SCALE_DATA to use another"


def default_root() -> pathlib.Path:
    """:func:`resolve_root` without a dataset name: ``$NNIP_SCALE_DATA``, else the user data directory."""
    return resolve_root()[0]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def read_manifest(path) -> dict | None:
    """The manifest of dataset directory ``path``, or None when it is incomplete (no manifest)."""
    mf = pathlib.Path(path) / "manifest.json"
    return json.loads(mf.read_text()) if mf.is_file() else None


def _module(kind: str):
    if kind == "molecules":
        from . import molecules as mod
    elif kind == "alloys":
        from . import alloys as mod
    else:
        raise ValueError(f"unknown dataset kind {kind!r}: expected 'molecules' or 'alloys'")
    return mod


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("ase", "numpy", "tblite"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _prepare_dir(out: pathlib.Path, params: dict) -> None:
    """Create ``out`` (clear error if impossible) and pin its generation parameters."""
    try:
        (out / "meta").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write dataset directory {out}: {err.strerror or err}") from err
    pin = out / "meta" / "params.json"
    if pin.is_file():
        old = json.loads(pin.read_text())
        if old != params:
            raise ValueError(f"{out} holds a partial dataset generated with {old}, not {params}; "
                             "use another --root or delete the directory")
    else:
        from ._common import atomic_write_json

        atomic_write_json(pin, params)


def generate(kind: str, size: str, root=None, seed: int = DEFAULT_SEED, workers: int | None = None,
             progress: bool = True, fd_samples: int | None = None) -> pathlib.Path:
    """Generate (or finish) builtin dataset ``{kind}-{size}`` under ``root``; returns its directory.

    Deterministic by ``seed``; finished trajectories are skipped, so a killed run resumes.
    """
    from ._common import atomic_write_json, run_tasks
    from .check import check_dataset

    mod = _module(kind)
    if size not in mod.SIZES:
        raise ValueError(f"unknown size {size!r} for {kind}: expected one of {sorted(mod.SIZES)}")
    name = f"{kind}-{size}"
    out = pathlib.Path(root if root is not None else resolve_root(name)[0]) / name
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest["seed"] != seed:
            raise ValueError(f"{out} is complete with seed {manifest['seed']}, not {seed}; "
                             "use another --root or delete the directory")
        return out
    _prepare_dir(out, {"name": name, "seed": int(seed)})
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    tasks = mod.make_tasks(size, seed)
    n_done_before = sum((out / t.filename).is_file() for t in tasks)
    stats = run_tasks(mod.run_trajectory, tasks, out, workers, desc=name, progress=progress)
    t_gen = time.perf_counter() - t0
    names = {t.filename for t in tasks}
    stray = sorted(p.name for p in out.glob("*.extxyz") if p.name not in names)
    if stray:
        raise ValueError(f"{out}: unexpected files {stray[:5]} that this generator did not write")
    fd = check_dataset(out, samples=fd_samples if fd_samples is not None else FD_SAMPLES[size], seed=seed)
    n_struct = sum(s["n_structures"] for s in stats)
    n_atoms = sum(s["n_atoms"] for s in stats)
    manifest = {
        "name": name, "kind": kind, "size": size, "seed": int(seed), "format": "extxyz",
        "source": "gfn2-xtb" if kind == "molecules" else "emt",
        "n_trajectories": len(stats), "n_structures": n_struct, "n_atoms": n_atoms,
        "mean_atoms_per_structure": n_atoms / max(n_struct, 1),
        "scf_failures": sum(s["scf_failures"] for s in stats),
        "scf_restarts": sum(s["scf_restarts"] for s in stats),
        "open_shell_trajectories": sum(s["spin"] > 1 for s in stats),
        "generation_time_s": round(t_gen, 2), "workers": workers,
        "resumed_trajectories": n_done_before,
        "settings": {k: v for k, v in vars(mod).items() if k.isupper() and isinstance(v, (int, float, str))}
        | {"size": {k: list(v) if isinstance(v, tuple) else v for k, v in mod.SIZES[size].items()}},
        "versions": _versions(),
        "fd_check": fd,
        "files": [{"file": s["file"], "group": s["group"], "n_structures": s["n_structures"],
                   "sha256": s["sha256"]} for s in stats],
    }
    atomic_write_json(out / "manifest.json", manifest)
    return out


def ensure_builtin(name: str, root=None, workers: int | None = None) -> pathlib.Path:
    """``ROOT/NAME`` for a builtin dataset name, generating (or resuming) it when incomplete."""
    if name not in BUILTIN:
        raise ValueError(f"unknown builtin dataset {name!r}: expected one of {sorted(BUILTIN)}")
    kind, size = BUILTIN[name]
    root, why = (pathlib.Path(root), "data.builtin_root") if root is not None else resolve_root(name)
    out = root / name
    if read_manifest(out) is not None:
        _say(f"builtin:{name}: reading {out.resolve()} ({why})")
        return out
    partial = out.is_dir()
    _say(f"builtin:{name}: {'resuming' if partial else 'generating'} it in {out.resolve()} ({why}); "
         f"{EXPECTED.get(name, 'minutes')} on 2 cores, once")
    return generate(kind, size, root=root, seed=DEFAULT_SEED, workers=workers)


_SAID: set[str] = set()


def _say(line: str) -> None:
    """Say ``line`` on stderr, once per process (the data module loads its sources more than once)."""
    import sys

    if line not in _SAID:
        _SAID.add(line)
        print(f"nnip-scale: {line}", file=sys.stderr, flush=True)
