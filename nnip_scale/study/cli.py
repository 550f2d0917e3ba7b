"""``nnip-scale study``: plan, run (locally or on SLURM) and resume a grid of training runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nnip_scale.atomic_io import atomic_write_text
from nnip_scale.study.plan import StudyError, load_study
from nnip_scale.study.runner import check_run_args, execute, is_done, move_stale, prepare_data, stale_reason
from nnip_scale.study.slurm import sbatch_script
from nnip_scale.study.sweep import resolve as resolve_sweep
from nnip_scale.study.sweep import run_study


def _estimate(study, args) -> int:
    """``--plan --estimate``: the cost of every run (nnip_scale.study.estimate), as a table and plan.json."""
    if args.probe_steps < 1:
        print("nnip-scale study: error: --probe-steps must be >= 1", file=sys.stderr)
        return 2
    import torch

    gpu = bool(args.devices) or study.accelerator in ("gpu", "cuda") or (
        study.accelerator == "auto" and torch.cuda.is_available())
    if gpu and not torch.cuda.is_available() and not args.no_probe:
        why = f"--devices {' '.join(args.devices)}" if args.devices else f"trainer.accelerator={study.accelerator}"
        print(f"nnip-scale study: error: the runs train on GPUs ({why}) but no CUDA GPU is visible here, so "
              f"their wall time cannot be probed; run --estimate on a machine with the runs' GPU, or add "
              f"--no-probe for the FLOPs alone", file=sys.stderr)
        return 2
    from nnip_scale.study.estimate import estimate_study, format_plan, write_plan

    accelerator = "gpu" if gpu and torch.cuda.is_available() else "cpu"
    try:
        prepare_data(study)
        plan = estimate_study(study, probe=not args.no_probe, steps=args.probe_steps, accelerator=accelerator,
                              parallel=args.parallel)
    except StudyError as err:
        print(f"nnip-scale study: error: {err}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    try:
        path = write_plan(plan, study.folder / "plan.json")
    except OSError as err:
        print(f"nnip-scale study: error: could not write {study.folder / 'plan.json'}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    """``nnip-scale study``: plan, run or submit a study, then write its report
    (:func:`nnip_scale.study.report.write_study_report`, which uses the scaling toolkit)."""
    p = argparse.ArgumentParser(prog="nnip-scale study", description="Run a grid of training runs (a study).")
    p.add_argument("--config", required=True, help="study file (configs/study/*.yaml)")
    p.add_argument("--output", help="study folder (default: the file's 'output', else studies/<name>)")
    p.add_argument("--plan", action="store_true", help="print the runs and their state, run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="with --plan (implies it): estimate every run's training/validation FLOPs (cost model "
                        "calibrated on the study's own data) and wall time / device-hours on this machine's device "
                        "(a short throughput probe per architecture and width); print the table and write "
                        "<study folder>/plan.json. Takes ~seconds per (architecture, width)")
    p.add_argument("--no-probe", action="store_true",
                   help="with --estimate: FLOPs only, no throughput probe (no wall-time estimate; e.g. on a "
                        "login node without the GPUs the runs will use)")
    p.add_argument("--probe-steps", type=int, default=5,
                   help="with --estimate: training steps timed per (architecture, width), after 1 warm-up step")
    p.add_argument("--parallel", type=int, help="runs at once on this machine (default: the study's run.parallel, else 1)")
    p.add_argument("--no-report", action="store_true", help="train only; do not fit the scaling laws / write report.md")
    p.add_argument("--retrain-stale", action="store_true",
                   help="runs trained under other settings than the plan now gives (an edited study file, a new "
                        "LR-sweep choice) are moved to <study>/stale/ and trained again (default: refuse, naming them)")
    p.add_argument("--report-only", action="store_true", help="(re)write the report from the runs already finished")
    p.add_argument("--devices", nargs="*", help="GPU ids handed out round-robin to parallel runs (the runs train "
                   "on the GPU whatever the study's trainer config says)")
    p.add_argument("--only", help="run only this run: its id (or its index in the plan); SLURM array tasks")
    p.add_argument("--devices-per-run", type=int, help="devices of one run (DDP when > 1)")
    p.add_argument("--nodes-per-run", type=int, default=1)
    p.add_argument("--slurm", metavar="SCRIPT", help="write an sbatch array script for the unfinished runs")
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--cpus-per-task", type=int, default=8, help="SLURM CPUs per task (one task per GPU)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--partition")
    p.add_argument("--account")
    args = p.parse_args(argv)
    try:
        study = load_study(args.config, args.output)
    except StudyError as err:
        print(f"nnip-scale study: error: {err}", file=sys.stderr)
        return 2
    if args.plan or args.estimate:
        print(f"{'#':>4} {'state':8s} run  (η*: the LR tuned at the base width; η(w) = η*·w_base/w: the "
              f"hidden-matrix LR {'μP gives' if study.runs and study.runs[0].mup else 'every parameter gets'} at width w)")
        stale = []
        for k, r in enumerate(study.all_runs):
            state = "done" if is_done(r) else ("partial" if (r.folder / "checkpoints" / "last.ckpt").exists() else "todo")
            why = stale_reason(r)
            if why:
                state = "stale"
                stale.append(f"{r.run_id}: {why}")
            if r.sweep:
                lr = f"η* candidate {r.arch.lr:.3g} (LR sweep at the base width)"
            elif r.pending:
                lr = f"η* from the LR sweep (pending; base {r.arch.base_width})"
            else:
                source = " from the LR sweep" if r.arch.lr_source == "sweep" else ""
                lr = f"η*={r.arch.lr:.3g}{source} (base {r.arch.base_width})  η(w)={r.lr:.3g}"
            print(f"{k:4d} {state:8s} {r.run_id}  {lr}")
        if stale:
            print(f"[study] {len(stale)} stale run(s), trained under other settings than the plan gives "
                  f"(the next run refuses them unless --retrain-stale): " + "; ".join(stale[:3])
                  + ("; ..." if len(stale) > 3 else ""))
        return _estimate(study, args) if args.estimate else 0
    if args.devices:
        import torch

        if not torch.cuda.is_available():
            print(f"nnip-scale study: error: --devices {' '.join(args.devices)} hands out GPUs, but no CUDA GPU is "
                  f"visible here (torch.cuda.is_available() is False); expected a GPU machine, or leave out "
                  f"--devices to train on the CPU", file=sys.stderr)
            return 2
        if study.accelerator == "cpu":
            print(f"[study] --devices: the runs train on GPUs {', '.join(args.devices)} (trainer.accelerator=gpu); "
                  f"the study's trainer config says cpu")
    if args.slurm:
        if study.accelerator == "cpu":
            print(f"nnip-scale study: warning: {args.config} trains with trainer.accelerator=cpu; the SLURM script "
                  f"asks for {args.gpus_per_node} GPU(s) per node that the runs would not use (use a GPU trainer "
                  f"config, e.g. configs/trainer/gpu.yaml, as configs/study/big.yaml does)", file=sys.stderr)
        try:  # pre-flight once, here: array tasks must not each generate the built-in data at once
            prepare_data(study)
            check_run_args(study)
            study = resolve_sweep(study)
            stale_runs = [r for r in study.all_runs if stale_reason(r)]
            if stale_runs:  # an array task would skip a finished stale run: settle them here
                if not args.retrain_stale:
                    raise StudyError(f"{study.path}: {len(stale_runs)} run(s) were trained under other settings than "
                                     f"the plan now gives ({stale_runs[0].run_id}: {stale_reason(stale_runs[0])}); "
                                     f"restore the study file, or add --retrain-stale to move them to "
                                     f"{study.folder / 'stale'} and train them again")
                move_stale(study, stale_runs)
            if study.pending_archs:  # the grid's η* is not known yet: submit the sweep, then come back
                print(f"[study] the LR sweep of {', '.join(study.pending_archs)} has not finished: this script "
                      f"trains its runs only; when they are done, run this command again for the grid")
            text = sbatch_script(study, args.config, args.gpus_per_node, args.nodes, cpus_per_task=args.cpus_per_task,
                                 time=args.time, partition=args.partition, account=args.account)
        except ValueError as err:
            print(f"nnip-scale study: error: {err}", file=sys.stderr)
            return 2
        path = Path(args.slurm)
        atomic_write_text(path, text)
        (study.folder / "slurm").mkdir(parents=True, exist_ok=True)
        print(f"wrote {path}: submit it with  sbatch {path}")
        return 0
    if args.only is not None:
        try:
            run = (study.runs[int(args.only)] if args.only.isdigit() and int(args.only) < len(study.runs)
                   else study.run_by_id(args.only))
        except StudyError as err:
            print(f"nnip-scale study: error: {err}", file=sys.stderr)
            return 2
        why = stale_reason(run)
        if why:
            print(f"nnip-scale study: error: {run.run_id} {why}; expected its folder to match the plan: rewrite the "
                  f"SLURM script with --slurm ... --retrain-stale (it moves stale runs aside)", file=sys.stderr)
            return 2
        if is_done(run):
            print(f"[study] {run.run_id} already finished: skipped")
            return 0
        if run.pending:
            try:
                study = resolve_sweep(study)  # the sweep may have finished since the script was written
            except StudyError as err:
                print(f"nnip-scale study: error: {err}", file=sys.stderr)
                return 2
            run = study.run_by_id(run.run_id)
            if run.pending:
                print(f"nnip-scale study: error: {run.run_id} waits for the LR sweep of '{run.arch.name}' "
                      f"(η* is chosen once all its sweep runs have finished); expected the sweep's runs first",
                      file=sys.stderr)
                return 2
        # a SLURM task (--devices-per-run) trains on its GPUs, as the script asked SLURM for them
        return 0 if execute(run, devices=args.devices_per_run, nodes=args.nodes_per_run,
                            gpu=bool(args.devices_per_run)) else 1
    if not args.report_only:
        try:
            prepare_data(study)
            check_run_args(study)
        except StudyError as err:
            print(f"nnip-scale study: error: {err}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            study, failed = run_study(study, parallel=args.parallel, devices=args.devices,
                                      retrain_stale=args.retrain_stale)
        except StudyError as err:
            print(f"nnip-scale study: error: {err}", file=sys.stderr)
            return 2
        if failed:
            print(f"[study] {len(failed)} run(s) failed: " + ", ".join(r.run_id for r in failed)
                  + " (the report fits the finished runs; rerun the study to retry these)", file=sys.stderr)
        elif not study.pending_archs:
            print(f"[study] all {len(study.all_runs)} runs finished in {study.folder} "
                  f"({time.perf_counter() - t0:.0f} s this session)")
    else:
        failed = []
    if not args.no_report:
        from nnip_scale.study.report import write_study_report  # the scaling toolkit: loaded only here

        path = write_study_report(study, print)
        print(f"[study] report: {path}")
    return 1 if failed else 0
