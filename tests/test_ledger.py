"""Compute ledger: FLOPs equal a hand count; a run killed with SIGKILL resumes its totals with no
lost or duplicated rows."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from batch_utils import batch_from_atoms
from ledger_models import LinearPotential

from nnip_scale import ledger_format
from nnip_scale.ledger_format import TornLineWarning
from nnip_scale.training import NNIPModule
from nnip_scale.training.flops import calibrate, count_flops, reference_copy, slice_batch

HERE = Path(__file__).parent


def water_methane():
    from ase.build import molecule

    names = ["H2O", "CH4", "NH3", "CH3CH2OH", "C6H6", "CO2", "HCOOH", "CH3OH"]
    return batch_from_atoms([molecule(n) for n in names], 3.0, dtype=torch.float32)


def test_step_flops_equal_hand_count_and_cost_model_is_exact():
    batch = water_methane()
    d = 4
    module = NNIPModule(LinearPotential(d))
    twin = reference_copy(module.backbone)
    measured = count_flops(lambda: module.step_terms(twin, batch)["loss"].backward())
    assert measured == LinearPotential.hand_count_train_flops(batch["n_atoms"], d)
    model = calibrate(lambda b: module.step_terms(twin, b)["loss"].backward(), [batch])
    for k in (1, 3, 5, 7):
        sub = slice_batch(batch, k)
        assert model(sub["n_edges"], sub["n_atoms"], sub["n_structures"]) == pytest.approx(
            LinearPotential.hand_count_train_flops(sub["n_atoms"], d), rel=1e-9)
    assert model.max_rel_residual < 1e-9


def test_slice_batch_keeps_structure_prefix():
    batch = water_methane()
    sub = slice_batch(batch, 2)
    assert sub["n_atoms"] == 3 + 5 and sub["n_structures"] == 2
    assert int(sub["edge_index"].max()) < sub["n_atoms"]
    assert sub["n_edges"] == sub["edge_index"].shape[1] == sub["edge_shift"].shape[0]


def read_rows(path):
    """The ledger's rows by the one reading policy (a row being written is a torn line: skipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)
        return ledger_format.read_rows(path)


def run_script(root, steps, sleep_s, *extra, wait=True):
    cmd = [sys.executable, str(HERE / "ledger_script.py"), str(root), str(steps), str(sleep_s), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    if wait:
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
        return None
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_sigkill_continues_totals(tmp_path):
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    run_script(ref_root, 30, 0.0)
    ref = read_rows(ref_root / "ledger.jsonl")
    assert [r["step"] for r in ref] == [5, 10, 15, 20, 25, 30]

    proc = run_script(root, 30, 0.15, wait=False)
    ledger = root / "ledger.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few rows exist, mid-interval
        if ledger.exists() and len(read_rows(ledger)) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (root / "ckpt" / "last.ckpt").exists()
    with open(ledger, "a") as fh:  # a torn final line, as a crash mid-write leaves
        fh.write('{"run_id": "r", "step": 9')
    run_script(root, 30, 0.0, "resume")
    rows = read_rows(ledger)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(r["schema"] == 1 for r in rows) and ledger.read_text().endswith("\n")  # the torn line is gone
    for a, b in zip(ref, rows):
        for key in ("structures_seen", "atoms_seen", "edges_seen", "n_params"):
            assert a[key] == b[key], key
        assert a["flops"] == pytest.approx(b["flops"], rel=1e-12)
        assert a["val_flops"] == pytest.approx(b["val_flops"], rel=1e-12)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    walls = [r["wall_s"] for r in rows]
    assert walls == sorted(walls)
    assert rows[-1]["atoms_seen"] == 30 * (3 + 5)


def test_kappa_of_tiny_model_equals_hand_count():
    from nnip_scale.training.kappa import fit_kappa, measure_point

    batch = water_methane()
    points = []
    for d in (2, 4, 8):
        torch.manual_seed(0)
        pt = measure_point("linear", LinearPotential(d), [batch])
        A = batch["n_atoms"]
        assert pt.n_params == 8 * d
        assert pt.fwd_flops_per_atom == pytest.approx(LinearPotential.hand_count_forward_flops(A, d) / A)
        assert pt.train_flops_per_atom == pytest.approx(LinearPotential.hand_count_train_flops(A, d) / A)
        assert pt.kappa == pytest.approx((14 * d + 1) / (8 * d))
        points.append(pt)
    fit = fit_kappa(points)
    N = np.array([8 * d for d in (2, 4, 8)], float)
    y = np.array([14 * d + 1 for d in (2, 4, 8)], float)
    assert fit["kappa"] == pytest.approx(N @ y / (N @ N))
