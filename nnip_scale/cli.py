"""The ``nnip-scale`` console script.

``nnip-scale fit|validate|test|predict`` are LightningCLI subcommands (``--config FILE`` repeatable,
dotted overrides such as ``--model.backbone.init_args.width 128``); ``nnip-scale data ...``
generates and checks the built-in datasets.
"""

import os
import sys
from pathlib import Path

# Large CPU tensors (edge features, their gradients) are allocated fresh every step; backing them
# with transparent huge pages avoids most first-touch page faults, which dominate the backward of
# message aggregation on CPU (benchmarks/RESULTS.md: ~4x faster). torch reads this at its first
# large allocation, so it is set before torch is used; export THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

USAGE = """usage: nnip-scale {fit,validate,test,predict,data,study} ...

  fit | validate | test | predict   LightningCLI subcommands: --config FILE (repeatable), dotted
                                    overrides, e.g. nnip-scale fit --config configs/quickstart.yaml
                                    (nnip-scale fit --help lists every option)
  data                              built-in datasets: nnip-scale data --help
  study                             a grid of runs, local or SLURM, resumable: nnip-scale study --help
"""

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
}


def _safe_checkpoint_cli():
    """LightningCLI whose ``--ckpt_path`` runs no code: the file is checked by the one checkpoint
    loader (``nnip_scale.checkpoint``) before LightningCLI parses its hyperparameters into the
    config, and the trainer then reads it with ``weights_only=True``."""
    from lightning.pytorch.cli import LightningCLI

    from nnip_scale.checkpoint import CheckpointError, check_checkpoint

    class SafeCheckpointCLI(LightningCLI):
        def _parse_ckpt_path(self) -> None:
            subcommand = self.config.get("subcommand")
            section = self.config.get(subcommand) if subcommand else None
            ckpt_path = section.get("ckpt_path") if section is not None else None
            if ckpt_path:
                if section.get("weights_only") is False:
                    raise CheckpointError(f"{ckpt_path}: --weights_only false was asked; nnip-scale reads checkpoints "
                                          f"with weights_only=True only (loading a checkpoint must not run code)")
                section["weights_only"] = True
                if Path(ckpt_path).is_file():  # "last"/"best" name files Lightning wrote in this run
                    check_checkpoint(ckpt_path, self.model_class)
            super()._parse_ckpt_path()

    return SafeCheckpointCLI


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

    return _safe_checkpoint_cli()(
        NNIPModule,
        AtomsDataModule,
        args=args,
        run=run,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        save_config_callback=_run_folder_save_config(),
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args[0] == "data":
        from nnip_scale.data.generate.cli import main as data_main

        return data_main(args[1:])
    if args[0] == "study":
        from nnip_scale.scaling.study_report import write_study_report
        from nnip_scale.study.cli import main as study_main

        return study_main(args[1:], report=write_study_report)
    # from the command line LightningCLI reads sys.argv itself (and DDP relaunches the ranks with it)
    build_cli(None if argv is None else args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
