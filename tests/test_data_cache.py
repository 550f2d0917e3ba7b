"""The on-disk cache: content, reuse, invalidation, atomicity (nothing half-written)."""

import json
import os

import numpy as np
import pytest
from test_data_helpers import trajectory_frames, write_extxyz

from nnip_scale.data import DataError, ReaderOptions, load_or_build, read_all
from nnip_scale.data import cache as cache_mod


def test_cache_content_matches_reader(tmp_path):
    p = write_extxyz(tmp_path / "d.extxyz", trajectory_frames(4, 2, seed=0, stress=True))
    data = load_or_build(p)
    assert data.path.parent == tmp_path / ".nnip_cache"  # default location: next to the first source
    structs = read_all(p)
    assert len(data) == 8 and data.n_atoms == sum(s.n_atoms for s in structs)
    assert isinstance(data.positions, np.memmap) and data.positions.dtype == np.float64
    for k, s in enumerate(structs):
        c = data.structure(k)
        np.testing.assert_array_equal(c.numbers, s.numbers)
        np.testing.assert_array_equal(c.positions, s.positions)
        np.testing.assert_array_equal(c.forces, s.forces)
        np.testing.assert_array_equal(c.cell, s.cell)
        assert (c.energy, c.group, c.index, c.source) == (s.energy, s.group, s.index, os.path.abspath(p))
        assert (c.stress is None) == (s.stress is None)
        if s.stress is not None:
            np.testing.assert_array_equal(c.stress, s.stress)
    manifest = json.loads((data.path / "manifest.json").read_text())
    assert manifest["format_version"] == cache_mod.FORMAT_VERSION and manifest["n_structures"] == 8
    assert manifest["groups"] == ["g0", "g1", "g2", "g3"]


def test_cache_reused_then_rebuilt_when_sources_or_options_change(tmp_path, monkeypatch):
    p = write_extxyz(tmp_path / "d.extxyz", trajectory_frames(2, 2, seed=1))
    first = load_or_build(p, cache_dir=tmp_path / "c")
    calls = []
    real_write = cache_mod._write
    monkeypatch.setattr(cache_mod, "_write", lambda *a, **k: (calls.append(1), real_write(*a, **k)))
    again = load_or_build(p, cache_dir=tmp_path / "c")
    assert again.path == first.path and calls == []  # reused, not rebuilt
    write_extxyz(p, trajectory_frames(3, 2, seed=1))  # the source changes
    changed = load_or_build(p, cache_dir=tmp_path / "c")
    assert changed.path != first.path and len(changed) == 6 and calls == [1]
    other = load_or_build(p, ReaderOptions(group_key="traj"), cache_dir=tmp_path / "c")
    assert other.path != changed.path and len(set(other.groups)) == 6 and calls == [1, 1]


def test_failure_mid_build_leaves_no_cache(tmp_path):
    good = write_extxyz(tmp_path / "a.extxyz", trajectory_frames(2, 2, seed=2))
    bad = tmp_path / "b.extxyz"
    bad.write_text(good.read_text()[:-40])  # second file cut in the middle of its last frame
    with pytest.raises(DataError, match=r"b\.extxyz: structure 3: unreadable record"):
        load_or_build([good, bad], cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_interrupted_write_leaves_no_cache(tmp_path, monkeypatch):
    p = write_extxyz(tmp_path / "a.extxyz", trajectory_frames(2, 2, seed=3))
    real_save = np.save
    state = {"n": 0}

    def flaky_save(path, arr, *a, **k):
        state["n"] += 1
        if state["n"] == 4:
            raise KeyboardInterrupt
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(cache_mod.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(p, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []
    monkeypatch.setattr(cache_mod.np, "save", real_save)
    assert len(load_or_build(p, cache_dir=tmp_path / "c")) == 4
