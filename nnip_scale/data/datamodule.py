"""``AtomsDataModule``: the LightningDataModule of nnip-scale (usable from LightningCLI YAML).

With distributed training the module hands the trainer's rank and world size to its own batch
samplers, so the trainer must run with ``use_distributed_sampler=False`` (otherwise Lightning
tries to wrap the custom batch sampler).
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Literal

import lightning
import numpy as np
import torch.utils.data

from .batching import AtomBudgetBatchSampler, Collater, StructureBatchSampler
from .cache import CachedData, load_or_build
from .dataset import AtomsDataset
from .readers import ReaderOptions
from .splits import Subset, nested_subset, split_by_group, stratified_subset
from .stats import DatasetStatistics, compute_statistics
from .structure import DataError

Sources = str | list[str]


def _describe(sources: Sources) -> str:
    """The dataset as the user named it (``builtin:molecules-demo``, a directory, a list), for
    errors about the dataset as a whole (a file-level error names the file and the record)."""
    return str(sources) if isinstance(sources, str) else ", ".join(map(str, sources))


class AtomsDataModule(lightning.LightningDataModule):
    """Train/val/test data from extxyz / ASE db / aselmdb files, directories, globs or ``builtin:NAME``.

    Args:
        train: training source(s): a file, directory, glob, ``builtin:NAME`` or a list of those.
        val: explicit validation source(s); when None, ``val_fraction`` of the training groups.
        test: explicit test source(s); when None, ``test_fraction`` of the training groups.
        predict: structures to predict on (``nnip-scale predict``): any format the readers take,
            no energies or forces needed; None: the test split (else the validation split).
        val_fraction: fraction of training structures (whole groups) held out for validation.
        test_fraction: fraction of training structures (whole groups) held out for testing.
        split_seed: seed of the group split.
        cutoff: neighbour-list cutoff in Å (must be >= the model's cutoff).
        subset: nested training subset: int number of structures or float fraction in (0, 1].
        subset_atoms: nested training subset by number of atoms (the data tokens D).
        subset_fraction: nested training subset as a fraction in (0, 1] of the training split's
            atoms: the shortest prefix of the same seeded permutation holding at least that share
            (1: all of it), so it is nested with ``subset_atoms`` budgets of the same seed (a study's
            ``data.fraction`` budgets, resolved when the data is loaded). At most one of ``subset``,
            ``subset_atoms`` and ``subset_fraction``.
        subset_seed: seed of the fixed permutation whose prefixes are the nested subsets.
        val_subset: validate on this many structures of the validation split, chosen once per
            run by a seeded draw stratified by group (every group in proportion to its size), the
            same for every run that shares the split; None: the whole split. Use this, not
            ``trainer.limit_val_batches`` (which takes the first batches in file order).
        val_subset_atoms: the same, as a number of atoms (at least that many).
        val_subset_seed: seed of the validation subset.
        batch_size: structures per batch (used when ``max_atoms_per_batch`` is None).
        max_atoms_per_batch: atom budget per batch (takes precedence over ``batch_size``).
        num_workers: DataLoader worker processes (neighbour lists are built there).
        cache_dir: where preprocessed caches go (default ``<dir of first source>/.nnip_cache``).
        group_key: ``atoms.info`` key of the trajectory/molecule id (absent: one group per structure).
        energy_key: key of the total energy (eV) in calculator results / ``atoms.info``.
        forces_key: key of the forces (eV/Å) in calculator results / ``atoms.arrays``.
        stress_key: key of the stress (eV/Å³).
        dtype: float dtype of batch tensors (the cache keeps float64).
        shuffle_seed: seed of the per-epoch training shuffle (``seed + epoch``).
        pin_memory: DataLoader ``pin_memory``.
        persistent_workers: keep workers between epochs (None: True when ``num_workers > 0``).
        builtin_root: where ``builtin:NAME`` datasets are generated (None: the generator's default).
    """

    def __init__(
        self,
        train: Sources,
        val: Sources | None = None,
        test: Sources | None = None,
        predict: Sources | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        cutoff: float = 5.0,
        subset: int | float | None = None,
        subset_atoms: int | None = None,
        subset_fraction: float | None = None,
        subset_seed: int = 0,
        val_subset: int | None = None,
        val_subset_atoms: int | None = None,
        val_subset_seed: int = 0,
        batch_size: int = 16,
        max_atoms_per_batch: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        group_key: str = "group",
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        dtype: Literal["float32", "float64"] = "float32",
        shuffle_seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool | None = None,
        builtin_root: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_sources, self.val_sources, self.test_sources = train, val, test
        self.predict_sources = predict
        self._predict_dataset: AtomsDataset | None = None
        self.val_fraction = 0.0 if val is not None else float(val_fraction)
        self.test_fraction = 0.0 if test is not None else float(test_fraction)
        self.split_seed, self.cutoff = split_seed, float(cutoff)
        if isinstance(subset, float) and subset > 1 and subset.is_integer():
            subset = int(subset)  # "--data.subset 1000" arrives as 1000.0 through int | float: a count
        given = [name for name, v in (("subset", subset), ("subset_atoms", subset_atoms),
                                      ("subset_fraction", subset_fraction)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give the training subset as one of subset, subset_atoms or subset_fraction; got "
                             f"{' and '.join(given)}")
        if subset_fraction is not None and not (isinstance(subset_fraction, (int, float))
                                                and not isinstance(subset_fraction, bool)
                                                and 0.0 < subset_fraction <= 1.0):
            raise ValueError(f"subset_fraction={subset_fraction!r}; expected a fraction of the training atoms in "
                             f"(0, 1] (e.g. 0.1 for 10 %)")
        self.subset, self.subset_atoms, self.subset_seed = subset, subset_atoms, subset_seed
        self.subset_fraction = None if subset_fraction is None else float(subset_fraction)
        if val_subset is not None and val_subset_atoms is not None:
            raise ValueError("give the validation subset as val_subset (structures) or val_subset_atoms, not both")
        self.val_subset, self.val_subset_atoms, self.val_subset_seed = val_subset, val_subset_atoms, val_subset_seed
        self.batch_size, self.max_atoms_per_batch = batch_size, max_atoms_per_batch
        self.num_workers, self.cache_dir, self.dtype = num_workers, cache_dir, dtype
        self.shuffle_seed, self.pin_memory = shuffle_seed, pin_memory
        self.persistent_workers = (num_workers > 0) if persistent_workers is None else persistent_workers
        self.builtin_root = builtin_root
        self.options = ReaderOptions(energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                                     group_key=group_key)
        self._datasets: dict[str, AtomsDataset] | None = None
        self.train_subset: Subset | None = None
        self.train_split_structures: int | None = None
        self.train_split_atoms: int | None = None
        self._statistics: DatasetStatistics | None = None

    # ------------------------------------------------------------------ data
    def _load(self, sources) -> CachedData:
        return load_or_build(sources, self.options, self.cache_dir, builtin_root=self.builtin_root)

    def prepare_data(self) -> None:
        """Build the caches (rank 0 only under DDP)."""
        for s in (self.train_sources, self.val_sources, self.test_sources):
            if s is not None:
                self._load(s)

    def setup(self, stage: str | None = None) -> None:
        """Load caches, split by group, take the nested training subset (idempotent)."""
        if self._datasets is not None:
            return
        data = self._load(self.train_sources)
        train, val, test = split_by_group(np.asarray(data.group_id), self.val_fraction, self.test_fraction,
                                          self.split_seed, source=_describe(self.train_sources))
        if self.test_fraction > 0 and len(test) == 0:
            warnings.warn(f"{_describe(self.train_sources)}: test_fraction={self.test_fraction} left the test split empty "
                          f"({len(np.unique(data.group_id))} groups); fit and validate do not need it, `nnip-scale test` "
                          f"would refuse it (raise data.test_fraction or give data.test)", stacklevel=2)
        #: the whole training split (before the nested subset): what subset_fraction is a fraction of
        self.train_split_structures, self.train_split_atoms = len(train), int(data.num_atoms[train].sum())
        self.train_subset = nested_subset(train, data.num_atoms[train], size=self.subset, atoms=self.subset_atoms,
                                          atom_fraction=self.subset_fraction, seed=self.subset_seed,
                                          source=_describe(self.train_sources))
        val_data = self._load(self.val_sources) if self.val_sources is not None else data
        test_data = self._load(self.test_sources) if self.test_sources is not None else data
        if self.val_sources is not None:
            val = np.arange(len(val_data))
        if self.val_subset is not None or self.val_subset_atoms is not None:
            val = stratified_subset(val, np.asarray(val_data.group_id)[val], val_data.num_atoms[val],
                                    structures=self.val_subset, atoms=self.val_subset_atoms,
                                    seed=self.val_subset_seed, source=f"{_describe(self.val_sources or self.train_sources)} (validation split)")
        self._datasets = {
            "train": AtomsDataset(data, np.sort(self.train_subset.indices), self.cutoff),
            "val": AtomsDataset(val_data, val, self.cutoff),
            "test": AtomsDataset(test_data, None if self.test_sources is not None else test, self.cutoff),
        }

    @property
    def train_dataset(self) -> AtomsDataset:
        """The (subset of the) training split; sets the module up on first access."""
        self.setup()
        return self._datasets["train"]

    @property
    def val_dataset(self) -> AtomsDataset:
        self.setup()
        return self._datasets["val"]

    @property
    def test_dataset(self) -> AtomsDataset:
        self.setup()
        return self._datasets["test"]

    # ------------------------------------------------------------------ info
    @property
    def statistics(self) -> DatasetStatistics:
        """Statistics of the training subset, computed once and saved next to the cache."""
        if self._statistics is None:
            self.setup()
            ds = self.train_dataset
            digest = hashlib.sha256(np.ascontiguousarray(ds.indices).tobytes())
            digest.update(repr(self.cutoff).encode())
            path = ds.data.path / f"stats-{digest.hexdigest()[:20]}.json"
            if path.is_file():
                self._statistics = DatasetStatistics.load(path)
            else:
                self._statistics = compute_statistics(ds.data, ds.indices, self.cutoff)
                self._statistics.save(path)
        return self._statistics

    @property
    def n_train_structures(self) -> int:
        self.setup()
        return self.train_subset.n_structures

    @property
    def n_train_atoms(self) -> int:
        self.setup()
        return self.train_subset.n_atoms

    def info(self) -> dict:
        """Sizes of the splits (structures and atoms)."""
        self.setup()
        return {f"n_{name}_{unit}": (len(ds) if unit == "structures" else ds.n_atoms)
                for name, ds in (("train", self.train_dataset), ("val", self.val_dataset), ("test", self.test_dataset))
                for unit in ("structures", "atoms")}

    def dataset_fingerprint(self) -> str:
        """Content fingerprint of the training data (all of it, not the subset): atomic numbers,
        structure sizes and energies of the cache, plus the source file names. Two machines that
        read the same data get the same fingerprint; any relabelling or new frame changes it."""
        if getattr(self, "_fingerprint", None) is None:
            self.setup()
            d = self.train_dataset.data
            h = hashlib.sha256()
            for arr in (d.numbers, d.atom_offsets, d.energy):
                h.update(np.ascontiguousarray(arr).tobytes())
            h.update(repr(sorted(Path(s).name for s in d.sources)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def validation_identity(self, n_structures: int | None = None) -> dict:
        """What a validation measures: the number of structures, atoms and groups and a fingerprint
        of the chosen structures (with the split and the subset rule). ``n_structures``: only the
        first that many were validated (``trainer.limit_val_batches``; unshuffled, file order)."""
        ds = self.val_dataset
        idx = ds.indices
        limited = n_structures is not None and n_structures < len(idx)
        if limited:
            idx = idx[:n_structures]
        h = hashlib.sha256(np.ascontiguousarray(idx).tobytes())
        h.update(self.dataset_fingerprint().encode() if self.val_sources is None else b"explicit")
        for src in ([] if self.val_sources is None else self._load(self.val_sources).sources):
            h.update(Path(src).name.encode())
        return {"val_set": h.hexdigest()[:16] + (f"-first{len(idx)}" if limited else ""),
                "val_structures": int(len(idx)), "val_atoms": int(ds.data.num_atoms[idx].sum()),
                "val_groups": int(len(np.unique(np.asarray(ds.data.group_id)[idx]))),
                "val_selection": ("first batches (limit_val_batches)" if limited else
                                  "stratified subset" if (self.val_subset or self.val_subset_atoms) else "whole split")}

    def split_elements(self, split: str) -> set[int]:
        """Atomic numbers present in a split (``train``, ``val``, ``test``, ``predict``)."""
        ds = {"train": lambda: self.train_dataset, "val": lambda: self.val_dataset, "test": lambda: self.test_dataset,
              "predict": lambda: self.predict_dataset}[split]()
        d = ds.data
        chosen = np.zeros(len(d), dtype=bool)
        chosen[ds.indices] = True
        mask = np.repeat(chosen, d.num_atoms)
        return set(np.unique(np.asarray(d.numbers)[mask]).tolist())

    # ------------------------------------------------------------------ loaders
    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    # Position inside the training epoch, saved in checkpoints. Lightning replays an epoch from its
    # first batch when a run resumes mid-epoch; the batch sampler instead skips the batches already
    # trained on, so a resumed run sees exactly the data of an uninterrupted one (the single-epoch
    # protocol of data-scaling studies depends on it). The datamodule's state is restored before
    # the training loader is built, which is why this lives here and not in the loader.
    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"train_epoch": int(trainer.current_epoch), "train_batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        if state and not (isinstance(state, dict) and set(state) == {"train_epoch", "train_batches_done"}
                          and all(type(v) is int and v >= 0 for v in state.values())):
            raise ValueError(f"checkpoint: entry AtomsDataModule = {state!r:.80}; expected "
                             f"{{'train_epoch': int >= 0, 'train_batches_done': int >= 0}}")
        self._resume_position = (state["train_epoch"], state["train_batches_done"]) if state else None
        if self._resume_position:  # handled here: Lightning's generic mid-epoch warning does not apply
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

    def _loader(self, ds: AtomsDataset, shuffle: bool) -> torch.utils.data.DataLoader:
        world, rank = self._ranks()
        connector = getattr(getattr(self, "trainer", None), "_accelerator_connector", None)
        if world > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ValueError("AtomsDataModule shards its batches across ranks itself; expected a Trainer "
                             "with use_distributed_sampler=False")
        if self.max_atoms_per_batch is not None:
            def locate(k: int, ds=ds) -> tuple[str, int]:
                i = int(ds.indices[k])
                return ds.data.sources[int(ds.data.source_id[i])], int(ds.data.record_index[i])

            sampler = AtomBudgetBatchSampler(ds.num_atoms, self.max_atoms_per_batch, shuffle=shuffle,
                                             seed=self.shuffle_seed, num_replicas=world, rank=rank, locate=locate)
        else:
            sampler = StructureBatchSampler(len(ds), self.batch_size, shuffle=shuffle, seed=self.shuffle_seed,
                                            num_replicas=world, rank=rank)
        if shuffle and getattr(self, "_resume_position", None):
            sampler.skip_once(*self._resume_position)
            self._resume_position = None
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, collate_fn=Collater(self.dtype), num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self):
        self.setup()
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self):
        self.setup()
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self):
        self.setup()
        if len(self.test_dataset) == 0:
            raise DataError(_describe(self.train_sources), None,
                            f"an empty test split (test_fraction={self.test_fraction})",
                            "a test_fraction of at least one group's share of the data, or an explicit data.test source")
        return self._loader(self.test_dataset, shuffle=False)

    @property
    def predict_dataset(self) -> AtomsDataset:
        """``predict`` read without labels (all of it, in file order), else the test split (else the
        validation split) of the training data."""
        if self._predict_dataset is None:
            if self.predict_sources is not None:
                data = load_or_build(self.predict_sources, dataclasses.replace(self.options, labels=False),
                                     self.cache_dir, builtin_root=self.builtin_root)
                self._predict_dataset = AtomsDataset(data, None, self.cutoff)
            else:
                self.setup()
                self._predict_dataset = self.test_dataset if len(self.test_dataset) else self.val_dataset
        return self._predict_dataset

    def predict_dataloader(self):
        return self._loader(self.predict_dataset, shuffle=False)
