"""Compare the MPNN's direct force heads (edge vs node) and conservative forces on one dataset:
validation force MAE after a fixed number of AdamW steps, from the same seed.

    python benchmarks/compare_force_heads.py --data builtin:molecules-demo --steps 600 [--write benchmarks/RESULTS.md]
"""

import platform
import time
from datetime import date

import torch
from _results import benchmark_parser, publish_table

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import MPNN
from nnip_scale.training import EnergyForceLoss, EnergyForceMetrics


def evaluate(model, loader, loss_fn) -> float:
    metrics = EnergyForceMetrics()
    with torch.no_grad():
        for batch in loader:
            pred = model(batch)
            metrics.update(pred, batch, loss_fn(pred, batch)["loss"])
    return float(metrics.compute()["force_mae"])


def run(dm, variant: dict, steps: int, lr: float, width: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = MPNN(width=width, depth=3, cutoff=dm.cutoff, **variant)
    model.set_statistics(dm.statistics)
    opt = torch.optim.AdamW(model.parameters(), lr)
    loss_fn = EnergyForceLoss()
    start = evaluate(model, dm.val_dataloader(), loss_fn)
    step, t0 = 0, time.perf_counter()
    while step < steps:
        for batch in dm.train_dataloader():
            loss = loss_fn(model(batch), batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return {"start": start, "end": evaluate(model, dm.val_dataloader(), loss_fn), "seconds": time.perf_counter() - t0}


def main():
    p = benchmark_parser(__doc__, "force_heads")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dm = AtomsDataModule(train=args.data, cutoff=5.0, val_fraction=0.05, test_fraction=0.0, batch_size=args.batch_size)
    dm.setup("fit")
    variants = {
        "direct, edge head, 32 radial": dict(forces="direct", force_head="edge", num_radial=32),
        "direct, edge head, 8 radial": dict(forces="direct", force_head="edge", num_radial=8),
        "direct, node head, 32 radial": dict(forces="direct", force_head="node", num_radial=32),
        "conservative, 32 radial": dict(forces="conservative", num_radial=32),
    }
    rows = ["| MPNN variant | val force MAE at start (eV/Å) | after training (eV/Å) | train time (s) |", "|---|---|---|---|"]
    for name, variant in variants.items():
        r = run(dm, variant, args.steps, args.lr, args.width, args.seed)
        rows.append(f"| {name} | {r['start']:.4f} | {r['end']:.4f} | {r['seconds']:.1f} |")
        print(rows[-1], flush=True)
    header = (f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}; "
              f"date {date.today()}; data `{args.data}`; width {args.width}, depth 3, AdamW lr {args.lr}, batch "
              f"{args.batch_size} structures, {args.steps} steps, seed {args.seed}.\n"
              f"Command: `python benchmarks/compare_force_heads.py --data {args.data} --steps {args.steps}`\n\n")
    publish_table(header, rows, args.write, "force_heads")


if __name__ == "__main__":
    main()
