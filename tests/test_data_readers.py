"""Readers: extxyz (calculator results and custom info/arrays keys), ASE sqlite db, ASE-LMDB,
source resolution (file, directory, glob, list, builtin:NAME)."""

import sys
import types

import ase.db
import ase.io
import numpy as np
import pytest
from ase.build import bulk
from test_data_helpers import trajectory_frames, write_extxyz

from nnip_scale.data import DataError, ReaderOptions, read_all, read_structures, resolve_sources


def _check_same(structs, frames):
    assert len(structs) == len(frames)
    for s, a in zip(structs, frames):
        np.testing.assert_array_equal(s.numbers, a.numbers)
        np.testing.assert_allclose(s.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(s.forces, a.get_forces(), atol=1e-8)
        assert s.energy == pytest.approx(a.get_potential_energy(), abs=1e-8)
        np.testing.assert_array_equal(s.pbc, a.pbc)
        np.testing.assert_allclose(s.cell, a.cell.array if a.pbc.any() else np.zeros((3, 3)), atol=1e-8)
        assert s.group == a.info["group"]


def test_extxyz_calculator_results_stress_charge_spin(tmp_path):
    frames = trajectory_frames(3, 2, seed=2, stress=True)
    frames[1].info.update(charge=-1, spin=2)
    path = write_extxyz(tmp_path / "d.extxyz", frames)
    structs = list(read_structures(path))
    _check_same(structs, frames)
    assert [s.index for s in structs] == list(range(6)) and structs[0].source == str(path)
    assert (structs[1].charge, structs[1].spin) == (-1, 2) and (structs[0].charge, structs[0].spin) == (0, 1)
    # ASE Voigt (xx yy zz yz xz xy) -> symmetric 3x3
    v = frames[0].get_stress()
    np.testing.assert_allclose(structs[0].stress, [[v[0], v[5], v[4]], [v[5], v[1], v[3]], [v[4], v[3], v[2]]], atol=1e-10)
    assert structs[2].stress is None  # molecule: no stress stored


def test_custom_keys_in_info_and_arrays_and_default_groups(tmp_path):
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.info["REF_energy"] = -3.5
    a.arrays["REF_forces"] = np.arange(6.0).reshape(2, 3)
    path = tmp_path / "c.extxyz"
    ase.io.write(path, [a, a], format="extxyz")
    opt = ReaderOptions(energy_key="REF_energy", forces_key="REF_forces")
    s0, s1 = read_structures(path, opt)
    assert s0.energy == -3.5
    np.testing.assert_array_equal(s0.forces, np.arange(6.0).reshape(2, 3))
    # no group key: each structure is its own group
    assert s0.group == f"{path}#0" and s1.group == f"{path}#1"


def test_sqlite_db_round_trip(tmp_path):
    frames = trajectory_frames(2, 2, seed=3)
    path = tmp_path / "d.db"
    with ase.db.connect(path) as db:
        for a in frames:
            db.write(a, group=a.info["group"])
    _check_same(list(read_structures(path)), frames)


def test_aselmdb_round_trip_with_charge_spin(tmp_path):
    frames = trajectory_frames(2, 2, seed=4)
    path = tmp_path / "omol.aselmdb"
    db = ase.db.connect(str(path), type="aselmdb")
    for k, a in enumerate(frames):
        a.info.update(charge=k - 1, spin=1 + k % 2)
        db.write(a, data={"group": a.info["group"], "charge": k - 1, "spin": 1 + k % 2})
    db.close()
    structs = list(read_structures(path))
    _check_same(structs, frames)
    assert [s.charge for s in structs] == [-1, 0, 1, 2] and [s.spin for s in structs] == [1, 2, 1, 2]


def test_resolve_directory_glob_list(tmp_path):
    write_extxyz(tmp_path / "b" / "2.extxyz", trajectory_frames(1, 1, seed=5))
    write_extxyz(tmp_path / "b" / "1.extxyz", trajectory_frames(1, 2, seed=6))
    (tmp_path / "b" / "notes.txt").write_text("not data")
    write_extxyz(tmp_path / "b" / ".nnip_cache" / "x.extxyz", trajectory_frames(1, 1, seed=7))
    files = resolve_sources(tmp_path / "b")
    assert [f.name for f in files] == ["1.extxyz", "2.extxyz"]
    assert [f.name for f in resolve_sources(str(tmp_path / "b" / "*.extxyz"))] == ["1.extxyz", "2.extxyz"]
    both = resolve_sources([tmp_path / "b" / "2.extxyz", tmp_path / "b"])
    assert [f.name for f in both] == ["2.extxyz", "1.extxyz"]  # order kept, duplicates dropped
    assert len(read_all(tmp_path / "b")) == 3


def test_resolve_builtin_calls_generator(tmp_path, monkeypatch):
    write_extxyz(tmp_path / "demo" / "part.extxyz", trajectory_frames(1, 2, seed=8))
    calls = []
    fake = types.ModuleType("nnip_scale.data.generate")

    def ensure_builtin(name, root=None):
        calls.append((name, root))
        return tmp_path / "demo"

    fake.ensure_builtin = ensure_builtin
    monkeypatch.setitem(sys.modules, "nnip_scale.data.generate", fake)
    files = resolve_sources("builtin:molecules-tiny", builtin_root="/some/root")
    assert calls == [("molecules-tiny", "/some/root")] and [f.name for f in files] == ["part.extxyz"]


def test_missing_source_and_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.extxyz: no such file or directory; expected an existing file"):
        resolve_sources(tmp_path / "nope.extxyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        resolve_sources(tmp_path / "empty")
    assert str(e.value) == (f"{tmp_path / 'empty'}: no data files found; expected at least one file with a suffix in "
                            ".extxyz, .xyz, .traj, .db, .aselmdb")
