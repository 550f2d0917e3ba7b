"""The command line behaves like a tool: the project's own errors end as one line
``nnip-scale <cmd>: error: ...`` with exit code 2 (no traceback), config typos name the file
and the closest valid key, --ckpt_path is checked before the data, Ctrl-C says how to resume."""

from pathlib import Path

import pytest
from cli_utils import TINY_MPNN, data_args, trainer_args

from nnip_scale import cli


@pytest.fixture(scope="module")
def cu(emt_dataset):
    return emt_dataset("cu", groups=4, per_group=4, seed=0)


def base(data, tmp_path: Path) -> list[str]:
    return [*TINY_MPNN, *data_args(data, tmp_path), *trainer_args(tmp_path)]


def first_lines(capsys) -> list[str]:
    """stderr from the error line on (Lightning's own INFO lines may precede it)."""
    err = capsys.readouterr().err.strip().splitlines()
    start = next((k for k, line in enumerate(err) if line.startswith("nnip-scale ")), len(err))
    return err[start:]


def test_project_errors_are_one_line_with_exit_code_2(cu, tmp_path, capsys):
    assert cli.main(["validate", *base(cu, tmp_path), "--data.batch_size", "0"]) == 2
    err = first_lines(capsys)
    assert err[0] == "nnip-scale validate: error: batch_size=0; expected >= 1"
    assert err[1:] == ["(NNIP_SCALE_DEBUG=1 shows the traceback)"]
    # the checkpoint is checked before the data: a missing data file would otherwise come first
    missing = [*base(tmp_path / "nope.extxyz", tmp_path), "--ckpt_path", str(tmp_path / "gone.ckpt")]
    assert cli.main(["validate", *missing]) == 2
    gone = tmp_path / "gone.ckpt"
    assert first_lines(capsys)[0] == f"nnip-scale validate: error: {gone}: no such checkpoint file (--ckpt_path)"
    # a dataset-level error names the dataset as given, not its first file
    assert cli.main(["validate", *base(cu, tmp_path), "--data.subset", "1000"]) == 2
    assert first_lines(capsys)[0].startswith(f"nnip-scale validate: error: {cu}: a subset of 1000 structures")


def test_debug_mode_reraises(cu, tmp_path, monkeypatch):
    monkeypatch.setenv("NNIP_SCALE_DEBUG", "1")
    with pytest.raises(ValueError, match="batch_size=0"):
        cli.main(["validate", *base(cu, tmp_path), "--data.batch_size", "0"])


def test_config_typos_name_the_file_and_the_closest_key(cu, tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  lrr: 0.01\n")
    with pytest.raises(SystemExit) as ex:
        cli.main(["fit", *base(cu, tmp_path), "--config", str(typo)])
    assert ex.value.code == 2
    err = first_lines(capsys)
    assert err[0] == "nnip-scale fit: error: Subcommand 'fit' does not accept option 'model.lrr'"
    assert err[1] == f"  'model.lrr' (in {typo}): did you mean 'model.lr'?"
    assert err[-1] == "(nnip-scale fit --help lists every option)" and len(err) == 3
    with pytest.raises(SystemExit):
        cli.main(["fit", *base(cu, tmp_path), "--trainer.max_stepz", "3"])
    err = first_lines(capsys)
    assert err[0] == "nnip-scale fit: error: unrecognized arguments: --trainer.max_stepz 3"
    assert err[1] == "  'trainer.max_stepz': did you mean 'trainer.max_steps'?"
    with pytest.raises(SystemExit):
        cli.main(["fit", *base(cu, tmp_path), "--model.backbone.widht", "3"])
    err = first_lines(capsys)
    assert err[0].startswith("nnip-scale fit: error: Parser key \"model.backbone\":")
    assert err[1] == "  'model.backbone.init_args.widht': did you mean 'model.backbone.init_args.width'?"


def test_short_model_names_and_help_lists_our_models(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    out = capsys.readouterr().out
    block = out[out.index("  --model.backbone BACKBONE\n"):][:700]
    assert "nnip_scale.models.MACE" in block and "torch.nn.modules" not in block


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    def interrupted(args, from_argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert cli.main(["study", "--config", "x.yaml"]) == 130
    assert first_lines(capsys) == ["nnip-scale study: interrupted — rerun the same command to resume"]
