#!/usr/bin/env python
"""Lower-envelope frontiers of validation loss vs training FLOPs and vs GPU-hours, per architecture
(no fit): OUT/frontier.json and OUT/frontier_flops.png, OUT/frontier_gpu_hours.png. Runs of one
arch that differ in dataset, force mode, loss or validation subset are refused (exit 2) unless
pooled on purpose with --pool FIELD (docs/scaling.md).

    python tools/plot_frontier.py runs/ --out frontier/ --drop-first 0.05 --ema 0.6
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from nnip_scale.atomic_io import atomic_write_text  # noqa: E402
from nnip_scale.scaling import ScalingInputError, load_points  # noqa: E402
from nnip_scale.scaling.analysis import frontier, preprocess  # noqa: E402
from nnip_scale.scaling.io import C_UNITS, H_UNITS, POOL_FIELDS  # noqa: E402
from nnip_scale.scaling.plots import frontier_figure  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--drop-first", type=float, default=0.05)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--c-unit", choices=list(C_UNITS), default=None)
    p.add_argument("--h-unit", choices=list(H_UNITS), default=None)
    p.add_argument("--pool", action="append", default=[], metavar="FIELD",
                   help="pool runs of one arch that differ in FIELD on purpose (refused by default): "
                        f"{', '.join(POOL_FIELDS)} or all; repeat or comma-separate for several")
    a = p.parse_args(argv)
    try:
        pts, meta = load_points(a.inputs, a.c_unit, a.h_unit, pool=",".join(a.pool))
        pts = preprocess(pts, a.drop_first, a.ema)
    except ScalingInputError as exc:
        print(f"plot_frontier: error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    fronts = {}
    for arch in sorted(np.unique(pts["arch"])):
        fronts[arch] = {}
        for law, col in (("L_C", "C"), ("L_H", "H")):
            m = (pts["arch"] == arch) & np.isfinite(pts[col]) & (pts[col] > 0)
            x, y, run, step = pts[col][m], pts["loss"][m], pts["run"][m], pts["step"][m]
            f = frontier(x, y)
            fronts[arch][law] = {"frontier": {col: x[f].tolist(), "loss": y[f].tolist(),
                                              "run": run[f].tolist(), "step": step[f].tolist()}}
    for law, name in (("L_C", "frontier_flops.png"), ("L_H", "frontier_gpu_hours.png")):
        if any(f[law]["frontier"]["loss"] for f in fronts.values()):
            frontier_figure(pts, fronts, law, os.path.join(a.out, name))
    result = {"options": {"drop_first": a.drop_first, "ema": a.ema, "units": meta["units"],
                          "inputs": meta["files"], "pool": meta["pool"], "notes": meta["notes"]},
              "identity": meta["identity"],
              "frontiers": {arch: {"flops" if law == "L_C" else "gpu_hours": v["frontier"] for law, v in f.items()}
                            for arch, f in fronts.items()}}
    atomic_write_text(os.path.join(a.out, "frontier.json"), json.dumps(result, indent=1))
    print(f"plot_frontier: {len(fronts)} architecture(s) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
