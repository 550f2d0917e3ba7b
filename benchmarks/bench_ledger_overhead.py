"""Overhead of the compute ledger: time spent in its per-step hooks relative to the training step,
measured inside a real run (the one-time FLOP calibration on the first batch reported separately).

    python benchmarks/bench_ledger_overhead.py --data builtin:molecules-demo --steps 300 [--write benchmarks/RESULTS.md]
"""

import functools
import platform
import tempfile
import time
from datetime import date

import lightning as L
import torch
from _results import benchmark_parser, publish_table

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import MPNN
from nnip_scale.training import ComputeLedger, NNIPModule


class TimedLedger(ComputeLedger):
    """The ledger with a stopwatch around each hook that runs every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook_s = {"on_train_batch_start": [], "on_train_batch_end": [], "on_validation_batch_start": []}
        for name in self.hook_s:
            setattr(self, name, self._timed(getattr(super(), name), name))

    def _timed(self, fn, name):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            self.hook_s[name].append(time.perf_counter() - t)
            return out

        return wrapper


class StepTimer(L.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, *args):
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.steps.append(time.perf_counter() - self._t)


def main():
    p = benchmark_parser(__doc__, "ledger_overhead")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=64)
    args = p.parse_args()
    L.seed_everything(0)
    dm = AtomsDataModule(args.data, cutoff=5.0, batch_size=32, val_fraction=0.05, test_fraction=0.0)
    ledger, timer = TimedLedger(path=tempfile.mkdtemp(prefix="nnip_ledger_") + "/ledger.jsonl"), StepTimer()
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, inference_mode=False, limit_val_batches=5,
                        val_check_interval=100, check_val_every_n_epoch=None,
                        callbacks=[timer, ledger], num_sanity_val_steps=0)
    trainer.fit(NNIPModule(MPNN(width=args.width, depth=3)), datamodule=dm)
    starts, ends = ledger.hook_s["on_train_batch_start"], ledger.hook_s["on_train_batch_end"]
    calibration = starts[0]
    per_step = [s + e for s, e in zip(starts[1:], ends[1:])]
    step = sorted(timer.steps[1:])[len(timer.steps[1:]) // 2]
    hook = sorted(per_step)[len(per_step) // 2]
    mean_ratio = sum(per_step) / sum(timer.steps[1:])
    rows = ["| quantity | value |", "|---|---|",
            f"| median training step (MPNN width {args.width}, 32 molecules) | {step * 1e3:.2f} ms |",
            f"| median ledger hook time per step | {hook * 1e6:.1f} µs |",
            f"| ledger share of training-step time (total over {len(per_step)} steps) | {100 * mean_ratio:.3f} % |",
            f"| one-time FLOP calibration on the first batch | {calibration:.2f} s |"]
    header = (f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; date {date.today()}; data `{args.data}`.\n"
              f"Command: `python benchmarks/bench_ledger_overhead.py --data {args.data} --steps {args.steps}`\n\n")
    publish_table(header, rows, args.write, "ledger_overhead")


if __name__ == "__main__":
    main()
