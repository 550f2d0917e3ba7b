"""The compute-ledger format (nnip_scale.ledger_format): one reading policy for every reader (torn
last line skipped with a warning, malformed line an error naming file and line, schema versions),
the writer's checks, truncation on resume, and that existing ledgers still read. Torch-free."""

import json
import sys
from pathlib import Path

import pytest

from nnip_scale.ledger_format import (
    FIELDS,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    LedgerFormatError,
    TornLineWarning,
    read_records,
    read_rows,
    truncate,
    write_row,
)

DEMO = Path(__file__).parent / "data" / "scaling" / "demo_ledgers"


def _row(step, **extra):
    return {"run_id": "r", "arch": "mpnn", "step": step, "flops": 1e9 * step, "val_loss": 1.0 / step, **extra}


def _lines(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_torn_last_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path):
    f = tmp_path / "ledger.jsonl"
    f.write_text(_lines(_row(1), _row(2)) + '{"run_id": "r", "st')
    with pytest.warns(TornLineWarning, match=rf"{f}:3: torn final line ignored"):
        records = read_records(f)
    assert [(r.line, r.row["step"]) for r in records] == [(1, 1), (2, 2)]
    assert records[0].text == json.dumps(_row(1))
    # a whole row that only lacks its newline (a hand-edited file) is a row, not a torn line
    f.write_text(_lines(_row(1)) + json.dumps(_row(2)))
    assert [r["step"] for r in read_rows(f)] == [1, 2]


def test_malformed_line_elsewhere_is_an_error_naming_file_line_and_expectation(tmp_path):
    f = tmp_path / "ledger.jsonl"
    f.write_text(_lines(_row(1)) + "{oops\n" + _lines(_row(2)))
    with pytest.raises(LedgerFormatError, match=rf"{f}:2: malformed JSON line .*expected one JSON object per line"):
        read_rows(f)
    f.write_text(_lines(_row(1)) + "[1, 2]\n")  # valid JSON, not a row
    with pytest.raises(LedgerFormatError, match=rf"{f}:2: a JSON list; expected a JSON object"):
        read_rows(f)
    f.write_bytes(b'{"run_id": "\xff"}\n')
    with pytest.raises(LedgerFormatError, match=rf"{f}:1: byte 12 of the file is not UTF-8"):
        read_rows(f)
    assert issubclass(LedgerFormatError, ValueError)  # the console prints it on one line, exit 2


def test_empty_file_and_blank_lines(tmp_path, recwarn):
    f = tmp_path / "ledger.jsonl"
    f.write_text("")
    assert read_records(f) == [] and read_rows(f) == []
    f.write_text("\n" + _lines(_row(1)) + "  \n" + _lines(_row(2)))
    assert [(r.line, r.row["step"]) for r in read_records(f)] == [(2, 1), (4, 2)]
    assert not recwarn.list
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", True, None])
def test_unknown_schema_version_is_an_error_naming_file_and_line(tmp_path, version):
    f = tmp_path / "ledger.jsonl"
    f.write_text(_lines(_row(1), {SCHEMA_KEY: version, **_row(2)}))
    with pytest.raises(LedgerFormatError, match=rf"{f}:2: ledger schema version {version!r}; expected 1"):
        read_rows(f)


def test_rows_without_a_schema_are_version_1_and_the_checked_in_ledgers_read(recwarn):
    files = sorted(DEMO.glob("*/ledger.jsonl"))
    assert len(files) == 8
    for f in files:
        rows = read_rows(f)
        assert rows and all(SCHEMA_KEY not in r for r in rows)
        assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
        assert set().union(*rows) <= set(FIELDS)  # every field ever written is a known field
    assert not recwarn.list


def test_write_row_adds_the_schema_first_and_refuses_unknown_fields(tmp_path):
    f = tmp_path / "ledger.jsonl"
    written = write_row(f, _row(1))
    assert list(written)[0] == SCHEMA_KEY and written[SCHEMA_KEY] == SCHEMA_VERSION
    assert f.read_text() == json.dumps({SCHEMA_KEY: SCHEMA_VERSION, **_row(1)}) + "\n"
    write_row(f, {**_row(2), "val_loss": float("nan")})  # a diverged run's NaN is written as NaN, as before
    assert [r["step"] for r in read_rows(f)] == [1, 2]
    before = f.read_bytes()
    with pytest.raises(LedgerFormatError, match=r"unknown ledger field\(s\) \['lr'\]; expected fields of "
                                                r"nnip_scale.ledger_format.FIELDS"):
        write_row(f, {**_row(3), "lr": 0.1})
    with pytest.raises(LedgerFormatError, match=r"schema version 2; this writer writes 1"):
        write_row(f, {**_row(3), SCHEMA_KEY: 2})
    with pytest.raises(TypeError):  # not serialisable: nothing is written
        write_row(f, {**_row(3), "dataset": object()})
    assert f.read_bytes() == before


def test_write_row_after_an_unterminated_line(tmp_path):
    f = tmp_path / "ledger.jsonl"
    f.write_text(_lines(_row(1)) + json.dumps(_row(2)))  # a whole row without its newline
    write_row(f, _row(3))
    assert [r["step"] for r in read_rows(f)] == [1, 2, 3]
    f.write_text(_lines(_row(1)) + '{"run_id": "r", "st')  # torn: appending would bury it mid-file
    with pytest.raises(LedgerFormatError, match=rf"{f}:2: the ledger ends in a torn line"):
        write_row(f, _row(3))


def test_truncate_keeps_a_prefix_drops_the_rest_and_a_torn_line(tmp_path):
    f = tmp_path / "ledger.jsonl"
    text = _lines(*(_row(s) for s in (5, 10, 15, 20)))
    f.write_text(text)
    inode = f.stat().st_ino
    assert [r["step"] for r in truncate(f, lambda r: r["step"] <= 20)] == [5, 10, 15, 20]
    assert f.stat().st_ino == inode and f.read_text() == text  # nothing dropped: not rewritten
    f.write_text(text + '{"run_id": "r", "step": 2')
    with pytest.warns(TornLineWarning, match=rf"{f}:5: torn final line"):
        kept = truncate(f, lambda r: r["step"] <= 10)
    assert [r["step"] for r in kept] == [5, 10]
    assert f.read_text() == _lines(_row(5), _row(10))  # kept lines byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl"]  # no temp file left
    f.write_text(_lines(_row(5)) + json.dumps(_row(10)))  # a last row without its newline gets one
    assert len(truncate(f, lambda r: True)) == 2 and f.read_text() == _lines(_row(5), _row(10))
    assert truncate(tmp_path / "none.jsonl", lambda r: True) == []


def test_fields_cover_what_the_readers_use():
    from nnip_scale.scaling.io import LEDGER_FIELDS, POOL_FIELDS

    used = {*LEDGER_FIELDS.values(), *POOL_FIELDS, "run_id", "arch", "device_hours", "status", "diverged_at_step"}
    assert used <= set(FIELDS)
    assert all(isinstance(f.unit, str) and f.meaning for f in FIELDS.values())
    assert FIELDS["flops"].unit == "FLOP" and FIELDS["device_hours"].unit == "h" and FIELDS["wall_s"].unit == "s"


def test_the_format_module_is_torch_free():
    import subprocess

    code = ("import sys, nnip_scale.ledger_format, nnip_scale.atomic_io, nnip_scale.scaling; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
