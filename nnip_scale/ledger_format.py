"""The compute-ledger file format: its fields and their units, the schema version, writing a row and
reading a ledger with one policy for a torn last line. The one definition that the ledger callback
(``nnip_scale.training.ledger``, the writer), the study (``nnip_scale.study``) and the scaling toolkit
(``nnip_scale.scaling.io``) share; docs/compute.md, "The ledger file", describes the same fields.

A ledger is JSON Lines: one JSON object (a *row*) per line, one row per validation, appended and
fsynced. Every row written since the schema version existed carries ``"schema": 1``; a row without
it is version 1 too (the same fields, written before the version was recorded), so every existing
ledger still reads.

Reading policy (:func:`read_records`), the same for every reader:

- a final line without its newline that does not parse is a row torn by a crash mid-write: it is
  skipped with a :class:`TornLineWarning` naming the file and line (the writer writes a row and its
  newline in one call, so a torn row can only be the last line);
- any other line that is not one JSON object is an error (:class:`LedgerFormatError`, a
  ``ValueError``) naming the file, the line number and what was expected;
- a row whose ``schema`` is not a version this code reads is an error naming the file and line;
- blank lines are skipped; an empty file has no rows.

Standard library only (no torch, no numpy), so the torch-free scaling toolkit can use it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from nnip_scale.atomic_io import atomic_write_text

__all__ = ["FIELDS", "LEDGER_FILENAME", "SCHEMA_KEY", "SCHEMA_VERSION", "LedgerFormatError", "Record",
           "TornLineWarning", "read_records", "read_rows", "truncate", "write_row"]

#: the version written into every new row; readers accept 1..SCHEMA_VERSION
SCHEMA_VERSION: Final[int] = 1
#: the row field that holds the version (absent in rows written before it existed: version 1)
SCHEMA_KEY: Final[str] = "schema"
#: the file name of a run's ledger in its log directory
LEDGER_FILENAME: Final[str] = "ledger.jsonl"


class Field(NamedTuple):
    """One ledger field: its unit ("" for labels, counts named by the meaning, and ratios) and meaning."""

    unit: str
    meaning: str


#: every field a row may hold, in the order the ledger callback writes them (docs/compute.md)
FIELDS: Final[dict[str, Field]] = {
    SCHEMA_KEY: Field("", "ledger schema version (absent: 1)"),
    # identity of the run
    "run_id": Field("", "run id, kept across resumes (default <logger name>/version_<n>)"),
    "arch": Field("", "architecture label the scaling tools group by"),
    "model_class": Field("", "backbone class name"),
    "force_mode": Field("", "direct or conservative"),
    "loss": Field("", "training loss and its weights, e.g. mae_l2(energy=1,force=1)"),
    "cutoff": Field("Å", "the model's cutoff"),
    "config_hash": Field("", "sha256 (16 hex) of the backbone class and arguments and the module hyperparameters"),
    "dataset": Field("", "content fingerprint of the training data"),
    "width": Field("", "model width"),
    "depth": Field("", "model depth (interaction layers)"),
    "n_params": Field("parameters", "N: trainable parameters without the element embedding table"),
    "n_params_total": Field("parameters", "all trainable parameters"),
    # progress and cost
    "step": Field("optimizer steps", "global step of this validation"),
    "epoch": Field("epochs", "current epoch"),
    "structures_seen": Field("structures", "training structures seen, summed over ranks"),
    "atoms_seen": Field("atoms", "D: training atoms seen, summed over ranks"),
    "edges_seen": Field("edges", "training edges seen, summed over ranks"),
    "flops": Field("FLOP", "C: training FLOPs so far (not PFLOP), summed over ranks"),
    "val_flops": Field("FLOP", "validation FLOPs so far, summed over ranks"),
    "wall_s": Field("s", "active training wall-clock, validation included, continued across resumes"),
    "train_step_s": Field("s", "time inside training steps (per-rank mean)"),
    "data_wait_s": Field("s", "time waiting for data between steps (per-rank mean)"),
    "devices": Field("processes", "world size"),
    "accelerator": Field("", "cpu, cuda, ..."),
    "device_hours": Field("h", "wall_s × devices / 3600: GPU-hours on GPU runs, CPU-process-hours on CPU runs"),
    "gpu_hours": Field("h", "the same as device_hours, written only when accelerator is cuda"),
    # what this validation measured
    "val_set": Field("", "fingerprint of the validated structures (-first<n>: limit_val_batches cut it)"),
    "val_structures": Field("structures", "structures validated (summed over ranks)"),
    "val_atoms": Field("atoms", "atoms validated (summed over ranks)"),
    "val_groups": Field("groups", "groups (trajectories / molecules) validated"),
    "val_selection": Field("", "whole split, stratified subset or first batches (limit_val_batches)"),
    "val_loss": Field("loss", "validation loss (the training loss function; eV/atom-based)"),
    "val_energy_mae_per_atom": Field("eV/atom", "energy MAE per atom"),
    "val_force_mae": Field("eV/Å", "force component MAE"),
    "val_force_cos": Field("", "mean cosine between predicted and true forces"),
    "val_stress_mae": Field("eV/Å³", "stress MAE; only when the data carry stress and the model predicts it"),
    "val_stress_mae_gpa": Field("GPa", "the same stress MAE in GPa"),
    "flops_fit_residual": Field("", "max relative residual of the FLOP cost model on its calibration points"),
    # a diverged run (the scaling tools leave it out of every fit)
    "status": Field("", "'diverged' when the training loss went non-finite; absent otherwise"),
    "diverged_at_step": Field("optimizer steps", "the step whose training loss was non-finite"),
    "last_finite_train_loss": Field("loss", "the last finite training loss before divergence"),
    "time": Field("", "UTC timestamp (ISO 8601, seconds)"),
}


class LedgerFormatError(ValueError):
    """A ledger file that does not follow this format; the message names the file, line and what was expected."""


class TornLineWarning(UserWarning):
    """A torn final line (a crash mid-write) was skipped."""


class Record(NamedTuple):
    """One row of a ledger: its 1-based line number, the row and the line's text (without the newline)."""

    line: int
    row: dict
    text: str


def _check_schema(row: dict, where: str) -> None:
    version = row.get(SCHEMA_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        supported = "1" if SCHEMA_VERSION == 1 else f"1..{SCHEMA_VERSION}"
        raise LedgerFormatError(
            f"{where}: ledger schema version {version!r}; expected {supported} (this nnip-scale reads those; a row "
            f"without '{SCHEMA_KEY}' is version 1). A newer nnip-scale wrote it? Read it with that version")


def read_records(path: str | os.PathLike, stacklevel: int = 2) -> list[Record]:
    """Every row of the ledger at ``path`` with its line number (module docstring: the reading
    policy). ``stacklevel`` is passed to the torn-line warning."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise LedgerFormatError(f"{path}:{line}: byte {err.start} of the file is not UTF-8; expected a compute "
                                "ledger (JSON Lines text)") from None
    lines = text.split("\n")
    terminated = text.endswith("\n") or not text
    if terminated:
        lines.pop()  # the empty string after the final newline (or of an empty file)
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not terminated:
                warnings.warn(f"{where}: torn final line ignored ({err.msg}; a crash mid-write leaves one)",
                              TornLineWarning, stacklevel=stacklevel + 1)
                continue
            raise LedgerFormatError(f"{where}: malformed JSON line ({err.msg}); expected one JSON object per "
                                    "line (a compute ledger)") from None
        if not isinstance(row, dict):
            raise LedgerFormatError(f"{where}: a JSON {type(row).__name__}; expected a JSON object per line "
                                    "(a compute ledger row)")
        _check_schema(row, where)
        records.append(Record(number, row, line))
    return records


def read_rows(path: str | os.PathLike, stacklevel: int = 2) -> list[dict]:
    """The rows of the ledger at ``path`` (:func:`read_records` without line numbers); [] for an
    empty file. A missing file is an error (``FileNotFoundError``): callers decide what none means."""
    return [r.row for r in read_records(path, stacklevel=stacklevel + 1)]


def _check_row(row: Mapping[str, Any], path: Path) -> None:
    if not isinstance(row, Mapping):
        raise LedgerFormatError(f"{path}: a ledger row must be a mapping of field names; got {type(row).__name__}")
    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        raise LedgerFormatError(f"{path}: unknown ledger field(s) {unknown}; expected fields of "
                                "nnip_scale.ledger_format.FIELDS (a new field goes there and in docs/compute.md)")
    version = row.get(SCHEMA_KEY, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise LedgerFormatError(f"{path}: a row of schema version {version!r}; this writer writes {SCHEMA_VERSION}")


def _ends_clean(path: Path) -> bool:
    """Whether appending a line to ``path`` starts a line of its own: the file is empty or missing,
    or ends with a newline, or its unterminated final line is a whole row (then a newline is added
    first). A torn final line is an error (:func:`truncate` removes it)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    if size == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return True
    last = path.read_bytes().rsplit(b"\n", 1)[-1]
    try:
        whole = isinstance(json.loads(last), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = False
    if not whole:
        line = path.read_bytes().count(b"\n") + 1
        raise LedgerFormatError(f"{path}:{line}: the ledger ends in a torn line; expected a clean end before "
                                "appending (nnip_scale.ledger_format.truncate drops it)")
    return False


def write_row(path: str | os.PathLike, row: Mapping[str, Any]) -> dict:
    """Append ``row`` to the ledger at ``path`` as one line, then flush and fsync (creating the
    file, not its folder). The row gets ``"schema": SCHEMA_VERSION`` as its first field; fields not
    in :data:`FIELDS` are refused (one definition of the format). Returns the row as written."""
    path = Path(path)
    _check_row(row, path)
    out = {SCHEMA_KEY: SCHEMA_VERSION, **{k: v for k, v in row.items() if k != SCHEMA_KEY}}
    line = json.dumps(out) + "\n"  # serialised before the file is touched: a bad value writes nothing
    prefix = "" if _ends_clean(path) else "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(prefix + line)  # one write: a crash leaves at most a torn final line
        fh.flush()
        os.fsync(fh.fileno())
    return out


def truncate(path: str | os.PathLike, keep: Callable[[dict], bool], stacklevel: int = 2) -> list[dict]:
    """Keep the leading rows of the ledger at ``path`` for which ``keep(row)`` holds; drop the first
    row that fails it, every row after it, and a torn final line. The file is rewritten atomically
    (:mod:`nnip_scale.atomic_io`) only when something was dropped or its last row lacked its
    newline; kept lines keep their exact text. Returns the kept rows ([] when the file is missing)."""
    path = Path(path)
    if not path.exists():
        return []
    records = read_records(path, stacklevel=stacklevel + 1)
    kept = []
    for rec in records:
        if not keep(rec.row):
            break
        kept.append(rec)
    text = "".join(rec.text + "\n" for rec in kept)
    if len(kept) != len(records) or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return [rec.row for rec in kept]

