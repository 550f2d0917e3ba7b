"""A study: a grid of training runs (architecture × width × data budget × seed) and its plan.

The study file (YAML, see configs/study/) names the base configs every run shares, the
architectures (a model config, a base width and the learning rate tuned there), the widths, the
data budgets (atoms of a nested training subset, seen ``epochs`` times: 1 is the paper's
single-epoch protocol), the seeds and the number of validations per epoch. Each grid point becomes a :class:`RunSpec`
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
    name: str
    config: str
    base_width: int
    lr: float


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    arch: Architecture
    width: int
    budget_atoms: int
    epochs: int
    seed: int
    folder: Path
    args: tuple[str, ...] = field(compare=False)
    mup: bool = True

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def lr(self) -> float:
        """η(w) = η*·w_base/w: the learning rate of the hidden matrices (the paper's μP transfer rule;
        with ``mup`` the module applies it per parameter group, without it to every parameter)."""
        return self.arch.lr * self.arch.base_width / self.width


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

    @property
    def accelerator(self) -> str:
        """The runs' ``trainer.accelerator`` as the study's configs set it (``auto`` if unset)."""
        return str(self.trainer_config.get("accelerator", "auto"))

    def run_by_id(self, run_id: str) -> RunSpec:
        for run in self.runs:
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
         "mup", "overrides", "run", "report"),
    "architectures.<name>": ("config", "base_width", "lr", "widths"),
    "data": ("atoms", "epochs"),
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
    for section in ("data", "run", "report"):
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
    for arch_name, a in _require(cfg, "architectures", dict, path).items():
        if not isinstance(a, dict) or not {"config", "base_width", "lr"} <= set(a):
            raise StudyError(f"{path}: architecture '{arch_name}': expected keys config, base_width, lr "
                             f"(and optionally widths)")
        _check_keys(a, f"architectures.{arch_name}", path)
        if "widths" not in a and widths is None:
            raise StudyError(f"{path}: architecture '{arch_name}' has no widths and the study has no top-level "
                             f"'widths'; expected one or the other")
        if not (base / a["config"]).is_file():
            raise StudyError(f"{path}: architecture '{arch_name}': model config '{a['config']}' not found")
        arch = Architecture(str(arch_name), str(a["config"]), int(a["base_width"]), float(a["lr"]))
        archs.append(arch)
        arch_widths[arch.name] = (_widths(a["widths"], path, f"architectures.{arch_name}.widths")
                                  if "widths" in a else widths)
    budgets_cfg = _require(cfg, "data", dict, path)
    try:
        budgets = [int(float(b)) for b in _require(budgets_cfg, "atoms", list, path)]
    except (TypeError, ValueError) as err:
        raise StudyError(f"{path}: data.atoms must be a list of atom counts ({err})") from err
    epochs = int(budgets_cfg.get("epochs", 1))
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    if not budgets or min(budgets) < 1:
        raise StudyError(f"{path}: data.atoms must be a non-empty list of positive atom counts")
    if epochs < 1:
        raise StudyError(f"{path}: data.epochs must be >= 1")
    val_per_epoch = int(cfg.get("validations_per_epoch", 8))
    if val_per_epoch < 1:
        raise StudyError(f"{path}: validations_per_epoch must be >= 1")
    mup = bool(cfg.get("mup", True))
    overrides = {str(k): v for k, v in (cfg.get("overrides") or {}).items()}
    runs = []
    for arch in archs:
        for w in arch_widths[arch.name]:
            for atoms in budgets:
                for seed in seeds:
                    run_id = f"{arch.name}-w{w}-D{_budget_label(atoms)}-e{epochs}-s{seed}"
                    run_folder = folder / "runs" / run_id
                    args = [f"--config={c}" for c in base_configs] + [f"--config={arch.config}"]
                    args += [f"--{k}={v}" for k, v in overrides.items()]
                    if mup:  # μP: the module scales each parameter group's LR from the base width
                        args += [f"--model.lr={arch.lr!r}", f"--model.mup_base_width={arch.base_width}"]
                    else:  # the paper's rule applied to one global learning rate
                        args += [f"--model.lr={arch.lr * arch.base_width / w!r}"]
                    args += [
                        f"--seed_everything={seed}",
                        f"--model.backbone.init_args.width={w}",
                        f"--data.subset_atoms={atoms}",
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
                        f"--trainer.callbacks.arch={arch.name}",
                        "--trainer.callbacks+=nnip_scale.training.ValidateAtEnd",
                    ]
                    runs.append(RunSpec(arch, w, atoms, epochs, seed, run_folder, tuple(args), mup))
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
    return Study(name, path, folder, runs, dict(report), parallel, data_config, trainer_config)


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
