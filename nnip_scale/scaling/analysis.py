"""Preprocessing (EMA, drop-first), frontiers, and per-architecture fits with a bootstrap over runs.

Every law is fitted independently: one the data cannot support becomes ``{"error": reason}`` and
the others are still fitted (:func:`fit_arch`). Bootstrap: draw the architecture's runs with
replacement (points of one run are correlated, so runs are the independent units), rebuild the
points and frontiers, refit every law warm-started from its full-data optimum, and take the 2.5 /
97.5 percentiles of every parameter and derived quantity over the resamples the law could be
fitted on (``n_boot_used``; fewer than half usable gives ``ci95_error`` instead of intervals).
"""
from __future__ import annotations

import os

import numpy as np

from .io import ScalingInputError, require, subset
from .laws import EXP_BOUNDS, allocation, fit_lnd, fit_loglog, fit_power, predict_power

#: minimum data per law: points, distinct values of each input (free L_inf / fixed L_inf)
MIN_POINTS = {"L_ND": 6, "L_C": 4, "L_H": 4}
MIN_RUNS_BOOT = 4
AXES = {"L_C": ("C", "training FLOPs"), "L_H": ("H", "GPU-hours")}


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


_NOT_BOOTSTRAPPED = {"objective", "kappa", "budget_flops"}


def _scalars(d):
    return {k: v for k, v in d.items() if isinstance(v, float) and k not in _NOT_BOOTSTRAPPED}


class _Arch:
    """The fits of one architecture on one set of points (full data or a bootstrap resample)."""

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
                res[law] = fn(None if warm is None else warm[law]["theta"])
            except ScalingInputError as err:
                if warm is None:
                    res[law] = {"error": str(err)}
        if "L_ND" in res and "error" not in res["L_ND"]:
            res["allocation"] = allocation(res["L_ND"], kappa, self.budget)
            if "L_C" in res and "error" not in res["L_C"]:
                res["consistency"] = {"gamma_c_fitted": res["L_C"]["gamma"],
                                      "gamma_c_derived": res["allocation"]["gamma_c_derived"]}
                res["consistency"]["difference"] = (res["consistency"]["gamma_c_fitted"]
                                                    - res["consistency"]["gamma_c_derived"])
        elif warm is None:
            res["allocation"] = {"error": f"needs L(N, D): {res['L_ND']['error']}"}
        if self.budget and "L_C" in res and "error" not in res["L_C"]:
            res["L_C"]["loss_at_budget"] = float(predict_power(res["L_C"], self.budget))
        return res


def measured_kappa(p):
    """kappa = median over checkpoints of C / (3 N D) (the paper's C = 3 kappa N D), None without C."""
    ok = np.isfinite(p["C"]) & np.isfinite(p["N"]) & np.isfinite(p["D"]) & (p["N"] > 0) & (p["D"] > 0)
    return float(np.median(p["C"][ok] / (3.0 * p["N"][ok] * p["D"][ok]))) if ok.any() else None


def bound_warnings(out: dict) -> None:
    """Flag exponents that ended on a bound of the search range: the runs do not identify them
    (too narrow a range of N or D, or loss not falling with it), and quantities derived from them
    (allocation, γ_c) inherit that. Adds ``warnings`` to the law's entry."""
    lo, hi = EXP_BOUNDS
    for law, names in (("L_ND", ("alpha", "beta")), ("L_C", ("gamma",)), ("L_H", ("gamma",))):
        e = out.get(law) or {}
        if "error" in e:
            continue
        for name in names:
            v = e.get(name)
            if v is not None and (v <= lo + 1e-6 or v >= hi - 1e-6):
                e.setdefault("warnings", []).append(
                    f"{name} = {v:.3g} is on the bound [{lo:g}, {hi:g}] of the search: not identified by these runs "
                    f"(widen the range of {'N' if name == 'alpha' else 'D' if name == 'beta' else 'compute'} "
                    "or train longer)")


def fit_arch(pts, fix_linf=None, budget_flops=None, n_boot=200, seed=0, kappa=None):
    """All laws of one architecture's points, with bootstrap-over-runs 95 % intervals."""
    kappa = measured_kappa(pts) if kappa is None else float(kappa)
    fitter = _Arch(fix_linf, budget_flops)
    out = fitter.run(pts, kappa)
    bound_warnings(out)
    runs = np.unique(pts["run"])
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
        boot_error = None
        if len(runs) < MIN_RUNS_BOOT:
            boot_error = (f"too few runs for a bootstrap over runs: {len(runs)} < {MIN_RUNS_BOOT} "
                          "(95 % intervals not computed)")
        else:
            rows = [np.flatnonzero(pts["run"] == r) for r in runs]
            rng = np.random.default_rng(seed)
            draws = {k: [] for k in keys}
            for _ in range(n_boot):
                pick = rng.integers(0, len(runs), len(runs))
                sample = subset(pts, np.concatenate([rows[i] for i in pick]))
                res = fitter.run(sample, kappa, warm=out)
                for k in keys:
                    draws[k].append(_scalars(res[k]) if k in res else None)
            for k in keys:
                ok = [d for d in draws[k] if d is not None]
                out[k]["n_boot_used"] = len(ok)
                if len(ok) < max(2, n_boot // 2):
                    out[k]["ci95_error"] = (f"only {len(ok)} of {n_boot} resamples of {len(runs)} runs could be "
                                            "fitted (too few distinct N/D or frontier points); intervals not computed")
                    continue
                out[k]["ci95"] = {name: [float(v) for v in np.percentile([d[name] for d in ok], [2.5, 97.5])]
                                  for name in _scalars(out[k]) if all(name in d for d in ok)}
        if boot_error:
            for k in keys:
                out[k]["ci95_error"] = boot_error
    for k in ("L_ND", "L_C", "L_H"):
        if "theta" in out[k]:
            out[k]["theta"] = [float(v) for v in out[k]["theta"]]
    out["kappa_measured"] = kappa
    out["n_points"], out["n_runs"] = int(len(pts["loss"])), int(len(runs))
    return out


def _fit_one(args):
    pts, kw = args
    return fit_arch(pts, **kw)


def fit_all(pts, workers=None, **kw):
    """{arch: fit_arch(points of that arch)} in sorted arch order. Architectures are independent,
    so with several of them and a bootstrap they are fitted in parallel processes (``workers``,
    default: the CPU count); results are identical to the serial ones (each fit is seeded)."""
    archs = [str(a) for a in sorted(np.unique(pts["arch"]))]
    jobs = [(subset(pts, pts["arch"] == a), kw) for a in archs]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers > 1 and kw.get("n_boot"):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # one BLAS thread per worker: the fits are many small problems, and threaded BLAS in every
        # worker only oversubscribes the cores (the children read these at their numpy import)
        keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: "1" for k in keys})
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                return dict(zip(archs, pool.map(_fit_one, jobs)))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return dict(zip(archs, map(_fit_one, jobs)))
