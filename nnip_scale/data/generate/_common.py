"""Shared machinery of the built-in dataset generators: seeding, atomic writes, the worker pool.

Every trajectory is one unit of work, seeded from ``(global seed, trajectory id)`` and written to
its own ``.extxyz`` file (temp file + rename) plus a small sidecar ``meta/<file>.json`` with its
counts; a unit is done when both exist, so a killed generation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nnip_scale import atomic_io
from nnip_scale.envvars import environment

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_STACKSIZE")


@dataclass(frozen=True)
class Task:
    """One trajectory to generate. ``group`` is the trajectory id, e.g. ``"g2/CH4/T600/r0"``."""

    group: str
    kind: str  # "molecule" or "alloy"
    temperature_K: float
    seed: int  # derived from (global seed, group)
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def filename(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", self.group.replace("/", "__")) + ".extxyz"


def task_seed(global_seed: int, group: str) -> int:
    """Deterministic 63-bit seed of one trajectory (independent of the order of tasks)."""
    digest = hashlib.sha256(f"{int(global_seed)}|{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def atomic_write_json(path: pathlib.Path, obj) -> None:
    """The generators' JSON files (indented, sorted keys, a final newline), written atomically."""
    atomic_io.atomic_write_json(path, obj, indent=2, sort_keys=True, trailing_newline=True)


def frames_to_extxyz(frames) -> bytes:
    """Serialise labelled ``ase.Atoms`` (SinglePointCalculator attached) to extxyz bytes."""
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return buf.getvalue().encode()


def single_thread_env() -> dict:
    """Environment settings that make numerical libraries use one thread (bit-reproducible labels)."""
    return {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OMP_STACKSIZE": os.environ.get("OMP_STACKSIZE", "256M")}


def is_done(out_dir: pathlib.Path, task: Task) -> bool:
    return (out_dir / task.filename).is_file() and (out_dir / "meta" / (task.filename + ".json")).is_file()


def write_unit(out_dir: pathlib.Path, task: Task, frames, stats: dict) -> dict:
    """Write one finished trajectory atomically (extxyz first, then its sidecar) and return stats."""
    data = frames_to_extxyz(frames)
    atomic_io.atomic_write_bytes(out_dir / task.filename, data)
    stats = dict(stats, file=task.filename, group=task.group,
                 sha256=hashlib.sha256(data).hexdigest(),
                 n_structures=len(frames), n_atoms=int(sum(len(f) for f in frames)))
    atomic_write_json(out_dir / "meta" / (task.filename + ".json"), stats)
    return stats


def run_tasks(worker: Callable[[tuple], dict], tasks: list[Task], out_dir: pathlib.Path,
              workers: int, desc: str, progress: bool = True) -> list[dict]:
    """Run ``worker((task, out_dir))`` for every unfinished task; returns the stats of all tasks.

    Uses a spawn ``multiprocessing`` pool of ``workers`` children that start with one thread per
    numerical library, so labels are bit-identical whatever the number of workers.
    """
    from tqdm.auto import tqdm

    (out_dir / "meta").mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if not is_done(out_dir, t)]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, unit="traj",
               disable=not progress, dynamic_ncols=True)
    try:
        if todo:
            # Always fresh spawned children, even for one worker: this process may already have
            # loaded an OpenMP runtime with more threads (torch), which would change label bits.
            import multiprocessing as mp

            # inherited by spawned children before any import
            with environment(single_thread_env()), mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
                # Tasks come sorted by decreasing cost, which keeps the pool busy to the end.
                for _ in pool.imap_unordered(worker, [(t, out_dir) for t in todo], chunksize=1):
                    bar.update(1)
    finally:
        bar.close()
    return [json.loads((out_dir / "meta" / (t.filename + ".json")).read_text()) for t in tasks]


def rng_for(task: Task) -> np.random.Generator:
    return np.random.default_rng(task.seed)
