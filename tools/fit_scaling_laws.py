#!/usr/bin/env python
"""Fit L(N, D), L(C) and L(H) per architecture from compute ledgers (*.jsonl) and/or CSV files.

Writes OUT/fit.json, OUT/fit.md and PNG figures (docs/scaling.md) via
nnip_scale.scaling.write_report. Exit status: 0 ok; 2 bad input (the message names the file and
line), including runs of one arch that differ in dataset, force mode, loss or validation subset
(pool them on purpose with --pool); 1 with --strict when a law, a derived quantity or its
bootstrap intervals could not be computed (the holdout check included). A flagged number
(docs/scaling.md) is printed as a warning on stderr and marked in fit.md.

--holdout SPEC checks whether the laws predict: fit on the runs below a cut, predict each held-out
run's final loss with a 95 % bootstrap interval, and compare with the measurement (fit.json
"holdout" per architecture, a section of fit.md, holdout.png). SPEC: 'top' (each architecture's
runs at its highest compute level) or a cut on a run's final C, N or D: 'C>1e11', 'N>5e4',
'D>=1e6' (quote it: the shell reads > as a redirection).

    python tools/fit_scaling_laws.py runs/*/ledger.jsonl --out fit/ --budget-flops 1e20
    python tools/fit_scaling_laws.py runs/ --out fit/ --holdout top
"""
import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nnip_scale.scaling import ScalingInputError, write_report  # noqa: E402
from nnip_scale.scaling.io import C_UNITS, H_UNITS, POOL_FIELDS  # noqa: E402
from nnip_scale.scaling.report import errors  # noqa: E402


def show_warning(prog):
    """A warnings.showwarning that prints 'PROG: warning: message' (no source line)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)
    return show


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="ledger .jsonl / .csv files, directories or globs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--drop-first", type=float, default=0.05, help="drop each run's first fraction of steps")
    p.add_argument("--ema", type=float, default=None, help="EMA smoothing factor in [0, 1) (s = ema s + (1-ema) L)")
    p.add_argument("--n-boot", "--bootstrap", type=int, default=200, help="bootstrap resamples of runs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-flops", type=float, default=None, help="compute budget for N*, D* and the predicted loss")
    p.add_argument("--fix-linf", type=float, default=None, help="fix L_inf to this value (0 drops it)")
    p.add_argument("--c-unit", choices=list(C_UNITS), default=None, help="unit of a bare CSV column C (default FLOP)")
    p.add_argument("--h-unit", choices=list(H_UNITS), default=None, help="unit of a bare CSV column H (default hours)")
    p.add_argument("--pool", action="append", default=[], metavar="FIELD",
                   help="pool runs of one arch that differ in FIELD on purpose (refused by default): "
                        f"{', '.join(POOL_FIELDS)} or all; repeat or comma-separate for several")
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="fit on the runs below a cut and predict the held-out runs' final loss: 'top' (each "
                        "architecture's highest compute level) or 'C>1e11', 'N>5e4', 'D>=1e6' (a run's last row; quote "
                        "the spec)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 if any law or interval could not be computed")
    a = p.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning("fit_scaling_laws")
            fit = write_report(a.inputs, a.out, drop_first=a.drop_first, ema=a.ema, n_boot=a.n_boot, seed=a.seed,
                               budget_flops=a.budget_flops, fix_linf=a.fix_linf, c_unit=a.c_unit, h_unit=a.h_unit,
                               figures=not a.no_figures, pool=",".join(a.pool), holdout=a.holdout)
    except ScalingInputError as exc:
        print(f"fit_scaling_laws: error: {exc}", file=sys.stderr)
        return 2
    with open(os.path.join(a.out, "fit.md")) as fh:
        print(fh.read())
    problems = errors(fit)
    if a.strict and problems:
        print("fit_scaling_laws: --strict: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
