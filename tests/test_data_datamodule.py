"""AtomsDataModule: splits, subsets, statistics (computed once, reloaded), loaders, DDP ranks,
YAML/CLI signature, and a real Lightning fit that reshuffles each epoch."""

import types

import lightning
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from test_data_helpers import trajectory_frames, write_extxyz

from nnip_scale.data import AtomsDataModule, DataError, DatasetStatistics


@pytest.fixture()
def source(tmp_path):
    return str(write_extxyz(tmp_path / "train.extxyz", trajectory_frames(10, 3, seed=0)))


def test_splits_subsets_and_info(source, tmp_path):
    dm = AtomsDataModule(source, val_fraction=0.2, test_fraction=0.1, subset_atoms=30, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    d = dm.train_dataset.data
    groups = [set(d.group_id[ds.indices].tolist()) for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert dm.n_train_atoms >= 30 and dm.n_train_atoms == dm.train_dataset.n_atoms
    assert dm.n_train_structures == len(dm.train_dataset)
    full = AtomsDataModule(source, val_fraction=0.2, test_fraction=0.1, cache_dir=str(tmp_path / "c"))
    full.setup()
    assert set(dm.train_dataset.indices) < set(full.train_dataset.indices)  # the subset is nested in the split
    info = full.info()
    assert info["n_train_structures"] + info["n_val_structures"] + info["n_test_structures"] == 30


def test_explicit_val_test_sources(source, tmp_path):
    v = str(write_extxyz(tmp_path / "v" / "val.extxyz", trajectory_frames(2, 2, seed=9)))
    dm = AtomsDataModule(source, val=v, test=v, val_fraction=0.5, test_fraction=0.5, cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert len(dm.train_dataset) == 30 and len(dm.val_dataset) == len(dm.test_dataset) == 4


def test_statistics_before_trainer_cached_on_disk(source, tmp_path, monkeypatch):
    dm = AtomsDataModule(source, cutoff=4.0, subset=0.5, cache_dir=str(tmp_path / "c"))
    st = dm.statistics
    assert isinstance(st, DatasetStatistics) and st.n_structures == dm.n_train_structures and st.cutoff == 4.0
    train_numbers = np.concatenate([dm.train_dataset[k]["numbers"] for k in range(len(dm.train_dataset))])
    assert st.elements == sorted(set(train_numbers.tolist())) and st.n_atoms == len(train_numbers)
    files = list(dm.train_dataset.data.path.glob("stats-*.json"))
    assert len(files) == 1
    from nnip_scale.data import datamodule as dm_mod

    monkeypatch.setattr(dm_mod, "compute_statistics", lambda *a, **k: pytest.fail("statistics recomputed"))
    again = AtomsDataModule(source, cutoff=4.0, subset=0.5, cache_dir=str(tmp_path / "c")).statistics
    assert again.to_dict() == st.to_dict()


def test_loaders_budget_and_ddp_ranks(source, tmp_path):
    dm = AtomsDataModule(source, max_atoms_per_batch=40, val_fraction=0.2, test_fraction=0.2,
                         cache_dir=str(tmp_path / "c"), dtype="float64")
    batches = list(dm.train_dataloader())
    assert all(b["n_atoms"] <= 40 for b in batches) and batches[0]["positions"].dtype == torch.float64
    seen = sorted(i for b in batches for i in b["structure_index"].tolist())
    assert seen == sorted(dm.train_dataset.indices.tolist())
    shares = []
    for rank in range(2):
        dm.trainer = types.SimpleNamespace(world_size=2, global_rank=rank)
        shares.append([i for b in dm.val_dataloader() for i in b["structure_index"].tolist()])
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(dm.val_dataset.indices.tolist())
    dm.trainer = types.SimpleNamespace(world_size=2, global_rank=0,
                                       _accelerator_connector=types.SimpleNamespace(use_distributed_sampler=True))
    with pytest.raises(ValueError, match="expected a Trainer with use_distributed_sampler=False"):
        dm.train_dataloader()
    small = AtomsDataModule(source, max_atoms_per_batch=5, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"train\.extxyz: structure \d+: \d+ atoms exceed the batch budget; expected "):
        small.train_dataloader()


def test_cli_signature_parses_yaml(source, tmp_path):
    parser = ArgumentParser()
    parser.add_class_arguments(AtomsDataModule, "data")
    cfg = parser.parse_string(f"data:\n  train: {source}\n  subset: 12\n  max_atoms_per_batch: 64\n  cutoff: 4.5\n")
    assert cfg.data.subset == 12 and cfg.data.max_atoms_per_batch == 64 and cfg.data.cutoff == 4.5
    cfg = parser.parse_string(f"data:\n  train: [{source}, {source}]\n  subset: 0.25\n")
    assert cfg.data.subset == 0.25 and cfg.data.train == [source, source]


class _Recorder(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen.append([])
        self.seen[-1] += batch["structure_index"].tolist()
        return ((batch["energy"].double() * 0 + self.w) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_reshuffles_each_epoch(source, tmp_path):
    dm = AtomsDataModule(source, batch_size=4, val_fraction=0.0, test_fraction=0.0, cache_dir=str(tmp_path / "c"))
    model = _Recorder()
    trainer = lightning.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, use_distributed_sampler=False, accelerator="cpu",
                                limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2 and sorted(model.seen[0]) == sorted(model.seen[1]) == list(range(30))
    assert model.seen[0] != model.seen[1]
