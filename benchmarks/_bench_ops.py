"""Shared parts of the op benchmarks (``bench_scatter.py``, ``bench_tp.py``, ``bench_sc.py``): the
interleaved timing loop, the bytes autograd saves for the backward, the peak resident memory a call
adds (``peak_rss_growth``, run in a fresh interpreter by the caller), the common command-line
options, the report's header and footer, and the paired native/torch MACE training-step timing.

Timing: the methods of one case run round-robin (``median_interleaved``), so load from other processes
hits all of them alike; medians are reported. On CUDA every call is synchronised.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime as dt
import gc
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def median_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                       device: torch.device | str = "cpu",
                       warmup_fns: dict[str, Callable[[], object]] | None = None) -> dict[str, float]:
    """Median wall time (ms) of each ``fn()`` over ``repeats`` rounds, after ``warmup`` calls each; within a
    round the methods run one after another (CUDA: synchronised after each call). ``warmup_fns`` (same
    keys), if given, are warmed up instead: e.g. the same call on a slice of a large input, which pays the
    one-time costs (lazy initialisation, a library building its kernels) without a full-size call."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for fn in (warmup_fns or fns).values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def saved_bytes(forward: Callable[[], object], inputs: list[torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves while ``forward()`` runs (the memory a forward keeps
    for its backward), the storages of ``inputs`` excluded."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except RuntimeError:  # tensors without storage
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    exclude = {t.untyped_storage().data_ptr() for t in inputs}
    return sum(n for p, n in seen.items() if p not in exclude)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"peak_rss_growth: /proc/self/status has no {field} line")


def peak_rss_growth(fn: Callable[[], object]) -> int:
    """Bytes by which the process's peak resident set (``VmHWM``) rises above its resident set just
    before ``fn()`` runs: the memory a call touches at its peak, whatever allocated it (autograd
    intermediates, outputs, gradients, a library's workspaces). Linux only: glibc's free memory is
    returned first (``malloc_trim``) and the high-water mark is reset through ``/proc/self/clear_refs``
    (Linux ≥ 4.0). Meant for a fresh interpreter that has run ``fn`` once on a small input (lazy
    initialisation) and holds the inputs already, so the growth is the call's own."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        raise RuntimeError("peak_rss_growth: needs Linux /proc/self/clear_refs to reset the peak resident set")
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc_trim(0)
    before = _status_kib("VmRSS")
    clear_refs.write_text("5")  # VmHWM := VmRSS
    if _status_kib("VmHWM") > before + 1024:
        raise RuntimeError("peak_rss_growth: the peak resident set could not be reset (/proc/self/clear_refs)")
    fn()
    return 1024 * (_status_kib("VmHWM") - before)


def load_average() -> float:
    """The 1-min load average (a busy machine inflates all times)."""
    return os.getloadavg()[0]


def command_line() -> str:
    """The command that ran this script, as a user would type it."""
    return f"python {' '.join(shlex.quote(a) for a in sys.argv)}"


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def add_report_args(p: argparse.ArgumentParser, section: str, repeats: int, widths: list[int],
                    model_repeats: int) -> None:
    """The options bench_tp.py and bench_sc.py share: the op-level channels, ℓ, dtype and repeats, op/model
    switches, the model-level batch and widths, threads, the machine and date recorded, and ``--write``."""
    p.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    p.add_argument("--ells", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--widths", type=int, nargs="+", default=widths)
    p.add_argument("--model-repeats", type=int, default=model_repeats)
    p.add_argument("--model-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--machine", default="2-core VM, no GPU")
    p.add_argument("--date", default=f"{dt.date.today()}")
    p.add_argument("--write", metavar="RESULTS_MD", help=f"replace the {section} section of this file")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the op level on the GPU (native CUDA kernels called directly until registered, the "
                        "references); the model level stays on the CPU and is skipped")
    p.add_argument("--section", default=section,
                   help=f"write into this section instead of {section} (to split a long benchmark into several runs, "
                        f"e.g. {section}:e100k with other --edges; a section other than {section} gets no title)")


def setup_device(p: argparse.ArgumentParser, args, section: str) -> None:
    """``--device cuda``: fail without a GPU, skip the model level (MACE's native CUDA ops are not registered
    yet, so it runs on the CPU only), name the GPU as the machine and write into ``<section>:cuda``."""
    if args.device != "cuda":
        return
    if not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    args.skip_model = True
    if args.machine == p.get_default("machine"):
        args.machine = torch.cuda.get_device_name()
    if args.section == section:
        args.section = f"{section}:cuda"


def run_report(args, title: str, section: str, op_heading: str, op_table: Callable[[], list[str]], op_notes: str,
               model_part: Callable[[], list[str]]) -> str:
    """Run the op and model parts (unless skipped) into one report: title, machine, command, the op-level
    heading, table (``op_table()``) and notes, the model-level lines (``model_part()``), the wall time
    and the load at the start and end; print it and, with ``--write``, replace ``--section`` of that file
    (the title only in the default ``section``)."""
    from _results import replace_section

    if args.threads:
        torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), load_average()
    body = [title, ""] if args.section == section else []
    body += [
        (f"Machine: {args.machine} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads), "
         f"shared with other jobs; torch {torch.__version__}; date {args.date}."),
        f"Command: `{command_line()}`",
        "",
    ]
    if not args.skip_ops:
        body += [op_heading, "", *op_table(), "", op_notes, ""]
    if not args.skip_model:
        body += ["### Model level", "", *model_part(), ""]
    body.append(f"Wall time of the benchmark: {time.perf_counter() - t0:.0f} s; 1-min load average {load0:.1f} at the "
                f"start, {load_average():.1f} at the end (a busy machine inflates all times alike).")
    text = "\n".join(body)
    print(text)
    if args.write:
        replace_section(args.write, args.section, text)
    return text


def demo_items(args, init_args: dict):
    """The dataset items of the first training batch of ``--data`` (``--batch-size`` structures), the
    DataLoader's collate function and the data statistics."""
    from nnip_scale.data import AtomsDataModule

    dm = AtomsDataModule(train=args.data, cutoff=float(init_args.get("cutoff", 5.0)), val_fraction=0.05,
                         test_fraction=0.0, batch_size=args.batch_size)
    dm.setup("fit")
    dl = dm.train_dataloader()
    return [dl.dataset[i] for i in next(iter(dl.batch_sampler))], dl.collate_fn, dm.statistics


def demo_batch(args, init_args: dict):
    """The first training batch of ``--data`` (``--batch-size`` structures) and the data statistics."""
    items, collate, stats = demo_items(args, init_args)
    return collate(items), stats


def paired_mace_steps(args, settings: dict[tuple, dict]):
    """MACE (``configs/model/mace.yaml``) training steps on the demo batch, native vs torch backend.

    ``settings``: key → constructor overrides (must include ``width``). Each key's native and torch
    runners run back to back in every one of ``--model-repeats`` rounds (``--model-steps`` steps each):
    the ratio of each round is robust to load that drifts between rounds. Returns (batch, init_args,
    runners keyed (key, backend), median step ms keyed (key, backend), torch/native ratios per key)."""
    from bench_models import Runner, discover

    configs = {c[0]: c for c in discover(ROOT / "configs" / "model")}
    name, cls, init_args, options = configs["mace"]
    batch, stats = demo_batch(args, init_args)
    runners = {}
    for key, overrides in settings.items():
        width = overrides["width"]
        extra = {k: v for k, v in overrides.items() if k != "width"}
        for backend in ("native", "torch"):
            runners[key, backend] = Runner(name, cls, {**init_args, **extra, "backend": backend}, options, width,
                                           batch, stats, torch.device("cpu"))
    for r in runners.values():
        for _ in range(2):
            r.step()
    ratios: dict[tuple, list[float]] = {}
    for _ in range(args.model_repeats):
        for key in settings:
            nat, ref = runners[key, "native"], runners[key, "torch"]
            nat.timed(args.model_steps)
            ref.timed(args.model_steps)
            ratios.setdefault(key, []).append(ref.times[-1] / nat.times[-1])
    med = {k: 1e3 * statistics.median(r.times) for k, r in runners.items()}
    return batch, init_args, runners, med, {k: statistics.median(v) for k, v in ratios.items()}


def step_row(cells: list, native_ms: float, torch_ms: float, ratio: float, op_native_ms: float,
             op_torch_ms: float) -> str:
    """One row of a model-level table (``cells`` first: the case), printed as it is made: the native and
    torch step times, their paired ratio, the op alone on both backends and the op's share of the torch
    step."""
    row = (f"| {' | '.join(str(c) for c in cells)} | {native_ms:.1f} | {torch_ms:.1f} | {ratio:.2f}× | "
           f"{op_native_ms:.1f} / {op_torch_ms:.1f} | {100 * op_torch_ms / torch_ms:.0f} % |")
    print(row, flush=True)
    return row
