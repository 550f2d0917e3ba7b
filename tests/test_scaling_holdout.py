"""Holdout: does the law predict? (issue 13, item 3). Fit every law on the runs below a cut (on a
run's final C, N or D, or ``top``), predict each held-out run's final loss with a 95 % bootstrap
interval, compare with the measurement; in fit.json, fit.md, holdout.png and the study report."""
import json
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from nnip_scale.scaling import ScalingInputError, write_report
from nnip_scale.scaling.analysis import ScalingFitWarning, fit_holdout, holdout_split, parse_holdout, preprocess
from nnip_scale.scaling.io import subset
from nnip_scale.scaling.laws import predict_lnd
from nnip_scale.scaling.synthetic import curves, write_csv

pytestmark = pytest.mark.filterwarnings("ignore::nnip_scale.scaling.analysis.ScalingFitWarning")
TRUTH = (0.05, 30.0, 60.0, 0.3, 0.35)
TRUE = {"L_inf": TRUTH[0], "A": TRUTH[1], "B": TRUTH[2], "alpha": TRUTH[3], "beta": TRUTH[4]}
PNG = b"\x89PNG\r\n\x1a\n"


WIDTHS = tuple(np.geomspace(1e5, 1e8, 7))


def grid(widths=WIDTHS, budgets=(1e9,), n_ckpt=8, noise=0.003, seeds=2, arch="mpnn", seed=0):
    """Runs at each width x data budget (x seeds), checkpoints log-spaced from 1e6 atoms to the budget;
    run ids name the budget, so a width trained on two budgets is two runs."""
    rng = np.random.default_rng(seed)
    parts = []
    for b in budgets:
        p = curves(TRUTH, widths, np.geomspace(1e6, b, n_ckpt), noise, rng, arch, 2.0, seeds=seeds)
        p["run"] = np.array([f"{r}-D{b:.0e}" for r in p["run"]], dtype=object)
        parts.append(p)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def holdout(pts, spec, n_boot=20):
    plan = holdout_split(pts, spec)
    arch = next(iter(plan))
    return fit_holdout(preprocess(subset(pts, pts["arch"] == arch), 0.05), plan[arch], n_boot=n_boot)


def rows(h, law):
    return [r for r in h["table"] if r["law"] == law]


# ---------------------------------------------------------------- the law predicts its own larger runs

@pytest.mark.parametrize("spec, n_held", [("N>3e7", 4), ("top", 2), ("C>=1e17", 4)])
def test_held_out_wider_runs_are_predicted_within_their_intervals(spec, n_held):
    pts = grid()
    h = holdout(pts, spec)
    assert len(h["held_out_runs"]) == n_held and len(h["fitted_runs"]) == 14 - n_held
    assert not set(h["held_out_runs"]) & set(h["fitted_runs"])
    assert all("N1e+08" in r for r in h["held_out_runs"][-2:])  # sorted by the cut variable
    nd = rows(h, "L_ND")
    assert len(nd) == n_held and all(r["beyond_fit"] > 1.5 for r in nd)
    for r in nd:
        truth = float(predict_lnd(TRUE, r["at"]["N"], r["at"]["D"]))
        assert r["predicted"] == pytest.approx(truth, rel=0.02), r          # within 2 % of the true law
        assert r["measured"] == pytest.approx(truth, rel=0.015)             # 0.3 % noise
        assert r["inside"] is True and r["ci95"][0] < r["predicted"] < r["ci95"][1], r
        assert r["pi95"][0] < r["ci95"][0] and r["ci95"][1] < r["pi95"][1]  # one run: wider than the law's
        assert r["rel_error"] == pytest.approx((r["predicted"] - r["measured"]) / r["measured"])
        assert r["n_boot_used"] >= 10 and r["at"]["D"] == 1e9
    s = h["summary"]["L_ND"]
    assert s["n_inside"] == s["n_with_interval"] == s["n_predicted"] == n_held and s["max_abs_rel_error"] < 0.02
    # L(C) and L(H) are predicted too (frontier laws: they need not match a single run, see the docs)
    for law in ("L_C", "L_H"):
        assert all(r["predicted"] > 0 and r["ci95"] for r in rows(h, law)) and len(rows(h, law)) == n_held
    law = h["laws"]["L_ND"]
    assert law["alpha"] == pytest.approx(0.3, abs=0.02) and law["n_boot_used"] >= 10 and "alpha" in law["ci95"]
    assert len(h["in_sample"]["L_ND"]) == 14 - n_held


def test_a_cut_on_the_data_budget_holds_out_whole_runs():
    """D>=1e9: the runs trained on the largest budget are held out whole (their early checkpoints,
    at D < 1e9, are not fitted on), and predicted from the runs on the smaller budgets."""
    pts = grid(widths=np.geomspace(1e5, 1e7, 4), budgets=(1e7, 1e8, 1e9), seeds=1)
    h = holdout(pts, "D>=1e9")
    assert sorted(h["held_out_runs"]) == sorted(r for r in set(pts["run"]) if r.endswith("D1e+09"))
    assert len(h["fitted_runs"]) == 8 and h["var"] == "D"
    for r in rows(h, "L_ND"):
        truth = float(predict_lnd(TRUE, r["at"]["N"], 1e9))
        assert r["predicted"] == pytest.approx(truth, rel=0.03) and r["inside"] is True, r
        assert r["beyond_fit"] == pytest.approx(10.0)


def test_a_held_out_run_from_a_different_law_is_outside_its_interval():
    """One of the two seeds at the widest N bends upward at the end of its run (loss x 1.15 at its
    last checkpoint, as a run whose LR schedule or data went wrong would): flagged as outside; the
    other seed is inside."""
    pts = grid()
    bent = "mpnn-N1e+08-s1-D1e+09"
    idx = np.flatnonzero(pts["run"] == bent)
    pts["loss"][idx] *= 1.0 + 0.15 * (np.arange(len(idx)) / (len(idx) - 1)) ** 4
    h = holdout(pts, "N>3e7")
    by_run = {r["run"]: r for r in rows(h, "L_ND")}
    assert by_run[bent]["inside"] is False and by_run[bent]["rel_error"] < -0.1
    assert by_run["mpnn-N1e+08-s0-D1e+09"]["inside"] is True
    assert h["summary"]["L_ND"]["n_inside"] == 3 and h["summary"]["L_ND"]["n_with_interval"] == 4


# ---------------------------------------------------------------- specs and degenerate cuts

@pytest.mark.parametrize("spec, why", [
    ("C<1e11", "'<' is not a holdout cut"), ("N=5e4", "'=' is not a holdout cut"), ("X>3", "unknown variable 'X'"),
    ("C>abc", "'abc' is not a number"), ("C>inf", "is not finite"), ("C", "quote the spec"), ("", "empty"),
    ("biggest", "not understood"), (5, "not a cut")])
def test_bad_specs_name_the_expected_forms(spec, why):
    with pytest.raises(ScalingInputError) as exc:
        parse_holdout(spec)
    msg = str(exc.value)
    assert why in msg and "expected 'top' (per architecture" in msg and "C>1e11, N>5e4, D>=1e6" in msg, msg


def test_spec_forms():
    assert parse_holdout(" c >= 1e11 ") == {"spec": "C>=1e11", "var": "C", "op": ">=", "value": 1e11}
    assert parse_holdout("N>5e4")["value"] == 5e4 and parse_holdout("TOP")["op"] == "top"


def test_a_cut_that_holds_out_nothing_or_everything_is_an_error_naming_it_and_the_range(tmp_path):
    pts = grid(widths=np.geomspace(1e5, 1e7, 4), seeds=1)
    write_csv(tmp_path / "runs.csv", pts)
    for spec, head in (("C>1e30", "holds out no run"), ("N>=1e5", "holds out every run, leaving nothing to fit on")):
        with pytest.raises(ScalingInputError) as exc:
            write_report([str(tmp_path / "runs.csv")], tmp_path / "out", n_boot=0, holdout=spec, figures=False)
        msg = str(exc.value)
        assert msg.startswith(f"holdout {spec!r} {head}: the runs' final "), msg
        assert "range from " in msg and "(per architecture: mpnn " in msg
    assert not (tmp_path / "out").exists()  # refused before anything was fitted or written
    one = grid(widths=[1e5], seeds=3)  # all three runs at one compute level
    with pytest.raises(ScalingInputError, match="every run of each architecture is at its top compute level"):
        holdout_split(one, "top")


def test_degrade_per_architecture_and_per_law():
    """A cut that splits one architecture but not another: the other's holdout says why; a cut that
    leaves two widths below it: L(N, D) (needs 3 distinct N) is not computable, L(C) still predicts."""
    a = grid(widths=np.geomspace(1e5, 1e7, 4), seeds=1, arch="mpnn")
    b = grid(widths=np.geomspace(1e5, 1e6, 3), seeds=1, arch="egnn", seed=1)
    pts = {k: np.concatenate([a[k], b[k]]) for k in a}
    plans = holdout_split(pts, "N>3e5")
    assert plans["egnn"]["held_out_runs"] and plans["mpnn"]["held_out_runs"]
    plans = holdout_split(pts, "N>2e6")
    assert plans["egnn"]["error"].startswith("holds out none of this architecture's runs (final N of its 3 runs: ")
    h = fit_holdout(preprocess(subset(pts, pts["arch"] == "mpnn"), 0.05), holdout_split(pts, "N>1e6")["mpnn"],
                    n_boot=10)
    assert h["laws"]["L_ND"]["error"].startswith("not computable from the 2 runs below the cut: L(N, D) needs >= 3 "
                                                 "distinct values of parameters N")
    assert not rows(h, "L_ND") and len(rows(h, "L_C")) == 2 and rows(h, "L_C")[0]["predicted"] > 0
    # 2 fitted runs: no bootstrap, so predictions without intervals, and the reason
    r = rows(h, "L_C")[0]
    assert r["ci95"] is None and r["inside"] is None and r["ci95_error"].startswith("too few runs for a bootstrap")


# ---------------------------------------------------------------- the tool, fit.md and the study report

def test_cli_writes_the_holdout_section_table_and_figure(tmp_path):
    a = grid(widths=np.geomspace(1e5, 1e8, 5), seeds=1, arch="mpnn")
    b = grid(widths=np.geomspace(1e5, 1e8, 5), seeds=1, arch="egnn", seed=1)
    write_csv(tmp_path / "runs.csv", {k: np.concatenate([a[k], b[k]]) for k in a})
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "tools/fit_scaling_laws.py", str(tmp_path / "runs.csv"), "--out", str(out),
                        "--n-boot", "20", "--holdout", "top"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    fit = json.loads((out / "fit.json").read_text())
    assert fit["options"]["holdout"] == "top" and "holdout.png" in fit["figures"]
    assert (out / "holdout.png").read_bytes()[:8] == PNG and not list(out.glob(".*"))
    for arch in ("mpnn", "egnn"):
        h = fit["architectures"][arch]["holdout"]
        assert {"spec", "cut", "var", "fitted_runs", "held_out_runs", "laws", "table", "summary"} <= set(h)
        assert h["held_out_runs"] == [f"{arch}-N1e+08-s0-D1e+09"] and len(h["fitted_runs"]) == 4
        row = rows(h, "L_ND")[0]
        assert {"run", "law", "at", "predicted", "ci95", "measured", "rel_error", "inside", "beyond_fit"} <= set(row)
        assert row["inside"] is True and abs(row["rel_error"]) < 0.02
    md = (out / "fit.md").read_text()
    assert "## Holdout: does the law predict?" in md and md == r.stdout.rstrip("\n") + "\n"
    assert ("| arch | held-out run | law | at | beyond fit | predicted [the law's 95 %] | one run 95 % | measured "
            "| rel. error | inside |") in md
    line = next(x for x in md.splitlines() if x.startswith("| mpnn | mpnn-N1e+08-s0-D1e+09 | L(N, D) |"))
    assert "| N = 1e8, D = 1e9 | 5.6× C |" in line and "| yes" in line.split("%")[-1]
    bad = subprocess.run([sys.executable, "tools/fit_scaling_laws.py", str(tmp_path / "runs.csv"), "--out",
                          str(out), "--holdout", "C"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "fit_scaling_laws: error: holdout 'C': a variable without a cut" in bad.stderr


def test_study_report_has_a_holdout_section(tmp_path):
    from nnip_scale.study.report import REPORT_OPTIONS, write_study_report

    assert REPORT_OPTIONS["holdout"] is None
    pts = grid(widths=np.geomspace(1e5, 1e8, 5), seeds=1)
    runs = []
    for k, run in enumerate(dict.fromkeys(pts["run"])):
        folder = tmp_path / "study" / "runs" / run
        (folder / "tb" / "version_0").mkdir(parents=True)
        lines = [json.dumps({"run_id": run, "arch": "mpnn", "n_params": pts["N"][i], "atoms_seen": pts["D"][i],
                             "step": int(pts["step"][i]), "flops": pts["C"][i], "gpu_hours": pts["H"][i],
                             "val_loss": pts["loss"][i]}) for i in np.flatnonzero(pts["run"] == run)]
        (folder / "tb" / "version_0" / "ledger.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "DONE.json").write_text("{}")
        runs.append(types.SimpleNamespace(folder=folder, run_id=run, width=8 * 2 ** k,
                                          arch=types.SimpleNamespace(name="mpnn", lr=0.01, base_width=8)))
    study = types.SimpleNamespace(name="t", path=tmp_path / "study.yaml", folder=tmp_path / "study", runs=runs,
                                  report={"n_boot": 10, "holdout": "N>3e7"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        text = write_study_report(study, log=lambda *a: None).read_text()
    section = text.split("## Holdout: does the law predict?")[1]
    assert "Holdout `N>3e7`" in section and "| mpnn | mpnn-N1e+08-s0-D1e+09 | L(N, D) |" in section
    assert "![holdout.png](report/holdout.png)" in section
    assert text.count("![holdout.png]") == 1  # in its section, not again under Figures
    fitted = text.split("## Fitted scaling laws")[1].split("## Holdout")[0]
    assert "| arch | held-out run |" not in fitted
    # a degenerate cut costs the holdout check, not the fit: the report says why
    study.report["holdout"] = "N>1e9"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        text = write_study_report(study, log=lambda *a: None).read_text()
    assert "| mpnn | 5 |" in text.split("## Fitted scaling laws")[1] and "![holdout.png]" not in text
    assert "The holdout check was not run: holdout 'N>1e9' holds out no run: " in text
