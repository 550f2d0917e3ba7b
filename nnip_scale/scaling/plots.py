"""PNG figures of a fit (matplotlib, Agg backend), each written atomically (temp file + rename).

- ``frontier_flops.png`` / ``frontier_gpu_hours.png`` (paper Fig. 1 style): every checkpoint faint,
  the frontier points, the fitted L(C) / L(H) line per architecture.
- ``loss_vs_N_D.png`` (paper Fig. 5 style): one row per architecture; loss vs N coloured by D with
  the fitted L(N, D) at a few D, and loss vs D coloured by N with the fit at a few N.
- ``residuals.png``: log(L / L_fit) of L(N, D) on all points and of L(C), L(H) on their frontiers.
- ``holdout.png`` (with a holdout): predicted vs measured final loss of the held-out runs, one panel
  per law, 95 % bootstrap intervals as error bars, the y = x line; the fitted runs' own final losses
  faint for comparison.
"""
from __future__ import annotations

import os

import numpy as np

from nnip_scale.atomic_io import atomic_open

from .laws import predict_lnd, predict_power


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_atomic(fig, path, dpi=80):
    """savefig (PNG) to ``path`` atomically (:func:`nnip_scale.atomic_io.atomic_open`), then close ``fig``."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=dpi, format="png")
    _plt().close(fig)


#: a qualitative, colour-blind-safe palette (Okabe & Ito) with a marker per architecture, so two
#: architectures are told apart by hue and by shape (and in grey print)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def arch_style(i):
    """(colour, marker) of the i-th architecture of a figure (the same order in every figure)."""
    return PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]


def readable_log_axis(ax, which, values):
    """Tick labels that do not collide on a log axis: where fewer than two powers of ten fall in the
    view (they would label one tick or none), a few round decimal ticks evenly spaced in log (0.95, 1,
    1.2, 1.5) and no minor labels; otherwise powers of ten with unlabelled minor ticks. ``which``
    is ``"x"`` or ``"y"``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    axis.set_minor_formatter(NullFormatter())
    if len(v) == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    view = ax.get_xlim() if which == "x" else ax.get_ylim()  # ticks over what is shown, not just the data
    if min(view) > 0:
        lo, hi = min(lo, *view), max(hi, *view)
    powers_inside = int(np.floor(np.log10(hi))) - int(np.ceil(np.log10(lo))) + 1
    if powers_inside >= 2:  # at least two powers of ten to label it
        axis.set_major_formatter(LogFormatterSciNotation())
        return
    wide = lo < 1e-3 or hi >= 1e5  # labels in mantissa × 10^k are wider: fewer of them
    ticks = _nice_ticks(lo, hi, most=4 if wide else 5)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: _plain_label(x)))


def _plain_label(x):
    """20000 -> '20000', 0.95 -> '0.95', 2.5e10 -> '2.5×10¹⁰' (mathtext)."""
    if x <= 0 or 1e-3 <= x < 1e5:
        return f"{x:.6g}"
    k = int(np.floor(np.log10(x)))
    return rf"${x / 10.0 ** k:.3g}\times10^{{{k}}}$"


def _nice_ticks(lo, hi, most=5):
    """Round numbers between lo and hi, evenly spaced in log so labels never crowd one end: for each
    of ``most`` log-spaced targets the nearest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k (or of
    all two-digit mantissas when fewer than three of those fall inside), duplicates dropped."""
    def inside(mantissas):
        k0, k1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
        return np.array(sorted({round(m * 10.0 ** k, 12) for k in range(k0, k1 + 1) for m in mantissas
                                if lo <= m * 10.0 ** k <= hi}))

    cands = inside((1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0))
    if len(cands) < 3:
        cands = inside(np.round(np.arange(1.0, 10.0, 0.1), 1))
    if len(cands) < 2:
        return [float(f"{lo:.3g}"), float(f"{hi:.3g}")]
    targets = np.geomspace(lo, hi, most)
    picked = {float(cands[np.argmin(np.abs(np.log(cands) - np.log(t)))]) for t in targets}
    return sorted(picked)


def _ok(entry):
    return isinstance(entry, dict) and entry and "error" not in entry


def _power(entry):
    """An L(C) / L(H) entry as predict_power takes it (L(H) names its parameters gamma_h, F_h)."""
    return {"gamma": entry.get("gamma", entry.get("gamma_h")), "F": entry.get("F", entry.get("F_h")),
            "L_inf": entry["L_inf"]}


def _ci(entry, key):
    ci = (entry.get("ci95") or {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _log_log(ax, x, y, **labels):
    """Log-log axes with readable ticks for the data ``x``, ``y`` and a light grid; ``labels`` go to
    ``ax.set`` (xlabel, ylabel, title, limits)."""
    ax.set(xscale="log", yscale="log", **labels)
    readable_log_axis(ax, "x", x)
    readable_log_axis(ax, "y", y)
    ax.grid(True, which="both", alpha=0.25)


def _arch_rows(fits, ncols, width, row_height):
    """A figure with one row of ``ncols`` axes per architecture of ``fits``: (figure, [(row, arch)])."""
    archs = list(fits)
    fig, axes = _plt().subplots(len(archs), ncols, figsize=(width, row_height * len(archs)), squeeze=False)
    return fig, list(zip(axes, archs))


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
    drawn = fitted = False
    shown = np.zeros(len(pts["loss"]), dtype=bool)
    for i, (arch, fit) in enumerate(fits.items()):
        m = (pts["arch"] == arch) & np.isfinite(pts[col]) & (pts[col] > 0)
        if not m.any():
            continue
        shown |= m
        colour, marker = arch_style(i)
        ax.scatter(pts[col][m], pts["loss"][m], s=8, color=colour, marker=marker, alpha=0.3, lw=0)
        e = fit.get(law, {})
        if _ok(e) and ("gamma" in e or "gamma_h" in e):
            name = "gamma" if "gamma" in e else "gamma_h"
            fx, fl = np.array(e["frontier"][col]), np.array(e["frontier"]["loss"])
            ax.scatter(fx, fl, s=22, color=colour, marker=marker, edgecolor="k", lw=0.4, zorder=3)
            x = np.geomspace(fx.min(), fx.max(), 100)
            flag = " ⚠" if any(f.get("quantity") == name for f in e.get("flags", [])) else ""
            label = f"{arch}: {gkey}={e[name]:.3f}{_ci(e, name)}{flag}, L∞={e['L_inf']:.3g}"
            ax.plot(x, predict_power(_power(e), x), color=colour, lw=1.8, label=label)
            fitted = True
        elif isinstance(e, dict) and "frontier" in e:  # frontier only (tools/plot_frontier.py)
            fx, fl = np.array(e["frontier"][col]), np.array(e["frontier"]["loss"])
            ax.plot(fx, fl, "-", marker=marker, ms=4, color=colour, lw=1.2, label=f"{arch}: frontier ({len(fx)} points)")
        else:
            ax.plot([], [], color=colour, label=f"{arch}: {law} not fitted")
        drawn = True
    kind = "FLOPs" if law == "L_C" else "device-time"
    _log_log(ax, pts[col][shown], pts["loss"][shown], xlabel=xlabel, ylabel="validation loss",
             title=f"{kind}-optimal frontier" + (f" and fitted {law.replace('_', '(')})" if fitted else ""))
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_atomic(fig, path)


def lnd_figure(pts, fits, path):
    plt = _plt()
    fig, rows = _arch_rows(fits, 2, 10, 3.6)
    for row, arch in rows:
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
            _log_log(ax, x[ok], L[ok], xlabel=xl, ylabel="validation loss")
        flagged = {f.get("quantity") for f in e.get("flags", [])} if _ok(e) else set()
        title = (f"{arch}: α={e['alpha']:.3f}{_ci(e, 'alpha')}{' ⚠' if 'alpha' in flagged else ''}, "
                 f"β={e['beta']:.3f}{_ci(e, 'beta')}{' ⚠' if 'beta' in flagged else ''}"
                 if _ok(e) else f"{arch}: L(N, D) not fitted: {e.get('error', '')[:70]}")
        row[0].set_title(title, fontsize=8)
    fig.tight_layout()
    save_atomic(fig, path)


def residual_figure(pts, fits, path):
    fig, rows = _arch_rows(fits, 3, 13, 3.2)
    for row, arch in rows:
        m = pts["arch"] == arch
        fit = fits[arch]
        e = fit.get("L_ND", {})
        ax = row[0]
        if _ok(e):
            r = np.log(pts["loss"][m] / predict_lnd(e, pts["N"][m], pts["D"][m]))
            sc = ax.scatter(pts["D"][m], r, c=np.log10(pts["N"][m]), s=8, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="log10 N")
            ax.set(xscale="log", xlabel="atoms seen D", title=f"{arch}: L(N, D) residuals (rms {np.sqrt(np.mean(r * r)):.2g})")
            readable_log_axis(ax, "x", pts["D"][m])
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
                readable_log_axis(ax, "x", fx)
            else:
                ax.set_title(f"{arch}: {law} not fitted", fontsize=8)
        for ax in row:
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_ylabel("log(L / L_fit)")
            ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    save_atomic(fig, path)


_LAW_TITLE = {"L_ND": "L(N, D) at the run's N, D", "L_C": "L(C) at the run's C", "L_H": "L(H) at the run's H"}


def holdout_figure(fits, path):
    """Predicted vs measured final loss of the held-out runs (fits[arch]["holdout"]): one panel per
    law with at least one prediction, points in the architecture's colour and marker (filled: the
    measurement is inside the one-run 95 % interval; open: outside; half-filled: no interval),
    vertical bars the intervals (thick: the law's, thin: one run's), the y = x line; faint, the
    points the law was fitted to against its fit (``in_sample``: the fitted runs' final losses for
    L(N, D), the frontier points for L(C), L(H))."""
    plt = _plt()
    laws = [law for law in ("L_ND", "L_C", "L_H")
            if any(r["law"] == law and r.get("predicted") is not None
                   for f in fits.values() for r in (f.get("holdout") or {}).get("table") or [])]
    spec = next((f["holdout"].get("spec") for f in fits.values() if isinstance(f.get("holdout"), dict)), "?")
    fig, axes = plt.subplots(1, max(1, len(laws)), figsize=(5.0 * max(1, len(laws)), 4.9), squeeze=False)
    axes = axes[0]
    if not laws:
        axes[0].text(0.5, 0.5, f"holdout {spec}: no prediction could be computed\n(fit.md lists why)",
                     ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, law in zip(axes, laws):
        values, faint = [], False
        for i, (arch, fit) in enumerate(fits.items()):
            h = fit.get("holdout") or {}
            rows = [r for r in h.get("table") or [] if r["law"] == law and r.get("predicted") is not None]
            if not rows:
                continue
            colour, marker = arch_style(i)
            ins = [r for r in (h.get("in_sample") or {}).get(law) or [] if r.get("predicted") is not None]
            if ins:
                m, p = np.array([r["measured"] for r in ins]), np.array([r["predicted"] for r in ins])
                ax.scatter(m, p, s=14, color=colour, marker=marker, alpha=0.3, lw=0)
                values += [*m, *p]
                faint = True
            n_in = sum(r.get("inside") is True for r in rows)
            n_ci = sum(r.get("inside") is not None for r in rows)
            label = f"{arch}: {n_in}/{n_ci} inside" if n_ci else f"{arch}: no interval"
            for r in rows:
                m, p = r["measured"], r["predicted"]
                for ci, lw, cap in ((r.get("pi95"), 0.9, 3), (r.get("ci95"), 2.6, 0)):  # one run: thin; law: thick
                    if ci:
                        ax.errorbar([m], [p], yerr=[[max(p - ci[0], 0.0)], [max(ci[1] - p, 0.0)]], fmt="none",
                                    ecolor=colour, elinewidth=lw, capsize=cap, zorder=2)
                        values += list(ci)
                style = {True: {"mfc": colour}, False: {"mfc": "white"},
                         None: {"mfc": colour, "fillstyle": "left", "markerfacecoloralt": "white"}}[r.get("inside")]
                ax.plot([m], [p], marker, ms=7, color=colour, mec=colour, mew=1.4, zorder=3, **style)
                values += [m, p]
            ax.plot([], [], marker, ms=7, color=colour, ls="none", label=label)  # legend: the arch, neutral fill
        v = np.array([x for x in values if x is not None and np.isfinite(x) and x > 0])
        lo, hi = (v.min() / 1.05, v.max() * 1.05) if len(v) else (0.1, 1.0)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="y = x")
        if faint:
            ax.scatter([], [], s=14, color="0.5", alpha=0.4, lw=0,
                       label="faint: " + ("fitted runs' final losses" if law == "L_ND" else "fitted frontier points")
                       + " (in-sample)")
        _log_log(ax, v, v, xlim=(lo, hi), ylim=(lo, hi), xlabel="measured final validation loss",
                 ylabel="predicted from the runs below the cut")
        ax.set_title(f"{_LAW_TITLE[law]} (holdout {spec})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.text(0.5, 0.01, "thick bar: the law's 95 % bootstrap interval; thin bar with caps: 95 % for one run (with the "
             "fitted points' scatter); filled marker: measurement inside the one-run interval, open: outside, "
             "half-filled: no interval", ha="center", va="bottom", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
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
    if any(isinstance(f.get("holdout"), dict) for f in fits.values()):
        jobs.append(("holdout.png", lambda p: holdout_figure(fits, p)))
    names, errors = [], []
    for name, draw in jobs:
        try:
            draw(os.path.join(out_dir, name))
            names.append(name)
        except Exception as err:  # noqa: BLE001 - reported in fit.json["figure_errors"]
            errors.append(f"{name}: {type(err).__name__}: {err}")
            _plt().close("all")
    return names, errors
