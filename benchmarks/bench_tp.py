"""Benchmark the MACE interaction (``channelwise_tp_scatter``): native kernel vs the torch reference.

Op level: forward, forward+backward (gradients of weights, x and sh) and forward+backward+double
backward (the force-loss pattern of a conservative model: the first gradients with create_graph,
then the gradient of a scalar of them), for E edges with E / ``--neighbors`` atoms (receivers
sorted, as neighbour lists give them; senders random), C channels and hidden ℓ = harmonics ℓ =
output ℓ ≤ L (the interaction of a MACE with max_ell = sh_max_ell = L). Also the bytes the
forward saves for the backward (``saved_tensors_hooks``). fp32 unless ``--dtype float64``.

Model level: one MACE training step (forward, forces, loss, backward, optimizer step; the
``configs/model/mace.yaml`` architecture, ℓ 1 with harmonics ℓ ≤ 3) on a batch of demo
molecules, direct and conservative forces, backend native vs torch, and the share of the
interaction in it (the same op timed alone at the batch's size, both layers).

Methods run round-robin within each case (machine load hits them alike); medians are reported.

    python benchmarks/bench_tp.py                                  # print the tables
    python benchmarks/bench_tp.py --write benchmarks/RESULTS.md    # also replace the bench_tp section
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import (  # noqa: E402
    add_report_args,
    median_interleaved,
    paired_mace_steps,
    run_report,
    saved_bytes,
    step_row,
)

from nnip_scale.nn.irreps import channelwise_tp_descriptor  # noqa: E402
from nnip_scale.ops import native_supports  # noqa: E402
from nnip_scale.ops.equivariant import ChannelwiseTPPlan, channelwise_tp_scatter  # noqa: E402

PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dbl")
# per-edge E×K×C-sized tensors the torch reference holds at its peak, per pass (an estimate; used
# only to skip reference cases that would not fit in this machine's memory)
REF_EDGE_TENSORS = {"fwd": 3, "fwd+bwd": 4.5, "fwd+bwd+dbl": 10}


def _case(ell: int, channels: int, n_edges: int, n_atoms: int, dtype, seed: int = 0):
    plan = ChannelwiseTPPlan(channelwise_tp_descriptor(tuple(range(ell + 1)), ell, ell, channels)[0])
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_edges, plan.n_paths, channels, generator=g, dtype=dtype)
    x = torch.randn(n_atoms, plan.dim_x, channels, generator=g, dtype=dtype)
    sh = torch.randn(n_edges, plan.dim_sh, generator=g, dtype=dtype)
    receiver = torch.sort(torch.randint(0, n_atoms, (n_edges,), generator=g)).values
    sender = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return plan, w, x, sh, sender, receiver


def _pass_fn(kind: str, backend: str, plan, w, x, sh, sender, receiver, n_atoms):
    if kind == "fwd":
        return lambda: channelwise_tp_scatter(plan, w, x, sh, sender, receiver, n_atoms, backend=backend)
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    g_out = torch.ones(n_atoms, plan.dim_out, w.shape[2], dtype=w.dtype)

    def fwd_bwd():
        out = channelwise_tp_scatter(plan, *leaves, sender, receiver, n_atoms, backend=backend)
        return torch.autograd.grad(out, leaves, g_out)

    def fwd_bwd_dbl():
        out = channelwise_tp_scatter(plan, *leaves, sender, receiver, n_atoms, backend=backend)
        grads = torch.autograd.grad(out, leaves, g_out, create_graph=True)
        loss = sum(t.square().sum() for t in grads)
        return torch.autograd.grad(loss, leaves)

    return fwd_bwd if kind == "fwd+bwd" else fwd_bwd_dbl


def _saved_bytes(backend: str, plan, w, x, sh, sender, receiver, n_atoms) -> int:
    """Bytes of the distinct tensors autograd saves in the forward for the backward."""
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    return saved_bytes(lambda: channelwise_tp_scatter(plan, *leaves, sender, receiver, n_atoms, backend=backend),
                       [*leaves, sender, receiver])


def op_benchmark(args) -> list[str]:
    dtype = getattr(torch, args.dtype)
    methods = ["native", "torch"] if native_supports("channelwise_tp_scatter", "cpu", dtype, ell=max(args.ells)) else ["torch"]
    lines = [
        "| E | C | ℓ | pass | native (ms) | torch (ms) | torch / native | saved for bwd: native / torch (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n_edges in args.edges:
        n_atoms = max(n_edges // args.neighbors, 1)
        for channels in args.channels:
            for ell in args.ells:
                plan, w, x, sh, snd, rcv = _case(ell, channels, n_edges, n_atoms, dtype)
                per_edge = n_edges * plan.dim_out * channels * w.element_size()
                saved = {m: _saved_bytes(m, plan, w, x, sh, snd, rcv, n_atoms) / 2**20 for m in methods}
                for kind in PASSES if n_edges <= args.dbl_max_edges else PASSES[:2]:
                    run = [m for m in methods
                           if m != "torch" or REF_EDGE_TENSORS[kind] * per_edge <= args.max_ref_gb * 2**30]
                    fns = {m: _pass_fn(kind, m, plan, w, x, sh, snd, rcv, n_atoms) for m in run}
                    t = median_interleaved(fns, args.repeats)
                    nat, ref = t.get("native"), t.get("torch")
                    ratio = f"{ref / nat:.1f}×" if nat and ref else "—"
                    mem = (f"{saved['native']:.1f} / {saved['torch']:.1f}" if kind == "fwd" and len(saved) == 2 else "")
                    cell = lambda v: f"{v:.1f}" if v is not None else "— (memory)"  # noqa: E731
                    lines.append(f"| {n_edges:,} | {channels} | {ell} | {kind} | {cell(nat)} | {cell(ref)} | {ratio} | {mem} |")
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
        "| forces | C | native step (ms) | torch step (ms) | torch / native | interaction: native / torch (ms) "
        "| interaction share of the torch step |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in settings:
        lines.append(step_row(list(key), med[key, "native"], med[key, "torch"], ratios[key],
                              tp_ms[key]["native"], tp_ms[key]["torch"]))
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--neighbors", type=int, default=20, help="edges per atom (atoms = E / neighbors)")
    p.add_argument("--dbl-max-edges", type=int, default=100_000, help="run the double backward only up to this E")
    p.add_argument("--max-ref-gb", type=float, default=12.0,
                   help="skip torch-reference cases whose per-edge tensors would exceed this (GB)")
    add_report_args(p, "bench_tp", repeats=5, widths=[16, 32, 64], model_repeats=9)
    args = p.parse_args(argv)
    heading = (
        f"### Op level ({args.dtype}; atoms = E / {args.neighbors}; receivers sorted, senders random; "
        f"median of {args.repeats}; ℓ = hidden = harmonics = output ℓ max)"
    )
    notes = (
        "fwd+bwd: gradients of weights, x and sh. fwd+bwd+dbl: those with create_graph, then the "
        "gradient of the sum of their squares (a conservative model's force-loss pattern). "
        "“— (memory)”: the torch reference would need more than "
        f"{args.max_ref_gb:g} GB of per-edge tensors. Saved for bwd: distinct tensors autograd keeps "
        "from the forward (inputs excluded)."
    )
    title = "## MACE interaction: native kernel vs torch reference (issue 11)"
    run_report(args, title, "bench_tp", heading, lambda: op_benchmark(args), notes, lambda: model_benchmark(args))


if __name__ == "__main__":
    main()
