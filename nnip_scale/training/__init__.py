"""Training: the LightningModule, losses, metrics, optimizers and callbacks."""

from nnip_scale.training.callbacks import ThroughputLogger, ValidateAtEnd
from nnip_scale.training.ledger import ComputeLedger
from nnip_scale.training.loss import EnergyForceLoss
from nnip_scale.training.metrics import EnergyForceMetrics
from nnip_scale.training.module import NNIPModule

__all__ = ["ComputeLedger", "EnergyForceLoss", "EnergyForceMetrics", "NNIPModule", "ThroughputLogger", "ValidateAtEnd"]
