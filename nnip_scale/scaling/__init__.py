"""Scaling-law toolkit: ledgers/CSV -> frontiers -> fits L(C), L(H), L(N, D) -> allocation -> report.

Imports only numpy/scipy/statsmodels/matplotlib and the standard library (no torch). The entry
point is :func:`write_report` (used by ``tools/fit_scaling_laws.py`` and the study runner).
"""
from .io import ScalingInputError, load_points
from .laws import allocation, fit_lnd, fit_loglog, fit_power

__all__ = ["ScalingInputError", "load_points", "fit_lnd", "fit_power", "fit_loglog", "allocation"]
from .report import write_report  # noqa: E402

__all__ += ["write_report"]
