"""MACE ``elements: auto``: the contraction weights are made for the training split's elements, the
list is kept in the checkpoint (a loaded model has exactly the trained elements, without the data:
safe loader, calculator, ``validate --ckpt_path``, a resumed fit), structures with other elements
are refused naming them by symbol (or kept apart with ``unseen_elements: separate``), explicit
lists keep working, and the shipped MACE configs train on alloys and on molecules alike."""

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _emt_data import label_emt, write_emt_molecules
from ase.build import bulk, molecule
from ase.io import write
from batch_utils import FakeStats, batch_from_atoms

from nnip_scale.calculator import NNIPCalculator
from nnip_scale.checkpoint import check_checkpoint, load_backbone
from nnip_scale.cli import build_cli, main
from nnip_scale.models.mace import MACE
from nnip_scale.training.module import NNIPModule

REPO = Path(__file__).resolve().parents[1]
CUTOFF = 4.0
TINY = dict(width=4, depth=2, max_ell=1, sh_max_ell=2, correlation=2, cutoff=CUTOFF, num_radial=4,
            radial_hidden=8, radial_layers=1, readout_hidden=4, backend="torch")


def tiny(elements="auto", **kw) -> MACE:
    torch.manual_seed(0)
    return MACE(**{**TINY, "elements": elements, **kw})


def contraction_shapes(model) -> list[tuple[int, ...]]:
    return [tuple(layer.contraction_weights.shape) for layer in model.layers]


# ---------------------------------------------------------------------- EMT data (seconds)
def write_molecules(path: Path, names: tuple[str, ...], per_group: int = 4, seed: int = 0) -> Path:
    """Rattled small molecules (non-periodic) labelled with EMT, one group per molecule."""
    specs = [(name, seed + 100 * k + r, name) for k, name in enumerate(names) for r in range(per_group)]
    return write_emt_molecules(path, specs, rattle=0.04)


def write_alloys(path: Path, groups: int = 6, per_group: int = 4, seed: int = 0) -> Path:
    """Rattled periodic 8-atom fcc cells of random Cu/Ni/Pd/Au compositions labelled with EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(groups):
        base = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        base.numbers = rng.choice([28, 29, 46, 79], size=len(base))
        for _ in range(per_group):
            a = base.copy()
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            frames.append(label_emt(a, f"cell{g}"))
    write(path, frames, format="extxyz")
    return path


HCNO = ("CH4", "H2O", "NH3", "C2H6", "CH3OH", "HCN")  # elements H C N O


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("elements_auto")
    return types.SimpleNamespace(
        molecules=write_molecules(root / "hcno.extxyz", HCNO),
        molecules_val=write_molecules(root / "hcno_val.extxyz", HCNO, per_group=1, seed=50),
        hco=write_molecules(root / "hco.extxyz", ("CH4", "H2O", "CH3OH"), seed=7),  # no N
        alloys=write_alloys(root / "alloys.extxyz"),
        cu=write_alloys(root / "cu.extxyz", groups=2, per_group=2, seed=3),
    )


def cli_args(config: str, train: Path, tmp_path: Path, *extra: str) -> list[str]:
    """A tiny MACE from one of the shipped configs (its `elements: auto` untouched)."""
    return [
        "--config", str(REPO / "configs" / "model" / f"{config}.yaml"),
        "--seed_everything", "0",
        "--model.backbone.init_args.width", "8",
        "--model.backbone.init_args.cutoff", str(CUTOFF),
        "--model.backbone.init_args.radial_hidden", "8",
        "--model.backbone.init_args.backend", "torch",
        "--model.warmup_steps", "2",
        "--data.train", str(train), "--data.cutoff", str(CUTOFF),
        "--data.val_fraction", "0.34", "--data.test_fraction", "0.0", "--data.batch_size", "4",
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.num_sanity_val_steps", "0",
        *extra,
    ]


def fit(config, train, tmp_path, steps=4, *extra):
    """A short fit; molecules validate on their own file (a group split could hold out every N molecule)."""
    if train.name == "hcno.extxyz":
        extra = ("--data.val", str(train.with_name("hcno_val.extxyz")), *extra)
    return build_cli(["fit", *cli_args(config, train, tmp_path, "--trainer.max_steps", str(steps),
                                        "--trainer.val_check_interval", str(steps),
                                        "--trainer.check_val_every_n_epoch", "null", *extra)])


def checkpoint_of(tmp_path: Path) -> Path:
    found = sorted((tmp_path / "runs").rglob("*.ckpt"))
    assert found, f"no checkpoint under {tmp_path / 'runs'}"
    return found[-1]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """configs/model/mace.yaml trained a few steps on the H/C/N/O molecules, with its checkpoint."""
    tmp = tmp_path_factory.mktemp("trained")
    cli = fit("mace", data.molecules, tmp, 4)
    return types.SimpleNamespace(cli=cli, ckpt=checkpoint_of(tmp), backbone=cli.model.backbone)


# ---------------------------------------------------------------------- the model alone
def test_auto_learns_the_elements_from_the_statistics():
    model = tiny()
    assert model.init_config()["elements"] == "auto" and model.element_list == []
    assert contraction_shapes(model) == [(0, *s[1:]) for s in contraction_shapes(model)]
    batch = batch_from_atoms([molecule("CH3CH2OH")], CUTOFF, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="elements: auto but no element list yet; expected set_statistics"):
        model(batch)
    model.set_statistics(FakeStats([8, 1, 6]))
    assert model.element_list == [1, 6, 8] and model.init_config()["elements"] == [1, 6, 8]
    assert all(s[0] == 3 for s in contraction_shapes(model))
    assert torch.isfinite(model(batch)["energy"]).all()
    # the recorded list rebuilds the same parameters (what a checkpoint, μP and the FLOP counter rely on)
    rebuilt = MACE(**model.init_config())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(batch)["energy"], model(batch)["energy"])
    # the same statistics again keep the weights; other elements are refused by symbol
    weights = model.layers[0].contraction_weights
    model.set_statistics(FakeStats([1, 6, 8]))
    assert model.layers[0].contraction_weights is weights
    with pytest.raises(ValueError, match=r"element N \(Z=7\) is not among the model's elements H, C, O; the "
                                         r"training data hold them .* earlier statistics or its checkpoint"):
        model.set_statistics(FakeStats([1, 6, 7, 8]))


def test_an_unknown_element_is_named_by_symbol():
    model = tiny()
    model.set_statistics(FakeStats([1, 6, 7, 8]))
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ValueError, match=r"^element Cu \(Z=29\) is not among the model's elements H, C, N, O; "
                                             r"MACE has contraction weights only for these"):
            model(batch_from_atoms([molecule("CH4"), cu], CUTOFF, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"^elements Al \(Z=13\), Cu \(Z=29\) are not among"):
        model(batch_from_atoms([molecule("AlCl3")[:1], cu], CUTOFF, dtype=torch.float32))
    # unseen_elements: separate evaluates them (zero contraction weights), numbers kept apart
    with model.unseen_elements_allowed():
        out = model(batch_from_atoms([molecule("CH4"), cu], CUTOFF, dtype=torch.float32))
    assert torch.isfinite(out["energy"]).all() and not model.unseen_elements_ok
    # the explicit-list message says what to change
    explicit = tiny([1, 6])
    with pytest.raises(ValueError, match=r"element O \(Z=8\) is not among the model's elements H, C; .*"
                                         r"expected them in the model's `elements` \(or elements: auto\)"):
        explicit.set_statistics(FakeStats([1, 6, 8]))


def test_explicit_lists_and_all_elements_still_work():
    model = tiny([8, 1, 6, 7])  # a superset of the data's elements; order does not matter
    model.set_statistics(FakeStats([1, 6, 8]))
    assert model.elements == [1, 6, 7, 8] and model.init_config()["elements"] == [1, 6, 7, 8]
    assert all(s[0] == 4 for s in contraction_shapes(model))
    out = model(batch_from_atoms([molecule("CH3CH2OH")], CUTOFF, dtype=torch.float32))
    assert torch.isfinite(out["energy"]).all()
    assert model.restore_init_args({"elements": [1, 6, 7, 8]}) is False  # its own list: nothing to do
    with pytest.raises(ValueError, match=r"^the checkpoint x.ckpt holds MACE contraction weights for the elements "
                                         r"H, C, O, but the model is configured with H, C, N, O"):
        model.restore_init_args({"elements": [1, 6, 8]}, source="the checkpoint x.ckpt")
    everything = tiny(None, max_atomic_number=20)
    assert everything.init_config()["elements"] is None and everything.element_list == list(range(1, 21))
    with pytest.raises(ValueError, match=r"Cu \(Z=29\) outside the model's element table"):
        everything.set_statistics(FakeStats([1, 29]))  # outside the element table: the base class's message
    for bad in ("H", [0, 1], [True], []):
        with pytest.raises(ValueError, match="elements must be"):
            tiny(bad)


def test_mup_and_the_optimizer_see_the_weights_made_at_setup():
    """NNIPModule with μP is built before the data: the per-element weights made by the statistics
    hook are classified, initialised like the rest and handed to the optimizer."""
    from nnip_scale.training.mup import classify_parameters

    module = NNIPModule(tiny(), mup_base_width=2, optimizer="adamw")
    assert module.backbone.element_list == []
    dm = types.SimpleNamespace(statistics=FakeStats([1, 6, 8]), cutoff=CUTOFF)
    module._set_statistics(dm)
    names = {n for n, _ in module.backbone.named_parameters()}
    assert names == set(module.mup_roles) == set(classify_parameters(module.backbone, 2))
    assert module.mup_roles["layers.0.contraction_weights"].kind == "input"
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else (opt[0][0] if isinstance(opt, tuple) else opt)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in module.backbone.parameters())
    assert module.backbone.layers[0].contraction_weights.shape[0] == 3


# ---------------------------------------------------------------------- through the CLI
@pytest.mark.parametrize("config", ["mace", "mace_invariant"])
def test_the_shipped_configs_train_on_alloys(config, data, tmp_path):
    cli = fit(config, data.alloys, tmp_path, 4, "--model.mup_base_width", "4")
    backbone = cli.model.backbone
    assert backbone.elements_auto and backbone.element_list == sorted(cli.datamodule.statistics.elements)
    assert set(backbone.element_list) <= {28, 29, 46, 79} and len(backbone.element_list) >= 3
    assert int(cli.trainer.global_step) == 4
    assert np.isfinite(float(cli.trainer.callback_metrics["val/force_mae"]))


def test_the_mace_config_trains_on_molecules_and_its_checkpoint_keeps_the_elements(trained):
    assert trained.backbone.element_list == [1, 6, 7, 8]
    assert np.isfinite(float(trained.cli.trainer.callback_metrics["val/force_mae"]))
    ckpt = check_checkpoint(trained.ckpt, NNIPModule)  # the safe loader's checks pass
    assert ckpt["nnip_backbone"]["init_args"]["elements"] == [1, 6, 7, 8]
    # Lightning's order (on_load_checkpoint, then the state_dict) into an `auto` model that never saw data
    module = NNIPModule(MACE(**{**ckpt["nnip_backbone"]["init_args"], "elements": "auto"}))
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    assert module.backbone.element_list == [1, 6, 7, 8]
    loaded = load_backbone(trained.ckpt)  # no data: the list comes from the checkpoint
    assert isinstance(loaded, MACE) and loaded.element_list == [1, 6, 7, 8]
    batch = batch_from_atoms([molecule("CH3CH2OH")], CUTOFF, dtype=torch.float32)
    torch.testing.assert_close(loaded(batch)["energy"], trained.backbone.eval()(batch)["energy"])
    atoms = molecule("HCN")
    atoms.calc = NNIPCalculator.from_checkpoint(trained.ckpt)
    assert np.isfinite(atoms.get_potential_energy())
    cu = bulk("Cu", "fcc", a=3.6)
    cu.calc = atoms.calc
    with pytest.raises(ValueError, match=r"element\(s\) Cu \(Z=29\) that the model was not trained on; expected "
                                         r"only its trained elements H, C, N, O"):
        cu.get_potential_energy()


def test_validate_with_the_checkpoint_takes_its_elements_not_the_datas(trained, data, tmp_path, capsys):
    """validate --ckpt_path with the same `elements: auto` config on data without N: the model is
    rebuilt with the checkpoint's H, C, N, O (the data's training split alone would give no N)."""
    args = cli_args("mace", data.hco, tmp_path, "--ckpt_path", str(trained.ckpt))
    cli = build_cli(["validate", *args])
    assert cli.model.backbone.element_list == [1, 6, 7, 8]
    assert 7 not in cli.datamodule.statistics.elements  # the data alone would not give N weights
    assert np.isfinite(float(cli.trainer.callback_metrics["val/force_mae"]))
    # an explicit list that differs from the checkpoint's is refused before its rows are misread
    code = main(["validate", *args, "--model.backbone.init_args.elements", "[1, 6, 8, 9]"])
    assert code == 2
    assert (f"the checkpoint {trained.ckpt} holds MACE contraction weights for the elements H, C, N, O, but the "
            f"model is configured with H, C, O, F") in capsys.readouterr().err


def test_validate_with_unseen_elements_errors_or_reports_them_apart(trained, data, tmp_path, capsys):
    args = cli_args("mace", data.molecules, tmp_path, "--data.val", str(data.cu), "--ckpt_path", str(trained.ckpt))
    assert main(["validate", *args]) == 2
    err = capsys.readouterr().err
    assert "the validation data contain element(s)" in err and "Cu (Z=29)" in err and "it knows H, C, N, O" in err
    # separate: MACE evaluates the structures it has no weights for, reported apart (without
    # --ckpt_path: LightningCLI would put the checkpoint's unseen_elements back over the flag)
    fresh = cli_args("mace", data.molecules, tmp_path / "fresh", "--data.val", str(data.cu),
                     "--model.unseen_elements", "separate")
    with pytest.warns(UserWarning, match=r"Cu \(Z=29\).* never seen in training"):
        cli = build_cli(["validate", *fresh])
    assert cli.model.backbone.element_list == [1, 6, 7, 8]
    assert np.isfinite(float(cli.trainer.callback_metrics["val/unseen_elements/force_mae"]))


def test_a_resumed_fit_keeps_the_elements(data, tmp_path, capsys):
    first = fit("mace", data.molecules, tmp_path / "a", 2)
    ckpt = checkpoint_of(tmp_path / "a")
    resumed = fit("mace", data.molecules, tmp_path / "a", 4, "--ckpt_path", str(ckpt))
    assert int(resumed.trainer.global_step) == 4
    assert resumed.model.backbone.element_list == first.model.backbone.element_list == [1, 6, 7, 8]
    # resuming on data with an element the checkpoint has no weights for is refused by symbol
    code = main(["fit", *cli_args("mace", data.alloys, tmp_path / "b", "--trainer.max_steps", "4",
                                  "--data.val", str(data.cu),
                                  "--ckpt_path", str(ckpt))])
    assert code == 2
    err = capsys.readouterr().err
    assert "are not among the model's elements H, C, N, O; the training data of this resumed fit hold them" in err
    assert f"but the checkpoint {ckpt} has no weights for them" in err
    assert "Au (Z=79)" in err
