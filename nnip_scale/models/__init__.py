"""Interatomic-potential backbones: plain ``nn.Module``s, batch dict in, energy/forces out."""

from nnip_scale.models.base import PotentialModel
from nnip_scale.models.egnn import MCEGNN
from nnip_scale.models.esen import ESEN
from nnip_scale.models.gemnet_oc import GemNetOC
from nnip_scale.models.mace import MACE
from nnip_scale.models.mpnn import MPNN
from nnip_scale.models.registry import register_model, registered_model, registered_models

# The built-in backbones: the only classes a checkpoint may name unless user code registers more.
for _cls in (MPNN, MCEGNN, MACE, ESEN, GemNetOC):
    register_model(_cls, aliases=(f"nnip_scale.models.{_cls.__name__}",))
del _cls

__all__ = ["ESEN", "GemNetOC", "MACE", "MCEGNN", "MPNN", "PotentialModel", "register_model", "registered_model",
           "registered_models"]
