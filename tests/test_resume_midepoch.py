"""A run resumed from a mid-epoch checkpoint trains on exactly the batches the uninterrupted run
trains on: the loader skips what was already trained on instead of replaying the epoch's start."""

import json

import lightning as L
import pytest
from _emt_data import write_cu_emt  # tests/_emt_data.py
from cli_utils import data_args, trainer_args

from nnip_scale.cli import build_cli


class RecordBatches(L.Callback):
    """Appends each training batch's structure indices to a JSON Lines file."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.path, "a") as fh:
            fh.write(json.dumps([trainer.global_step, batch["structure_index"].tolist()]) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cu_emt(tmp_path_factory.mktemp("resume_data") / "cu.extxyz", groups=8, per_group=10, seed=2)


def fit(data, root, record, *extra):
    args = [
        "fit", "--seed_everything", "0",
        "--model.backbone.class_path", "nnip_scale.models.MPNN",
        "--model.backbone.init_args.width", "8", "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.cutoff", "3.0",
        *data_args(data, root, cutoff=3.0, val_fraction=0.25, batch_size=6),
        *trainer_args(root, val_every=4), "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={root / 'ckpt'}", "--trainer.callbacks.save_last=true",
        "--trainer.callbacks+=test_resume_midepoch.RecordBatches", f"--trainer.callbacks.path={record}",
        *extra,
    ]
    return build_cli(args)


def steps(path):
    return [tuple(json.loads(line)[1]) for line in open(path)]


def test_resume_mid_epoch_trains_on_the_same_batches(data, tmp_path):
    # 60 training structures / 6 = 10 batches per epoch; two epochs uninterrupted
    fit(data, tmp_path / "ref", tmp_path / "ref.jsonl", "--trainer.max_epochs", "2")
    ref = steps(tmp_path / "ref.jsonl")
    assert len(ref) == 20
    # stop at step 8 (checkpoint after the validation at step 8, mid-epoch), then resume to the end
    fit(data, tmp_path / "run", tmp_path / "run.jsonl", "--trainer.max_steps", "8")
    cli = fit(data, tmp_path / "run", tmp_path / "run.jsonl", "--trainer.max_epochs", "2",
              "--ckpt_path", str(tmp_path / "run" / "ckpt" / "last.ckpt"))
    got = steps(tmp_path / "run.jsonl")
    assert got == ref
    assert cli.trainer.global_step == 20
    # every training structure seen exactly once per epoch
    assert sorted(i for b in got[:10] for i in b) == sorted(i for b in ref[10:] for i in b)
