"""Study runner: the plan (grid, μP learning-rate transfer, errors), a local grid that finishes and
is skipped when rerun, and a study killed mid-grid that resumes without retraining finished runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _emt_data import write_cu_emt  # tests/_emt_data.py

from nnip_scale.study import StudyError, is_done, ledger_rows, load_study
from nnip_scale.study.slurm import sbatch_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cu_emt(tmp_path_factory.mktemp("study_data") / "cu.extxyz", groups=20, per_group=10, seed=3)


def study_file(tmp_path, data, budgets, widths=(8, 16), archs=("mpnn", "mpnn_conservative"), per_epoch=2, mup=False,
               batch_size=4):
    cfg = {
        "name": "t",
        "mup": mup,
        "base_configs": ["configs/trainer/cpu.yaml"],
        "architectures": {a: {"config": f"configs/model/{a}.yaml", "base_width": 8, "lr": 0.004} for a in archs},
        "widths": list(widths),
        "data": {"atoms": list(budgets), "epochs": 1},
        "seeds": [0],
        "validations_per_epoch": per_epoch,
        "overrides": {
            "data.train": str(data), "data.cutoff": 3.0, "data.batch_size": batch_size, "data.val_fraction": 0.2,
            "data.test_fraction": 0.0, "data.cache_dir": str(tmp_path / "cache"),
            "model.backbone.init_args.cutoff": 3.0, "model.backbone.init_args.depth": 1,
            "trainer.enable_progress_bar": "false", "trainer.limit_val_batches": 2,
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_study(path, out, *extra, wait=True, report=False):
    cmd = [sys.executable, "-m", "nnip_scale.cli", "study", "--config", str(path), "--output", str(out),
           *([] if report else ["--no-report"]), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_plan_grid_and_lr_transfer(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(study_file(tmp_path, data, [160, 1600]), tmp_path / "out")
    assert len(study.runs) == 2 * 2 * 2
    ids = [r.run_id for r in study.runs]
    assert len(set(ids)) == len(ids) and ids[0] == "mpnn-w8-D1p6e2-e1-s0"
    lrs = {r.width: r.lr for r in study.runs if r.arch.name == "mpnn"}
    assert lrs == {8: pytest.approx(0.004), 16: pytest.approx(0.002)}  # η(w) = η*·w_base/w
    run = study.runs[1]
    assert "--data.subset_atoms=1600" in run.args and "--model.backbone.init_args.width=8" in run.args
    wide = [r for r in study.runs if r.width == 16][0]
    assert "--model.lr=0.002" in wide.args  # without μP the rule applies to the one global LR
    assert "--trainer.callbacks.arch=mpnn" in run.args and f"--trainer.callbacks.run_id={run.run_id}" in run.args
    mup = load_study(study_file(tmp_path, data, [160], mup=True), tmp_path / "out")
    wide = [r for r in mup.runs if r.width == 16][0]
    assert "--model.lr=0.004" in wide.args and "--model.mup_base_width=8" in wide.args
    script = sbatch_script(study, str(tmp_path / "study.yaml"), gpus_per_node=4)
    assert "#SBATCH --array=0-7" in script and "#SBATCH --gpus-per-node=4" in script
    assert "--only $RUN" in script and "--devices-per-run=4" in script


def test_plan_errors(tmp_path, data, monkeypatch):
    monkeypatch.chdir(REPO)
    path = study_file(tmp_path, data, [160])
    cfg = yaml.safe_load(path.read_text())
    cfg["architectures"]["mpnn"]["config"] = "configs/model/nope.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match=r"study.yaml: architecture 'mpnn': model config 'configs/model/nope.yaml' not found"):
        load_study(path)
    del cfg["widths"]
    cfg["architectures"]["mpnn"]["config"] = "configs/model/mpnn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match=r"study.yaml: architecture 'mpnn' has no widths and the study has no "
                                         r"top-level 'widths'; expected one or the other"):
        load_study(path)
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_grid_runs_report_and_rerun_skips(tmp_path, data, monkeypatch):
    path = study_file(tmp_path, data, [160], mup=True)
    out = tmp_path / "out"
    proc = run_study(path, out, report=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.chdir(REPO)
    study = load_study(path, out)
    for run in study.runs:
        assert is_done(run), run.run_id
        rows = ledger_rows(run)
        assert len(rows) in (2, 3) and rows[-1]["arch"] == run.arch.name and rows[-1]["width"] == run.width
        assert rows[-1]["atoms_seen"] >= 160 and (run.folder / "checkpoints" / "last.ckpt").is_file()
    # the report: the grid, the measured cost and the fits (a grid this small cannot support L(N, D)
    # or a bootstrap: each is reported as not computed, with its reason, rather than failing the study)
    report = (out / "report.md").read_text()
    assert "4 of 4 runs finished" in report and all(r.run_id in report for r in study.runs)
    fit = json.loads((out / "report" / "fit.json").read_text())
    assert set(fit["architectures"]) == {"mpnn", "mpnn_conservative"}
    assert "mpnn: L_ND: too few points for L(N, D)" in report and "too few runs for a bootstrap over runs: 2 < 4" in report
    assert all(f"| {a} |" in report.split("## Measured cost")[1] for a in ("mpnn", "mpnn_conservative"))
    assert any(name.endswith(".png") for name in fit["figures"]) and "![" in report
    mtimes = [(r.folder / "DONE.json").stat().st_mtime for r in study.runs]
    again = run_study(path, out)
    assert again.returncode == 0 and "4 of 4 runs already finished: skipped" in again.stdout
    assert [(r.folder / "DONE.json").stat().st_mtime for r in study.runs] == mtimes


@pytest.mark.slow
def test_killed_study_resumes_without_retraining(tmp_path, data, monkeypatch):
    # batch size 1: the second run takes ~150 steps, long enough to be killed mid-run
    path = study_file(tmp_path, data, [160, 600], widths=(8,), archs=("mpnn",), per_epoch=8, batch_size=1)
    out = tmp_path / "out"
    monkeypatch.chdir(REPO)
    first, second = load_study(path, out).runs
    proc = run_study(path, out, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not (second.folder / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None, "the study exited before its second run checkpointed"
        time.sleep(0.01)
    time.sleep(0.2)  # let the checkpoint be written completely
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its training process, as a node failure would
    proc.wait()
    assert is_done(first) and not is_done(second)
    done_before = (first.folder / "DONE.json").stat().st_mtime
    again = run_study(path, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 2 runs already finished: skipped" in again.stdout and f"resume {second.run_id}" in again.stdout
    assert (first.folder / "DONE.json").stat().st_mtime == done_before
    rows = ledger_rows(second)
    steps = [r["step"] for r in rows]
    # no lost or duplicated validations: evenly spaced every k steps, plus the one after the last batch
    k = steps[0]
    assert steps[:-1] == list(range(k, k * len(steps), k)) and k * (len(steps) - 1) <= steps[-1] < k * (len(steps) + 1)
    assert len(rows) >= 8 and rows[-1]["run_id"] == second.run_id
    assert rows[-1]["atoms_seen"] >= 600  # the curve ends at the full budget


def test_demo_study_is_the_staircase(monkeypatch):
    """The README's main job: MPNN, MC-EGNN, MACE and eSEN at >= 3 widths each (>= 4 runs per
    architecture, so the bootstrap over runs can give intervals), μP, one nested single-epoch budget."""
    monkeypatch.chdir(REPO)
    study = load_study(REPO / "configs" / "study" / "demo.yaml")
    widths = {}
    for run in study.runs:
        widths.setdefault(run.arch.name, set()).add(run.width)
        assert run.mup and run.epochs == 1 and "--model.mup_base_width=" + str(run.arch.base_width) in run.args
    assert {"mpnn", "mcegnn", "mace_l1_nu4", "esen_l2_m1"} <= set(widths) and all(len(w) >= 4 for w in widths.values())
    # one name per model: the study's keys are the models' own labels (ledger, κ tool, report)
    from nnip_scale.models import registered_model

    for arch in {run.arch for run in study.runs}:
        spec = yaml.safe_load((REPO / arch.config).read_text())["model"]["backbone"]
        model = registered_model(spec["class_path"])(**{**spec["init_args"], "width": 8})
        assert model.arch_label() == arch.name, (arch.config, model.arch_label())
    assert study.data_config["train"] == "builtin:molecules-demo"
