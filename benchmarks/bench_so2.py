"""Benchmark the eSEN edge rotations (``so2_rotate_in`` + ``so2_rotate_out_scatter``): native vs torch.

Op level: the rotation part of an eSEN edge path, e = rotate_in(x) (gather both endpoints, rotate
into the edge frame) then rotate_out_scatter(e[..., :C]) (rotate back, sum onto receivers), for E
edges with E / ``--neighbors`` atoms (receivers sorted, as neighbour lists give them), C channels,
ℓmax L and mmax min(L, ``--mmax``): forward, forward+backward (gradients of x and of the Wigner
rows, as a conservative model needs) and forward+backward+double backward (first gradients with
create_graph, then the gradient of a scalar of them: a conservative model's force loss). The
torch reference runs on the dense Wigner rows [E, R, K] (what the model's torch path builds), the
native kernels on the compact per-degree blocks [E, NB]; both built once outside the timing. Also
the bytes the forward saves for the backward (``saved_tensors_hooks``). fp32 unless ``--dtype``.

Model level: one eSEN training step (forward, forces, loss, backward, optimizer step) on a batch of
demo molecules, direct and conservative forces, backend native vs torch, widths and ℓmax as given,
and where the time goes (``so2_profile.py``: torch.profiler regions) for both backends.

Methods run round-robin within each case (machine load hits them alike); medians are reported.
The SO(2) convolution stays dense matrix products on every backend (its share is in the profile).

    python benchmarks/bench_so2.py                                  # print the tables
    python benchmarks/bench_so2.py --write benchmarks/RESULTS.md    # also replace the bench_so2 section
    python benchmarks/bench_so2.py --device cuda --skip-model --write ...  # op level on a GPU (bench_so2:cuda)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import median_interleaved  # noqa: E402
from _results import replace_section  # noqa: E402
from so2_profile import REGIONS, demo_batch, esen_step, profile_step  # noqa: E402

from nnip_scale.nn.wigner import edge_rotation, so2_wigner_blocks, wigner_d  # noqa: E402
from nnip_scale.ops import native_supports  # noqa: E402
from nnip_scale.ops._native import native_state  # noqa: E402
from nnip_scale.ops.so2 import (  # noqa: E402
    so2_block_rows,
    so2_layout,
    so2_rotate_in,
    so2_rotate_out_scatter,
)
from nnip_scale.ops.so2_native import rotate_in_native, rotate_out_scatter_native  # noqa: E402

PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dbl")


def _case(lmax: int, mmax: int, channels: int, n_edges: int, n_atoms: int, dtype, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(n_edges, 3, generator=g, dtype=torch.float64), dim=-1)
    rot = edge_rotation(u)
    rows = torch.tensor([ell * ell + ell + m for ell, m in so2_layout(lmax, mmax)])
    dense = wigner_d(rot, lmax, rows=rows).to(dtype)
    compact = so2_wigner_blocks(rot, lmax, mmax).to(dtype)
    x = torch.randn(n_atoms, (lmax + 1) ** 2, channels, generator=g, dtype=dtype)
    dst = torch.sort(torch.randint(0, n_atoms, (n_edges,), generator=g)).values  # receivers (sorted)
    src = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return tuple(t.to(device) for t in (dense, compact, so2_block_rows(lmax, mmax), x, src, dst))


def _edge_path(backend, x, wigner, src, dst, rows):
    K, C = x.shape[1], x.shape[2]
    if backend == "native" and x.is_cuda:
        # the CUDA kernels are not registered with the resolver until their tests have run on a GPU
        # (docs/ops.md): called directly, as the registered implementation would be (same ops, same autograd)
        e = rotate_in_native(x, wigner, dst, src, block_rows=rows)
        return rotate_out_scatter_native(e[..., :C], wigner, dst, x.shape[0], block_rows=rows, n_components=K)
    kw = {} if backend == "torch" else {"block_rows": rows, "n_components": K}
    e = so2_rotate_in(x, wigner, dst, src, backend=backend, block_rows=kw.get("block_rows"))
    return so2_rotate_out_scatter(e[..., :C], wigner, dst, x.shape[0], backend=backend, **kw)


def _pass_fn(kind, backend, x, wigner, src, dst, rows):
    if kind == "fwd":
        return lambda: _edge_path(backend, x, wigner, src, dst, rows)
    leaves = [x.clone().requires_grad_(True), wigner.clone().requires_grad_(True)]
    g_out = torch.ones_like(x)

    def fwd_bwd():
        return torch.autograd.grad(_edge_path(backend, *leaves, src, dst, rows), leaves, g_out)

    def fwd_bwd_dbl():
        out = _edge_path(backend, *leaves, src, dst, rows)
        gx, gw = torch.autograd.grad(out, leaves, g_out, create_graph=True)
        return torch.autograd.grad(gx.square().sum() + gw.square().sum(), leaves)

    return fwd_bwd if kind == "fwd+bwd" else fwd_bwd_dbl


def _saved_bytes(backend, x, wigner, src, dst, rows) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    leaves = [x.clone().requires_grad_(True), wigner.clone().requires_grad_(True)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _edge_path(backend, *leaves, src, dst, rows)
    return total


def op_benchmark(args) -> list[str]:
    dtype = getattr(torch, args.dtype)
    rows_md = ["| ℓmax | mmax | E | C | pass | torch (ms) | native (ms) | speed-up | saved for bwd: torch / native (MB) |",
               "|---|---|---|---|---|---|---|---|---|"]
    for lmax in args.lmax:
        mmax = min(lmax, args.mmax)
        for n_edges in args.edges:
            for channels in args.channels:
                R, K = len(so2_layout(lmax, mmax)), (lmax + 1) ** 2
                ref_gb = 6 * n_edges * R * 2 * channels * 4 / 1e9 + 2 * n_edges * K * 2 * channels * 4 / 1e9
                dense, compact, rows, x, src, dst = _case(lmax, mmax, channels, n_edges, n_edges // args.neighbors, dtype,
                                                          device=args.device)
                skip_ref = ref_gb > args.max_ref_gb
                saved_t = None if skip_ref else _saved_bytes("torch", x, dense, src, dst, rows) / 1e6
                saved_n = _saved_bytes("native", x, compact, src, dst, rows) / 1e6
                for kind in PASSES:
                    if kind == "fwd+bwd+dbl" and n_edges > args.dbl_max_edges:
                        continue
                    fns = {"native": _pass_fn(kind, "native", x, compact, src, dst, rows)}
                    if not skip_ref:
                        fns["torch"] = _pass_fn(kind, "torch", x, dense, src, dst, rows)
                    t = median_interleaved(fns, args.repeats, device=args.device)
                    tt, tn = t.get("torch"), t["native"]
                    ref = "skipped" if tt is None else f"{tt:.2f}"
                    speed = "—" if tt is None else f"{tt / tn:.1f}×"
                    saved = "—" if saved_t is None else f"{saved_t:.1f}"
                    rows_md.append(f"| {lmax} | {mmax} | {n_edges:,} | {channels} | {kind} | {ref} | {tn:.2f} | "
                                   f"{speed} | {saved} / {saved_n:.1f} |")
                    print(rows_md[-1], flush=True)
    return rows_md


def model_benchmark(args, batch, stats) -> tuple[list[str], list[str]]:
    dtype = getattr(torch, args.dtype)
    steps = {}
    for lmax in args.model_lmax:
        mmax = min(lmax, args.mmax)
        for forces in ("direct", "conservative"):
            for width in args.widths:
                for backend in ("torch", "native"):
                    steps[(lmax, mmax, forces, width, backend)] = esen_step(lmax, mmax, width, forces, backend, batch,
                                                                          stats, dtype=dtype)
    table = ["| ℓmax | mmax | forces | W | torch (ms) | native (ms) | speed-up |", "|---|---|---|---|---|---|---|"]
    keys = sorted({k[:4] for k in steps})
    for key in keys:
        t = median_interleaved({b: steps[(*key, b)] for b in ("torch", "native")}, args.model_repeats, warmup=2)
        table.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {t['torch']:.1f} | {t['native']:.1f} | "
                     f"{t['torch'] / t['native']:.2f}× |")
        print(table[-1], flush=True)
    prof = ["| ℓmax | mmax | W | forces | backend | step (ms) | " + " | ".join(REGIONS) + " | rest |",
            "|---|---|---|---|---|---|" + "---|" * (len(REGIONS) + 1)]
    for lmax in args.model_lmax:
        mmax = min(lmax, args.mmax)
        for width in args.profile_widths:
            for forces in ("direct", "conservative"):
                for backend in ("torch", "native"):
                    r = profile_step(steps[(lmax, mmax, forces, width, backend)], repeats=args.profile_repeats)
                    cells = [f"{1e3 * r[k]:.1f} ({100 * r[k] / r['total']:.0f} %)" for k in (*REGIONS, "rest")]
                    prof.append(f"| {lmax} | {mmax} | {width} | {forces} | {backend} | {1e3 * r['total']:.1f} | "
                                + " | ".join(cells) + " |")
                    print(prof[-1], flush=True)
    return table, prof


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--channels", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--mmax", type=int, default=2, help="mmax = min(lmax, this)")
    p.add_argument("--neighbors", type=int, default=20, help="edges per atom (atoms = E / neighbors)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dbl-max-edges", type=int, default=10_000, help="run the double backward only up to this E")
    p.add_argument("--max-ref-gb", type=float, default=6.0,
                   help="skip the torch reference where its per-edge tensors would exceed this (GB, estimate)")
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--model-lmax", type=int, nargs="+", default=[2, 4])
    p.add_argument("--model-repeats", type=int, default=7)
    p.add_argument("--profile-widths", type=int, nargs="+", default=[32, 64])
    p.add_argument("--profile-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--machine", default="2-core VM, no GPU")
    p.add_argument("--date", default=f"{dt.date.today()}")
    p.add_argument("--write", metavar="RESULTS_MD", help="replace the bench_so2 section of this file")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the op level on the GPU (native CUDA kernels called directly, torch; section "
                        "bench_so2:cuda); the model level stays on the CPU and is skipped")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    section = "bench_so2"
    if args.device == "cuda":
        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device")
        if not (native_state()["ok"] and native_state()["with_cuda"]):
            raise SystemExit("bench_so2: nnip_scale._C has no CUDA kernels (build with FORCE_CUDA=1)")
        args.skip_model, section = True, "bench_so2:cuda"
        if args.machine == p.get_default("machine"):
            args.machine = torch.cuda.get_device_name()
    elif not native_supports("so2_rotate_in", "cpu", getattr(torch, args.dtype), compact=True, components=9):
        raise SystemExit("bench_so2: the native so2 kernels are not available (build nnip_scale._C first)")
    cmd = "python benchmarks/bench_so2.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    head = (f"Machine: {args.machine}, {torch.get_num_threads()} threads (OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); torch {torch.__version__}; {args.dtype}; date {args.date}.\n"
            f"Command: `{cmd}`\n")
    out = ["## eSEN edge rotations: native vs torch (issue 12)", "", head] if section == "bench_so2" else [head]
    if not args.skip_ops:
        out += [f"### Op level (rotate_in + rotate_out_scatter, {args.device})", "", *op_benchmark(args), ""]
    if not args.skip_model:
        batch, stats = demo_batch(args.data, args.batch_size)
        out += [f"### eSEN training step ({batch['n_atoms']} atoms, {batch['n_edges']} edges; demo batch)", ""]
        table, prof = model_benchmark(args, batch, stats)
        out += [*table, "", "### Where the time goes (torch.profiler regions; backward attributed by sequence number)",
                "", *prof, ""]
    text = "\n".join(out)
    print(text)
    if args.write:
        replace_section(args.write, section, text)


if __name__ == "__main__":
    main()
