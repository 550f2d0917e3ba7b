"""The study's learning-rate sweep: choose η* at each swept architecture's base width.

The paper's protocol: the LR is tuned at one (base) width and transferred to the others with μP. A
study file with an ``lr_sweep:`` section (``lrs``, optionally ``atoms`` and ``seeds``) does that for
every architecture that has no ``lr`` of its own: it trains each candidate η* at the base width on
the sweep's (short) data budget, for each seed, and takes the candidate with the lowest mean final
validation loss (the loss after the last batch, ValidateAtEnd). A run that diverged counts as an
infinite loss (it loses), so does a candidate with any diverged seed. The choice, with the whole
table, is written atomically to ``<study>/lr_sweep.json``; :func:`nnip_scale.study.plan.load_study`
reads it back, so the grid's runs get η* and a rerun reuses it (a changed sweep is redone).

A choice on the edge of the grid (the smallest or the largest candidate) is flagged: the optimum may
lie outside the grid, so extend ``lrs`` before trusting it.
"""

from __future__ import annotations

import math

from nnip_scale.atomic_io import atomic_write_json
from nnip_scale.study.plan import SWEEP_FILE, Study, StudyError, load_study
from nnip_scale.study.runner import is_done, ledger_rows, run_local


def _final(run) -> tuple[float, str]:
    """(final validation loss, status) of a finished sweep run; a diverged run's loss is inf."""
    rows = ledger_rows(run)
    if not rows:
        raise StudyError(f"{run.folder}: the sweep run {run.run_id} finished without a compute ledger row; "
                         f"expected its final validation (delete the run folder to retrain it)")
    last = rows[-1]
    if last.get("status") == "diverged":
        return math.inf, "diverged"
    loss = last.get("val_loss")
    if loss is None or not math.isfinite(float(loss)):
        return math.inf, "non-finite"
    return float(loss), "ok"


def choose(study: Study, arch: str) -> dict | None:
    """The sweep's outcome for ``arch`` (None while any of its sweep runs is unfinished)."""
    runs = [r for r in study.sweep_runs if r.arch.name == arch]
    if not runs or not all(is_done(r) for r in runs):
        return None
    table, by_lr = [], {}
    for r in runs:
        loss, status = _final(r)
        table.append({"lr": r.arch.lr, "seed": r.seed, "val_loss": loss if math.isfinite(loss) else None,
                      "status": status, "run_id": r.run_id})
        by_lr.setdefault(r.arch.lr, []).append(loss)
    means = {lr: (sum(v) / len(v) if all(math.isfinite(x) for x in v) else math.inf) for lr, v in by_lr.items()}
    if not any(math.isfinite(m) for m in means.values()):
        tried = ", ".join(f"{lr:g}" for lr in means)
        raise StudyError(f"{study.path}: every learning rate of the sweep of '{arch}' diverged ({tried}); "
                         f"expected at least one candidate that trains: add smaller lr_sweep.lrs")
    grid = sorted(means)
    best = min(grid, key=lambda lr: means[lr])
    edge = None
    if best == grid[0]:
        edge = "smallest"
    elif best == grid[-1]:
        edge = "largest"
    arch_spec = next(r.arch for r in runs)
    return {"settings": study.sweep.settings(arch_spec), "table": table,
            "mean_val_loss": {f"{lr:g}": (m if math.isfinite(m) else None) for lr, m in means.items()},
            "best_lr": best, "edge": edge, "base_width": arch_spec.base_width}


def write_results(study: Study, results: dict) -> None:
    """Merge ``results`` into ``<study>/lr_sweep.json`` (temp file, then rename)."""
    path = study.folder / SWEEP_FILE
    merged = {**study.sweep_results, **results}
    study.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, merged, indent=1)


def resolve(study: Study, log=print) -> Study:
    """Choose η* for every pending architecture whose sweep has finished, store it and return the
    study re-planned with it (the same study if nothing changed)."""
    results = {}
    for arch in study.pending_archs:
        outcome = choose(study, arch)
        if outcome is None:
            continue
        results[arch] = outcome
        flag = (f" -- on the {outcome['edge']} edge of the grid: the optimum may lie outside it; extend lr_sweep.lrs"
                if outcome["edge"] else "")
        best = outcome["best_lr"]
        log(f"[study] LR sweep of {arch}: η* = {best:g} at width {outcome['base_width']} "
            f"(mean final val loss {outcome['mean_val_loss'][format(best, 'g')]:.4g}){flag}")
    if not results:
        return study
    write_results(study, results)
    return load_study(study.path, study.folder)


def run_study(study: Study, parallel: int | None = None, devices: list[str] | None = None,
              log=print, retrain_stale: bool = False) -> tuple[Study, list]:
    """Train the sweep (if any architecture still waits for its η*), choose η*, then train the
    grid; returns the re-planned study and the runs that failed. A new η* makes the grid's finished
    runs of that architecture stale: an error unless ``retrain_stale`` (runner.run_local). Architectures whose sweep did not
    finish (a failed run) keep their grid runs waiting: rerunning the study retries them."""
    failed = []
    study = resolve(study, log)  # a finished sweep whose choice was not stored yet (killed in between)
    if study.pending_archs:
        todo = [r for r in study.sweep_runs if r.arch.name in study.pending_archs]
        log(f"[study] LR sweep first: {len(todo)} runs for {', '.join(study.pending_archs)} "
            f"(η* in {', '.join(f'{x:g}' for x in study.sweep.lrs)} at the base width, {study.sweep.atoms:,} atoms, "
            f"seeds {', '.join(map(str, study.sweep.seeds))})")
        failed += run_local(study, parallel, devices, log, runs=todo, retrain_stale=retrain_stale)
        study = resolve(study, log)
    waiting = study.pending_archs
    if waiting:
        log(f"[study] not started (their LR sweep has failed runs; rerun the study to retry): "
            f"{', '.join(r.run_id for r in study.runs if r.pending)}")
    failed += run_local(study, parallel, devices, log, runs=[r for r in study.runs if not r.pending],
                        retrain_stale=retrain_stale)
    return study, failed
