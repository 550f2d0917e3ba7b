"""What sorting the edges by receiver once per batch (the collate, ``data.batching.edge_layout``) saves the
native MACE interaction (issue 11): ``channelwise_tp_scatter`` on the native CPU kernels, three ways.

- ``unsorted``: edges in neighbour-list order (random receivers), no layout: the forward counting-sorts
  by receiver and the backward by sender in every call (the behaviour before the collate sorted);
- ``sorted``: the same edges sorted by receiver, no layout: the forward finds them sorted in its
  range-check pass, the backward still sorts by sender;
- ``layout``: sorted, with ``receiver_ptr`` and ``sender_order`` (what a collated batch passes): no sort.

Op level: forward, forward+backward, forward+backward+double backward for E edges (E / ``--neighbors``
atoms), C channels, ℓ. Model level: one MACE training step (``configs/model/mace.yaml``, native) on a
demo batch as the collate now makes it vs the same batch with its edges put back in neighbour-list
order and no layout (exactly the batch before), and the collate's own cost (build_batch with the sort
and layout vs the sort and layout alone). Methods run round-robin; medians are reported.

    python benchmarks/bench_tp_layout.py --threads 1 --write benchmarks/RESULTS.md
    python benchmarks/bench_tp_layout.py --threads 1 --skip-ops --periodic-emt 64 --batch-size 8 \
        --section bench_tp_layout:periodic --write benchmarks/RESULTS.md      # a periodic dataset
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_ops import ROOT, add_report_args, demo_items, median_interleaved, run_report  # noqa: E402

from nnip_scale.data import keys as K  # noqa: E402
from nnip_scale.data.batching import build_batch, edge_layout  # noqa: E402
from nnip_scale.nn.irreps import channelwise_tp_descriptor  # noqa: E402
from nnip_scale.ops.equivariant import ChannelwiseTPPlan, channelwise_tp_scatter  # noqa: E402

PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dbl")
METHODS = ("unsorted", "sorted", "layout")


def _inputs(ell, channels, n_edges, n_atoms, dtype, seed=0):
    plan = ChannelwiseTPPlan(channelwise_tp_descriptor(tuple(range(ell + 1)), ell, ell, channels)[0])
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_edges, plan.n_paths, channels, generator=g, dtype=dtype)
    x = torch.randn(n_atoms, plan.dim_x, channels, generator=g, dtype=dtype)
    sh = torch.randn(n_edges, plan.dim_sh, generator=g, dtype=dtype)
    rcv = torch.randint(0, n_atoms, (n_edges,), generator=g)
    snd = torch.randint(0, n_atoms, (n_edges,), generator=g)
    by_receiver = torch.argsort(rcv, stable=True)
    srt = (w[by_receiver], sh[by_receiver], snd[by_receiver], rcv[by_receiver])
    ptr, order = edge_layout(torch.stack([srt[3], srt[2]]), n_atoms)
    return plan, x, {"unsorted": ((w, sh, snd, rcv), {}), "sorted": (srt, {}),
                     "layout": (srt, {"receiver_ptr": ptr, "sender_order": order})}


def _pass_fn(kind, plan, x, edges, layout, n_atoms):
    w, sh, snd, rcv = edges
    if kind == "fwd":
        return lambda: channelwise_tp_scatter(plan, w, x, sh, snd, rcv, n_atoms, backend="native", **layout)
    leaves = [t.clone().requires_grad_(True) for t in (w, x, sh)]
    g_out = torch.ones(n_atoms, plan.dim_out, w.shape[2], dtype=w.dtype)

    def run():
        out = channelwise_tp_scatter(plan, *leaves, snd, rcv, n_atoms, backend="native", **layout)
        grads = torch.autograd.grad(out, leaves, g_out, create_graph=kind == "fwd+bwd+dbl")
        if kind == "fwd+bwd+dbl":
            torch.autograd.grad(sum(t.square().sum() for t in grads), leaves)

    return run


def op_table(args) -> list[str]:
    dtype = getattr(torch, args.dtype)
    lines = ["| E | C | ℓ | pass | unsorted (ms) | sorted (ms) | layout (ms) | unsorted / layout | sorted / layout |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n_edges in args.edges:
        n_atoms = max(n_edges // args.neighbors, 1)
        for channels in args.channels:
            for ell in args.ells:
                plan, x, variants = _inputs(ell, channels, n_edges, n_atoms, dtype)
                for kind in PASSES:
                    fns = {m: _pass_fn(kind, plan, x, *variants[m], n_atoms) for m in METHODS}
                    t = median_interleaved(fns, args.repeats)
                    lines.append(f"| {n_edges:,} | {channels} | {ell} | {kind} | {t['unsorted']:.2f} | {t['sorted']:.2f} | "
                                 f"{t['layout']:.2f} | {t['unsorted'] / t['layout']:.3f}× | {t['sorted'] / t['layout']:.3f}× |")
                    print(lines[-1], flush=True)
    return lines


def _periodic_emt(path: Path, n: int, seed: int = 0) -> str:
    """``n`` periodic Cu/Al cells (fcc 2×2×2, 32 atoms, ~30 % Al, rattled 0.1 Å) labelled with ASE's EMT,
    written as extxyz: a periodic dataset whose neighbour lists come in vesin's cell-list order."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + 0.02 * rng.standard_normal()), cubic=True) * (2, 2, 2)
        atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
        atoms.rattle(0.1, seed=k)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return str(path)


def _neighbour_list_order(batch: dict, items) -> dict:
    """``batch`` with its edges back in the items' neighbour-list order and no layout: the batch the collate
    made before it sorted (its sort is stable, so the concatenated lists sorted by receiver are the batch)."""
    offsets = np.concatenate([[0], np.cumsum([len(it["numbers"]) for it in items])[:-1]])
    original = np.concatenate([np.asarray(it["edge_index"]) + o for it, o in zip(items, offsets)], axis=1)
    by_receiver = torch.from_numpy(np.argsort(original[0], kind="stable"))
    back = torch.empty_like(by_receiver)
    back[by_receiver] = torch.arange(len(by_receiver))
    out = {k: v for k, v in batch.items() if k not in K.EDGE_LAYOUT}
    out[K.EDGE_INDEX], out[K.EDGE_SHIFT] = batch[K.EDGE_INDEX][:, back], batch[K.EDGE_SHIFT][back]
    assert torch.equal(out[K.EDGE_INDEX], torch.from_numpy(original))
    return out


def model_part(args) -> list[str]:
    from bench_models import Runner, discover

    configs = {c[0]: c for c in discover(ROOT / "configs" / "model")}
    name, cls, init_args, options = configs["mace"]
    items, _, stats = demo_items(args, init_args)
    batch = build_batch(items)
    before = _neighbour_list_order(batch, items)
    e, a = batch[K.N_EDGES], batch[K.N_ATOMS]
    unsorted_share = float((np.diff(before[K.EDGE_INDEX][0].numpy()) < 0).mean())
    lines = [f"MACE (`configs/model/mace.yaml`, backend native, fp32), one training step on one batch of "
             f"{batch[K.N_STRUCTURES]} structures of {args.data_label} ({a} atoms, {e} edges; in neighbour-list order "
             f"{100 * unsorted_share:.0f} % of consecutive edges decrease in receiver); median of {args.model_repeats} "
             f"interleaved rounds × {args.model_steps} steps; before / after: median over rounds of the paired ratio.",
             "", "| forces | C | before: neighbour-list order, no layout (ms) | after: collated (ms) | before / after |",
             "|---|---|---|---|---|"]
    for forces in ("direct", "conservative"):
        for width in args.widths:
            runners = {tag: Runner(name, cls, {**init_args, "forces": forces, "backend": "native"}, options, width, b,
                                   stats, torch.device("cpu")) for tag, b in (("before", before), ("after", batch))}
            for r in runners.values():
                r.step()
                r.step()
            ratios = []
            for _ in range(args.model_repeats):
                runners["before"].timed(args.model_steps)
                runners["after"].timed(args.model_steps)
                ratios.append(runners["before"].times[-1] / runners["after"].times[-1])
            ms = {k: 1e3 * statistics.median(r.times) for k, r in runners.items()}
            lines.append(f"| {forces} | {width} | {ms['before']:.1f} | {ms['after']:.1f} | {statistics.median(ratios):.3f}× |")
            print(lines[-1], flush=True)
    # the collate's cost: the whole batch build vs its sort and layout alone
    build, sort = [], []
    for _ in range(max(args.model_repeats, 5)):
        t0 = time.perf_counter()
        build_batch(items)
        t1 = time.perf_counter()
        order = np.argsort(before[K.EDGE_INDEX][0].numpy(), kind="stable")
        edge_layout(before[K.EDGE_INDEX][:, torch.from_numpy(order)], a)
        t2 = time.perf_counter()
        build.append(t1 - t0)
        sort.append(t2 - t1)
    lines += ["", f"Collate (build_batch of this batch, in the DataLoader): {1e3 * statistics.median(build):.2f} ms, of "
              f"which the sort by receiver and the layout {1e3 * statistics.median(sort):.2f} ms (median of "
              f"{len(build)})."]
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--neighbors", type=int, default=20, help="edges per atom (atoms = E / neighbors)")
    add_report_args(p, "bench_tp_layout", repeats=7, widths=[32, 64], model_repeats=7)
    p.add_argument("--periodic-emt", type=int, metavar="N",
                   help="instead of --data: N periodic Cu/Al EMT cells (32 atoms), generated into a temporary folder")
    p.set_defaults(ells=[1, 2])
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device cuda: this benchmark measures the CPU kernels' sorts (the CUDA one is in gpu_session.sh)")
    args.data_label = f"`{args.data}`"
    if args.periodic_emt:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="bench_tp_layout_")
        args.data = _periodic_emt(Path(tmp) / "cual_emt.extxyz", args.periodic_emt)
        args.data_label = f"{args.periodic_emt} periodic Cu/Al EMT cells (fcc 2×2×2, 32 atoms, `--periodic-emt`)"
    heading = (f"### Op level ({args.dtype}, native CPU kernels; atoms = E / {args.neighbors}; random senders and "
               f"receivers; median of {args.repeats} interleaved rounds; ℓ = hidden = harmonics = output ℓ max)")
    notes = ("unsorted: neighbour-list order, no layout (both sorts in every call, as before); sorted: the edges "
             "sorted by receiver, no layout (the forward finds them sorted; the backward sorts by sender); layout: "
             "sorted with receiver_ptr and sender_order (no sort; the CPU kernels check the layout in one pass). "
             "All three give the same result; sorted and layout bit for bit.")
    title = "## Edges sorted by receiver once per batch: what the native interaction saves (issue 11)"
    run_report(args, title, "bench_tp_layout", heading, lambda: op_table(args), notes, lambda: model_part(args))


if __name__ == "__main__":
    main()
