"""What a study will cost, before it runs: ``nnip-scale study --config FILE --plan --estimate``.

Per run and in total: the training and validation FLOPs the compute ledger will record, the wall
time it will record (``wall_s``) on this machine's device, and device-hours. Nothing is assumed:

- **FLOPs**: each architecture at each width is built exactly as its run builds it (the run's
  composed ``nnip-scale fit`` arguments, parsed by LightningCLI without training) and the ledger's
  cost model ``a·edges + b·atoms + c·structures + d`` (``nnip_scale.training.flops``) is calibrated
  on real batches of the run's own data module: the training step (forward, loss, backward) on the
  first training batches, the evaluation step on the first validation batch. A run's training
  FLOPs are then the model summed over the batches it will see: a·E + b·A + c·S + d·(batches),
  with A and S the atoms and structures of its nested subset and E its edges (neighbour lists
  counted, exactly up to ``EXACT_EDGES_MAX`` structures, else A × a sample's edges per atom), times
  the epochs, and the batches its sampler will make.
  Validation FLOPs likewise, over the validation split, times the number of validations Lightning
  will run (``val_check_interval`` and the validation after the last batch).
- **Wall time**: a throughput probe trains each (architecture, width) for a few real steps with the
  run's own trainer, callbacks and logger (redirected to a temporary folder) on this machine's
  device (same data loading; on the CPU the threads each run gets with the study's ``parallel``),
  after a warm-up step, and validates once on up to ``PROBE_VAL_BATCHES`` batches. A step's time
  (data wait included) scales with its batch's work, so the median over the timed steps of seconds
  per training FLOP × the run's training FLOPs, + its validations (the probe's seconds per
  validation FLOP × their FLOPs, + the checkpoint after each) + the one-off costs the run pays (the
  ledger's FLOP calibration, the first step's excess over the median) estimates the run's ledger
  ``wall_s``. On a CPU shared with other work, the busy cores measured during the probe scale it
  (:func:`load_factor`).

Probes are cached per (architecture, width): a grid with many budgets and seeds probes each model
once. The result is printed as a table and written to ``<study folder>/plan.json`` (atomically).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import torch

from nnip_scale.atomic_io import atomic_write_json
from nnip_scale.data import keys as K
from nnip_scale.study.plan import RunSpec, Study, StudyError
from nnip_scale.study.runner import is_done, ledger_rows

#: at most this many validation batches are timed by the probe (the time is scaled to the split)
PROBE_VAL_BATCHES = 8
#: edges are counted exactly (neighbour lists of every structure: ~0.2 s per 4,000 molecules) up to
#: this many structures; beyond, from a seeded sample of this many (edges per atom × atoms)
EXACT_EDGES_MAX = 50_000


def count_edges(ds, cutoff: float, max_structures: int = EXACT_EDGES_MAX, seed: int = 0) -> tuple[float, float]:
    """Edges (directed neighbour pairs within ``cutoff``) of the structures of ``ds``, an
    :class:`AtomsDataset`, and the edges per atom: counted exactly when it holds at most
    ``max_structures`` structures, else estimated from a seeded sample of that many structures."""
    import numpy as np

    from nnip_scale.data.neighbors import neighbor_list

    d = ds.data
    offsets = np.asarray(d.atom_offsets)
    indices = np.asarray(ds.indices, dtype=np.int64)
    sample = indices
    if len(indices) > max_structures:
        sample = np.random.default_rng(seed).choice(indices, max_structures, replace=False)
    n_edges = n_atoms = 0
    for i in sample.tolist():
        a, b = int(offsets[i]), int(offsets[i + 1])
        ei, _ = neighbor_list(np.asarray(d.positions[a:b]), np.asarray(d.cell[i]), np.asarray(d.pbc[i]), cutoff)
        n_edges += ei.shape[1]
        n_atoms += b - a
    per_atom = n_edges / max(n_atoms, 1)
    total = float(n_edges) if len(sample) == len(indices) else float(per_atom * ds.n_atoms)
    return total, float(per_atom)


@dataclass
class ModelProbe:
    """What one (architecture, width) costs: its calibrated FLOP models and measured times."""

    arch: str
    width: int
    n_params: int
    train_cost: list[float]                 # a, b, c, d of a training step (FLOPs)
    eval_cost: list[float]                  # the same for a validation step
    calibration_residual: float             # max relative residual of the training cost model
    calibration_s: float = 0.0              # what the run's ledger spends calibrating (both models)
    step_s: float | None = None             # median wall of one training step (data wait included)
    step_s_all: list[float] = field(default_factory=list)
    step_cpu_s: float | None = None         # median process CPU time of those steps (CPU share = cpu / wall)
    s_per_train_flop: float | None = None   # median over the timed steps of step time / the batch's FLOPs
    s_per_val_flop: float | None = None     # the validation's time / its FLOPs
    first_step_extra_s: float | None = None  # the warm-up steps' excess over the median
    val_batch_s: float | None = None        # wall of one validation, per validation batch
    val_batches_timed: int = 0
    after_val_s: float = 0.0                # after a validation: checkpoint, ledger row
    startup_s: float | None = None          # building the run and setting up the fit (not in wall_s)
    probe_s: float = 0.0                    # what probing this model took here
    data_key: str = ""


@dataclass
class DataFacts:
    """What a run's data module feeds it per epoch (training) and per validation."""

    steps: int            # training batches over all epochs
    atoms: int
    structures: int
    edges: float          # counted (exact up to EXACT_EDGES_MAX structures, else atoms × a sample's edges per atom)
    edges_per_atom: float
    val_batches: int
    val_atoms: int
    val_structures: int
    val_edges: float
    validations: int


def _quiet():
    """Silence Lightning's and the module's chatter (and their warnings) while probing."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    err = io.StringIO()
    stack.enter_context(contextlib.redirect_stderr(err))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        old = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, old)
    return stack, err


def _build(study: Study, run: RunSpec, extra: list[str]):
    """The LightningCLI of ``run`` (its composed arguments plus ``extra``), instantiated, not run."""
    from nnip_scale.training.lightning_cli import build_cli

    stack, err = _quiet()
    try:
        with stack:
            return build_cli(list(run.cost_args()) + extra, run=False)
    except SystemExit as exc:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("nnip-scale")), lines[-1] if lines else f"exit {exc.code}")
        raise StudyError(f"{study.path}: estimate: the runs of '{run.arch.name}' at width {run.width} would fail: "
                         f"{first.split('error: ', 1)[-1]}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to build is the user's config, said in one line
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise StudyError(f"{study.path}: estimate: the runs of '{run.arch.name}' at width {run.width} would fail: "
                         f"{msg}") from None


def _data_key(dm) -> str:
    """The data module's arguments other than the nested subset (what differs between runs)."""
    hp = {k: v for k, v in dict(dm.hparams).items() if not str(k).startswith("_")
          and k not in ("subset_atoms", "subset_fraction", "subset_seed", "subset")}
    return json.dumps(hp, sort_keys=True, default=str)


def _data_args(dm) -> dict:
    return {k: v for k, v in dict(dm.hparams).items() if not str(k).startswith("_")}


class _ProbeTimer(L.Callback):
    """Host wall-clock (device-synchronised) and process CPU time at every training batch start,
    around the validation, and at the end of the fit."""

    def __init__(self):
        self.batch_starts: list[tuple[float, float]] = []  # (wall, CPU)
        self.batch_sizes: list[tuple[int, int, int]] = []  # (edges, atoms, structures)
        self.train_start: float | None = None
        self.val_start: float | None = None
        self.val_end: float | None = None
        self.val_batches = 0
        self.val_sizes = [0, 0, 0]  # edges, atoms, structures of the validated batches
        self.train_end: float | None = None

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_start = self._now(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_starts.append((self._now(pl_module), time.process_time()))
        self.batch_sizes.append((int(batch[K.N_EDGES]), int(batch[K.N_ATOMS]), int(batch[K.N_STRUCTURES])))

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.val_start is None:
            self.val_start = self._now(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.val_end is None and not trainer.sanity_checking:
            self.val_batches += 1
            for k, key in enumerate((K.N_EDGES, K.N_ATOMS, K.N_STRUCTURES)):
                self.val_sizes[k] += int(batch[key])

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.val_end is None:
            self.val_end = self._now(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_end = self._now(pl_module)


def _calibrate(module, dm, batches: int):
    """The ledger's two cost models for ``module`` on the first ``batches`` training batches and the
    first validation batch of ``dm`` (counted on a ``torch``-backend copy, as the ledger does), and
    the seconds the run's ledger will spend on its own one-batch calibrations."""
    from nnip_scale.training.flops import calibrate, reference_copy

    train_batches = [b for _, b in zip(range(batches), dm.train_dataloader())]
    val_batch = next(iter(dm.val_dataloader()))
    twin = reference_copy(module.backbone)

    def train_step(b):
        module.step_terms(twin, b)["loss"].backward()

    t0 = time.perf_counter()
    train_cost = calibrate(train_step, train_batches)
    t_train = (time.perf_counter() - t0) / len(train_batches)
    twin.zero_grad(set_to_none=True)
    twin.eval()

    def eval_step(b):
        with torch.no_grad():
            module.step_terms(twin, b)

    t0 = time.perf_counter()
    eval_cost = calibrate(eval_step, [val_batch])
    t_eval = time.perf_counter() - t0
    return train_cost, eval_cost, t_train + t_eval


def _arg(args, key: str):
    """The last value given to ``--key=...`` in a run's composed arguments (None if absent)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{key}=")]
    return values[-1] if values else None


def _val_schedule(run: RunSpec) -> tuple:
    """The run's ``val_check_interval`` (a float: a fraction of the epoch; an int: batches) and
    ``check_val_every_n_epoch``, as its arguments set them (the study always sets both)."""
    args = run.cost_args()
    interval, every = _arg(args, "trainer.val_check_interval"), _arg(args, "trainer.check_val_every_n_epoch")
    interval = 1.0 if interval is None else (int(interval) if interval.lstrip("-").isdigit() else float(interval))
    every = 1 if every is None else (None if every in ("null", "None") else int(every))
    return interval, every


def _validations(steps_per_epoch: list[int], interval, every_n_epochs) -> int:
    """How many validations Lightning runs in a study run (``check_val_every_n_epoch`` epochs, at
    every ``val_check_batch``-th batch of an epoch), plus ``ValidateAtEnd``'s after the last batch
    when that batch is not already one."""
    n_val = 0
    last_was_val = False
    for epoch, n in enumerate(steps_per_epoch):
        if n < 1:
            continue
        if every_n_epochs is not None and (epoch + 1) % int(every_n_epochs) != 0:
            last_was_val = False
            continue
        vcb = int(interval) if isinstance(interval, int) else max(1, int(n * float(interval)))
        n_val += n // vcb
        last_was_val = n % vcb == 0
    return n_val + (0 if last_was_val else 1)


class Estimator:
    """Calibrates and probes each (architecture, width) of a study once and estimates its runs."""

    def __init__(self, study: Study, probe: bool = True, steps: int = 5, warmup: int = 1,
                 calibration_batches: int = 2, accelerator: str = "cpu", threads: int | None = None):
        if steps < 1 or warmup < 1:
            raise StudyError(f"{study.path}: estimate: --probe-steps must be >= 1 (after 1 warm-up step)")
        self.study, self.probe, self.steps, self.warmup = study, probe, steps, warmup
        self.calibration_batches = calibration_batches
        self.accelerator = accelerator
        self.threads = threads
        self.models: dict[tuple[str, int], ModelProbe] = {}
        self.data: dict[tuple[str, int, int], DataFacts] = {}
        self._dm_args: dict[str, dict] = {}          # data key -> data module arguments
        self._val: dict[str, tuple] = {}              # data key -> validation facts

    # ------------------------------------------------------------------ per model
    def model(self, run: RunSpec) -> ModelProbe:
        key = (run.arch.name, run.width)
        if key not in self.models:
            self.models[key] = probe_model(self, run)
        return self.models[key]

    # ------------------------------------------------------------------ per data subset
    def _val_facts(self, data_key: str, dm) -> tuple:
        if data_key not in self._val:
            ds = dm.val_dataset
            edges, _ = count_edges(ds, dm.cutoff)
            self._val[data_key] = (len(dm.val_dataloader()), int(ds.n_atoms), len(ds), edges)
        return self._val[data_key]

    def data_facts(self, run: RunSpec, dm=None) -> DataFacts:
        probe = self.model(run)
        # an atom budget or a fraction of the training atoms (resolved into atoms when the data loads)
        key = (probe.data_key, run.budget_atoms, run.budget_fraction, run.seed)
        if key not in self.data:
            from nnip_scale.data import AtomsDataModule

            if dm is None:
                dm = AtomsDataModule(**{**self._dm_args[probe.data_key], **run.subset_args()})
            try:
                dm.setup("fit")
                edges, edges_per_atom = count_edges(dm.train_dataset, dm.cutoff)
                loader = dm.train_dataloader()
                sampler = loader.batch_sampler
                per_epoch = []
                for epoch in range(run.epochs):
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epoch)
                    per_epoch.append(len(sampler))
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(0)
                val = self._val_facts(probe.data_key, dm)
            except (ValueError, OSError) as err:
                raise StudyError(f"{self.study.path}: estimate: the data of {run.run_id}: "
                                 f"{' '.join(str(err).split())}") from None
            interval, every = _val_schedule(run)
            atoms, structures = int(dm.n_train_atoms), int(dm.n_train_structures)
            self.data[key] = DataFacts(
                steps=sum(per_epoch), atoms=atoms * run.epochs, structures=structures * run.epochs,
                edges=edges * run.epochs, edges_per_atom=edges_per_atom,
                val_batches=val[0], val_atoms=val[1], val_structures=val[2], val_edges=val[3],
                validations=_validations(per_epoch, interval, every))
        return self.data[key]

    # ------------------------------------------------------------------ per run
    def run_estimate(self, run: RunSpec) -> dict:
        m = self.model(run)
        d = self.data_facts(run)
        a, b, c, e = m.train_cost
        train_flops = a * d.edges + b * d.atoms + c * d.structures + e * d.steps
        a, b, c, e = m.eval_cost
        per_val = a * d.val_edges + b * d.val_atoms + c * d.val_structures + e * d.val_batches
        out = {
            # a fraction run's atom budget is its subset's atoms, known now that the data is loaded
            "run_id": run.run_id, "arch": run.arch.name, "width": run.width,
            "budget_atoms": run.budget_atoms if run.budget_fraction is None else d.atoms // run.epochs,
            "budget_fraction": run.budget_fraction, "epochs": run.epochs, "seed": run.seed, "sweep": run.sweep,
            "state": _state(run), "n_params": m.n_params,
            "steps": d.steps, "atoms": d.atoms, "structures": d.structures, "edges": round(d.edges),
            "edges_per_atom": d.edges_per_atom, "validations": d.validations, "val_batches": d.val_batches,
            "train_flops": train_flops, "val_flops": per_val * d.validations,
            "wall_s": None, "device_hours": None, "startup_s": m.startup_s,
        }
        if m.step_s is not None:
            per_val_s = (per_val * m.s_per_val_flop if m.s_per_val_flop is not None
                         else d.val_batches * (m.val_batch_s or 0.0))
            wall = (train_flops * m.s_per_train_flop + (m.first_step_extra_s or 0.0) + m.calibration_s
                    + d.validations * (per_val_s + m.after_val_s))
            out["wall_s"] = wall
            out["device_hours"] = wall / 3600.0  # one device per run, the ledger's wall_s × devices / 3600
        rows = ledger_rows(run)
        if rows:
            last = rows[-1]
            out["measured"] = {k: last.get(k) for k in ("step", "flops", "val_flops", "wall_s", "device_hours",
                                                        "atoms_seen", "edges_seen", "status") if k in last}
        return out


def _state(run: RunSpec) -> str:
    return "done" if is_done(run) else ("partial" if (run.folder / "checkpoints" / "last.ckpt").exists() else "todo")


def probe_model(est: Estimator, run: RunSpec) -> ModelProbe:
    """Build ``run``'s model and data exactly as the run does, calibrate its FLOP cost models and
    (unless ``est.probe`` is off) time a few real training steps and one validation with the run's
    trainer settings, writing nothing outside a temporary folder."""
    t_all = time.perf_counter()
    n_steps = est.warmup + est.steps + 1  # the step after the last timed one closes its interval
    with tempfile.TemporaryDirectory(prefix="nnip-probe-") as tmp:
        # the run's own trainer, callbacks and logger, writing to the temporary folder instead of
        # the run's: a short fit that validates once, after the timed steps, on a few batches
        extra = [f"--trainer.accelerator={est.accelerator}", "--trainer.devices=1", "--trainer.num_nodes=1",
                 "--trainer.strategy=auto", f"--trainer.default_root_dir={tmp}",
                 f"--trainer.logger.init_args.save_dir={tmp}", f"--trainer.max_steps={n_steps}",
                 "--trainer.max_epochs=-1", "--trainer.max_time=null", f"--trainer.val_check_interval={n_steps}",
                 "--trainer.check_val_every_n_epoch=null", f"--trainer.limit_val_batches={PROBE_VAL_BATCHES}",
                 "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false"]
        t0 = time.perf_counter()
        cli = _build(est.study, run, extra)
        build_s = time.perf_counter() - t0
        module, dm = cli.model, cli.datamodule
        data_key = _data_key(dm)
        est._dm_args.setdefault(data_key, _data_args(dm))
        try:
            stack, _ = _quiet()
            with stack:
                dm.setup("fit")
                module.backbone.set_statistics(dm.statistics)
                train_cost, eval_cost, calib_s = _calibrate(module, dm, est.calibration_batches)
        except (ValueError, OSError, RuntimeError) as err:
            raise StudyError(f"{est.study.path}: estimate: calibrating '{run.arch.name}' at width {run.width} "
                             f"failed: {' '.join(str(err).split())}") from None
        probe = ModelProbe(run.arch.name, run.width, int(module.backbone.count_parameters()["n_params"]),
                           train_cost.coefficients.tolist(), eval_cost.coefficients.tolist(),
                           train_cost.max_rel_residual, calibration_s=calib_s, data_key=data_key)
        est.models[(run.arch.name, run.width)] = probe  # data_facts below needs it
        est.data_facts(run, dm)  # the probed run's own subset: its data module is already set up
        if est.probe:
            _time_steps(est, run, cli, probe, train_cost, eval_cost, tmp, build_s)
    probe.probe_s = time.perf_counter() - t_all
    return probe


def _time_steps(est: Estimator, run: RunSpec, cli, probe: ModelProbe, train_cost, eval_cost, tmp: str,
                build_s: float) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from nnip_scale.training import ComputeLedger

    ledgers = [cb for cb in cli.trainer.callbacks if isinstance(cb, ComputeLedger)]
    if not ledgers:  # the module would attach one: attach it here, to hand it the cost models
        ledgers = [ComputeLedger(arch=run.arch.name)]
        cli.trainer.callbacks.append(ledgers[0])
    for cb in cli.trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(Path(tmp) / "checkpoints")
    for ledger in ledgers:
        # pre-calibrated: the calibration's cost was timed above and is added to the run once
        ledger.path = Path(tmp) / "ledger.jsonl"
        ledger.train_cost, ledger.eval_cost = train_cost, eval_cost
    timer = _ProbeTimer()
    cli.trainer.callbacks.insert(0, timer)
    t_fit = time.perf_counter()
    try:
        stack, _ = _quiet()
        with stack:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except Exception as err:  # noqa: BLE001 - out of memory, a kernel error: the model cannot run here
        raise StudyError(f"{est.study.path}: estimate: the throughput probe of '{run.arch.name}' at width "
                         f"{run.width} failed: {' '.join(str(err).split()) or type(err).__name__}") from None
    starts = timer.batch_starts
    walls = [b[0] - a[0] for a, b in zip(starts, starts[1:])]
    cpus = [b[1] - a[1] for a, b in zip(starts, starts[1:])]
    timed = walls[est.warmup:]
    if not timed:
        raise StudyError(f"{est.study.path}: estimate: the throughput probe of '{run.arch.name}' at width "
                         f"{run.width} stopped after {len(starts)} step(s) (diverged?); expected "
                         f"{est.warmup + est.steps + 1}")
    probe.step_s = statistics.median(timed)
    probe.step_s_all = timed
    probe.step_cpu_s = statistics.median(cpus[est.warmup:])
    probe.first_step_extra_s = max(0.0, sum(walls[:est.warmup]) - est.warmup * probe.step_s)
    # a step's time scales with its batch's work: the median seconds per training FLOP, applied to
    # the run's batches, is not thrown by a few timed batches smaller or larger than the average
    flops = [train_cost(*size) for size in timer.batch_sizes[est.warmup:est.warmup + len(timed)]]
    probe.s_per_train_flop = statistics.median(t / max(f, 1.0) for t, f in zip(timed, flops))
    if timer.val_start is not None and timer.val_end is not None and timer.val_batches > 0:
        val_s = timer.val_end - timer.val_start
        probe.val_batch_s = val_s / timer.val_batches
        probe.val_batches_timed = timer.val_batches
        e, n, st = timer.val_sizes
        a, b, c, d = eval_cost.coefficients
        probe.s_per_val_flop = val_s / max(a * e + b * n + c * st + d * timer.val_batches, 1.0)
        # after each validation: the checkpoint, the ledger row, the logger
        probe.after_val_s = max(0.0, (timer.train_end or timer.val_end) - timer.val_end)
    # before wall_s starts: building the run, setting up the fit (data, statistics); and the
    # sanity check's 2 validation batches the run does but the probe skips
    setup_s = (timer.train_start - t_fit) if timer.train_start else 0.0
    probe.startup_s = build_s + setup_s + 2 * (probe.val_batch_s or 0.0)
    if cli.model.device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the plan
def estimate_study(study: Study, *, probe: bool = True, steps: int = 5, warmup: int = 1,
                   calibration_batches: int = 2, accelerator: str = "cpu", parallel: int | None = None,
                   log=print) -> dict:
    """Estimate every run of ``study`` (see the module docstring); returns the plan as a dict
    (what ``plan.json`` holds). ``parallel``: runs at once on this machine (CPU threads per run =
    cores // parallel, as the study runner gives them)."""
    parallel = max(1, parallel or study.parallel)
    threads = max(1, (os.cpu_count() or 1) // parallel) if accelerator == "cpu" else None
    est = Estimator(study, probe=probe, steps=steps, warmup=warmup, calibration_batches=calibration_batches,
                    accelerator=accelerator, threads=threads)
    t0 = time.perf_counter()
    all_runs = study.all_runs  # the LR sweep's runs cost too
    keys = list(dict.fromkeys((r.arch.name, r.width) for r in all_runs))
    busy0, own0 = _busy_cpu_s(), _own_cpu_s()  # other work on this machine, measured over the probe
    old_threads = torch.get_num_threads()
    if threads:  # every run gets cores // parallel threads (the study runner's split): so does the probe
        torch.set_num_threads(threads)
    try:
        for k, (arch, width) in enumerate(keys):
            run = next(r for r in all_runs if (r.arch.name, r.width) == (arch, width))
            m = est.model(run)
            what = (f"step {_fmt_s(m.step_s)}, validation batch {_fmt_s(m.val_batch_s)}" if m.step_s is not None
                    else "FLOPs only")
            log(f"[estimate] {k + 1}/{len(keys)} {arch} width {width}: N={m.n_params:,}, {what} "
                f"({m.probe_s:.1f} s)")
        busy1, own1 = _busy_cpu_s(), _own_cpu_s()
        probe_s = time.perf_counter() - t0
        runs = [est.run_estimate(r) for r in all_runs]
    finally:
        torch.set_num_threads(old_threads)
    device = _device(accelerator, threads)
    if threads and probe:
        cores = _cores()
        other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / probe_s
        factor, available = load_factor(other, cores, threads, min(parallel, len(all_runs)))
        shares = [min(1.0, m.step_cpu_s / m.step_s / threads) for m in est.models.values()
                  if m.step_s and m.step_cpu_s is not None]
        device.update({"cores": cores, "other_busy_cores": other, "available_cores": available,
                       "cpu_threads_wanted": min(parallel, len(all_runs)) * threads, "load_factor": factor,
                       "probe_cpu_share": statistics.median(shares) if shares else None})
        for r in runs:  # the probe ran alone; the runs will share the cores with each other and that work
            r["wall_s_alone"] = r["wall_s"]
            r["wall_s"] *= factor
            r["device_hours"] *= factor
    totals = _totals(runs, parallel)
    return {
        "study": study.name, "config": str(study.path), "folder": str(study.folder),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device, "parallel": parallel,
        "probe": {"seconds": probe_s, "timed_steps": steps if probe else 0, "warmup_steps": warmup,
                  "calibration_batches": calibration_batches,
                  "models": [{k: v for k, v in asdict(m).items() if k != "data_key"} for m in est.models.values()]},
        "runs": runs, "totals": totals,
        "notes": ("wall_s and device_hours estimate the ledger's wall_s (from the first training step to the "
                  "last validation) on this device with one device per run; startup_s (building the run, "
                  "data setup, the sanity check) is outside it. FLOPs follow the ledger's convention "
                  "(docs/compute.md)."),
    }


def _busy_cpu_s() -> float | None:
    """Busy CPU-seconds of the whole machine so far (all cores; Linux ``/proc/stat``), else None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_factor(other_busy: float | None, cores: int, threads: int, parallel: int) -> tuple[float, float | None]:
    """How much slower each run steps when ``parallel`` runs of ``threads`` threads share the
    machine with the other work seen during the probe than the probe itself did (it ran alone):
    with A = cores − other work's busy cores, a run gets min(1, A / (parallel·threads)) of its
    threads, the probe got min(1, A / threads). Returns (factor, A); (1, None) when unmeasured."""
    if other_busy is None:
        return 1.0, None
    available = max(cores - other_busy, 0.1 * cores)
    return min(1.0, available / threads) / min(1.0, available / (parallel * threads)), available


def _device(accelerator: str, threads: int | None) -> dict:
    if accelerator == "cpu":
        return {"accelerator": "cpu", "name": "cpu", "threads_per_run": threads, "cores": os.cpu_count()}
    return {"accelerator": "cuda", "name": torch.cuda.get_device_name(0), "devices_per_run": 1}


def _totals(runs: list[dict], parallel: int) -> dict:
    def total(rs, key):
        values = [r[key] for r in rs]
        return None if any(v is None for v in values) else float(sum(values))

    todo = [r for r in runs if r["state"] != "done"]
    out = {"runs": len(runs), "train_flops": total(runs, "train_flops"), "val_flops": total(runs, "val_flops"),
           "wall_s": total(runs, "wall_s"), "device_hours": total(runs, "device_hours"),
           "remaining_runs": len(todo), "remaining_train_flops": total(todo, "train_flops"),
           "remaining_wall_s": total(todo, "wall_s"), "remaining_device_hours": total(todo, "device_hours")}
    if out["wall_s"] is not None:
        startup = sum(r["startup_s"] or 0.0 for r in runs)
        out["study_wall_s"] = (out["wall_s"] + startup) / parallel
        rem_startup = sum(r["startup_s"] or 0.0 for r in todo)
        out["remaining_study_wall_s"] = (out["remaining_wall_s"] + rem_startup) / parallel
    return out


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{1000 * s:.0f} ms" if s >= 0.01 else f"{1000 * s:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_flops(f: float | None) -> str:
    return "—" if f is None else f"{f:.3g}"


def format_plan(plan: dict) -> str:
    """The plan as a table (one row per run) and its totals."""
    hours = "GPU-h" if plan["device"]["accelerator"] == "cuda" else "CPU-h"
    head = ("run", "state", "N", "steps", "train FLOPs", "val FLOPs", "est. wall", hours)
    rows = [(r["run_id"], r["state"], f"{r['n_params']:,}", str(r["steps"]), _fmt_flops(r["train_flops"]),
             _fmt_flops(r["val_flops"]), _fmt_s(r["wall_s"]),
             "—" if r["device_hours"] is None else f"{r['device_hours']:.3g}") for r in plan["runs"]]
    t = plan["totals"]
    rows.append(("total", f"{t['runs']} runs", "", str(sum(r["steps"] for r in plan["runs"])),
                 _fmt_flops(t["train_flops"]), _fmt_flops(t["val_flops"]), _fmt_s(t["wall_s"]),
                 "—" if t["device_hours"] is None else f"{t['device_hours']:.3g}"))
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)]
    align = ["<", "<", ">", ">", ">", ">", ">", ">"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows[:-1]), line(["-" * w for w in widths]),
           line(rows[-1])]
    dev = plan["device"]
    where = (f"{dev['name']}, {dev['threads_per_run']} thread(s) per run" if dev["accelerator"] == "cpu"
             else f"{dev['name']}, one GPU per run")
    if t["wall_s"] is not None:
        out.append(f"study wall ≈ {_fmt_s(t['study_wall_s'])} at {plan['parallel']} run(s) at once on {where} "
                   f"(Σ est. wall + per-run start-up, ÷ {plan['parallel']})")
        if 0 < t["remaining_runs"] < t["runs"]:
            out.append(f"still to run: {t['remaining_runs']} of {t['runs']} runs, "
                       f"{_fmt_flops(t['remaining_train_flops'])} training FLOPs, {_fmt_s(t['remaining_wall_s'])} "
                       f"of run wall, {t['remaining_device_hours']:.3g} {hours}, study wall ≈ "
                       f"{_fmt_s(t['remaining_study_wall_s'])}")
    measured = [(r["train_flops"] / r["measured"]["flops"],
                 None if r["wall_s"] is None or not r["measured"].get("wall_s") else r["wall_s"] / r["measured"]["wall_s"])
                for r in plan["runs"] if r.get("measured", {}).get("flops")
                and r["measured"].get("step") == r["steps"]]  # finished runs of the same length
    if measured:
        f = sorted(m[0] for m in measured)
        w = sorted(m[1] for m in measured if m[1] is not None)
        msg = (f"check against the {len(measured)} finished run(s) with ledgers: estimate / measured training FLOPs "
               f"{statistics.median(f):.3f} (range {f[0]:.3f}–{f[-1]:.3f})")
        if w:
            msg += f", wall {statistics.median(w):.2f} (range {w[0]:.2f}–{w[-1]:.2f})"
        out.append(msg)
    if dev.get("other_busy_cores") is not None and abs(dev["load_factor"] - 1.0) > 0.05:
        alone = sum(r["wall_s_alone"] for r in plan["runs"])
        out.append(f"note: other work kept {dev['other_busy_cores']:.1f} of this machine's {dev['cores']} cores busy "
                   f"during the probe; {plan['parallel']} run(s) × {dev['threads_per_run']} thread(s) at once then "
                   f"share {dev['available_cores']:.1f} core(s): est. wall × {dev['load_factor']:.2f} (Σ "
                   f"{_fmt_s(alone)} with the cores to themselves); the estimate moves with that load")
    p = plan["probe"]
    n = len(p["models"])
    how = (f"{p['timed_steps']} timed training steps after {p['warmup_steps']} warm-up and one validation each"
           if p["timed_steps"] else "FLOP calibration only (--no-probe: no wall-time estimate)")
    out.append(f"probe: {n} model(s) (architecture × width) in {p['seconds']:.1f} s: FLOP cost models calibrated on "
               f"{p['calibration_batches']} training batch(es) + 1 validation batch of the study's data, {how}")
    return "\n".join(out)


def write_plan(plan: dict, path: Path) -> Path:
    """``plan.json`` atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, plan, indent=2, default=_jsonable, trailing_newline=True)


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)
