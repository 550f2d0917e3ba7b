"""Study files and the study command behave like a tool: unknown keys are refused with a
suggestion, overrides are dry-parsed once before any run, widths may live per architecture, SLURM
scripts address runs by id and survive the time limit, --devices never trains on the CPU silently."""

from pathlib import Path

import pytest

from nnip_scale.study import StudyError, load_study
from nnip_scale.study.cli import main as study_main
from nnip_scale.study.runner import check_run_args, run_args
from nnip_scale.study.slurm import sbatch_script

REPO = Path(__file__).resolve().parents[1]


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path, small_study, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(StudyError, match=r"study.yaml: unknown key 'seed': did you mean 'seeds'\?"):
        load_study(small_study(tmp_path, seed=[0]))
    with pytest.raises(StudyError, match=r"study.yaml: unknown key 'data.atom': did you mean 'atoms'\?"):
        load_study(small_study(tmp_path, data={"atoms": [40], "atom": 3}))
    bad_arch = {"mpnn": {"config": "configs/model/mpnn.yaml", "base_width": 8, "lr": 0.004, "widths": [8], "widht": 3}}
    with pytest.raises(StudyError, match=r"unknown key 'architectures.mpnn.widht': did you mean 'widths'\?"):
        load_study(small_study(tmp_path, architectures=bad_arch))
    study = load_study(small_study(tmp_path))  # no top-level widths: each architecture has its own
    assert [r.width for r in study.runs] == [8, 16]


def test_overrides_are_dry_parsed_before_any_run(tmp_path, small_study, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    study = load_study(small_study(tmp_path, extra_overrides={"trainer.max_stepz": 3}), tmp_path / "out")
    with pytest.raises(StudyError, match=r"the runs of 'mpnn' would fail: unrecognized arguments: "
                                         r"--trainer.max_stepz=3 .*did you mean 'trainer.max_steps'"):
        check_run_args(study, log=lambda *_: None)
    assert not (tmp_path / "out").exists()  # nothing was trained or written
    check_run_args(load_study(small_study(tmp_path), tmp_path / "out"), log=lambda *_: None)


def test_slurm_script_addresses_runs_by_id_and_requeues(tmp_path, small_study, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(small_study(tmp_path), tmp_path / "out")
    text = sbatch_script(study, str(tmp_path / "study.yaml"), gpus_per_node=2, cpus_per_task=6, signal_seconds=90)
    assert "#SBATCH --array=0-1" in text and "#SBATCH --cpus-per-task=6" in text
    assert "#SBATCH --signal=SIGUSR1@90" in text and "#SBATCH --requeue" in text
    assert "RUNS=(" + " ".join(r.run_id for r in study.runs) + ")" in text
    assert 'RUN="${RUNS[$SLURM_ARRAY_TASK_ID]}"' in text and "--only $RUN" in text
    with pytest.raises(StudyError, match=r"no run 'mpnn-w99-D4e1-e1-s0' in the plan \(was the study file edited"):
        study.run_by_id("mpnn-w99-D4e1-e1-s0")
    # the script of a CPU study warns; the big example is a GPU study that plans 120 runs
    big = load_study(REPO / "configs" / "study" / "big.yaml", tmp_path / "big")
    assert big.accelerator == "gpu" and len(big.runs) == 120


def test_resume_takes_the_newest_checkpoint(tmp_path, small_study, monkeypatch):
    import os
    import time

    monkeypatch.chdir(REPO)
    run = load_study(small_study(tmp_path), tmp_path / "out").runs[0]
    (run.folder / "checkpoints").mkdir(parents=True)
    last = run.folder / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    hpc = run.folder / "hpc_ckpt_1.ckpt"  # what Lightning saves on SLURM's SIGUSR1
    hpc.write_bytes(b"x")
    now = time.time()
    os.utime(last, (now - 60, now - 60))
    assert run_args(run)[-1] == f"--ckpt_path={hpc}"
    os.utime(last, (now + 60, now + 60))
    assert run_args(run)[-1] == f"--ckpt_path={last}"
    assert "--trainer.accelerator=gpu" in run_args(run, devices=1, gpu=True)


def test_devices_without_a_gpu_and_the_plan_columns(tmp_path, small_study, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(REPO)
    path = small_study(tmp_path)
    if not torch.cuda.is_available():
        assert study_main(["--config", str(path), "--output", str(tmp_path / "o"), "--devices", "0", "1"]) == 2
        assert "--devices 0 1 hands out GPUs, but no CUDA GPU is visible here" in capsys.readouterr().err
    assert study_main(["--config", str(path), "--output", str(tmp_path / "o"), "--plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "η*: the LR tuned at the base width" in out[0]
    assert out[2].endswith("η*=0.004 (base 8)  η(w)=0.002")


def test_the_report_keys_a_study_file_accepts_are_the_report_options():
    from nnip_scale.study.plan import KEYS
    from nnip_scale.study.report import REPORT_OPTIONS

    assert set(KEYS["report"]) == set(REPORT_OPTIONS)  # one list cannot drift from the other
