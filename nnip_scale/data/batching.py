"""Collate (list of dataset items -> the batch dict of docs/conventions.md) and batch samplers:
a fixed number of structures per batch, or an atom budget (pack structures so that each batch
holds at most ``max_atoms`` atoms). Both shuffle per epoch with ``seed + epoch`` (call
``set_epoch``; Lightning does) and split the batches between DDP ranks.

Distributed shares: batches are formed from the whole dataset identically on every rank, then
rank ``r`` takes batches ``r, r + W, r + 2W, ...``. With ``drop_uneven=True`` (the default for
training) every rank gets ``floor(n_batches / W)`` batches (at most ``W - 1`` batches, a different
random set each epoch, are skipped) so all ranks run the same number of steps. With
``drop_uneven=False`` (validation/test) every structure is seen exactly once overall, nothing is
duplicated to pad, and ranks may differ by one batch.
"""

from __future__ import annotations

import abc
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.utils.data

from . import keys as K
from .structure import DataError

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


#: optional per-structure fields of an item -> the batch key they fill (all items have one, or none)
_OPTIONAL = {"energy": K.ENERGY, "forces": K.FORCES, "charge": K.CHARGE, "spin": K.SPIN, "index": K.STRUCTURE_INDEX}


def _has(item: Mapping, name: str) -> bool:
    return item.get(name) is not None


def edge_layout(edge_index: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge layout of a batch whose edges are sorted by receiver (``edge_index[0]`` ascending, as
    :func:`build_batch` makes them): ``receiver_ptr`` int64 [n_atoms + 1] (the edges of atom ``i``
    are ``ptr[i]:ptr[i+1]``) and ``sender_order`` int64 [E] (the edges by ascending sender
    ``edge_index[1]``, increasing edge id within a sender). The native message-passing kernels take
    both instead of sorting the edges in every call (docs/ops.md). Raises ValueError when the
    receivers are not sorted."""
    receiver, sender = edge_index[0], edge_index[1]
    if receiver.numel() > 1 and bool((receiver[1:] < receiver[:-1]).any()):
        k = int(torch.nonzero(receiver[1:] < receiver[:-1])[0, 0])
        raise ValueError(f"edge_layout: edge_index[0] must be sorted ascending (edges sorted by receiver, as "
                         f"build_batch makes them); edge {k + 1} has receiver {int(receiver[k + 1])} < "
                         f"{int(receiver[k])} of edge {k}")
    ptr = torch.searchsorted(receiver, torch.arange(n_atoms + 1, device=receiver.device))
    return ptr, torch.argsort(sender, stable=True)


def build_batch(items: Sequence[Mapping], dtype: str | torch.dtype = torch.float32,
                device: str | torch.device | None = None) -> dict:
    """The batch dict of docs/conventions.md (keys: :mod:`nnip_scale.data.keys`) from per-structure
    records: the one builder of the batch, used by :func:`collate`, the ASE calculator and the tests.

    Each item is a mapping with ``numbers`` [n], ``positions`` [n,3] (Å), ``cell`` [3,3] (zeros
    when non-periodic), ``pbc`` [3], ``edge_index`` [2,e] (indices local to the structure) and
    ``edge_shift`` [e,3] (:class:`AtomsDataset` items, or :func:`atoms_item`); optionally
    ``energy``, ``forces`` [n,3], ``charge``, ``spin`` and ``index`` (its index in a dataset): each
    of these fills its batch key when every item has it and is left out when none has it (some
    items with and some without is an error), and ``stress`` [3,3] (or None) fills ``stress`` when
    every item has one. Float tensors are ``dtype``; everything is on ``device`` (default: CPU);
    ``n_atoms``, ``n_structures``, ``n_edges`` are plain Python ints.

    The edges are sorted by receiver (``edge_index[0]``, stable: each structure's neighbour-list
    order within a centre) and the batch carries their layout (:func:`edge_layout`), computed here
    once per batch rather than in every kernel call."""
    if len(items) == 0:
        raise ValueError("build_batch: no structures; expected at least one item")
    dt = resolve_dtype(dtype)
    counts = np.fromiter((len(it["numbers"]) for it in items), dtype=np.int64, count=len(items))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_edges_each = [np.shape(it["edge_index"])[1] for it in items]
    edge_index = np.concatenate([np.asarray(it["edge_index"]) + o for it, o in zip(items, offsets)], axis=1)
    edge_shift = np.concatenate([np.asarray(it["edge_shift"]) for it in items]).reshape(-1, 3)
    if edge_index.shape[1] > 1 and (np.diff(edge_index[0]) < 0).any():  # neighbour lists come in any order
        by_receiver = np.argsort(edge_index[0], kind="stable")
        edge_index, edge_shift = edge_index[:, by_receiver], edge_shift[by_receiver]
    f = lambda arr: torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dt)  # noqa: E731
    i64 = lambda arr: torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)).to(device=device)  # noqa: E731
    n_atoms = int(counts.sum())
    S = len(items)
    batch = {
        K.ATOMIC_NUMBERS: i64(np.concatenate([it["numbers"] for it in items])),
        K.POSITIONS: f(np.concatenate([it["positions"] for it in items])),
        K.CELL: f(np.stack([it["cell"] for it in items])),
        K.PBC: torch.from_numpy(np.stack([it["pbc"] for it in items]).astype(bool)).to(device=device),
        K.BATCH: i64(np.repeat(np.arange(S, dtype=np.int64), counts)),
        K.NUM_ATOMS: i64(counts),
        K.EDGE_INDEX: i64(edge_index),
        K.EDGE_SHIFT: f(edge_shift),
    }
    layout = edge_layout(torch.from_numpy(np.ascontiguousarray(edge_index, dtype=np.int64)), n_atoms)  # on the host
    batch[K.EDGE_RECEIVER_PTR], batch[K.EDGE_SENDER_ORDER] = (t.to(device=device) for t in layout)
    for name, key in _OPTIONAL.items():
        have = sum(_has(it, name) for it in items)
        if have == 0:
            continue
        if have < S:
            k = next(k for k, it in enumerate(items) if not _has(it, name))
            raise ValueError(f"build_batch: item {k} has no {name!r} but {have} of the {S} items have one; "
                             f"expected every item or none to carry {name!r}")
        if name == "energy":
            batch[key] = f(np.array([it["energy"] for it in items], dtype=np.float64))
        elif name == "forces":
            batch[key] = f(np.concatenate([it["forces"] for it in items]))
        else:
            batch[key] = torch.tensor([int(it[name]) for it in items], dtype=torch.long, device=device)
    batch[K.N_ATOMS] = n_atoms
    batch[K.N_STRUCTURES] = S
    batch[K.N_EDGES] = int(sum(n_edges_each))
    if all(_has(it, "stress") for it in items):
        batch[K.STRESS] = f(np.stack([it["stress"] for it in items]))
    return batch


def atoms_item(atoms, edge_index: np.ndarray, edge_shift: np.ndarray) -> dict:
    """The unlabelled :func:`build_batch` item of an ``ase.Atoms`` with its neighbour list: the
    cell is zeros when no direction is periodic (docs/conventions.md)."""
    return {"numbers": atoms.numbers, "positions": atoms.positions,
            "cell": atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3)), "pbc": atoms.pbc,
            "edge_index": edge_index, "edge_shift": edge_shift}


def collate(items: Sequence[dict], dtype: str | torch.dtype = torch.float32) -> dict:
    """The batch dict of docs/conventions.md from :class:`AtomsDataset` items (:func:`build_batch`).
    Float tensors are ``dtype``; ``n_atoms``, ``n_structures``, ``n_edges`` are plain Python ints."""
    return build_batch(items, dtype)


class Collater:
    """Picklable ``collate`` with a fixed dtype (for DataLoader workers)."""

    def __init__(self, dtype: str | torch.dtype = "float32"):
        self.dtype = resolve_dtype(dtype)

    def __call__(self, items):
        return collate(items, self.dtype)


class _EpochForwarder:
    """Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler``: forward it."""

    def __init__(self, owner: "_RankedBatchSampler"):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class _RankedBatchSampler(torch.utils.data.Sampler, abc.ABC):
    """Shared shuffling (seed + epoch) and DDP sharing of the batches (module docstring)."""

    def __init__(self, n: int, shuffle: bool, seed: int, num_replicas: int, rank: int, drop_uneven: bool | None):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} of {num_replicas} replicas; expected 0 <= rank < num_replicas")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.drop_uneven = shuffle if drop_uneven is None else drop_uneven
        self.epoch = 0
        self.sampler = _EpochForwarder(self)
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip once, after a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        return np.arange(self.n)

    @abc.abstractmethod
    def _all_batches(self) -> list[np.ndarray]:
        """Every batch of the epoch (all ranks), as arrays of dataset indices."""

    def _my_batches(self) -> list[np.ndarray]:
        batches = self._all_batches()
        if self.drop_uneven:
            k = len(batches) // self.num_replicas
            if k == 0:
                raise DataError("<batch sampler>", None, f"{len(batches)} batches for {self.num_replicas} ranks",
                                "at least one batch per rank (smaller batches or more data)")
            batches = batches[: k * self.num_replicas]
        return batches[self.rank:: self.num_replicas]

    def skip_once(self, epoch: int, n_batches: int) -> None:
        """Make the next pass over ``epoch`` start after its first ``n_batches`` batches (this
        rank's): a run resumed mid-epoch continues where it stopped instead of replaying them."""
        self._skip = (int(epoch), int(n_batches))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._my_batches()
        if self._skip is not None:
            epoch, n = self._skip
            self._skip = None
            if epoch == self.epoch:
                batches = batches[n:]
        for b in batches:
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._my_batches())


class StructureBatchSampler(_RankedBatchSampler):
    """Batches of ``batch_size`` structures (the last one may be smaller)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_uneven: bool | None = None):
        super().__init__(n, shuffle, seed, num_replicas, rank, drop_uneven)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        self.batch_size = batch_size

    def _all_batches(self):
        order = self._order()
        return [order[i: i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class AtomBudgetBatchSampler(_RankedBatchSampler):
    """Pack structures (in shuffled order) into batches of at most ``max_atoms`` atoms.

    ``num_atoms`` int [N]: atoms per dataset item. A structure larger than the budget is a
    :class:`DataError` naming it (``locate(k) -> (file, record index)`` when given, else the
    dataset index).
    """

    def __init__(self, num_atoms: Sequence[int], max_atoms: int, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_uneven: bool | None = None,
                 locate: Callable[[int], tuple[str, int]] | None = None):
        self.num_atoms = np.asarray(num_atoms, dtype=np.int64)
        super().__init__(len(self.num_atoms), shuffle, seed, num_replicas, rank, drop_uneven)
        too_big = np.nonzero(self.num_atoms > max_atoms)[0]
        if len(too_big):
            k = int(too_big[0])
            source, index = locate(k) if locate is not None else ("<dataset>", k)
            raise DataError(source, index, f"{int(self.num_atoms[k])} atoms exceed the batch budget",
                            f"max_atoms_per_batch >= the largest structure ({int(self.num_atoms.max())} atoms)")
        self.max_atoms = int(max_atoms)
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _all_batches(self):
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        order = self._order()
        sizes = self.num_atoms[order]
        batches, start, total = [], 0, 0
        for k, s in enumerate(sizes.tolist()):
            if total + s > self.max_atoms:
                batches.append(order[start:k])
                start, total = k, 0
            total += s
        if start < len(order):
            batches.append(order[start:])
        self._cached = (self.epoch, batches)
        return batches
