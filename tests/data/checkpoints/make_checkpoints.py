"""Write the frozen staircase checkpoints of ``tests/test_checkpoint_compat.py`` (run with the OLD code).

For each of the five staircase models (MPNN, MC-EGNN, MACE, eSEN, GemNet-OC) this trains a tiny model
for 2 steps with ``nnip-scale fit`` (the way users get checkpoints: LightningCLI, the default
ModelCheckpoint) on a small EMT-labelled set of molecules and Cu/Al cells, copies the checkpoint to
``<name>_v1.ckpt`` and records in ``<name>_v1.json`` what that checkpoint predicts (fp64, through
``NNIPCalculator.from_checkpoint``) on a fixed set of structures (``structures.json``: two molecules
and a periodic Cu/Al cell). ``init_configs_v1.json`` holds what the old hand-written ``init_config()``
returned for default, non-default and resolved constructor arguments (the model contract compares). The compatibility test loads every checkpoint with the *current* code and
requires the same numbers, so a refactor of the models (renamed classes, modules, arguments, recorded
constructor arguments) cannot silently break checkpoints written before it.

The files are only meaningful when written by code from *before* the change they guard: run it from a
clean export of that commit, never from a working tree with model changes::

    mkdir /tmp/ckpt-src && git archive <commit> | tar -x -C /tmp/ckpt-src
    cp nnip_scale/_C*.so /tmp/ckpt-src/nnip_scale/          # the native ops, built in place
    PYTHONPATH=/tmp/ckpt-src python tests/data/checkpoints/make_checkpoints.py tests/data/checkpoints

The v1 files were written at commit 7f08d6f (before issue 14, item 2: recorded constructor arguments,
shared edge geometry, renames). Deterministic up to the threads' summation order; the JSON files hold
the predictions of exactly the checkpoint files next to them, so never regenerate only one of a pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VERSION = "v1"
CUTOFF = 4.0

#: name -> (class_path as a config names it, init_args): tiny widths, non-default arguments where a model
#: has them, so the recorded constructor arguments are exercised beyond the defaults
MODELS: dict[str, tuple[str, dict]] = {
    "mpnn": ("nnip_scale.models.MPNN", dict(
        width=8, depth=2, cutoff=CUTOFF, num_radial=8, envelope_order=5, max_atomic_number=30,
        forces="conservative", compute_stress=True, backend="auto")),
    "egnn": ("nnip_scale.models.egnn.MCEGNN", dict(
        width=8, depth=2, vector_channels=3, cutoff=CUTOFF, num_radial=8, max_atomic_number=30,
        forces="direct", backend="auto")),
    "mace": ("nnip_scale.models.MACE", dict(
        width=8, depth=2, max_ell=1, sh_max_ell=2, correlation=2, cutoff=CUTOFF, num_radial=6,
        radial_hidden=8, radial_layers=2, readout_hidden=4, elements="auto", max_atomic_number=30,
        forces="direct", backend="auto")),
    "esen": ("nnip_scale.models.esen.ESEN", dict(
        width=8, depth=1, lmax=2, mmax=1, cutoff=CUTOFF, num_radial=8, max_atomic_number=30,
        forces="conservative", backend="auto")),
    "gemnet_oc": ("nnip_scale.models.GemNetOC", dict(
        width=8, depth=1, cutoff=CUTOFF, quadruplet_cutoff=2.5, num_radial=8, num_spherical=4,
        quadruplet_lmax=1, triplet_fraction=0.5, quadruplet_fraction=0.5, max_atomic_number=30,
        forces="direct", backend="auto")),
}


def training_set(path: Path) -> Path:
    """EMT-labelled rattled small molecules (H, C, N, O) and Cu/Al cells, one group each, as extxyz."""
    from ase.build import bulk, molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for name in ["H2O", "NH3", "CH4", "CH3OH", "C2H6", "HCN", "CH3CH2OH", "H2CO"] * 2:
        frames.append(molecule(name))
    for k in range(4):
        cell = bulk("Cu", "fcc", a=3.6, cubic=True)
        cell.numbers[[k % 4]] = 13
        frames.append(cell)
    rng = np.random.default_rng(0)
    for k, atoms in enumerate(frames):
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info["group"] = f"g{k}"
    write(path, frames, format="extxyz")
    return path


def fixed_structures():
    """The structures every checkpoint predicts on: rattled ethanol, rattled formaldehyde and a rattled
    periodic 8-atom Cu/Al cell (also written to ``structures.json``)."""
    from ase.build import bulk, molecule

    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.04, seed=11)
    h2co = molecule("H2CO")
    h2co.rattle(0.04, seed=12)
    cual = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cual.numbers[[1, 6]] = 13
    cual.rattle(0.04, seed=13)
    return [ethanol, h2co, cual]


#: (class_path, constructor arguments) whose ``init_config()`` the old code recorded in ``init_configs_v1.json``:
#: the defaults, non-default values, values the constructor resolves (``vector_channels=None``, an int cutoff,
#: an unsorted element list) and MACE's ``elements: auto`` before and after its statistics
INIT_CONFIG_CASES: list[tuple[str, dict]] = [
    ("nnip_scale.models.MPNN", {}),
    ("nnip_scale.models.MPNN", dict(width=12, depth=1, cutoff=4, num_radial=5, envelope_order=3, max_atomic_number=20,
                                    forces="direct", force_head="node", backend="torch")),
    ("nnip_scale.models.MPNN", dict(width=8, forces="conservative", compute_stress=True)),
    ("nnip_scale.models.egnn.MCEGNN", {}),
    ("nnip_scale.models.egnn.MCEGNN", dict(width=40, depth=1, vector_channels=None, cutoff=4, num_radial=6)),
    ("nnip_scale.models.egnn.MCEGNN", dict(width=8, vector_channels=2, forces="conservative", compute_stress=True,
                                           envelope_order=4, max_atomic_number=10, backend="torch")),
    ("nnip_scale.models.MACE", dict(width=8, elements=[8, 1, 6, 1])),
    ("nnip_scale.models.MACE", dict(width=8, depth=1, max_ell=0, sh_max_ell=2, correlation=1, cutoff=4, num_radial=5,
                                    envelope_order=4, radial_hidden=8, radial_layers=1, readout_hidden=3,
                                    elements=None, max_atomic_number=10, forces="conservative",
                                    compute_stress=True, backend="torch")),
    ("nnip_scale.models.MACE", dict(width=8, elements="auto")),
    ("nnip_scale.models.MACE", dict(width=8, elements="auto", statistics=[1, 6, 8, 29])),
    ("nnip_scale.models.esen.ESEN", {}),
    ("nnip_scale.models.esen.ESEN", dict(width=8, depth=1, lmax=3, mmax=3, cutoff=4, num_radial=6, envelope_order=4,
                                         max_atomic_number=10, forces="conservative", compute_stress=True,
                                         backend="torch")),
    ("nnip_scale.models.GemNetOC", {}),
    ("nnip_scale.models.GemNetOC", dict(width=8, depth=1, cutoff=4, quadruplet_cutoff=2, quadruplet_max_neighbors=3,
                                        num_radial=5, num_spherical=3, quadruplet_lmax=0, triplet_fraction=1,
                                        quadruplet_fraction=0.3, envelope_order=4, max_atomic_number=10,
                                        forces="conservative", compute_stress=True, backend="torch")),
]


def init_configs() -> list[dict]:
    """``init_config()`` of every :data:`INIT_CONFIG_CASES` entry (``statistics``: set_statistics first)."""
    import importlib

    out = []
    for path, kwargs in INIT_CONFIG_CASES:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        kw = {k: v for k, v in kwargs.items() if k != "statistics"}
        model = cls(**kw)
        if "statistics" in kwargs:
            from types import SimpleNamespace

            zs = kwargs["statistics"]
            model.set_statistics(SimpleNamespace(elements=zs, element_energies=np.zeros(119), force_rms=1.0,
                                                 avg_num_neighbors=5.0))
        out.append({"class_path": path, "kwargs": kwargs, "init_config": model.init_config()})
    return out


def structure_record(atoms) -> dict:
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist()}


def fit(name: str, class_path: str, init_args: dict, data: Path, work: Path) -> Path:
    """``nnip-scale fit`` 2 steps; returns the checkpoint the default ModelCheckpoint wrote."""
    import yaml

    from nnip_scale.cli import main

    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": {"class_path": class_path, "init_args": init_args},
                                                "lr": 0.003, "warmup_steps": 1}}))
    args = ["fit", "--config", str(config), "--seed_everything", "0",
            "--data.train", str(data), "--data.cutoff", str(CUTOFF), "--data.val_fraction", "0.2",
            "--data.test_fraction", "0.0", "--data.batch_size", "4", "--data.cache_dir", str(work / "cache"),
            "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(work / name),
            "--trainer.logger.init_args.save_dir", str(work / name / "runs")]
    if main(args) != 0:
        raise SystemExit(f"make_checkpoints: nnip-scale fit failed for {name}")
    found = sorted((work / name).rglob("*.ckpt"))
    if len(found) != 1:
        raise SystemExit(f"make_checkpoints: expected one checkpoint for {name}, found {found}")
    return found[0]


def predictions(ckpt: Path, structures) -> list[dict]:
    import torch

    from nnip_scale.calculator import NNIPCalculator

    calc = NNIPCalculator.from_checkpoint(ckpt, dtype=torch.float64)
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        rec = {"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist(),
               "energies": atoms.get_potential_energies().tolist()}
        if "stress" in calc.implemented_properties and atoms.pbc.any():
            rec["stress"] = atoms.get_stress(voigt=False).tolist()
        out.append(rec)
    return out


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (tests/data/checkpoints)")
    parser.add_argument("--only", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    sys.argv[1:] = []  # LightningCLI, given its arguments, warns about command-line arguments it does not read
    import torch

    import nnip_scale

    src = Path(nnip_scale.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout: a `git archive` export)"
    print(f"make_checkpoints: nnip_scale from {src}")
    torch.set_num_threads(1)  # one summation order
    args.out.mkdir(parents=True, exist_ok=True)
    structures = fixed_structures()
    write_json(args.out / "structures.json", [structure_record(a) for a in structures])
    write_json(args.out / f"init_configs_{VERSION}.json", init_configs())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = training_set(work / "train.extxyz")
        for name in args.only:
            class_path, init_args = MODELS[name]
            ckpt = fit(name, class_path, init_args, data, work)
            target = args.out / f"{name}_{VERSION}.ckpt"
            shutil.copyfile(ckpt, target.with_name(target.name + ".tmp"))
            os.replace(target.with_name(target.name + ".tmp"), target)
            saved = torch.load(target, map_location="cpu", weights_only=True)
            write_json(args.out / f"{name}_{VERSION}.json", {
                "written_by": f"tests/data/checkpoints/make_checkpoints.py, nnip_scale at {commit} ({src}), "
                              f"torch {torch.__version__}: nnip-scale fit, 2 steps on EMT molecules and Cu/Al",
                "config_class_path": class_path,
                "nnip_backbone": saved["nnip_backbone"],
                "predictions": predictions(target, structures),
            })
            print(f"make_checkpoints: {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
