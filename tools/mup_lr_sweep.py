"""LR transfer across widths: final validation loss of a backbone (default: the MPNN, depth 3;
any model with ``--model-config configs/model/<name>.yaml``) on a (width × LR) grid, with μP
(``NNIPModule(mup_base_width=...)``) and, optionally, the standard parametrisation.

Every run uses NNIPModule's own machinery (μP init at construction, LR groups from
``configure_optimizers``, ``step_terms``), the config's optimizer (schedule-free AdamW), the same
seed and the same data order; the validation loss is the training loss (mae_l2) on the first
``--val-batches`` validation batches, evaluated on the schedule-free averaged weights.

    python tools/mup_lr_sweep.py --widths 32 64 128 --base-width 64 --steps 300 \\
        --lrs 3e-4 1e-3 3e-3 1e-2 3e-2 --param mup sp [--seeds 0 1] [--write-results benchmarks/RESULTS.md]
    python tools/mup_lr_sweep.py --model-config configs/model/mace.yaml --widths 8 16 32 --base-width 16 ...

With ``--model-config`` the backbone class and its ``init_args`` come from the config's
``model.backbone`` (``width`` is replaced by each grid width) and results go to the section
``mup_lr_sweep_<config stem>``.
"""

import argparse
import math
import sys
import time
from datetime import date
from pathlib import Path

import torch

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import MPNN, model_spec_from_config, resolve_model
from nnip_scale.training import NNIPModule
from nnip_scale.training.optim import is_schedule_free

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def load_backbone_spec(path: str | None) -> tuple[type, dict, str]:
    """(class, init_args without width, description) from a model config, or the default MPNN."""
    if path is None:
        return MPNN, {"depth": 3, "cutoff": 5.0}, "MPNN depth 3"
    try:
        class_path, init_args = model_spec_from_config(path)
        cls = resolve_model(class_path)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    init = {k: v for k, v in init_args.items() if k != "width"}
    return cls, init, f"{cls.__name__} from `{path}`"


def run(dm, cls, init: dict, width: int, lr: float, base_width: int | None, steps: int, val_batches: int,
        seed: int) -> float:
    torch.manual_seed(seed)
    backbone = cls(width=width, **init)
    module = NNIPModule(backbone, lr=lr, warmup_steps=min(50, steps // 5), mup_base_width=base_width)
    backbone.set_statistics(dm.statistics)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    sf = is_schedule_free(opt)
    if sf:
        opt.train()
    step = 0
    while step < steps:
        for batch in dm.train_dataloader():
            loss = module.step_terms(backbone, batch, train=True)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    if sf:
        opt.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for k, batch in enumerate(dm.val_dataloader()):
            if k >= val_batches:
                break
            total += float(module.step_terms(backbone, batch, train=False)["loss"])
            n += 1
    value = total / n
    return value if math.isfinite(value) else float("inf")


def table(results: dict, widths, lrs) -> str:
    """Markdown: one row per width, one column per LR, the best LR of each row in bold."""
    lines = ["| width | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |",
             "|---|" + "---|" * (len(lrs) + 1)]
    for w in widths:
        vals = [results[(w, lr)] for lr in lrs]
        best = min(range(len(lrs)), key=lambda i: vals[i])
        cells = [f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(vals)]
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {lrs[best]:g} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--model-config", help="configs/model/<name>.yaml (default: the MPNN, depth 3)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--base-width", type=int, default=64)
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val-batches", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="the loss is averaged over these seeds")
    p.add_argument("--param", nargs="+", choices=["mup", "sp"], default=["mup", "sp"])
    p.add_argument("--write-results", help="markdown file whose mup_lr_sweep section is replaced")
    args = p.parse_args()
    cls, init, described = load_backbone_spec(args.model_config)
    cutoff = float(init.setdefault("cutoff", 5.0))
    dm = AtomsDataModule(train=args.data, cutoff=cutoff, val_fraction=0.05, test_fraction=0.05,
                         batch_size=args.batch_size)
    dm.setup("fit")
    t0 = time.perf_counter()
    sections = []
    for param in args.param:
        base = args.base_width if param == "mup" else None
        results = {}
        for w in args.widths:
            for lr in args.lrs:
                losses = [run(dm, cls, init, w, lr, base, args.steps, args.val_batches, s) for s in args.seeds]
                results[(w, lr)] = sum(losses) / len(losses)
                print(f"{param} width {w} lr {lr:g}: val loss {results[(w, lr)]:.4f}", flush=True)
        title = (f"μP (base width {args.base_width})" if base else "standard parametrisation")
        sections.append(f"**{title}**: final validation loss (mae_l2, eV/atom + eV/Å)\n\n"
                        + table(results, args.widths, args.lrs))
    wall = time.perf_counter() - t0
    header = (f"Machine: 2-core CPU VM, shared with other jobs ({torch.get_num_threads()} threads, torch "
              f"{torch.__version__}); date {date.today()}; data `{args.data}`; {described}, schedule-free AdamW, "
              f"batch {args.batch_size}, {args.steps} steps, mean over seeds {args.seeds}, val loss on "
              f"{args.val_batches} × {args.batch_size} validation structures; wall {wall:.0f} s.\n"
              f"Command: `python tools/mup_lr_sweep.py "
              + (f"--model-config {args.model_config} " if args.model_config else "")
              + f"--widths {' '.join(map(str, args.widths))} --base-width "
              f"{args.base_width} --steps {args.steps} --lrs {' '.join(f'{x:g}' for x in args.lrs)} "
              f"--param {' '.join(args.param)} --seeds {' '.join(map(str, args.seeds))}`\n\n")
    text = header + "\n\n".join(sections) + "\n"
    print(text)
    if args.write_results:
        from _results import replace_section

        section = "mup_lr_sweep" if args.model_config is None else f"mup_lr_sweep_{Path(args.model_config).stem}"
        replace_section(args.write_results, section, text)


if __name__ == "__main__":
    main()
