"""The compute ledger: measured FLOPs, wall-clock and data seen for every run.

One JSON Lines row per validation (the format, its fields and units: ``nnip_scale.ledger_format``;
docs/compute.md), appended and flushed by rank 0; the same figures go to the logger. Totals live in the
callback's ``state_dict`` so a resumed run continues them, and rows written after the step it resumes from are dropped (those
steps are about to be trained again). A checkpoint taken at the end of a training step precedes
that step's validation, which Lightning does not repeat on resume: the ledger keeps that
validation's row and adopts its validation FLOPs and wall-clock, so nothing is lost or counted twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from nnip_scale.data import keys as K
from nnip_scale.ledger_format import LEDGER_FILENAME, truncate, write_row
from nnip_scale.training.flops import StepCostModel, calibrate, reference_copy

_TOTALS = ("train_flops", "val_flops", "structures_seen", "atoms_seen", "edges_seen", "train_steps",
           "step_time_s", "data_wait_s")


def _check_state(state) -> None:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def fail(entry, expected):
        raise ValueError(f"checkpoint: entry callbacks.ComputeLedger.{entry} = {_short(state, entry)}; expected {expected}")

    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: the ComputeLedger state is a {type(state).__name__}; expected a dict")
    totals = state.get("totals")
    if not isinstance(totals, dict) or set(totals) - set(_TOTALS) or not all(number(v) for v in totals.values()):
        fail("totals", f"a dict of numbers with keys among {', '.join(_TOTALS)}")
    for key in ("wall_s", "rows_written"):
        if not number(state.get(key)):
            fail(key, "a number")
    for key in ("run_id", "path"):
        if not (state.get(key) is None or isinstance(state.get(key), str)):
            fail(key, "a string")
    for key in ("train_cost", "eval_cost"):
        cost = state.get(key)
        coef = cost.get("coefficients") if isinstance(cost, dict) else ()
        if not isinstance(cost, dict) or not (coef is None or (isinstance(coef, list) and all(map(number, coef)))):
            fail(key, "{'coefficients': a list of numbers or null, 'max_rel_residual': a number}")


def folder_without_logger(trainer) -> Path:
    """The run folder of a trainer without a logger (``logger: false``): ``<default_root_dir>/runs/
    no_logger/version_<n>``, the first n not yet taken, chosen once per trainer, so the ledger, the
    checkpoints and the saved config of the run land together and never in the bare working directory."""
    folder = getattr(trainer, "_nnip_run_folder", None)
    if folder is None:
        root, n = Path(trainer.default_root_dir) / "runs" / "no_logger", 0
        while (root / f"version_{n}").exists():
            n += 1
        folder = root / f"version_{n}"
        trainer._nnip_run_folder = folder
    return folder


def _short(state, entry) -> str:
    return repr(state.get(entry) if isinstance(state, dict) else state)[:80]


class ComputeLedger(L.Callback):
    """Records FLOPs (measured, see ``nnip_scale.training.flops``), wall-clock, GPU-hours and data
    seen (D in atoms and structures), and writes one ledger row per validation.

    Args:
        path: ledger file; default ``<logger dir>/ledger.jsonl``.
        run_id: default ``<logger name>/version_<n>``.
        arch: architecture label; default the backbone class name in lower case.
    """

    def __init__(self, path: str | None = None, run_id: str | None = None, arch: str | None = None):
        self.path = Path(path) if path else None
        self.run_id = run_id
        self.arch = arch
        self._explicit = {"path": path is not None, "run_id": run_id is not None}
        self.identity: dict = {}
        self.disabled = False
        self._val_counts = [0, 0]  # structures, atoms validated in the current validation (this rank)
        self.totals = {k: 0 for k in _TOTALS}
        self.wall_s = 0.0
        self.rows_written = 0
        self.train_cost = StepCostModel()
        self.eval_cost = StepCostModel()
        self._t_start: float | None = None
        self._wall_at_start = 0.0
        self._last_end: float | None = None
        self._step_start = 0.0
        self._last_row_step = -1

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "totals": dict(self.totals),
            "wall_s": self._wall_now(),
            "rows_written": self.rows_written,
            "train_cost": self.train_cost.state_dict(),
            "eval_cost": self.eval_cost.state_dict(),
            "run_id": self.run_id,
            "path": None if self.path is None else str(self.path),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint: plain numbers and strings only, checked before use. A resumed
        run keeps its run id and, when its folder is still there, continues its ledger file (a
        plain ``fit --ckpt_path`` would otherwise start a new logger version: one run counted as
        two by the bootstrap over runs)."""
        _check_state(state)
        self.totals.update(state["totals"])
        self.wall_s = float(state["wall_s"])
        self.rows_written = int(state["rows_written"])
        self.train_cost = StepCostModel.from_state_dict(state["train_cost"])
        self.eval_cost = StepCostModel.from_state_dict(state["eval_cost"])
        if not self._explicit["run_id"] and state.get("run_id"):
            self.run_id = state["run_id"]
        old_path = state.get("path")
        if not self._explicit["path"] and old_path and Path(old_path) != self.path:
            if Path(old_path).parent.is_dir():
                self.path = Path(old_path)
            else:
                rank_zero_warn(f"resumed run {self.run_id}: its ledger folder {Path(old_path).parent} is gone; "
                               f"its rows continue in {self.path} under the same run id")

    def _wall_now(self) -> float:
        if self._t_start is None:
            return self.wall_s
        return self._wall_at_start + (time.perf_counter() - self._t_start)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer, pl_module, stage: str) -> None:
        # fast_dev_run is a smoke test: it writes no ledger (and Lightning saves no checkpoint)
        self.disabled = bool(trainer.fast_dev_run)
        if self.disabled:
            return
        logger = trainer.logger
        if self.path is None:
            if logger is not None and logger.log_dir:
                self.path = Path(logger.log_dir) / LEDGER_FILENAME
            else:  # no logger: a log directory of our own, never the bare working directory
                folder = folder_without_logger(trainer)
                self.path = folder / LEDGER_FILENAME
                for cb in trainer.checkpoint_callbacks:  # keep the checkpoints beside the ledger
                    if getattr(cb, "dirpath", None) is None:
                        cb.dirpath = str(folder / "checkpoints")
        if self.run_id is None:
            if logger is not None and str(logger.name) and str(logger.version) != "":
                self.run_id = f"{logger.name}/version_{logger.version}"
            else:
                self.run_id = f"{self.path.parent.parent.name}/{self.path.parent.name}"
        identity = pl_module.run_identity() if hasattr(pl_module, "run_identity") else {}
        self.arch = self.arch or identity.get("arch") or type(pl_module.backbone).__name__.lower()
        dm = trainer.datamodule
        dataset = dm.dataset_fingerprint() if hasattr(dm, "dataset_fingerprint") else None
        self.identity = {**identity, "arch": self.arch, "dataset": dataset}
        limit = trainer.limit_val_batches
        whole = limit is None or (isinstance(limit, float) and limit >= 1.0)  # an int counts batches
        if stage == "fit" and not whole:
            rank_zero_warn(
                f"trainer.limit_val_batches={limit}: every validation uses only the first batches of the "
                f"validation split in file order, a biased sample of it; use data.val_subset (a seeded, "
                f"group-stratified subset) instead. The ledger records what was validated (val_set).")

    def on_train_start(self, trainer, pl_module) -> None:
        self._wall_at_start = self.wall_s
        self._t_start = time.perf_counter()
        self._last_end = None
        if trainer.is_global_zero:
            self._truncate_to_step(trainer.global_step, adopt=trainer.world_size == 1)

    def _truncate_to_step(self, step: int, adopt: bool) -> None:
        """Keep the rows of steps <= ``step`` (the restored one); drop later ones and a torn final
        line (``ledger_format.truncate``: atomic rewrite, with a warning for the torn line). With
        ``adopt``, a kept row of this very step (its validation ran after the checkpoint was taken)
        lends the state its validation FLOPs and wall-clock."""
        if self.path is None:
            return
        rows = truncate(self.path, lambda row: row["step"] <= step)
        if rows:
            self._last_row_step = rows[-1]["step"]
            self.rows_written = len(rows)
            if adopt and rows[-1]["step"] == step:
                self.totals["val_flops"] = max(self.totals["val_flops"], rows[-1]["val_flops"])
                self._wall_at_start = max(self._wall_at_start, rows[-1]["wall_s"])

    # ------------------------------------------------------------------ counting
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.totals["data_wait_s"] += now - self._last_end
        if not self.train_cost.calibrated:
            twin = reference_copy(pl_module.backbone)

            def train_step(b):
                pl_module.step_terms(twin, b)["loss"].backward()

            self.train_cost = calibrate(train_step, [batch])
            twin.zero_grad(set_to_none=True)
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.totals["step_time_s"] += now - self._step_start
        self._last_end = now
        t = self.totals
        t["train_flops"] += self.train_cost(batch[K.N_EDGES], batch[K.N_ATOMS], batch[K.N_STRUCTURES])
        t["structures_seen"] += batch[K.N_STRUCTURES]
        t["atoms_seen"] += batch[K.N_ATOMS]
        t["edges_seen"] += batch[K.N_EDGES]
        t["train_steps"] += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_counts = [0, 0]

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self._val_counts[0] += batch[K.N_STRUCTURES]
        self._val_counts[1] += batch[K.N_ATOMS]
        if not self.eval_cost.calibrated:
            twin = reference_copy(pl_module.backbone).eval()

            def eval_step(b):
                with torch.no_grad():
                    pl_module.step_terms(twin, b)

            self.eval_cost = calibrate(eval_step, [batch])
        self.totals["val_flops"] += self.eval_cost(batch[K.N_EDGES], batch[K.N_ATOMS], batch[K.N_STRUCTURES])

    # ------------------------------------------------------------------ rows
    def on_validation_end(self, trainer, pl_module) -> None:
        if (self.disabled or trainer.sanity_checking or trainer.state.fn != "fit"
                or trainer.global_step <= self._last_row_step):
            return
        keys = [*_TOTALS, "val_structures", "val_atoms"]
        local = torch.tensor([float(self.totals[k]) for k in _TOTALS] + [float(c) for c in self._val_counts],
                             dtype=torch.float64, device=pl_module.device)
        summed = trainer.strategy.reduce(local, reduce_op="sum") if trainer.world_size > 1 else local
        totals = dict(zip(keys, summed.tolist()))
        validated = {"val_structures": int(totals["val_structures"]), "val_atoms": int(totals["val_atoms"])}
        dm = trainer.datamodule
        if hasattr(dm, "validation_identity"):
            validated = {**dm.validation_identity(validated["val_structures"]), **validated}
        wall = self._wall_now()
        devices = trainer.world_size
        metrics = trainer.callback_metrics
        counts = pl_module.backbone.count_parameters() if hasattr(pl_module.backbone, "count_parameters") else {}

        def metric(name):
            v = metrics.get(name)
            return None if v is None else float(v)

        accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
        row = {
            "run_id": self.run_id,
            **self.identity,
            "width": getattr(pl_module.backbone, "width", None),
            "depth": getattr(pl_module.backbone, "depth", None),
            "n_params": counts.get("n_params"),
            "n_params_total": counts.get("n_params_total"),
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "structures_seen": int(totals["structures_seen"]),
            "atoms_seen": int(totals["atoms_seen"]),
            "edges_seen": int(totals["edges_seen"]),
            "flops": totals["train_flops"],
            "val_flops": totals["val_flops"],
            "wall_s": wall,
            "train_step_s": totals["step_time_s"] / devices,
            "data_wait_s": totals["data_wait_s"] / devices,
            "devices": devices,
            "accelerator": accelerator,
            # wall-clock × devices: GPU-hours on GPU runs, CPU-process-hours on CPU runs
            "device_hours": wall * devices / 3600.0,
            **({"gpu_hours": wall * devices / 3600.0} if accelerator == "cuda" else {}),
            **validated,
            "val_loss": metric("val/loss"),
            "val_energy_mae_per_atom": metric("val/energy_mae_per_atom"),
            "val_force_mae": metric("val/force_mae"),
            "val_force_cos": metric("val/force_cos"),
            **({"val_stress_mae": metric("val/stress_mae"), "val_stress_mae_gpa": metric("val/stress_mae_gpa")}
               if "val/stress_mae" in metrics else {}),
            "flops_fit_residual": self.train_cost.max_rel_residual,
            # a run whose training loss went non-finite: the scaling tools leave it out of every fit
            **({"status": "diverged", "diverged_at_step": pl_module.divergence["step"],
                "last_finite_train_loss": pl_module.divergence["last_finite_train_loss"]}
               if getattr(pl_module, "divergence", None) else {}),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.rows_written += 1
        self._last_row_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = write_row(self.path, row)
        if trainer.logger is not None:
            scalars = {f"compute/{k}": float(row[k]) for k in
                       ("flops", "val_flops", "wall_s", "device_hours", "atoms_seen", "structures_seen")}
            trainer.logger.log_metrics(scalars, step=trainer.global_step)
            experiment = getattr(trainer.logger, "experiment", None)
            if row["val_loss"] is not None and hasattr(experiment, "add_scalar"):
                # loss against compute: the x axis of this tag is training GFLOPs
                experiment.add_scalar("val_loss_vs_compute/gflops", row["val_loss"], int(row["flops"] / 1e9))
