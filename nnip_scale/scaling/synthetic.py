"""Seeded synthetic learning curves drawn from a known L(N, D) (tests and the worked example).

One run per (N, seed): checkpoints at the atoms-seen values ``d_points``, loss multiplied by
exp(noise * standard normal) independently per checkpoint, C = 3 kappa N D FLOPs and
H = C (1 + util_n0 / N) / flops_per_hour GPU-hours (a small model uses the GPU poorly: throughput
flops_per_hour N / (N + util_n0)).
"""
from __future__ import annotations

import numpy as np

#: worked example truths, (L_inf, A, B, alpha, beta, kappa): the paper's MPNN / MC-EGNN / eSEN
#: exponents and kappa (PAPER.md, docs/compute.md); A, B chosen so that both power-law terms are
#: ~0.3 at the centre of the example grid (N ~ 3e6, D ~ 3e7), which keeps the compute-optimal path
#: inside the grid
EXAMPLE = {
    "mpnn": (0.02, 20.0, 64.0, 0.28, 0.31, 2.33),
    "egnn": (0.02, 100.0, 260.0, 0.39, 0.39, 28.09),
    "esen": (0.02, 6.4e4, 1.27e5, 0.82, 0.75, 74.36),
}


def curves(law, widths_n, d_points, noise=0.0, rng=None, arch="a", kappa=1.0, seeds=1, flops_per_hour=1e15,
           util_n0=0.0):
    """Points dict (as io.load_points returns) for runs at each N in widths_n (x seeds)."""
    rng = np.random.default_rng(0) if rng is None else rng
    linf, A, B, al, be = law
    n_grid = np.repeat(np.asarray(widths_n, float), seeds)
    N, D = np.meshgrid(n_grid, np.asarray(d_points, float), indexing="ij")
    loss = (linf + A * N ** -al + B * D ** -be) * np.exp(noise * rng.standard_normal(N.shape))
    runs = np.repeat([f"{arch}-N{n:.4g}-s{i % seeds}" for i, n in enumerate(n_grid)], len(d_points))
    P = N.size
    C = 3.0 * kappa * N.ravel() * D.ravel()
    return {"N": N.ravel(), "D": D.ravel(), "C": C, "H": C * (1.0 + util_n0 / N.ravel()) / flops_per_hour, "loss": loss.ravel(),
            "step": np.tile(np.arange(1, len(d_points) + 1), len(n_grid)).astype(float),
            "run": runs.astype(object), "arch": np.full(P, arch, dtype=object),
            "src": np.array([f"synthetic[{i}]" for i in range(P)], dtype=object)}


def example(seed=0, noise=0.005, widths=None, d_points=None):
    """The worked example: three architectures, 7 widths over 3 decades, 10 checkpoints over 3 decades
    (``widths``/``d_points`` default to those grids)."""
    widths = np.geomspace(1e5, 1e8, 7) if widths is None else widths
    d_points = np.geomspace(1e6, 1e9, 10) if d_points is None else d_points
    rng = np.random.default_rng(seed)
    parts = [curves(v[:5], widths, d_points, noise, rng, a, v[5], util_n0=3e6) for a, v in EXAMPLE.items()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def write_csv(path, pts, c_column="C_FLOP", h_column="H_hours"):
    """CSV with columns run, arch, N, D, C_FLOP, H_hours, step, loss (C/H scaled to the column's unit)."""
    c_scale = {"C": 1.0, "C_FLOP": 1.0, "C_PFLOP": 1e-15}[c_column]
    h_scale = {"H": 1.0, "H_hours": 1.0, "H_s": 3600.0}[h_column]
    lines = [f"run,arch,N,D,{c_column},{h_column},step,loss"]
    for i in range(len(pts["loss"])):
        lines.append(f"{pts['run'][i]},{pts['arch'][i]},{pts['N'][i]:.8g},{pts['D'][i]:.8g},"
                     f"{pts['C'][i] * c_scale:.8g},{pts['H'][i] * h_scale:.8g},{int(pts['step'][i])},"
                     f"{pts['loss'][i]:.8g}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":  # python -m nnip_scale.scaling.synthetic OUT.csv [SEED]: the worked example's data
    import sys

    write_csv(sys.argv[1], example(seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0))
