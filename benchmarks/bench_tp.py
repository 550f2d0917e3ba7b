"""Benchmark the MACE interaction (``channelwise_tp_scatter``): native kernel vs the torch reference vs
cuEquivariance's CPU path (``backend="cueq"``, its ``naive`` method; where cuequivariance-torch is installed).

Op level: forward, forward+backward (gradients of weights, x and sh) and forward+backward+double
backward (the force-loss pattern of a conservative model: the first gradients with create_graph,
then the gradient of a scalar of them), for E edges with E / ``--neighbors`` atoms (receivers
sorted, as neighbour lists give them; senders random), C channels and hidden ℓ = harmonics ℓ =
output ℓ ≤ L (the interaction of a MACE with max_ell = sh_max_ell = L). fp32 unless ``--dtype float64``.
Memory: the bytes the forward saves for the backward (``saved_tensors_hooks``) and the peak memory of
one forward+backward: the growth of the peak resident set above the resident set before the call,
measured in a fresh interpreter per case and method (``--peak-child``) after a small warm-up call,
inputs excluded, outputs and gradients included.
Bounded run time: cases with E ≥ ``--large-edges`` run ``--repeats-large`` rounds and warm up on
their first 2,000 edges; cueq's double backward runs only up to ℓ = ``--cueq-dbl-max-ell``; a
reference (torch or cueq) whose per-edge tensors would exceed ``--max-ref-gb`` is skipped.

Model level: one MACE training step (forward, forces, loss, backward, optimizer step; the
``configs/model/mace.yaml`` architecture, ℓ 1 with harmonics ℓ ≤ 3) on a batch of demo
molecules, direct and conservative forces, backend native vs torch, and the share of the
interaction in it (the same op timed alone at the batch's size, both layers).

Methods run round-robin within each case (machine load hits them alike); medians are reported.

    python benchmarks/bench_tp.py                                  # print the tables
    python benchmarks/bench_tp.py --write benchmarks/RESULTS.md    # also replace the bench_tp section
    python benchmarks/bench_tp.py --edges 100000 --skip-model --section bench_tp:e100k --write ...  # a split run
    python benchmarks/bench_tp.py --device cuda --write ...   # op level on a GPU (section bench_tp:cuda; the
                                   # native CUDA kernels called directly until registered; peak = allocator peak)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import (  # noqa: E402
    add_report_args,
    median_interleaved,
    paired_mace_steps,
    peak_rss_growth,
    run_report,
    saved_bytes,
    setup_device,
    step_row,
)

from nnip_scale.nn.irreps import channelwise_tp_descriptor  # noqa: E402
from nnip_scale.ops import available_backends, native_supports  # noqa: E402
from nnip_scale.ops._native import native_state  # noqa: E402
from nnip_scale.ops.equivariant import ChannelwiseTPPlan, channelwise_tp_scatter  # noqa: E402
from nnip_scale.ops.tp_native import ctp_native  # noqa: E402

PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dbl")
# per-edge E×K×C-sized tensors a reference holds at its peak, per pass (an estimate, checked against the
# measured peaks of the table; used only to skip reference cases that would not fit in this machine's memory)
REF_EDGE_TENSORS = {
    "torch": {"fwd": 3, "fwd+bwd": 5.5, "fwd+bwd+dbl": 10},  # measured peak fwd+bwd: 5.3 (E 10k, C 64, ℓ 2)
    "cueq": {"fwd": 3, "fwd+bwd": 5.5, "fwd+bwd+dbl": 10},  # measured: 5.0
}
WARMUP_EDGES = 2_000  # large cases warm up on this many edges (one-time costs, not a full-size call)


def _case(ell: int, channels: int, n_edges: int, n_atoms: int, dtype, seed: int = 0, device="cpu"):
    plan = ChannelwiseTPPlan(channelwise_tp_descriptor(tuple(range(ell + 1)), ell, ell, channels)[0]).to(device)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_edges, plan.n_paths, channels, generator=g, dtype=dtype)
    x = torch.randn(n_atoms, plan.dim_x, channels, generator=g, dtype=dtype)
    sh = torch.randn(n_edges, plan.dim_sh, generator=g, dtype=dtype)
    receiver = torch.sort(torch.randint(0, n_atoms, (n_edges,), generator=g)).values
    sender = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return (plan, *(t.to(device) for t in (w, x, sh, sender, receiver)))


def _call(backend: str, plan, w, x, sh, sender, receiver, n_atoms):
    """The interaction on ``backend``. The native CUDA kernels are not registered with the resolver until their
    tests have run on a GPU (docs/ops.md), so on CUDA the benchmark calls them directly, as the registered
    implementation would (the same op, with its autograd)."""
    if backend == "native" and x.is_cuda:
        return ctp_native(plan, w, x, sh, sender, receiver, n_atoms)
    return channelwise_tp_scatter(plan, w, x, sh, sender, receiver, n_atoms, backend=backend)


def _pass_fn(kind: str, backend: str, plan, w, x, sh, sender, receiver, n_atoms):
    if kind == "fwd":
        return lambda: _call(backend, plan, w, x, sh, sender, receiver, n_atoms)
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    g_out = torch.ones(n_atoms, plan.dim_out, w.shape[2], dtype=w.dtype, device=w.device)

    def fwd_bwd():
        out = _call(backend, plan, *leaves, sender, receiver, n_atoms)
        return torch.autograd.grad(out, leaves, g_out)

    def fwd_bwd_dbl():
        out = _call(backend, plan, *leaves, sender, receiver, n_atoms)
        grads = torch.autograd.grad(out, leaves, g_out, create_graph=True)
        loss = sum(t.square().sum() for t in grads)
        return torch.autograd.grad(loss, leaves)

    return fwd_bwd if kind == "fwd+bwd" else fwd_bwd_dbl


def _head(e: int, *tensors):
    """The first ``e`` edges of (w, sh, sender, receiver): a small call on the same plan and atoms."""
    w, sh, sender, receiver = tensors
    return w[:e], sh[:e], sender[:e], receiver[:e]


def _saved_bytes(backend: str, plan, w, x, sh, sender, receiver, n_atoms) -> int:
    """Bytes of the distinct tensors autograd saves in the forward for the backward."""
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    return saved_bytes(lambda: _call(backend, plan, *leaves, sender, receiver, n_atoms), [*leaves, sender, receiver])


def peak_child(spec: dict) -> dict:
    """In a fresh interpreter: the peak memory (bytes) of one forward+backward of ``spec``'s case and
    method, above the resident set with the inputs (and the gradient of the output) allocated; a
    warm-up call on the case's first edges runs first (lazy initialisation, cueq building its module)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    n_edges, n_atoms = spec["edges"], spec["atoms"]
    plan, w, x, sh, snd, rcv = _case(spec["ell"], spec["channels"], n_edges, n_atoms, getattr(torch, spec["dtype"]))
    hw, hsh, hsnd, hrcv = _head(min(n_edges, WARMUP_EDGES), w, sh, snd, rcv)
    _pass_fn("fwd+bwd", spec["method"], plan, hw, x, hsh, hsnd, hrcv, n_atoms)()
    fn = _pass_fn("fwd+bwd", spec["method"], plan, w, x, sh, snd, rcv, n_atoms)
    return {"peak_bytes": peak_rss_growth(fn)}


def _peak_mb(method: str, ell: int, channels: int, n_edges: int, n_atoms: int, args) -> float:
    """``peak_child`` of one case and method, run as ``bench_tp.py --peak-child SPEC`` (fresh interpreter)."""
    spec = {"method": method, "ell": ell, "channels": channels, "edges": n_edges, "atoms": n_atoms,
            "dtype": args.dtype, "threads": args.threads or torch.get_num_threads()}
    proc = subprocess.run([sys.executable, __file__, "--peak-child", json.dumps(spec)], capture_output=True,
                          text=True, env=dict(os.environ), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_tp.py: peak-memory child for {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


def _cuda_peak_mb(fn) -> float:
    """How far one call raises the CUDA allocator's peak above what is allocated before it (MB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _skip_reason(method: str, kind: str, ell: int, n_edges: int, per_edge: int, args) -> str | None:
    """Why a reference method does not run a pass (a cell's "— (…)"), or None."""
    if method == "native":
        return None
    if REF_EDGE_TENSORS[method][kind] * per_edge > args.max_ref_gb * 2**30:
        return "memory"
    if method == "cueq" and kind == "fwd+bwd+dbl" and (ell > args.cueq_dbl_max_ell or n_edges > args.cueq_dbl_max_edges):
        return "slow"
    return None


def _cell(t: dict, skip: dict, m: str) -> str:
    return f"{t[m]:.1f}" if m in t else f"— ({skip[m]})" if skip.get(m) else "—"


def _ratio(t: dict, m: str) -> str:
    return f"{t[m] / t['native']:.1f}×" if m in t and "native" in t else "—"


def _mem(values: dict) -> str:
    return " / ".join(f"{values[m]:.1f}" if m in values else "—" for m in ("native", "torch", "cueq"))


def op_benchmark(args) -> list[str]:
    dtype = getattr(torch, args.dtype)
    cuda = args.device == "cuda"
    if cuda:
        methods = ["native"] if native_state()["ok"] and native_state()["with_cuda"] else []
    else:
        methods = ["native"] if native_supports("channelwise_tp_scatter", "cpu", dtype, ell=max(args.ells)) else []
    methods.append("torch")
    if "cueq" in available_backends() and not args.no_cueq:
        methods.append("cueq")
    lines = [
        ("| E | C | ℓ | pass | native (ms) | torch (ms) | cueq (ms) | torch / native | cueq / native | "
         "saved for bwd (MB): native / torch / cueq | peak fwd+bwd (MB): native / torch / cueq |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n_edges in args.edges:
        n_atoms = max(n_edges // args.neighbors, 1)
        large = n_edges >= args.large_edges
        repeats = args.repeats_large if large else args.repeats
        for channels in args.channels:
            for ell in args.ells:
                plan, w, x, sh, snd, rcv = _case(ell, channels, n_edges, n_atoms, dtype, device=args.device)
                head = _head(min(n_edges, WARMUP_EDGES), w, sh, snd, rcv)
                per_edge = n_edges * plan.dim_out * channels * w.element_size()
                fits = {kind: [m for m in methods if _skip_reason(m, kind, ell, n_edges, per_edge, args) != "memory"]
                        for kind in ("fwd", "fwd+bwd")}
                saved = {m: _saved_bytes(m, plan, w, x, sh, snd, rcv, n_atoms) / 2**20 for m in fits["fwd"]}
                if args.skip_peak:
                    peak = {}
                elif cuda:  # in this process: the allocator's peak (a warm-up on the first edges first)
                    peak = {}
                    for m in fits["fwd+bwd"]:
                        _pass_fn("fwd+bwd", m, plan, head[0], x, head[1], head[2], head[3], n_atoms)()
                        peak[m] = _cuda_peak_mb(_pass_fn("fwd+bwd", m, plan, w, x, sh, snd, rcv, n_atoms))
                else:
                    peak = {m: _peak_mb(m, ell, channels, n_edges, n_atoms, args) for m in fits["fwd+bwd"]}
                for kind in PASSES if n_edges <= args.dbl_max_edges else PASSES[:2]:
                    skip = {m: _skip_reason(m, kind, ell, n_edges, per_edge, args) for m in methods}
                    run = [m for m in methods if skip[m] is None]
                    fns = {m: _pass_fn(kind, m, plan, w, x, sh, snd, rcv, n_atoms) for m in run}
                    warm = ({m: _pass_fn(kind, m, plan, head[0], x, head[1], head[2], head[3], n_atoms) for m in run}
                            if large else None)
                    t = median_interleaved(fns, repeats, warmup_fns=warm, device=args.device)
                    del fns, warm  # free the inputs' clones before the next pass builds its own
                    lines.append(f"| {n_edges:,} | {channels} | {ell} | {kind} | {_cell(t, skip, 'native')} | "
                                 f"{_cell(t, skip, 'torch')} | {_cell(t, skip, 'cueq')} | {_ratio(t, 'torch')} | "
                                 f"{_ratio(t, 'cueq')} | {_mem(saved) if kind == 'fwd' else ''} | "
                                 f"{_mem(peak) if kind == 'fwd+bwd' else ''} |")
                    print(lines[-1], flush=True)
    return lines


def model_benchmark(args) -> list[str]:
    settings = {(forces, width): {"forces": forces, "width": width}
                for forces in ("direct", "conservative") for width in args.widths}
    batch, _, _, med, ratios = paired_mace_steps(args, settings)
    # the interaction alone at this batch's size (both layers: in ℓ ≤ 0 then ℓ ≤ 1, harmonics ℓ ≤ 3):
    # fwd+bwd for the direct step, fwd+bwd+double bwd (create_graph) for the conservative one
    e, a = int(batch["n_edges"]), int(batch["n_atoms"])
    snd, rcv = batch["edge_index"][1], batch["edge_index"][0]
    tp_ms = {}
    for forces in ("direct", "conservative"):
        for width in args.widths:
            fns = {}
            for backend in ("native", "torch"):
                calls = []
                for in_ells in ((0,), (0, 1)):
                    plan = ChannelwiseTPPlan(channelwise_tp_descriptor(in_ells, 3, 3, width)[0])
                    g = torch.Generator().manual_seed(1)
                    leaves = [torch.randn(e, plan.n_paths, width, generator=g).requires_grad_(True),
                              torch.randn(a, plan.dim_x, width, generator=g).requires_grad_(True),
                              torch.randn(e, plan.dim_sh, generator=g).requires_grad_(True)]
                    calls.append((plan, leaves))

                def both(backend=backend, calls=calls, dbl=forces == "conservative"):
                    for plan, leaves in calls:
                        out = channelwise_tp_scatter(plan, *leaves, snd, rcv, a, backend=backend)
                        grads = torch.autograd.grad(out.square().sum(), leaves, create_graph=dbl)
                        if dbl:
                            torch.autograd.grad(sum(t.square().sum() for t in grads), leaves)

                fns[backend] = both
            tp_ms[(forces, width)] = median_interleaved(fns, args.model_repeats * args.model_steps)
    lines = [
        f"MACE (`configs/model/mace.yaml`: ℓ 1, harmonics ℓ ≤ 3, correlation 3, 2 interactions), one training step "
        f"on one batch of {batch['n_structures']} demo molecules ({a} atoms, {e} edges), fp32; median of "
        f"{args.model_repeats} interleaved rounds × {args.model_steps} steps. Interaction: both layers' "
        "`channelwise_tp_scatter` alone at this batch's size (median), forward + backward for the direct "
        "step, forward + backward + double backward for the conservative one.",
        "",
        "torch / native: median over rounds of the ratio of the two back-to-back runs.",
        "",
        ("| forces | C | native step (ms) | torch step (ms) | torch / native | interaction: native / torch (ms) | "
         "interaction share of the torch step |"),
        "|---|---|---|---|---|---|---|",
    ]
    for key in settings:
        lines.append(step_row(list(key), med[key, "native"], med[key, "torch"], ratios[key],
                              tp_ms[key]["native"], tp_ms[key]["torch"]))
    return lines


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peak-child"]:  # internal: one peak-memory measurement in this fresh interpreter
        print(json.dumps(peak_child(json.loads(argv[1]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--neighbors", type=int, default=20, help="edges per atom (atoms = E / neighbors)")
    p.add_argument("--dbl-max-edges", type=int, default=100_000, help="run the double backward only up to this E")
    p.add_argument("--max-ref-gb", type=float, default=10.0,
                   help="skip torch/cueq cases whose per-edge tensors would exceed this (GB)")
    p.add_argument("--large-edges", type=int, default=50_000,
                   help=f"cases with at least this many edges run --repeats-large rounds and warm up on "
                        f"{WARMUP_EDGES:,} edges")
    p.add_argument("--repeats-large", type=int, default=3)
    p.add_argument("--cueq-dbl-max-ell", type=int, default=2,
                   help="run cueq's double backward only up to this ℓ (its CPU path is slow there)")
    p.add_argument("--cueq-dbl-max-edges", type=int, default=10_000,
                   help="run cueq's double backward only up to this E")
    p.add_argument("--no-cueq", action="store_true", help="leave cuequivariance's CPU path out")
    p.add_argument("--skip-peak", action="store_true", help="do not measure the peak memory of forward+backward")
    add_report_args(p, "bench_tp", repeats=5, widths=[16, 32, 64], model_repeats=9)
    p.set_defaults(channels=[16, 64, 128])
    args = p.parse_args(argv)
    setup_device(p, args, "bench_tp")
    heading = (
        f"### Op level ({args.dtype}, {args.device}; atoms = E / {args.neighbors}; receivers sorted, senders random; "
        f"median of {args.repeats} rounds, {args.repeats_large} from E = {args.large_edges:,}; "
        "ℓ = hidden = harmonics = output ℓ max)"
    )
    notes = (
        "fwd+bwd: gradients of weights, x and sh. fwd+bwd+dbl: those with create_graph, then the "
        "gradient of the sum of their squares (a conservative model's force-loss pattern). cueq: "
        "cuequivariance-torch's CPU path (`SegmentedPolynomial`, method `naive`). "
        "“— (memory)”: the reference would need more than "
        f"{args.max_ref_gb:g} GB of per-edge tensors (estimated from the measured peaks); “— (slow)”: "
        f"cueq's double backward is run only up to ℓ = {args.cueq_dbl_max_ell} and E = {args.cueq_dbl_max_edges:,}, "
        "to bound the run time (seconds to tens of seconds per call above that). Saved for bwd: distinct tensors "
        "autograd keeps from the forward (inputs excluded). Peak fwd+bwd: how far one forward+backward raises the peak resident "
        "set (VmHWM, reset through /proc/self/clear_refs after malloc_trim) above the resident set just "
        "before it, each case and method in a fresh interpreter after a warm-up call on its first "
        f"{WARMUP_EDGES:,} edges; inputs excluded, the output, its gradient and the three input "
        "gradients included."
    )
    title = "## MACE interaction: native kernel vs torch reference vs cuEquivariance (issue 11)"
    run_report(args, title, "bench_tp", heading, lambda: op_benchmark(args), notes, lambda: model_benchmark(args))


if __name__ == "__main__":
    main()
