"""Trustworthy numbers (issue 16), scaling side: fits that degrade instead of crashing, warnings
that fire (one test per kind), run identity and the pooling rule.

Fixture ``tests/data/scaling/demo_ledgers/``: the ledgers of the MPNN and MC-EGNN runs of the demo
study (``configs/study/demo.yaml``, 2026-12-01), on which ``tools/fit_scaling_laws.py ...
--budget-flops 1e20`` died with a ZeroDivisionError in ``laws.allocation``: the EGNN's full-data
L(N, D) has alpha = 0 (G = 0), and in the 12th resample (seed 0) of the MPNN alpha = 5 with
log A = -754, so A = exp(log A) underflows to 0.0 (G = 0 again). These ledgers predate the
run-identity fields (dataset, force_mode, loss, val_set), so they are also the "old ledgers".
"""
import json
import math
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from nnip_scale.scaling import ScalingInputError, allocation, analysis, load_points, write_report
from nnip_scale.scaling.analysis import ScalingFitWarning, bound_warnings, fit_all, fit_arch
from nnip_scale.scaling.io import POOL_FIELDS, subset
from nnip_scale.scaling.report import markdown
from nnip_scale.scaling.synthetic import curves

# flags fire on these small fits by design; the tests that are about them check them explicitly
pytestmark = pytest.mark.filterwarnings("ignore::nnip_scale.scaling.analysis.ScalingFitWarning")
DEMO = Path(__file__).parent / "data" / "scaling" / "demo_ledgers"
TRUTH = (0.05, 30.0, 60.0, 0.3, 0.35)


def _tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- 1. fits that degrade, never crash

def test_demo_ledgers_with_a_budget_fit_and_write_their_outputs(tmp_path):
    """The README's command on the demo study's ledgers (--budget-flops 1e20, seed 0): it used to
    die with a ZeroDivisionError and write nothing."""
    out = tmp_path / "fit"
    r = _tool("tools/fit_scaling_laws.py", str(DEMO), "--out", str(out), "--budget-flops", "1e20", "--n-boot", "20",
              "--seed", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    fit = json.loads((out / "fit.json").read_text())
    assert sorted(fit["figures"]) == sorted(p.name for p in out.glob("*.png")) and len(fit["figures"]) == 4
    egnn, mpnn = fit["architectures"]["egnn"], fit["architectures"]["mpnn"]
    # EGNN: alpha = 0 on full data -> N*, D*, L(N*, D*) undefined, with the reason; the rest is there
    assert egnn["L_ND"]["alpha"] == 0.0
    assert egnn["allocation"]["undefined"]["N_opt"].startswith("alpha = 0: the loss does not fall with N")
    assert {"a", "b", "gamma_c_derived"} <= set(egnn["allocation"]) and "N_opt" not in egnn["allocation"]
    assert "gamma" in egnn["L_C"] and "gamma_h" in egnn["L_H"] and egnn["L_C"]["loss_at_budget"] > 0
    # MPNN: alpha = 5 on its bound; the allocation is computed in log space, and the resample whose
    # A underflowed is a usable one now (log A is finite)
    assert mpnn["L_ND"]["alpha"] == 5.0 and math.isfinite(mpnn["allocation"]["N_opt"])
    for entry in ("L_ND", "L_C", "L_H", "allocation"):
        e = mpnn[entry]
        assert e["n_boot"] == 20 and 10 <= e["n_boot_used"] <= 20, (entry, e["n_boot_used"])
        assert all(0 <= n <= e["n_boot_used"] for n in e["n_boot_used_by_quantity"].values())
    md = (out / "fit.md").read_text()
    assert "- egnn: allocation N_opt, D_opt, loss_opt: alpha = 0: the loss does not fall with N" in md
    assert "| mpnn | 4 | 28 |" in md and "Budget C = 1e+20 FLOP" in md
    assert "fit_scaling_laws: warning: mpnn: L_ND: alpha = 5 is on the bound" in r.stderr


def test_allocation_in_log_space_survives_underflow_and_says_what_is_undefined():
    # the crashing resample of the demo MPNN: alpha on its bound, A = exp(-753.8) = 0.0
    p = {"alpha": 5.0, "beta": 0.13774544580069534, "A": 0.0, "log_A": -753.765301, "B": 3.507300344878658,
         "log_B": math.log(3.507300344878658), "L_inf": 0.309018837482374}
    al = allocation(p, kappa=11.97, budget_flops=1e20)
    assert "undefined" not in al and all(math.isfinite(al[k]) and al[k] > 0 for k in ("N_opt", "D_opt", "loss_opt"))
    assert 3.0 * 11.97 * al["N_opt"] * al["D_opt"] == pytest.approx(1e20, rel=1e-9)
    # the optimum: no N on the budget line does better
    n = al["N_opt"] * np.geomspace(0.5, 2.0, 201)
    loss = p["L_inf"] + np.exp(p["log_A"] - p["alpha"] * np.log(n)) + p["B"] * (1e20 / (3 * 11.97 * n)) ** -p["beta"]
    assert loss.min() >= al["loss_opt"] * (1 - 1e-12)
    # alpha = 0 (the demo EGNN on full data): a, b, gamma_c defined; N*, D*, L(N*, D*) are not
    al = allocation({"alpha": 0.0, "beta": 0.13, "A": 1.1e-10, "B": 4.4, "L_inf": 1e-13}, kappa=12.4,
                    budget_flops=1e20)
    assert (al["a"], al["b"], al["gamma_c_derived"]) == (1.0, 0.0, 0.0)
    assert set(al["undefined"]) == {"N_opt", "D_opt", "loss_opt"} and "N_opt" not in al
    al = allocation({"alpha": 0.0, "beta": 0.0, "A": 1.0, "B": 1.0, "L_inf": 0.1}, kappa=1.0, budget_flops=1e20)
    assert set(al["undefined"]) == {"a", "b", "gamma_c_derived", "N_opt", "D_opt", "loss_opt"}
    assert al["undefined"]["a"].startswith("alpha + beta = 0")
    # N* beyond the float range is undefined too, not inf
    al = allocation({"alpha": 1e-3, "beta": 5.0, "A": math.exp(100.0), "B": 1.0, "L_inf": 0.0}, kappa=1.0,
                    budget_flops=1e300)
    assert "beyond the float range" in al["undefined"]["N_opt"]


def _demo_mpnn():
    pts, _ = load_points([str(DEMO)])
    pts = analysis.preprocess(pts, 0.05)
    return subset(pts, pts["arch"] == "mpnn")


def test_a_resample_that_cannot_be_computed_is_unusable_not_fatal(monkeypatch):
    """Any exception in a resample's fit (here: every third L(N, D) refit raises) drops that
    resample from the law's interval and from what derives from it, and is counted."""
    p = curves(TRUTH, np.geomspace(1e5, 1e7, 5), np.geomspace(1e6, 1e8, 5), 0.005, np.random.default_rng(0),
               "mpnn", 2.0)
    real, calls = analysis.fit_lnd, {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 1 and calls["n"] % 3 == 0:
            raise np.linalg.LinAlgError("singular matrix in a resample")
        return real(*args, **kw)

    monkeypatch.setattr(analysis, "fit_lnd", flaky)
    out = fit_arch(p, budget_flops=1e18, n_boot=12, seed=1)
    n_failed = sum(1 for i in range(2, 14) if i % 3 == 0)  # calls 2..13 are the 12 resamples
    assert out["L_ND"]["n_boot"] == 12 and out["L_ND"]["n_boot_used"] == 12 - n_failed
    assert out["allocation"]["n_boot_used"] == 12 - n_failed and out["L_C"]["n_boot_used"] == 12
    assert "alpha" in out["L_ND"]["ci95"] and "N_opt" in out["allocation"]["ci95"]
    assert out["allocation"]["n_boot_used_by_quantity"]["N_opt"] == 12 - n_failed


def test_per_quantity_counts_when_a_derived_quantity_is_undefined_in_some_resamples(monkeypatch):
    """On the demo MPNN, make N* undefined whenever a resample's beta < 0.5: the allocation's other
    quantities keep every usable resample, N_opt counts only its own."""
    real = analysis.allocation

    def picky(p, kappa=None, budget_flops=None):
        out = real(p, kappa, budget_flops)
        if p["beta"] < 0.5 and "N_opt" in out:
            out.pop("N_opt")
            out.setdefault("undefined", {})["N_opt"] = "test: beta < 0.5"
        return out

    monkeypatch.setattr(analysis, "allocation", picky)
    out = fit_arch(_demo_mpnn(), budget_flops=1e20, n_boot=20, seed=0)
    al = out["allocation"]
    used = al["n_boot_used_by_quantity"]
    assert al["n_boot_used"] == used["a"] == used["D_opt"] == out["L_ND"]["n_boot_used"]
    assert used["N_opt"] < used["D_opt"]
    if used["N_opt"] < 10:
        assert al["ci95_missing"]["N_opt"].startswith(f"only {used['N_opt']} of 20 resamples gave a finite N_opt")
    else:
        assert "N_opt" in al["ci95"]


def test_a_law_whose_fit_fails_is_reported_with_its_reason_and_the_others_are_fitted(monkeypatch, tmp_path):
    p = curves(TRUTH, np.geomspace(1e5, 1e7, 4), np.geomspace(1e6, 1e8, 5), 0.0, np.random.default_rng(0), "mpnn", 2.0)
    real = analysis.fit_power

    def fail_on_hours(x, loss, *a, **kw):
        if np.max(x) < 1e3:  # the L(H) frontier: GPU-hours here are < 10, FLOPs > 1e11
            raise RuntimeError("optimiser blew up\non two lines")
        return real(x, loss, *a, **kw)

    monkeypatch.setattr(analysis, "fit_power", fail_on_hours)
    archs = fit_all(p, n_boot=0, budget_flops=1e18, emit=False)
    m = archs["mpnn"]
    assert m["L_H"] == {"error": "fit failed: RuntimeError: optimiser blew up on two lines"}
    assert m["L_ND"]["alpha"] == pytest.approx(0.3, abs=1e-4) and "gamma" in m["L_C"] and "N_opt" in m["allocation"]
    fit = {"options": {"inputs": [], "units": {"C": "FLOP", "H": "hours"}, "drop_first": 0, "ema": None, "n_boot": 0,
                       "seed": 0, "fix_linf": None, "budget_flops": 1e18}, "architectures": archs}
    assert "- mpnn: L_H: fit failed: RuntimeError: optimiser blew up on two lines" in markdown(fit)


# ---------------------------------------------------------------- 2. warnings that fire

def _kinds(entry):
    return [(f["kind"], f["quantity"]) for f in entry.get("flags", [])]


def test_flag_point_on_bound_including_l_h():
    """L(H)'s exponent is gamma_h in fit_arch's output (and in fit.json): flagged like the others."""
    out = bound_warnings({"L_ND": {"alpha": 0.3, "beta": 0.4}, "L_H": {"gamma_h": 5.0, "L_inf": 0.1}})
    assert _kinds(out["L_H"]) == [("point_on_bound", "gamma_h")]
    assert out["L_H"]["warnings"][0].startswith("gamma_h = 5 is on the bound [0, 5]") and "device-hours" in \
        out["L_H"]["warnings"][0]
    assert "flags" not in out["L_ND"]


def test_flag_interval_endpoint_on_bound():
    """γ_h 2.77 [0.048, 5.000]: the interval runs into the search bound."""
    out = bound_warnings({"L_H": {"gamma_h": 2.77, "ci95": {"gamma_h": [0.048, 5.0]}},
                          "L_ND": {"alpha": 0.3, "beta": 0.4, "ci95": {"alpha": [0.2, 0.4], "beta": [0.0004, 0.5]}}})
    assert _kinds(out["L_H"]) == [("interval_on_bound", "gamma_h")]
    assert "[0.048, 5] on the bound 5 of the search" in out["L_H"]["warnings"][0]
    assert _kinds(out["L_ND"]) == [("interval_on_bound", "beta")]


def test_flag_point_estimate_at_its_interval_edge():
    """MPNN γ_c 1.35 [0.12, 1.35]: the point is the upper end of its own interval."""
    out = bound_warnings({"L_C": {"gamma": 1.3504, "ci95": {"gamma": [0.1203, 1.3504]}},
                          "L_ND": {"alpha": 0.3, "beta": 0.4, "L_inf": 0.1,
                                   "ci95": {"alpha": [0.25, 0.35], "beta": [0.3, 0.5], "L_inf": [0.05, 0.1]}},
                          "allocation": {"N_opt": 8e7, "ci95": {"N_opt": [2.4e5, 1.1e13]}}})
    assert _kinds(out["L_C"]) == [("point_at_interval_edge", "gamma")]
    assert "equals the upper end of its 95 % interval [0.12, 1.35]" in out["L_C"]["warnings"][0]
    assert _kinds(out["L_ND"]) == [("point_at_interval_edge", "L_inf")]  # lower edge: L_inf 0.1 [0.05, 0.1]
    assert "flags" not in out["allocation"]  # N* is compared on a log scale: 8e7 is inside [2.4e5, 1.1e13]


def test_flag_degenerate_interval():
    ci = {"alpha": [0.3, 0.3], "beta": [float("nan"), 0.5]}
    out = bound_warnings({"L_ND": {"alpha": 0.3, "beta": 0.4, "ci95": ci}})
    assert _kinds(out["L_ND"]) == [("degenerate_interval", "alpha"), ("degenerate_interval", "beta")]
    assert "zero width or NaN" in out["L_ND"]["warnings"][0]


def test_flag_allocation_derived_from_an_exponent_on_its_bound():
    out = bound_warnings({"L_ND": {"alpha": 5.0, "beta": 0.74},
                          "allocation": {"a": 0.129, "b": 0.871, "gamma_c_derived": 0.647,
                                         "ci95": {"a": [0.129, 0.3]}}})
    assert _kinds(out["allocation"]) == [("derived_from_bound", "*")]  # replaces its interval checks
    assert out["allocation"]["warnings"][0].startswith("derived from alpha = 5 on its search bound")


@pytest.mark.parametrize("consistency,flagged", [
    # fitted 1.35 vs derived 0.65: paired interval of the difference excludes 0
    ({"gamma_c_fitted": 1.35, "gamma_c_derived": 0.65, "difference": 0.70, "ci95": {"difference": [0.1, 1.2]}}, True),
    # same numbers, but the paired interval includes 0: consistent within the intervals
    ({"gamma_c_fitted": 1.35, "gamma_c_derived": 0.65, "difference": 0.70, "ci95": {"difference": [-0.2, 1.2]}}, False),
    # no interval (too few resamples had both laws): judged by the ratio, 1.35 / 0.65 > 2
    ({"gamma_c_fitted": 1.35, "gamma_c_derived": 0.65, "difference": 0.70, "n_boot": 200, "n_boot_used": 98,
      "ci95_error": "only 98 of 200"}, True),
    ({"gamma_c_fitted": 0.20, "gamma_c_derived": 0.15, "difference": 0.05}, False),
])
def test_flag_fitted_and_derived_gamma_c_disagree(consistency, flagged):
    out = bound_warnings({"consistency": dict(consistency)})
    assert _kinds(out["consistency"]) == ([("gamma_c_inconsistent", "difference")] if flagged else [])
    if flagged:
        assert "fitted γ_c = 1.35 (L(C) frontier) and derived αβ/(α+β) = 0.65" in out["consistency"]["warnings"][0]


def test_flags_are_in_fit_json_marked_in_the_tables_and_emitted(tmp_path):
    """Every flag is machine-readable in fit.json (per entry and in the top-level list), emitted as
    a ScalingFitWarning, and the flagged number carries ⚠n in fit.md with footnote n below."""
    with pytest.warns(ScalingFitWarning) as caught:
        fit = write_report([str(DEMO)], tmp_path / "out", n_boot=20, seed=0, budget_flops=1e20, figures=False)
    mpnn = fit["architectures"]["mpnn"]
    assert {"kind": "point_on_bound", "quantity": "alpha", "message": mpnn["L_ND"]["warnings"][0]} in \
        mpnn["L_ND"]["flags"]
    assert all(set(f) == {"kind", "quantity", "message"} and f["kind"] in analysis.FLAG_KINDS
               for a in fit["architectures"].values() for _, f in analysis.flags_of(a))
    emitted = {str(w.message) for w in caught if w.category is ScalingFitWarning}
    assert emitted == set(fit["warnings"]) and "mpnn: L_ND: " + mpnn["L_ND"]["warnings"][0] in emitted
    md = (tmp_path / "out" / "fit.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| mpnn | 4 |"))
    cell = row.split(" | ")[3]  # α
    assert cell.startswith("5.000 [") and " ⚠" in cell
    n = cell.split("⚠")[1].split(",")[0]
    assert f"- ⚠{n} mpnn: L_ND alpha [point_on_bound]: alpha = 5 is on the bound" in md
    egnn_row = next(line for line in md.splitlines() if line.startswith("| egnn | 4 |"))
    assert all("⚠" in c for c in egnn_row.split(" | ")[9:11])  # a, b: derived from alpha = 0


def _fake_study(tmp_path, report):
    runs = []
    for src in sorted(DEMO.iterdir()):
        folder = tmp_path / "study" / "runs" / src.name
        (folder / "tb" / "version_0").mkdir(parents=True)
        shutil.copy(src / "ledger.jsonl", folder / "tb" / "version_0" / "ledger.jsonl")
        (folder / "DONE.json").write_text("{}")
        arch = types.SimpleNamespace(name=src.name.split("-")[0], lr=0.01, base_width=32)
        runs.append(types.SimpleNamespace(folder=folder, run_id=src.name, arch=arch,
                                          width=int(src.name.split("-")[1][1:])))
    return types.SimpleNamespace(name="t", path=tmp_path / "study.yaml", folder=tmp_path / "study", runs=runs,
                                 report=report)


def test_study_report_marks_flagged_numbers_and_passes_pool(tmp_path):
    from nnip_scale.study.report import write_study_report

    study = _fake_study(tmp_path, {"n_boot": 10, "budget_flops": 1e20, "pool": ["val_set"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        path = write_study_report(study, log=lambda *a: None)
    text = path.read_text()
    fitted = text.split("## Fitted scaling laws")[1]
    row = next(line for line in fitted.splitlines() if line.startswith("| mpnn | 4 |"))
    assert "5.000 [" in row and "⚠" in row.split(" | ")[3]
    assert "Flags (⚠n next to a number" in text and "[point_on_bound]: alpha = 5 is on the bound" in text
    assert json.loads((study.folder / "report" / "fit.json").read_text())["options"]["pool"] == ["val_set"]
    assert "| – |" in next(line for line in text.splitlines() if line.startswith("| mpnn-w16"))  # no val_* fields


# ---------------------------------------------------------------- 3. run identity and the pooling rule

IDENT = {"dataset": "molecules-demo:3f2a", "force_mode": "direct", "loss": "mae_l2", "val_set": "val:91c0"}
OTHER = {"dataset": "alloys-demo:77b1", "force_mode": "conservative", "loss": "mse", "val_set": "val:0d4e"}


def _write_runs(folder, idents, arch="mpnn", widths=(1e5, 3e5, 1e6, 3e6), **extra):
    """One ledger per width (6 checkpoints), run i with identity idents[i] (None: old ledger)."""
    pts = curves(TRUTH, widths, np.geomspace(1e6, 1e8, 6), 0.003, np.random.default_rng(2), arch, 2.0)
    folder.mkdir(parents=True, exist_ok=True)
    for k, run in enumerate(dict.fromkeys(pts["run"])):  # file k holds widths[k]
        rows = []
        for i in np.flatnonzero(pts["run"] == run):
            row = {"run_id": f"{arch}-{run}", "arch": arch, "n_params": pts["N"][i], "step": int(pts["step"][i]) * 10,
                   "atoms_seen": pts["D"][i], "flops": pts["C"][i], "gpu_hours": pts["H"][i],
                   "val_loss": pts["loss"][i]}
            if idents[k] is not None:
                row.update(idents[k], val_structures=192, val_atoms=1331, val_groups=10, config_hash="c0ffee",
                           **extra)
            rows.append(json.dumps(row))
        (folder / f"{arch}-{k}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("field", list(POOL_FIELDS))
def test_runs_of_one_arch_that_differ_are_refused(tmp_path, field):
    idents = [IDENT, IDENT, {**IDENT, field: OTHER[field]}, IDENT]
    folder = _write_runs(tmp_path / "runs", idents)
    with pytest.raises(ScalingInputError) as exc:
        load_points([str(folder)])
    msg = str(exc.value)
    assert msg.startswith(f"refusing to pool runs of arch 'mpnn' that differ in {field} (")
    assert f"run 'mpnn-mpnn-N1e+05-s0' ({folder / 'mpnn-0.jsonl'}:1) has {IDENT[field]!r}" in msg
    assert f"run 'mpnn-mpnn-N1e+06-s0' ({folder / 'mpnn-2.jsonl'}:1) has {OTHER[field]!r}" in msg
    assert f"--pool {field}" in msg and "\n" not in msg
    # the tools refuse too (exit 2, the message on stderr)
    r = _tool("tools/plot_frontier.py", str(folder), "--out", str(tmp_path / "f"))
    assert r.returncode == 2 and "refusing to pool runs of arch 'mpnn'" in r.stderr
    # other archs may differ from each other freely
    _write_runs(tmp_path / "two", [IDENT] * 4, arch="mpnn")
    _write_runs(tmp_path / "two", [OTHER] * 4, arch="egnn")
    pts, meta = load_points([str(tmp_path / "two")])
    assert meta["identity"] == {"egnn": OTHER, "mpnn": IDENT}
    assert set(pts["loss_name"]) == {"mae_l2", "mse"} and set(pts["dataset"]) == {IDENT["dataset"], OTHER["dataset"]}


def test_a_run_that_records_nothing_differs_from_one_that_does(tmp_path):
    folder = _write_runs(tmp_path / "runs", [IDENT, None, IDENT, IDENT])
    with pytest.raises(ScalingInputError, match=r"differ in dataset .*has nothing \(not recorded\)"):
        load_points([str(folder)])


def test_csv_identity_columns_are_checked_too(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("run,arch,N,D,C,loss,loss_name,force_mode\n"
                 "a,mpnn,1e6,1e8,1e18,0.5,mae_l2,direct\nb,mpnn,2e6,1e8,2e18,0.4,mse,direct\n")
    with pytest.raises(ScalingInputError, match=r"differ in loss \(training loss\): run 'a' \(.*p.csv:2\) has "
                                                r"'mae_l2', run 'b' \(.*p.csv:3\) has 'mse'"):
        load_points([str(f)])
    pts, meta = load_points([str(f)], pool="loss")
    assert pts["loss_name"].tolist() == ["mae_l2", "mse"] and pts["loss"].tolist() == [0.5, 0.4]
    assert pts["force_mode"].tolist() == ["direct", "direct"] and pts["dataset"].tolist() == ["", ""]


def test_pooling_on_purpose(tmp_path):
    idents = [IDENT, {**IDENT, "force_mode": "conservative"}, IDENT, {**IDENT, "val_set": "val:other"}]
    folder = _write_runs(tmp_path / "runs", idents)
    with pytest.raises(ScalingInputError, match="differ in force_mode"):
        load_points([str(folder)], pool={"val_set"})
    with pytest.raises(ScalingInputError, match=r"pool='bogus': unknown field 'bogus'"):
        load_points([str(folder)], pool="bogus")
    pts, meta = load_points([str(folder)], pool={"force_mode", "val_set"})
    assert meta["pool"] == ["force_mode", "val_set"] and len(meta["notes"]) == 2
    assert meta["notes"][0] == "mpnn: runs with different force modes pooled on purpose (pool force_mode): " \
                               "'direct', 'conservative'"
    assert meta["identity"]["mpnn"]["force_mode"] == ["direct", "conservative"]
    assert load_points([str(folder)], pool=True)[1]["pool"] == sorted(POOL_FIELDS)
    # the fit tool: refused without --pool, fitted with it (repeatable / comma-separated / all)
    r = _tool("tools/fit_scaling_laws.py", str(folder), "--out", str(tmp_path / "o"), "--n-boot", "0", "--no-figures")
    assert r.returncode == 2 and "differ in force_mode" in r.stderr and not (tmp_path / "o" / "fit.json").exists()
    for pool in (["--pool", "force_mode", "--pool", "val_set"], ["--pool", "force_mode,val_set"], ["--pool", "all"]):
        r = _tool("tools/fit_scaling_laws.py", str(folder), "--out", str(tmp_path / "o"), "--n-boot", "0",
                  "--no-figures", *pool)
        assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "o" / "fit.json").read_text())
    assert fit["options"]["pool"] == sorted(POOL_FIELDS) and fit["architectures"]["mpnn"]["n_runs"] == 4
    assert "pooled on purpose (pool force_mode)" in (tmp_path / "o" / "fit.md").read_text()
    r = _tool("tools/plot_frontier.py", str(folder), "--out", str(tmp_path / "f"), "--pool", "force_mode,val_set")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "f" / "frontier.json").read_text())["options"]["pool"] == ["force_mode", "val_set"]


def test_old_ledgers_without_identity_fields_load_and_fit(tmp_path):
    pts, meta = load_points([str(DEMO)])
    for key in POOL_FIELDS.values():
        assert set(pts[key]) == {""}
    assert meta["identity"]["mpnn"] == {k: "" for k in POOL_FIELDS}
    fit = write_report([str(DEMO)], tmp_path / "o", n_boot=0, figures=False)
    assert fit["architectures"]["mpnn"]["L_ND"]["alpha"] == 5.0 and "gamma" in fit["architectures"]["egnn"]["L_C"]
    assert "Run identity" not in (tmp_path / "o" / "fit.md").read_text()  # nothing recorded, nothing shown
    new = _write_runs(tmp_path / "new", [IDENT] * 4)
    fit = write_report([str(new)], tmp_path / "o2", n_boot=0, figures=False)
    assert fit["identity"]["mpnn"] == IDENT
    assert "| mpnn | molecules-demo:3f2a | direct | mae_l2 | val:91c0 |" in (tmp_path / "o2" / "fit.md").read_text()


def test_a_resumed_run_keeps_its_id_and_is_one_run_in_the_bootstrap(tmp_path):
    """A run whose rows sit in two files under one run id (resumed into a new log folder) is one
    unit of the bootstrap: the same fit and intervals as with its rows in one file."""
    whole = _write_runs(tmp_path / "whole", [IDENT] * 5, widths=(1e5, 2e5, 5e5, 1e6, 3e6))
    split = tmp_path / "split"
    shutil.copytree(whole, split)
    lines = (split / "mpnn-0.jsonl").read_text().splitlines(keepends=True)
    (split / "mpnn-0.jsonl").write_text("".join(lines[:3]))
    (split / "mpnn-0-resumed.jsonl").write_text("".join(lines[3:]))
    a = fit_arch(load_points([str(whole)])[0], n_boot=10, seed=4)
    b = fit_arch(load_points([str(split)])[0], n_boot=10, seed=4)
    assert a["n_runs"] == b["n_runs"] == 5
    assert b["L_ND"]["n_boot_used"] == a["L_ND"]["n_boot_used"] == 10
    for name, ci in a["L_ND"]["ci95"].items():  # same resamples (the row order only moves the last digits)
        assert b["L_ND"]["ci95"][name] == pytest.approx(ci, rel=1e-6), name
    assert b["L_ND"]["alpha"] == pytest.approx(a["L_ND"]["alpha"], rel=1e-6)


def test_one_run_id_must_be_one_run(tmp_path):
    folder = _write_runs(tmp_path / "runs", [IDENT] * 4)
    rows = (folder / "mpnn-1.jsonl").read_text().replace('"run_id": "mpnn-mpnn-N3e+05-s0"',
                                                          '"run_id": "mpnn-mpnn-N1e+05-s0"')
    (folder / "mpnn-1.jsonl").write_text(rows)
    with pytest.raises(ScalingInputError, match=r"mpnn-1.jsonl:1: run 'mpnn-mpnn-N1e\+05-s0' of arch 'mpnn' has "
                                                r"N = 300000 here but N = 100000 at .*mpnn-0.jsonl:1"):
        load_points([str(folder)])
    shutil.copy(folder / "mpnn-0.jsonl", folder / "copy.jsonl")
    (folder / "mpnn-1.jsonl").unlink()
    with pytest.raises(ScalingInputError, match=r"step 10 of run 'mpnn-mpnn-N1e\+05-s0' \(arch 'mpnn'\) is also at "
                                                r".*jsonl:1; one run's step may come from one file only"):
        load_points([str(folder)])
