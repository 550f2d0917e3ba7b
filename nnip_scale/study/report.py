"""A study's ``report.md``: the grid it trained, what each run cost, and the fitted scaling laws.

Called by ``nnip-scale study`` when every run has finished (and by ``--report-only``). It reads each
run's compute ledger, fits the laws with :func:`nnip_scale.scaling.write_report` (the same code as
``tools/fit_scaling_laws.py``, figures included) into ``<study>/report/`` and writes
``<study>/report.md`` atomically. A law that the grid cannot support (too few runs or points) is
reported with its reason instead of failing the study.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

#: options of the study file's ``report:`` section and their defaults (passed to write_report);
#: ``pool``: identity fields (dataset, force_mode, loss, val_set, or all) whose differences within
#: one architecture are pooled on purpose instead of refused (docs/scaling.md); ``holdout``: a cut
#: ("top", "C>1e11", "N>5e4", "D>=1e6") whose held-out runs the laws fitted below it must predict
#: (docs/scaling.md, "Holdout: does the law predict?")
REPORT_OPTIONS = {"drop_first": 0.05, "ema": None, "n_boot": 200, "seed": 0, "budget_flops": None, "fix_linf": None,
                  "pool": None, "holdout": None}


def _fmt(x, spec=".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def _machine() -> str:
    """Machine line for the report; no torch import (the report is written without loading torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tv = version("torch")
    except PackageNotFoundError:  # pragma: no cover
        tv = "not installed"
    return f"{platform.machine()}, {os.cpu_count()} CPU threads; torch {tv}"


def _validated_on(row) -> str:
    """'192 / 1,331 / 10' from the ledger's val_structures, val_atoms, val_groups ('–' if not recorded)."""
    vals = [row.get(k) for k in ("val_structures", "val_atoms", "val_groups")]
    if all(v is None for v in vals):
        return "–"
    return " / ".join("–" if v is None else f"{int(v):,}" for v in vals)


def _val_loss(row) -> str:
    """The final validation loss, or 'diverged at step S' for a run whose training loss went non-finite."""
    if row.get("status") == "diverged":
        last = row.get("last_finite_train_loss")
        return (f"diverged at step {row.get('diverged_at_step')} (last finite train loss "
                f"{_fmt(last, '.3g')}; left out of the fits)")
    return _fmt(row.get("val_loss"), ".4f")


def grid_table(study, finals: dict) -> list[str]:
    """One line per run: size, data seen, measured cost and the final validation metrics."""
    lines = [
        "| run | arch | width | N | LR η* (base width) | atoms seen | structures | train FLOPs | C/(N·D) | wall (s) "
        "| val loss | force MAE (eV/Å) | energy MAE (eV/atom) | validated on (structures / atoms / groups) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in study.runs:
        row = finals.get(run.run_id)
        eta = ("pending sweep" if run.arch.lr is None
               else f"{run.arch.lr:.3g}{' (sweep)' if getattr(run.arch, 'lr_source', 'given') == 'sweep' else ''}")
        if row is None:
            lines.append(f"| {run.run_id} | {run.arch.name} | {run.width} | – | {eta} ({run.arch.base_width}) "
                         "| – | – | – | – | – | not finished | – | – | – |")
            continue
        n, d, c = row.get("n_params"), row.get("atoms_seen"), row.get("flops")
        ratio = c / (n * d) if n and d and c else None
        lines.append(
            f"| {run.run_id} | {run.arch.name} | {run.width} | {n:,} | {eta} ({run.arch.base_width}) "
            f"| {d:,} | {row.get('structures_seen', 0):,} | {_fmt(c, '.3e')} | {_fmt(ratio, '.1f')} "
            f"| {_fmt(row.get('wall_s'), '.1f')} | {_val_loss(row)} "
            f"| {_fmt(row.get('val_force_mae'), '.4f')} | {_fmt(row.get('val_energy_mae_per_atom'), '.4f')} "
            f"| {_validated_on(row)} |"
        )
    return lines


def cost_table(study, finals: dict) -> list[str]:
    """Per architecture: measured training FLOPs per parameter per atom seen (C/(N·D) = 3κ under
    the paper's C = 3κND assumption) and wall-clock per atom."""
    lines = ["| arch | runs | C/(N·D) measured (mean, min–max) | implied κ = C/(3ND) | wall µs per atom (mean) |",
             "|---|---|---|---|---|"]
    for arch in dict.fromkeys(r.arch.name for r in study.runs):
        rows = [finals[r.run_id] for r in study.runs if r.arch.name == arch and r.run_id in finals]
        ratios = [r["flops"] / (r["n_params"] * r["atoms_seen"]) for r in rows
                  if r.get("flops") and r.get("n_params") and r.get("atoms_seen")]
        walls = [1e6 * r["wall_s"] / r["atoms_seen"] for r in rows if r.get("wall_s") and r.get("atoms_seen")]
        if not ratios:
            lines.append(f"| {arch} | {len(rows)} | – | – | – |")
            continue
        mean = sum(ratios) / len(ratios)
        wall = f"{sum(walls) / len(walls):.1f}" if walls else "–"  # runs that recorded no wall_s
        lines.append(f"| {arch} | {len(rows)} | {mean:.1f} ({min(ratios):.1f}–{max(ratios):.1f}) | {mean / 3:.1f} "
                     f"| {wall} |")
    return lines


def sweep_section(study) -> list[str]:
    """The LR sweep (``lr_sweep:``), one table per swept architecture: every candidate η* with each
    seed's final validation loss, their mean, and the choice (flagged on the grid's edge)."""
    if getattr(study, "sweep", None) is None:
        return []
    sw = study.sweep
    lines = ["## Learning-rate sweep (η* at the base width, transferred to the other widths with μP)", "",
             f"Each candidate η* trained at its architecture's base width on {sw.atoms:,} atoms, seeds "
             f"{', '.join(map(str, sw.seeds))}; the lowest mean final validation loss wins (a diverged seed makes "
             f"its candidate lose). `{study.folder.name}/lr_sweep.json` holds the table.", ""]
    for arch in sw.archs:
        res = study.sweep_results.get(arch)
        if res is None or res.get("settings") is None:
            lines += [f"**{arch}**: the sweep has not finished; its grid runs wait for η*.", ""]
            continue
        seeds = sorted({row["seed"] for row in res["table"]})
        lines += [f"**{arch}** (base width {res['base_width']}): η* = **{res['best_lr']:g}**"
                  + (f" ⚠ on the {res['edge']} edge of the grid: the optimum may lie outside it (extend lr_sweep.lrs)"
                     if res.get("edge") else ""), "",
                  "| η* | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---|" + "---|" * (len(seeds) + 1)]
        for lr in sorted({row["lr"] for row in res["table"]}):
            cells = []
            for seed in seeds:
                row = next((r for r in res["table"] if r["lr"] == lr and r["seed"] == seed), None)
                cells.append("–" if row is None else (row["status"] if row["val_loss"] is None
                                                      else f"{row['val_loss']:.4f}"))
            mean = res["mean_val_loss"].get(f"{lr:g}")
            mark = " ← chosen" if lr == res["best_lr"] else ""
            lines.append(f"| {lr:g} | " + " | ".join(cells) + f" | {_fmt(mean, '.4f')}{mark} |")
        lines.append("")
    return lines


def write_study_report(study, log=print) -> Path:
    """Fit the laws on the study's ledgers and write ``<study>/report.md``; returns its path."""
    from nnip_scale.atomic_io import atomic_write_text
    from nnip_scale.scaling import ScalingInputError
    from nnip_scale.scaling.report import holdout_markdown, markdown, write_report
    from nnip_scale.study import is_done, ledger_path, ledger_rows
    from nnip_scale.study.runner import stale_reason

    t0 = time.perf_counter()
    finals, ledgers = {}, []
    for run in study.runs:
        path = ledger_path(run)
        why = stale_reason(run)
        if why:  # trained under other settings than its row of the report would claim
            log(f"[study] warning: {run.run_id} {why}: left out of the report (rerun the study with --retrain-stale)")
            continue
        if path.is_file() and is_done(run):
            rows = ledger_rows(run)
            if rows:
                finals[run.run_id] = rows[-1]
                ledgers.append(str(path))
    options = {**REPORT_OPTIONS, **{k: v for k, v in study.report.items() if k in REPORT_OPTIONS}}
    unknown = sorted(set(study.report) - set(REPORT_OPTIONS))
    out = study.folder / "report"
    fit, fit_error, holdout_error = {}, None, None
    caught = []
    if ledgers:
        try:
            try:
                with warnings.catch_warnings(record=True) as caught:  # said once each below, not with source lines
                    warnings.simplefilter("always")
                    fit = write_report(ledgers, out, **options)
            except ScalingInputError as err:
                if not (options.get("holdout") and str(err).startswith("holdout ")):
                    raise
                # a bad or degenerate holdout cut (raised before any fit) must not cost the fit itself
                holdout_error = str(err)
                fit = write_report(ledgers, out, **{**options, "holdout": None})
        except (ValueError, RuntimeError) as err:  # ScalingInputError is a ValueError
            fit_error = str(err)
    else:
        fit_error = "no finished run has a ledger yet"
    for message in dict.fromkeys(str(w.message) for w in caught):
        log(f"[study] warning: {message}")
    done = sum(is_done(r) for r in study.runs)
    lines = [
        f"# Study `{study.name}`",
        "",
        f"Study file `{study.path}`; {done} of {len(study.runs)} runs finished; report written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')} on {_machine()}.",
        f"Fit options: {json.dumps(options)}" + (f" (ignored unknown report keys: {unknown})" if unknown else ""),
        "",
        *sweep_section(study),
        "## Runs (final ledger row of each)",
        "",
        "N: trainable parameters without the element embedding; atoms seen: D, the data tokens; train FLOPs: "
        "measured with FlopCounterMode (2 per multiply-add, docs/compute.md); C/(N·D) is 3κ if the paper's "
        "C = 3κND held exactly.",
        "",
        *grid_table(study, finals),
        "",
        "## Measured cost per architecture",
        "",
        *cost_table(study, finals),
        "",
        "## Fitted scaling laws (95 % bootstrap intervals over runs)",
        "",
    ]
    if fit_error:
        lines += [f"The scaling laws were not fitted: {fit_error}", ""]
    else:
        table = markdown(fit, holdout=False).splitlines()[2:]  # fit.md without its title and holdout section
        lines += table + ["", "Full results: `report/fit.json`, `report/fit.md` (docs/scaling.md explains each "
                          "column).", ""]
        figures = sorted(fit.get("figures") or [])  # this fit's figures only (not a stale one of an earlier report)
        held = holdout_markdown(fit) or ([f"The holdout check was not run: {holdout_error}"] if holdout_error else [])
        if held:
            lines += ["## Holdout: does the law predict?", "", *held, ""]
            if "holdout.png" in figures:
                lines += ["![holdout.png](report/holdout.png)", ""]
        figures = [name for name in figures if not (held and name == "holdout.png")]
        if figures:
            lines += ["## Figures", ""] + [f"![{name}](report/{name})" for name in figures] + [""]
    (study.folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.folder / "report.md", "\n".join(lines) + "\n")
    log(f"[study] report written in {time.perf_counter() - t0:.1f} s")
    return study.folder / "report.md"
