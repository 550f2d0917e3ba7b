"""Deprecated name of :mod:`nnip_scale.models.mc_egnn` (the MC-EGNN's module until issue 14).

Configs and code that name ``nnip_scale.models.egnn.MCEGNN`` keep working: this module re-exports the
class (the same object, so checkpoints and ``isinstance`` agree). New code imports
``nnip_scale.models.MCEGNN`` or ``nnip_scale.models.mc_egnn``.
"""

import warnings

from nnip_scale.models.mc_egnn import MCEGNN, MCEGNNLayer

#: the layer's name before issue 14
EGNNLayer = MCEGNNLayer

warnings.warn("nnip_scale.models.egnn is deprecated: the MC-EGNN lives in nnip_scale.models.mc_egnn "
              "(class_path nnip_scale.models.mc_egnn.MCEGNN, or nnip_scale.models.MCEGNN)",
              DeprecationWarning, stacklevel=2)

__all__ = ["EGNNLayer", "MCEGNN", "MCEGNNLayer"]
