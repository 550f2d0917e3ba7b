"""Preprocessing (EMA, drop-first), frontiers, and per-architecture fits with a bootstrap over runs.

Every law is fitted independently: one the data cannot support, or whose fit fails for any other
reason, becomes ``{"error": reason}`` and the others are still fitted (:func:`fit_arch`); a derived
quantity that is not defined for the fitted parameters is listed in its entry's ``undefined``.
Bootstrap: draw the architecture's runs with replacement (points of one run are correlated, so runs
are the independent units; rows sharing a run id are one run), rebuild the points and frontiers,
refit every law warm-started from its full-data optimum, and take the 2.5 / 97.5 percentiles of
every parameter and derived quantity over the resamples in which it could be computed. A resample
in which a law or quantity cannot be computed is unusable for it, never fatal: ``n_boot_used``
(per entry) and ``n_boot_used_by_quantity`` count the usable ones next to ``n_boot``; fewer than
half usable gives ``ci95_error`` (entry) or ``ci95_missing[quantity]`` instead of an interval.

:func:`bound_warnings` then flags the numbers not to trust (``flags`` per entry, machine-readable;
``warnings``: their messages), and :func:`fit_all` emits each as a :class:`ScalingFitWarning`.

Holdout ("does the law predict?"): :func:`holdout_split` splits each architecture's runs (whole
runs) by a cut on their final C, N or D, or ``top``; :func:`fit_holdout` refits every law on the
runs below the cut and predicts each held-out run's final loss with a 95 % interval from the same
bootstrap over runs (``fit_arch(..., targets=)``: each resample's parameters give one prediction).
"""
from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np

from nnip_scale.envvars import environment

from .io import ScalingInputError, require, subset
from .laws import EXP_BOUNDS, allocation, fit_lnd, fit_loglog, fit_power, predict_power

#: minimum data per law: points, distinct values of each input (free L_inf / fixed L_inf)
MIN_POINTS = {"L_ND": 6, "L_C": 4, "L_H": 4}
MIN_RUNS_BOOT = 4
AXES = {"L_C": ("C", "training FLOPs"), "L_H": ("H", "device-hours")}


def preprocess(pts, drop_first=0.0, ema=None):
    """Per run, in step order: EMA-smooth the loss, then drop the checkpoints of the first
    ``drop_first`` fraction of the run's steps (step < drop_first * last step).

    ema: smoothing factor in [0, 1): s_0 = L_0, s_t = ema * s_{t-1} + (1 - ema) * L_t (None/0: off).
    """
    if not 0.0 <= drop_first < 1.0:
        raise ScalingInputError(f"drop_first={drop_first}: expected a fraction in [0, 1)")
    if ema is not None and not 0.0 <= ema < 1.0:
        raise ScalingInputError(f"ema={ema}: expected a smoothing factor in [0, 1) (0 or None: off)")
    loss = pts["loss"].copy()
    keep = np.ones(len(loss), bool)
    for run in np.unique(pts["run"]):
        idx = np.flatnonzero(pts["run"] == run)
        idx = idx[np.argsort(pts["step"][idx], kind="stable")]
        if ema:
            s = loss[idx[0]]
            for j in idx[1:]:
                if np.isfinite(loss[j]):
                    s = ema * s + (1.0 - ema) * loss[j] if np.isfinite(s) else loss[j]
                    loss[j] = s
        steps = pts["step"][idx]
        if drop_first > 0 and np.isfinite(steps).all():
            keep[idx[steps < drop_first * steps.max()]] = False
    out = subset(pts, keep)
    out["loss"] = loss[keep]
    return out


def frontier(x, loss):
    """Indices of the lower envelope: points whose loss is below that of every point with smaller
    or equal x (sorted by x). Ties in x keep the lowest loss."""
    order = np.lexsort((loss, x))
    ls = loss[order]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(ls)[:-1]])
    return order[ls < prev_min]


def _distinct(v):
    return len(np.unique(v))


def _check_lnd(p, fix_linf):
    require(p, ["N", "D", "loss"], MIN_POINTS["L_ND"], "L(N, D)")
    need = 3 if fix_linf is None else 2
    for k, name in (("N", "parameters N (widths)"), ("D", "atoms seen D (checkpoints)")):
        if _distinct(p[k]) < need:
            raise ScalingInputError(f"L(N, D) needs >= {need} distinct values of {name}, got "
                                    f"{_distinct(p[k])} ({k} must vary{' with a free L_inf' if need == 3 else ''})")


def _fit_lnd(p, fix_linf, warm=None):
    _check_lnd(p, fix_linf)
    return fit_lnd(p["N"], p["D"], p["loss"], fix_linf, warm)


def _fit_frontier(p, law, fix_linf, warm=None):
    col, name = AXES[law]
    require(p, [col, "loss"], 1, f"{law} (loss vs {name})")
    f = frontier(p[col], p["loss"])
    if len(f) < MIN_POINTS[law]:
        raise ScalingInputError(f"{law} needs >= {MIN_POINTS[law]} frontier points (loss vs {name}), "
                                f"got {len(f)} from {len(p['loss'])} checkpoints")
    res = fit_power(p[col][f], p["loss"][f], fix_linf, warm)
    res["frontier_idx"] = f
    return res


_NOT_BOOTSTRAPPED = {"objective", "kappa", "budget_flops", "log_A", "log_B"}


def _scalars(d):
    """The bootstrapped quantities of an entry: its finite float values (a NaN/inf one counts as
    not computed in that resample)."""
    return {k: v for k, v in d.items() if isinstance(v, float) and k not in _NOT_BOOTSTRAPPED and math.isfinite(v)}


def _why(err):
    """One-line reason of an unexpected failure inside a fit (not bad input)."""
    text = " ".join(str(err).split()) or "no message"
    return f"fit failed: {type(err).__name__}: {text}"


def _finite(res, law):
    """Refuse a fit whose parameters are not finite (an optimiser that diverged)."""
    bad = [k for k in ("objective", "L_inf", "alpha", "beta", "gamma") if k in res and not math.isfinite(res[k])]
    if bad or not np.isfinite(res["theta"]).all():
        raise FloatingPointError(f"{law}: non-finite fitted parameters ({', '.join(bad) or 'theta'})")
    return res


class _Arch:
    """The fits of one architecture on one set of points (full data or a bootstrap resample).

    Full data (``warm=None``): a law that cannot be fitted gets ``{"error": reason}``. Resample
    (``warm`` = the full-data result): a law or derived entry that cannot be computed is simply
    absent from the result (that resample is unusable for it); nothing raises."""

    def __init__(self, fix_linf, budget_flops):
        self.fix_linf, self.budget = fix_linf, budget_flops

    def run(self, p, kappa, warm=None):
        res = {}
        for law, fn in (("L_ND", lambda w: _fit_lnd(p, self.fix_linf, w)),
                        ("L_C", lambda w: _fit_frontier(p, "L_C", self.fix_linf, w)),
                        ("L_H", lambda w: _fit_frontier(p, "L_H", self.fix_linf, w))):
            if warm is not None and "error" in warm.get(law, {"error": 1}):
                continue
            try:
                with np.errstate(all="ignore"):
                    res[law] = _finite(fn(None if warm is None else warm[law]["theta"]), law)
            except ScalingInputError as err:
                if warm is None:
                    res[law] = {"error": str(err)}
            except Exception as err:  # noqa: BLE001 - a failed fit degrades to an error entry
                if warm is None:
                    res[law] = {"error": _why(err)}
        ok = {law: law in res and "error" not in res[law] for law in ("L_ND", "L_C", "L_H")}
        if ok["L_ND"]:
            try:
                res["allocation"] = allocation(res["L_ND"], kappa, self.budget)
            except Exception as err:  # noqa: BLE001
                if warm is None:
                    res["allocation"] = {"error": _why(err)}
        elif warm is None:
            res["allocation"] = {"error": f"needs L(N, D): {res['L_ND']['error']}"}
        al = res.get("allocation") or {}
        if ok["L_C"] and "gamma_c_derived" in al:
            res["consistency"] = {"gamma_c_fitted": res["L_C"]["gamma"], "gamma_c_derived": al["gamma_c_derived"],
                                  "difference": res["L_C"]["gamma"] - al["gamma_c_derived"]}
        elif warm is None and ok["L_C"] and "error" not in al:
            res["consistency"] = {"error": "gamma_c_derived not defined: "
                                           + (al.get("undefined") or {}).get("gamma_c_derived", "")}
        if self.budget and ok["L_C"]:
            with np.errstate(all="ignore"):
                v = float(predict_power(res["L_C"], self.budget))
            if math.isfinite(v):
                res["L_C"]["loss_at_budget"] = v
            else:
                res["L_C"].setdefault("undefined", {})["loss_at_budget"] = f"L(C) at the budget is {v}"
        return res


def measured_kappa(p):
    """kappa = median over checkpoints of C / (3 N D) (the paper's C = 3 kappa N D), None without C."""
    ok = np.isfinite(p["C"]) & np.isfinite(p["N"]) & np.isfinite(p["D"]) & (p["N"] > 0) & (p["D"] > 0)
    return float(np.median(p["C"][ok] / (3.0 * p["N"][ok] * p["D"][ok]))) if ok.any() else None


class ScalingFitWarning(UserWarning):
    """A fitted number not to trust (see :func:`bound_warnings`); emitted once per flag by
    :func:`fit_all`, and recorded in the fit output as ``flags``."""


#: exponents searched in EXP_BOUNDS: entry -> names
SEARCHED = {"L_ND": ("alpha", "beta"), "L_C": ("gamma",), "L_H": ("gamma_h", "gamma")}
#: the numbers the fit.md tables quote, per entry (checked for degenerate / one-sided intervals)
QUOTED = {"L_ND": ("alpha", "beta", "L_inf"), "L_C": ("gamma", "loss_at_budget"), "L_H": ("gamma_h", "gamma"),
          "allocation": ("gamma_c_derived", "a", "b", "N_opt", "D_opt", "loss_opt")}
#: "touches" tolerances: an exponent within BOUND_TOL of a search bound (the tables print 3
#: decimals); a point within EDGE_RTOL x (interval width) of an interval end
BOUND_TOL = 1e-3
EDGE_RTOL = 1e-3
#: quoted quantities compared with their interval on a log scale
LOG_SCALE = {"L_inf", "N_opt", "D_opt", "loss_opt", "loss_at_budget"}
#: fitted vs derived gamma_c with no bootstrap intervals to judge by: flagged beyond this ratio
GAMMA_C_RATIO = 2.0
FLAG_KINDS = ("point_on_bound", "interval_on_bound", "point_at_interval_edge", "degenerate_interval",
              "derived_from_bound", "gamma_c_inconsistent")
_VARIES = {"alpha": "N", "beta": "D", "gamma": "compute", "gamma_h": "device-hours"}


def _flag(entry, kind, quantity, message):
    entry.setdefault("flags", []).append({"kind": kind, "quantity": quantity, "message": message})
    entry.setdefault("warnings", []).append(message)


def _ci_of(entry, name):
    ci = (entry.get("ci95") or {}).get(name)
    if ci is None:
        return None
    lo, hi = (float("nan") if v is None else float(v) for v in ci)
    return lo, hi


def bound_warnings(out: dict) -> dict:
    """Flag the numbers of one architecture's fit (``fit_arch`` output) that the runs do not support.

    Adds to each entry (L_ND, L_C, L_H, allocation, consistency) ``flags`` = [{"kind", "quantity",
    "message"}] (quantity ``"*"``: every number of the entry) and ``warnings`` = their messages.
    Kinds (docs/scaling.md):

    - ``point_on_bound``: a fitted exponent within BOUND_TOL of a bound of its search range
      EXP_BOUNDS: not identified by these runs (implies the two interval checks: not repeated);
    - ``interval_on_bound``: an end of its 95 % interval on a search bound (resamples ran into it);
    - ``point_at_interval_edge``: a point estimate equal (EDGE_RTOL of the width; log scale for
      LOG_SCALE) to an end of its own interval: no resample moves it to that side (e.g. a frontier
      that every subset of runs can only shorten), so the interval is one-sided;
    - ``degenerate_interval``: zero width or NaN;
    - ``derived_from_bound`` (quantity ``"*"``): the allocation (a, b, γ_c derived, N*, D*,
      L(N*, D*)) inherits an α or β on its bound (replaces the allocation's interval checks);
    - ``gamma_c_inconsistent``: fitted γ_c (L(C) frontier) and derived αβ/(α+β) disagree beyond
      their intervals: the 95 % interval of their difference over paired resamples excludes 0, or,
      with no such interval (too few resamples had both, or no bootstrap), they differ by more
      than a factor GAMMA_C_RATIO.
    Returns ``out``.
    """
    lo_b, hi_b = EXP_BOUNDS
    on_bound = {}
    for law, names in SEARCHED.items():
        e = out.get(law)
        if not isinstance(e, dict) or "error" in e:
            continue
        for name in names:
            v = e.get(name)
            if v is None:
                continue
            label = f"{name} = {v:.3g}"
            if v <= lo_b + BOUND_TOL or v >= hi_b - BOUND_TOL:
                on_bound.setdefault(law, {})[name] = v  # implies the interval checks below: not repeated
                _flag(e, "point_on_bound", name,
                      f"{label} is on the bound [{lo_b:g}, {hi_b:g}] of the search: not identified by these runs "
                      f"(widen the range of {_VARIES[name]} or train longer)")
                continue
            ci = _ci_of(e, name)
            if ci and all(math.isfinite(c) for c in ci):
                ends = [c for c in ci if c <= lo_b + BOUND_TOL or c >= hi_b - BOUND_TOL]
                if ends:
                    _flag(e, "interval_on_bound", name,
                          f"{label} has its 95 % interval [{ci[0]:.3g}, {ci[1]:.3g}] on the bound "
                          f"{ends[0]:.3g} of the search [{lo_b:g}, {hi_b:g}]: some resamples do not identify it, "
                          "so the interval is cut by the search range, not by the data")
    inherited = [n for n in ("alpha", "beta") if n in on_bound.get("L_ND", {})]
    al = out.get("allocation")
    if inherited and isinstance(al, dict) and "error" not in al:
        _flag(al, "derived_from_bound", "*",
              "derived from " + " and ".join(f"{n} = {on_bound['L_ND'][n]:.3g}" for n in inherited)
              + " on its search bound: a, b, γ_c = αβ/(α+β), N*, D* and L(N*, D*) are not identified either")
    for law, names in QUOTED.items():
        e = out.get(law)
        if not isinstance(e, dict) or "error" in e or "ci95" not in e or (law == "allocation" and inherited):
            continue
        for name in names:
            v = e.get(name)
            if v is None or name not in e["ci95"] or name in on_bound.get(law, {}):
                continue
            lo, hi = _ci_of(e, name)
            label = f"{name} = {v:.3g}"
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 1e-12 * max(1.0, abs(v)):
                _flag(e, "degenerate_interval", name,
                      f"{label} has a degenerate 95 % interval [{lo:.3g}, {hi:.3g}] (zero width or NaN): every "
                      "usable resample gave the same value, which is no measure of its uncertainty")
                continue
            # N*, D*, losses span decades: compared on a log scale
            x, a, b = (np.log([v, lo, hi]) if name in LOG_SCALE and min(v, lo) > 0 else (v, lo, hi))
            if min(abs(x - a), abs(x - b)) <= EDGE_RTOL * (b - a):
                side = "upper" if abs(x - b) <= abs(x - a) else "lower"
                why = (" (a resample of runs can only shorten a frontier, never extend it)" if law in ("L_C", "L_H")
                       else "")
                _flag(e, "point_at_interval_edge", name,
                      f"{label} equals the {side} end of its 95 % interval [{lo:.3g}, {hi:.3g}]: no resample moves "
                      f"it {'up' if side == 'upper' else 'down'}{why}, so the interval is one-sided, not a 95 % "
                      "interval around the estimate")
    _consistency_flag(out.get("consistency"))
    return out


def _consistency_flag(c):
    if not isinstance(c, dict) or "error" in c or "gamma_c_fitted" not in c:
        return
    f, d = c["gamma_c_fitted"], c["gamma_c_derived"]
    head = f"fitted γ_c = {f:.3g} (L(C) frontier) and derived αβ/(α+β) = {d:.3g}"
    diff = _ci_of(c, "difference")
    if diff and all(map(math.isfinite, diff)):
        if not diff[0] <= 0.0 <= diff[1]:
            _flag(c, "gamma_c_inconsistent", "difference",
                  f"{head} disagree: the 95 % interval of their difference [{diff[0]:.3g}, {diff[1]:.3g}] (paired "
                  "resamples) excludes 0, so L(C) and L(N, D) do not describe these runs consistently")
    elif f <= 0 or d <= 0 or max(f, d) / min(f, d) > GAMMA_C_RATIO:
        why = (f"only {c['n_boot_used']} of {c['n_boot']} resamples had both" if "n_boot_used" in c
               else "no bootstrap")
        _flag(c, "gamma_c_inconsistent", "difference",
              f"{head} differ by more than a factor {GAMMA_C_RATIO:g}, and there is no interval of their difference "
              f"to judge by ({why})")


def flags_of(out: dict):
    """[(entry, flag)] of one architecture's fit, in entry order."""
    return [(k, f) for k in ("L_ND", "L_C", "L_H", "allocation", "consistency")
            for f in ((out.get(k) or {}).get("flags") or [])]


def rename_lh(entry):
    """L_H is reported as gamma_h, F_h (the paper's L(H) = L_inf + F_h H^-gamma_h)."""
    if isinstance(entry, dict) and "gamma" in entry:
        ren = {"gamma": "gamma_h", "F": "F_h"}
        entry = {ren.get(k, k): v for k, v in entry.items()}
        for key in ("ci95", "n_boot_used_by_quantity", "ci95_missing", "undefined"):
            if isinstance(entry.get(key), dict):
                entry[key] = {ren.get(k, k): v for k, v in entry[key].items()}
    return entry


def _intervals(entry, draws, n_boot, n_runs):
    """ci95 of an entry from its per-resample scalar dicts (None: unusable resample)."""
    ok = [d for d in draws if d is not None]
    need = max(2, n_boot // 2)
    entry["n_boot"] = int(n_boot)
    entry["n_boot_used"] = len(ok)
    names = list(_scalars(entry))
    entry["n_boot_used_by_quantity"] = {name: sum(name in d for d in ok) for name in names}
    if len(ok) < need:
        entry["ci95_error"] = (f"only {len(ok)} of {n_boot} resamples of {n_runs} runs could be fitted (too few "
                               "distinct N/D or frontier points, or a failed fit); intervals not computed")
        return
    entry["ci95"], missing = {}, {}
    for name in names:
        vals = [d[name] for d in ok if name in d]
        if len(vals) >= need:
            entry["ci95"][name] = [float(v) for v in np.percentile(vals, [2.5, 97.5])]
        else:
            missing[name] = f"only {len(vals)} of {n_boot} resamples gave a finite {name}; interval not computed"
    if missing:
        entry["ci95_missing"] = missing


def fit_arch(pts, fix_linf=None, budget_flops=None, n_boot=200, seed=0, kappa=None, targets=None):
    """All laws of one architecture's points, with bootstrap-over-runs 95 % intervals and flags.

    Never raises on what the data cannot support: a law that cannot be fitted is ``{"error": ...}``,
    a resample in which a law or derived quantity cannot be computed is left out of its interval
    (``n_boot_used``, ``n_boot_used_by_quantity``).

    ``targets`` (optional): ``{"N", "D", "C", "H"}`` arrays of points to predict the loss at (the
    holdout check); each fitted law's prediction there, from the full fit and from every resample,
    is returned as ``out["predictions"]`` (:func:`_prediction_intervals`)."""
    kappa = measured_kappa(pts) if kappa is None else float(kappa)
    fitter = _Arch(fix_linf, budget_flops)
    out = fitter.run(pts, kappa)
    runs = np.unique(pts["run"])
    preds = None
    if targets is not None:
        preds = {law: {"value": predict_at(law, out[law], targets), "draws": []}
                 for law in ("L_ND", "L_C", "L_H") if "error" not in out[law]}
    for law in ("L_C", "L_H"):
        e = out[law]
        if "error" not in e:
            col = AXES[law][0]
            f = e.pop("frontier_idx")
            e["frontier"] = {col: pts[col][f].tolist(), "loss": pts["loss"][f].tolist(),
                             "run": pts["run"][f].tolist(), "step": pts["step"][f].tolist()}
            try:
                e["loglog"] = fit_loglog(pts[col][f], pts["loss"][f])
            except Exception as err:  # statsmodels on degenerate data; report, do not fail
                e["loglog"] = {"error": f"OLS fit failed: {err}"}
    keys = [k for k in ("L_ND", "L_C", "L_H", "allocation", "consistency") if k in out and "error" not in out[k]]
    if n_boot and keys:
        if len(runs) < MIN_RUNS_BOOT:
            for k in keys:
                out[k].update(n_boot=int(n_boot), n_boot_used=0)
                out[k]["ci95_error"] = (f"too few runs for a bootstrap over runs: {len(runs)} < {MIN_RUNS_BOOT} "
                                        "(95 % intervals not computed)")
        else:
            # one run = one run id (a resumed run keeps its id): all its rows are drawn together
            rows = [np.flatnonzero(pts["run"] == r) for r in runs]
            rng = np.random.default_rng(seed)
            draws = {k: [] for k in keys}
            for _ in range(n_boot):
                pick = rng.integers(0, len(runs), len(runs))
                sample = subset(pts, np.concatenate([rows[i] for i in pick]))
                try:
                    res = fitter.run(sample, kappa, warm=out)
                except Exception:  # noqa: BLE001 - an unusable resample, never a failed fit
                    res = {}
                for k in keys:
                    draws[k].append(_scalars(res[k]) if k in res and "error" not in res[k] else None)
                for law, p in (preds or {}).items():
                    p["draws"].append(predict_at(law, res[law], targets) if law in res and "error" not in res[law]
                                      else None)
            for k in keys:
                _intervals(out[k], draws[k], n_boot, len(runs))
    if preds is not None:
        why = (None if n_boot and len(runs) >= MIN_RUNS_BOOT else
               "no bootstrap (n_boot = 0)" if not n_boot else
               f"too few runs for a bootstrap over runs: {len(runs)} < {MIN_RUNS_BOOT}")
        out["predictions"] = {law: _prediction_intervals(p["value"], p["draws"], int(n_boot or 0), why)
                              for law, p in preds.items()}
    for k in ("L_ND", "L_C", "L_H"):
        if "theta" in out[k]:
            out[k]["theta"] = [float(v) for v in out[k]["theta"]]
    out["L_H"] = rename_lh(out["L_H"])
    bound_warnings(out)
    out["kappa_measured"] = kappa
    out["n_points"], out["n_runs"] = int(len(pts["loss"])), int(len(runs))
    return out


def _fit_one(args):
    pts, kw, plan = args
    try:
        out = fit_arch(pts, **kw)
    except Exception as err:  # noqa: BLE001 - one architecture's failure must not lose the others
        why = _why(err)
        out = {k: {"error": why} for k in ("L_ND", "L_C", "L_H", "allocation")}
        out.update(kappa_measured=None, n_points=int(len(pts["loss"])), n_runs=int(len(np.unique(pts["run"]))))
    if plan is not None:
        try:
            out["holdout"] = fit_holdout(pts, plan, fix_linf=kw.get("fix_linf"), n_boot=kw.get("n_boot", 200),
                                         seed=kw.get("seed", 0))
        except Exception as err:  # noqa: BLE001 - the check must not lose the fit itself
            out["holdout"] = {**_plan_head(plan), "error": _why(err)}
    return out


def emit_flags(archs):
    """warnings.warn one ScalingFitWarning per flag of {arch: fit_arch output}."""
    for arch, out in archs.items():
        for law, f in flags_of(out):
            warnings.warn(f"{arch}: {law}: {f['message']}", ScalingFitWarning, stacklevel=3)


def fit_all(pts, workers=None, emit=True, holdout=None, **kw):
    """{arch: fit_arch(points of that arch)} in sorted arch order. Architectures are independent,
    so with several of them and a bootstrap they are fitted in parallel processes (``workers``,
    default: the CPU count); results are identical to the serial ones (each fit is seeded).
    The flags of every fit are emitted as ScalingFitWarning here, in the calling process
    (``emit=False``: not). ``holdout``: ``{arch: plan}`` from :func:`holdout_split`; each arch with
    a plan also gets ``out["holdout"]`` (:func:`fit_holdout`), in the same worker."""
    archs = [str(a) for a in sorted(np.unique(pts["arch"]))]
    jobs = [(subset(pts, pts["arch"] == a), kw, (holdout or {}).get(a)) for a in archs]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers > 1 and kw.get("n_boot"):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # one BLAS thread per worker: the fits are many small problems, and threaded BLAS in every
        # worker only oversubscribes the cores (the children read these at their numpy import)
        one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        with environment(one_thread), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            result = dict(zip(archs, pool.map(_fit_one, jobs)))
    else:
        result = dict(zip(archs, map(_fit_one, jobs)))
    if emit:
        emit_flags(result)
    return result


# ---------------------------------------------------------------- holdout: does the law predict?

#: the holdout cut variables: a run's value is that of its last row (what the run cost in total)
HOLDOUT_VARS = {"C": ("training FLOPs", " FLOP"), "N": ("parameters", ""), "D": ("atoms seen", "")}
#: ``top``: per architecture, the runs whose final C is within this fraction of its largest (one
#: compute level: the seeds of one grid cell measure slightly different FLOPs)
TOP_RTOL = 0.1
HOLDOUT_FORMS = (f"'top' (per architecture, the runs at its highest compute level: final C within {TOP_RTOL:.0%} "
                 "of its largest) or a cut VAR>VALUE or VAR>=VALUE, VAR one of C (training FLOPs), N (parameters), "
                 "D (atoms seen), VALUE a number: e.g. C>1e11, N>5e4, D>=1e6")
#: what each law predicts a held-out run's final loss from
LAW_INPUTS = {"L_ND": ("N", "D"), "L_C": ("C",), "L_H": ("H",)}
#: the fitted parameters quoted in a holdout section, per law
HOLDOUT_PARAMS = {"L_ND": ("alpha", "beta", "L_inf", "A", "B"), "L_C": ("gamma", "L_inf", "F"),
                  "L_H": ("gamma_h", "L_inf", "F_h")}


def parse_holdout(spec):
    """A holdout spec -> ``{"spec", "var", "op", "value"}``: ``"top"`` (op ``"top"``, var C, value
    None) or ``VAR>VALUE`` / ``VAR>=VALUE`` (VAR in HOLDOUT_VARS, any case). Anything else raises
    ScalingInputError naming the expected forms."""
    text = spec.strip() if isinstance(spec, str) else spec

    def bad(why):
        return ScalingInputError(f"holdout {text!r}: {why}; expected {HOLDOUT_FORMS}")

    if not isinstance(text, str) or not text:
        raise bad("not a cut" if not isinstance(text, str) else "empty")
    if text.lower() == "top":
        return {"spec": "top", "var": "C", "op": "top", "value": None}
    m = re.fullmatch(r"([A-Za-z_]+)\s*(>=|>)\s*(\S+)", text)
    if m is None:
        other = re.fullmatch(r"[A-Za-z_]+\s*(<=|<|==|=|=>|=<)\s*\S*", text)
        if other:
            raise bad(f"'{other.group(1)}' is not a holdout cut (the laws are fitted on the runs below the cut and "
                      "predict the runs above it)")
        if text.upper() in HOLDOUT_VARS:
            raise bad("a variable without a cut (on a command line quote the spec, --holdout 'C>1e11': the shell "
                      "reads > as a redirection)")
        raise bad("not understood")
    var = m.group(1).upper()
    if var not in HOLDOUT_VARS:
        raise bad(f"unknown variable {m.group(1)!r}")
    try:
        value = float(m.group(3))
    except ValueError:
        raise bad(f"{m.group(3)!r} is not a number") from None
    if not math.isfinite(value):
        raise bad(f"the value {m.group(3)!r} is not finite")
    return {"spec": f"{var}{m.group(2)}{m.group(3)}", "var": var, "op": m.group(2), "value": value}


def _cut_text(h):
    what, unit = HOLDOUT_VARS[h["var"]]
    if h["op"] == "top":
        return (f"per architecture, the runs whose final C ({what}) is within {TOP_RTOL:.0%} of its largest "
                "are held out")
    return f"runs with final {h['var']} {h['op']} {h['value']:g}{unit} ({what} of the run's last row) are held out"


def _plan_head(plan):
    return {k: plan[k] for k in ("spec", "cut", "var") if k in plan}


def final_rows(pts):
    """{(arch, run): index of the run's last row} (largest step; on a tie, the later row)."""
    out = {}
    for i in range(len(pts["loss"])):
        key = (str(pts["arch"][i]), str(pts["run"][i]))
        j = out.get(key)
        if j is None or not pts["step"][i] < pts["step"][j]:
            out[key] = i
    return out


def holdout_split(pts, spec):
    """Split each architecture's runs by ``spec`` (:func:`parse_holdout`): whole runs, never single
    rows; a run's value of the cut variable is that of its last row. Call on the points as read
    (before :func:`preprocess`): the measured final loss is the last row's raw value.

    Returns ``{arch: plan}``, plan = ``{"spec", "cut", "var", "fitted_runs", "held_out_runs",
    "final": {run: {N, D, C, H, loss, step, src}}}``, or ``{"spec", "cut", "var", "error"}`` for an
    architecture that the cut does not split (holds out none or all of its runs, or a run lacks the
    variable). Raises ScalingInputError, naming the cut and the runs' range, when it splits none."""
    h = parse_holdout(spec)
    var, value = h["var"], h["value"]
    what, unit = HOLDOUT_VARS[var]
    head = {"spec": h["spec"], "cut": _cut_text(h), "var": var}
    finals = final_rows(pts)
    plans, ranges, kinds = {}, {}, set()
    for arch in sorted({a for a, _ in finals}):
        final = {run: {**{k: float(pts[k][i]) for k in ("N", "D", "C", "H", "loss", "step")},
                       "src": str(pts["src"][i])} for (a, run), i in finals.items() if a == arch}
        vals = {run: f[var] for run, f in final.items()}
        missing = [run for run, v in vals.items() if not np.isfinite(v)]
        if missing:
            kinds.add("missing")
            where = final[missing[0]]["src"]
            plans[arch] = {**head, "error": f"the final {var} ({what}) of run {missing[0]!r} ({where}) is not recorded, "
                                            f"so the runs cannot be split by {var}"}
            continue
        lo, hi = min(vals.values()), max(vals.values())
        ranges[arch] = (lo, hi)
        if h["op"] == "top":
            held = {run for run, v in vals.items() if v >= hi * (1.0 - TOP_RTOL)}
        else:
            held = {run for run, v in vals.items() if (v >= value if h["op"] == ">=" else v > value)}
        span = f"final {var} of its {len(vals)} runs: {lo:.3g} to {hi:.3g}{unit}"
        if not held:
            kinds.add("none")
            plans[arch] = {**head, "error": f"holds out none of this architecture's runs ({span})"}
        elif len(held) == len(vals):
            kinds.add("all")
            why = ("every run is at its top compute level" if h["op"] == "top" else "holds out every run")
            plans[arch] = {**head, "error": f"{why} of this architecture ({span}): nothing left to fit on"}
        else:
            by_value = lambda run, vals=vals: (vals[run], run)  # noqa: E731
            plans[arch] = {**head, "fitted_runs": sorted(set(vals) - held, key=by_value),
                           "held_out_runs": sorted(held, key=by_value), "final": final}
    if not any("error" not in p for p in plans.values()):
        if ranges:
            glo, ghi = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
            per = ", ".join(f"{a} {lo:.3g}–{hi:.3g}" for a, (lo, hi) in ranges.items())
            head_msg = {frozenset({"none"}): "holds out no run", frozenset({"all"}): (
                "leaves nothing to fit on (every run of each architecture is at its top compute level)"
                if h["op"] == "top" else "holds out every run, leaving nothing to fit on")}.get(
                frozenset(kinds), "splits no architecture into runs below and above it")
            raise ScalingInputError(
                f"holdout {h['spec']!r} {head_msg}: the runs' final {var} ({what}, last row of each run) range from "
                f"{glo:.3g} to {ghi:.3g}{unit} (per architecture: {per}); choose a cut inside an architecture's range")
        raise ScalingInputError(f"holdout {h['spec']!r}: " + "; ".join(f"{a}: {p['error']}" for a, p in plans.items()))
    return plans


def predict_at(law, entry, targets):
    """A fitted law's loss at ``targets`` ({"N", "D", "C", "H"} arrays), from its log-space
    parameters ``theta`` (an exponent on its bound with A = exp(-750) = 0.0 is still exact); NaN
    where an input is missing or not positive."""
    th = np.asarray(entry["theta"], float)
    with np.errstate(all="ignore"):
        if law == "L_ND":
            n, d = (np.asarray(targets[k], float) for k in ("N", "D"))
            v = entry["L_inf"] + np.exp(th[0] - th[2] * np.log(n)) + np.exp(th[1] - th[3] * np.log(d))
            ok = (n > 0) & (d > 0)
        else:
            x = np.asarray(targets[AXES[law][0]], float)
            v = entry["L_inf"] + np.exp(th[0] - th[1] * np.log(x))
            ok = x > 0
    return np.where(ok & np.isfinite(v), v, np.nan)


def _prediction_intervals(value, draws, n_boot, why=None):
    """Per target: the full-data prediction and its 95 % percentile interval over the resamples that
    could predict it (at least half of ``n_boot``, the rule of the parameters' intervals);
    ``ci95_error`` says why an interval is missing (``why``: no bootstrap at all)."""
    value = np.asarray(value, float)
    ok = [d for d in draws if d is not None]
    need = max(2, n_boot // 2)
    out = {"predicted": [float(v) if np.isfinite(v) else None for v in value], "ci95": [], "ci95_error": [],
           "n_boot": int(n_boot), "n_boot_used": []}
    for j in range(len(value)):
        vals = np.array([d[j] for d in ok if np.isfinite(d[j])])
        out["n_boot_used"].append(int(len(vals)))
        if why or len(vals) < need:
            out["ci95"].append(None)
            out["ci95_error"].append(why or f"only {len(vals)} of {n_boot} resamples could predict it: interval "
                                            "not computed")
        else:
            out["ci95"].append([float(v) for v in np.percentile(vals, [2.5, 97.5])])
            out["ci95_error"].append(None)
    return out


def residual_rms(law, e, pts):
    """rms of log(L / L_fit) over the points a law was fitted to (every checkpoint for L(N, D), the
    frontier points for L(C), L(H)): the scatter of one measurement about the fitted law."""
    if law == "L_ND":
        x, loss = pts, pts["loss"]
    else:
        col = AXES[law][0]
        x, loss = {col: np.asarray(e["frontier"][col], float)}, np.asarray(e["frontier"]["loss"], float)
    with np.errstate(all="ignore"):
        r = np.log(loss / predict_at(law, e, x))
    r = r[np.isfinite(r)]
    return float(np.sqrt(np.mean(r * r))) if len(r) else None


def _one_run_interval(value, ci, scatter):
    """95 % interval for one run's measured loss: the law's interval ``ci`` (the resamples'
    predictions) widened, in log space and in quadrature, by 1.96 x ``scatter`` (the fitted points'
    rms scatter about the law): log half-widths sqrt(h_ci^2 + (1.96 s)^2). None without ``ci``."""
    if ci is None or scatter is None or not value > 0 or min(ci) <= 0:
        return None
    z = 1.96 * scatter
    lo, hi = math.log(value / ci[0]), math.log(ci[1] / value)
    return [value * math.exp(-math.hypot(max(lo, 0.0), z)), value * math.exp(math.hypot(max(hi, 0.0), z))]


def _law_summary(law, e):
    """The parameters of a law fitted on the runs below the cut, with their intervals and flags."""
    names = [k for k in HOLDOUT_PARAMS[law] if k in e]
    out = {k: e[k] for k in names}
    if "ci95" in e:
        out["ci95"] = {k: v for k, v in e["ci95"].items() if k in names}
    out.update({k: e[k] for k in ("n_boot", "n_boot_used", "ci95_error", "flags") if k in e})
    return out


def fit_holdout(pts, plan, fix_linf=None, n_boot=200, seed=0):
    """The holdout check of one architecture: fit every law (:func:`fit_arch`, bootstrap over runs)
    on the points of ``plan["fitted_runs"]`` only, and predict each held-out run's final loss (its
    last row) with every law that could be fitted, with a 95 % percentile interval over the
    resamples (each resample's fitted parameters give one prediction).

    ``pts``: this architecture's points (preprocessed as for the main fit); ``plan``: from
    :func:`holdout_split`. Returns the ``holdout`` section of fit.json (docs/scaling.md): the cut,
    ``fitted_runs``, ``held_out_runs``, ``laws`` ({law: parameters fitted below the cut and
    ``residual_rms``, or ``{"error"}``: not computable, with the reason}), ``table`` (one row per
    held-out run and law: ``at``, ``predicted``, ``ci95`` (the law's interval), ``pi95`` (one run's:
    :func:`_one_run_interval`), ``measured``, ``rel_error``, ``inside`` (measured in ``pi95``),
    ``inside_ci95``, ...), ``summary`` and ``in_sample`` (measured and fitted loss of the points
    the law describes: the fitted runs' final rows for L(N, D), the frontier points for L(C), L(H))."""
    head = _plan_head(plan)
    if "error" in plan:
        return {**head, "error": plan["error"]}
    fitted, held, fin, var = plan["fitted_runs"], plan["held_out_runs"], plan["final"], plan["var"]
    keep = set(fitted)
    fp = subset(pts, np.array([r in keep for r in pts["run"]], dtype=bool))
    targets = {k: np.array([fin[r][k] for r in held]) for k in ("N", "D", "C", "H")}
    res = fit_arch(fp, fix_linf=fix_linf, n_boot=n_boot, seed=seed, targets=targets)
    preds = res.pop("predictions", {})
    top_fitted = max(fin[r][var] for r in fitted)
    out = {**head, "fitted_runs": list(fitted), "held_out_runs": list(held), "n_points_fitted": int(len(fp["loss"])),
           "laws": {}, "table": [], "summary": {}, "in_sample": {}}
    inside_targets = {k: np.array([fin[r][k] for r in fitted]) for k in ("N", "D", "C", "H")}
    for law in ("L_ND", "L_C", "L_H"):
        e = res[law]
        if "error" in e:
            out["laws"][law] = {"error": f"not computable from the {len(fitted)} run{'s' if len(fitted) != 1 else ''} "
                                        f"below the cut: {e['error']}"}
            continue
        out["laws"][law] = _law_summary(law, e)
        scatter = residual_rms(law, e, fp)
        out["laws"][law]["residual_rms"] = scatter
        p = preds[law]
        errs = []
        for j, run in enumerate(held):
            m = fin[run]["loss"]
            row = {"run": run, "law": law, "at": {k: fin[run][k] for k in LAW_INPUTS[law]}, "step": fin[run]["step"],
                   "beyond_fit": fin[run][var] / top_fitted if top_fitted > 0 else None, "measured": m}
            v = p["predicted"][j]
            if v is None:
                row.update(predicted=None, ci95=None, pi95=None, rel_error=None, inside=None, inside_ci95=None,
                           note=f"not predicted: {' or '.join(LAW_INPUTS[law])} of its last row not recorded or not "
                                "positive")
            else:
                ci = p["ci95"][j]
                pi = _one_run_interval(v, ci, scatter)
                row.update(predicted=v, ci95=ci, pi95=pi, n_boot_used=p["n_boot_used"][j], rel_error=(v - m) / m,
                           inside=None if pi is None else bool(pi[0] <= m <= pi[1]),
                           inside_ci95=None if ci is None else bool(ci[0] <= m <= ci[1]))
                if ci is None:
                    row["ci95_error"] = p["ci95_error"][j]
                errs.append(abs(row["rel_error"]))
            out["table"].append(row)
        judged = [r for r in out["table"] if r["law"] == law and r["inside"] is not None]
        out["summary"][law] = {"n_held_out": len(held), "n_predicted": len(errs), "n_with_interval": len(judged),
                               "n_inside": sum(r["inside"] for r in judged),
                               "median_abs_rel_error": float(np.median(errs)) if errs else None,
                               "max_abs_rel_error": float(np.max(errs)) if errs else None}
        if law == "L_ND":  # the fitted runs' final losses against the fit
            ins = predict_at(law, e, inside_targets)
            out["in_sample"][law] = [{"run": r, "predicted": float(v) if np.isfinite(v) else None,
                                      "measured": fin[r]["loss"]} for r, v in zip(fitted, ins)]
        else:  # a frontier law describes its frontier points (a run's final row may lie well above it)
            col = AXES[law][0]
            fx = {col: np.asarray(e["frontier"][col], float)}
            out["in_sample"][law] = [{"run": r, "predicted": float(v) if np.isfinite(v) else None, "measured": float(m)}
                                     for r, v, m in zip(e["frontier"]["run"], predict_at(law, e, fx),
                                                        e["frontier"]["loss"])]
    return out
