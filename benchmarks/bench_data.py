"""Data-pipeline speed on a real dataset: cold cache build (read + validate + write), cache reload,
DataModule setup with statistics, and DataLoader throughput (neighbour lists + collate, 1 process).

    python benchmarks/bench_data.py --data data/molecules-demo [--write benchmarks/RESULTS.md]
"""

import platform
import shutil
import tempfile
import time
from datetime import date

import torch
from _results import benchmark_parser, publish_table

from nnip_scale.data import AtomsDataModule, load_or_build, resolve_sources


def main():
    p = benchmark_parser(__doc__, "bench_data", data="data/molecules-demo")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    cache = tempfile.mkdtemp(prefix="nnip_bench_cache_")
    try:
        sources = resolve_sources(args.data)
        t = time.perf_counter()
        data = load_or_build(sources, cache_dir=cache)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        data = load_or_build(sources, cache_dir=cache)
        t_reload = time.perf_counter() - t
        dm = AtomsDataModule(args.data, cutoff=args.cutoff, batch_size=args.batch_size, cache_dir=cache)
        t = time.perf_counter()
        dm.setup("fit")
        _ = dm.statistics
        t_setup = time.perf_counter() - t
        n, edges, t = 0, 0, time.perf_counter()
        for batch in dm.train_dataloader():
            n += batch["n_structures"]
            edges += batch["n_edges"]
        t_loop = time.perf_counter() - t
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows = [
        "| step | result |", "|---|---|",
        f"| read + validate + write cache ({len(data)} structures, {data.n_atoms} atoms, {len(sources)} files) "
        f"| {t_build:.1f} s |",
        f"| reload cache (memory-mapped) | {t_reload * 1000:.0f} ms |",
        f"| DataModule setup + statistics (cache warm) | {t_setup:.2f} s |",
        f"| train DataLoader: neighbour lists + collate, 1 process, batch {args.batch_size}, cutoff {args.cutoff} Å | "
        f"{n / t_loop:.0f} structures/s ({edges / t_loop / 1e6:.2f} M edges/s) |",
    ]
    header = (f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; date {date.today()}; data `{args.data}`.\n"
              f"Command: `python benchmarks/bench_data.py --data {args.data}`\n\n")
    publish_table(header, rows, args.write, "bench_data")


if __name__ == "__main__":
    main()
