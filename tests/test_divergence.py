"""Diverged and failed runs do not sink a study: a run whose training loss goes non-finite stops at
once and is recorded as diverged; the scaling tools leave it out with a warning naming it and fit
everything else; a study with one architecture's LR far too high still writes its report."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_study import run_study, study_file

from nnip_scale.cli import build_cli
from nnip_scale.scaling.io import load_points

DEMO = Path(__file__).parent / "data" / "scaling" / "demo_ledgers"


@pytest.fixture(scope="module")
def cu(emt_dataset):
    return emt_dataset("cu", groups=6, per_group=6, seed=0)


def test_a_diverging_run_stops_at_once_and_says_so(cu, tmp_path):
    with pytest.warns(UserWarning, match=r"training diverged at step \d+: the loss is (inf|nan)"):
        cli = build_cli(["fit", "--model.backbone", "MPNN", "--model.backbone.width", "8", "--model.backbone.depth", "1",
                         "--model.backbone.cutoff", "4.0", "--model.lr", "1e6", "--model.warmup_steps", "0",
                         "--data.train", str(cu), "--data.cutoff", "4.0", "--data.val_fraction", "0.25",
                         "--data.test_fraction", "0.0", "--data.batch_size", "4", "--data.cache_dir", str(tmp_path / "c"),
                         "--trainer.accelerator", "cpu", "--trainer.max_steps", "60", "--trainer.val_check_interval", "50",
                         "--trainer.check_val_every_n_epoch", "null",
                         "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
                         "--trainer.default_root_dir", str(tmp_path)])
    rows = [json.loads(line) for line in (Path(cli.trainer.logger.log_dir) / "ledger.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["status"] == "diverged" and last["diverged_at_step"] < 10 and last["step"] < 60
    assert last["last_finite_train_loss"] > 0


def test_the_fit_leaves_a_diverged_run_out_and_fits_the_rest(tmp_path):
    ledgers = tmp_path / "ledgers"
    shutil.copytree(DEMO, ledgers)
    victim = sorted(ledgers.rglob("*.jsonl"))[0]
    rows = [json.loads(line) for line in victim.read_text().splitlines()]
    rows[-1]["val_loss"] = float("inf")  # what a diverged run validated before this change
    victim.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=rf"run {rows[0]['run_id']} diverged at step {rows[-1]['step']} "
                                         r"\(val_loss inf\) .*left out of every fit"):
        pts, meta = load_points([str(ledgers)])
    assert rows[0]["run_id"] not in set(pts["run"]) and len(set(pts["run"])) == len(list(ledgers.rglob("*.jsonl"))) - 1
    assert rows[0]["run_id"] in meta["diverged_runs"]


def test_a_study_with_one_lr_far_too_high_still_reports(emt_dataset, tmp_path):
    data = emt_dataset("cu", groups=20, per_group=10, seed=3)
    path = study_file(tmp_path, data, [640], widths=(8,), archs=("mpnn", "mpnn_conservative"))
    cfg = yaml.safe_load(path.read_text())
    cfg["architectures"]["mpnn_conservative"]["lr"] = 1.0e6
    cfg["report"] = {"n_boot": 5}
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = run_study(path, out, report=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert report.count("left out of the fits") == 1  # the bad architecture's run, in the runs table
    assert "The scaling laws were not fitted" not in report
    assert "mpnn_conservative-w8-D6p4e2-e1-s0 diverged at step" in report  # the fit's warning names the run
