"""Readers for run ledgers (JSON Lines) and CSV files into one table of points.

A *point* is one validation of one run: ``N`` (trainable parameters without the embedding),
``D`` (atoms seen), ``C`` (training FLOPs), ``H`` (device-hours: GPU-hours on GPU runs), ``loss``, ``step``, ``run`` and
``arch``. :func:`load_points` returns a dict of equal-length 1-D numpy arrays with those keys plus
``src`` (``"FILE:LINE"`` of each record, used in every error message). A value the input does not
give is NaN ("missing"); whether that matters is decided by the law that needs it (:func:`require`).

Units. Everything is converted to FLOP for C and hours for H. A ledger's units are fixed by
docs/compute.md (``flops`` in FLOP; H = ``gpu_hours`` on GPU runs, else ``device_hours``, in hours). A CSV states
its unit in the column name
(``C_FLOP``, ``C_PFLOP``, ``H_hours``, ``H_s``); a bare ``C`` / ``H`` column has the unit given by
``c_unit`` / ``h_unit`` (``--c-unit`` / ``--h-unit``; default FLOP / hours). Inputs stated in
different units are refused (:class:`ScalingInputError` naming each file and its unit), so a
PFLOP file is never silently mixed with a FLOP ledger.

Run identity and the pooling rule. Points also carry, as string arrays ("" when the input does not
record it), what a run was trained and measured on: ``dataset`` (ledger field ``dataset``, a
fingerprint), ``force_mode`` (``direct`` / ``conservative``), ``loss_name`` (ledger field ``loss``,
the training loss; the CSV column is ``loss_name`` because ``loss`` is the loss value there) and
``val_set`` (fingerprint of the validation subset). The fits group points by ``arch``; points of
one arch are one frontier, so :func:`load_points` refuses (:func:`check_pooling`) an arch whose
runs differ in any of these fields, naming the two runs, unless pooling that field is asked for
(``pool=``, ``--pool``). An empty value ("not recorded", e.g. an old ledger) differs from any
recorded one. Rows that share a run id within one arch are one run (a run resumed from a
checkpoint keeps its id); such rows must agree on N, and one step of a run may come from only one
file.
"""
from __future__ import annotations

import csv
import glob
import math
import os
import warnings

import numpy as np

from nnip_scale.ledger_format import LedgerFormatError, read_records


class ScalingInputError(ValueError):
    """Bad input for a scaling fit; the message names the file/line and what was expected."""


#: point key -> ledger field (docs/compute.md); the CSV uses the point key itself as the column name
LEDGER_FIELDS = {"N": "n_params", "D": "atoms_seen", "C": "flops", "H": "gpu_hours", "loss": "val_loss",
                 "step": "step"}
C_UNITS = {"FLOP": 1.0, "PFLOP": 1e15}
H_UNITS = {"hours": 1.0, "s": 1.0 / 3600.0}
_C_COLUMNS = {"C": None, "C_FLOP": "FLOP", "C_PFLOP": "PFLOP"}
_H_COLUMNS = {"H": None, "H_hours": "hours", "H_s": "s"}
#: identity fields the pooling rule compares: option name (= ledger field) -> point key (= CSV column)
POOL_FIELDS = {"dataset": "dataset", "force_mode": "force_mode", "loss": "loss_name", "val_set": "val_set"}
_POOL_WHAT = {"dataset": "dataset fingerprint", "force_mode": "force mode", "loss": "training loss",
              "val_set": "validation subset"}
CSV_COLUMNS = ("run", "arch", "N", "D", *_C_COLUMNS, *_H_COLUMNS, "loss", "step", *POOL_FIELDS.values())
NUMERIC = ("N", "D", "C", "H", "loss", "step")
STRINGS = ("run", "arch", "src", *POOL_FIELDS.values())


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


def _text(value):
    """An identity field as a string ("" when absent)."""
    return "" if value is None else str(value).strip()


def _read_ledger(path):
    """The points of one ledger. Lines are read by ``nnip_scale.ledger_format`` (one policy for
    every reader: a torn final line is skipped with a warning; a malformed line is an error naming
    the file and line, raised here as ScalingInputError)."""
    try:
        records = read_records(path, stacklevel=4)
    except LedgerFormatError as err:
        raise ScalingInputError(str(err)) from None
    rows = []
    for i, row, _text_line in records:
        where = f"{path}:{i}"
        loss = row.get("val_loss")
        if row.get("status") == "diverged" or (isinstance(loss, float) and not math.isfinite(loss)):
            # a diverged run: left out of every fit by load_points, with a warning naming it
            rows.append({"run": str(row.get("run_id") or path), "src": where, "diverged": (
                f"diverged at step {row.get('diverged_at_step', row.get('step'))}"
                + (f" (val_loss {loss})" if isinstance(loss, float) and not math.isfinite(loss) else ""))})
            continue
        rec = {k: _number(row.get(f), where, f"{f}") for k, f in LEDGER_FIELDS.items()}
        if rec["H"] is None and row.get("device_hours") is not None:  # H: device-hours (GPU or CPU)
            rec["H"] = _number(row.get("device_hours"), where, "device_hours")
        rec.update(run=str(row.get("run_id") or path), arch=str(row.get("arch") or "all"), src=where)
        rec.update({key: _text(row.get(field)) for field, key in POOL_FIELDS.items()})
        rows.append(rec)
    return rows, {"C": ("FLOP", "ledger field flops"), "H": ("hours", "ledger field device_hours / gpu_hours")}


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
            rec.update({key: _text(r.get(key)) for key in POOL_FIELDS.values()})
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


def load_points(inputs, c_unit=None, h_unit=None, pool=()):
    """Read ledgers (``*.jsonl``) and CSV files (files, directories searched recursively, or globs).

    Returns ``(points, meta)``: points is a dict of arrays (module docstring); meta has ``files``,
    ``units`` (``{"C": "FLOP", "H": "hours"}`` as given by the inputs; values are converted to these
    canonical units), ``notes`` (list of strings for the report) and ``identity`` (per arch, the
    values of each pooling field). ``pool``: identity fields whose differences within an arch are
    accepted (:func:`check_pooling`); by default none is.
    """
    c_unit = c_unit or "FLOP"
    h_unit = h_unit or "hours"
    for name, unit, table in (("c_unit", c_unit, C_UNITS), ("h_unit", h_unit, H_UNITS)):
        if unit not in table:
            raise ScalingInputError(f"{name}={unit!r}: expected one of {list(table)}")
    pool = pool_fields(pool)
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
    diverged = {}
    for r in recs:
        if "diverged" in r:
            diverged.setdefault(r["run"], f"{r['diverged']} ({r['src']})")
    if diverged:
        for run, why in sorted(diverged.items()):
            message = f"run {run} {why}: left out of every fit"
            notes.append(message)
            warnings.warn(message, stacklevel=2)
        recs = [r for r in recs if r["run"] not in diverged]
    if not recs:
        raise ScalingInputError(f"{files}: no data rows in any input"
                                + (f" (every run diverged: {', '.join(sorted(diverged))})" if diverged else ""))
    _check_units(declared)
    pts = {k: np.array([np.nan if r[k] is None else r[k] for r in recs], float) for k in NUMERIC}
    for k in STRINGS:
        pts[k] = np.array([r[k] for r in recs], dtype=object)
    check_runs(pts)
    notes += check_pooling(pts, pool)
    meta = {"files": files, "units": {"C": "FLOP", "H": "hours"}, "notes": notes, "pool": sorted(pool),
            "diverged_runs": diverged,
            "input_units": {k: sorted({u for _, u, _ in v}) for k, v in declared.items()},
            "identity": identity(pts)}
    return pts, meta


def pool_fields(pool):
    """Normalise a pooling option to a set of field names of POOL_FIELDS: None/False/() -> none;
    True, "all" -> all; a comma-separated string or an iterable of names (``loss_name`` is accepted
    for ``loss``)."""
    if pool is None or pool is False:
        return set()
    if pool is True:
        return set(POOL_FIELDS)
    items = pool.split(",") if isinstance(pool, str) else list(pool)
    out = set()
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        if name == "all":
            out |= set(POOL_FIELDS)
        elif name in POOL_FIELDS:
            out.add(name)
        elif name in POOL_FIELDS.values():
            out.add({v: k for k, v in POOL_FIELDS.items()}[name])
        else:
            raise ScalingInputError(f"pool={pool!r}: unknown field {name!r}; expected 'all' or some of "
                                    f"{list(POOL_FIELDS)}")
    return out


def _shown(v):
    return repr(v) if v else "nothing (not recorded)"


def check_pooling(pts, pool=()):
    """The pooling rule: within one arch every run must share dataset, force mode, loss and
    validation subset. Raises ScalingInputError naming two runs that differ (run id, file:line)
    in a field not in ``pool``; returns notes for the fields pooled on purpose that do differ."""
    pool = pool_fields(pool)
    notes = []
    if "arch" not in pts:
        return notes
    for arch in sorted({str(a) for a in pts["arch"]}):
        idx = np.flatnonzero(pts["arch"] == arch)
        for field, key in POOL_FIELDS.items():
            if key not in pts:
                continue
            vals = pts[key][idx]
            values = list(dict.fromkeys(vals.tolist()))
            if len(values) < 2:
                continue
            if field in pool:
                notes.append(f"{arch}: runs with different {_POOL_WHAT[field]}s pooled on purpose "
                             f"(pool {field}): {', '.join(_shown(v) for v in values)}")
                continue
            i, j = idx[0], idx[np.flatnonzero(vals != vals[0])[0]]
            raise ScalingInputError(
                f"refusing to pool runs of arch {arch!r} that differ in {field} ({_POOL_WHAT[field]}): run "
                f"{pts['run'][i]!r} ({pts['src'][i]}) has {_shown(pts[key][i])}, run {pts['run'][j]!r} "
                f"({pts['src'][j]}) has {_shown(pts[key][j])}. The runs of one arch label are fitted as one "
                "frontier, so they must share dataset, force mode, loss and validation subset; give them "
                f"distinct arch labels (model.arch_name, or the study's architecture key), fit them separately, "
                f"or pool on purpose with --pool {field} (library: pool={{'{field}'}}; study file: report: {{pool: "
                f"[{field}]}}; 'all' pools every field)")
    return notes


def check_runs(pts):
    """Rows sharing a run id within one arch are one run (a resumed run keeps its id): they must
    agree on N, and a step of the run may come from one file only (else the same ledger was given
    twice, or two runs share an id)."""
    seen_n, seen_step = {}, {}
    for i in range(len(pts["loss"])):
        key = (pts["arch"][i], pts["run"][i])
        n = pts["N"][i]
        if not np.isnan(n):
            j = seen_n.setdefault(key, i)
            if pts["N"][j] != n:
                raise ScalingInputError(
                    f"{pts['src'][i]}: run {key[1]!r} of arch {key[0]!r} has N = {n:g} here but N = {pts['N'][j]:g} "
                    f"at {pts['src'][j]}; rows with one run id are one run (one model size): give each run its own id")
        f = pts["src"][i].rsplit(":", 1)[0]
        j = seen_step.setdefault(key + (pts["step"][i],), i)
        if j != i and pts["src"][j].rsplit(":", 1)[0] != f:
            raise ScalingInputError(
                f"{pts['src'][i]}: step {pts['step'][i]:g} of run {key[1]!r} (arch {key[0]!r}) is also at "
                f"{pts['src'][j]}; one run's step may come from one file only (the same ledger given twice, "
                "or two runs sharing a run id)")


def identity(pts):
    """{arch: {field: value, or a list of values when pooled}} over the identity fields recorded."""
    out = {}
    for arch in sorted({str(a) for a in pts["arch"]}):
        m = pts["arch"] == arch
        entry = {}
        for field, key in POOL_FIELDS.items():
            if key in pts:
                values = list(dict.fromkeys(pts[key][m].tolist()))
                entry[field] = values[0] if len(values) == 1 else values
        out[arch] = entry
    return out


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
