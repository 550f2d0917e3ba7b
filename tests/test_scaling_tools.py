"""End-to-end: tools/fit_scaling_laws.py and tools/plot_frontier.py on CSV and on ledgers."""
import json
import subprocess
import sys

import numpy as np
import pytest

from nnip_scale.scaling.synthetic import curves, write_csv

TRUTH = (0.05, 30.0, 60.0, 0.3, 0.35)
PNG = b"\x89PNG\r\n\x1a\n"


def _tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_scaling_package_does_not_import_torch():
    r = _tool("-c", "import sys, nnip_scale.scaling, nnip_scale.scaling.plots; "
                    "assert 'torch' not in sys.modules, 'torch imported'")
    assert r.returncode == 0, r.stderr


def test_fit_tool_on_csv_writes_json_markdown_and_figures(tmp_path):
    pts = curves(TRUTH, np.geomspace(1e5, 1e8, 6), np.geomspace(1e6, 1e9, 6), 0.0, np.random.default_rng(0),
                 "mpnn", 2.33)
    write_csv(tmp_path / "runs.csv", pts, c_column="C_PFLOP", h_column="H_s")
    out = tmp_path / "out"
    r = _tool("tools/fit_scaling_laws.py", str(tmp_path / "runs.csv"), "--out", str(out), "--budget-flops", "1e18",
              "--n-boot", "20", "--strict")
    assert r.returncode == 0, r.stderr
    fit = json.loads((out / "fit.json").read_text())
    m = fit["architectures"]["mpnn"]
    assert m["L_ND"]["alpha"] == pytest.approx(0.3, abs=1e-4) and m["L_ND"]["beta"] == pytest.approx(0.35, abs=1e-4)
    assert m["L_ND"]["L_inf"] == pytest.approx(0.05, rel=1e-3)
    assert m["allocation"]["kappa"] == pytest.approx(2.33, rel=1e-6)  # C_PFLOP converted back to FLOP
    assert m["allocation"]["a"] == pytest.approx(0.35 / 0.65, abs=1e-4)
    assert fit["options"]["units"] == {"C": "FLOP", "H": "hours"}
    assert "| mpnn | 6 | 36 |" in (out / "fit.md").read_text()
    for name in ("frontier_flops.png", "frontier_gpu_hours.png", "loss_vs_N_D.png", "residuals.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert sorted(fit["figures"]) == sorted(p.name for p in out.glob("*.png"))
    assert not list(out.glob(".*"))  # no temp files left behind


def test_fit_tool_on_ledgers_strict_and_bad_input(tmp_path):
    pts = curves(TRUTH, np.geomspace(1e5, 1e7, 3), np.geomspace(1e6, 1e8, 5), 0.002, np.random.default_rng(1),
                 "mpnn", 3.0)
    for run in np.unique(pts["run"]):
        lines = [json.dumps({"run_id": run, "arch": "mpnn", "n_params": pts["N"][i], "step": int(pts["step"][i]) * 100,
                             "atoms_seen": pts["D"][i], "flops": pts["C"][i], "gpu_hours": pts["H"][i],
                             "wall_s": pts["H"][i] * 3600, "val_loss": pts["loss"][i]})
                 for i in np.flatnonzero(pts["run"] == run)]
        (tmp_path / f"{run}.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:25])  # torn final line
    out = tmp_path / "out"
    r = _tool("tools/fit_scaling_laws.py", str(tmp_path), "--out", str(out), "--n-boot", "10", "--no-figures")
    assert r.returncode == 0, r.stderr
    assert "torn final line ignored" in r.stderr
    fit = json.loads((out / "fit.json").read_text())["architectures"]["mpnn"]
    assert fit["n_runs"] == 3 and fit["L_ND"]["beta"] == pytest.approx(0.35, abs=0.02)
    assert fit["L_ND"]["ci95_error"].startswith("too few runs for a bootstrap over runs: 3 < 4")
    r = _tool("tools/fit_scaling_laws.py", str(tmp_path), "--out", str(out), "--n-boot", "10", "--no-figures",
              "--strict")
    assert r.returncode == 1 and "--strict: mpnn: L_ND ci95: too few runs" in r.stderr
    (tmp_path / "x.csv").write_text("run,N,D,C_PFLOP,loss\nr,1,2,3,4\n")
    r = _tool("tools/fit_scaling_laws.py", str(tmp_path), "--out", str(out))
    assert r.returncode == 2 and "inputs mix C units" in r.stderr and "x.csv: PFLOP (column C_PFLOP)" in r.stderr


def test_plot_frontier_tool(tmp_path):
    pts = curves(TRUTH, np.geomspace(1e5, 1e8, 4), np.geomspace(1e6, 1e9, 6), 0.0, np.random.default_rng(0), "egnn")
    write_csv(tmp_path / "runs.csv", pts)
    r = _tool("tools/plot_frontier.py", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "f"), "--drop-first", "0.3")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "f" / "frontier.json").read_text())
    fr = res["frontiers"]["egnn"]["flops"]
    assert np.all(np.diff(fr["C"]) > 0) and np.all(np.diff(fr["loss"]) < 0)
    assert min(fr["step"]) >= 2 and res["options"]["drop_first"] == 0.3  # step < 0.3 * 6 dropped
    assert (tmp_path / "f" / "frontier_gpu_hours.png").read_bytes()[:8] == PNG


def test_worked_example_is_reproducible_and_covers_its_truth(tmp_path):
    """docs/examples/: the CSV is what synthetic.example() writes, and the committed fit's 95 %
    intervals contain the true alpha, beta, L_inf of every architecture (docs/scaling.md)."""
    from nnip_scale.scaling.synthetic import EXAMPLE, example

    write_csv(tmp_path / "ex.csv", example())
    assert (tmp_path / "ex.csv").read_text() == open("docs/examples/synthetic_runs.csv").read()
    fit = json.load(open("docs/examples/fit.json"))["architectures"]
    for arch, (linf, _A, _B, alpha, beta, kappa) in EXAMPLE.items():
        nd = fit[arch]["L_ND"]
        for name, truth in (("alpha", alpha), ("beta", beta), ("L_inf", linf)):
            lo, hi = nd["ci95"][name]
            assert lo <= truth <= hi, (arch, name, truth, lo, hi)
        assert fit[arch]["allocation"]["kappa"] == pytest.approx(kappa, rel=1e-6)
