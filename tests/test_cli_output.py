"""Quiet, readable output: no third-party advertising or deprecation noise, no progress bars in a
redirected log, no zero-FLOPs model summary, one validation-loss name, and validate/test logging
under their own folder instead of among the training runs."""

from pathlib import Path

import pytest
from cli_utils import TINY_MPNN, data_args, trainer_args

from nnip_scale.cli import main


@pytest.fixture(scope="module")
def cu(emt_dataset):
    return emt_dataset("cu", groups=4, per_group=4, seed=0)


def args(data, tmp_path: Path) -> list[str]:
    return [*TINY_MPNN, *data_args(data, tmp_path, batch_size=4), *trainer_args(tmp_path, progress_bar=True),
            "--trainer.logger.init_args.name", "demo"]


def test_fit_output_is_quiet_and_validate_logs_apart(cu, tmp_path, capfd, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero")
    assert main(["fit", *args(cu, tmp_path), "--trainer.max_steps", "4"]) == 0
    out, err = capfd.readouterr()
    text = out + err + caplog.text  # Lightning's info lines go through logging
    assert "model: MPNN (mpnn), N = " in caplog.text  # the line that replaces Lightning's summary
    assert "Tip:" not in text and "litlogger" not in text and "LeafSpec" not in text
    assert "Total Flops" not in text and "\r" not in text  # no zero-FLOPs summary, no progress bar in a pipe
    assert main(["validate", *args(cu, tmp_path)]) == 0
    runs = tmp_path / "runs" / "demo"
    assert (runs / "version_0" / "ledger.jsonl").is_file()
    assert (runs / "validate" / "version_0").is_dir() and not (runs / "version_1").exists()


def test_one_validation_loss_name(cu, tmp_path):
    from nnip_scale.cli import build_cli

    cli = build_cli(["validate", *args(cu, tmp_path)])
    names = set(cli.trainer.callback_metrics)
    assert "val/loss" in names and "val_loss" not in names
