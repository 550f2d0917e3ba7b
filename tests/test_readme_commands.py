"""Every command the README shows is checked against the code as written (issue 17: "the README's
commands are re-run as written"): its files exist, its options parse, and the cheap ones run.

The README's ```bash blocks are read line by line (continuations joined, comments dropped). Each
command is checked in this process, without training anything:

* ``nnip-scale fit|validate|predict ...``: the whole command line with ``--print_config`` (LightningCLI
  parses every config file and option, resolves the model by short name, then exits 0);
* ``nnip-scale study ...``: the same options with ``--plan`` instead of the action (``--slurm``,
  ``--estimate``, ``--report-only``, a run): the study file loads and its flags parse;
* ``nnip-scale data ...``: ``list`` runs; ``generate``/``check`` parse their arguments (``--help``);
* ``python tools/X.py`` / ``python benchmarks/X.py``: the script exists and its options parse
  (``--help`` after the README's arguments, so a removed option fails);
* install, pytest, tensorboard and CI lines are what CI itself runs (``.ci/run``), listed in SKIP.

A README command that no rule covers fails the test: a new kind of command needs a rule here.
"""

import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: commands CI runs itself (the quick start's install + tests) or that start a server
SKIP = ("python -m pip install", "pip install", "FORCE_CUDA=", "FORCE_ONLY_CPU=", "tensorboard ",
        "python -m pytest", "bash .ci/")


def readme_commands() -> list[str]:
    lines, out, block, cont = (REPO / "README.md").read_text().splitlines(), [], False, ""
    for line in lines:
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        text = line.strip()
        if not text or (text.startswith("#") and not cont):
            continue
        text = re.sub(r"\s+#\s.*$", "", text)  # a trailing comment
        if text.endswith("\\"):
            cont += text[:-1] + " "
            continue
        out.append((cont + text).strip())
        cont = ""
    # the quick start chains install && run: the part after the installs is a command of its own
    return [part.strip() for cmd in out for part in cmd.split("&&")]


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_we_check():
    assert any(c.startswith("nnip-scale study --config configs/study/demo.yaml") for c in COMMANDS)
    assert any(c.startswith("nnip-scale fit --config configs/quickstart.yaml") for c in COMMANDS)
    assert len(COMMANDS) >= 20


def _run_main(argv: list[str]) -> tuple[int, str]:
    from nnip_scale.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # LightningCLI's --print_config / --help exit
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return rc, out.getvalue() + err.getvalue()


def _repo_paths_exist(argv: list[str]) -> None:
    for a in argv:
        value = a.split("=", 1)[-1]
        if value.startswith(("configs/", "tools/", "benchmarks/")):
            assert (REPO / value).exists(), f"README names {value}, which is not in the repository"


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.startswith(SKIP)], ids=lambda c: c[:70])
def test_readme_command(command, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["nnip-scale"])  # LightningCLI is given its args: not pytest's
    monkeypatch.setenv("NNIP_SCALE_DATA", str(tmp_path / "data"))  # never generate into the user's folders
    argv = shlex.split(command)
    _repo_paths_exist(argv)
    if argv[:1] == ["nnip-scale"] and argv[1] in ("fit", "validate", "predict"):
        # a checkpoint the README's earlier command would have written: any valid checkpoint stands in
        argv = [str(REPO / "tests/data/checkpoints/mpnn_tiny_v0.ckpt") if a.startswith("runs/") and a.endswith(".ckpt")
                else a for a in argv]
        if "--help" in argv:  # LightningCLI's own help (minutes of subclass resolution on a small machine)
            assert argv[1:] == ["fit", "--help"], command
            return
        rc, text = _run_main([*argv[1:], "--print_config"])
        assert rc == 0, f"{command}\n{text[-2000:]}"
        assert "model:" in text and "data:" in text, text[-2000:]
    elif argv[:2] == ["nnip-scale", "study"]:
        args, skip = [], False
        for a in argv[2:]:
            if skip:
                skip = False
                continue
            if a == "--slurm":
                skip = True  # its script name
                continue
            if a not in ("--estimate", "--report-only"):
                args.append(a)
        rc, text = _run_main(["study", *args, "--plan", "--output", str(tmp_path / "study")])
        assert rc == 0 and "state" in text, f"{command}\n{text[-2000:]}"
    elif argv[:2] == ["nnip-scale", "data"]:
        rc, text = _run_main(["data", *argv[2:], *([] if argv[2] == "list" else ["--help"])])
        assert rc == 0, f"{command}\n{text[-2000:]}"
    elif argv[:1] == ["python"] and argv[1].startswith(("tools/", "benchmarks/")):
        script = REPO / argv[1]
        assert script.is_file(), f"README names {argv[1]}, which is not in the repository"
        monkeypatch.setattr(sys, "argv", [str(script), *argv[2:], "--help"])
        monkeypatch.syspath_prepend(str(script.parent))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as exc:
            runpy.run_path(str(script), run_name="__main__")
        assert exc.value.code in (0, None), f"{command}\n{out.getvalue()[-2000:]}"
    else:
        pytest.fail(f"no rule checks this README command; add one to {Path(__file__).name}: {command}")
