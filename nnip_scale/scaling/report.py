"""``write_report``: inputs -> ``fit.json``, ``fit.md`` and the figures (the study runner and
``tools/fit_scaling_laws.py`` both call it)."""
from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np

from .analysis import emit_flags, fit_all, flags_of, preprocess
from .io import POOL_FIELDS, load_points

LAWS = ("L_ND", "L_C", "L_H")
ENTRIES = (*LAWS, "allocation", "consistency")


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
    """``["arch: law: reason", ...]`` for every law (or its intervals, or a quantity) that could not
    be computed."""
    out = []
    for arch, entry in fit["architectures"].items():
        for key in ENTRIES:
            e = entry.get(key) or {}
            if "error" in e:
                out.append(f"{arch}: {key}: {e['error']}")
                continue
            by_reason = {}
            for name, why in (e.get("undefined") or {}).items():
                by_reason.setdefault(why, []).append(name)
            out += [f"{arch}: {key} {', '.join(names)}: {why}" for why, names in by_reason.items()]
            if "ci95_error" in e:
                out.append(f"{arch}: {key} ci95: {e['ci95_error']}")
            for name, why in (e.get("ci95_missing") or {}).items():
                out.append(f"{arch}: {key} ci95 {name}: {why}")
    return out


def warnings_of(fit):
    """``["arch: law: warning", ...]``: fitted values to distrust (the flags of bound_warnings)."""
    return [f"{arch}: {key}: {f['message']}" for arch, entry in fit["architectures"].items()
            for key, f in flags_of(entry)]


def _val(e, key, spec=".3f"):
    if not e or "error" in e or e.get(key) is None:
        return "–"
    ci = (e.get("ci95") or {}).get(key)
    s = format(e[key], spec)
    return f"{s} [{format(ci[0], spec)}, {format(ci[1], spec)}]" if ci and None not in ci else s


class _Marks:
    """Footnote markers for flagged numbers: ``⚠n`` next to a table cell, listed under the table."""

    def __init__(self, fit):
        self.notes, self.index = [], {}
        for arch, entry in fit["architectures"].items():
            for key, f in flags_of(entry):
                self.index.setdefault((arch, key, f["quantity"]), []).append(len(self.notes) + 1)
                what = f"{key} {f['quantity']}" if f["quantity"] != "*" else key
                self.notes.append(f"⚠{len(self.notes) + 1} {arch}: {what} [{f['kind']}]: {f['message']}")

    def __call__(self, arch, *cells):
        """Marker for the cells [(entry, quantity)] (a flag on quantity "*" marks every cell of its entry)."""
        nums = sorted({n for key, q in cells for qq in (q, "*") for n in self.index.get((arch, key, qq), [])})
        return " ⚠" + ",".join(map(str, nums)) if nums else ""


def markdown(fit):
    """fit.md: one table of the laws per architecture (95 % bootstrap intervals in brackets); a
    flagged number carries ``⚠n``, footnote n under the tables says why."""
    o = fit["options"]
    mark = _Marks(fit)
    pool = o.get("pool") or []
    lines = ["# Scaling-law fit", "",
             f"Inputs: {len(o['inputs'])} file(s); units C in {o['units']['C']}, H in {o['units']['H']}; "
             f"drop_first={o['drop_first']}, ema={o['ema']}, n_boot={o['n_boot']} (runs resampled), "
             f"seed={o['seed']}, fix_linf={o['fix_linf']}" + (f", pooled on purpose: {', '.join(pool)}" if pool else "")
             + ".", "",
             "| arch | runs | points | α | β | L∞ (N,D) | γ_c fitted | γ_c = αβ/(α+β) | γ_h | a = β/(α+β) | b = α/(α+β) "
             "| γ_c (OLS, L∞=0) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arch, f in fit["architectures"].items():
        nd, c, h, al = (f.get(k) or {} for k in ("L_ND", "L_C", "L_H", "allocation"))
        ols = c.get("loglog") or {}
        ols_s = (f"{ols['gamma']:.3f} [{ols['gamma_ci95_ols'][0]:.3f}, {ols['gamma_ci95_ols'][1]:.3f}]"
                 if "gamma" in ols else "–")

        def cell(e, key, name, spec=".3f", extra=()):
            return _val(e, name, spec) + mark(arch, (key, name), *extra)

        gc = (("consistency", "difference"),)
        lines.append(f"| {arch} | {f['n_runs']} | {f['n_points']} | {cell(nd, 'L_ND', 'alpha')} "
                     f"| {cell(nd, 'L_ND', 'beta')} | {cell(nd, 'L_ND', 'L_inf', '.3g')} "
                     f"| {cell(c, 'L_C', 'gamma', extra=gc)} | {cell(al, 'allocation', 'gamma_c_derived', extra=gc)} "
                     f"| {cell(h, 'L_H', 'gamma_h')} | {cell(al, 'allocation', 'a')} | {cell(al, 'allocation', 'b')} "
                     f"| {ols_s} |")
    if o.get("budget_flops"):
        lines += ["", f"Budget C = {o['budget_flops']:.3g} FLOP (allocation under C = 3κND, κ measured from the inputs):",
                  "", "| arch | κ | N* | D* | L(N*, D*) | L(C) at budget |", "|---|---|---|---|---|---|"]
        for arch, f in fit["architectures"].items():
            al, c = f.get("allocation") or {}, f.get("L_C") or {}
            lines.append(f"| {arch} | {_val(al, 'kappa', '.3g')} "
                         f"| {_val(al, 'N_opt', '.3g')}{mark(arch, ('allocation', 'N_opt'))} "
                         f"| {_val(al, 'D_opt', '.3g')}{mark(arch, ('allocation', 'D_opt'))} "
                         f"| {_val(al, 'loss_opt', '.4g')}{mark(arch, ('allocation', 'loss_opt'))} "
                         f"| {_val(c, 'loss_at_budget', '.4g')}{mark(arch, ('L_C', 'loss_at_budget'))} |")
    ident = {a: e for a, e in (fit.get("identity") or {}).items() if any(v not in ("", []) for v in e.values())}
    if ident:
        lines += ["", "Run identity (from the ledgers; a list: pooled on purpose):", "",
                  "| arch | " + " | ".join(POOL_FIELDS) + " |", "|---|" + "---|" * len(POOL_FIELDS)]
        for arch, e in ident.items():
            lines.append(f"| {arch} | " + " | ".join(
                (", ".join(v or "–" for v in e[k]) if isinstance(e.get(k), list) else (e.get(k) or "–"))
                for k in POOL_FIELDS) + " |")
    boot = [f"{arch} {key} {e['n_boot_used']}/{e['n_boot']}" for arch, f in fit["architectures"].items()
            for key in ENTRIES for e in [f.get(key) or {}]
            if "n_boot_used" in e and e["n_boot_used"] < e["n_boot"] and "ci95_error" not in e]
    if boot:
        lines += ["", "Usable bootstrap resamples (n_boot_used / n_boot; the others could not be fitted or computed "
                      "and are left out of the intervals): " + "; ".join(boot) + "."]
    errs = errors(fit)
    if errs:
        lines += ["", "Not computed:", ""] + [f"- {e}" for e in errs]
    if mark.notes:
        lines += ["", "Flags (⚠n next to a number: do not quote it without its flag; docs/scaling.md):", ""] + \
                 [f"- {n}" for n in mark.notes]
    if o.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in o["notes"]]
    if fit.get("figures"):
        lines += ["", "Figures: " + ", ".join(f"`{n}`" for n in fit["figures"])]
    return "\n".join(lines) + "\n"


def write_report(inputs, out_dir, *, drop_first=0.05, ema=None, n_boot=200, seed=0, budget_flops=None,
                 fix_linf=None, c_unit=None, h_unit=None, figures=True, pool=()) -> dict:
    """Fit every law per architecture on ``inputs`` (ledger ``.jsonl`` / CSV paths, directories or
    globs) and write ``out_dir/fit.json``, ``out_dir/fit.md`` and the PNG figures; returns the
    fit.json dict ``{"options": {...}, "architectures": {arch: {...}}, "identity": {...},
    "warnings": [...], "figures": [...]}``.

    Bad input (unreadable file, NaN, unknown column, mixed units, runs of one arch that differ in
    dataset / force mode / loss / validation subset unless ``pool`` names that field...) raises
    ScalingInputError; a law the data cannot support (too few runs/points, N not varying) or whose
    fit fails becomes ``{"error": reason}`` and the others are still fitted. Flags (numbers not to
    trust) are in each entry's ``flags``, listed in ``warnings`` and emitted as ScalingFitWarning.
    """
    pts, meta = load_points(inputs, c_unit=c_unit, h_unit=h_unit, pool=pool)
    pts = preprocess(pts, drop_first, ema)
    archs = fit_all(pts, fix_linf=fix_linf, budget_flops=budget_flops, n_boot=n_boot, seed=seed, emit=False)
    os.makedirs(out_dir, exist_ok=True)
    names, fig_errors = [], []
    if figures:
        from .plots import write_figures

        names, fig_errors = write_figures(pts, archs, out_dir)
    fit = {"options": {"inputs": [str(f) for f in meta["files"]], "units": meta["units"], "drop_first": drop_first,
                       "ema": ema, "n_boot": n_boot, "seed": seed, "budget_flops": budget_flops,
                       "fix_linf": fix_linf, "pool": meta["pool"], "notes": meta["notes"],
                       "n_points_after_preprocess": int(len(pts["loss"]))},
           "architectures": archs, "identity": meta["identity"], "figures": names}
    if fig_errors:
        fit["figure_errors"] = fig_errors
    fit = _clean(fit)
    fit["warnings"] = warnings_of(fit)
    write_atomic(os.path.join(out_dir, "fit.json"), json.dumps(fit, indent=1))
    write_atomic(os.path.join(out_dir, "fit.md"), markdown(fit))
    emit_flags(archs)
    return fit
