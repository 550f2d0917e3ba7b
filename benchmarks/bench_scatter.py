"""Benchmark message aggregation (scatter-sum of edge features onto atoms).

Compares nnip_scale's native op with ``Tensor.index_add_``, ``Tensor.scatter_reduce_(reduce='sum')``
and torch-scatter (when installed), forward and forward+backward (grad w.r.t. the edge features),
fp32, median wall time of ``--repeats`` runs after warm-up, methods interleaved round-robin
(CUDA: synchronised). The native op's achieved bandwidth (the least memory traffic of the pass over its
time) is reported, on CUDA as a share of the device's DRAM peak (``--peak-gbps`` to override).

    python benchmarks/bench_scatter.py                       # print the table
    python benchmarks/bench_scatter.py --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import command_line, machine_description, median_interleaved  # noqa: E402
from _results import replace_section  # noqa: E402

from nnip_scale.ops import native_supports, scatter_sum  # noqa: E402


def _methods(device: torch.device) -> dict:
    out = {}
    if native_supports("scatter_sum", device, torch.float32):
        out["native"] = lambda s, i, n: scatter_sum(s, i, n, backend="native")
    out["index_add_"] = lambda s, i, n: s.new_zeros((n, s.shape[1])).index_add_(0, i, s)
    out["scatter_reduce_"] = lambda s, i, n: s.new_zeros((n, s.shape[1])).scatter_reduce_(
        0, i.unsqueeze(1).expand_as(s), s, reduce="sum", include_self=True
    )
    try:
        import torch_scatter

        out["torch-scatter"] = lambda s, i, n: torch_scatter.scatter(s, i, 0, dim_size=n, reduce="sum")
    except ImportError:
        pass
    return out


def run(device: torch.device, n_atoms: int, n_edges: int, features: list[int], repeats: int):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, n_atoms, (n_edges,), generator=g).to(device)
    methods = _methods(device)
    rows = []
    for F in features:
        src = torch.randn(n_edges, F, generator=g).to(device)
        src_g = src.clone().requires_grad_(True)
        grad = torch.randn(n_atoms, F, generator=g).to(device)
        fwd = median_interleaved(
            {n: (lambda fn=fn, src=src, index=index: fn(src, index, n_atoms)) for n, fn in methods.items()}, repeats, 3, device
        )
        fb = median_interleaved(
            {
                n: (lambda fn=fn, src_g=src_g, grad=grad: torch.autograd.grad(fn(src_g, index, n_atoms), src_g, grad))
                for n, fn in methods.items()
            },
            repeats,
            3,
            device,
        )
        rows += [(F, n, fwd[n], fb[n]) for n in methods]
    return list(methods), rows


def peak_bandwidth_gbps(device: torch.device, override: float | None = None) -> float | None:
    """The memory bandwidth the achieved one is compared with (GB/s): ``override`` (``--peak-gbps``), else on
    CUDA the device's DRAM peak from its properties (2 transfers per memory clock × bus width), else None."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9 if clock_khz and bus_bits else None


def min_traffic_bytes(n_edges: int, n_atoms: int, features: int, elem: int = 4) -> tuple[int, int]:
    """The least memory traffic of (forward, forward+backward): the forward reads the edge rows and the index
    and writes the atom rows once; the backward (a gather) reads the atom-row gradient and the index and
    writes the edge-row gradient once."""
    fwd = n_edges * features * elem + n_edges * 8 + n_atoms * features * elem
    return fwd, 2 * fwd


def _table(names, rows, args, device) -> str:
    by = {(F, n): (a, b) for F, n, a, b in rows}
    feats = sorted({r[0] for r in rows})
    machine = machine_description(device)
    peak = peak_bandwidth_gbps(device, args.peak_gbps)
    peak_text = (f"{peak:,.0f} GB/s ({'--peak-gbps' if args.peak_gbps else 'from the device properties'})"
                 if peak else "none on the CPU")
    lines = [
        f"Scatter-sum, fp32, {args.atoms} atoms, {args.edges} edges, device `{device.type}` "
        f"({machine}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"1-min load average {os.getloadavg()[0]:.1f} at the end (a busy machine inflates all times).",
        f"Command: `{command_line()}`",
        "",
        f"native GB/s: the least memory traffic of the pass (forward: edge rows and index read, atom rows "
        f"written once; backward the same for the gather) over its median time; peak: {peak_text}.",
        "",
        "| F | pass | " + " | ".join(f"{n} (ms)" for n in names) + " | index_add_ / native | native GB/s | of peak |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for F in feats:
        traffic = min_traffic_bytes(args.edges, args.atoms, F)
        for k, label in ((0, "fwd"), (1, "fwd+bwd")):
            vals = [by[(F, n)][k] for n in names]
            ratio = by[(F, "index_add_")][k] / by[(F, "native")][k] if "native" in names else float("nan")
            gbps = traffic[k] / (by[(F, "native")][k] * 1e-3) / 1e9 if "native" in names else float("nan")
            share = f"{100 * gbps / peak:.0f} %" if peak else "—"
            lines.append(
                f"| {F} | {label} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {ratio:.2f}× | {gbps:.1f} | {share} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=5000)
    p.add_argument("--edges", type=int, default=100_000)
    p.add_argument("--features", type=int, nargs="+", default=[16, 64, 128, 256])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--write", metavar="RESULTS_MD", help="replace the bench_scatter:<device> section")
    p.add_argument("--peak-gbps", type=float, default=None,
                   help="the memory bandwidth to compare with (GB/s; default on CUDA: the device's DRAM peak)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for d in devices:
        if d == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipping the CUDA benchmark")
            continue
        device = torch.device(d)
        names, rows = run(device, args.atoms, args.edges, args.features, args.repeats)
        table = _table(names, rows, args, device)
        print(table + "\n")
        if args.write:
            replace_section(args.write, f"bench_scatter:{d}", table)


if __name__ == "__main__":
    main()
