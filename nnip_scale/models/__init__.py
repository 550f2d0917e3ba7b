"""Interatomic-potential backbones: plain ``nn.Module``s, batch dict in, energy/forces out."""

from nnip_scale.models.base import PotentialModel
from nnip_scale.models.egnn import MCEGNN
from nnip_scale.models.esen import ESEN
from nnip_scale.models.mace import MACE
from nnip_scale.models.mpnn import MPNN

__all__ = ["ESEN", "MACE", "MCEGNN", "MPNN", "PotentialModel"]
