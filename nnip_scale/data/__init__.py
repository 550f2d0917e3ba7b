"""The data layer: structure records, readers (extxyz / ase.io, ASE db, aselmdb), validation,
exact neighbour lists, the on-disk cache, group splits and nested subsets, batching, statistics
and the LightningDataModule. See docs/data.md."""

from .batching import AtomBudgetBatchSampler, Collater, StructureBatchSampler, collate
from .cache import CachedData, load_or_build
from .datamodule import AtomsDataModule
from .dataset import AtomsDataset
from .neighbors import brute_force_neighbor_list, neighbor_list
from .readers import ReaderOptions, read_all, read_structures, resolve_sources
from .splits import Subset, nested_subset, split_by_group, stratified_subset
from .stats import DatasetStatistics, compute_statistics, fit_element_energies
from .structure import DataError, Structure
from .validate import validate_structure

__all__ = [
    "AtomBudgetBatchSampler", "AtomsDataModule", "AtomsDataset", "CachedData", "Collater", "DataError",
    "DatasetStatistics", "ReaderOptions", "Structure", "StructureBatchSampler", "Subset",
    "brute_force_neighbor_list", "collate", "compute_statistics", "fit_element_energies", "load_or_build",
    "nested_subset", "neighbor_list", "read_all", "read_structures", "resolve_sources", "split_by_group", "stratified_subset",
    "validate_structure",
]
