"""``nnip-scale study``: plan, run (locally or on SLURM) and resume a grid of training runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nnip_scale.study.plan import StudyError, load_study
from nnip_scale.study.runner import execute, is_done, prepare_data, run_local
from nnip_scale.study.slurm import sbatch_script


def main(argv: list[str], report=None) -> int:
    """``report(study, log)`` writes the study's report when every run has finished; the top-level
    CLI passes the scaling layer's (this layer does not import it: layers point one way)."""
    p = argparse.ArgumentParser(prog="nnip-scale study", description="Run a grid of training runs (a study).")
    p.add_argument("--config", required=True, help="study file (configs/study/*.yaml)")
    p.add_argument("--output", help="study folder (default: the file's 'output', else studies/<name>)")
    p.add_argument("--plan", action="store_true", help="print the runs and their state, run nothing")
    p.add_argument("--parallel", type=int, help="runs at once on this machine (default: the study's run.parallel, else 1)")
    p.add_argument("--no-report", action="store_true", help="train only; do not fit the scaling laws / write report.md")
    p.add_argument("--report-only", action="store_true", help="(re)write the report from the runs already finished")
    p.add_argument("--devices", nargs="*", help="GPU ids handed out round-robin to parallel runs")
    p.add_argument("--only", type=int, help="run only the run at this index of the plan (SLURM array tasks)")
    p.add_argument("--devices-per-run", type=int, help="devices of one run (DDP when > 1)")
    p.add_argument("--nodes-per-run", type=int, default=1)
    p.add_argument("--slurm", metavar="SCRIPT", help="write an sbatch array script for the unfinished runs")
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--partition")
    p.add_argument("--account")
    args = p.parse_args(argv)
    try:
        study = load_study(args.config, args.output)
    except StudyError as err:
        print(f"nnip-scale study: {err}", file=sys.stderr)
        return 2
    if args.plan:
        for k, r in enumerate(study.runs):
            state = "done" if is_done(r) else ("partial" if (r.folder / "checkpoints" / "last.ckpt").exists() else "todo")
            print(f"{k:4d} {state:8s} {r.run_id}  lr={r.lr:.3g}")
        return 0
    if args.slurm:
        try:
            text = sbatch_script(study, args.config, args.gpus_per_node, args.nodes, time=args.time,
                                 partition=args.partition, account=args.account)
        except ValueError as err:
            print(f"nnip-scale study: {err}", file=sys.stderr)
            return 2
        path = Path(args.slurm)
        path.write_text(text)
        (study.folder / "slurm").mkdir(parents=True, exist_ok=True)
        print(f"wrote {path}: submit it with  sbatch {path}")
        return 0
    if args.only is not None:
        if not 0 <= args.only < len(study.runs):
            print(f"nnip-scale study: --only {args.only}: the plan has runs 0..{len(study.runs) - 1}", file=sys.stderr)
            return 2
        run = study.runs[args.only]
        if is_done(run):
            print(f"[study] {run.run_id} already finished: skipped")
            return 0
        return 0 if execute(run, devices=args.devices_per_run, nodes=args.nodes_per_run) else 1
    if not args.report_only:
        try:
            prepare_data(study)
        except StudyError as err:
            print(f"nnip-scale study: {err}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        failed = run_local(study, parallel=args.parallel, devices=args.devices)
        if failed:
            print(f"[study] {len(failed)} run(s) failed: " + ", ".join(r.run_id for r in failed), file=sys.stderr)
            return 1
        print(f"[study] all {len(study.runs)} runs finished in {study.folder} ({time.perf_counter() - t0:.0f} s this session)")
    if report is not None and not args.no_report:
        path = report(study, print)
        print(f"[study] report: {path}")
    return 0
