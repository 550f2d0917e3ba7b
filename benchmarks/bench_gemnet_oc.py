"""GemNet-OC vs the invariant MACE (the two ν = 4 invariant models): training-step time and atoms/s
at about equal N on one batch of demo molecules, the share of the step spent building the index
lists and bases, and triplets / quadruplets per atom on the demo data.

One step = forward + loss + backward + optimizer step (``NNIPModule.step_terms`` and the optimizer
of each model config, as ``bench_models.py``), on the same batch for every model. Repeats are
interleaved across all models so drifting machine load hits them alike; the table gives the median
step time, and the GemNet/MACE ratio is the median of the per-round ratios. MACE runs twice: with
its config's ``backend: auto`` (native kernels where they exist) and with ``backend: torch`` (the
reference ops, like every GemNet-OC op but ``scatter_sum``).

    python benchmarks/bench_gemnet_oc.py [--pairs 44:32 64:64] [--threads 1] [--write benchmarks/RESULTS.md]

``--pairs G:M``: GemNet-OC width G against invariant-MACE width M (44:32 is the two configs:
N 60 832 vs 62 337). ``--count-batches``: training batches over which triplets and quadruplets
are counted (0: the whole training split).
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
from bench_models import Runner  # one timed-training-step runner for the benchmarks

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import MACE, GemNetOC
from nnip_scale.ops import interaction_sizes

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str) -> tuple[dict, dict]:
    cfg = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())["model"]
    return dict(cfg["backbone"]["init_args"]), {k: v for k, v in cfg.items() if k != "backbone"}


def count_interactions(loader, quad_cutoffs, n_batches):
    """Atoms, edges, triplets and quadruplets (per quadruplet cutoff) summed over the loader."""
    totals = {"atoms": 0, "edges": 0, "structures": 0}
    for k, b in enumerate(loader):
        if n_batches and k >= n_batches:
            break
        ei, pos = b["edge_index"], b["positions"].double()
        cell = b["cell"].double()[b["batch"][ei[0]]]
        dist = (pos[ei[1]] - pos[ei[0]] + torch.einsum("ek,ekl->el", b["edge_shift"].double(), cell)).norm(dim=-1)
        totals["atoms"] += b["n_atoms"]
        totals["edges"] += b["n_edges"]
        totals["structures"] += b["n_structures"]
        for cq in quad_cutoffs:
            for name, v in interaction_sizes(ei, b["edge_shift"], dist, b["n_atoms"], cq).items():
                totals[(cq, name)] = totals.get((cq, name), 0) + v
    return totals


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--pairs", nargs="+", default=["44:32", "64:64"], help="GemNet width:MACE width")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quad-cutoffs", type=float, nargs="+", default=[2.5, 3.0, 3.5, 4.0, 5.0])
    p.add_argument("--count-batches", type=int, default=0, help="0: the whole training split")
    p.add_argument("--write", help="markdown file whose bench_gemnet_oc section is replaced with the tables")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g_args, g_opts = model_config("gemnet_oc")
    m_args, m_opts = model_config("mace_invariant")
    dm = AtomsDataModule(train=args.data, cutoff=5.0, val_fraction=0.05, test_fraction=0.05,
                         batch_size=args.batch_size, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    pairs = [tuple(int(x) for x in s.split(":")) for s in args.pairs]
    runners = []
    for gw, mw in pairs:
        runners.append((Runner("GemNet-OC", GemNetOC, g_args, g_opts, gw, batch, dm.statistics, torch.device("cpu")),
                        Runner(f"MACE ℓ0 ν4 (backend {m_args.get('backend', 'auto')})", MACE, m_args, m_opts, mw,
                               batch, dm.statistics, torch.device("cpu")),
                        Runner("MACE ℓ0 ν4 (backend torch)", MACE, {**m_args, "backend": "torch"}, m_opts, mw,
                               batch, dm.statistics, torch.device("cpu"))))
    for group in runners:
        for r in group:
            for _ in range(args.warmup):
                r.step()
    ratios = {(k, j): [] for k in range(len(runners)) for j in (1, 2)}
    graph_times = {k: [] for k in range(len(runners))}
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for k, group in enumerate(runners):
            times = [r.timed(args.steps) for r in group]
            for j in (1, 2):
                ratios[(k, j)].append(times[0] / times[j])
            g = group[0]
            backbone = g.module.backbone
            with torch.no_grad():
                ts = time.perf_counter()
                backbone.interaction_graph(batch, backbone.edge_vectors(batch, batch["positions"], batch["cell"]))
                graph_times[k].append(time.perf_counter() - ts)
    wall = time.perf_counter() - t0

    threads = torch.get_num_threads()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    cmd = (f"python benchmarks/bench_gemnet_oc.py --pairs {' '.join(args.pairs)}"
           + (f" --threads {args.threads}" if args.threads else "") + f" --repeats {args.repeats} --steps {args.steps}")
    lines = [
        "## GemNet-OC vs invariant MACE: training step, atoms/s, triplets and quadruplets (issue 15)",
        "",
        f"Machine: 2-core VM, no GPU ({platform.machine()}, torch {torch.__version__}, {threads} thread(s)); "
        f"date {date.today()}; 1-min load average {load} at the end (the CPU is shared with other jobs). "
        f"One batch of {batch['n_structures']} demo molecules ({batch['n_atoms']} atoms, {batch['n_edges']} edges); "
        f"median of {args.repeats} interleaved rounds × {args.steps} steps (timed wall {wall:.0f} s).",
        f"Command: `{cmd}`",
        "",
        "| model | width | N (excl. embedding) | step (ms) | min–max (ms) | atoms/s "
        "| GemNet step / this step (median of rounds) | index + bases (ms, share of step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, group in enumerate(runners):
        for j, r in enumerate(group):
            med = statistics.median(r.times)
            ratio = f"{statistics.median(ratios[(k, j)]):.2f}×" if j else ""
            graph = statistics.median(graph_times[k])
            share = "" if j else f"{1e3 * graph:.1f} ({100 * graph / med:.0f} %)"
            lines.append(f"| {r.name} | {r.width} | {r.counts['n_params']:,} | {1e3 * med:.1f} | {1e3 * min(r.times):.1f}–"
                         f"{1e3 * max(r.times):.1f} | {batch['n_atoms'] / med:,.0f} | {ratio} | {share} |")

    totals = count_interactions(dm.train_dataloader(), args.quad_cutoffs, args.count_batches)
    a = totals["atoms"]
    lines += [
        "",
        f"Interactions per atom on the demo training split ({totals['structures']:,} structures, {a:,} atoms, "
        f"edge cutoff 5 Å: {totals['edges'] / a:.2f} edges per atom, "
        f"{totals[(args.quad_cutoffs[0], 'n_triplets')] / a:.1f} triplets per atom):",
        "",
        "| quadruplet cutoff (Å) | quadruplet edges / atom | quadruplet triplets / atom | quadruplets / atom |",
        "|---|---|---|---|",
    ]
    for cq in args.quad_cutoffs:
        lines.append(f"| {cq:g} | {totals[(cq, 'n_quad_edges')] / a:.2f} | {totals[(cq, 'n_quad_triplets')] / a:.1f} | "
                     f"{totals[(cq, 'n_quadruplets')] / a:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        replace_section(args.write, "bench_gemnet_oc", table)


if __name__ == "__main__":
    main()
