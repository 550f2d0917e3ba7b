"""A study: a grid of training runs (architecture × width × data budget × seed) and its plan.

The study file (YAML, see configs/study/) names the base configs every run shares, the
architectures (a model config, a base width and the learning rate tuned there), the widths, the
data budgets (atoms of a nested training subset, or fractions of the training split's atoms,
seen ``epochs`` times: 1 is the paper's single-epoch protocol), the seeds and the number of validations per epoch.
Each grid point becomes a :class:`RunSpec`
whose composed LightningCLI arguments are fixed by the plan, so rerunning a study reruns exactly
the same commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class StudyError(ValueError):
    """A study file that cannot be planned; the message names the file, the key and the expectation."""


@dataclass(frozen=True)
class Architecture:
    """One architecture of the study. ``lr`` is η*, the learning rate at ``base_width``: given in
    the study file (``lr_source="given"``), chosen by the study's LR sweep (``"sweep"``), ``None``
    while that sweep has not finished (``"pending"``), or one candidate of the sweep itself
    (``"candidate"``, on the sweep's own runs)."""

    name: str
    config: str
    base_width: int
    lr: float | None
    lr_source: str = "given"
    #: dotted LightningCLI overrides of this architecture only (after the study's ``overrides``)
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def pending(self) -> bool:
        return self.lr is None


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid. Its data budget is ``budget_atoms`` (an atom count) or, in a
    study whose budgets are ``data.fraction``, ``budget_fraction`` (a fraction of the training
    split's atoms; ``budget_atoms`` is then None: the count is known once the data is loaded)."""

    arch: Architecture
    width: int
    budget_atoms: int | None
    epochs: int
    seed: int
    folder: Path
    base_args: tuple[str, ...] = field(compare=False)
    mup: bool = True
    sweep: bool = False  #: a run of the LR sweep (not part of the grid the laws are fitted on)
    sweep_grid: tuple[float, ...] = field(default=(), compare=False)  #: the sweep's η* candidates
    budget_fraction: float | None = None  #: the budget as a fraction of the training split's atoms

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def budget_text(self) -> str:
        """The data budget in words: ``40,000 atoms`` or ``10 % of the training atoms``."""
        if self.budget_fraction is not None:
            return f"{_percent(self.budget_fraction)} % of the training atoms"
        return f"{self.budget_atoms:,} atoms"

    def subset_args(self) -> dict:
        """The AtomsDataModule arguments of this run's nested training subset."""
        return {"subset": None, "subset_atoms": self.budget_atoms, "subset_fraction": self.budget_fraction,
                "subset_seed": self.seed}

    @property
    def pending(self) -> bool:
        """True while η* of this run's architecture waits for the study's LR sweep."""
        return self.arch.pending

    @property
    def lr(self) -> float:
        """η(w) = η*·w_base/w: the learning rate of the hidden matrices (the paper's μP transfer rule;
        with ``mup`` the module applies it per parameter group, without it to every parameter)."""
        if self.arch.lr is None:
            raise StudyError(f"{self.run_id}: η* of '{self.arch.name}' comes from the study's LR sweep, which has "
                             f"not finished yet")
        return self.arch.lr * self.arch.base_width / self.width

    def lr_args(self, lr: float | None = None) -> list[str]:
        """The learning-rate arguments for η* = ``lr`` (default: the architecture's)."""
        eta = self.arch.lr if lr is None else lr
        if eta is None:
            raise StudyError(f"{self.run_id}: η* of '{self.arch.name}' comes from the study's LR sweep, which has "
                             f"not finished yet (run the study: the sweep runs first)")
        if self.mup:  # μP: the module scales each parameter group's LR from the base width
            return [f"--model.lr={eta!r}", f"--model.mup_base_width={self.arch.base_width}"]
        return [f"--model.lr={eta * self.arch.base_width / self.width!r}"]  # the paper's rule, one global LR

    @property
    def args(self) -> tuple[str, ...]:
        """The composed ``nnip-scale fit`` arguments (raises StudyError while η* is pending)."""
        return self.base_args + tuple(self.lr_args())

    def cost_args(self) -> tuple[str, ...]:
        """Arguments for cost estimates and dry parses: those of :attr:`args`, with a pending η*
        replaced by the first LR of the sweep grid (cost and parsing do not depend on the LR)."""
        if not self.pending:
            return self.args
        return self.base_args + tuple(self.lr_args(self.sweep_grid[0] if self.sweep_grid else 1e-3))


@dataclass(frozen=True)
class SweepPlan:
    """The study's ``lr_sweep:``: η* candidates tried at each swept architecture's base width on a
    short data budget, with ``seeds``; the best mean final validation loss wins (nnip_scale.study.sweep)."""

    lrs: tuple[float, ...]
    atoms: int
    seeds: tuple[int, ...]
    archs: tuple[str, ...]  #: the architectures without a given ``lr``

    def settings(self, arch: Architecture) -> dict:
        """What a stored choice for ``arch`` must match to be reused (lr_sweep.json)."""
        return {"lrs": list(self.lrs), "atoms": self.atoms, "seeds": list(self.seeds), "base_width": arch.base_width,
                "config": arch.config, "overrides": {k: str(v) for k, v in arch.overrides}}


@dataclass
class Study:
    name: str
    path: Path
    folder: Path
    runs: list[RunSpec]
    report: dict
    parallel: int = 1
    data_config: dict = field(default_factory=dict)
    trainer_config: dict = field(default_factory=dict)
    sweep: SweepPlan | None = None
    sweep_runs: list[RunSpec] = field(default_factory=list)
    #: lr_sweep.json as read: {arch: {"settings", "table", "best_lr", "edge", ...}} (chosen η* per architecture)
    sweep_results: dict = field(default_factory=dict)

    @property
    def all_runs(self) -> list[RunSpec]:
        """The sweep's runs, then the grid's."""
        return [*self.sweep_runs, *self.runs]

    @property
    def pending_archs(self) -> list[str]:
        return list(dict.fromkeys(r.arch.name for r in self.runs if r.pending))

    @property
    def accelerator(self) -> str:
        """The runs' ``trainer.accelerator`` as the study's configs set it (``auto`` if unset)."""
        return str(self.trainer_config.get("accelerator", "auto"))

    def run_by_id(self, run_id: str) -> RunSpec:
        for run in self.all_runs:
            if run.run_id == run_id:
                return run
        raise StudyError(f"{self.path}: no run '{run_id}' in the plan (was the study file edited since the "
                         f"SLURM script was written?); the plan has {', '.join(r.run_id for r in self.runs[:4])}"
                         + (", ..." if len(self.runs) > 4 else ""))


def _require(cfg: dict, key: str, kind, source: Path):
    if key not in cfg:
        raise StudyError(f"{source}: missing key '{key}'; expected {kind.__name__ if isinstance(kind, type) else kind}")
    value = cfg[key]
    if isinstance(kind, type) and not isinstance(value, kind):
        raise StudyError(f"{source}: key '{key}' is {type(value).__name__}; expected {kind.__name__}")
    return value


def _widths(value, source: Path, key: str) -> list[int]:
    try:
        widths = [int(w) for w in value]
    except (TypeError, ValueError) as err:
        raise StudyError(f"{source}: {key} must be a list of positive integers ({err})") from err
    if not widths or min(widths) < 1:
        raise StudyError(f"{source}: {key} must be a non-empty list of positive integers, got {value!r}")
    return widths


#: the keys a study file may use, per section (anything else is a typo: refused with a suggestion)
KEYS = {
    "": ("name", "output", "base_configs", "architectures", "widths", "data", "seeds", "validations_per_epoch",
         "mup", "overrides", "run", "report", "lr_sweep", "base_width_seeds"),
    "architectures.<name>": ("config", "base_width", "lr", "widths", "overrides"),
    "data": ("atoms", "fraction", "epochs"),
    "lr_sweep": ("lrs", "atoms", "seeds"),
    "run": ("parallel",),
    "report": ("drop_first", "ema", "n_boot", "seed", "budget_flops", "fix_linf", "pool", "holdout"),
}


def _check_keys(section: dict, where: str, source: Path) -> None:
    import difflib

    allowed = KEYS[where if not where.startswith("architectures.") else "architectures.<name>"]
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            place = f"{where}.{key}" if where else str(key)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(allowed)}"
            raise StudyError(f"{source}: unknown key '{place}': {hint}")


def _budget_label(atoms: int) -> str:
    exp = int(math.floor(math.log10(atoms)))
    mant = atoms / 10**exp
    return f"{mant:.3g}e{exp}".replace(".", "p")


def _arg_value(value) -> str:
    """An override's value as a command-line argument: YAML ``null`` must reach LightningCLI as
    ``null`` (``str(None)``, ``None``, is parsed as the string "None")."""
    return "null" if value is None else str(value)


def _percent(fraction: float) -> str:
    """0.1 -> ``10``, 0.125 -> ``12.5`` (float noise rounded away)."""
    return f"{round(100 * fraction, 6):g}"


def _fraction_label(fraction: float) -> str:
    """The run-id label of a fraction budget: 0.1 -> ``10pct``, 0.125 -> ``12p5pct``."""
    return _percent(fraction).replace(".", "p") + "pct"


def _budgets(cfg: dict, source: Path) -> tuple[list[int] | None, list[float] | None]:
    """The study's data budgets: ``data.atoms`` (atom counts) or ``data.fraction`` (fractions of
    the training split's atoms), exactly one of them; returns (atoms, None) or (None, fractions)."""
    if ("atoms" in cfg) == ("fraction" in cfg):
        raise StudyError(f"{source}: data needs exactly one of 'atoms' (atom counts, e.g. [40000, 160000]) or "
                         f"'fraction' (fractions of the training split's atoms, e.g. [0.1, 0.3, 1.0]); got "
                         f"{'both' if 'atoms' in cfg else 'neither'}")
    key = "atoms" if "atoms" in cfg else "fraction"
    value = cfg[key]
    if not isinstance(value, list) or not value:
        raise StudyError(f"{source}: data.{key} must be a non-empty list, got {value!r}")
    if key == "atoms":
        try:
            budgets = [int(float(b)) for b in value]
        except (TypeError, ValueError) as err:
            raise StudyError(f"{source}: data.atoms must be a list of atom counts ({err})") from err
        if min(budgets) < 1:
            raise StudyError(f"{source}: data.atoms must be a non-empty list of positive atom counts")
        return budgets, None
    fractions = []
    for f in value:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f):
            raise StudyError(f"{source}: data.fraction must be a list of numbers in (0, 1] (fractions of the training "
                             f"split's atoms), got {f!r} in {value!r}")
        if not 0 < f <= 1:
            hint = f" (a percentage? {f:g} % is {f / 100:g})" if 1 < f <= 100 else ""
            raise StudyError(f"{source}: data.fraction must hold fractions of the training split's atoms in (0, 1], "
                             f"got {f!r}{hint}")
        fractions.append(float(f))
    labels = [_fraction_label(f) for f in fractions]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{source}: data.fraction holds the same budget twice ({value!r}, run labels "
                         f"{', '.join(labels)}); expected distinct fractions")
    return None, fractions


def load_study(path: str | Path, output: str | Path | None = None) -> Study:
    """Read and validate a study file and expand its grid into runs."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, dict):
        raise StudyError(f"{path}: expected a mapping at the top level")
    base = Path.cwd()
    _check_keys(cfg, "", path)
    for section in ("data", "run", "report", "lr_sweep"):
        if isinstance(cfg.get(section), dict):
            _check_keys(cfg[section], section, path)
    name = str(_require(cfg, "name", str, path))
    folder = Path(output) if output else base / cfg.get("output", f"studies/{name}")
    base_configs = [str(c) for c in cfg.get("base_configs", [])]
    for c in base_configs:
        if not (base / c).is_file():
            raise StudyError(f"{path}: base config '{c}' not found (paths are relative to {base})")
    widths = _widths(cfg["widths"], path, "widths") if "widths" in cfg else None
    archs, arch_widths = [], {}
    sweep_cfg = cfg.get("lr_sweep")
    if sweep_cfg is not None and not isinstance(sweep_cfg, dict):
        raise StudyError(f"{path}: 'lr_sweep' must be a mapping (lrs, and optionally atoms and seeds)")
    stored = _read_sweep_results(folder, path)
    for arch_name, a in _require(cfg, "architectures", dict, path).items():
        if not isinstance(a, dict) or not {"config", "base_width"} <= set(a):
            raise StudyError(f"{path}: architecture '{arch_name}': expected keys config, base_width, lr "
                             f"(and optionally widths)")
        if "lr" not in a and sweep_cfg is None:
            raise StudyError(f"{path}: architecture '{arch_name}' has no 'lr' and the study has no 'lr_sweep'; "
                             f"expected one or the other (an lr_sweep section sweeps every architecture without lr)")
        _check_keys(a, f"architectures.{arch_name}", path)
        if "widths" not in a and widths is None:
            raise StudyError(f"{path}: architecture '{arch_name}' has no widths and the study has no top-level "
                             f"'widths'; expected one or the other")
        if not (base / a["config"]).is_file():
            raise StudyError(f"{path}: architecture '{arch_name}': model config '{a['config']}' not found")
        try:
            lr = float(a["lr"]) if "lr" in a else None
        except (TypeError, ValueError) as err:
            raise StudyError(f"{path}: architectures.{arch_name}.lr must be a number ({err})") from err
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise StudyError(f"{path}: architectures.{arch_name}.lr must be a positive number, got {a['lr']!r}")
        arch_over = a.get("overrides") or {}
        if not isinstance(arch_over, dict):
            raise StudyError(f"{path}: architectures.{arch_name}.overrides must be a mapping of dotted LightningCLI "
                             f"keys to values (e.g. model.backbone.init_args.radial_hidden: 16)")
        arch = Architecture(str(arch_name), str(a["config"]), int(a["base_width"]), lr,
                            "given" if lr is not None else "pending",
                            tuple((str(k), v) for k, v in arch_over.items()))
        archs.append(arch)
        arch_widths[arch.name] = (_widths(a["widths"], path, f"architectures.{arch_name}.widths")
                                  if "widths" in a else widths)
    budgets_cfg = _require(cfg, "data", dict, path)
    budgets, fractions = _budgets(budgets_cfg, path)
    try:
        epochs = int(budgets_cfg.get("epochs", 1))
    except (TypeError, ValueError) as err:
        raise StudyError(f"{path}: data.epochs must be an integer >= 1 ({err})") from err
    try:
        seeds = [int(s) for s in cfg.get("seeds", [0])]
        base_seeds = [int(s) for s in cfg.get("base_width_seeds", seeds)]
    except (TypeError, ValueError) as err:
        raise StudyError(f"{path}: seeds and base_width_seeds must be lists of integers ({err})") from err
    if not seeds or not base_seeds or len(set(seeds)) != len(seeds) or len(set(base_seeds)) != len(base_seeds):
        raise StudyError(f"{path}: seeds and base_width_seeds must be non-empty lists of distinct integers")
    if epochs < 1:
        raise StudyError(f"{path}: data.epochs must be >= 1")
    sweep = _sweep_plan(sweep_cfg, archs, budgets, seeds, path) if sweep_cfg is not None else None
    if sweep is not None:  # a stored choice made with the same settings fixes η*; otherwise it stays pending
        archs = [_swept(a, sweep, stored.get(a.name)) if a.name in sweep.archs else a for a in archs]
    val_per_epoch = int(cfg.get("validations_per_epoch", 8))
    if val_per_epoch < 1:
        raise StudyError(f"{path}: validations_per_epoch must be >= 1")
    mup = bool(cfg.get("mup", True))
    overrides = {str(k): v for k, v in (cfg.get("overrides") or {}).items()}
    grid = tuple(sweep.lrs) if sweep else ()

    def make_run(arch: Architecture, w: int, atoms: int | None, seed: int, run_id: str, run_folder: Path,
                 is_sweep: bool = False, fraction: float | None = None) -> RunSpec:
        """One run: its arguments but the LR ones (RunSpec.args adds those from η*)."""
        args = [f"--config={c}" for c in base_configs] + [f"--config={arch.config}"]
        args += [f"--{k}={_arg_value(v)}" for k, v in overrides.items()]
        args += [f"--{k}={_arg_value(v)}" for k, v in arch.overrides]
        args += _fixed_args(run_id, run_folder, arch.name, w, atoms, seed, epochs, val_per_epoch, fraction)
        return RunSpec(arch, w, atoms, epochs, seed, run_folder, tuple(args), mup, is_sweep, grid, fraction)

    runs, sweep_runs = [], []
    for arch in archs:
        if sweep is not None and arch.name in sweep.archs:
            for lr in sweep.lrs:  # the sweep: every candidate η* at the base width, short budget, its seeds
                candidate = Architecture(arch.name, arch.config, arch.base_width, lr, "candidate", arch.overrides)
                for seed in sweep.seeds:
                    run_id = (f"sweep-{arch.name}-w{arch.base_width}-lr{lr:g}-D{_budget_label(sweep.atoms)}"
                              f"-e{epochs}-s{seed}")
                    sweep_runs.append(make_run(candidate, arch.base_width, sweep.atoms, seed, run_id,
                                               folder / "sweep" / run_id, True))
        grid_budgets = ([(b, None, _budget_label(b)) for b in budgets] if budgets is not None
                        else [(None, f, _fraction_label(f)) for f in fractions])
        for w in arch_widths[arch.name]:
            for atoms, fraction, label in grid_budgets:
                # base_width_seeds: more seeds where η* was tuned (the seed-to-seed spread of the grid)
                for seed in (base_seeds if w == arch.base_width else seeds):
                    run_id = f"{arch.name}-w{w}-D{label}-e{epochs}-s{seed}"
                    runs.append(make_run(arch, w, atoms, seed, run_id, folder / "runs" / run_id,
                                         fraction=fraction))
    ids = [r.run_id for r in [*sweep_runs, *runs]]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise StudyError(f"{path}: two grid points share the run id {dup[0]} (budgets or widths that differ "
                         f"below the id's resolution, or a width listed twice); expected distinct runs")
    run_cfg = cfg.get("run") or {}
    if not isinstance(run_cfg, dict):
        raise StudyError(f"{path}: 'run' must be a mapping (e.g. parallel: 2)")
    parallel = int(run_cfg.get("parallel", 1))
    if parallel < 1:
        raise StudyError(f"{path}: run.parallel must be >= 1, got {parallel}")
    report = cfg.get("report") or {}
    if not isinstance(report, dict):
        raise StudyError(f"{path}: 'report' must be a mapping of report options")
    data_config = _data_config(base, base_configs, overrides, path)
    trainer_config = _section_config("trainer", base, base_configs, overrides, path)
    return Study(name, path, folder, runs, dict(report), parallel, data_config, trainer_config, sweep, sweep_runs,
                 {k: v for k, v in stored.items() if sweep is not None and k in sweep.archs})


def _fixed_args(run_id: str, run_folder: Path, arch: str, w: int, atoms: int | None, seed: int, epochs: int,
                val_per_epoch: int, fraction: float | None = None) -> list[str]:
    """The arguments a run's grid point fixes: width, data budget, seed, schedule, logging."""
    return [
        f"--seed_everything={seed}",
        f"--model.backbone.init_args.width={w}",
        f"--data.subset_atoms={atoms}" if fraction is None else f"--data.subset_fraction={fraction!r}",
        f"--data.subset_seed={seed}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.max_steps=-1",
        # evenly spaced validations, plus one after the last batch (ValidateAtEnd):
        # every run's learning curve ends at its full budget
        f"--trainer.val_check_interval={1.0 / val_per_epoch!r}",
        "--trainer.check_val_every_n_epoch=1",
        f"--trainer.default_root_dir={run_folder}",
        f"--trainer.logger.init_args.save_dir={run_folder}",
        "--trainer.logger.init_args.name=tb",
        "--trainer.logger.init_args.version=0",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={run_folder / 'checkpoints'}",
        # after every validation: a new step-named checkpoint (the previous one is
        # deleted only once it is written) and last.ckpt, a link to it, so a kill
        # mid-save leaves the last good checkpoint in place
        "--trainer.callbacks.save_last=link",
        "--trainer.callbacks.save_top_k=1",
        "--trainer.callbacks+=nnip_scale.training.ComputeLedger",
        f"--trainer.callbacks.run_id={run_id}",
        f"--trainer.callbacks.arch={arch}",
        "--trainer.callbacks+=nnip_scale.training.ValidateAtEnd",
    ]


#: the LR sweep's outcome, in the study folder (written by nnip_scale.study.sweep)
SWEEP_FILE = "lr_sweep.json"


def _read_sweep_results(folder: Path, source: Path) -> dict:
    """``<study>/lr_sweep.json`` ({} if there is none); a file that is not what the sweep writes is an error."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        return {}
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: the stored LR sweep of {source} cannot be read ({err}); expected the JSON the "
                         f"study writes (delete it to redo the choice from the sweep's runs)") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "best_lr" in v and "settings" in v
                                             for v in data.values()):
        raise StudyError(f"{path}: expected {{arch: {{settings, table, best_lr, ...}}}} as the study writes it "
                         f"(delete it to redo the choice from the sweep's runs)")
    return data


def _sweep_plan(cfg: dict, archs: list[Architecture], budgets: list[int] | None, seeds: list[int],
                source: Path) -> SweepPlan:
    if "lrs" not in cfg:
        raise StudyError(f"{source}: lr_sweep needs 'lrs', the η* candidates (e.g. [0.002, 0.005, 0.01, 0.02])")
    try:
        lrs = tuple(float(x) for x in cfg["lrs"])
    except (TypeError, ValueError) as err:
        raise StudyError(f"{source}: lr_sweep.lrs must be a list of positive numbers ({err})") from err
    if len(lrs) < 2 or min(lrs) <= 0 or not all(math.isfinite(x) for x in lrs) or len(set(lrs)) != len(lrs):
        raise StudyError(f"{source}: lr_sweep.lrs must be at least two distinct positive numbers, got {cfg['lrs']!r}")
    if budgets is None and "atoms" not in cfg:
        raise StudyError(f"{source}: lr_sweep needs 'atoms' (the sweep's data budget, an atom count) when the "
                         f"study's budgets are data.fraction: a fraction's atoms are known only once the data is "
                         f"loaded, and the sweep's runs must not depend on the data's size")
    try:
        atoms = int(float(cfg.get("atoms", min(budgets or [1]))))
        sweep_seeds = tuple(int(x) for x in cfg.get("seeds", seeds))
    except (TypeError, ValueError) as err:
        raise StudyError(f"{source}: lr_sweep.atoms must be an atom count and lr_sweep.seeds a list of "
                         f"integers ({err})") from err
    if atoms < 1 or not sweep_seeds:
        raise StudyError(f"{source}: lr_sweep.atoms must be positive and lr_sweep.seeds non-empty")
    swept = tuple(a.name for a in archs if a.lr is None)
    if not swept:
        raise StudyError(f"{source}: lr_sweep is given but every architecture has its own 'lr', so nothing would "
                         f"be swept; expected at least one architecture without 'lr' (or no lr_sweep)")
    return SweepPlan(tuple(sorted(lrs)), atoms, sweep_seeds, swept)


def _swept(arch: Architecture, sweep: SweepPlan, stored: dict | None) -> Architecture:
    """``arch`` with η* from the stored sweep choice when it was made with this sweep's settings."""
    if not stored or stored.get("settings") != sweep.settings(arch) or stored.get("best_lr") is None:
        return arch  # no choice yet, or one made by another sweep: pending until this sweep's runs choose
    return Architecture(arch.name, arch.config, arch.base_width, float(stored["best_lr"]), "sweep", arch.overrides)


def _data_config(base: Path, base_configs: list[str], overrides: dict, source: Path) -> dict:
    """The ``data:`` arguments every run shares: the base configs' ``data`` sections, in order,
    then the study's ``data.*`` overrides (what the pre-flight check loads once)."""
    return _section_config("data", base, base_configs, overrides, source)


def _section_config(name: str, base: Path, base_configs: list[str], overrides: dict, source: Path) -> dict:
    """The top-level ``name:`` section every run shares (base configs in order, then overrides)."""
    out: dict = {}
    for c in base_configs:
        try:
            section = (yaml.safe_load((base / c).read_text()) or {}).get(name) or {}
        except yaml.YAMLError as err:
            raise StudyError(f"{source}: base config '{c}' is not valid YAML ({err})") from err
        if isinstance(section, dict):
            out.update(section.get("init_args", section) if "class_path" in section else section)
    for key, value in overrides.items():
        if key.startswith(f"{name}."):
            out[key[len(name) + 1:]] = value
    return out
