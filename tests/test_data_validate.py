"""Bad input gives one DataError naming the file, the structure index and what was expected."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from test_data_helpers import trajectory_frames, write_extxyz

from nnip_scale.data import AtomsDataModule, DataError, load_or_build, nested_subset, read_all, split_by_group


def _frame(positions, cell=None, pbc=False, energy=1.0, forces=True, numbers=None):
    positions = np.asarray(positions, dtype=float)
    a = Atoms(numbers=numbers or [29] * len(positions), positions=positions, cell=cell, pbc=pbc)
    kw = {"energy": energy} if energy is not None else {}
    if forces:
        kw["forces"] = np.zeros((len(a), 3))
    a.calc = SinglePointCalculator(a, **kw)
    return a


GOOD = [[0, 0, 0], [2.5, 0, 0]]


def _error(tmp_path, frames, name="x.extxyz"):
    path = tmp_path / name
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(DataError) as e:
        load_or_build(path, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # no cache (nor temp dir) left behind
    return str(e.value), path


def test_missing_energy(tmp_path):
    msg, p = _error(tmp_path, [_frame(GOOD), _frame(GOOD, energy=None)])
    assert msg == (f"{p}: structure 1: no energy found; expected a total energy (eV) under 'energy' "
                   "in the calculator results or atoms.info")


def test_missing_forces(tmp_path):
    msg, p = _error(tmp_path, [_frame(GOOD)] * 17 + [_frame(GOOD, forces=False)])
    assert msg == (f"{p}: structure 17: no forces found; expected per-atom forces (eV/Å) in the 'forces' "
                   "array or a calculator result")


def test_nan_coordinates_and_infinite_energy(tmp_path):
    msg, p = _error(tmp_path, [_frame(GOOD), _frame([[0, 0, 0], [np.nan, 0, 0]])])
    assert msg == f"{p}: structure 1: non-finite (NaN or infinite) coordinates; expected finite positions in Å"
    msg, p = _error(tmp_path, [_frame(GOOD, energy=np.inf)], name="y.extxyz")
    assert msg == f"{p}: structure 0: non-finite energy (inf); expected a finite total energy in eV"


def test_atoms_too_close_direct_and_through_periodic_image(tmp_path):
    msg, p = _error(tmp_path, [_frame([[0, 0, 0], [0.05, 0, 0], [3, 0, 0]])])
    assert msg == f"{p}: structure 0: atoms 0 and 1 are 0.0500 Å apart; expected all interatomic distances >= 0.1 Å"
    cell = np.diag([5.0, 5.0, 5.0])
    msg, p = _error(tmp_path, [_frame(GOOD, cell, True), _frame([[0.02, 1, 1], [4.95, 1, 1]], cell, True)], "z.extxyz")
    assert msg.startswith(f"{p}: structure 1: atoms ") and "periodic image" in msg and "are 0.0700 Å apart" in msg
    assert msg.endswith("; expected all interatomic distances >= 0.1 Å")


def test_periodic_without_cell(tmp_path):
    a = _frame(GOOD)
    a.pbc = True  # cell stays zero
    msg, p = _error(tmp_path, [_frame(GOOD), a])
    assert msg == (f"{p}: structure 1: periodic boundaries (pbc=[True, True, True]) with a zero or singular cell; "
                   "expected three linearly independent lattice vectors (Å) for a periodic structure")


def test_truncated_garbage_and_corrupt_files(tmp_path):
    p = write_extxyz(tmp_path / "ok.extxyz", trajectory_frames(2, 2, seed=0, periodic_every=0))
    lines = p.read_text().splitlines(True)
    (tmp_path / "trunc.extxyz").write_text("".join(lines[:-2]))
    with pytest.raises(DataError) as e:
        load_or_build(tmp_path / "trunc.extxyz", cache_dir=tmp_path / "c")
    assert str(e.value).startswith(f"{tmp_path / 'trunc.extxyz'}: structure 3: unreadable record (")
    assert str(e.value).endswith("; expected a complete, valid extxyz record (file truncated or corrupt?)")
    assert not any((tmp_path / "c").iterdir())
    (tmp_path / "garbage.extxyz").write_bytes(b"\x00\xff\x13garbage\n\x89PNG\n")
    with pytest.raises(DataError, match=r"garbage\.extxyz: structure 0: unreadable record \(.*expected a complete"):
        read_all(tmp_path / "garbage.extxyz")
    (tmp_path / "bad.db").write_bytes(b"not a database" * 100)
    with pytest.raises(DataError) as e:
        read_all(tmp_path / "bad.db")
    assert str(e.value) == (f"{tmp_path / 'bad.db'}: structure 0: unreadable record (DatabaseError: file is not a "
                            "database); expected a valid ASE database record (file truncated or corrupt?)")


def test_empty_file_and_empty_split(tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(DataError) as e:
        read_all(tmp_path / "empty.extxyz")
    assert str(e.value) == f"{tmp_path / 'empty.extxyz'}: the file holds no structures; expected at least one structure"
    train, val, test = split_by_group(np.array([0, 0, 1, 1]), 0.1, 0.1, source="d.extxyz")
    assert len(train) == len(val) == 2 and len(test) == 0  # fit does not need a test split; `test` refuses it
    with pytest.raises(DataError) as e:
        split_by_group(np.array([0, 0, 1, 1]), 0.6, 0.1, source="d.extxyz")
    assert str(e.value) == ("d.extxyz: an empty training split (4 structures in 2 groups); expected val_fraction + "
                            "test_fraction below 1 − 0.5 (one group's share) or more data")


def test_subset_larger_than_data(tmp_path):
    with pytest.raises(DataError) as e:
        nested_subset(np.arange(5), np.full(5, 3), size=6, source="t.extxyz")
    assert str(e.value) == ("t.extxyz: a subset of 6 structures was asked but the training split holds 5; "
                            "expected a subset size between 1 and 5 structures")
    with pytest.raises(DataError) as e:
        nested_subset(np.arange(5), np.full(5, 3), atoms=16, source="t.extxyz")
    assert str(e.value) == ("t.extxyz: a subset of 16 atoms was asked but the training split holds 15 atoms; "
                            "expected a subset size between 1 and 15 atoms")
    p = write_extxyz(tmp_path / "d.extxyz", trajectory_frames(4, 2, seed=1))
    dm = AtomsDataModule(str(p), val_fraction=0.25, test_fraction=0.0, subset=7, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"d\.extxyz: a subset of 7 structures was asked but the training split holds 6"):
        dm.setup("fit")
