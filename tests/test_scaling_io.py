"""Scaling inputs: ledgers and CSV, units, every degenerate input's error, EMA / drop-first, frontier."""
import json

import numpy as np
import pytest

from nnip_scale.scaling import ScalingInputError, load_points, write_report
from nnip_scale.scaling.analysis import fit_arch, frontier, preprocess
from nnip_scale.scaling.synthetic import curves, write_csv


def _row(run="r1", step=10, n=1e6, d=1e8, flops=1e18, hours=1.0, loss=0.5):
    return {"run_id": run, "arch": "mpnn", "width": 64, "depth": 3, "n_params": n, "step": step,
            "structures_seen": 10, "atoms_seen": d, "flops": flops, "wall_s": 3600.0 * hours,
            "gpu_hours": hours, "val_loss": loss}


def test_ledger_rows_torn_final_line_and_malformed_middle_line(tmp_path):
    good = json.dumps(_row()) + "\n" + json.dumps(_row(step=20, d=2e8, flops=2e18, loss=0.4)) + "\n"
    (tmp_path / "a.jsonl").write_text(good + '{"run_id": "r1", "ar')
    with pytest.warns(UserWarning, match=r"a.jsonl:3: torn final line ignored"):
        pts, meta = load_points([str(tmp_path)])
    assert pts["C"].tolist() == [1e18, 2e18] and pts["D"].tolist() == [1e8, 2e8]
    assert pts["H"].tolist() == [1.0, 1.0] and pts["step"].tolist() == [10, 20]
    assert pts["src"].tolist() == [f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'a.jsonl'}:2"]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps(_row()) + "\n{oops\n" + json.dumps(_row()) + "\n")
    with pytest.raises(ScalingInputError, match=r"b.jsonl:2: malformed JSON line"):
        load_points([str(bad)])


def test_csv_units_from_column_names_and_options(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("run,N,D,C_PFLOP,H_s,loss\nr,1e6,1e8,2.5,7200,0.5\n")
    pts, meta = load_points([str(f)])
    assert pts["C"][0] == 2.5e15 and pts["H"][0] == 2.0 and meta["units"] == {"C": "FLOP", "H": "hours"}
    g = tmp_path / "bare.csv"
    g.write_text("run,N,D,C,H,loss\nr,1e6,1e8,3.0,1800,0.5\n")
    pts, _ = load_points([str(g)], c_unit="PFLOP", h_unit="s")
    assert pts["C"][0] == 3e15 and pts["H"][0] == 0.5
    pts, _ = load_points([str(g)])  # defaults: FLOP, hours
    assert pts["C"][0] == 3.0 and pts["H"][0] == 1800.0


def test_mixed_units_are_refused_naming_the_files(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(_row()) + "\n")
    (tmp_path / "b.csv").write_text("run,N,D,C_PFLOP,loss\nr,1e6,1e8,2.0,0.5\n")
    with pytest.raises(ScalingInputError, match=r"inputs mix C units: .*a.jsonl: FLOP \(ledger field flops\); "
                                                r".*b.csv: PFLOP \(column C_PFLOP\)"):
        load_points([str(tmp_path)])
    (tmp_path / "b.csv").write_text("run,N,D,C,loss\nr,1e6,1e8,2.0,0.5\n")
    with pytest.raises(ScalingInputError, match=r"b.csv: PFLOP \(column C with unit PFLOP\)"):
        load_points([str(tmp_path)], c_unit="PFLOP")
    (tmp_path / "b.csv").write_text("run,N,D,C_FLOP,H_s,loss\nr,1e6,1e8,2.0,60,0.5\n")
    with pytest.raises(ScalingInputError, match=r"inputs mix H units: .*a.jsonl: hours .*b.csv: s \(column H_s\)"):
        load_points([str(tmp_path)])


@pytest.mark.parametrize("text,match", [
    ("N,D,C,loss,width\n1,2,3,4,5\n", r"x.csv:1: unknown column\(s\) \['width'\]"),
    ("N,D,C,C_PFLOP,loss\n1,2,3,4,5\n", r"x.csv:1: ambiguous C columns \['C', 'C_PFLOP'\]"),
    ("N,D,C\n1,2,3\n", r"x.csv:1: no 'loss' column"),
    ("N,D,C,loss\n1,2,3,4\n1,2,3,nan\n", r"x.csv:3: loss is nan \(NaN/inf\)"),
    ("N,D,C,loss\n1,2,3,abc\n", r"x.csv:2: loss is not a number: 'abc'"),
    ("N,D,C,loss\n1,2,3,4,5\n", r"x.csv:2: 5 fields, header has 4"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, match):
    f = tmp_path / "x.csv"
    f.write_text(text)
    with pytest.raises(ScalingInputError, match=match):
        load_points([str(f)])


def test_missing_inputs_and_ledger_nan(tmp_path):
    with pytest.raises(ScalingInputError, match=r"nope.jsonl: no such file or directory"):
        load_points([str(tmp_path / "nope.jsonl")])
    # a non-finite validation loss marks its run as diverged (left out, docs/scaling.md); when that
    # was the only run there is nothing to fit, and the error says why
    (tmp_path / "n.jsonl").write_text(json.dumps(_row()) + "\n" + json.dumps(_row(loss=float("nan"))) + "\n")
    with pytest.warns(UserWarning, match=r"run r1 diverged at step 10 \(val_loss nan\)"), \
            pytest.raises(ScalingInputError, match=r"no data rows in any input \(every run diverged: r1\)"):
        load_points([str(tmp_path / "n.jsonl")])
    # any other non-finite number is still bad input, named by file and line
    (tmp_path / "f.jsonl").write_text(json.dumps(_row()) + "\n" + json.dumps(_row(flops=float("inf"))) + "\n")
    with pytest.raises(ScalingInputError, match=r"f.jsonl:2: flops is inf \(NaN/inf\)"):
        load_points([str(tmp_path / "f.jsonl")])


def _pts(tmp_path, rows_text):
    f = tmp_path / "m.csv"
    f.write_text(rows_text)
    return load_points([str(f)])[0]


def test_law_errors_missing_nonpositive_too_few_and_n_not_varying(tmp_path):
    # one width only: L(N, D) refused (N must vary), L(C) still fitted; the D cell of line 3 is missing
    lines = ["run,N,D,C,H,step,loss"] + [f"r{i},1e6,{d:g},{3e6 * d:g},{d / 1e8:g},{d:g},{0.1 + 5 * d ** -0.3:.6g}"
                                         for i in range(5) for d in (1e6, 3e6, 1e7, 3e7, 1e8)]
    pts = _pts(tmp_path, "\n".join(lines) + "\n")
    out = fit_arch(pts, n_boot=0)
    assert "needs >= 3 distinct values of parameters N (widths), got 1 (N must vary" in out["L_ND"]["error"]
    assert out["allocation"]["error"].startswith("needs L(N, D):")
    assert "gamma" in out["L_C"] and "gamma_h" not in out["L_C"]
    lines[2] = "r0,1e6,,3e13,0.1,2,0.9"
    out = fit_arch(_pts(tmp_path, "\n".join(lines) + "\n"), n_boot=0)
    assert out["L_ND"]["error"].endswith("m.csv:3: missing D (CSV column D, ledger field atoms_seen), needed by L(N, D)")
    lines[2] = "r0,1e6,1e7,-3e13,0.1,2,0.9"
    out = fit_arch(_pts(tmp_path, "\n".join(lines) + "\n"), n_boot=0)
    assert out["L_C"]["error"].endswith("m.csv:3: non-positive C=-3e+13; L_C (loss vs training FLOPs) needs C > 0")
    out = fit_arch(_pts(tmp_path, "\n".join(lines[:4]) + "\n"), n_boot=0)
    assert out["L_ND"]["error"] == "too few points for L(N, D): 3 < 6"
    assert out["L_H"]["error"] == "L_H needs >= 4 frontier points (loss vs device-hours), got 2 from 3 checkpoints"


def test_too_few_runs_for_bootstrap_keeps_the_fit(tmp_path):
    p = curves((0.05, 30.0, 60.0, 0.3, 0.35), [1e5, 1e6, 1e7], np.geomspace(1e6, 1e9, 6), 0.0, arch="mpnn")
    out = fit_arch(p, n_boot=20)
    assert out["L_ND"]["alpha"] == pytest.approx(0.3, abs=1e-4)
    assert out["L_ND"]["ci95_error"] == ("too few runs for a bootstrap over runs: 3 < 4 (95 % intervals "
                                         "not computed)")
    assert "ci95" not in out["L_ND"]


def test_ema_and_drop_first_numbers():
    pts = {"loss": np.array([4.0, 2.0, 1.0, 10.0, 3.0, 0.0 + 2.0]), "step": np.array([0, 10, 20, 0, 10, 20.0]),
           "run": np.array(["a", "a", "a", "b", "b", "b"], dtype=object)}
    out = preprocess(pts, drop_first=0.0, ema=0.5)
    # s0 = L0; s_t = 0.5 s_{t-1} + 0.5 L_t, per run
    np.testing.assert_allclose(out["loss"], [4.0, 3.0, 2.0, 10.0, 6.5, 4.25])
    out = preprocess(pts, drop_first=0.5)  # steps < 0.5 * 20 dropped in each run
    assert out["loss"].tolist() == [2.0, 1.0, 3.0, 2.0] and out["step"].tolist() == [10, 20, 10, 20]
    out = preprocess(pts, drop_first=0.51, ema=0.5)  # smoothing uses the dropped checkpoints first
    np.testing.assert_allclose(out["loss"], [2.0, 4.25])
    with pytest.raises(ScalingInputError, match=r"ema=1.0: expected a smoothing factor in \[0, 1\)"):
        preprocess(pts, ema=1.0)
    with pytest.raises(ScalingInputError, match=r"drop_first=1.5: expected a fraction in \[0, 1\)"):
        preprocess(pts, drop_first=1.5)


def test_frontier_is_the_lower_envelope():
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.5, 2.0])
    y = np.array([5.0, 4.0, 4.5, 3.0, 3.5, 3.9])
    assert frontier(x, y).tolist() == [0, 5, 4, 3]


def test_write_report_records_options_and_reports_per_law_errors(tmp_path):
    """Demo-grid shape: 4 widths x 1 data budget, checkpoints give D variation; a second arch
    with 2 runs only: its laws are errors, nothing crashes, options are recorded."""
    rng = np.random.default_rng(1)
    a = curves((0.05, 30.0, 60.0, 0.3, 0.35), np.geomspace(1e5, 1e7, 4), np.geomspace(1e6, 1e8, 6), 0.005, rng,
               "mpnn", 2.0)
    b = curves((0.05, 30.0, 60.0, 0.3, 0.35), [1e5, 1e6], np.geomspace(1e6, 1e8, 2), 0.005, rng, "egnn", 20.0)
    write_csv(tmp_path / "runs.csv", {k: np.concatenate([a[k], b[k]]) for k in a})
    fit = write_report([str(tmp_path / "runs.csv")], tmp_path / "out", drop_first=0.2, ema=0.3, n_boot=20,
                       seed=3, budget_flops=1e18)
    saved = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert saved == fit
    o = fit["options"]
    assert (o["drop_first"], o["ema"], o["n_boot"], o["seed"], o["budget_flops"]) == (0.2, 0.3, 20, 3, 1e18)
    m, e = fit["architectures"]["mpnn"], fit["architectures"]["egnn"]
    assert m["n_points"] == 4 * 5  # steps 1..6, step < 0.2 * 6 dropped
    assert set(m["L_ND"]) >= {"alpha", "beta", "A", "B", "L_inf", "ci95"}
    assert set(m["L_C"]) >= {"gamma", "F", "L_inf", "ci95", "loglog", "loss_at_budget"}
    assert set(m["L_H"]) >= {"gamma_h", "F_h", "L_inf"} and "gamma_h" in m["L_H"]["ci95"]
    assert set(m["allocation"]) >= {"a", "b", "gamma_c_derived", "kappa", "N_opt", "D_opt", "loss_opt", "ci95"}
    assert m["allocation"]["kappa"] == pytest.approx(2.0)
    assert m["consistency"]["gamma_c_derived"] == pytest.approx(m["allocation"]["gamma_c_derived"])
    assert "error" in e["L_ND"] and "error" in e["L_C"] and "error" in e["allocation"]
    assert "figure_errors" not in fit and len(fit["figures"]) == 4  # plots cope with the error entries
    md = (tmp_path / "out" / "fit.md").read_text()
    assert "| mpnn | 4 | 20 |" in md and "- egnn: L_ND: too few points for L(N, D): 4 < 6" in md
