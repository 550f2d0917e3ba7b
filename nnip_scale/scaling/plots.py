"""PNG figures of a fit (matplotlib, Agg backend), each written atomically (temp file + rename).

- ``frontier_flops.png`` / ``frontier_gpu_hours.png`` (paper Fig. 1 style): every checkpoint faint,
  the frontier points, the fitted L(C) / L(H) line per architecture.
- ``loss_vs_N_D.png`` (paper Fig. 5 style): one row per architecture; loss vs N coloured by D with
  the fitted L(N, D) at a few D, and loss vs D coloured by N with the fit at a few N.
- ``residuals.png``: log(L / L_fit) of L(N, D) on all points and of L(C), L(H) on their frontiers.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .laws import predict_lnd, predict_power


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_atomic(fig, path, dpi=80):
    """savefig to a temp file in the target folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".fig.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _plt().close(fig)


def _ok(entry):
    return isinstance(entry, dict) and entry and "error" not in entry


def _power(entry):
    """An L(C) / L(H) entry as predict_power takes it (L(H) names its parameters gamma_h, F_h)."""
    return {"gamma": entry.get("gamma", entry.get("gamma_h")), "F": entry.get("F", entry.get("F_h")),
            "L_inf": entry["L_inf"]}


def _ci(entry, key):
    ci = (entry.get("ci95") or {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _levels(values, k=4):
    """Up to k representative values: the distinct ones, or log-spaced quantiles."""
    u = np.unique(values)
    if len(u) <= k:
        return u
    return np.exp(np.quantile(np.log(values), np.linspace(0.0, 1.0, k)))


def frontier_figure(pts, fits, law, path):
    col, xlabel, gkey = {"L_C": ("C", "training compute C [FLOP]", "γ_c"),
                         "L_H": ("H", "device-hours H (GPU-hours on GPU runs)", "γ_h")}[law]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    drawn = False
    for i, (arch, fit) in enumerate(fits.items()):
        m = (pts["arch"] == arch) & np.isfinite(pts[col]) & (pts[col] > 0)
        if not m.any():
            continue
        colour = f"C{i}"
        ax.scatter(pts[col][m], pts["loss"][m], s=8, color=colour, alpha=0.3, lw=0)
        e = fit.get(law, {})
        if _ok(e) and ("gamma" in e or "gamma_h" in e):
            name = "gamma" if "gamma" in e else "gamma_h"
            fx, fl = np.array(e["frontier"][col]), np.array(e["frontier"]["loss"])
            ax.scatter(fx, fl, s=16, color=colour, edgecolor="k", lw=0.4, zorder=3)
            x = np.geomspace(fx.min(), fx.max(), 100)
            flag = " ⚠" if any(f.get("quantity") == name for f in e.get("flags", [])) else ""
            label = f"{arch}: {gkey}={e[name]:.3f}{_ci(e, name)}{flag}, L∞={e['L_inf']:.3g}"
            ax.plot(x, predict_power(_power(e), x), color=colour, lw=1.8, label=label)
        elif isinstance(e, dict) and "frontier" in e:  # frontier only (tools/plot_frontier.py)
            fx, fl = np.array(e["frontier"][col]), np.array(e["frontier"]["loss"])
            ax.plot(fx, fl, "o-", ms=3, color=colour, lw=1.2, label=f"{arch}: frontier ({len(fx)} points)")
        else:
            ax.plot([], [], color=colour, label=f"{arch}: {law} not fitted")
        drawn = True
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="validation loss",
           title=f"{'FLOPs' if law == 'L_C' else 'train-time'}-optimal frontier and fitted {law.replace('_', '(')})")
    ax.grid(True, which="both", alpha=0.25)
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_atomic(fig, path)


def lnd_figure(pts, fits, path):
    plt = _plt()
    archs = list(fits)
    fig, axes = plt.subplots(len(archs), 2, figsize=(10, 3.6 * len(archs)), squeeze=False)
    for row, arch in zip(axes, archs):
        m = pts["arch"] == arch
        N, D, L = pts["N"][m], pts["D"][m], pts["loss"][m]
        e = fits[arch].get("L_ND", {})
        ok = np.isfinite(N) & np.isfinite(D) & (N > 0) & (D > 0) & (L > 0)
        for ax, (x, c, xl, cl) in zip(row, ((N, D, "parameters N", "atoms seen D"),
                                            (D, N, "atoms seen D", "parameters N"))):
            if not ok.any():
                ax.text(0.5, 0.5, "no N/D data", ha="center", transform=ax.transAxes)
                continue
            norm = plt.Normalize(np.log10(c[ok].min()), np.log10(c[ok].max()) + 1e-9)
            cmap = plt.get_cmap("viridis")
            sc = ax.scatter(x[ok], L[ok], c=np.log10(c[ok]), cmap=cmap, norm=norm, s=10)
            fig.colorbar(sc, ax=ax, label=f"log10 {cl}")
            if _ok(e):
                xs = np.geomspace(x[ok].min(), x[ok].max(), 100)
                for level in _levels(c[ok]):
                    y = predict_lnd(e, xs, level) if x is N else predict_lnd(e, level, xs)
                    ax.plot(xs, y, color=cmap(norm(np.log10(level))), lw=1.2)
            ax.set(xscale="log", yscale="log", xlabel=xl, ylabel="validation loss")
            ax.grid(True, which="both", alpha=0.25)
        flagged = {f.get("quantity") for f in e.get("flags", [])} if _ok(e) else set()
        title = (f"{arch}: α={e['alpha']:.3f}{_ci(e, 'alpha')}{' ⚠' if 'alpha' in flagged else ''}, "
                 f"β={e['beta']:.3f}{_ci(e, 'beta')}{' ⚠' if 'beta' in flagged else ''}"
                 if _ok(e) else f"{arch}: L(N, D) not fitted: {e.get('error', '')[:70]}")
        row[0].set_title(title, fontsize=8)
    fig.tight_layout()
    save_atomic(fig, path)


def residual_figure(pts, fits, path):
    plt = _plt()
    archs = list(fits)
    fig, axes = plt.subplots(len(archs), 3, figsize=(13, 3.2 * len(archs)), squeeze=False)
    for row, arch in zip(axes, archs):
        m = pts["arch"] == arch
        fit = fits[arch]
        e = fit.get("L_ND", {})
        ax = row[0]
        if _ok(e):
            r = np.log(pts["loss"][m] / predict_lnd(e, pts["N"][m], pts["D"][m]))
            sc = ax.scatter(pts["D"][m], r, c=np.log10(pts["N"][m]), s=8, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="log10 N")
            ax.set(xscale="log", xlabel="atoms seen D", title=f"{arch}: L(N, D) residuals (rms {np.sqrt(np.mean(r * r)):.2g})")
        else:
            ax.set_title(f"{arch}: L(N, D) not fitted", fontsize=8)
        for ax, law, col, xl in ((row[1], "L_C", "C", "C [FLOP]"), (row[2], "L_H", "H", "device-hours")):
            e = fit.get(law, {})
            if _ok(e):
                fx, fl = np.array(e["frontier"][col]), np.array(e["frontier"]["loss"])
                r = np.log(fl / predict_power(_power(e), fx))
                ax.scatter(fx, r, s=12, color="C0")
                ax.set(xscale="log", xlabel=f"{xl} (frontier points)",
                       title=f"{arch}: {law} residuals (rms {np.sqrt(np.mean(r * r)):.2g})")
            else:
                ax.set_title(f"{arch}: {law} not fitted", fontsize=8)
        for ax in row:
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_ylabel("log(L / L_fit)")
            ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    save_atomic(fig, path)


def write_figures(pts, fits, out_dir):
    """All figures into out_dir; returns (file names written, [error strings]). A figure that fails
    is reported, never fatal: the fit itself is what the report needs."""
    jobs = []
    if np.isfinite(pts["C"]).any():
        jobs.append(("frontier_flops.png", lambda p: frontier_figure(pts, fits, "L_C", p)))
    if np.isfinite(pts["H"]).any():
        jobs.append(("frontier_gpu_hours.png", lambda p: frontier_figure(pts, fits, "L_H", p)))
    jobs += [("loss_vs_N_D.png", lambda p: lnd_figure(pts, fits, p)),
             ("residuals.png", lambda p: residual_figure(pts, fits, p))]
    names, errors = [], []
    for name, draw in jobs:
        try:
            draw(os.path.join(out_dir, name))
            names.append(name)
        except Exception as err:  # noqa: BLE001 - reported in fit.json["figure_errors"]
            errors.append(f"{name}: {type(err).__name__}: {err}")
            _plt().close("all")
    return names, errors
