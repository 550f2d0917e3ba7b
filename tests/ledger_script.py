"""Subprocess training script for the ledger resume test: a fixed stream of identical-size batches,
validation and a checkpoint every 5 steps. argv: ROOT MAX_STEPS SLEEP_S_PER_STEP [resume]"""

import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from batch_utils import batch_from_atoms  # noqa: E402
from ledger_models import LinearPotential  # noqa: E402

from nnip_scale.training import ComputeLedger, NNIPModule  # noqa: E402


class Slow(L.Callback):
    def __init__(self, s):
        self.s = s

    def on_train_batch_end(self, *args):
        time.sleep(self.s)


def main():
    root, max_steps, sleep_s = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    resume = len(sys.argv) > 4
    from ase.build import molecule

    batch = batch_from_atoms([molecule("H2O"), molecule("CH4")], 3.0, dtype=torch.float32)
    train = torch.utils.data.DataLoader([batch] * 1000, batch_size=None, collate_fn=lambda b: b)
    val = torch.utils.data.DataLoader([batch] * 2, batch_size=None, collate_fn=lambda b: b)
    L.seed_everything(0)
    module = NNIPModule(LinearPotential(4), optimizer="adamw", lr=1e-3, warmup_steps=0)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=5, save_last=True, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=max_steps, val_check_interval=5, limit_val_batches=2, logger=False,
        callbacks=[ComputeLedger(path=str(root / "ledger.jsonl"), run_id="r"), ckpt, Slow(sleep_s)],
        enable_progress_bar=False, default_root_dir=root, inference_mode=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, train, val, ckpt_path=str(root / "ckpt" / "last.ckpt") if resume else None)


if __name__ == "__main__":
    main()
