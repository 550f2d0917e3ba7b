"""``nnip-scale predict --data.predict FILE``: structures without labels in, an extxyz with the
model's predictions out (the same numbers as the ASE calculator), in input order."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read, write

from nnip_scale.calculator import NNIPCalculator
from nnip_scale.cli import main

CKPT = Path(__file__).parent / "data" / "checkpoints" / "mpnn_tiny_v0.ckpt"  # MPNN w8 d1 on EMT Cu/Al


def test_predict_writes_unlabelled_structures_with_predictions(emt_dataset, tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(5):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.numbers[rng.random(len(a)) < 0.3] = 13
        a.rattle(0.05, seed=k)
        frames.append(a)  # no calculator, no energy or forces
    new = tmp_path / "new.extxyz"
    write(new, frames, format="extxyz")
    train = emt_dataset("cual", groups=4, per_group=2)
    args = ["predict", "--model.backbone", "MPNN", "--model.backbone.width", "8", "--model.backbone.depth", "1",
            "--model.backbone.cutoff", "4.0", "--model.backbone.max_atomic_number", "30",
            "--data.train", str(train), "--data.predict", str(new), "--data.cutoff", "4.0",
            "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "2",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", str(CKPT)]
    assert main(args) == 0
    out = list((tmp_path / "runs").rglob("predictions.extxyz"))
    assert len(out) == 1 and not list((tmp_path / "runs").rglob("*.tmp"))
    predicted = read(out[0], index=":")
    assert len(predicted) == 5
    calc = NNIPCalculator.from_checkpoint(CKPT, dtype=torch.float32)
    for k, (p, ref) in enumerate(zip(predicted, frames)):
        np.testing.assert_allclose(p.positions, ref.positions, atol=1e-6)
        assert p.info["source"] == str(new) and p.info["record"] == k
        ref = ref.copy()
        ref.calc = calc
        assert p.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(p.get_forces(), ref.get_forces(), atol=1e-4)
        assert p.get_potential_energies().sum() == pytest.approx(p.get_potential_energy(), abs=1e-4)


def test_predict_refuses_elements_the_model_never_saw(emt_dataset, tmp_path, capsys):
    new = tmp_path / "zn.extxyz"
    write(new, [bulk("Zn", "fcc", a=3.8, cubic=True)], format="extxyz")
    train = emt_dataset("cual", groups=4, per_group=2)
    args = ["predict", "--model.backbone", "MPNN", "--model.backbone.width", "8", "--model.backbone.depth", "1",
            "--model.backbone.cutoff", "4.0", "--model.backbone.max_atomic_number", "30",
            "--data.train", str(train), "--data.predict", str(new), "--data.cutoff", "4.0",
            "--data.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", str(CKPT)]
    assert main(args) == 2
    assert "the prediction data contain element(s) Zn (Z=30) that the model was never trained on" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("predictions.extxyz"))


def test_an_interrupted_prediction_leaves_no_file(emt_dataset, tmp_path, monkeypatch):
    from nnip_scale.training import predict

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted mid-prediction")

    new = tmp_path / "new.extxyz"
    write(new, [bulk("Cu", "fcc", a=3.6, cubic=True)] * 3, format="extxyz")
    train = emt_dataset("cual", groups=4, per_group=2)
    monkeypatch.setattr(predict.PredictionWriter, "write_on_batch_end", fail)
    args = ["predict", "--model.backbone", "MPNN", "--model.backbone.width", "8", "--model.backbone.depth", "1",
            "--model.backbone.cutoff", "4.0", "--model.backbone.max_atomic_number", "30",
            "--data.train", str(train), "--data.predict", str(new), "--data.cutoff", "4.0",
            "--data.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", str(CKPT)]
    with pytest.raises(RuntimeError, match="interrupted mid-prediction"):
        main(args)
    assert not [p for p in (tmp_path / "runs").rglob("predictions*")]
