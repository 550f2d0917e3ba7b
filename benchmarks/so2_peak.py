"""Peak memory of the eSEN edge path's forward + backward (so2_rotate_in + so2_rotate_out_scatter, as in
bench_so2.py), native vs torch: the growth of the peak resident set above the resident set before the call
(``_bench_ops.peak_rss_growth``), each case and backend in a fresh interpreter after a small warm-up call.

    python benchmarks/so2_peak.py [--edges 10000] [--channels 16 64] [--lmax 2 4 6]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(lmax: int, channels: int, n_edges: int, backend: str) -> int:
    import bench_so2 as b
    import torch
    from _bench_ops import peak_rss_growth

    torch.set_num_threads(1)

    def make(e):
        dense, compact, rows, x, src, dst = b._case(lmax, 2, channels, e, max(e // 20, 1), torch.float32)
        return b._pass_fn("fwd+bwd", backend, x, dense if backend == "torch" else compact, src, dst, rows)

    make(200)()  # warm-up: kernels, allocator, thread pool
    return peak_rss_growth(make(n_edges))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        lmax, channels, n_edges, backend = sys.argv[2:6]
        print(json.dumps({"peak": child(int(lmax), int(channels), int(n_edges), backend)}))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edges", type=int, default=10000)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    p.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6])
    args = p.parse_args()
    print("| ℓmax | mmax | E | C | peak fwd+bwd torch (MB) | native (MB) | torch / native |")
    print("|---|---|---|---|---|---|---|")
    for lmax in args.lmax:
        for channels in args.channels:
            peak = {}
            for backend in ("torch", "native"):
                cmd = [sys.executable, __file__, "--child", str(lmax), str(channels), str(args.edges), backend]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"so2_peak.py: child {cmd[2:]} failed:\n{out.stderr[-2000:]}")
                peak[backend] = json.loads(out.stdout.strip().splitlines()[-1])["peak"] / 2**20
            print(f"| {lmax} | 2 | {args.edges:,} | {channels} | {peak['torch']:.1f} | {peak['native']:.1f} | "
                  f"{peak['torch'] / peak['native']:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
