"""``write_report``: inputs -> ``fit.json``, ``fit.md`` and the figures (the study runner and
``tools/fit_scaling_laws.py`` both call it)."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from nnip_scale.atomic_io import atomic_write_text

from .analysis import emit_flags, fit_all, flags_of, holdout_split, parse_holdout, preprocess
from .io import POOL_FIELDS, load_points

LAWS = ("L_ND", "L_C", "L_H")
ENTRIES = (*LAWS, "allocation", "consistency")
LAW_LABEL = {"L_ND": "L(N, D)", "L_C": "L(C)", "L_H": "L(H)"}


#: the old name of :func:`nnip_scale.atomic_io.atomic_write_text` (kept for callers of this module)
write_atomic = atomic_write_text


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


def errors(fit, holdout=True):
    """``["arch: law: reason", ...]`` for every law (or its intervals, or a quantity) that could not
    be computed; with ``holdout``, also what the holdout check could not compute
    (:func:`holdout_errors`)."""
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
    return out + (holdout_errors(fit) if holdout else [])


def holdout_errors(fit):
    """``["arch: holdout ...: reason", ...]``: an architecture the cut does not split, a law not
    computable from the runs below the cut, a prediction or interval not computed (one line per
    reason)."""
    out = []
    for arch, entry in fit["architectures"].items():
        h = entry.get("holdout")
        if not isinstance(h, dict):
            continue
        if "error" in h:
            out.append(f"{arch}: holdout: {h['error']}")
            continue
        for law, e in (h.get("laws") or {}).items():
            if "error" in e:
                out.append(f"{arch}: holdout {law}: {e['error']}")
        seen = {}  # one line per reason: (what, reason) -> (laws, runs)
        for row in h.get("table") or []:
            what, why = ("prediction", row["note"]) if row.get("note") else ("interval", row.get("ci95_error"))
            if why:
                laws, runs = seen.setdefault((what, why), ({}, {}))
                laws[row["law"]] = runs[row["run"]] = None
        out += [f"{arch}: holdout {what} of {', '.join(laws)} ({', '.join(runs)}): {why}"
                for (what, why), (laws, runs) in seen.items()]
    return out


def _loss(v, ci=None):
    if v is None:
        return "–"
    return f"{v:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci and None not in ci else "")


def _g(v):
    """3 significant digits, exponent without '+' and leading zeros: 3e4, 1.77e11, 0.0024."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{v:.3g}")


def _at(at):
    unit = {"C": " FLOP", "H": " h"}
    return ", ".join(f"{k} = {_g(v)}{unit.get(k, '')}" if v is not None else f"{k} = –" for k, v in at.items())


def holdout_markdown(fit):
    """The holdout check as markdown lines (no heading): what was held out and how, the table of
    predicted vs measured final losses, a summary per architecture and law, the laws fitted below
    the cut (with their flags) and what could not be computed. [] without a holdout."""
    archs = {a: e["holdout"] for a, e in fit["architectures"].items() if isinstance(e.get("holdout"), dict)}
    if not archs:
        return []
    o = fit["options"]
    first = next(iter(archs.values()))
    lines = [f"Holdout `{first.get('spec')}`: {first.get('cut')}. Every law is refitted on the runs below the cut "
             f"only (bootstrap over those runs, n_boot={o.get('n_boot')}) and predicts each held-out run's final "
             "validation loss (its last ledger row): L(N, D) at the run's N and D, L(C) at its C, L(H) at its H. "
             "Intervals: [the law's 95 %]: 2.5–97.5 % percentiles of the resamples' predictions (the uncertainty "
             "of the fitted law); \"one run\": that interval widened by the scatter of the fitted points about the "
             "law (1.96 × their rms in log L, in quadrature), the range one run's measured loss should fall in. "
             "\"inside\" refers to the one-run interval (\"law: no\": outside the law's own). L(C) and L(H) are "
             "frontier laws: they predict the best loss reachable with that compute, so a held-out run off the "
             "compute-optimal path lies above them. \"beyond fit\": the run's value of the cut variable over the "
             "largest among the fitted runs.", "",
             "| arch | held-out run | law | at | beyond fit | predicted [the law's 95 %] | one run 95 % | measured "
             "| rel. error | inside |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = 0
    for arch, h in archs.items():
        var = h.get("var", "")
        for r in h.get("table") or []:
            inside = {True: "yes", False: "**no**", None: "no interval" if r.get("predicted") is not None else "–"}
            inside = inside[r.get("inside")] + (" (law: no)" if r.get("inside") and r.get("inside_ci95") is False
                                                else "")
            beyond = f"{r['beyond_fit']:.2g}× {var}" if r.get("beyond_fit") is not None else "–"
            rel = f"{100 * r['rel_error']:+.1f} %" if r.get("rel_error") is not None else "–"
            pi = f"[{r['pi95'][0]:.4g}, {r['pi95'][1]:.4g}]" if r.get("pi95") else "–"
            lines.append(f"| {arch} | {r['run']} | {LAW_LABEL[r['law']]} | {_at(r['at'])} | {beyond} "
                         f"| {_loss(r.get('predicted'), r.get('ci95'))} | {pi} | {_loss(r['measured'])} | {rel} "
                         f"| {inside} |")
            rows += 1
    if not rows:
        lines.append("| – | – | – | – | – | – | – | – | – | no prediction computed (below) |")
    summary = []
    for arch, h in archs.items():
        parts = []
        for law, s in (h.get("summary") or {}).items():
            if not s.get("n_predicted"):
                continue
            med, worst = s.get("median_abs_rel_error"), s.get("max_abs_rel_error")
            n, k = s["n_predicted"], s["n_with_interval"]
            inside = (f"{s['n_inside']}/{k} inside its interval" + (f" ({n - k} without one)" if n > k else "")
                      if k else "no interval")
            error = (f"|rel. error| {100 * med:.1f} %" if n == 1 else
                     f"|rel. error| median {100 * med:.1f} %, max {100 * worst:.1f} %")
            parts.append(f"{LAW_LABEL[law]} {inside}, {error}")
        if parts:
            summary.append(f"- {arch} ({len(h['held_out_runs'])} held out, fitted on {len(h['fitted_runs'])} runs): "
                           + "; ".join(parts))
    if summary:
        lines += ["", "Summary:", ""] + summary
    fitted, flags = [], []
    names = {"alpha": "α", "beta": "β", "L_inf": "L∞", "gamma": "γ_c", "gamma_h": "γ_h"}
    for arch, h in archs.items():
        parts = []
        for law, e in (h.get("laws") or {}).items():
            if "error" in e:
                continue
            flagged = {f["quantity"] for f in e.get("flags") or []}
            cells = []
            for k in ("alpha", "beta", "gamma", "gamma_h", "L_inf"):
                if k in e and e[k] is not None:
                    cells.append(f"{names[k]} = {_val(e, k, '.3g' if k == 'L_inf' else '.3f')}"
                                 + (" ⚠" if k in flagged or "*" in flagged else ""))
            if e.get("residual_rms") is not None:
                cells.append(f"scatter {100 * e['residual_rms']:.1f} %")
            parts.append(f"{LAW_LABEL[law]} " + ", ".join(cells))
            flags += [f"- {arch} {LAW_LABEL[law]} {f['quantity']} [{f['kind']}]: {f['message']}"
                      for f in e.get("flags") or []]
        if parts:
            fitted.append(f"- {arch} ({len(h['fitted_runs'])} runs, {h.get('n_points_fitted')} points): "
                          + "; ".join(parts))
    if fitted:
        lines += ["", "The laws that made the predictions (fitted on the runs below the cut; 95 % intervals):", ""] \
            + fitted
    if flags:
        lines += ["", "Flags of those fits (⚠; docs/scaling.md):", ""] + flags
    errs = holdout_errors(fit)
    if errs:
        lines += ["", "Not computed:", ""] + [f"- {e}" for e in errs]
    return lines


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


def markdown(fit, holdout=True):
    """fit.md: one table of the laws per architecture (95 % bootstrap intervals in brackets); a
    flagged number carries ``⚠n``, footnote n under the tables says why. With ``holdout`` (and a
    holdout in the fit), the holdout check follows as its own section (:func:`holdout_markdown`)."""
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

        def cell(e, key, name, spec=".3f", extra=(), arch=arch):
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
    errs = errors(fit, holdout=False)
    if errs:
        lines += ["", "Not computed:", ""] + [f"- {e}" for e in errs]
    if mark.notes:
        lines += ["", "Flags (⚠n next to a number: do not quote it without its flag; docs/scaling.md):", ""] + \
                 [f"- {n}" for n in mark.notes]
    held = holdout_markdown(fit) if holdout else []
    if held:
        lines += ["", "## Holdout: does the law predict?", ""] + held
    if o.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in o["notes"]]
    if fit.get("figures"):
        lines += ["", "Figures: " + ", ".join(f"`{n}`" for n in fit["figures"])]
    return "\n".join(lines) + "\n"


def write_report(inputs, out_dir, *, drop_first=0.05, ema=None, n_boot=200, seed=0, budget_flops=None,
                 fix_linf=None, c_unit=None, h_unit=None, figures=True, pool=(), holdout=None) -> dict:
    """Fit every law per architecture on ``inputs`` (ledger ``.jsonl`` / CSV paths, directories or
    globs) and write ``out_dir/fit.json``, ``out_dir/fit.md`` and the PNG figures; returns the
    fit.json dict ``{"options": {...}, "architectures": {arch: {...}}, "identity": {...},
    "warnings": [...], "figures": [...]}``.

    Bad input (unreadable file, NaN, unknown column, mixed units, runs of one arch that differ in
    dataset / force mode / loss / validation subset unless ``pool`` names that field...) raises
    ScalingInputError; a law the data cannot support (too few runs/points, N not varying) or whose
    fit fails becomes ``{"error": reason}`` and the others are still fitted. Flags (numbers not to
    trust) are in each entry's ``flags``, listed in ``warnings`` and emitted as ScalingFitWarning.

    ``holdout``: a cut (``"C>1e11"``, ``"N>5e4"``, ``"D>=1e6"``) or ``"top"``
    (:func:`nnip_scale.scaling.analysis.parse_holdout`): each architecture's laws are also refitted
    on its runs below the cut and predict the held-out runs' final losses with 95 % bootstrap
    intervals (``architectures[ARCH]["holdout"]``, a section of fit.md, ``holdout.png``). A bad
    spec, or a cut that splits no architecture's runs (holds out nothing or everything), raises
    ScalingInputError naming the cut and the runs' range.
    """
    spec = None if holdout is None or holdout is False else parse_holdout(holdout)["spec"]  # before reading
    pts, meta = load_points(inputs, c_unit=c_unit, h_unit=h_unit, pool=pool)
    plans = holdout_split(pts, spec) if spec else None  # on the rows as read: the final loss is the raw one
    pts = preprocess(pts, drop_first, ema)
    archs = fit_all(pts, fix_linf=fix_linf, budget_flops=budget_flops, n_boot=n_boot, seed=seed, emit=False,
                    holdout=plans)
    os.makedirs(out_dir, exist_ok=True)
    names, fig_errors = [], []
    if figures:
        from .plots import write_figures

        names, fig_errors = write_figures(pts, archs, out_dir)
    fit = {"options": {"inputs": [str(f) for f in meta["files"]], "units": meta["units"], "drop_first": drop_first,
                       "ema": ema, "n_boot": n_boot, "seed": seed, "budget_flops": budget_flops,
                       "fix_linf": fix_linf, "pool": meta["pool"], "holdout": spec, "notes": meta["notes"],
                       "n_points_after_preprocess": int(len(pts["loss"]))},
           "architectures": archs, "identity": meta["identity"], "figures": names}
    if fig_errors:
        fit["figure_errors"] = fig_errors
    fit = _clean(fit)
    fit["warnings"] = warnings_of(fit)
    atomic_write_text(os.path.join(out_dir, "fit.json"), json.dumps(fit, indent=1))
    atomic_write_text(os.path.join(out_dir, "fit.md"), markdown(fit))
    emit_flags(archs)
    return fit
