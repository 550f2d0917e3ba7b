"""Benchmark the symmetric contraction (``symmetric_contraction``): native kernel vs the torch reference.

Op level: forward and forward+backward (gradients of x and of the per-element weights), optionally
forward+backward+double backward (``--double``: the first gradients with create_graph, then the
gradient of a scalar of them, a conservative model's force-loss pattern), for N atoms of
``--elements`` elements (random), C channels, inputs and outputs ℓ ≤ L, correlation ν. fp32 unless
``--dtype float64``.

Model level: one MACE training step (forward, forces, loss, backward, optimizer step; the
``configs/model/mace.yaml`` architecture: ℓ 1, harmonics and contraction input ℓ ≤ 3, correlation 3,
14 elements) on a batch of demo molecules, direct forces, backend native vs torch (``native``
runs the interaction, the scatters and the contraction on the native kernels), and the share of the
contraction in it (both layers' contraction timed alone at the batch's size, forward + backward).

Methods run round-robin within each case (machine load hits them alike); medians are reported.

    python benchmarks/bench_sc.py                                  # print the tables
    python benchmarks/bench_sc.py --write benchmarks/RESULTS.md    # also replace the bench_sc section
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import add_report_args, median_interleaved, paired_mace_steps, run_report, setup_device, step_row  # noqa: E402

from nnip_scale.nn.irreps import symmetric_contraction_polynomial  # noqa: E402
from nnip_scale.ops import available_backends, native_supports  # noqa: E402
from nnip_scale.ops._native import native_state  # noqa: E402
from nnip_scale.ops.equivariant import PolynomialPlan, symmetric_contraction  # noqa: E402
from nnip_scale.ops.sc_native import sc_native  # noqa: E402


def _case(ell: int, correlation: int, channels: int, n_atoms: int, n_elements: int, dtype, seed: int = 0,
          device="cpu"):
    ells = tuple(range(ell + 1))
    plan = PolynomialPlan(symmetric_contraction_polynomial(ells, ells, channels, correlation), weighted=True).to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_atoms, plan.n_x, channels, generator=g, dtype=dtype)
    w = torch.randn(n_elements, plan.n_weights, channels, generator=g, dtype=dtype)
    index = torch.randint(0, n_elements, (n_atoms,), generator=g)
    return plan, x.to(device), w.to(device), index.to(device)


def _call(backend: str, plan, x, w, index):
    """The contraction on ``backend``. Its native CUDA kernels are not registered with the resolver until their
    tests have run on a GPU (docs/ops.md), so on CUDA the benchmark calls them directly, as the registered
    implementation would (the same op, with its autograd)."""
    if backend == "native" and x.is_cuda:
        return sc_native(plan, x, w, index)
    return symmetric_contraction(plan, x, w, index, backend=backend)


def _pass_fn(kind: str, backend: str, plan, x, w, index):
    if kind == "fwd":
        return lambda: _call(backend, plan, x, w, index)
    leaves = [x.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    g_out = torch.ones(x.shape[0], plan.n_out, x.shape[2], dtype=x.dtype, device=x.device)

    def fwd_bwd():
        out = _call(backend, plan, *leaves, index)
        return torch.autograd.grad(out, leaves, g_out)

    def fwd_bwd_dbl():
        out = _call(backend, plan, *leaves, index)
        grads = torch.autograd.grad(out, leaves, g_out, create_graph=True)
        return torch.autograd.grad(sum(t.square().sum() for t in grads), leaves)

    return fwd_bwd if kind == "fwd+bwd" else fwd_bwd_dbl


def op_benchmark(args) -> list[str]:
    dtype = getattr(torch, args.dtype)
    lines = [
        "| N | C | ℓ | ν | Q / nnz / R | pass | native (ms) | torch (ms) | torch / native |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if args.device == "cuda":  # cuEquivariance's CUDA kernels as the second reference
        lines = [lines[0] + " cueq (ms) | cueq / native |", lines[1] + "---|---|"]
    passes = ("fwd", "fwd+bwd", "fwd+bwd+dbl") if args.double else ("fwd", "fwd+bwd")
    for n_atoms in args.atoms:
        for channels in args.channels:
            for ell in args.ells:
                plan, x, w, index = _case(ell, args.correlation, channels, n_atoms, args.elements, dtype,
                                          device=args.device)
                if args.device == "cuda":
                    ok = native_state()["ok"] and native_state()["with_cuda"]
                else:
                    ok = native_supports("symmetric_contraction", "cpu", dtype, components=max(plan.n_x, plan.n_out),
                                         correlation=plan.degree)
                methods = ["native", "torch"] if ok else ["torch"]
                if args.device == "cuda" and "cueq" in available_backends():
                    methods.append("cueq")
                sizes = f"{plan.n_monomials} / {plan.native_nnz} / {plan.n_rows}"
                for kind in passes:
                    fns = {m: _pass_fn(kind, m, plan, x, w, index) for m in methods}
                    t = median_interleaved(fns, args.repeats, device=args.device)
                    nat, ref = t.get("native"), t["torch"]
                    ratio = f"{ref / nat:.1f}×" if nat else "—"
                    nat_s = f"{nat:.1f}" if nat else "—"
                    cueq = (f" | {t['cueq']:.1f} | {t['cueq'] / nat:.1f}×" if "cueq" in t and nat else " | — | —"
                            if args.device == "cuda" else "")
                    lines.append(f"| {n_atoms:,} | {channels} | {ell} | {plan.degree} | {sizes} | {kind} | {nat_s} | "
                                 f"{ref:.1f} | {ratio}{cueq} |")
                    print(lines[-1], flush=True)
    return lines


def model_benchmark(args) -> list[str]:
    settings = {width: {"forces": "direct", "width": width} for width in args.widths}
    batch, init_args, runners, med, ratios = paired_mace_steps(args, settings)
    # both layers' contraction alone at this batch's size, forward + backward
    a = int(batch["n_atoms"])
    n_elements = len(init_args.get("elements") or range(1, 101))
    sc_ms = {}
    for width in args.widths:
        layers = runners[width, "torch"].module.backbone.layers
        calls = []
        g = torch.Generator().manual_seed(1)
        for layer in layers:
            plan = layer.contraction
            index = torch.randint(0, n_elements, (a,), generator=g)
            calls.append((plan, torch.randn(a, plan.n_x, width, generator=g),
                          torch.randn(n_elements, plan.n_weights, width, generator=g), index))
        fns = {}
        for backend in ("native", "torch"):
            def both(backend=backend, calls=calls):
                for plan, x, w, index in calls:
                    leaves = [x.clone().requires_grad_(True), w.clone().requires_grad_(True)]
                    out = symmetric_contraction(plan, *leaves, index, backend=backend)
                    torch.autograd.grad(out.square().sum(), leaves)

            fns[backend] = both
        sc_ms[width] = median_interleaved(fns, args.model_repeats * args.model_steps)
    lines = [
        f"MACE (`configs/model/mace.yaml`: ℓ 1, harmonics and contraction input ℓ ≤ 3, correlation 3, "
        f"{n_elements} elements, 2 interactions), direct forces, one training step on one batch of "
        f"{batch['n_structures']} demo molecules ({a} atoms, {int(batch['n_edges'])} edges), fp32; median of "
        f"{args.model_repeats} interleaved rounds × {args.model_steps} steps. Contraction: both layers' "
        "`symmetric_contraction` alone at this batch's size (forward + backward, median).",
        "",
        "torch / native: median over rounds of the ratio of the two back-to-back runs. `native` runs the "
        "interaction, the scatters and the contraction natively; `torch` runs all of them on the reference.",
        "",
        "| C | native step (ms) | torch step (ms) | torch / native | contraction: native / torch (ms) | "
        "contraction share of the torch step |",
        "|---|---|---|---|---|---|",
    ]
    for width in args.widths:
        lines.append(step_row([width], med[width, "native"], med[width, "torch"], ratios[width],
                              sc_ms[width]["native"], sc_ms[width]["torch"]))
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, nargs="+", default=[1_000, 10_000])
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--elements", type=int, default=14, help="number of elements (weight sets)")
    p.add_argument("--double", action="store_true", help="also time forward+backward+double backward")
    add_report_args(p, "bench_sc", repeats=3, widths=[32, 64], model_repeats=7)
    args = p.parse_args(argv)
    setup_device(p, args, "bench_sc")
    heading = (
        f"### Op level ({args.dtype}, {args.device}; {args.elements} elements; inputs and outputs ℓ ≤ L; median of "
        f"{args.repeats})"
    )
    notes = (
        "Q / nnz / R: monomials of x, nonzero product-basis coefficients, rows (weight, output) of the "
        "plan: the native kernel does Q + nnz + R multiply-adds per atom and channel, the dense torch "
        "reference R·(Q + K). fwd+bwd: gradients of x and of the weights."
    )
    title = "## Symmetric contraction: native kernel vs torch reference (issue 11)"
    run_report(args, title, "bench_sc", heading, lambda: op_benchmark(args), notes, lambda: model_benchmark(args))


if __name__ == "__main__":
    main()
