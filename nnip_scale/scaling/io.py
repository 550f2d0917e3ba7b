"""Readers for run ledgers (JSON Lines) and CSV files into one table of points.

A *point* is one validation of one run: ``N`` (trainable parameters without the embedding),
``D`` (atoms seen), ``C`` (training FLOPs), ``H`` (GPU-hours), ``loss``, ``step``, ``run`` and
``arch``. :func:`load_points` returns a dict of equal-length 1-D numpy arrays with those keys plus
``src`` (``"FILE:LINE"`` of each record, used in every error message). A value the input does not
give is NaN ("missing"); whether that matters is decided by the law that needs it (:func:`require`).

Units. Everything is converted to FLOP for C and hours for H. A ledger's units are fixed by
DESIGN.md (``flops`` in FLOP, ``gpu_hours`` in hours). A CSV states its unit in the column name
(``C_FLOP``, ``C_PFLOP``, ``H_hours``, ``H_s``); a bare ``C`` / ``H`` column has the unit given by
``c_unit`` / ``h_unit`` (``--c-unit`` / ``--h-unit``; default FLOP / hours). Inputs stated in
different units are refused (:class:`ScalingInputError` naming each file and its unit), so a
PFLOP file is never silently mixed with a FLOP ledger.
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import warnings

import numpy as np


class ScalingInputError(ValueError):
    """Bad input for a scaling fit; the message names the file/line and what was expected."""


#: point key -> ledger field (DESIGN.md); the CSV uses the point key itself as the column name
LEDGER_FIELDS = {"N": "n_params", "D": "atoms_seen", "C": "flops", "H": "gpu_hours", "loss": "val_loss",
                 "step": "step"}
C_UNITS = {"FLOP": 1.0, "PFLOP": 1e15}
H_UNITS = {"hours": 1.0, "s": 1.0 / 3600.0}
_C_COLUMNS = {"C": None, "C_FLOP": "FLOP", "C_PFLOP": "PFLOP"}
_H_COLUMNS = {"H": None, "H_hours": "hours", "H_s": "s"}
CSV_COLUMNS = ("run", "arch", "N", "D", *_C_COLUMNS, *_H_COLUMNS, "loss", "step")
NUMERIC = ("N", "D", "C", "H", "loss", "step")


def _expand(inputs):
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            found = [os.path.join(root, n) for root, _, names in os.walk(item) for n in names
                     if n.endswith((".jsonl", ".csv"))]
            if not found:
                raise ScalingInputError(f"{item}: directory holds no *.jsonl ledger or *.csv file")
            files += found
        elif any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise ScalingInputError(f"{item}: glob matches no file")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise ScalingInputError(f"{item}: no such file or directory (expected a ledger .jsonl or a .csv)")
    if not files:
        raise ScalingInputError("no input files given (expected ledgers .jsonl and/or CSV files)")
    return sorted(set(files))


def _number(value, where, name):
    """A finite float, None for missing; NaN/inf or non-numbers raise naming the record."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise ScalingInputError(f"{where}: {name} is a boolean ({value!r}); expected a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ScalingInputError(f"{where}: {name} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise ScalingInputError(f"{where}: {name} is {x} (NaN/inf); expected a finite number")
    return x


def _read_ledger(path):
    with open(path) as fh:
        text = fh.read()
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines = lines[:-1]
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not complete:
                warnings.warn(f"{where}: torn final line ignored ({exc.msg})", stacklevel=3)
                continue
            raise ScalingInputError(f"{where}: malformed JSON line ({exc.msg}); expected one JSON object "
                                    "per line (a compute ledger)") from None
        if not isinstance(row, dict):
            raise ScalingInputError(f"{where}: expected a JSON object (ledger row), got {type(row).__name__}")
        rec = {k: _number(row.get(f), where, f"{f}") for k, f in LEDGER_FIELDS.items()}
        rec.update(run=str(row.get("run_id") or path), arch=str(row.get("arch") or "all"), src=where)
        rows.append(rec)
    return rows, {"C": ("FLOP", "ledger field flops"), "H": ("hours", "ledger field gpu_hours")}


def _read_csv(path, c_unit, h_unit):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        unknown = [c for c in cols if c not in CSV_COLUMNS]
        if unknown:
            raise ScalingInputError(f"{path}:1: unknown column(s) {unknown}; expected some of {list(CSV_COLUMNS)}")
        if "loss" not in cols:
            raise ScalingInputError(f"{path}:1: no 'loss' column (columns {cols}); expected N, D, C, loss")
        units, col_of = {}, {}
        for key, table, default, scales in (("C", _C_COLUMNS, c_unit, C_UNITS), ("H", _H_COLUMNS, h_unit, H_UNITS)):
            present = [c for c in cols if c in table]
            if len(present) > 1:
                raise ScalingInputError(f"{path}:1: ambiguous {key} columns {present}; keep exactly one")
            if present:
                col = present[0]
                unit = table[col] or default
                how = f"column {col}" if table[col] else f"column {col} with unit {unit}"
                if unit not in scales:
                    raise ScalingInputError(f"{path}: unknown {key} unit {unit!r}; expected one of {list(scales)}")
                units[key], col_of[key] = (unit, how), (col, scales[unit])
        rows = []
        for i, r in enumerate(reader, start=2):
            where = f"{path}:{i}"
            if None in r:  # more fields than header names
                raise ScalingInputError(f"{where}: {len(cols) + len(r[None])} fields, header has {len(cols)}")
            rec = {k: _number(r.get(k), where, k) for k in ("N", "D", "loss", "step")}
            for key, (col, scale) in col_of.items():
                v = _number(r.get(col), where, col)
                rec[key] = None if v is None else v * scale
            for key in ("C", "H"):
                rec.setdefault(key, None)
            rec.update(run=(r.get("run") or "").strip() or None, arch=(r.get("arch") or "").strip() or "all", src=where)
            rows.append(rec)
    return rows, units


def _check_units(declared):
    """declared: {key: [(file, unit, how)]} -> raise if one key has several units."""
    for key, items in declared.items():
        if len({u for _, u, _ in items}) > 1:
            listing = "; ".join(f"{f}: {u} ({how})" for f, u, how in items)
            canon = "FLOP" if key == "C" else "hours"
            raise ScalingInputError(f"inputs mix {key} units: {listing}. Give every input in one unit "
                                    f"(e.g. convert the CSV to a {key}_{canon} column, or pass --{key.lower()}-unit "
                                    "for bare columns)")


def load_points(inputs, c_unit=None, h_unit=None):
    """Read ledgers (``*.jsonl``) and CSV files (files, directories searched recursively, or globs).

    Returns ``(points, meta)``: points is a dict of arrays (module docstring); meta has ``files``,
    ``units`` (``{"C": "FLOP", "H": "hours"}`` as given by the inputs; values are converted to these
    canonical units) and ``notes`` (list of strings for the report).
    """
    c_unit = c_unit or "FLOP"
    h_unit = h_unit or "hours"
    for name, unit, table in (("c_unit", c_unit, C_UNITS), ("h_unit", h_unit, H_UNITS)):
        if unit not in table:
            raise ScalingInputError(f"{name}={unit!r}: expected one of {list(table)}")
    recs, notes, declared = [], [], {"C": [], "H": []}
    files = _expand(inputs)
    for path in files:
        if path.endswith(".csv"):
            rows, units = _read_csv(path, c_unit, h_unit)
            if rows and all(r["run"] is None for r in rows):
                notes.append(f"{path}: no 'run' column, each row is its own run (the bootstrap then "
                             "resamples rows, which understates the uncertainty of correlated checkpoints)")
            for j, r in enumerate(rows):
                if r["run"] is None:
                    r["run"] = f"{path}:{j + 2}"
                if r["step"] is None:
                    r["step"] = float(j)
        elif path.endswith(".jsonl"):
            rows, units = _read_ledger(path)
        else:
            raise ScalingInputError(f"{path}: unknown input type; expected a ledger *.jsonl or a *.csv")
        if not rows:
            notes.append(f"{path}: no data rows")
        for key, (unit, how) in units.items():
            if rows:
                declared[key].append((path, unit, how))
        recs += rows
    if not recs:
        raise ScalingInputError(f"{files}: no data rows in any input")
    _check_units(declared)
    pts = {k: np.array([np.nan if r[k] is None else r[k] for r in recs], float) for k in NUMERIC}
    for k in ("run", "arch", "src"):
        pts[k] = np.array([r[k] for r in recs], dtype=object)
    meta = {"files": files, "units": {"C": "FLOP", "H": "hours"}, "notes": notes,
            "input_units": {k: sorted({u for _, u, _ in v}) for k, v in declared.items()}}
    return pts, meta


def _field(key):
    return f"{key} (CSV column {key}, ledger field {LEDGER_FIELDS[key]})"


def require(pts, keys, min_points=1, what="this fit"):
    """Check that ``keys`` are present and positive for every point; raise ScalingInputError naming
    the first bad record otherwise, and when fewer than ``min_points`` points remain."""
    for k in keys:
        v = pts[k]
        bad = np.isnan(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise ScalingInputError(f"{pts['src'][i]}: missing {_field(k)}, needed by {what}")
        bad = v <= 0
        if bad.any():
            i = int(np.argmax(bad))
            raise ScalingInputError(f"{pts['src'][i]}: non-positive {k}={v[i]:g}; {what} needs {k} > 0")
    if len(pts["loss"]) < min_points:
        raise ScalingInputError(f"too few points for {what}: {len(pts['loss'])} < {min_points}")


def subset(pts, mask_or_index):
    """Rows of every array of pts."""
    return {k: v[mask_or_index] for k, v in pts.items()}
