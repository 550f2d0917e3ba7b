"""Reusable neural-network building blocks: radial cutoffs, radial bases, MLPs."""

from nnip_scale.nn.cutoff import PolynomialEnvelope
from nnip_scale.nn.mlp import MLP
from nnip_scale.nn.radial import BesselBasis

__all__ = ["BesselBasis", "MLP", "PolynomialEnvelope"]
