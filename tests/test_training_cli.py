"""End to end: LightningCLI fit/validate on a small EMT dataset; the model learns; TensorBoard
scalars are written; checkpoints rebuild the backbone; bad model/data combinations fail clearly."""

import numpy as np
import pytest
import torch
from cli_utils import data_args, trainer_args

from nnip_scale.cli import build_cli, main


@pytest.fixture(scope="module")
def emt_data(emt_dataset):
    """Rattled Cu/Al fcc cells (periodic, 8 atoms) labelled with EMT: 12 groups × 10 frames."""
    return emt_dataset("cual", groups=12, per_group=10, seed=0)


def cli_args(data_path, tmp_path, *extra):
    return [
        "--seed_everything", "0",
        "--model.backbone.class_path", "nnip_scale.models.MPNN",
        "--model.backbone.init_args.width", "32",
        "--model.backbone.init_args.depth", "2",
        "--model.backbone.init_args.cutoff", "4.0",
        "--model.lr", "0.005",
        "--model.warmup_steps", "5",
        *data_args(data_path, tmp_path, batch_size=8),
        *trainer_args(tmp_path, val_every=50, log_every=5),
        *extra,
    ]


def test_fit_learns_and_logs(emt_data, tmp_path):
    # conservative forces (−∂E/∂r, differentiated in validation too: inference_mode is off)
    conservative = ("--model.backbone.init_args.forces", "conservative")
    before = build_cli(["validate", *cli_args(emt_data, tmp_path, *conservative)])
    mae0 = float(before.trainer.callback_metrics["val/force_mae"])
    cli = build_cli(["fit", *cli_args(emt_data, tmp_path, *conservative, "--trainer.max_steps", "150")])
    mae1 = float(cli.trainer.callback_metrics["val/force_mae"])
    assert mae1 < 0.5 * mae0, (mae0, mae1)
    # TensorBoard scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = cli.trainer.logger.log_dir
    acc = EventAccumulator(logdir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "val/force_mae", "val/energy_mae_per_atom", "val/force_cos",
                "throughput/atoms_per_s", "throughput/structures_per_s", "throughput/edges_per_s"):
        assert tag in tags, (tag, sorted(tags))
    # the checkpoint records how to rebuild the backbone
    ckpt_path = cli.trainer.checkpoint_callback.best_model_path or cli.trainer.checkpoint_callback.last_model_path
    ckpt = torch.load(ckpt_path, weights_only=True)  # our checkpoints hold plain data only
    assert ckpt["nnip_backbone"]["class_path"] == "nnip_scale.models.mpnn.MPNN"
    assert ckpt["nnip_backbone"]["init_args"]["width"] == 32
    # schedule-free: the checkpoint holds the averaged (eval-mode) weights
    assert ckpt["optimizer_states"][0]["param_groups"][0]["train_mode"] is False
    # the checkpoint drives ASE molecular dynamics
    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet

    from nnip_scale.calculator import NNIPCalculator

    atoms = read(emt_data, index=0)
    atoms.calc = NNIPCalculator.from_checkpoint(ckpt_path)
    forces0 = atoms.get_forces()
    VelocityVerlet(atoms, 1.0 * units.fs).run(5)
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
    assert forces0.shape == (len(atoms), 3)


def test_element_outside_model_table(emt_data, tmp_path):
    with pytest.raises(ValueError, match=r"Cu \(Z=29\) outside the model's element table \(Z = 1\.\.20\)"):
        build_cli(["validate", *cli_args(emt_data, tmp_path, "--model.backbone.init_args.max_atomic_number", "20")])


def test_data_cutoff_smaller_than_model_cutoff(emt_data, tmp_path):
    with pytest.raises(ValueError, match=r"neighbour-list cutoff \(3.0 Å\) is smaller than the model's cutoff \(4.0 Å\)"):
        build_cli(["validate", *cli_args(emt_data, tmp_path, "--data.cutoff", "3.0")])


def test_main_help(capsys):
    assert main(["--help"]) == 0
    assert "fit | validate | test | predict" in capsys.readouterr().out
