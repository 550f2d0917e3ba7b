"""Estimate κ (forward FLOPs per atom per parameter) per architecture across widths, check the
training FLOPs against 3κND, and draw the plot (the paper's Figure 2).

    python tools/estimate_kappa.py --model configs/model/mpnn.yaml --widths 32 64 128 256 --out kappa/
    python tools/estimate_kappa.py --model configs/model/mpnn.yaml --model configs/model/egnn.yaml ...

Writes OUT/kappa.json, OUT/kappa.md and OUT/kappa.png (atomically: temporary file, then rename).
"""

import argparse
import json
from pathlib import Path

from nnip_scale.atomic_io import atomic_open, atomic_write_text


def _load_model_config(path: str) -> tuple[str, dict]:
    from nnip_scale.models import model_spec_from_config, resolve_model

    try:
        class_path, init_args = model_spec_from_config(path)
        resolve_model(class_path)  # a bad class path fails here, before any data are read
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return class_path, init_args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model config YAML (repeatable)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--batches", type=int, default=8, help="batches to count on")
    p.add_argument("--split", choices=["train", "val"], default="train",
                   help="count on batches of this split (train: what a run's ledger measures; the validation "
                        "molecules are fewer and can differ in neighbour density)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="kappa")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from nnip_scale.data import AtomsDataModule
    from nnip_scale.models import build
    from nnip_scale.scaling.plots import arch_style
    from nnip_scale.training.kappa import fit_kappa, measure_point

    torch.manual_seed(0)
    results, models = {}, [_load_model_config(m) for m in args.model]
    for class_path, init_args in models:
        cutoff = float(init_args.get("cutoff", 5.0))
        dm = AtomsDataModule(args.data, cutoff=cutoff, batch_size=args.batch_size, dtype="float32")
        dm.setup("fit")
        loader = dm.train_dataloader() if args.split == "train" else dm.val_dataloader()
        batches = [b for _, b in zip(range(args.batches), loader)]
        points = []
        for w in args.widths:
            model = build(class_path, init_args, width=w, backend="torch")  # FLOPs are counted on torch
            model.set_statistics(dm.statistics)
            arch = model.arch_label()  # the label the ledger and the study report use
            points.append(measure_point(arch, model, batches))
            pt = points[-1]
            print(f"{arch} width {w}: N={pt.n_params} fwd/atom={pt.fwd_flops_per_atom:.4g} κ={pt.kappa:.3f} "
                  f"train/fwd={pt.train_over_fwd:.3f}", flush=True)
        results[arch] = fit_kappa(points)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"data": args.data, "split": args.split, "batches": args.batches, "batch_size": args.batch_size, "widths": args.widths,
            "convention": "FlopCounterMode matmul FLOPs (2 per multiply-add) + 1 per scatter-added element; "
                          "element-wise work not counted (docs/compute.md)"}
    atomic_write_text(out / "kappa.json", json.dumps({"meta": meta, "architectures": results}, indent=2))
    lines = ["| architecture | width | N | fwd FLOPs/atom | κ (this width) | train/fwd | train / 3κN |",
             "|---|---|---|---|---|---|---|"]
    for arch, r in results.items():
        for pt in r["points"]:
            w = str(pt["width"])
            lines.append(f"| {arch} | {w} | {pt['n_params']:,} | {pt['fwd_flops_per_atom']:.4g} | {pt['kappa']:.3f} | "
                         f"{pt['train_over_fwd']:.3f} | {r['train_over_3_kappa_N'][w]:.3f} |")
    lines.append("")
    lines += [f"- **{arch}: κ = {r['kappa']:.3f}** (fit through the origin; max deviation of a width from κN: "
              f"{100 * r['max_rel_deviation_from_kappa_N']:.1f} %)" for arch, r in results.items()]
    atomic_write_text(out / "kappa.md", "\n".join(lines) + "\n")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (arch, r) in enumerate(results.items()):
        color, marker = arch_style(k)
        N = [pt["n_params"] for pt in r["points"]]
        ax1.loglog(N, [pt["fwd_flops_per_atom"] for pt in r["points"]], marker, color=color,
                   label=f"{arch} (κ = {r['kappa']:.2f})")
        ax1.loglog(N, [r["kappa"] * n for n in N], "-", color=color, alpha=0.5)
        ax2.semilogx(N, [pt["train_over_fwd"] for pt in r["points"]], "-", marker=marker, color=color, label=arch)
    ax1.set(xlabel="parameters N", ylabel="forward FLOPs per atom", title="C_fwd / D = κ·N")
    ax2.axhline(3.0, color="k", ls="--", lw=1, label="3 (assumed by C = 3κND)")
    ratios = [pt["train_over_fwd"] for r in results.values() for pt in r["points"]] + [3.0]
    pad = max(0.05, 0.1 * (max(ratios) - min(ratios)))
    ax2.set(xlabel="parameters N", ylabel="training / forward FLOPs", title="training-step FLOPs vs forward",
            ylim=(min(ratios) - pad, max(ratios) + pad))
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    with atomic_open(out / "kappa.png", "wb") as fh:
        fig.savefig(fh, dpi=120, format="png")
    print("\n".join(lines))
    print(f"wrote {out}/kappa.json, kappa.md, kappa.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
