"""The LightningModule that trains any backbone (a plain ``nn.Module``: batch in, energy/forces out)."""

from typing import Any

import lightning as L
import torch
from torch import nn

from nnip_scale.training.callbacks import ThroughputLogger
from nnip_scale.training.ledger import ComputeLedger
from nnip_scale.training.loss import EnergyForceLoss, LossName
from nnip_scale.training.metrics import EnergyForceMetrics
from nnip_scale.training.optim import OptimizerName, build_optimizer, is_schedule_free


class NNIPModule(L.LightningModule):
    """Trains an interatomic potential on energies and forces.

    Args:
        backbone: the model (``class_path``/``init_args`` in YAML), e.g. ``nnip_scale.models.MPNN``.
        loss: ``mae_l2`` (paper: per-atom energy MAE + mean per-atom force L2 norm), ``mse``, ``huber``.
        energy_weight: λ_e.
        force_weight: λ_f.
        stress_weight: λ_s (0 = no stress term).
        huber_delta: δ for ``loss: huber``.
        optimizer: ``schedulefree_adamw`` (default, no LR schedule) or ``adamw`` (warmup + cosine).
        lr: peak learning rate.
        weight_decay: decoupled weight decay of weight matrices.
        betas: Adam betas.
        warmup_steps: LR warmup steps (both optimizers).
        min_lr_ratio: final LR / peak LR of the cosine schedule (``adamw`` only).
    """

    def __init__(
        self,
        backbone: nn.Module,
        loss: LossName = "mae_l2",
        energy_weight: float = 1.0,
        force_weight: float = 1.0,
        stress_weight: float = 0.0,
        huber_delta: float = 0.01,
        optimizer: OptimizerName = "schedulefree_adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.loss_fn = EnergyForceLoss(loss, energy_weight, force_weight, stress_weight, huber_delta)
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Feed the training-split statistics to the backbone before the first step (once: a
        backbone restored from a checkpoint already holds them)."""
        if not hasattr(self.backbone, "set_statistics") or bool(self.backbone.statistics_set):
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "statistics"):
            raise RuntimeError(
                "the backbone has no dataset statistics yet and no datamodule provides them; "
                "expected a trainer with an AtomsDataModule (or load a trained checkpoint)"
            )
        data_cutoff = getattr(dm, "cutoff", None)
        model_cutoff = getattr(self.backbone, "cutoff", None)
        if data_cutoff is not None and model_cutoff is not None and data_cutoff < model_cutoff:
            raise ValueError(
                f"the data's neighbour-list cutoff ({data_cutoff} Å) is smaller than the model's cutoff "
                f"({model_cutoff} Å); expected data.cutoff >= the model's cutoff"
            )
        self.backbone.set_statistics(dm.statistics)

    def on_fit_start(self) -> None:
        if hasattr(self.backbone, "count_parameters") and self.logger is not None:
            counts = self.backbone.count_parameters()
            self.logger.log_hyperparams({**self.hparams, **counts})

    def configure_callbacks(self):
        """Throughput logging always; the compute ledger unless the trainer config brings its own."""
        callbacks = [ThroughputLogger()]
        if not any(isinstance(c, ComputeLedger) for c in self.trainer.callbacks):
            callbacks.append(ComputeLedger())
        return callbacks

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.backbone(batch)

    def step_terms(self, backbone: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Everything one step computes for ``batch`` with ``backbone``: predictions and loss terms
        (the compute ledger counts FLOPs by calling this on a reference copy of the backbone)."""
        pred = backbone(batch)
        terms = self.loss_fn(pred, batch)
        terms["pred"] = pred
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.step_terms(self.backbone, batch)
        bs = batch["n_structures"]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        self.log("train/energy_term", terms["energy"], batch_size=bs)
        self.log("train/force_term", terms["forces"], batch_size=bs)
        if "stress" in terms:
            self.log("train/stress_term", terms["stress"], batch_size=bs)
        self.log("train/lr", self._current_lr(), batch_size=bs)
        return terms["loss"]

    def _eval_step(self, batch: dict, metrics: EnergyForceMetrics) -> None:
        terms = self.step_terms(self.backbone, batch)
        metrics.update(terms["pred"], batch, terms["loss"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, prefix: str, metrics: EnergyForceMetrics) -> None:
        # compute() already reduced the sums across ranks, so every rank holds the same values and
        # sync_dist's mean leaves them unchanged (it only keeps Lightning's bookkeeping consistent)
        values = metrics.compute()
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items()}, prog_bar=False, sync_dist=True)
        self.log(f"{prefix}_loss", values["loss"].float(), prog_bar=True, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return build_optimizer(
            self.backbone, h.optimizer, h.lr, h.weight_decay, tuple(h.betas), h.warmup_steps, total, h.min_lr_ratio
        )

    def _current_lr(self) -> float:
        if self._trainer is None or not self.trainer.optimizers:
            return float(self.hparams.lr)
        group = self.trainer.optimizers[0].param_groups[0]
        return float(group.get("scheduled_lr", group["lr"]))

    # Schedule-free AdamW evaluates and checkpoints the averaged weights (optimizer.eval()) and
    # trains on the interpolated ones (optimizer.train()); switch at every boundary.
    def _optimizer_mode(self, train: bool) -> None:
        if self._trainer is None:
            return
        for opt in self.trainer.optimizers:
            if is_schedule_free(opt) and opt.param_groups[0]["train_mode"] != train:
                opt.train() if train else opt.eval()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._optimizer_mode(train=True)

    def on_validation_epoch_start(self) -> None:
        self._optimizer_mode(train=False)

    def on_train_epoch_end(self) -> None:
        self._optimizer_mode(train=False)

    def on_train_end(self) -> None:
        self._optimizer_mode(train=False)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record how to rebuild the backbone, so a checkpoint loads without its YAML."""
        cls = type(self.backbone)
        init_args = self.backbone.init_config() if hasattr(self.backbone, "init_config") else None
        checkpoint["nnip_backbone"] = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
