"""The one atomic-write helper (nnip_scale.atomic_io): whole files or nothing, the old file intact
and no temporary file left on any error."""

import json
import os

import pytest

from nnip_scale import atomic_io
from nnip_scale.atomic_io import AtomicFile, atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_text_bytes_and_json_with_plain_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert atomic_write_text(tmp_path / "a.md", "héllo\n") == tmp_path / "a.md"
        atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
        atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5]}, indent=2, sort_keys=True, trailing_newline=True)
        atomic_write_json(tmp_path / "d.json", {"x": object()}, default=lambda v: "obj")
    finally:
        os.umask(old)
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.json").read_text() == json.dumps({"a": [1.5], "b": 1}, indent=2) + "\n"
    assert (tmp_path / "d.json").read_text() == '{"x": "obj"}'
    assert _names(tmp_path) == ["a.md", "b.bin", "c.json", "d.json"]
    assert (tmp_path / "a.md").stat().st_mode & 0o777 == 0o644  # as open(path, "w"), not mkstemp's 0600


def test_failure_mid_write_leaves_the_old_file_intact(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(f) as fh:
            fh.write("new, half of it")
            raise RuntimeError("disk on fire")
    assert f.read_text() == "old" and _names(tmp_path) == ["plan.json"]
    with pytest.raises(TypeError):  # not serialisable: fails before anything is written
        atomic_write_json(f, {"x": object()})
    assert f.read_text() == "old" and _names(tmp_path) == ["plan.json"]


def test_failing_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    f = tmp_path / "report.md"
    f.write_text("old")

    def refuse(src, dst):
        raise PermissionError(f"cannot rename {src}")

    monkeypatch.setattr(atomic_io.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_text(f, "new")
    assert f.read_text() == "old" and _names(tmp_path) == ["report.md"]


def test_atomic_file_for_writers_that_fill_a_file_over_time(tmp_path):
    f = tmp_path / "predictions.extxyz"
    out = AtomicFile(f)
    assert out.tmp.parent == tmp_path and out.tmp.name.startswith(".predictions.extxyz.") and out.tmp.suffix == ".tmp"
    assert out.tmp.exists() and not f.exists()
    for k in range(3):
        with open(out.tmp, "a") as fh:
            fh.write(f"{k}\n")
    assert not f.exists()  # nothing visible before the commit
    out.commit()
    assert f.read_text() == "0\n1\n2\n" and _names(tmp_path) == ["predictions.extxyz"]
    out.discard()  # after a commit: a no-op
    assert f.exists()
    with pytest.raises(ValueError, match="already committed"):
        out.commit()
    other = AtomicFile(f)
    other.discard()
    other.discard()
    assert f.read_text() == "0\n1\n2\n" and _names(tmp_path) == ["predictions.extxyz"]
    one, two = AtomicFile(f), AtomicFile(f)
    assert one.tmp != two.tmp  # two writers never share a temporary file
    one.discard()
    two.discard()
    assert _names(tmp_path) == ["predictions.extxyz"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot write .*x.json: its folder .*nope does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.json", "{}")
    with pytest.raises(ValueError, match=r"atomic_open\('.*x.json', mode='a'\): expected mode 'w' or 'wb'"):
        with atomic_open(tmp_path / "x.json", "a"):
            pass
    assert _names(tmp_path) == []
