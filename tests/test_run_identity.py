"""Runs that know what they are: every ledger row carries the run's identity and what its
validation measured; a plain ``fit --ckpt_path`` continues the same run; every fit records (short
runs too), fast_dev_run records nothing, no logger writes nothing into the working directory;
elements never trained on are refused; stress is measured when the data have it."""

import json
from pathlib import Path

import numpy as np
import pytest
from _emt_data import write_cu_emt  # tests/_emt_data.py
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from nnip_scale.cli import build_cli

IDENTITY = ("run_id", "arch", "model_class", "dataset", "force_mode", "loss", "cutoff", "config_hash", "val_set",
            "val_structures", "val_atoms", "val_groups", "device_hours", "accelerator")


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    return write_cu_emt(tmp_path_factory.mktemp("cu") / "cu.extxyz", groups=8, per_group=6, seed=0)


def args(data, tmp_path: Path, *extra, val_subset: int | None = 6) -> list[str]:
    return [
        "--seed_everything", "0",
        "--model.backbone.class_path", "nnip_scale.models.MPNN",
        "--model.backbone.init_args.width", "8", "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.cutoff", "4.0", "--model.backbone.init_args.max_atomic_number", "30",
        "--model.warmup_steps", "2",
        "--data.train", str(data), "--data.cutoff", "4.0", "--data.val_fraction", "0.25",
        "--data.test_fraction", "0.0", "--data.batch_size", "4", "--data.cache_dir", str(tmp_path / "cache"),
        *(["--data.val_subset", str(val_subset)] if val_subset else []),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.val_check_interval", "50", "--trainer.check_val_every_n_epoch", "null",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
        *extra,
    ]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_fit_records_identity_and_resume_continues_the_run(cu, tmp_path):
    # 7 steps, far below val_check_interval: the fit still validates at its end, writes a row and a checkpoint
    cli = build_cli(["fit", *args(cu, tmp_path, "--trainer.max_steps", "7")])
    ledger = Path(cli.trainer.logger.log_dir) / "ledger.jsonl"
    first = rows(ledger)
    assert [r["step"] for r in first] == [7]
    row = first[0]
    for key in IDENTITY:
        assert row.get(key) not in (None, ""), key
    assert row["arch"] == "mpnn" and row["model_class"] == "MPNN" and row["force_mode"] == "direct"
    assert row["loss"] == "mae_l2(energy=1,force=1)" and row["cutoff"] == 4.0
    assert row["val_structures"] == 6 and row["val_atoms"] == 24 and row["val_groups"] == 2
    assert row["accelerator"] == "cpu" and "gpu_hours" not in row and row["device_hours"] > 0
    last = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert last.is_file()
    # a plain resume: Lightning starts logger version_1, the ledger continues version_0's file and run id
    cli2 = build_cli(["fit", *args(cu, tmp_path, "--trainer.max_steps", "12", "--ckpt_path", str(last))])
    assert Path(cli2.trainer.logger.log_dir).name == "version_1"
    assert not (Path(cli2.trainer.logger.log_dir) / "ledger.jsonl").exists()
    both = rows(ledger)
    assert [r["step"] for r in both] == [7, 12]
    assert {r["run_id"] for r in both} == {row["run_id"]} and both[1]["flops"] > both[0]["flops"]
    assert both[1]["dataset"] == row["dataset"] and both[1]["val_set"] == row["val_set"]
    assert both[1]["config_hash"] == row["config_hash"]


def test_fast_dev_run_and_no_logger_leave_the_working_directory_alone(cu, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    base = [a for a in args(cu, tmp_path / "x") if not a.startswith("--trainer.default_root_dir")]
    base = [a for a in base if a != str(tmp_path / "x")]
    build_cli(["fit", *base, "--trainer.fast_dev_run", "true"])
    assert not list(tmp_path.rglob("ledger.jsonl")) and not list(tmp_path.rglob("*.ckpt"))
    assert sorted(p.name for p in work.iterdir()) == []
    cli = build_cli(["fit", *base, "--trainer.logger", "false", "--trainer.max_steps", "3"])
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    ledger = work / "runs" / "no_logger" / "version_0" / "ledger.jsonl"
    assert rows(ledger)[-1]["run_id"] == "no_logger/version_0"
    assert Path(cli.trainer.checkpoint_callback.last_model_path).parent == ledger.parent / "checkpoints"


def test_val_subset_is_fixed_stratified_and_shared(cu, tmp_path):
    from nnip_scale.data import AtomsDataModule

    common = dict(train=str(cu), cutoff=4.0, val_fraction=0.25, test_fraction=0.0, cache_dir=str(tmp_path / "c"))
    a = AtomsDataModule(**common, subset_atoms=40, val_subset=6)
    b = AtomsDataModule(**common, subset_atoms=120, val_subset=6)
    assert np.array_equal(a.val_dataset.indices, b.val_dataset.indices)
    assert a.validation_identity() == b.validation_identity()
    full = AtomsDataModule(**common)
    groups = np.asarray(full.val_dataset.data.group_id)
    per_group = np.bincount(groups[a.val_dataset.indices], minlength=groups.max() + 1)
    assert sorted(per_group[per_group > 0].tolist()) == [3, 3]  # 2 val groups of 6 frames: 3 each
    assert a.validation_identity() != full.validation_identity()
    limited = full.validation_identity(n_structures=4)
    assert limited["val_set"].endswith("-first4") and limited["val_selection"].startswith("first batches")


def test_limit_val_batches_warns_and_is_recorded(cu, tmp_path):
    with pytest.warns(UserWarning, match="limit_val_batches=2: every validation uses only the first batches"):
        cli = build_cli(["fit", *args(cu, tmp_path, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "2",
                                      val_subset=None)])
    row = rows(Path(cli.trainer.logger.log_dir) / "ledger.jsonl")[-1]
    assert row["val_structures"] == 8 and row["val_set"].endswith("-first8")


def write_labelled(path: Path, symbols_per_group: list[list[str]], frames: int, stress: bool = False) -> Path:
    rng = np.random.default_rng(1)
    out = []
    for g, symbols in enumerate(symbols_per_group):
        for _ in range(frames):
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.set_chemical_symbols(symbols)
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            a.calc = EMT()
            labels = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
            if stress:
                labels["stress"] = a.get_stress()
            a.calc = SinglePointCalculator(a, **labels)
            a.info["group"] = f"g{g}"
            out.append(a)
    write(path, out, format="extxyz")
    return path


def test_elements_never_trained_on_are_refused_or_reported_apart(tmp_path):
    train = write_labelled(tmp_path / "cu.extxyz", [["Cu"] * 4] * 4, 4)
    val = write_labelled(tmp_path / "val.extxyz", [["Cu"] * 4, ["Cu", "Cu", "Al", "Cu"]], 3)
    common = [*args(train, tmp_path, val_subset=None), "--data.val", str(val)]
    with pytest.raises(ValueError, match=r"validation data contain element\(s\) Al \(Z=13\) that the model was never "
                                         r"trained on \(it knows Cu\)"):
        build_cli(["validate", *common])
    with pytest.warns(UserWarning, match=r"Al \(Z=13\) never seen in training"):
        cli = build_cli(["validate", *common, "--model.unseen_elements", "separate"])
    metrics = cli.trainer.callback_metrics
    assert "val/unseen_elements/force_mae" in metrics and "val/force_mae" in metrics
    assert float(metrics["val/unseen_elements/energy_mae_per_atom"]) != float(metrics["val/energy_mae_per_atom"])


def test_stress_is_measured_when_the_data_have_it(tmp_path):
    data = write_labelled(tmp_path / "cu.extxyz", [["Cu"] * 4] * 6, 4, stress=True)
    cli = build_cli(["fit", *args(data, tmp_path, "--trainer.max_steps", "3", val_subset=None,
                                  ) + ["--model.backbone.init_args.forces", "conservative",
                                       "--model.backbone.init_args.compute_stress", "true", "--model.stress_weight", "1"]])
    row = rows(Path(cli.trainer.logger.log_dir) / "ledger.jsonl")[-1]
    assert row["val_stress_mae"] > 0
    assert row["val_stress_mae_gpa"] == pytest.approx(row["val_stress_mae"] * 160.2176634)
    assert row["loss"] == "mae_l2(energy=1,force=1,stress=1)" and row["arch"] == "mpnn_conservative"


def test_charge_and_spin_the_model_ignores_are_said(tmp_path):
    from ase.io import read

    data = write_labelled(tmp_path / "cu.extxyz", [["Cu"] * 4] * 4, 3)
    frames = read(data, index=":")
    for k, a in enumerate(frames):
        a.info.update(charge=-1 if k % 3 == 0 else 0, spin=2 if k % 4 == 0 else 1)
    write(data, frames, format="extxyz")
    with pytest.warns(UserWarning, match=r"structure\(s\) with charge != 0 and \d+ with spin multiplicity != 1 "
                                         r"\(of \d+\); MPNN does not read charge or spin"):
        build_cli(["fit", *args(data, tmp_path, "--trainer.max_steps", "1", val_subset=None)])
