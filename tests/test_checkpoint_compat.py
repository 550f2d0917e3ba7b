"""Checkpoints written before a model refactor still load and predict the same numbers.

``tests/data/checkpoints/<model>_v1.ckpt`` are real ``nnip-scale fit`` checkpoints of the five staircase
models written by the code of commit 7f08d6f (before issue 14, item 2: recorded constructor arguments,
the shared edge geometry, renamed submodules, ``egnn.py`` → ``mc_egnn.py``), with what they predicted
then (fp64, ``<model>_v1.json``) on ``structures.json``; ``make_checkpoints.py`` wrote them (its
docstring says how to regenerate them, which is only meaningful with the code of before a change).
Every public loading path must give those numbers: ``nnip_scale.checkpoint.load_backbone``, the ASE
calculator and ``nnip-scale predict --ckpt_path`` with a config naming the old class path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from nnip_scale.calculator import NNIPCalculator
from nnip_scale.checkpoint import check_checkpoint, load_backbone, read_checkpoint
from nnip_scale.models import registered_model

HERE = Path(__file__).parent / "data" / "checkpoints"
MODELS = ["mpnn", "egnn", "mace", "esen", "gemnet_oc"]
#: fp64, relative to the largest value of a quantity: rounding is ~1e-16; the margin is for summation
#: orders (another neighbour-list order, other thread counts, native kernels)
RTOL = 1e-9


def structures() -> list[Atoms]:
    return [Atoms(numbers=s["numbers"], positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
            for s in json.loads((HERE / "structures.json").read_text())]


def reference(name: str) -> dict:
    return json.loads((HERE / f"{name}_v1.json").read_text())


def assert_close(value, expected, what: str, rtol: float = RTOL) -> None:
    value, expected = np.asarray(value, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert value.shape == expected.shape, (what, value.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-3)
    err = float(np.abs(value - expected).max()) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("name", MODELS)
def test_old_checkpoint_loads_and_predicts_the_same(name):
    ref = reference(name)
    path = HERE / f"{name}_v1.ckpt"
    from nnip_scale.training import NNIPModule

    ckpt = check_checkpoint(path, NNIPModule)  # what the CLI checks before Lightning reads a --ckpt_path
    assert ckpt["nnip_backbone"] == ref["nnip_backbone"]
    model = load_backbone(path)
    assert type(model) is registered_model(ref["nnip_backbone"]["class_path"])  # the old class path still resolves
    calc = NNIPCalculator(model, dtype=torch.float64)
    assert ("stress" in calc.implemented_properties) == ref["nnip_backbone"]["init_args"]["compute_stress"]
    for k, (atoms, expected) in enumerate(zip(structures(), ref["predictions"])):
        atoms.calc = calc
        assert_close(atoms.get_potential_energy(), expected["energy"], f"{name} structure {k} energy")
        assert_close(atoms.get_forces(), expected["forces"], f"{name} structure {k} forces")
        assert_close(atoms.get_potential_energies(), expected["energies"], f"{name} structure {k} per-atom energies")
        if "stress" in expected:
            assert_close(atoms.get_stress(voigt=False), expected["stress"], f"{name} structure {k} stress")
    # the calculator's own loader gives the same model
    again = NNIPCalculator.from_checkpoint(path, dtype=torch.float64).model
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("name", MODELS)
def test_parameter_order_keeps_the_optimizer_state_valid(name):
    """An optimizer state in a checkpoint is keyed by parameter position: a resumed fit of an old
    checkpoint is right only if the model still lists its parameters in the old order. The loaded
    model's parameters, in order, must be the checkpoint's backbone tensors in their saved order
    (buffers interleave there), and as many as the optimizer state holds."""
    path = HERE / f"{name}_v1.ckpt"
    saved = [v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith("backbone.")]
    params = list(load_backbone(path).parameters())
    pos = 0
    for n, p in enumerate(params):
        while pos < len(saved) and not (saved[pos].shape == p.shape and torch.equal(saved[pos], p.detach())):
            pos += 1
        assert pos < len(saved), f"{name}: parameter {n} {tuple(p.shape)} is not where the checkpoint has it"
        pos += 1
    state = read_checkpoint(path)["optimizer_states"][0]
    assert sum(len(g["params"]) for g in state["param_groups"]) == len(params)


def test_cli_predict_with_an_old_checkpoint_and_the_old_class_path(tmp_path, monkeypatch):
    """``nnip-scale predict --ckpt_path`` on the MC-EGNN checkpoint, with a config that names the model
    by its old class path ``nnip_scale.models.egnn.MCEGNN`` (configs written before the rename), gives
    the stored predictions (fp32 run: 1e-4 relative)."""
    import yaml

    from nnip_scale.cli import main

    ref = reference("egnn")
    config = tmp_path / "egnn_old.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": {
        "class_path": ref["config_class_path"], "init_args": ref["nnip_backbone"]["init_args"]}}}))
    frames = structures()
    train = []
    for k, atoms in enumerate(frames):
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=0.0, forces=np.zeros((len(atoms), 3)))
        labelled.info["group"] = f"g{k}"
        train.append(labelled)
    write(tmp_path / "train.extxyz", train, format="extxyz")
    write(tmp_path / "new.extxyz", frames, format="extxyz")
    monkeypatch.chdir(tmp_path)
    args = ["predict", "--config", str(config), "--data.train", str(tmp_path / "train.extxyz"),
            "--data.val_fraction", "0.0", "--data.test_fraction", "0.0",
            "--data.predict", str(tmp_path / "new.extxyz"), "--data.cutoff", "4.0",
            "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "2",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", str(HERE / "egnn_v1.ckpt")]
    assert main(args) == 0
    out = list((tmp_path / "runs").rglob("predictions.extxyz"))
    assert len(out) == 1
    predicted = read(out[0], index=":")
    assert len(predicted) == len(frames)
    for k, (p, expected) in enumerate(zip(predicted, ref["predictions"])):
        assert_close(p.get_potential_energy(), expected["energy"], f"CLI structure {k} energy", rtol=1e-4)
        assert_close(p.get_forces(), expected["forces"], f"CLI structure {k} forces", rtol=1e-4)


INIT_CONFIGS = json.loads((Path(__file__).parent / "data" / "checkpoints" / "init_configs_v1.json").read_text())


@pytest.mark.parametrize("entry", INIT_CONFIGS, ids=[f"{e['class_path'].rsplit('.', 1)[-1]}-{k}"
                                                     for k, e in enumerate(INIT_CONFIGS)])
def test_init_config_as_the_hand_written_one_returned(entry):
    """The recorded ``init_config()`` equals, in values, types and order, what the model's hand-written
    ``init_config()`` returned before issue 14 (``init_configs_v1.json``, written by that code for the five
    staircase models: defaults, non-default arguments, arguments the constructor resolves, MACE's
    ``elements: auto`` before and after its statistics), so checkpoints and μP rebuilds see the same
    arguments."""
    from types import SimpleNamespace

    from nnip_scale.models import build

    kwargs = {k: v for k, v in entry["kwargs"].items() if k != "statistics"}
    model = build(entry["class_path"], kwargs)
    if "statistics" in entry["kwargs"]:
        model.set_statistics(SimpleNamespace(elements=entry["kwargs"]["statistics"], element_energies=np.zeros(119),
                                             force_rms=1.0, avg_num_neighbors=5.0))
    got, expected = model.init_config(), entry["init_config"]
    assert list(got.items()) == list(expected.items()), entry["kwargs"]
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()], entry["kwargs"]


def test_init_configs_cover_the_five_staircase_models():
    assert {e["class_path"].rsplit(".", 1)[-1] for e in INIT_CONFIGS} == {"MPNN", "MCEGNN", "MACE", "ESEN", "GemNetOC"}
