"""Training callbacks."""

import math
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from nnip_scale.data import keys as K


class ThroughputLogger(L.Callback):
    """Logs training throughput every ``log_every_n_steps``: structures/s, atoms/s, edges/s, the
    mean step time and the mean data-wait time (time between the end of one step and the start of
    the next). Counts come from the batch's plain-int sizes, so nothing syncs with the device.
    On a GPU the step time is measured on the host; over a logging window of many steps the
    asynchronous queue makes the window average the real rate."""

    def __init__(self):
        self._reset()
        self._last_end: float | None = None

    def _reset(self) -> None:
        self.structures = self.atoms = self.edges = self.steps = 0
        self.step_time = self.wait_time = 0.0
        self._window_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._window_start is None:
            self._window_start = now
        elif self._last_end is not None:
            self.wait_time += now - self._last_end
        self._step_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._last_end = now
        self.step_time += now - self._step_start
        self.steps += 1
        self.structures += batch[K.N_STRUCTURES]
        self.atoms += batch[K.N_ATOMS]
        self.edges += batch[K.N_EDGES]
        if self.steps >= max(1, trainer.log_every_n_steps) and self._window_start is not None:
            elapsed = max(now - self._window_start, 1e-9)
            pl_module.log_dict(
                {
                    "throughput/structures_per_s": self.structures / elapsed,
                    "throughput/atoms_per_s": self.atoms / elapsed,
                    "throughput/edges_per_s": self.edges / elapsed,
                    "throughput/step_time_s": self.step_time / self.steps,
                    "throughput/data_wait_s": self.wait_time / self.steps,
                },
                batch_size=batch[K.N_STRUCTURES],
            )
            self._reset()

    def on_validation_start(self, trainer, pl_module) -> None:
        # validation time is not data wait: restart the window afterwards
        self._reset()
        self._last_end = None


class ValidateAtEnd(L.Callback):
    """Validate after the last training batch of the run, so the learning curve (and the compute
    ledger) ends at the full data budget. Lightning validates every ``val_check_interval`` batches
    only; when that does not divide the epoch, the last batches would otherwise go unmeasured.
    It asks the loop to stop after the final batch (which it does anyway): Lightning then runs
    its end-of-training validation, and a ``ModelCheckpoint`` saves after it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        max_epochs = trainer.max_epochs
        last_epoch = max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs - 1
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if last_step or (last_epoch and last_batch):
            trainer.should_stop = True


class DivergenceGuard(L.Callback):
    """Stop a run whose training loss became NaN or infinite, at once, and say so.

    Every ``check_every`` steps (every step on the CPU, where reading the loss costs nothing; every
    20 steps on an accelerator, where it is a host sync) the loss is read; on a non-finite value
    the trainer stops (all ranks agree under DDP) and ``pl_module.divergence`` records the step and
    the last finite training loss. The compute ledger then marks its row ``status: diverged`` and
    the scaling tools leave the run out of every fit with a warning (a learning rate too high at one
    width must not sink a whole study)."""

    def __init__(self, check_every: int | None = None):
        self.check_every = check_every
        self.last_finite: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.check_every or (1 if pl_module.device.type == "cpu" else 20)
        if trainer.global_step % every and not trainer.is_last_batch:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        bad = not math.isfinite(value)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.last_finite = value
            return
        pl_module.divergence = {"step": int(trainer.global_step), "last_finite_train_loss": self.last_finite}
        trainer.should_stop = True
        rank_zero_warn(f"training diverged at step {trainer.global_step}: the loss is {value} (last finite: "
                       f"{self.last_finite}); the run stops here and is recorded as diverged")
