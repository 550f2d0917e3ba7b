"""Run a study's grid: locally (one after another, or several at once), resumably.

Each run lives in its own folder: ``config.yaml`` (the composed LightningCLI config, saved by
LightningCLI), ``checkpoints/last.ckpt``, ``tb/version_0/`` (TensorBoard logs and the compute
ledger ``ledger.jsonl``) and, once finished, ``DONE.json``. Rerunning the study skips finished runs
and resumes a killed one from its last checkpoint (the ledger drops rows past that checkpoint).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from nnip_scale.atomic_io import atomic_write_json
from nnip_scale.ledger_format import LEDGER_FILENAME, read_rows
from nnip_scale.study.plan import RunSpec, Study, StudyError


def ledger_path(run: RunSpec) -> Path:
    return run.folder / "tb" / "version_0" / LEDGER_FILENAME


def is_done(run: RunSpec) -> bool:
    return (run.folder / "DONE.json").is_file()


def fingerprint(run: RunSpec) -> str:
    """A digest of the run's composed arguments (its folder written as ``<run>``, so a moved study
    keeps its fingerprints): a run trained under other arguments than the plan gives now (an edited
    study file, a new LR-sweep choice) is stale, never silently reused."""
    import hashlib

    folder = str(run.folder)
    text = "\n".join(a.replace(folder, "<run>") for a in run.args)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale_reason(run: RunSpec) -> str | None:
    """Why ``run``'s folder holds training under other settings than the plan's (None if it does not,
    or if the run has not started). Reads ``run.json`` (written when the run starts) or ``DONE.json``."""
    if getattr(run, "pending", False):
        return None
    for name in ("DONE.json", "run.json"):
        path = run.folder / name
        if not path.is_file():
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            return f"{path} cannot be read ({err})"
        if "fingerprint" in rec:
            if rec["fingerprint"] == fingerprint(run):
                return None
            old = rec.get("eta_star")
            if old is not None and run.arch.lr is not None and abs(old - run.arch.lr) > 1e-12 * max(old, run.arch.lr):
                return f"trained with η*={old:g}, the plan now gives η*={run.arch.lr:g}"
            return "trained with other arguments than the plan now gives (the study file changed since)"
        if "lr" in rec and run.arch.lr is not None:  # a run finished before fingerprints: its LR at least
            if abs(rec["lr"] - run.lr) > 1e-12 * max(rec["lr"], run.lr):
                return f"trained with learning rate {rec['lr']:g}, the plan now gives {run.lr:g}"
        return None
    return None


def prepare_data(study: Study, log=print) -> dict:
    """Pre-flight, once for the whole grid: generate a missing built-in dataset, build the cache
    and check that the largest data budget fits the training split for every seed, so a bad study
    fails before any run starts (and parallel runs never generate the same data twice).

    The budgets checked are the largest atom count of the grid and of the LR sweep, and in a
    ``data.fraction`` study the largest fraction, which is resolved here into atoms (a fraction
    always fits; what is checked is that the data loads, and the sweep's atoms)."""
    from nnip_scale.data import AtomsDataModule
    from nnip_scale.data.structure import DataError

    cfg = dict(study.data_config)
    if "train" not in cfg:
        raise StudyError(f"{study.path}: no training data: expected data.train in a base config or in overrides")
    runs = study.all_runs
    checks = []  # (AtomsDataModule subset arguments, the budget in words)
    atoms = [r.budget_atoms for r in runs if r.budget_fraction is None]
    fractions = [r.budget_fraction for r in runs if r.budget_fraction is not None]
    if fractions:
        largest = max(fractions)
        checks.append(({"subset_fraction": largest}, f"{round(100 * largest, 6):g} % of the training atoms"))
    if atoms:
        checks.append(({"subset_atoms": max(atoms)}, f"{max(atoms):,} atoms"))
    summary = {}
    for seed in sorted({r.seed for r in runs}):
        for subset, what in checks:
            try:
                dm = AtomsDataModule(**{**cfg, "subset": None, "subset_atoms": None, "subset_fraction": None,
                                        **subset, "subset_seed": seed})
                dm.prepare_data()
                dm.setup("fit")
            except TypeError as err:
                raise StudyError(f"{study.path}: the data options {sorted(cfg)} do not fit AtomsDataModule "
                                 f"({err})") from err
            except (DataError, ValueError, OSError) as err:
                raise StudyError(f"{study.path}: data pre-flight failed for the largest budget ({what}, "
                                 f"seed {seed}): {err}") from err
            if not summary or "subset_fraction" in subset:
                summary = {"train_structures": len(dm.train_dataset), "largest_budget_atoms": dm.n_train_atoms,
                           "val_structures": len(dm.val_dataset), "train_split_atoms": dm.train_split_atoms,
                           "largest_budget": what}
    log(f"[study] data ready: the largest budget ({summary['largest_budget']}"
        + (f" = {summary['largest_budget_atoms']:,} atoms" if fractions else "")
        + f") is {summary['train_structures']:,} training structures; {summary['val_structures']:,} validation "
          f"structures")
    return summary


def move_stale(study: Study, runs: list[RunSpec], log=print) -> None:
    """Move the folders of stale ``runs`` to ``<study>/stale/<run id>.<UTC time>`` (kept, not
    deleted), so they train again from scratch under the plan's settings."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for run in runs:
        why = stale_reason(run)
        dest = study.folder / "stale" / f"{run.run_id}.{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run.folder, dest)
        log(f"[study] {run.run_id} {why}: moved to {dest}; it trains again")


def _last_error(log_file: Path) -> str:
    """The last line of a failed run's log that names an error (for the study's own output)."""
    try:
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if "Error" in ln or "error:" in ln or "Exception" in ln:
            return ln[:500]
    return lines[-1][:500] if lines else ""


def run_args(run: RunSpec, devices: int | None = None, nodes: int = 1, gpu: bool = False) -> list[str]:
    """The ``nnip-scale fit`` arguments of ``run``, resuming from its newest checkpoint if there is
    one (``last.ckpt``, or a SLURM pre-emption checkpoint ``hpc_ckpt_<n>.ckpt`` that Lightning saved
    on SIGUSR1). ``devices``/``nodes`` > 1 make it a DDP run (``configs/trainer/ddp.yaml``
    semantics); ``gpu`` sets ``trainer.accelerator=gpu`` (``study --devices``)."""
    args = list(run.args)
    if gpu:
        args.append("--trainer.accelerator=gpu")
    if devices is not None:
        args += [f"--trainer.devices={devices}", f"--trainer.num_nodes={nodes}"]
        if devices * nodes > 1:
            args += ["--trainer.strategy=ddp", "--trainer.use_distributed_sampler=false"]
    candidates = [p for p in [run.folder / "checkpoints" / "last.ckpt", *run.folder.glob("hpc_ckpt_*.ckpt")]
                  if p.is_file()]
    if candidates:
        newest = max(candidates, key=lambda p: p.stat().st_mtime)
        args.append(f"--ckpt_path={newest}")
    return args


def check_run_args(study: Study, log=print) -> None:
    """Dry-parse the composed ``nnip-scale fit`` arguments of one run per architecture (every
    override, base config and model config): a typo fails here, once, naming the key, instead of
    in every run. Parses and instantiates the model, data module and trainer; trains nothing."""
    import contextlib
    import io

    from nnip_scale.training.lightning_cli import build_cli

    seen = set()
    for run in study.all_runs:
        if run.arch.name in seen:
            continue
        seen.add(run.arch.name)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                # run=False: the fit arguments without the subcommand (a pending η*: any LR parses alike)
                build_cli(list(run.cost_args()), run=False)
        except SystemExit as exc:
            if exc.code not in (0, None):
                lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
                first = next((ln for ln in lines if ln.startswith("nnip-scale")), lines[-1] if lines else "")
                hint = next((ln for ln in lines if "did you mean" in ln), "")
                detail = first.split("error: ", 1)[-1] + (f" ({hint.strip()})" if hint else "")
                raise StudyError(f"{study.path}: the runs of '{run.arch.name}' would fail: {detail}") from None
        except (ValueError, TypeError, OSError) as exc:
            raise StudyError(f"{study.path}: the runs of '{run.arch.name}' would fail: {exc}") from None
    log(f"[study] run arguments parse for all {len(seen)} architectures")


def run_command(run: RunSpec, devices: int | None = None, nodes: int = 1, gpu: bool = False) -> list[str]:
    """:func:`run_args` as a command line of its own process."""
    return [sys.executable, "-m", "nnip_scale.cli", "fit", *run_args(run, devices, nodes, gpu)]


def ledger_rows(run: RunSpec) -> list[dict]:
    """The rows of ``run``'s compute ledger ([] if none yet), read by ``nnip_scale.ledger_format``:
    a torn last line (a crash mid-write) is skipped with a warning, a malformed line elsewhere is a
    ``LedgerFormatError`` naming the file and line."""
    path = ledger_path(run)
    return read_rows(path, stacklevel=3) if path.is_file() else []


def _write_done(run: RunSpec, seconds: float) -> None:
    rows = ledger_rows(run)
    summary = {"run_id": run.run_id, "arch": run.arch.name, "width": run.width, "budget_atoms": run.budget_atoms,
               "epochs": run.epochs, "seed": run.seed, "lr": run.lr, "eta_star": run.arch.lr,
               "fingerprint": fingerprint(run), "seconds_this_session": seconds,
               "rows": len(rows), "final": rows[-1] if rows else None}
    atomic_write_json(run.folder / "DONE.json", summary, indent=2)


def _report(run: RunSpec, ok: bool, returncode: int, t0: float, log) -> bool:
    if not ok:
        log(f"[study] FAILED {run.run_id} (exit {returncode}): {_last_error(run.folder / 'train.log')}\n"
            f"        full log: {run.folder / 'train.log'}")
        return False
    _write_done(run, time.perf_counter() - t0)
    log(f"[study] done {run.run_id} in {time.perf_counter() - t0:.1f} s")
    return True


def _start(run: RunSpec, args: list[str], log) -> float:
    run.folder.mkdir(parents=True, exist_ok=True)
    record = run.folder / "run.json"  # what this folder is trained with: a later plan can tell it is stale
    if not record.is_file():
        atomic_write_json(record, {"run_id": run.run_id, "eta_star": run.arch.lr, "fingerprint": fingerprint(run),
                                   "args": list(run.args)}, indent=1)
    log(f"[study] {'resume' if any(a.startswith('--ckpt_path') for a in args) else 'start'} {run.run_id}")
    return time.perf_counter()


def execute(run: RunSpec, env: dict | None = None, log=print, devices: int | None = None, nodes: int = 1,
            gpu: bool = False) -> bool:
    """Train ``run`` (or resume it) in a fresh ``nnip-scale fit`` process; True on success. Output
    goes to ``<run>/train.log``. Used for GPU and DDP runs and SLURM array tasks."""
    cmd = run_command(run, devices, nodes, gpu)
    t0 = _start(run, cmd, log)
    with open(run.folder / "train.log", "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return _report(run, proc.returncode == 0, proc.returncode, t0, log)


# --------------------------------------------------------------------------- in-process CPU workers
# Importing torch + Lightning costs ~10 s of CPU per process on a small machine, which for the short
# runs of a CPU study is a large share of each run. Local CPU runs therefore go to a pool of
# long-lived worker processes (spawned, so each starts clean and pays the import once) that run
# ``nnip-scale fit`` in-process, one run after another, with the run's output redirected to its log.


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the nnip-scale console script does
    import torch

    torch.set_num_threads(threads)
    import nnip_scale.training.lightning_cli  # noqa: F401  (Lightning and the models: imported once per worker)


def _fit_in_worker(args: list[str], log_file: str) -> int:
    """``nnip-scale fit ARGS`` in this process, stdout and stderr (file descriptors 1 and 2, so
    C++ and DataLoader-worker output too) appended to ``log_file``; returns an exit status."""
    from nnip_scale.training.lightning_cli import fit_main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    rc = 1
    with open(log_file, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            rc = fit_main(args)  # the project's own errors come back as exit code 2
        except SystemExit as err:  # LightningCLI's argument errors exit
            rc = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            if err.code not in (None, 0) and not isinstance(err.code, int):
                print(err.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - the run failed; its traceback goes to its log
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return rc


def _run_pool(todo: list[RunSpec], parallel: int, threads: int, log) -> list[tuple[RunSpec, bool]]:
    """Run ``todo`` on ``parallel`` in-process workers, keeping all of them busy. If a worker dies
    (killed, out of memory, a crash in C++), the runs in flight are reported as failed (rerunning the
    study resumes them from their last checkpoint) and the rest continue on a fresh pool."""
    results: list[tuple[RunSpec, bool]] = []
    queue = list(todo)
    while queue:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=parallel, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            running: dict[Future, tuple[RunSpec, float]] = {}
            broken = False

            def submit(running=running) -> None:
                run = queue.pop(0)
                args = run_args(run)
                t0 = _start(run, args, log)
                running[pool.submit(_fit_in_worker, args, str(run.folder / "train.log"))] = (run, t0)

            while queue and len(running) < parallel:
                submit()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    run, t0 = running.pop(fut)
                    try:
                        rc = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        log(f"[study] FAILED {run.run_id}: its worker process died; "
                            f"full log: {run.folder / 'train.log'}")
                        results.append((run, False))
                        continue
                    results.append((run, _report(run, rc == 0, rc, t0, log)))
                if broken:
                    for run, _t0 in running.values():
                        log(f"[study] FAILED {run.run_id}: stopped with the worker pool")
                        results.append((run, False))
                    running.clear()
                    break
                while queue and len(running) < parallel:
                    submit()
    return results


def run_local(study: Study, parallel: int | None = None, devices: list[str] | None = None, log=print,
              runs: list[RunSpec] | None = None, retrain_stale: bool = False) -> list[RunSpec]:
    """Run every unfinished run of ``runs`` (default: the study's grid); ``parallel`` at once. On
    CPU the cores are split evenly between ``parallel`` in-process workers (above); ``devices``
    (e.g. GPU ids) are handed out round-robin through CUDA_VISIBLE_DEVICES, one fresh process per
    run. Returns the runs that failed. (``nnip_scale.study.sweep.run_study`` runs a study's LR sweep
    first, then its grid.)"""
    parallel = max(1, parallel or study.parallel)
    runs = study.runs if runs is None else runs
    pending = [r.run_id for r in runs if r.pending]
    if pending:
        raise StudyError(f"{study.path}: {len(pending)} run(s) wait for the LR sweep's η* ({pending[0]}, ...); "
                         f"expected the sweep to run first (nnip_scale.study.sweep.run_study)")
    stale = [(r, why) for r in runs if (why := stale_reason(r))]
    if stale and not retrain_stale:
        listed = "; ".join(f"{r.run_id}: {why}" for r, why in stale[:3]) + ("; ..." if len(stale) > 3 else "")
        raise StudyError(f"{study.path}: {len(stale)} run(s) in {study.folder} were trained under other settings than "
                         f"the plan now gives ({listed}); expected the same settings: restore the study file, or rerun "
                         f"with --retrain-stale to move them to {study.folder / 'stale'} and train them again")
    move_stale(study, [r for r, _ in stale], log)
    todo = [r for r in runs if not is_done(r)]
    skipped = len(runs) - len(todo)
    if skipped:
        log(f"[study] {skipped} of {len(runs)} runs already finished: skipped")
    if not todo:
        return []
    threads = max(1, (os.cpu_count() or 1) // parallel)
    if not devices:
        results = _run_pool(todo, parallel, threads, log)
    else:
        def env_for(k: int) -> dict:
            return {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": str(devices[k % len(devices)])}

        # --devices hands out GPUs, so the runs train on a GPU whatever the study's trainer config says
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            results = list(pool.map(lambda kr: (kr[1], execute(kr[1], env_for(kr[0]), log, devices=1, gpu=True)),
                                    enumerate(todo)))
    return [r for r, ok in results if not ok]
