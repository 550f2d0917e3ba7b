"""``nnip-scale study --plan --estimate``: the FLOPs it predicts are the ones a real run's ledger
records, the table and plan.json are written and add up, each (architecture, width) is probed once."""

import json
import sys
from pathlib import Path

import pytest

from nnip_scale.study import estimate as estimate_mod
from nnip_scale.study import load_study
from nnip_scale.study.cli import main as study_main
from nnip_scale.study.runner import ledger_rows, run_args

REPO = Path(__file__).resolve().parents[1]


def write(small_study, tmp_path, extra_overrides=None, **changes):
    """One architecture at two widths × two budgets × two seeds: 8 runs, 2 models to probe."""
    cfg = {"name": "est", "data": {"atoms": [40, 80]}, "seeds": [0, 1], "validations_per_epoch": 2,
           "run": {"parallel": 2}}  # 1 thread per run (and per probe) on 2 cores
    extra = {"data.batch_size": 4, "data.num_workers": 0, "trainer.enable_progress_bar": False}
    return small_study(tmp_path, extra_overrides={**extra, **(extra_overrides or {})}, **{**cfg, **changes})


def test_estimate_matches_a_real_run_and_probes_each_model_once(tmp_path, small_study, monkeypatch, capsys):
    from nnip_scale.cli import main as cli_main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["nnip-scale"])  # the in-process fit below reads its arguments, not pytest's
    probed = []
    real_probe = estimate_mod.probe_model

    def counting_probe(est, run):
        probed.append((run.arch.name, run.width))
        return real_probe(est, run)

    monkeypatch.setattr(estimate_mod, "probe_model", counting_probe)
    path, out = write(small_study, tmp_path), tmp_path / "out"
    assert study_main(["--config", str(path), "--output", str(out), "--estimate", "--probe-steps", "2"]) == 0
    assert probed == [("mpnn", 8), ("mpnn", 16)]  # 8 runs, one probe per (architecture, width)
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]  # the probe wrote nothing into the runs' folders
    text = capsys.readouterr().out

    # the table: a header, one row per run, the totals and the probe's duration
    header = next(ln for ln in text.splitlines() if ln.startswith("run "))
    for column in ("N", "steps", "train FLOPs", "val FLOPs", "est. wall", "CPU-h"):
        assert column in header
    study = load_study(path, out)
    for run in study.runs:
        assert any(ln.startswith(run.run_id + " ") for ln in text.splitlines())
    assert any(ln.startswith("total ") and "8 runs" in ln for ln in text.splitlines())
    assert "probe: 2 model(s) (architecture × width) in " in text and "study wall ≈ " in text

    # plan.json: written atomically (no temporary file left), totals are the sums of the runs
    plan = json.loads((out / "plan.json").read_text())
    runs = plan["runs"]
    assert [r["run_id"] for r in runs] == [r.run_id for r in study.runs]
    for key in ("train_flops", "val_flops", "wall_s", "device_hours"):
        assert plan["totals"][key] == pytest.approx(sum(r[key] for r in runs), rel=1e-12)
        assert all(r[key] > 0 for r in runs)
    assert plan["totals"]["runs"] == 8 and len(plan["probe"]["models"]) == 2
    assert plan["device"]["accelerator"] == "cpu"
    by_id = {r["run_id"]: r for r in runs}
    # a bigger budget costs more; the wider model costs more per atom
    assert by_id["mpnn-w16-D8e1-e1-s0"]["train_flops"] > by_id["mpnn-w16-D4e1-e1-s0"]["train_flops"]
    assert by_id["mpnn-w16-D8e1-e1-s0"]["train_flops"] > by_id["mpnn-w8-D8e1-e1-s0"]["train_flops"]

    # a real run with the same arguments: its ledger's FLOPs are the estimate's
    run = study.run_by_id("mpnn-w16-D8e1-e1-s1")
    assert cli_main(["fit", *run_args(run)]) == 0
    measured = ledger_rows(run)[-1]
    est = by_id[run.run_id]
    assert measured["step"] == est["steps"] and len(ledger_rows(run)) == est["validations"]
    assert measured["atoms_seen"] == est["atoms"] and measured["edges_seen"] == est["edges"]
    assert est["train_flops"] == pytest.approx(measured["flops"], rel=0.02)
    assert est["val_flops"] == pytest.approx(measured["val_flops"], rel=0.02)
    assert est["n_params"] == measured["n_params"]


def test_flops_only_and_clear_errors(tmp_path, small_study, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(REPO)
    path, out = write(small_study, tmp_path, data={"atoms": [40]}, seeds=[0]), tmp_path / "out"
    assert study_main(["--config", str(path), "--output", str(out), "--plan", "--estimate", "--no-probe"]) == 0
    text = capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    assert all(r["wall_s"] is None and r["train_flops"] > 0 for r in plan["runs"])
    assert plan["totals"]["wall_s"] is None and "FLOP calibration only (--no-probe" in text

    assert study_main(["--config", str(path), "--output", str(out), "--estimate", "--probe-steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "nnip-scale study: error: --probe-steps must be >= 1"
    if not torch.cuda.is_available():  # a GPU study cannot be timed here: said in one line, FLOPs still on offer
        gpu = write(small_study, tmp_path, base_configs=["configs/trainer/gpu.yaml"])
        assert study_main(["--config", str(gpu), "--output", str(out), "--estimate"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no CUDA GPU is visible here" in err[0] and "--no-probe" in err[0]
    # a model that cannot be built: one line naming the architecture and the key
    bad = write(small_study, tmp_path, extra_overrides={"model.backbone.init_args.widht": 3})
    assert study_main(["--config", str(bad), "--output", str(out), "--estimate", "--no-probe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "estimate: the runs of 'mpnn' at width 8 would fail" in err[0]


def test_load_factor_scales_wall_by_the_cores_other_work_leaves():
    from nnip_scale.study.estimate import load_factor

    assert load_factor(None, 2, 1, 2) == (1.0, None)  # not measured (no /proc/stat): no correction
    assert load_factor(0.0, 2, 1, 2) == (1.0, 2.0)  # an idle machine: each run has its core, like the probe
    # one core busy elsewhere: the probe had the free one to itself, two runs at once share it
    assert load_factor(1.0, 2, 1, 2) == (2.0, 1.0)
    assert load_factor(1.0, 4, 1, 2) == (1.0, 3.0)  # enough cores left for both runs
    factor, available = load_factor(3.0, 4, 2, 2)  # 1 core left: the probe got half its 2 threads, 2 runs a quarter
    assert available == 1.0 and factor == pytest.approx(2.0)
