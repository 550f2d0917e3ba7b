"""LightningCLI argument lists shared by the tests that train through ``nnip-scale fit/validate``."""

from pathlib import Path

#: a one-layer MPNN of width 8 (cutoff 4 Å): the smallest model that trains
TINY_MPNN = ("--model.backbone", "MPNN", "--model.backbone.width", "8", "--model.backbone.depth", "1",
             "--model.backbone.cutoff", "4.0")


def data_args(data, tmp_path: Path, *, cutoff: float = 4.0, val_fraction: float = 0.25,
              batch_size: int | None = None) -> list[str]:
    """``--data.*``: train on ``data`` with a validation split and no test split; caches under tmp_path."""
    args = ["--data.train", str(data), "--data.cutoff", str(cutoff), "--data.val_fraction", str(val_fraction),
            "--data.test_fraction", "0.0", "--data.cache_dir", str(tmp_path / "cache")]
    return args + (["--data.batch_size", str(batch_size)] if batch_size is not None else [])


def trainer_args(tmp_path: Path, *, progress_bar: bool = False, val_every: int | None = None,
                 log_every: int | None = None) -> list[str]:
    """``--trainer.*``: CPU, logs and checkpoints under tmp_path; validation every ``val_every`` steps."""
    args = ["--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.default_root_dir", str(tmp_path)]
    if not progress_bar:
        args += ["--trainer.enable_progress_bar", "false"]
    if val_every is not None:
        args += ["--trainer.val_check_interval", str(val_every), "--trainer.check_val_every_n_epoch", "null"]
    return args + (["--trainer.log_every_n_steps", str(log_every)] if log_every is not None else [])
