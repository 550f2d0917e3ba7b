"""Fits of L(N, D) = L_inf + A N^-alpha + B D^-beta and L(C) = L_inf + F C^-gamma.

Free-L_inf fits follow Hoffmann et al. 2022 (approach 3) as corrected by Besiroglu et al. 2024:
log L_hat = LSE(a_1 - p_1 log x_1, ..., e); Huber loss (delta = 1e-3) on log L_hat - log L summed
over points; L-BFGS-B with the analytic gradient (``jac=True``) started from the ``N_STARTS`` best
points of a grid of initial values (the whole grid is evaluated in one vectorised call). A bootstrap
refit starts from the full-data optimum instead (``warm=``): it is a small perturbation of that
problem, and one local search costs ~1 ms instead of a multi-start.

Grid (scale-free, so FLOPs ~1e18 and N ~1e6 need no rescaling): exponents ``GRID_EXP``; each
power-law term is started at a fraction ``GRID_TERM`` of the median loss at the median input, i.e.
a_j = p_j median(log x_j) + log(f median(L)); L_inf at a fraction ``GRID_LINF`` of the smallest loss.

Tolerances: the objective handed to L-BFGS-B is (sum of Huber terms) / delta^2, so a residual of
1e-3 in log-loss contributes ~0.5; ``FTOL`` = 1e-12 and ``GTOL`` = 1e-9. Measured (docs/scaling.md):
noise-free Chinchilla exponents are recovered to 1e-6 (tested), and loosening to 1e-10 / 1e-7 saves
only ~10 % of a refit's time while moving bootstrap exponents by ~1e-3, so it is not worth it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

DELTA = 1e-3
GRID_EXP = np.array([0.05, 0.15, 0.3, 0.5, 0.75, 1.0, 1.5])
GRID_TERM = np.array([0.03, 0.1, 0.3, 1.0])
GRID_LINF = np.array([0.01, 0.1, 0.3, 0.6, 0.9])
N_STARTS = 8
EXP_BOUNDS = (0.0, 5.0)
FTOL, GTOL, MAXITER = 1e-12, 1e-9, 2000
_SCALE = 1.0 / DELTA ** 2


def _huber(r):
    a = np.abs(r)
    return np.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA)), np.clip(r, -DELTA, DELTA)


def _terms(theta, X, fix_e):
    """theta (..., 2k[+1]) = [a_1..a_k, p_1..p_k, (e)], X (P, k) log inputs -> terms (..., P, k[+1])."""
    k = X.shape[1]
    t = theta[..., None, :k] - theta[..., None, k:2 * k] * X
    if fix_e is None:
        e = theta[..., 2 * k][..., None, None]
        t = np.concatenate([t, np.broadcast_to(e, t.shape[:-1] + (1,))], axis=-1)
    elif np.isfinite(fix_e):
        t = np.concatenate([t, np.full(t.shape[:-1] + (1,), fix_e)], axis=-1)
    return t


def huber_objective(theta, X, y, fix_e=None):
    """Sum over points of Huber(log L_hat - log L) and its gradient in theta (for one theta)."""
    t = _terms(theta, X, fix_e)
    m = t.max(axis=1, keepdims=True)
    ex = np.exp(t - m)
    s = ex.sum(axis=1)
    r = m[:, 0] + np.log(s) - y
    h, dh = _huber(r)
    w = ex * (dh / s)[:, None]  # d(sum h)/d(term j) = h'(r) softmax_j
    k = X.shape[1]
    g = np.concatenate([w[:, :k].sum(0), -(w[:, :k] * X).sum(0)])
    if fix_e is None:
        g = np.append(g, w[:, k].sum())
    return h.sum(), g


def _scaled(theta, X, y, fix_e):
    f, g = huber_objective(theta, X, y, fix_e)
    return f * _SCALE, g * _SCALE


def _grid(X, y, fix_e):
    k = X.shape[1]
    med_x, med_l = np.median(X, axis=0), np.median(y)
    rows = []
    for combo in itertools.product(*([GRID_EXP] * k + [GRID_TERM] * k + ([GRID_LINF] if fix_e is None else []))):
        p = np.array(combo[:k])
        a = p * med_x + med_l + np.log(combo[k:2 * k])
        rows.append(np.concatenate([a, p, [y.min() + np.log(combo[2 * k])] if fix_e is None else []]))
    return np.array(rows)


def fit_lse(X, loss, fix_linf=None, warm=None):
    """Robust fit of L = L_inf + sum_j c_j x_j^-p_j.

    X: (P, k) positive inputs; loss: (P,) positive; fix_linf: None (free) or a value >= 0 (0 drops
    the term); warm: a previous result's ``theta`` to start one local search from (bootstrap).
    Returns dict: theta, logc (k,), exps (k,), L_inf, objective (sum of Huber terms), converged.
    """
    X = np.log(np.asarray(X, float))
    y = np.log(np.asarray(loss, float))
    k = X.shape[1]
    fix_e = None if fix_linf is None else (float(np.log(fix_linf)) if fix_linf > 0 else -np.inf)
    bounds = [(None, None)] * k + [EXP_BOUNDS] * k + ([(None, None)] if fix_e is None else [])
    if warm is not None:
        starts = [np.asarray(warm, float)]
        if fix_e is None and starts[0][2 * k] < y.min() + np.log(1e-2):
            # L_inf ~ 0 sits where its gradient vanishes (softmax weight ~0): a resample that wants
            # L_inf > 0 could not leave it, so also start from L_inf = 0.3 min(L)
            starts.append(np.concatenate([starts[0][:2 * k], [y.min() + np.log(0.3)]]))
    else:
        grid = _grid(X, y, fix_e)
        r = logsumexp(_terms(grid, X, fix_e), axis=-1) - y
        starts = grid[np.argsort(_huber(r)[0].sum(-1))[:N_STARTS]]
    best = None
    for x0 in starts:
        res = minimize(_scaled, x0, args=(X, y, fix_e), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": MAXITER, "ftol": FTOL, "gtol": GTOL})
        if best is None or res.fun < best.fun:
            best = res
    th = best.x
    return {"theta": th, "logc": th[:k], "exps": th[k:2 * k],
            "L_inf": float(np.exp(th[2 * k])) if fix_e is None else float(fix_linf),
            "objective": float(best.fun / _SCALE), "converged": bool(best.success)}


def fit_lnd(N, D, loss, fix_linf=None, warm=None):
    """L(N, D) fit -> {alpha, beta, A, B, log_A, log_B, L_inf, objective, theta}.

    ``log_A``, ``log_B`` are the fitted log coefficients themselves: with an exponent on its bound
    A = exp(log_A) can under- or overflow (alpha = 5 at N ~ 1e4 gives log_A ~ -750, A = 0.0), so
    :func:`allocation` works from the logs."""
    f = fit_lse(np.column_stack([N, D]), loss, fix_linf, warm)
    return {"alpha": float(f["exps"][0]), "beta": float(f["exps"][1]), "A": float(np.exp(f["logc"][0])),
            "B": float(np.exp(f["logc"][1])), "log_A": float(f["logc"][0]), "log_B": float(f["logc"][1]),
            "L_inf": f["L_inf"], "objective": f["objective"], "theta": f["theta"]}


def fit_power(x, loss, fix_linf=None, warm=None):
    """L(x) = L_inf + F x^-gamma, robust recipe -> {gamma, F, L_inf, objective, theta}."""
    f = fit_lse(np.column_stack([x]), loss, fix_linf, warm)
    return {"gamma": float(f["exps"][0]), "F": float(np.exp(f["logc"][0])), "L_inf": f["L_inf"],
            "objective": f["objective"], "theta": f["theta"]}


def predict_lnd(p, N, D):
    return p["L_inf"] + p["A"] * np.asarray(N, float) ** -p["alpha"] + p["B"] * np.asarray(D, float) ** -p["beta"]


def predict_power(p, x):
    return p["L_inf"] + p["F"] * np.asarray(x, float) ** -p["gamma"]


def fit_loglog(x, loss):
    """L_inf = 0: OLS of log L = log F - gamma log x (statsmodels); the slope's 95 % CI from the
    regression (assumes independent residuals: checkpoints along one run are not, so it is narrow)."""
    import statsmodels.api as sm

    res = sm.OLS(np.log(loss), sm.add_constant(np.log(x))).fit()
    lo, hi = res.conf_int(0.05)[1]
    return {"gamma": float(-res.params[1]), "F": float(np.exp(res.params[0])), "L_inf": 0.0,
            "gamma_ci95_ols": [float(-hi), float(-lo)], "r2": float(res.rsquared), "n_points": int(len(x))}


def _log_coef(p, name):
    """log A (or log B) of an L(N, D) result: ``log_A`` when given, else log of ``A`` (-inf for 0)."""
    if p.get(f"log_{name}") is not None:
        return float(p[f"log_{name}"])
    v = float(p[name])
    return math.log(v) if v > 0 else -math.inf


def allocation(p, kappa=None, budget_flops=None):
    """Compute-optimal split of L(N, D) under C = 3 kappa N D, computed in log space.

    a = beta/(alpha+beta), b = alpha/(alpha+beta), gamma_c = alpha beta/(alpha+beta);
    with kappa and a budget C: log G = (log alpha + log A - log beta - log B)/(alpha+beta),
    log N* = log G + a log(C/3kappa), log D* = b log(C/3kappa) - log G and the predicted loss
    L(N*, D*) = exp(LSE(log A - alpha log N*, log B - beta log D*, log L_inf)). Nothing here
    divides by a quantity that can underflow (A = exp(-750) is fine: only log A is used).

    A quantity that is not defined for these parameters (alpha + beta = 0; alpha or beta = 0, where
    the loss does not fall with N or D and the optimum runs off to N* -> 0 or D* -> 0; N* or D*
    beyond the float range) is left out of the result and its reason is given in
    ``out["undefined"] = {name: reason}``; the others are still returned.
    """
    al, be = float(p["alpha"]), float(p["beta"])
    out, undefined = {}, {}
    s = al + be
    if s > 0 and math.isfinite(s):
        out.update(a=be / s, b=al / s, gamma_c_derived=al * be / s)
    else:
        for name in ("a", "b", "gamma_c_derived"):
            undefined[name] = f"alpha + beta = {s:g}: the split of compute between N and D is not defined"
    if kappa is not None:
        out["kappa"] = float(kappa)
    if budget_flops and kappa:
        out["budget_flops"] = float(budget_flops)
        reason = None
        if not (kappa > 0 and budget_flops > 0):
            reason = f"needs kappa > 0 and a positive budget (kappa = {kappa:g}, budget = {budget_flops:g} FLOP)"
        elif not (al > 0 and be > 0):
            zero = "alpha" if not al > 0 else "beta"
            reason = (f"{zero} = {al if zero == 'alpha' else be:g}: the loss does not fall with "
                      f"{'N' if zero == 'alpha' else 'D'}, so the compute-optimal "
                      f"{'N* -> 0' if zero == 'alpha' else 'D* -> 0'} is not defined")
        if reason is None:
            log_m = math.log(budget_flops) - math.log(3.0 * kappa)
            log_g = (math.log(al) + _log_coef(p, "A") - math.log(be) - _log_coef(p, "B")) / s
            log_n, log_d = log_g + (be / s) * log_m, (al / s) * log_m - log_g
            if not (math.isfinite(log_n) and math.isfinite(log_d)):
                reason = f"log N* = {log_n:g}, log D* = {log_d:g}: not finite (A or B is 0 or infinite)"
            elif max(abs(log_n), abs(log_d)) > 700.0:
                reason = (f"N* = 10^{log_n / math.log(10):.1f}, D* = 10^{log_d / math.log(10):.1f}: beyond the "
                          "float range")
        if reason is None:
            terms = [_log_coef(p, "A") - al * log_n, _log_coef(p, "B") - be * log_d]
            if p.get("L_inf"):
                terms.append(math.log(float(p["L_inf"])))
            out.update(N_opt=math.exp(log_n), D_opt=math.exp(log_d), loss_opt=float(math.exp(logsumexp(terms))))
        else:
            for name in ("N_opt", "D_opt", "loss_opt"):
                undefined[name] = reason
    if undefined:
        out["undefined"] = undefined
    return out
