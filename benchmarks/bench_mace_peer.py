"""Our MACE vs the ``mace-torch`` package's MACE: one training step, same batch, same sizes.

Both models get the same channels C, hidden ℓ_max, spherical harmonics ℓ ≤ 3, correlation order,
cutoff, number of interactions, Bessel functions (8), polynomial-cutoff order (5), radial MLP
[64, 64, 64] and readout MLP (16). One step = forward + forces + loss + backward (no optimizer):
for mace-torch forces are −∂E/∂r (its only mode), so our model runs with ``forces: conservative``
for the like-for-like ratio; our direct-force model (the paper's setting) is timed as an extra
row. The loss is the same function of (E, F) for both. Repeats are interleaved across all
models in one process; medians are reported.

mace-torch in a separate virtual environment, so the project's own stays untouched (nnip-scale from
the repository on PYTHONPATH: its extension, already built in place, is not rebuilt):

    python -m venv /work/venv-mace && /work/venv-mace/bin/pip install torch==2.13.0
    /work/venv-mace/bin/pip install <nnip-scale's install_requires from setup.py> cuequivariance-torch torch==2.13.0
    /work/venv-mace/bin/pip install mace-torch torch==2.13.0
    PYTHONPATH=. /work/venv-mace/bin/python benchmarks/bench_mace_peer.py [--widths 32 64] [--ells 0 1] \
        [--device cpu|cuda] [--write benchmarks/RESULTS.md]
"""

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch
from _results import replace_section

from nnip_scale.data import AtomsDataModule
from nnip_scale.models import MACE

ELEMENTS = [1, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17]


def peer_model(width, max_ell, correlation, depth, cutoff, avg_neighbors):
    # e3nn 0.4.4 torch.load()s its own constants.pt, which holds `slice` objects: allow them under
    # torch >= 2.6's weights_only default (the file ships with the installed e3nn package)
    torch.serialization.add_safe_globals([slice])
    from e3nn import o3
    from mace import modules

    hidden = " + ".join(f"{width}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(max_ell + 1))
    return modules.MACE(
        r_max=cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=depth, num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(ELEMENTS)),
        avg_num_neighbors=avg_neighbors, atomic_numbers=ELEMENTS, correlation=correlation,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
    )


def peer_batch(batch: dict) -> dict:
    """Our batch dict (docs/conventions.md) in mace-torch's format (same edges, same order)."""
    z = batch["atomic_numbers"]
    table = torch.full((119,), -1, dtype=torch.long, device=z.device)
    table[torch.tensor(ELEMENTS, device=z.device)] = torch.arange(len(ELEMENTS), device=z.device)
    onehot = torch.nn.functional.one_hot(table[z], len(ELEMENTS)).to(batch["positions"].dtype)
    i = batch["edge_index"][0]
    shifts = torch.einsum("ek,ekl->el", batch["edge_shift"], batch["cell"][batch["batch"][i]])
    ptr = torch.zeros(batch["n_structures"] + 1, dtype=torch.long, device=z.device)
    ptr[1:] = torch.cumsum(batch["num_atoms"], 0)
    return {
        "positions": batch["positions"].clone(), "node_attrs": onehot, "edge_index": batch["edge_index"],
        "shifts": shifts, "unit_shifts": batch["edge_shift"], "cell": batch["cell"].reshape(-1, 3),
        "batch": batch["batch"], "ptr": ptr,
    }


def loss_fn(energy, forces, batch):
    n = batch["num_atoms"].to(energy.dtype)
    return ((energy - batch["energy"]) / n).square().mean() + (forces - batch["forces"]).square().sum(-1).mean()


class Ours:
    def __init__(self, batch, stats, **kw):
        torch.manual_seed(0)
        self.model = MACE(elements=ELEMENTS, backend="auto", **kw)
        self.model.set_statistics(stats)
        self.batch = batch

    def step(self):
        self.model.zero_grad(set_to_none=True)
        out = self.model(self.batch)
        loss_fn(out["energy"], out["forces"], self.batch).backward()


class Peer:
    def __init__(self, batch, stats, width, max_ell, correlation, depth, cutoff):
        torch.manual_seed(0)
        self.model = peer_model(width, max_ell, correlation, depth, cutoff, float(stats.avg_num_neighbors))
        self.batch, self.data = batch, peer_batch(batch)

    def step(self):
        self.model.zero_grad(set_to_none=True)
        data = dict(self.data, positions=self.data["positions"].detach().clone())
        out = self.model(data, training=True, compute_force=True)
        loss_fn(out["energy"], out["forces"], self.batch).backward()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin:molecules-demo")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    p.add_argument("--ells", type=int, nargs="+", default=[0, 1], help="hidden ℓ_max values")
    p.add_argument("--correlation", type=int, default=3)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--machine", default=None)
    p.add_argument("--date", default=f"{date.today()}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--write", help="markdown file whose bench_mace_peer section is replaced")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    dm = AtomsDataModule(train=args.data, cutoff=args.cutoff, val_fraction=0.05, test_fraction=0.0,
                         batch_size=args.batch_size)
    dm.setup("fit")
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(iter(dm.train_dataloader())).items()}
    groups = []
    for ell in args.ells:
        for w in args.widths:
            common = dict(width=w, max_ell=ell, correlation=args.correlation, depth=args.depth, cutoff=args.cutoff)
            ours_kw = dict(width=w, max_ell=ell, sh_max_ell=3, correlation=args.correlation, depth=args.depth,
                           cutoff=args.cutoff, num_radial=8, envelope_order=5, radial_hidden=64, radial_layers=3,
                           readout_hidden=16)
            runners = {
                "mace-torch": Peer(batch, dm.statistics, **common),
                "ours (conservative)": Ours(batch, dm.statistics, forces="conservative", **ours_kw),
                "ours (direct)": Ours(batch, dm.statistics, forces="direct", **ours_kw),
            }
            for r in runners.values():
                r.model.to(device)
                if hasattr(r, "data"):
                    r.data = {k: v.to(device) for k, v in r.data.items()}
            groups.append(((ell, w), runners, {k: [] for k in runners}))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _, runners, _ in groups:
        for r in runners.values():
            for _ in range(args.warmup):
                r.step()
    for _ in range(args.repeats):
        for _, runners, times in groups:
            for name, r in runners.items():
                sync()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    r.step()
                sync()
                times[name].append((time.perf_counter() - t0) / args.steps)
    dev = args.machine or (torch.cuda.get_device_name(device) if device.type == "cuda"
                           else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    rows = ["| ℓ_max | C | model | params | step (ms, median) | min–max (ms) | ours / mace-torch |",
            "|---|---|---|---|---|---|---|"]
    for (ell, w), runners, times in groups:
        peer = statistics.median(times["mace-torch"])
        for name, r in runners.items():
            med = statistics.median(times[name])
            rows.append(f"| {ell} | {w} | {name} | {n_params(r.model):,} | {1e3 * med:.1f} | "
                        f"{1e3 * min(times[name]):.1f}–{1e3 * max(times[name]):.1f} | {med / peer:.2f} |")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("mace-torch", "e3nn"))
    header = (f"Machine: {dev}; torch {torch.__version__}, {versions}; date {args.date}; one batch of "
              f"{batch['n_structures']} demo molecules ({batch['n_atoms']} atoms, {batch['n_edges']} edges), fp32; "
              f"sh ℓ ≤ 3, correlation {args.correlation}, {args.depth} interactions, cutoff {args.cutoff} Å; "
              f"median of {args.repeats} interleaved rounds × {args.steps} steps; ours with backend `auto` "
              f"(native interaction, symmetric contraction and scatters on CPU); wall {time.perf_counter() - t_start:.0f} s, "
              f"1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the CPU is shared "
              "with other jobs: all times inflate alike).\n"
              f"Command (mace-torch in its own venv, see the script's docstring): `PYTHONPATH=. /work/venv-mace/bin/python "
              f"benchmarks/bench_mace_peer.py --device {args.device} --widths {' '.join(map(str, args.widths))} --ells "
              f"{' '.join(map(str, args.ells))} --repeats {args.repeats}"
              f"{f' --threads {args.threads}' if args.threads else ''}`\n\n")
    note = ("\nparams: all trainable parameters (embeddings included). mace-torch has more because its "
            "interactions carry element-dependent `skip_tp` tensor products (num_elements × C² per ℓ: 57k + 14k of "
            "its 130k at ℓ 0, C 32); ours keeps element-dependent weights only in the symmetric contraction (the same "
            "13 per element and channel at ℓ 0) and uses element-independent linear maps elsewhere. Same C, ℓ, "
            "correlation, cutoff, interactions, radial/readout MLPs; not the identical architecture.\n")
    table = "## MACE vs mace-torch: one training step (issues 3, 11)\n\n" + header + "\n".join(rows) + "\n" + note
    print(table)
    if args.write:
        replace_section(args.write, "bench_mace_peer", table)


if __name__ == "__main__":
    main()
