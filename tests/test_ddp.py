"""DDP on 2 CPU processes (gloo) equals one process on the same global batch: validation metrics
(torchmetrics sum-reduction, no sampler padding) and compute-ledger totals (reduced over ranks).

The 63 training structures make 7 full global batches of 8 (single process) = 2 × 4 (DDP); the
run stops within them. (Past the epoch's last, partial batch the runs differ by design: DDP
averages the ranks' mean gradients, which weighs a 4 + 3 split differently from a batch of 7.)
The 27 validation structures make 7 DDP batches of ≤ 4, shared 4/3 between the ranks: nothing is
duplicated to pad, and the metrics still equal the single-process ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _emt_data import write_emt


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    # 90 structures (10 groups × 9): the validation split does not divide evenly by 2 ranks
    return write_emt(tmp_path_factory.mktemp("ddp_data") / "emt.extxyz", groups=10, per_group=9, seed=1,
                     rattle=0.1, al_fraction=0.4)


def fit(data, out: Path, devices: int, batch_size: int):
    args = [
        sys.executable, "-m", "nnip_scale.cli", "fit",
        "--seed_everything", "0",
        "--model.backbone.class_path", "nnip_scale.models.MPNN",
        "--model.backbone.init_args.width", "16",
        "--model.backbone.init_args.depth", "2",
        "--model.backbone.init_args.cutoff", "4.0",
        "--model.backbone.init_args.backend", "torch",
        "--model.lr", "0.003",
        "--data.train", str(data),
        "--data.cutoff", "4.0",
        "--data.val_fraction", "0.3",
        "--data.test_fraction", "0.0",
        "--data.batch_size", str(batch_size),
        "--data.dtype", "float64",
        "--data.cache_dir", str(out / "cache"),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.precision", "64-true",
        "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "3",
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false",
        "--trainer.logger.init_args.save_dir", str(out / "runs"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ledger,) = (out / "runs").glob("*/version_*/ledger.jsonl")
    return [json.loads(line) for line in ledger.read_text().splitlines()]


def test_ddp_equals_single_process(emt_data, tmp_path):
    single = fit(emt_data, tmp_path / "single", devices=1, batch_size=8)
    ddp = fit(emt_data, tmp_path / "ddp", devices=2, batch_size=4)
    assert [r["step"] for r in single] == [r["step"] for r in ddp] == [3, 6]
    assert [r["devices"] for r in ddp] == [2, 2]
    for a, b in zip(single, ddp):
        for key in ("structures_seen", "atoms_seen", "edges_seen", "n_params"):
            assert a[key] == b[key], key
        for key in ("val_loss", "val_energy_mae_per_atom", "val_force_mae", "val_force_cos"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
        assert b["val_flops"] == pytest.approx(a["val_flops"], rel=1e-6)
        assert b["flops"] == pytest.approx(a["flops"], rel=1e-6)
