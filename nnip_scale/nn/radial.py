"""Radial basis functions of interatomic distance."""

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """Spherical Bessel (sine) basis sqrt(2/c)·sin(nπr/c)/r, n = 1..num_basis.

    Args:
        cutoff: cutoff radius c (Å).
        num_basis: number of basis functions.
        trainable: learn the frequencies (initialised at nπ/c).
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = False):
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        freqs = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        if trainable:
            self.frequencies = nn.Parameter(freqs)
        else:
            self.register_buffer("frequencies", freqs)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r: distances [E] (Å, > 0) -> basis values [E, num_basis]."""
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r
