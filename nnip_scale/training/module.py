"""The LightningModule that trains any backbone (a plain ``nn.Module``: batch in, energy/forces out)."""

import contextlib
import hashlib
import json
import warnings
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from nnip_scale.data import keys as K
from nnip_scale.models.base import PotentialModel, element_symbol
from nnip_scale.models.registry import class_path
from nnip_scale.training.callbacks import DivergenceGuard, ThroughputLogger, ValidateAtEnd
from nnip_scale.training.ledger import ComputeLedger
from nnip_scale.training.loss import EnergyForceLoss, LossName
from nnip_scale.training.metrics import EnergyForceMetrics
from nnip_scale.training.mup import apply_mup_init, classify_parameters, lr_scales
from nnip_scale.training.optim import OptimizerName, build_optimizer, is_schedule_free
from nnip_scale.training.predict import PredictionWriter
from nnip_scale.training.symmetry import random_rotate_batch, rotation_seed


class NNIPModule(L.LightningModule):
    """Trains an interatomic potential on energies and forces.

    Args:
        backbone: the model: a :class:`PotentialModel` (``class_path``/``init_args`` in YAML, or a
            short name: ``--model.backbone MACE``), e.g. ``nnip_scale.models.MPNN``.
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
        mup_base_width: μP (docs/mup.md): ``lr`` is the LR tuned at this backbone width and is
            transferred to the backbone's width (hidden/output matrices get lr·fan_in_base/fan_in,
            output weights a μP init); ``None``: standard parametrisation.
        symmetry_loss_copies: M, the number of Haar-rotated copies in the symmetry loss
            L_sym = (1/M)·Σ_m L(model(R_m x), R_m y) (0 = off; paper: 5). Each copy costs one more
            training step of compute (counted by the ledger).
        symmetry_loss_weight: λ of the total training loss L + λ·L_sym (paper: 1).
        rotation_augmentation: rotate every training structure by a Haar-random rotation.
        rotation_seed: seed of the rotations (with the global step and rank: a resumed run draws
            the same ones).
        arch_name: the run's architecture label in its ledger (scaling tools group runs by it);
            default: the backbone's own label, which tells configurations apart (``mace_l1_nu4``,
            ``mace_l0_nu4``, ``esen_l2``, ``mpnn``, ``mcegnn``).
        unseen_elements: what validation and test do with structures holding elements the
            training data never had (the model's reference energies for them are zero):
            ``error`` (default) refuses before the first batch, naming the elements;
            ``separate`` warns, leaves those structures out of ``val/*``/``test/*`` and reports
            them apart as ``val/unseen_elements/*``.
    """

    def __init__(
        self,
        backbone: PotentialModel,
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
        mup_base_width: int | None = None,
        symmetry_loss_copies: int = 0,
        symmetry_loss_weight: float = 1.0,
        rotation_augmentation: bool = False,
        rotation_seed: int = 0,
        arch_name: str | None = None,
        unseen_elements: Literal["error", "separate"] = "error",
    ):
        super().__init__()
        if symmetry_loss_copies < 0:
            raise ValueError(f"symmetry_loss_copies must be >= 0 (0 = off), got {symmetry_loss_copies}")
        if symmetry_loss_weight < 0:
            raise ValueError(f"symmetry_loss_weight must be >= 0, got {symmetry_loss_weight}")
        if mup_base_width is not None and mup_base_width < 1:
            raise ValueError(f"mup_base_width must be a positive width or null, got {mup_base_width}")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.mup_roles = None
        if mup_base_width is not None:
            # Rescale the output layers of a fresh backbone once, here: weights restored from a
            # checkpoint are loaded after construction and are never rescaled. A backbone that
            # already holds training statistics was trained or restored: only classify it.
            fresh = not bool(getattr(backbone, "statistics_set", False))
            self.mup_roles = (apply_mup_init if fresh else classify_parameters)(backbone, mup_base_width)
        self.loss_fn = EnergyForceLoss(loss, energy_weight, force_weight, stress_weight, huber_delta)
        if unseen_elements not in ("error", "separate"):
            raise ValueError(f"unseen_elements must be 'error' or 'separate', got {unseen_elements!r}")
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()
        self.unseen_metrics = EnergyForceMetrics()  # structures with elements never trained on (separate)
        self._elements_checked: set[str] = set()
        self.divergence: dict | None = None  # set by DivergenceGuard: {"step", "last_finite_train_loss"}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Feed the training-split statistics to the backbone before the first step (once: a
        backbone restored from a checkpoint already holds them)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._trainer is not None and self.trainer.fast_dev_run:
            # a smoke test records nothing: Lightning 2.6 skips fast_dev_run checkpoints except
            # ModelCheckpoint(save_last=True)'s save in on_train_end (the ledger disables itself)
            for cb in self.trainer.checkpoint_callbacks:
                cb.save_last = False
        if hasattr(self.backbone, "set_statistics") and not bool(self.backbone.statistics_set):
            self._set_statistics(dm)

    def _check_elements(self, split: str) -> None:
        """Refuse (or, with ``unseen_elements: separate``, warn about) elements of ``split`` that the
        model never saw in training: its reference energy for them is 0, so any metric is noise."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "split_elements") or not hasattr(self.backbone, "known_elements"):
            return
        if split in self._elements_checked:
            return
        self._elements_checked.add(split)
        known = self.backbone.known_elements.detach().cpu()
        unseen = sorted(z for z in dm.split_elements(split) if z >= len(known) or not bool(known[z]))
        if not unseen:
            return
        names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in unseen)
        where = {"val": "validation", "test": "test", "predict": "prediction"}[split]
        trained = ", ".join(element_symbol(int(z)) for z in torch.nonzero(known).flatten())
        if self.hparams.unseen_elements == "error" or split == "predict":
            raise ValueError(
                f"the {where} data contain element(s) {names} that the model was never trained on (it knows "
                f"{trained}); its metrics there would be meaningless. Expected {where} data with trained elements "
                f"only; pass --model.unseen_elements separate to report those structures apart"
            )
        warnings.warn(f"the {where} data contain element(s) {names} never seen in training: those structures are "
                      f"left out of {split}/* and reported as {split}/unseen_elements/*", stacklevel=2)

    def _set_statistics(self, dm) -> None:
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
        before = {id(p) for p in self.backbone.parameters()}
        self.backbone.set_statistics(dm.statistics)
        self._after_parameters_replaced(before, fresh=True)
        self._warn_charge_spin(dm)

    def _after_parameters_replaced(self, before: set[int], fresh: bool) -> None:
        """The backbone created parameters after construction (MACE ``elements: auto`` makes its
        per-element weights from the statistics or a checkpoint's list): under μP, reclassify, and
        give ``fresh`` ones the μP init that construction gave the others."""
        new = [n for n, p in self.backbone.named_parameters() if id(p) not in before]
        if not new or self.hparams.mup_base_width is None:
            return
        self.mup_roles = classify_parameters(self.backbone, self.hparams.mup_base_width)
        if fresh and getattr(self.backbone, "_mup_init_base_width", None) is not None:
            params = dict(self.backbone.named_parameters())
            with torch.no_grad():
                for name in new:
                    if self.mup_roles[name].init_scale != 1.0:
                        params[name].mul_(self.mup_roles[name].init_scale)

    def _warn_charge_spin(self, dm) -> None:
        """Say so when the training data carry charges or spin multiplicities that the model
        ignores (OMol25 holds the same geometry at several charges and spins: a model without
        them predicts one energy for all, and its error floor is the spread between them)."""
        if getattr(self.backbone, "uses_charge_spin", False) or not hasattr(dm, "train_dataset"):
            return
        ds = dm.train_dataset
        charge = np.asarray(ds.data.charge)[ds.indices]
        spin = np.asarray(ds.data.spin)[ds.indices]
        charged, open_shell = int((charge != 0).sum()), int((spin != 1).sum())
        if charged or open_shell:
            warnings.warn(
                f"the training data hold {charged} structure(s) with charge != 0 and {open_shell} with spin "
                f"multiplicity != 1 (of {len(ds)}); {type(self.backbone).__name__} does not read charge or spin, "
                f"so structures that differ only in them get the same prediction", stacklevel=2)

    def on_fit_start(self) -> None:
        if hasattr(self.backbone, "count_parameters"):
            counts = self.backbone.count_parameters()
            if self.logger is not None:
                self.logger.log_hyperparams({**self.hparams, **counts, **self.mup_summary()})
            identity = self.run_identity()
            rank_zero_info(f"model: {identity['model_class']} ({identity['arch']}), N = {counts['n_params']:,} "
                           f"trainable parameters without the element embedding ({counts['n_params_total']:,} in "
                           f"all), forces {identity['force_mode']}, loss {identity['loss']}; training FLOPs are "
                           f"measured by the compute ledger")
        if self.hparams.mup_base_width is not None:
            summary = self.mup_summary()
            groups = ", ".join(f"{summary[k]:.3g}" for k in summary if k.endswith("_lr"))
            rank_zero_info(f"μP: width {summary['mup/width']}, base width {summary['mup/base_width']}, "
                           f"lr per parameter group: {groups}")

    def mup_summary(self) -> dict:
        """Width, base width and the LR of every optimizer group (``{}`` without μP)."""
        if self.hparams.mup_base_width is None:
            return {}
        out = {"mup/width": int(self.backbone.init_config()["width"]), "mup/base_width": self.hparams.mup_base_width}
        if self._trainer is not None and self.trainer.optimizers:
            for k, g in enumerate(self.trainer.optimizers[0].param_groups):
                out[f"mup/group{k}_lr"] = float(g["lr"])
                out[f"mup/group{k}_lr_scale"] = float(g.get("lr_scale", 1.0))
                out[f"mup/group{k}_n_params"] = sum(p.numel() for p in g["params"])
        return out

    def configure_callbacks(self):
        """Throughput logging always; the compute ledger and a validation after the last training
        batch unless the trainer config brings its own (so every fit ends with a ledger row and,
        where a ModelCheckpoint is configured, a checkpoint at its final step)."""
        callbacks = [ThroughputLogger()]
        if not any(isinstance(c, ComputeLedger) for c in self.trainer.callbacks):
            callbacks.append(ComputeLedger())
        if not any(isinstance(c, ValidateAtEnd) for c in self.trainer.callbacks):
            callbacks.append(ValidateAtEnd())
        if not any(isinstance(c, DivergenceGuard) for c in self.trainer.callbacks):
            callbacks.append(DivergenceGuard())
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            callbacks.append(PredictionWriter())
        return callbacks

    def run_identity(self) -> dict:
        """What this run is, for every ledger row: architecture label and class, force mode,
        loss (with its weights), cutoff and a hash of the configuration (backbone arguments and
        module hyperparameters; the data's identity is added by the ledger)."""
        b = self.backbone
        init = b.init_config() if hasattr(b, "init_config") else {}
        label = self.hparams.arch_name or (b.arch_label() if hasattr(b, "arch_label") else type(b).__name__.lower())
        config = {"backbone": class_path(type(b)), "init_args": init,
                  "module": {k: v for k, v in self.hparams.items() if not k.startswith("_")}}
        blob = json.dumps(config, sort_keys=True, default=str)
        return {"arch": label, "model_class": type(b).__name__, "force_mode": getattr(b, "force_mode", None),
                "loss": self.loss_fn.describe(), "cutoff": getattr(b, "cutoff", None),
                "config_hash": hashlib.sha256(blob.encode()).hexdigest()[:16]}

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.backbone(batch)

    def step_terms(self, backbone: nn.Module, batch: dict, train: bool | None = None) -> dict[str, torch.Tensor]:
        """Everything one step computes for ``batch`` with ``backbone``: predictions and loss terms
        (the compute ledger counts FLOPs by calling this on a reference copy of the backbone).

        ``train`` (default: whether autograd is on, as in the ledger's calibration calls) adds the
        rotation augmentation and the symmetry loss: ``loss = L + λ·symmetry`` with ``symmetry``
        the mean loss of M rotated copies; ``pred`` stays the unrotated-copy prediction."""
        h = self.hparams
        train = torch.is_grad_enabled() if train is None else train
        step, rank = int(self.global_step), int(self.global_rank)
        if train and h.rotation_augmentation:
            batch = random_rotate_batch(batch, rotation_seed(h.rotation_seed, step, rank, stream=0))
        # evaluation with unseen_elements: separate: structures with unseen elements are evaluated
        # (and reported apart), also by a model with per-element parameters (MACE) that refuses them otherwise
        allowed = getattr(backbone, "unseen_elements_allowed", None)
        with allowed() if not train and h.unseen_elements == "separate" and allowed else contextlib.nullcontext():
            pred = backbone(batch)
        terms = self.loss_fn(pred, batch)
        copies = h.symmetry_loss_copies if train else 0
        if copies > 0:
            sym = 0.0
            for m in range(copies):
                rotated = random_rotate_batch(batch, rotation_seed(h.rotation_seed, step, rank, stream=1 + m))
                sym = sym + self.loss_fn(backbone(rotated), rotated)["loss"]
            terms["symmetry"] = sym / copies
            terms["loss"] = terms["loss"] + h.symmetry_loss_weight * terms["symmetry"]
        terms["pred"] = pred
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.step_terms(self.backbone, batch, train=True)
        bs = batch[K.N_STRUCTURES]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        self.log("train/energy_term", terms["energy"], batch_size=bs)
        self.log("train/force_term", terms["forces"], batch_size=bs)
        if "stress" in terms:
            self.log("train/stress_term", terms["stress"], batch_size=bs)
        if "symmetry" in terms:
            self.log("train/symmetry_term", terms["symmetry"], batch_size=bs)
        self.log("train/lr", self._current_lr(), batch_size=bs)
        return terms["loss"]

    def _eval_step(self, batch: dict, metrics: EnergyForceMetrics) -> None:
        terms = self.step_terms(self.backbone, batch, train=False)
        mask = None
        if self.hparams.unseen_elements == "separate":
            known = self.backbone.known_elements
            z = batch[K.ATOMIC_NUMBERS]
            atom_unseen = ~known[z.clamp_max(len(known) - 1)] | (z >= len(known))
            unseen = torch.zeros(batch[K.N_STRUCTURES], dtype=torch.bool, device=z.device)
            unseen = unseen.index_put((batch[K.BATCH],), atom_unseen, accumulate=True)
            mask = ~unseen
            self.unseen_metrics.update(terms["pred"], batch, terms["per_structure"], mask=unseen)
        metrics.update(terms["pred"], batch, terms["per_structure"], mask=mask)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, prefix: str, metrics: EnergyForceMetrics) -> None:
        # compute() already reduced the sums across ranks, so every rank holds the same values and
        # sync_dist's mean leaves them unchanged (it only keeps Lightning's bookkeeping consistent)
        values = metrics.compute()
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items() if k != "loss"}, prog_bar=False,
                      sync_dist=True)
        self.log(f"{prefix}/loss", values["loss"].float(), prog_bar=True, sync_dist=True)  # one name for it
        metrics.reset()
        if self.hparams.unseen_elements == "separate":
            if float(self.unseen_metrics.n_struct) > 0:
                unseen = self.unseen_metrics.compute()
                self.log_dict({f"{prefix}/unseen_elements/{k}": v.float() for k, v in unseen.items()},
                              prog_bar=False, sync_dist=True)
            self.unseen_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scales = None if h.mup_base_width is None else lr_scales(self.backbone, h.mup_base_width)
        return build_optimizer(
            self.backbone, h.optimizer, h.lr, h.weight_decay, tuple(h.betas), h.warmup_steps, total, h.min_lr_ratio,
            lr_scales=scales,
        )

    def _current_lr(self) -> float:
        if self._trainer is None or not self.trainer.optimizers:
            return float(self.hparams.lr)
        group = self.trainer.optimizers[0].param_groups[0]  # η* (μP groups carry lr = η*·lr_scale)
        return float(group.get("scheduled_lr", group["lr"])) / float(group.get("lr_scale", 1.0))

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

    # after a checkpoint is restored: the elements checked are the ones the weights were trained on
    def on_validation_start(self) -> None:
        self._check_elements("val")

    def on_test_start(self) -> None:
        self._check_elements("test")

    def on_predict_start(self) -> None:
        self._check_elements("predict")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """The model's predictions for the batch (energy, per-atom energies, forces; stress where
        the model computes it); ``PredictionWriter`` writes them with their structures."""
        return {k: v.detach() for k, v in self.backbone(batch).items()}

    def on_train_epoch_end(self) -> None:
        self._optimizer_mode(train=False)

    def on_train_end(self) -> None:
        self._optimizer_mode(train=False)

    # ------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Before Lightning loads the weights (``--ckpt_path``: validate, test, predict, resumed fit):
        the backbone, built from the config, adopts what the checkpoint's ``nnip_backbone.init_args``
        resolved from its training data (MACE ``elements: auto``: the trained element list, whatever
        data are given now). A resumed fit then checks that its training data fit those elements."""
        spec = checkpoint.get("nnip_backbone")
        init_args = spec.get("init_args") if isinstance(spec, dict) else None
        if not isinstance(init_args, dict) or not hasattr(self.backbone, "restore_init_args"):
            return
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        source = f"the checkpoint {path}" if path else "the checkpoint"
        before = {id(p) for p in self.backbone.parameters()}
        if self.backbone.restore_init_args(init_args, source=source):
            if trainer is not None and trainer.optimizers:
                raise RuntimeError(
                    f"{source} changed the backbone's parameters (its element list) after the optimizer was "
                    f"built; expected a strategy that restores checkpoints before configure_optimizers"
                )
            self._after_parameters_replaced(before, fresh=False)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if (trainer is not None and trainer.state.fn == "fit" and hasattr(self.backbone, "check_elements")
                and getattr(dm, "statistics", None) is not None):
            self.backbone.check_elements(
                dm.statistics.elements,
                f"the training data of this resumed fit hold them, but {source} has no weights for them; "
                f"expected the training data the checkpoint was trained with (or a new run)")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record how to rebuild the backbone, so a checkpoint loads without its YAML (as plain data:
        ``nnip_scale.checkpoint`` builds it only if the class is a registered model)."""
        init_args = self.backbone.init_config() if hasattr(self.backbone, "init_config") else None
        checkpoint["nnip_backbone"] = {"class_path": class_path(type(self.backbone)), "init_args": init_args}
