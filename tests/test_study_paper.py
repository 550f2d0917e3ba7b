"""configs/study/paper.yaml, the paper's protocol for GPU nodes: its plan (every architecture × width ×
fraction budget, N from ~1e6 to ~1e7, the ablations' overrides), the fraction budgets it uses (study-file
errors, nested subsets in the data layer, the estimate), and a tiny end-to-end dry run of the file itself
on a small ASE-LMDB written here (CPU, tiny widths, the same architectures, overrides and budgets)."""

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nnip_scale.study import StudyError, is_done, ledger_rows, load_study

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "study" / "paper.yaml"
ARCHS = ("mpnn", "mpnn_symloss", "mcegnn", "gemnet_oc", "mace_l1_nu4", "esen_l2_m1", "esen_l4_m1")
FRACTIONS = (0.1, 0.3, 1.0)


def _backbone_n(arch_cfg: dict, width: int, study_overrides: dict) -> int:
    """N (the ledger's n_params: trainable, without the element embedding) of an architecture of the
    study file at ``width``: its model config's backbone with the study's and the architecture's
    ``model.backbone.init_args.*`` overrides, built on the CPU."""
    import torch

    backbone = yaml.safe_load((REPO / arch_cfg["config"]).read_text())["model"]["backbone"]
    args = dict(backbone["init_args"])
    prefix = "model.backbone.init_args."
    for over in (study_overrides, arch_cfg.get("overrides") or {}):
        args.update({k[len(prefix):]: v for k, v in over.items() if k.startswith(prefix)})
    args["width"] = width
    module, name = backbone["class_path"].rsplit(".", 1)
    with torch.device("cpu"):
        model = getattr(importlib.import_module(module), name)(**args)
    return int(model.count_parameters()["n_params"])


# --------------------------------------------------------------------------- the plan of paper.yaml
def test_paper_plan_grid_overrides_and_n_range(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = yaml.safe_load(PAPER.read_text())
    study = load_study(PAPER, tmp_path / "out")  # its own folder: no stored LR sweep is read
    assert tuple(cfg["architectures"]) == ARCHS and study.accelerator == "gpu"
    assert cfg["data"] == {"fraction": list(FRACTIONS), "epochs": 1}
    # every architecture × width × budget, seed 0, and seeds 0-2 at the base width (the smallest)
    expected = set()
    for name, a in cfg["architectures"].items():
        assert a["base_width"] == min(a["widths"]) and len(a["widths"]) == 4
        for w in a["widths"]:
            for f in FRACTIONS:
                for s in ((0, 1, 2) if w == a["base_width"] else (0,)):
                    expected.add(f"{name}-w{w}-D{round(100 * f)}pct-e1-s{s}")
    assert {r.run_id for r in study.runs} == expected and len(study.runs) == 7 * (4 * 3 + 2 * 3)
    for r in study.runs:
        assert r.budget_atoms is None and r.budget_fraction in FRACTIONS and r.epochs == 1
        assert f"--data.subset_fraction={r.budget_fraction!r}" in r.base_args
        assert not any(a.startswith("--data.subset_atoms") for a in r.base_args)
        for arg in ("--data.batch_size=64", "--data.train=data/omol25/train", "--data.val=data/omol25/val",
                    "--trainer.max_epochs=1", f"--trainer.callbacks.arch={r.arch.name}"):
            assert arg in r.base_args, (r.run_id, arg)
    args = {r.arch.name: r.base_args for r in study.runs}
    assert {"--model.symmetry_loss_copies=5", "--model.symmetry_loss_weight=1.0"} <= set(args["mpnn_symloss"])
    assert not any("symmetry_loss" in a for a in args["mpnn"])
    assert "--model.backbone.init_args.lmax=4" in args["esen_l4_m1"]
    assert not any("lmax" in a for a in args["esen_l2_m1"])
    assert "--model.backbone.init_args.vector_channels=null" in args["mcegnn"]  # YAML null reaches the CLI as null
    # η*: every architecture is swept at its base width on a fixed atom budget, then transferred with μP
    assert study.pending_archs == list(ARCHS) and study.sweep.atoms == 20_000_000 and len(study.sweep.lrs) == 5
    assert {(r.arch.name, r.width) for r in study.sweep_runs} == {(n, a["base_width"]) for n, a in
                                                                  cfg["architectures"].items()}
    # N from ~1e6 to ~1e7 for every architecture, as the comments beside the widths say
    text = PAPER.read_text()
    for name, a in cfg["architectures"].items():
        ns = [_backbone_n(a, w, cfg["overrides"]) for w in a["widths"]]
        assert ns == sorted(ns) and 0.9e6 <= ns[0] <= 1.3e6 and 0.85e7 <= ns[-1] <= 1.1e7, (name, ns)
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("widths:") and
                    str(a["widths"]).replace("'", "") in ln and text.index(ln) > text.index(f"  {name}:"))
        quoted = [float(x) for x in re.findall(r"(\d\.\d+e[+-]?\d+)", line.split("N =")[1])]
        assert quoted == pytest.approx(ns, rel=0.01), (name, quoted, ns)


def test_paper_plan_cli_lists_every_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nnip_scale.cli", "study", "--config", str(PAPER), "--output",
                           str(tmp_path / "out"), "--plan"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines()[1:] if ln.strip()]
    assert len(lines) == 35 + 126  # the sweep's runs, then the grid's: nothing loaded, nothing trained
    assert "sweep-esen_l4_m1-w48-lr0.016-D2e7-e1-s0" in proc.stdout and "mpnn_symloss-w672-D100pct-e1-s0" in proc.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.ckpt"))


# --------------------------------------------------------------------------- fraction budgets
def _study(tmp_path, data: dict, **extra) -> Path:
    cfg = {"name": "f", "base_configs": ["configs/trainer/cpu.yaml"],
           "architectures": {"mpnn": {"config": "configs/model/mpnn.yaml", "base_width": 8, "lr": 0.004}},
           "widths": [8], "data": data, "overrides": {"data.train": "unused.extxyz"}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("data, extra, message", [
    ({"atoms": [100], "fraction": [0.5]}, {}, r"data needs exactly one of 'atoms' .* or 'fraction' .*; got both"),
    ({"epochs": 1}, {}, r"data needs exactly one of 'atoms' .*; got neither"),
    ({"fraction": [10, 100]}, {}, r"data.fraction must hold fractions .* in \(0, 1\], got 10 \(a percentage\? 10 % is 0.1\)"),
    ({"fraction": [0.0]}, {}, r"data.fraction must hold fractions of the training split's atoms in \(0, 1\], got 0.0"),
    ({"fraction": ["half"]}, {}, r"data.fraction must be a list of numbers in \(0, 1\] .*, got 'half'"),
    ({"fraction": [True]}, {}, r"data.fraction must be a list of numbers"),
    ({"fraction": []}, {}, r"data.fraction must be a non-empty list, got \[\]"),
    ({"fraction": 0.5}, {}, r"data.fraction must be a non-empty list, got 0.5"),
    ({"fraction": [0.1, 0.1000000001]}, {}, r"data.fraction holds the same budget twice .*10pct, 10pct"),
    ({"fractions": [0.1]}, {}, r"unknown key 'data.fractions': did you mean 'fraction'\?"),
    ({"fraction": [0.5]}, {"lr_sweep": {"lrs": [0.01, 0.02]}},
     r"lr_sweep needs 'atoms' .* when the study's budgets are data.fraction"),
])
def test_fraction_budget_errors(tmp_path, monkeypatch, data, extra, message):
    monkeypatch.chdir(REPO)
    path = _study(tmp_path, data, **extra)
    if "lr_sweep" in extra:  # the sweep sweeps architectures without an lr
        cfg = yaml.safe_load(path.read_text())
        del cfg["architectures"]["mpnn"]["lr"]
        path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match=re.escape(str(path)) + ": " + message):
        load_study(path, tmp_path / "out")


def test_fraction_run_ids_and_args(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(_study(tmp_path, {"fraction": [0.125, 0.5, 1]}, seeds=[0, 1]), tmp_path / "out")
    assert [r.run_id for r in study.runs] == ["mpnn-w8-D12p5pct-e1-s0", "mpnn-w8-D12p5pct-e1-s1", "mpnn-w8-D50pct-e1-s0",
                                              "mpnn-w8-D50pct-e1-s1", "mpnn-w8-D100pct-e1-s0", "mpnn-w8-D100pct-e1-s1"]
    r = study.runs[1]
    assert "--data.subset_fraction=0.125" in r.args and "--data.subset_seed=1" in r.args
    assert r.budget_text == "12.5 % of the training atoms" and study.runs[4].budget_fraction == 1.0
    assert r.subset_args() == {"subset": None, "subset_atoms": None, "subset_fraction": 0.125, "subset_seed": 1}
    atoms = load_study(_study(tmp_path, {"atoms": [40000]}), tmp_path / "out").runs[0]
    assert atoms.budget_fraction is None and atoms.budget_text == "40,000 atoms"
    with pytest.raises(StudyError, match=r"two grid points share the run id mpnn-w8-D4e4-e1-s0"):
        load_study(_study(tmp_path, {"atoms": [40000, 40001]}), tmp_path / "out")


def test_nested_fraction_subsets():
    from nnip_scale.data import nested_subset
    from nnip_scale.data.structure import DataError

    train = np.arange(500, 700)
    atoms = np.arange(200) % 11 + 3
    total = int(atoms.sum())
    subsets = [nested_subset(train, atoms, atom_fraction=f, seed=4) for f in (0.1, 0.3, 1.0)]
    for f, sub in zip((0.1, 0.3, 1.0), subsets):
        n = sub.n_structures  # the shortest prefix of the seeded permutation holding >= f of the atoms
        assert sub.n_atoms >= f * total > sub.n_atoms - atoms[sub.indices[n - 1] - 500]
        assert sub.n_atoms == int(atoms[sub.indices - 500].sum())
        # the same prefix as the atom budget ⌈f·A⌉ (fraction and atom budgets of one seed are nested)
        same = nested_subset(train, atoms, atoms=math.ceil(round(f * total, 9)), seed=4)
        np.testing.assert_array_equal(same.indices, sub.indices)
    np.testing.assert_array_equal(subsets[1].indices[:subsets[0].n_structures], subsets[0].indices)
    np.testing.assert_array_equal(subsets[2].indices[:subsets[1].n_structures], subsets[1].indices)
    assert sorted(subsets[2].indices.tolist()) == train.tolist() and subsets[2].n_atoms == total
    assert not np.array_equal(nested_subset(train, atoms, atom_fraction=0.3, seed=5).indices, subsets[1].indices)
    exact = nested_subset(np.arange(10), np.full(10, 10), atom_fraction=0.3)  # 0.3 × 100 atoms: 30, not 31
    assert (exact.n_structures, exact.n_atoms) == (3, 30)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(DataError, match=r"split: a subset of .* of the training atoms; expected a fraction in \(0, 1\]"):
            nested_subset(train, atoms, atom_fraction=bad, source="split")
    with pytest.raises(ValueError, match="not both"):
        nested_subset(train, atoms, atoms=100, atom_fraction=0.5)


def test_datamodule_subset_fraction(tmp_path):
    from _emt_data import write_cu_emt  # tests/_emt_data.py

    from nnip_scale.data import AtomsDataModule

    source = write_cu_emt(tmp_path / "cu.extxyz", groups=10, per_group=4, seed=1)
    common = {"train": str(source), "val_fraction": 0.2, "test_fraction": 0.0, "cutoff": 3.0,
              "cache_dir": str(tmp_path / "c")}
    dms = [AtomsDataModule(**common, subset_fraction=f, subset_seed=2) for f in (0.25, 0.5, 1.0)]
    for dm in dms:
        dm.setup("fit")
    split = dms[0].train_split_atoms
    assert split == dms[2].n_train_atoms == 4 * dms[2].train_split_structures  # 4-atom cells
    assert [dm.n_train_atoms for dm in dms] == [math.ceil(0.25 * split / 4) * 4, math.ceil(0.5 * split / 4) * 4, split]
    small, mid = (set(dm.train_subset.indices.tolist()) for dm in dms[:2])
    assert small < mid < set(dms[2].train_subset.indices.tolist())
    by_atoms = AtomsDataModule(**common, subset_atoms=dms[1].n_train_atoms, subset_seed=2)
    by_atoms.setup("fit")
    np.testing.assert_array_equal(by_atoms.train_subset.indices, dms[1].train_subset.indices)
    with pytest.raises(ValueError, match=r"subset_fraction=1.5; expected a fraction of the training atoms in \(0, 1\]"):
        AtomsDataModule(**common, subset_fraction=1.5)
    with pytest.raises(ValueError, match="one of subset, subset_atoms or subset_fraction; got subset_atoms and subset_fraction"):
        AtomsDataModule(**common, subset_atoms=10, subset_fraction=0.5)


# --------------------------------------------------------------------------- end to end on a small ASE-LMDB
MOLECULES = ("CH4", "H2O", "NH3", "C2H6", "CH3OH", "C2H4", "HCN", "H2CO", "H3CNH2", "C6H6")


def write_molecules_aselmdb(path: Path, n: int, seed: int) -> tuple[Path, int]:
    """``n`` rattled small H/C/N/O molecules labelled with ASE's EMT (energy, forces; charge 0 and
    spin 1 in the row data, as OMol25 stores them), written as an ASE-LMDB file. Returns (path, atoms)."""
    import ase.db
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    db = ase.db.connect(str(path), type="aselmdb")
    atoms_total = 0
    for k in range(n):
        a = molecule(MOLECULES[k % len(MOLECULES)])
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        a.calc = EMT()
        energy, forces = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
        db.write(a, data={"charge": 0, "spin": 1})
        atoms_total += len(a)
    db.close()
    return path, atoms_total


@pytest.fixture(scope="module")
def lmdb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("omol_like")
    train, train_atoms = write_molecules_aselmdb(folder / "train.aselmdb", 32, seed=0)
    val, _ = write_molecules_aselmdb(folder / "val.aselmdb", 10, seed=1)
    return {"train": train, "val": val, "train_atoms": train_atoms, "folder": folder}


def paper_copy(tmp_path: Path, lmdb: dict, archs=ARCHS, widths=(8,), sweep=False) -> Path:
    """paper.yaml with only what a CPU dry run must change: the data paths, a CPU trainer, tiny widths
    (one per architecture), two budgets and one seed, small batches; the architectures, their
    overrides, the fraction budgets, the single epoch and the rest of the study's overrides are the
    file's own. The LR sweep: a short one of the MPNN only with ``sweep`` (the others get an lr),
    else none (every architecture gets an lr: the sweep's runs would start a second pool of worker
    processes, ~10 s of imports; the sweep itself is tested in test_study_sweep.py)."""
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["base_configs"] = ["configs/trainer/cpu.yaml"]
    cfg["architectures"] = {k: v for k, v in cfg["architectures"].items() if k in archs}
    for name, a in cfg["architectures"].items():
        a.update(base_width=widths[0], widths=list(widths))
        if name != "mpnn" or not sweep:
            a["lr"] = 0.004
    if sweep:
        cfg["lr_sweep"] = {"lrs": [0.002, 0.01], "atoms": 60, "seeds": [0]}
    else:
        del cfg["lr_sweep"]
    cfg["data"]["fraction"] = [0.5, 1.0]
    cfg["base_width_seeds"] = [0]
    cfg["validations_per_epoch"] = 2
    cfg["run"] = {"parallel": 2}
    cfg["report"].update(n_boot=10)
    cfg["overrides"].update({
        "data.train": str(lmdb["train"]), "data.val": str(lmdb["val"]), "data.val_subset": 8,
        "data.batch_size": 8, "data.num_workers": 0, "data.pin_memory": False,
        "data.cache_dir": str(lmdb["folder"] / "cache"), "model.warmup_steps": 2})
    path = tmp_path / "paper-dry.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
def test_paper_dry_run_end_to_end(tmp_path, lmdb, monkeypatch):
    path = paper_copy(tmp_path, lmdb)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "nnip_scale.cli", "study", "--config", str(path), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the largest budget (100 % of the training atoms = " in proc.stdout
    monkeypatch.chdir(REPO)
    study = load_study(path, out)
    assert len(study.runs) == 2 * len(ARCHS) and all(is_done(r) for r in study.runs)
    finals = {}
    for run in study.runs:
        rows = ledger_rows(run)
        assert rows and rows[-1]["arch"] == run.arch.name and rows[-1]["width"] == 8, run.run_id
        assert math.isfinite(rows[-1]["val_loss"]) and rows[-1]["n_params"] > 0
        finals[(run.arch.name, run.budget_fraction)] = rows[-1]
    for name in ARCHS:  # nested budgets: the 100 % run sees every training atom, the 50 % run at least half
        full, half = finals[(name, 1.0)]["atoms_seen"], finals[(name, 0.5)]["atoms_seen"]
        assert full == lmdb["train_atoms"] and lmdb["train_atoms"] / 2 <= half < full
    # the ablations took effect: the symmetry loss trains M + 1 = 6 copies of each batch (the ledger
    # counts their FLOPs), eSEN ℓmax 4 is recorded with lmax 4
    ratio = finals[("mpnn_symloss", 1.0)]["flops"] / finals[("mpnn", 1.0)]["flops"]
    assert 5.5 < ratio < 6.5, ratio
    config = yaml.safe_load((next(r for r in study.runs if r.arch.name == "esen_l4_m1").folder / "tb" / "version_0"
                             / "config.yaml").read_text())
    assert config["model"]["backbone"]["init_args"]["lmax"] == 4
    report = (out / "report.md").read_text()
    assert f"{len(study.runs)} of {len(study.runs)} runs finished" in report
    assert all(r.run_id in report for r in study.runs)
    assert set(json.loads((out / "report" / "fit.json").read_text())["architectures"]) == set(ARCHS)


def test_paper_preflight_names_a_missing_path(tmp_path, lmdb, monkeypatch):
    from nnip_scale.study.runner import prepare_data

    monkeypatch.chdir(REPO)
    path = paper_copy(tmp_path, lmdb, archs=("mpnn",), sweep=True)
    cfg = yaml.safe_load(path.read_text())
    cfg["overrides"]["data.train"] = "data/omol25-missing/train"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError) as err:
        prepare_data(load_study(path, tmp_path / "out"), log=lambda *_: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: data pre-flight failed for the largest budget (100 % of the "
                                              f"training atoms, seed 0): data/omol25-missing/train: no such file or "
                                              f"directory")
    # the sweep's atom budget is checked against the data too (a fraction study's 100 % always fits)
    cfg["overrides"]["data.train"] = str(lmdb["train"])
    cfg["lr_sweep"]["atoms"] = 10 ** 6
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(StudyError, match=r"largest budget \(1,000,000 atoms, seed 0\): .* a subset of 1000000 atoms "
                                         r"was asked but the training split holds"):
        prepare_data(load_study(path, tmp_path / "out"), log=lambda *_: None)


def test_estimate_with_fraction_budgets(tmp_path, lmdb, monkeypatch):
    """The estimate resolves each fraction into its subset's atoms (what the ledger will count)."""
    from nnip_scale.study.estimate import estimate_study
    from nnip_scale.study.runner import prepare_data

    monkeypatch.chdir(REPO)
    study = load_study(paper_copy(tmp_path, lmdb, archs=("mpnn", "esen_l4_m1"), sweep=True), tmp_path / "out")
    lines = []
    summary = prepare_data(study, log=lines.append)
    assert summary["largest_budget_atoms"] == summary["train_split_atoms"] == lmdb["train_atoms"]
    plan = estimate_study(study, probe=False, log=lambda *_: None)
    runs = {r["run_id"]: r for r in plan["runs"]}
    full, half = runs["mpnn-w8-D100pct-e1-s0"], runs["mpnn-w8-D50pct-e1-s0"]
    assert full["budget_fraction"] == 1.0 and full["budget_atoms"] == full["atoms"] == lmdb["train_atoms"]
    assert half["budget_fraction"] == 0.5 and lmdb["train_atoms"] / 2 <= half["budget_atoms"] < full["budget_atoms"]
    assert 0 < half["train_flops"] < full["train_flops"] and full["steps"] == 4  # 32 molecules, batch 8
    sweep = [r for r in plan["runs"] if r["sweep"]]
    assert sweep and all(r["budget_atoms"] >= 60 and r["budget_fraction"] is None for r in sweep)
    esen = runs["esen_l4_m1-w8-D100pct-e1-s0"]
    assert esen["train_flops"] > full["train_flops"] and esen["atoms"] == full["atoms"]
