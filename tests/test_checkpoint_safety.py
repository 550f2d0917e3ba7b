"""Loading a checkpoint runs no code: pickle payloads, foreign class paths and foreign
hyperparameters are refused by the calculator and by ``nnip-scale validate --ckpt_path`` before
anything runs; a checkpoint written before the safe loader still loads and predicts the same."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from nnip_scale.calculator import NNIPCalculator, load_backbone
from nnip_scale.checkpoint import CheckpointError
from nnip_scale.cli import build_cli
from nnip_scale.models import MPNN, register_model

FIXTURES = Path(__file__).parent / "data" / "checkpoints"
OLD_CKPT = FIXTURES / "mpnn_tiny_v0.ckpt"  # written by nnip-scale fit at 7c8a1ee, before the safe loader


class MarkerPayload:
    """Unpickling this creates the marker file (builtins.open in write mode)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def old_checkpoint() -> dict:
    return torch.load(OLD_CKPT, weights_only=True)


def write(tmp_path: Path, name: str, ckpt: dict) -> Path:
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def malicious(tmp_path: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (checkpoint file, the error it must raise)."""
    out = {}
    ckpt = old_checkpoint()
    ckpt["payload"] = MarkerPayload(marker)
    out["pickle"] = (write(tmp_path, "pickle.ckpt", ckpt), r"refused: the file holds pickled objects")
    for name, class_path, init_args in (
        ("popen", "subprocess.Popen", {"args": ["touch", str(marker)]}),
        ("system", "os.system", {"command": f"touch {marker}"}),
        ("eval", "builtins.eval", {"source": f"open({str(marker)!r}, 'w')"}),
    ):
        ckpt = old_checkpoint()
        ckpt["nnip_backbone"] = {"class_path": class_path, "init_args": init_args}
        out[name] = (write(tmp_path, f"{name}.ckpt", ckpt),
                     rf"nnip_backbone.class_path = '{class_path}' is not a registered model")
    ckpt = old_checkpoint()
    ckpt["hyper_parameters"]["_instantiator"] = "os.system"
    out["instantiator"] = (write(tmp_path, "instantiator.ckpt", ckpt), r"hyper_parameters._instantiator = 'os.system'")
    ckpt = old_checkpoint()
    ckpt["hyper_parameters"]["_class_path"] = "subprocess.Popen"
    out["hparam_class"] = (write(tmp_path, "hparam_class.ckpt", ckpt),
                           r"hyper_parameters._class_path is not an argument of NNIPModule")
    return out


@pytest.fixture(scope="module")
def cual(emt_dataset):
    return emt_dataset("cual", groups=6, per_group=4)


def validate_args(data: Path, tmp_path: Path, ckpt: Path) -> list[str]:
    return [
        "validate",
        "--model.backbone.class_path", "nnip_scale.models.MPNN",
        "--model.backbone.init_args.width", "8",
        "--model.backbone.init_args.depth", "1",
        "--model.backbone.init_args.cutoff", "4.0",
        "--model.backbone.init_args.max_atomic_number", "30",
        "--data.train", str(data), "--data.cutoff", "4.0", "--data.val_fraction", "0.5", "--data.test_fraction", "0.0",
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.default_root_dir", str(tmp_path),
        "--ckpt_path", str(ckpt),
    ]


def test_old_checkpoint_loads_and_predicts_the_same_numbers():
    ref = json.loads((FIXTURES / "mpnn_tiny_v0.json").read_text())
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"])
    atoms.calc = NNIPCalculator.from_checkpoint(OLD_CKPT, dtype=torch.float64)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), np.asarray(ref["forces"]), rtol=1e-10, atol=1e-12)
    assert isinstance(load_backbone(OLD_CKPT), MPNN)


def test_calculator_refuses_code_in_checkpoints(tmp_path):
    marker = tmp_path / "marker"
    for name, (path, message) in malicious(tmp_path, marker).items():
        if name in ("instantiator", "hparam_class"):
            continue  # the calculator reads only the backbone and its weights (covered through the CLI)
        with pytest.raises(CheckpointError, match=message) as err:
            NNIPCalculator.from_checkpoint(path)
        assert str(path) in str(err.value), name
        assert not marker.exists(), f"{name}: loading ran code"


def test_validate_refuses_code_in_checkpoints(cual, tmp_path):
    marker = tmp_path / "marker"
    for name, (path, message) in malicious(tmp_path, marker).items():
        with pytest.raises(CheckpointError, match=message):
            build_cli(validate_args(cual, tmp_path / name, path))
        assert not marker.exists(), f"{name}: validate --ckpt_path ran code"
    with pytest.raises(CheckpointError, match="--weights_only false was asked"):
        build_cli([*validate_args(cual, tmp_path / "wo", OLD_CKPT), "--weights_only", "false"])


def test_validate_with_a_normal_checkpoint(cual, tmp_path):
    cli = build_cli(validate_args(cual, tmp_path, OLD_CKPT))
    assert np.isfinite(float(cli.trainer.callback_metrics["val/force_mae"]))


def test_init_args_are_checked_against_the_signature(tmp_path):
    ckpt = old_checkpoint()
    ckpt["nnip_backbone"]["init_args"]["no_such_arg"] = 1
    with pytest.raises(CheckpointError, match=r"init_args does not fit nnip_scale.models.mpnn.MPNN .*no_such_arg"):
        load_backbone(write(tmp_path, "extra.ckpt", ckpt))
    ckpt = old_checkpoint()
    ckpt["nnip_backbone"]["init_args"]["width"] = {"class_path": "os.system"}
    with pytest.raises(CheckpointError, match=r"init_args.width = \{'class_path': 'os.system'\}; expected int"):
        load_backbone(write(tmp_path, "nested.ckpt", ckpt))
    ckpt = old_checkpoint()
    ckpt["nnip_backbone"]["init_args"]["forces"] = "magic"
    with pytest.raises(CheckpointError, match=r"init_args.forces = 'magic'; expected 'direct' or 'conservative'"):
        load_backbone(write(tmp_path, "literal.ckpt", ckpt))
    ckpt = old_checkpoint()
    ckpt["nnip_backbone"]["init_args"]["width"] = torch.ones(2)
    with pytest.raises(CheckpointError, match=r"nnip_backbone.init_args.width holds a Tensor; expected plain data"):
        load_backbone(write(tmp_path, "tensor.ckpt", ckpt))


def test_a_registered_custom_model_loads(tmp_path):
    class TinyCustom(MPNN):
        pass

    ckpt = old_checkpoint()
    ckpt["nnip_backbone"] = copy.deepcopy(ckpt["nnip_backbone"])
    ckpt["nnip_backbone"]["class_path"] = f"{TinyCustom.__module__}.{TinyCustom.__qualname__}"
    path = write(tmp_path, "custom.ckpt", ckpt)
    with pytest.raises(CheckpointError, match="register_model"):
        load_backbone(path)
    register_model(TinyCustom)
    assert type(load_backbone(path)) is TinyCustom
    with pytest.raises(ValueError, match="already names"):
        register_model(MPNN, aliases=(ckpt["nnip_backbone"]["class_path"],))


def test_resume_hooks_read_only_checked_plain_data():
    from nnip_scale.data import AtomsDataModule
    from nnip_scale.training.ledger import ComputeLedger

    good = old_checkpoint()["callbacks"]["ComputeLedger"]
    ComputeLedger().load_state_dict(good)
    for entry, value in (("totals", {"train_flops": "1e9"}), ("wall_s", None), ("run_id", 3),
                         ("train_cost", {"coefficients": ["x"]})):
        with pytest.raises(ValueError, match=rf"entry callbacks.ComputeLedger.{entry} = "):
            ComputeLedger().load_state_dict({**good, entry: value})
    dm = AtomsDataModule(train="unused.extxyz")
    dm.load_state_dict({"train_epoch": 1, "train_batches_done": 2})
    with pytest.raises(ValueError, match="entry AtomsDataModule = "):
        dm.load_state_dict({"train_epoch": 1, "train_batches_done": -2})
