"""Each equivariant staircase config trains from LightningCLI with its own config file and at least
halves the validation force MAE of its start, in 150 steps on a small periodic Cu/Al EMT dataset
(the MPNN's CLI training is tested in test_training_cli.py; demo-data runs: docs/models.md)."""

from pathlib import Path

import pytest
from cli_utils import data_args, trainer_args

from nnip_scale.cli import build_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emt_data(emt_dataset):
    return emt_dataset("cual")


def cli_args(config: str, width: int, data, tmp_path, *extra: str, cutoff: float = 4.0) -> list[str]:
    """LightningCLI arguments: ``configs/model/<config>.yaml`` at ``width`` on ``data`` (20 %
    validation, batches of 8, CPU, validation every 150 steps), plus ``extra``."""
    return [
        "--config", f"configs/model/{config}.yaml",
        "--seed_everything", "0",
        "--model.backbone.init_args.width", str(width),
        *extra,
        "--model.warmup_steps", "5",
        *data_args(data, tmp_path, cutoff=cutoff, val_fraction=0.2, batch_size=8),
        *trainer_args(tmp_path, val_every=150, log_every=10),
    ]


def force_mae_before_and_after_150_steps(args: list[str]):
    """(validation force MAE untrained, after 150 training steps, the fitted LightningCLI)."""
    before = build_cli(["validate", *args, "--trainer.enable_checkpointing", "false"])
    mae0 = float(before.trainer.callback_metrics["val/force_mae"])
    cli = build_cli(["fit", *args, "--trainer.max_steps", "150"])
    return mae0, float(cli.trainer.callback_metrics["val/force_mae"]), cli


@pytest.mark.parametrize("config, width, extra", [
    ("egnn", 32, ["--model.backbone.init_args.depth", "2", "--model.backbone.init_args.vector_channels", "8",
                  "--model.lr", "0.005"]),
    ("mace", 16, ["--model.backbone.init_args.elements", "[13, 29]"]),
    ("mace_invariant", 16, ["--model.backbone.init_args.elements", "[13, 29]"]),
    ("esen", 16, []),
])
def test_config_trains_from_the_cli(config, width, extra, emt_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    args = cli_args(config, width, emt_data, tmp_path, "--model.backbone.init_args.cutoff", "4.0", *extra,
                    "--trainer.enable_checkpointing", "false")
    mae0, mae1, _ = force_mae_before_and_after_150_steps(args)
    assert mae1 < 0.5 * mae0, (config, mae0, mae1)
