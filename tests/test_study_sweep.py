"""The study's LR sweep (issue 13, item 2): candidates at the base width, the best by validation loss,
the table in the report, μP transfer to the grid, reuse on rerun, and the plan's errors."""

import json

import pytest
import yaml
from _emt_data import write_cu_emt  # tests/_emt_data.py
from test_study import REPO, run_study, study_file

from nnip_scale.study import StudyError, is_done, load_study
from nnip_scale.study.slurm import sbatch_script


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cu_emt(tmp_path_factory.mktemp("sweep_data") / "cu.extxyz", groups=20, per_group=10, seed=3)


def sweep_file(tmp_path, data, lrs=(1e-3, 4e-3, 1e6), **sweep):
    path = study_file(tmp_path, data, [320], widths=(8, 16), archs=("mpnn", "mpnn_conservative"), mup=True)
    cfg = yaml.safe_load(path.read_text())
    del cfg["architectures"]["mpnn"]["lr"]  # swept; mpnn_conservative keeps its given lr: not swept
    cfg["lr_sweep"] = {"lrs": list(lrs), "atoms": 160, "seeds": [0, 1], **sweep}
    cfg["report"] = {"n_boot": 5}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_plan_with_a_sweep(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(sweep_file(tmp_path, data), tmp_path / "out")
    assert study.sweep.archs == ("mpnn",) and study.pending_archs == ["mpnn"]
    assert len(study.sweep_runs) == 3 * 2  # 3 candidates x 2 seeds, at the base width only
    assert {r.width for r in study.sweep_runs} == {8} and {r.budget_atoms for r in study.sweep_runs} == {160}
    assert study.sweep_runs[0].run_id == "sweep-mpnn-w8-lr0.001-D1p6e2-e1-s0"
    assert "--model.lr=0.001" in study.sweep_runs[0].args
    pending = [r for r in study.runs if r.arch.name == "mpnn"]
    assert all(r.pending for r in pending)
    with pytest.raises(StudyError, match="comes from the study's LR sweep, which has not finished"):
        pending[0].args  # noqa: B018 - no LR is made up for a run that waits for the sweep
    assert "--model.lr=0.004" in [r for r in study.runs if r.arch.name == "mpnn_conservative"][0].args
    # SLURM while the sweep is pending: the script holds the sweep's runs and the runs that need no sweep
    script = sbatch_script(study, "s.yaml")
    assert "sweep-mpnn-w8-lr1e+06-D1p6e2-e1-s1" in script and "mpnn-w16-D3p2e2-e1-s0" not in script


@pytest.mark.parametrize("change, message", [
    ({"lrs": [0.01]}, "lr_sweep.lrs must be at least two distinct positive numbers"),
    ({"lrs": "fast"}, "lr_sweep.lrs must be a list of positive numbers"),
    ({"lrs": [0.01, 0.02], "seed": [0]}, "unknown key 'lr_sweep.seed': did you mean 'seeds'?"),
    ({"atoms": 0, "lrs": [0.01, 0.02]}, "lr_sweep.atoms must be positive"),
])
def test_sweep_errors(tmp_path, data, monkeypatch, change, message):
    monkeypatch.chdir(REPO)
    path = sweep_file(tmp_path, data)
    cfg = yaml.safe_load(path.read_text())
    cfg["lr_sweep"] = {k: v for k, v in {**cfg["lr_sweep"], **change}.items() if k in ("lrs", "atoms", "seeds", *change)}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match=f"study.yaml: {message}"):
        load_study(path)


def test_no_lr_without_a_sweep_and_a_sweep_with_nothing_to_sweep(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    path = sweep_file(tmp_path, data)
    cfg = yaml.safe_load(path.read_text())
    del cfg["lr_sweep"]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match="architecture 'mpnn' has no 'lr' and the study has no 'lr_sweep'"):
        load_study(path)
    cfg["lr_sweep"] = {"lrs": [0.01, 0.02]}
    cfg["architectures"]["mpnn"]["lr"] = 0.01
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match="every architecture has its own 'lr', so nothing would be swept"):
        load_study(path)


@pytest.mark.slow
def test_sweep_chooses_transfers_reports_and_is_reused(tmp_path, data, monkeypatch):
    path = sweep_file(tmp_path, data)
    out = tmp_path / "out"
    proc = run_study(path, out, report=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[study] LR sweep first: 6 runs for mpnn" in proc.stdout
    stored = json.loads((out / "lr_sweep.json").read_text())["mpnn"]
    means = stored["mean_val_loss"]
    assert means["1e+06"] is None  # diverged: loses, however its loss would compare
    assert stored["best_lr"] == min((1e-3, 4e-3), key=lambda lr: means[f"{lr:g}"])
    assert {row["status"] for row in stored["table"] if row["lr"] == 1e6} == {"diverged"}
    assert len(stored["table"]) == 6 and stored["edge"] == ("smallest" if stored["best_lr"] == 1e-3 else None)
    monkeypatch.chdir(REPO)
    study = load_study(path, out)  # re-planned from lr_sweep.json: η* known, transferred with μP
    grid = [r for r in study.runs if r.arch.name == "mpnn"]
    assert not study.pending_archs and all(r.arch.lr_source == "sweep" for r in grid)
    wide = next(r for r in grid if r.width == 16)
    assert f"--model.lr={stored['best_lr']!r}" in wide.args and "--model.mup_base_width=8" in wide.args
    assert all(is_done(r) for r in study.all_runs)
    report = (out / "report.md").read_text()
    sweep = report.split("## Learning-rate sweep")[1].split("## Runs")[0]
    assert f"η* = **{stored['best_lr']:g}**" in sweep and "| 1e+06 | diverged | diverged | – |" in sweep
    assert "← chosen" in sweep and "sweep-" not in report.split("## Runs")[1]  # the sweep is not fitted
    fit = json.loads((out / "report" / "fit.json").read_text())
    assert fit["options"]["inputs"] and all("/sweep/" not in f for f in fit["options"]["inputs"])
    again = run_study(path, out)  # rerun: nothing retrained, the stored choice reused
    assert again.returncode == 0 and "LR sweep first" not in again.stdout
    # a changed sweep (other candidates) is not answered by the stored choice: it is pending again
    cfg = yaml.safe_load(path.read_text())
    cfg["lr_sweep"]["lrs"] = [1e-3, 2e-3]
    path.write_text(yaml.safe_dump(cfg))
    assert load_study(path, out).pending_archs == ["mpnn"]


def test_base_width_seeds(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    path = study_file(tmp_path, data, [160, 320], widths=(8, 16), archs=("mpnn",))
    cfg = yaml.safe_load(path.read_text())
    cfg["base_width_seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(cfg))
    study = load_study(path, tmp_path / "out")
    seeds = {(r.width, r.budget_atoms): sorted(x.seed for x in study.runs if (x.width, x.budget_atoms) ==
                                              (r.width, r.budget_atoms)) for r in study.runs}
    assert seeds == {(8, 160): [0, 1], (8, 320): [0, 1], (16, 160): [0], (16, 320): [0]}  # base width 8
    cfg["base_width_seeds"] = [1, 1]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match="non-empty lists of distinct integers"):
        load_study(path)


def test_per_architecture_overrides(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    path = study_file(tmp_path, data, [160], widths=(8,), archs=("mpnn",))
    cfg = yaml.safe_load(path.read_text())
    cfg["architectures"]["mpnn_deep"] = {**cfg["architectures"]["mpnn"],
                                         "overrides": {"model.backbone.init_args.depth": 2}}
    path.write_text(yaml.safe_dump(cfg))
    study = load_study(path, tmp_path / "out")
    deep = next(r for r in study.runs if r.arch.name == "mpnn_deep")
    args = list(deep.args)  # after the study-wide depth 1: this architecture's depth wins
    assert args.index("--model.backbone.init_args.depth=2") > args.index("--model.backbone.init_args.depth=1")
    assert "--model.backbone.init_args.depth=2" not in next(r for r in study.runs if r.arch.name == "mpnn").args
    from nnip_scale.study.runner import check_run_args

    cfg["architectures"]["mpnn_deep"]["overrides"] = {"model.backbone.init_args.dept": 2}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match="the runs of 'mpnn_deep' would fail"):
        check_run_args(load_study(path, tmp_path / "out"), log=lambda *_: None)


@pytest.mark.slow
def test_a_changed_lr_makes_finished_runs_stale(tmp_path, data, monkeypatch):
    path = study_file(tmp_path, data, [160], widths=(8,), archs=("mpnn",))
    out = tmp_path / "out"
    proc = run_study(path, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(path.read_text())
    cfg["architectures"]["mpnn"]["lr"] = 0.002  # η* changed after the run finished
    path.write_text(yaml.safe_dump(cfg))
    plan = run_study(path, out, "--plan")
    assert "stale" in plan.stdout and "trained with η*=0.004, the plan now gives η*=0.002" in plan.stdout
    refused = run_study(path, out)
    assert refused.returncode == 2 and "were trained under other settings than the plan now gives" in refused.stderr
    assert "--retrain-stale" in refused.stderr
    again = run_study(path, out, "--retrain-stale")
    assert again.returncode == 0, again.stderr[-2000:]
    run_id = "mpnn-w8-D1p6e2-e1-s0"
    assert "moved to" in again.stdout and len(list((out / "stale").glob(f"{run_id}.*"))) == 1
    done = json.loads((out / "runs" / run_id / "DONE.json").read_text())
    assert done["eta_star"] == 0.002 and done["fingerprint"]
    assert "stale" not in run_study(path, out, "--plan").stdout
