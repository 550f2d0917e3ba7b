"""The LightningCLI of nnip-scale (``fit|validate|test|predict``): :func:`build_cli` and
:func:`run_guarded`, the error policy of the console script.

It lives in ``training`` (below ``study``, which builds and runs its runs' CLIs in-process) so that no
layer imports the top-level console script ``nnip_scale.cli``, which only dispatches subcommands
(docs/architecture.md).
"""

import inspect
import os
import sys
from pathlib import Path

from nnip_scale.errors import _one_line, run_guarded

#: Trainer defaults that differ from Lightning's. Conservative forces differentiate the energy in
#: validation and test too, so inference mode must be off; the atom-budget batch sampler shards
#: batches across ranks itself, so Lightning must not wrap it in a DistributedSampler.
TRAINER_DEFAULTS = {
    "inference_mode": False,
    "use_distributed_sampler": False,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default"},
    },
    # Lightning's summary prints "Total Flops 0" (it counts nothing without an example input),
    # contradicting the FLOP ledger; the module prints its own one-line summary (N, labels) instead
    "enable_model_summary": False,
}


def _quiet() -> None:
    """Drop third-party noise every run printed: Lightning's litlogger/litmodels advertising and
    torch's pytree deprecation warning (raised inside Lightning, nothing a user can act on)."""
    import logging
    import warnings

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith("💡 Tip:")

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(type(f).__name__ == "_NoTips" for f in logger.filters):
            logger.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def _safe_checkpoint_cli():
    """LightningCLI whose ``--ckpt_path`` runs no code: the file is checked by the one checkpoint
    loader (``nnip_scale.checkpoint``) before LightningCLI parses its hyperparameters into the
    config, and the trainer then reads it with ``weights_only=True``."""
    from lightning.pytorch.cli import LightningCLI

    from nnip_scale.checkpoint import CheckpointError, check_checkpoint

    class SafeCheckpointCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            """validate/test/predict log under ``<name>/<subcommand>/version_<n>`` of the logger's
            folder, not among the training runs' versions."""
            sub = self.config.get("subcommand")
            if sub not in ("validate", "test", "predict"):
                return
            logger = self.config[sub].get("trainer", {}).get("logger")
            init = getattr(logger, "init_args", None) if logger is not None and not isinstance(logger, bool) else None
            if init is not None and init.get("name") is not None and not str(init["name"]).endswith(f"/{sub}"):
                init["name"] = f"{init['name']}/{sub}"

        def _parse_ckpt_path(self) -> None:
            subcommand = self.config.get("subcommand")
            section = self.config.get(subcommand) if subcommand else None
            ckpt_path = section.get("ckpt_path") if section is not None else None
            if ckpt_path:
                if section.get("weights_only") is False:
                    raise CheckpointError(f"{ckpt_path}: --weights_only false was asked; nnip-scale reads checkpoints "
                                          f"with weights_only=True only (loading a checkpoint must not run code)")
                section["weights_only"] = True
                if Path(ckpt_path).is_file():
                    check_checkpoint(ckpt_path, self.model_class)
                elif str(ckpt_path) not in ("last", "best", "hpc") and not str(ckpt_path).startswith("registry"):
                    # checked here, before the data are set up ("last"/"best" name files of this run)
                    raise FileNotFoundError(f"{ckpt_path}: no such checkpoint file (--ckpt_path)")
            super()._parse_ckpt_path()

    return SafeCheckpointCLI


_ARGS: list[str] = []  # the arguments of the running CLI (for error messages naming config files)


def _tool_parser_class():
    """LightningCLI's parser, except that an argument or config error is one line naming the
    offending key, the config file that holds it and the closest valid key, instead of a usage dump
    (``NNIP_SCALE_DEBUG=1`` restores jsonargparse's own handling)."""
    from lightning.pytorch.cli import LightningArgumentParser

    class ToolParser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error or os.environ.get("NNIP_SCALE_DEBUG", "") not in ("", "0"):
                return super().error(message, ex)
            parser = getattr(ex, "subcommand_parser", None) or self
            sub = _ARGS[0] if _ARGS and not _ARGS[0].startswith("-") else ""
            prog = f"nnip-scale {sub}".strip()
            lines = [f"{prog}: error: {_one_line(message)}"]
            lines += _key_hints(parser, message)
            lines.append(f"({prog} --help lists every option)")
            sys.stderr.write("\n".join(lines) + "\n")
            self.exit(2)

    return ToolParser


def _key_hints(parser, message: str) -> list[str]:
    """'did you mean' and 'found in FILE' lines for the unknown keys named in ``message``."""
    import difflib
    import re

    import yaml

    from nnip_scale.models.registry import resolve_model

    valid = sorted({opt[2:] for a in parser._actions for opt in a.option_strings if opt.startswith("--")})
    unknown: list[tuple[str, list[str]]] = []
    for key in re.findall(r"does not accept (?:option|nested key) '([^']+)'", message):
        unknown.append((key, valid))
    for token in re.findall(r"unrecognized arguments: (.*)", message):
        unknown += [(t[2:].split("=")[0], valid) for t in token.split() if t.startswith("--")]
    nested = re.search(r'Parser key "([^"]+)".*?class_path \'([^\']+)\'.*?Option \'([^\']+)\' is not accepted', message, re.S)
    if nested:
        prefix, class_path, option = nested.groups()
        try:
            cls = resolve_model(class_path)
        except ValueError:  # not a model class: no argument names to suggest
            cls = None
        params = list(inspect.signature(cls).parameters) if cls is not None else []
        unknown.append((f"{prefix}.init_args.{option}", [f"{prefix}.init_args.{p}" for p in params]))
    hints = []
    for key, candidates in unknown:
        short = key.split(".")[-1]
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6) or [
            c for c in candidates if difflib.get_close_matches(short, [c.split(".")[-1]], n=1, cutoff=0.75)][:1]
        where = [f for f in _config_files() if _yaml_has(f, key, yaml)]
        hint = f"  {key!r}" + (f" (in {', '.join(where)})" if where else "")
        hints.append(hint + (f": did you mean {close[0]!r}?" if close else ": no similar key"))
    return hints


def _config_files() -> list[str]:
    args = _ARGS or sys.argv[1:]
    files = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    files += [args[k + 1] for k, a in enumerate(args[:-1]) if a == "--config"]
    return files


def _yaml_has(path: str, dotted: str, yaml) -> bool:
    try:
        node = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part == "init_args" and "init_args" not in node:
            continue
        else:
            return False
    return True


def _run_folder_save_config():
    """LightningCLI's SaveConfigCallback, except that a run without a logger saves its config.yaml
    in its own run folder (beside its ledger and checkpoints) instead of the working directory."""
    from lightning.pytorch.cli import SaveConfigCallback

    from nnip_scale.training.ledger import folder_without_logger

    class RunFolderSaveConfig(SaveConfigCallback):
        def setup(self, trainer, pl_module, stage: str) -> None:
            if self.already_saved or trainer.logger is not None or trainer.fast_dev_run:
                return super().setup(trainer, pl_module, stage)
            folder = folder_without_logger(trainer)
            if trainer.is_global_zero:
                folder.mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(folder / self.config_filename), skip_none=False,
                                 overwrite=self.overwrite, multifile=self.multifile)
                self.save_config(trainer, pl_module, stage)
                self.already_saved = True

    return RunFolderSaveConfig


def build_cli(args: list[str] | None, run: bool = True):
    """The LightningCLI over :class:`NNIPModule` and :class:`AtomsDataModule` for ``args``
    (``None``: ``sys.argv[1:]``). Lightning is imported here, not at module level, so that
    ``nnip-scale data`` and ``nnip-scale study`` start in a second instead of ~10 s."""
    from nnip_scale.data import AtomsDataModule
    from nnip_scale.training import NNIPModule

    _ARGS[:] = list(sys.argv[1:] if args is None else args)
    _quiet()
    # progress bars write carriage returns: only for a terminal (a config or --trainer.enable_progress_bar wins)
    defaults = {**TRAINER_DEFAULTS, "enable_progress_bar": sys.stdout.isatty()}
    return _safe_checkpoint_cli()(
        NNIPModule,
        AtomsDataModule,
        args=args,
        run=run,
        trainer_defaults=defaults,
        save_config_kwargs={"overwrite": True},
        save_config_callback=_run_folder_save_config(),
        parser_class=_tool_parser_class(),
    )


def fit_main(args: list[str]) -> int:
    """``nnip-scale fit ARGS`` in this process (the study's CPU workers), with :func:`run_guarded`."""
    def fit() -> int:
        build_cli(["fit", *args])
        return 0

    return run_guarded("fit", fit)
