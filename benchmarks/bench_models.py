"""Training-step time and atoms/s of every model in configs/model/*.yaml at several widths.

One step = forward + forces + loss + backward + optimizer step (``NNIPModule.step_terms`` and the
optimizer the config names), on the same batch of demo molecules for every model. Repeats are
interleaved across (model, width) so drifting machine load hits all of them alike; the median
per-step time is reported. Configs whose backbone class cannot be imported are skipped (with the
reason printed).

    python benchmarks/bench_models.py [--widths 32 64 128] [--device cpu|cuda] [--write benchmarks/RESULTS.md]
"""

import argparse
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import yaml
from _results import replace_section

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import model_spec_from_config, resolve_model
from nnip_scale.training import NNIPModule
from nnip_scale.training.optim import is_schedule_free

ROOT = Path(__file__).resolve().parents[1]


def discover(config_dir: Path) -> list[tuple[str, type, dict, dict]]:
    """(config name, backbone class, backbone init_args, NNIPModule options) of each importable config."""
    found = []
    for path in sorted(config_dir.glob("*.yaml")):
        try:
            class_path, init_args = model_spec_from_config(path)
            cls = resolve_model(class_path)
        except ValueError as err:
            print(f"skip {path.name}: {err}")
            continue
        model_cfg = (yaml.safe_load(path.read_text()) or {}).get("model", {})
        options = {k: v for k, v in model_cfg.items() if k != "backbone"}
        found.append((path.stem, cls, init_args, options))
    return found


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


class Runner:
    """One (config, width): module, optimizer, and a timed training step."""

    def __init__(self, name, cls, init_args, options, width, batch, statistics_, device):
        torch.manual_seed(0)
        self.name, self.width, self.batch, self.device = name, width, batch, device
        backbone = cls(**{**init_args, "width": width})
        backbone.set_statistics(statistics_)
        self.module = NNIPModule(backbone, **options).to(device)
        opt = self.module.configure_optimizers()
        self.opt = opt["optimizer"] if isinstance(opt, dict) else opt
        if is_schedule_free(self.opt):
            self.opt.train()
        self.counts = backbone.count_parameters()
        self.times: list[float] = []

    def step(self) -> None:
        terms = self.module.step_terms(self.module.backbone, self.batch, train=True)
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        """Mean seconds per step over ``steps`` steps (also appended to ``times``)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        self.times.append((time.perf_counter() - t0) / steps)
        return self.times[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--configs", default=str(ROOT / "configs" / "model"))
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per (model, width)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds")
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--only", nargs="*", help="config names to run (default: all)")
    p.add_argument("--machine", help="machine description for the table header (default: detected)")
    p.add_argument("--write", help="markdown file whose bench_models section is replaced with the table")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda but torch.cuda.is_available() is False (this torch: {torch.__version__})")

    configs = [c for c in discover(Path(args.configs)) if not args.only or c[0] in args.only]
    cutoff = max(float(c[2].get("cutoff", 5.0)) for c in configs)
    dm = AtomsDataModule(train=args.data, cutoff=cutoff, val_fraction=0.05, test_fraction=0.0,
                         batch_size=args.batch_size)
    dm.setup("fit")
    batch = to_device(next(iter(dm.train_dataloader())), device)
    runners = []
    for name, cls, init_args, options in configs:
        for w in args.widths:
            try:
                runners.append(Runner(name, cls, init_args, options, w, batch, dm.statistics, device))
            except Exception as err:  # a model that cannot run on this machine: say so, keep the rest
                print(f"skip {name} width {w}: {type(err).__name__}: {err}")
    for r in runners:
        for _ in range(args.warmup):
            r.step()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for r in runners:
            r.timed(args.steps)
    wall = time.perf_counter() - t0

    dev = args.machine or (torch.cuda.get_device_name(device) if device.type == "cuda" else
                           f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    header = (f"Machine: {dev}; torch {torch.__version__}; date {date.today()}; data `{args.data}`, one batch of "
              f"{batch['n_structures']} structures ({batch['n_atoms']} atoms, {batch['n_edges']} edges); "
              f"median of {args.repeats} interleaved rounds × {args.steps} steps (timed wall {wall:.0f} s).\n"
              f"Command: `python benchmarks/bench_models.py --device {args.device} --widths "
              f"{' '.join(map(str, args.widths))} --repeats {args.repeats} --steps {args.steps}`\n\n")
    rows = ["| config | width | N (excl. embedding) | N total | step (ms) | min–max (ms) | atoms/s |",
            "|---|---|---|---|---|---|---|"]
    for r in runners:
        med = statistics.median(r.times)
        rows.append(f"| {r.name} | {r.width} | {r.counts['n_params']:,} | {r.counts['n_params_total']:,} | "
                    f"{1e3 * med:.1f} | {1e3 * min(r.times):.1f}–{1e3 * max(r.times):.1f} | "
                    f"{batch['n_atoms'] / med:,.0f} |")
    table = "## Training step per model and width (issue 3)\n\n" + header + "\n".join(rows) + "\n"
    print(table)
    if args.write:
        replace_section(args.write, "bench_models", table)


if __name__ == "__main__":
    main()
