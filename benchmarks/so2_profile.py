"""Where the time of an eSEN training step goes (torch.profiler), by part of the edge path.

Forward regions are marked with ``record_function`` around the model's calls of the Wigner-D
construction, ``so2_rotate_in``, the SO(2) convolutions and ``so2_rotate_out_scatter``. Backward
(and, for conservative forces, double-backward) work is attributed through the autograd sequence
numbers the profiler records: a backward node ``evaluate_function: XBackward0`` belongs to the region
of the forward op that created it (same sequence number), and ops run *inside* a backward node
(the first backward with create_graph, whose own backward is the double backward) inherit that
node's region. Everything else is "rest" (MLPs, layer norms, gates, heads, loss, optimizer).

Used by ``benchmarks/bench_so2.py --profile`` (before/after tables); importable on its own.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch.autograd.profiler import record_function

REGIONS = ("wigner", "rotate_in", "so2_conv", "rotate_out_scatter")


@contextlib.contextmanager
def marked_regions():
    """Wrap the eSEN model's edge-path calls in ``record_function`` regions (restored on exit)."""
    import nnip_scale.models.esen as esen
    from nnip_scale.nn import so3

    patched = []

    def wrap(obj, attr, label):
        fn = getattr(obj, attr)

        def inner(*a, **k):
            with record_function(f"region::{label}"):
                return fn(*a, **k)

        setattr(obj, attr, inner)
        patched.append((obj, attr, fn))

    for attr, label in (("wigner_d", "wigner"), ("edge_rotation", "wigner"), ("so2_wigner_blocks", "wigner"),
                        ("so2_rotate_in", "rotate_in"), ("so2_rotate_out_scatter", "rotate_out_scatter")):
        if hasattr(esen, attr):
            wrap(esen, attr, label)
    wrap(so3.SO2Convolution, "forward", "so2_conv")
    try:
        yield
    finally:
        for obj, attr, fn in reversed(patched):
            setattr(obj, attr, fn)


def _region_of_time(intervals, t0, t1):
    for label, a, b in intervals:
        if a <= t0 and t1 <= b:
            return label
    return None


def attribute(events) -> dict[str, float]:
    """Seconds per region (plus "rest" and "total") from a profiler's ``events()``."""
    evs = [e for e in events if e.time_range.end > e.time_range.start]
    intervals = [(e.name.removeprefix("region::"), e.time_range.start, e.time_range.end)
                 for e in evs if e.name.startswith("region::")]
    bwd = [e for e in evs if e.name.startswith("autograd::engine::evaluate_function:")]
    # forward ops that record a sequence number: seq -> region (by time containment)
    seq_region: dict[int, str | None] = {}
    ops = sorted((e for e in evs if e.sequence_nr >= 0 and not e.name.startswith("autograd::")),
                 key=lambda e: e.time_range.start)
    bwd_sorted = sorted(bwd, key=lambda e: e.time_range.start)

    def enclosing_backward(e):
        best = None
        for b in bwd_sorted:
            if b.time_range.start > e.time_range.start:
                break
            if b.time_range.end >= e.time_range.end and b is not e:
                best = b  # innermost: later starts are nested deeper
        return best

    bwd_region: dict[int, str | None] = {}

    def region_of_backward(b):
        key = id(b)
        if key not in bwd_region:
            bwd_region[key] = seq_region.get(b.sequence_nr)
        return bwd_region[key]

    # process in time order so that a backward node's region is known before the ops inside it
    timeline = sorted([(e.time_range.start, 0, e) for e in bwd] + [(e.time_range.start, 1, e) for e in ops],
                      key=lambda t: (t[0], t[1]))
    for _, kind, e in timeline:
        if kind == 1:
            region = _region_of_time(intervals, e.time_range.start, e.time_range.end)
            if region is None:
                parent = enclosing_backward(e)
                region = region_of_backward(parent) if parent is not None else None
            seq_region.setdefault(e.sequence_nr, region)
    out = {r: 0.0 for r in REGIONS}
    # forward: outermost region intervals (no double counting of nested regions)
    intervals.sort(key=lambda t: t[1])
    last_end = -1
    for label, a, b in intervals:
        if a >= last_end:
            out[label] += (b - a) * 1e-6
            last_end = b
    # backward nodes: top-level ones only (nested evaluate_function are within an outer one)
    for b in bwd_sorted:
        parent = enclosing_backward(b)
        if parent is not None and region_of_backward(parent) == region_of_backward(b):
            continue  # its time is inside the parent's, already counted
        region = region_of_backward(b)
        if region in out:
            dur = (b.time_range.end - b.time_range.start) * 1e-6
            out[region] += dur
            if parent is not None and region_of_backward(parent) in out:
                out[region_of_backward(parent)] -= dur  # nested node of another region: move its time
    return out


def profile_step(step, repeats: int = 3, warmup: int = 2) -> dict[str, float]:
    """Median seconds per region over ``repeats`` profiled calls of ``step()`` (under marked_regions)."""
    from torch.profiler import ProfilerActivity, profile

    runs = []
    with marked_regions():
        for _ in range(warmup):
            step()
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                step()
                total = time.perf_counter() - t0
            parts = attribute(prof.events())
            parts["total"] = total
            parts["rest"] = total - sum(parts[r] for r in REGIONS)
            runs.append(parts)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def esen_step(lmax: int, mmax: int, width: int, forces: str, backend: str, batch: dict, stats,
              depth: int = 2, dtype=torch.float32):
    """A training-step closure (forward, forces, loss, backward, optimizer step) for one eSEN."""
    from nnip_scale.models import ESEN
    from nnip_scale.training import NNIPModule
    from nnip_scale.training.optim import is_schedule_free

    torch.manual_seed(0)
    backbone = ESEN(width=width, depth=depth, lmax=lmax, mmax=mmax, cutoff=5.0, num_radial=16, forces=forces,
                    backend=backend)
    backbone.set_statistics(stats)
    module = NNIPModule(backbone, loss="mae_l2", optimizer="schedulefree_adamw", lr=3e-3, warmup_steps=50).to(dtype)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    if is_schedule_free(opt):
        opt.train()
    batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}

    def step():
        terms = module.step_terms(module.backbone, batch, train=True)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    return step


def demo_batch(data: str = "builtin:molecules-demo", batch_size: int = 32):
    from nnip_scale.data import AtomsDataModule

    dm = AtomsDataModule(train=data, cutoff=5.0, val_fraction=0.05, test_fraction=0.0, batch_size=batch_size)
    dm.setup("fit")
    return next(iter(dm.train_dataloader())), dm.statistics


def profile_table(cases, backends, batch, stats, repeats=3) -> list[str]:
    """Markdown rows: ms per region and its share of the step, per (lmax, mmax, width, forces, backend)."""
    rows = ["| ℓmax | mmax | W | forces | backend | step (ms) | wigner | rotate_in | so2_conv | rotate_out_scatter | rest |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lmax, mmax, width, forces in cases:
        for backend in backends:
            r = profile_step(esen_step(lmax, mmax, width, forces, backend, batch, stats), repeats=repeats)
            cells = [f"{1e3 * r[k]:.1f} ({100 * r[k] / r['total']:.0f} %)" for k in (*REGIONS, "rest")]
            rows.append(f"| {lmax} | {mmax} | {width} | {forces} | {backend} | {1e3 * r['total']:.1f} | "
                        + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    batch, stats = demo_batch()
    print(f"batch: {batch['n_atoms']} atoms, {batch['n_edges']} edges")
    cases = [(ell, m, w, f) for ell, m in ((2, 1), (4, 2)) for w in (32, 64) for f in ("direct", "conservative")]
    print("\n".join(profile_table(cases, ["torch"], batch, stats)))
