"""``nnip-scale data ...``: generate, list and check the built-in datasets.

  nnip-scale data generate {molecules,alloys} --size {tiny,demo,large} [--root DIR] [--seed N] [--workers N]
  nnip-scale data list [--root DIR]
  nnip-scale data check PATH [--samples N] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import BUILTIN, DEFAULT_SEED, generate, read_manifest, resolve_root


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnip-scale data", description="Built-in datasets (docs/datasets.md).")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate (or resume) a built-in dataset")
    g.add_argument("kind", choices=["molecules", "alloys"])
    g.add_argument("--size", choices=["tiny", "demo", "large"], default="demo",
                   help="large: molecules only, 3x the demo's frames (61,200)")
    g.add_argument("--root", default=None, help="parent directory (default $NNIP_SCALE_DATA, else ./data if it holds the dataset, else ~/.cache/nnip-scale/data)")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--no-progress", action="store_true")
    ls = sub.add_parser("list", help="known built-in datasets and whether they are present")
    ls.add_argument("--root", default=None)
    c = sub.add_parser("check", help="finite-difference force/stress check of a dataset directory")
    c.add_argument("path")
    c.add_argument("--samples", type=int, default=8, help="frames to check (one per sampled file)")
    c.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nnip-scale data``; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the message / help
        return int(exc.code or 0)
    try:
        if args.cmd == "generate":
            out = generate(args.kind, args.size, root=args.root, seed=args.seed, workers=args.workers,
                           progress=not args.no_progress)
            m = read_manifest(out)
            print(f"{out}: {m['n_structures']} structures, {m['n_atoms']} atoms, "
                  f"{m['generation_time_s']} s, max |F - F_fd| = "
                  f"{m['fd_check']['max_abs_force_error_eV_per_A']:.2e} eV/Å")
        elif args.cmd == "list":
            for name in BUILTIN:
                path = Path(resolve_root(name)[0] if args.root is None else args.root) / name
                m = read_manifest(path)
                state = (f"present ({m['n_structures']} structures)" if m is not None
                         else "partial (no manifest)" if path.is_dir() else "absent")
                print(f"{name:16s} {state:28s} {path}")
        else:
            from .check import check_dataset

            if not Path(args.path).is_dir():
                raise FileNotFoundError(f"{args.path}: not a dataset directory")
            print(json.dumps(check_dataset(args.path, samples=args.samples, seed=args.seed), indent=2))
    except (ValueError, OSError) as err:
        print(f"nnip-scale data {args.cmd}: error: {err}", file=sys.stderr)
        return 2
    return 0
