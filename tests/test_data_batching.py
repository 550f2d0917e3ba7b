"""Collate (the batch contract of docs/conventions.md) and the batch samplers (atom budget,
fixed size, per-epoch shuffle, DDP shares)."""

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list
from test_data_helpers import trajectory_frames, write_extxyz

from nnip_scale.data import (
    AtomBudgetBatchSampler,
    AtomsDataset,
    DataError,
    StructureBatchSampler,
    collate,
    load_or_build,
    read_all,
)


def test_collate_matches_contract_and_ase_neighbours(tmp_path):
    frames = trajectory_frames(4, 1, seed=0, stress=True)
    p = write_extxyz(tmp_path / "d.extxyz", frames)
    ds = AtomsDataset(load_or_build(p), cutoff=4.0)
    b = collate([ds[k] for k in (2, 0, 3)])
    S, A = 3, sum(len(frames[k]) for k in (2, 0, 3))
    assert (b["n_structures"], b["n_atoms"]) == (S, A) and all(type(b[k]) is int for k in ("n_atoms", "n_structures", "n_edges"))
    assert b["positions"].dtype == torch.float32 and b["edge_index"].dtype == torch.int64
    assert b["batch"].tolist() == sum(([s] * len(frames[k]) for s, k in enumerate((2, 0, 3))), [])
    assert b["structure_index"].tolist() == [2, 0, 3] and b["num_atoms"].tolist() == [len(frames[k]) for k in (2, 0, 3)]
    assert "stress" not in b  # frame 2 is a molecule without stress
    assert b["edge_index"].shape == (2, b["n_edges"]) and b["edge_shift"].shape == (b["n_edges"], 3)
    # edges per structure equal ASE's neighbour list, and r_ij follows the conventions' formula
    pos, cell = b["positions"].double(), b["cell"].double()
    i, j = b["edge_index"]
    r = pos[j] - pos[i] + torch.einsum("ek,ekl->el", b["edge_shift"].double(), cell[b["batch"][i]])
    assert (r.norm(dim=1) < 4.0).all()
    for s, k in enumerate((2, 0, 3)):
        ai, aj, d = ase_neighbor_list("ijd", frames[k], 4.0)
        mine = r.norm(dim=1)[b["batch"][i] == s].numpy()
        np.testing.assert_allclose(np.sort(mine), np.sort(d), atol=1e-5)
    np.testing.assert_allclose(b["energy"].numpy(), [frames[k].get_potential_energy() for k in (2, 0, 3)], rtol=1e-6)
    b64 = collate([ds[0], ds[3]], dtype="float64")
    assert b64["positions"].dtype == torch.float64 and b64["stress"].shape == (2, 3, 3)  # both periodic with stress
    np.testing.assert_array_equal(b64["forces"][: len(frames[0])].numpy(), read_all(p)[0].forces)  # float64 kept


def test_atom_budget_sampler_packs_and_shuffles_deterministically():
    sizes = np.random.default_rng(0).integers(1, 30, 200)
    s = AtomBudgetBatchSampler(sizes, max_atoms=64, shuffle=True, seed=5)
    e0 = list(s)
    assert sorted(sum(e0, [])) == list(range(200))
    assert all(sizes[b].sum() <= 64 for b in e0)
    # greedy packing: adding the next batch's first structure would exceed the budget
    assert all(sizes[a].sum() + sizes[b[0]] > 64 for a, b in zip(e0, e0[1:]))
    assert list(AtomBudgetBatchSampler(sizes, 64, seed=5)) == e0 and len(s) == len(e0)
    s.set_epoch(1)
    assert list(s) != e0
    fixed = list(AtomBudgetBatchSampler(sizes, 64, shuffle=False))
    assert sum(fixed, []) == list(range(200))


def test_structure_larger_than_budget_is_named():
    with pytest.raises(DataError) as e:
        AtomBudgetBatchSampler([3, 40, 5], 32, locate=lambda k: ("data/x.extxyz", 17 + k))
    assert str(e.value) == ("data/x.extxyz: structure 18: 40 atoms exceed the batch budget; "
                            "expected max_atoms_per_batch >= the largest structure (40 atoms)")


@pytest.mark.parametrize("make", [lambda **k: StructureBatchSampler(23, 4, **k),
                                  lambda **k: AtomBudgetBatchSampler(np.arange(23) % 5 + 1, 9, **k)])
def test_ddp_shares(make):
    world = 3
    train = [list(make(shuffle=True, seed=1, num_replicas=world, rank=r)) for r in range(world)]
    lens = {len(t) for t in train}
    assert len(lens) == 1  # same number of steps on every rank
    flat = [i for t in train for b in t for i in b]
    assert len(flat) == len(set(flat))  # disjoint shares
    everything = list(make(shuffle=True, seed=1))
    assert len(train[0]) == len(everything) // world
    val = [list(make(shuffle=False, num_replicas=world, rank=r)) for r in range(world)]
    flat = sorted(i for t in val for b in t for i in b)
    assert flat == list(range(23))  # each sample exactly once: no padding duplicates, nothing dropped


def test_build_batch_is_the_one_builder_of_the_batch_dict():
    """Unlabelled items (the calculator's batch) get no label keys; labels are all-or-none; the keys
    are the constants of nnip_scale.data.keys; the tests' batch_from_atoms goes through it too."""
    from ase.build import bulk, molecule
    from batch_utils import batch_from_atoms

    from nnip_scale.data import keys as K
    from nnip_scale.data.batching import atoms_item, build_batch

    systems = [molecule("H2O"), bulk("Cu", cubic=True)]
    items = []
    for atoms in systems:
        i, j, S = ase_neighbor_list("ijS", atoms, 3.0)
        items.append(atoms_item(atoms, np.stack([i, j]), S))
    b = build_batch(items, torch.float64, device="cpu")
    assert list(b) == [K.ATOMIC_NUMBERS, K.POSITIONS, K.CELL, K.PBC, K.BATCH, K.NUM_ATOMS, K.EDGE_INDEX, K.EDGE_SHIFT,
                       K.EDGE_RECEIVER_PTR, K.EDGE_SENDER_ORDER, K.N_ATOMS, K.N_STRUCTURES, K.N_EDGES]
    assert b[K.CELL][0].abs().sum() == 0 and b[K.PBC].tolist() == [[False] * 3, [True] * 3]  # molecule: zero cell
    assert b[K.POSITIONS].data_ptr() != torch.from_numpy(systems[0].positions).data_ptr()  # a copy, not a view
    labelled = batch_from_atoms(systems, 3.0)
    for key in b:
        assert (b[key] == labelled[key]) if isinstance(b[key], int) else torch.equal(b[key], labelled[key]), key
    assert labelled[K.SPIN].tolist() == [1, 1] and labelled[K.STRUCTURE_INDEX].tolist() == [0, 1]
    assert K.STRESS not in labelled
    with pytest.raises(ValueError, match=r"build_batch: item 1 has no 'energy' but 1 of the 2 items have one"):
        build_batch([dict(items[0], energy=-1.0), items[1]])
    with pytest.raises(ValueError, match=r"build_batch: no structures; expected at least one item"):
        build_batch([])
    with_stress = build_batch([dict(it, stress=np.eye(3)) for it in items])  # stress: when every item has one
    assert with_stress[K.STRESS].shape == (2, 3, 3) and with_stress[K.STRESS].dtype == torch.float32
    assert K.STRESS not in build_batch([dict(items[0], stress=np.eye(3)), dict(items[1], stress=None)])


def test_build_batch_sorts_edges_by_receiver_once_and_stores_their_layout():
    """vesin's neighbour lists come in cell-list order; the batch has every edge once, sorted by receiver
    (stable: a centre's edges keep their neighbour-list order), with receiver_ptr and the stable sender
    order that the native kernels take instead of sorting in every call. slice_batch recomputes them."""
    from ase.build import bulk, molecule

    from nnip_scale.data import keys as K
    from nnip_scale.data.batching import atoms_item, build_batch, edge_layout
    from nnip_scale.data.neighbors import neighbor_list
    from nnip_scale.training.flops import slice_batch

    systems = [bulk("Cu", cubic=True) * (2, 2, 2), molecule("CH3CH2OH"), bulk("NaCl", "rocksalt", a=5.6)]
    items = []
    for atoms in systems:
        ei, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
        items.append(atoms_item(atoms, ei, S))
    assert any((np.diff(it["edge_index"][0]) < 0).any() for it in items)  # the input is not sorted
    b = build_batch(items, torch.float64)
    ei, shift = b[K.EDGE_INDEX], b[K.EDGE_SHIFT]
    receiver, sender = ei[0], ei[1]
    assert bool((receiver[1:] >= receiver[:-1]).all())
    # the same edges, each once, and within a receiver in neighbour-list order
    offsets = np.cumsum([0] + [len(a) for a in systems])
    want = [(int(i + o), int(j + o), *map(int, s)) for it, o in zip(items, offsets)
            for i, j, s in zip(it["edge_index"][0], it["edge_index"][1], it["edge_shift"])]
    got = [(int(i), int(j), *map(int, s)) for i, j, s in zip(receiver, sender, shift)]
    assert got == sorted(want, key=lambda t: t[0])  # Python's sort is stable
    ptr, order = b[K.EDGE_RECEIVER_PTR], b[K.EDGE_SENDER_ORDER]
    assert ptr.dtype == order.dtype == torch.int64 and ptr.shape == (b[K.N_ATOMS] + 1,) and order.shape == (b[K.N_EDGES],)
    for a in range(b[K.N_ATOMS]):
        assert bool((receiver[ptr[a]:ptr[a + 1]] == a).all())
    assert int(ptr[0]) == 0 and int(ptr[-1]) == b[K.N_EDGES]
    assert torch.equal(order, torch.argsort(sender, stable=True))
    assert bool((sender[order][1:] >= sender[order][:-1]).all())
    # a prefix of structures keeps its edges' order; the layout is recomputed, not sliced
    part = slice_batch(b, 2)
    want_ptr, want_order = edge_layout(part[K.EDGE_INDEX], part[K.N_ATOMS])
    assert torch.equal(part[K.EDGE_RECEIVER_PTR], want_ptr) and torch.equal(part[K.EDGE_SENDER_ORDER], want_order)
    assert part[K.EDGE_SENDER_ORDER].shape == (part[K.N_EDGES],)
    # edge_layout needs sorted receivers, and says which edge is out of order
    with pytest.raises(ValueError, match=r"edge_layout: edge_index\[0\] must be sorted ascending .* edge 2 has receiver 0 < 1"):
        edge_layout(torch.tensor([[0, 1, 0], [1, 0, 1]]), 2)
    # no edges at all: every atom's segment is empty
    lone = build_batch([atoms_item(molecule("H2O"), np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3)))])
    assert lone[K.EDGE_RECEIVER_PTR].tolist() == [0, 0, 0, 0] and lone[K.EDGE_SENDER_ORDER].numel() == 0
