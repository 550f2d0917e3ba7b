"""Smooth radial cutoff envelopes."""

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """Polynomial envelope u(r) that goes to zero at ``cutoff`` with ``p`` continuous derivatives.

    u(x) = 1 − (p+1)(p+2)/2·x^p + p(p+2)·x^(p+1) − p(p+1)/2·x^(p+2) for x = r/cutoff < 1, else 0
    (the DimeNet envelope). u(0) = 1; u, u' and u'' vanish at the cutoff, so energies and
    forces are smooth when a neighbour crosses it.

    Args:
        cutoff: cutoff radius (Å).
        p: polynomial order (≥ 2).
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        if p < 2:
            raise ValueError(f"envelope order p must be >= 2, got {p}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r: distances [E] (Å) -> envelope values [E] in [0, 1]."""
        p = self.p
        x = r / self.cutoff
        u = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x.pow(p)
            + p * (p + 2) * x.pow(p + 1)
            - 0.5 * p * (p + 1) * x.pow(p + 2)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))
