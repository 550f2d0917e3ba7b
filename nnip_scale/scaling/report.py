"""``write_report``: inputs -> ``fit.json``, ``fit.md`` and the figures (the study runner and
``tools/fit_scaling_laws.py`` both call it)."""
from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np

from .analysis import fit_all, preprocess
from .io import load_points

LAWS = ("L_ND", "L_C", "L_H")


def write_atomic(path, text):
    """Write text to path via a temp file in the same directory and rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp.", suffix=".part")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _clean(x):
    """JSON-safe: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def errors(fit):
    """``["arch: law: reason", ...]`` for every law (or its intervals) that could not be computed."""
    out = []
    for arch, entry in fit["architectures"].items():
        for key in (*LAWS, "allocation"):
            e = entry.get(key) or {}
            if "error" in e:
                out.append(f"{arch}: {key}: {e['error']}")
            elif "ci95_error" in e:
                out.append(f"{arch}: {key} ci95: {e['ci95_error']}")
    return out


def warnings_of(fit):
    """``["arch: law: warning", ...]``: fitted values to distrust (e.g. an exponent on its bound)."""
    return [f"{arch}: {key}: {w}" for arch, entry in fit["architectures"].items() for key in LAWS
            for w in (entry.get(key) or {}).get("warnings", [])]


def _val(e, key, spec=".3f"):
    if not e or "error" in e or e.get(key) is None:
        return "–"
    ci = (e.get("ci95") or {}).get(key)
    s = format(e[key], spec)
    return f"{s} [{format(ci[0], spec)}, {format(ci[1], spec)}]" if ci else s


def markdown(fit):
    """fit.md: one table of the laws per architecture (95 % bootstrap intervals in brackets)."""
    o = fit["options"]
    lines = ["# Scaling-law fit", "",
             f"Inputs: {len(o['inputs'])} file(s); units C in {o['units']['C']}, H in {o['units']['H']}; "
             f"drop_first={o['drop_first']}, ema={o['ema']}, n_boot={o['n_boot']} (runs resampled), "
             f"seed={o['seed']}, fix_linf={o['fix_linf']}.", "",
             "| arch | runs | points | α | β | L∞ (N,D) | γ_c fitted | γ_c = αβ/(α+β) | γ_h | a = β/(α+β) | b = α/(α+β) "
             "| γ_c (OLS, L∞=0) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arch, f in fit["architectures"].items():
        nd, c, h, al = (f.get(k) or {} for k in ("L_ND", "L_C", "L_H", "allocation"))
        ols = c.get("loglog") or {}
        ols_s = (f"{ols['gamma']:.3f} [{ols['gamma_ci95_ols'][0]:.3f}, {ols['gamma_ci95_ols'][1]:.3f}]"
                 if "gamma" in ols else "–")
        lines.append(f"| {arch} | {f['n_runs']} | {f['n_points']} | {_val(nd, 'alpha')} | {_val(nd, 'beta')} "
                     f"| {_val(nd, 'L_inf', '.3g')} | {_val(c, 'gamma')} | {_val(al, 'gamma_c_derived')} "
                     f"| {_val(h, 'gamma_h')} | {_val(al, 'a')} | {_val(al, 'b')} | {ols_s} |")
    if o.get("budget_flops"):
        lines += ["", f"Budget C = {o['budget_flops']:.3g} FLOP (allocation under C = 3κND, κ measured from the inputs):",
                  "", "| arch | κ | N* | D* | L(N*, D*) | L(C) at budget |", "|---|---|---|---|---|---|"]
        for arch, f in fit["architectures"].items():
            al, c = f.get("allocation") or {}, f.get("L_C") or {}
            lines.append(f"| {arch} | {_val(al, 'kappa', '.3g')} | {_val(al, 'N_opt', '.3g')} | {_val(al, 'D_opt', '.3g')} "
                         f"| {_val(al, 'loss_opt', '.4g')} | {_val(c, 'loss_at_budget', '.4g')} |")
    errs = errors(fit)
    if errs:
        lines += ["", "Not computed:", ""] + [f"- {e}" for e in errs]
    warns = warnings_of(fit)
    if warns:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in warns]
    if o.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in o["notes"]]
    if fit.get("figures"):
        lines += ["", "Figures: " + ", ".join(f"`{n}`" for n in fit["figures"])]
    return "\n".join(lines) + "\n"


def _rename_lh(entry):
    """L_H is reported as gamma_h, F_h (the paper's L(H) = L_inf + F_h H^-gamma_h)."""
    if isinstance(entry, dict) and "gamma" in entry:
        ren = {"gamma": "gamma_h", "F": "F_h"}
        entry = {ren.get(k, k): v for k, v in entry.items()}
        if "ci95" in entry:
            entry["ci95"] = {ren.get(k, k): v for k, v in entry["ci95"].items()}
    return entry


def write_report(inputs, out_dir, *, drop_first=0.05, ema=None, n_boot=200, seed=0, budget_flops=None,
                 fix_linf=None, c_unit=None, h_unit=None, figures=True) -> dict:
    """Fit every law per architecture on ``inputs`` (ledger ``.jsonl`` / CSV paths, directories or
    globs) and write ``out_dir/fit.json``, ``out_dir/fit.md`` and the PNG figures; returns the
    fit.json dict ``{"options": {...}, "architectures": {arch: {...}}, "figures": [...]}``.

    Bad input (unreadable file, NaN, unknown column, mixed units...) raises ScalingInputError; a law
    the data cannot support (too few runs/points, N not varying) becomes ``{"error": reason}``.
    """
    pts, meta = load_points(inputs, c_unit=c_unit, h_unit=h_unit)
    pts = preprocess(pts, drop_first, ema)
    archs = fit_all(pts, fix_linf=fix_linf, budget_flops=budget_flops, n_boot=n_boot, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    names, fig_errors = [], []
    if figures:
        from .plots import write_figures

        names, fig_errors = write_figures(pts, archs, out_dir)
    for entry in archs.values():
        entry["L_H"] = _rename_lh(entry.get("L_H"))
    fit = {"options": {"inputs": [str(f) for f in meta["files"]], "units": meta["units"], "drop_first": drop_first,
                       "ema": ema, "n_boot": n_boot, "seed": seed, "budget_flops": budget_flops,
                       "fix_linf": fix_linf, "notes": meta["notes"],
                       "n_points_after_preprocess": int(len(pts["loss"]))},
           "architectures": archs, "figures": names}
    if fig_errors:
        fit["figure_errors"] = fig_errors
    fit = _clean(fit)
    write_atomic(os.path.join(out_dir, "fit.json"), json.dumps(fit, indent=1))
    write_atomic(os.path.join(out_dir, "fit.md"), markdown(fit))
    return fit
