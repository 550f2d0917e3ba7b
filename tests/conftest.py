"""Shared fixtures and markers of the test suite.

Markers (registered in pyproject.toml, ``[tool.pytest.ini_options]``):
- ``gpu``: needs a CUDA device; skipped with a reason when torch sees none (CI has none).
- ``slow``: takes more than ~20 s alone on a 2-core machine. CI runs everything; for a quick local
  loop use ``pytest tests -m "not slow"``.
Every test has a default timeout (``timeout`` in pyproject.toml, pytest-timeout), so a hang fails
with a traceback instead of stalling CI.

Fixtures:
- ``emt_dataset(preset, groups, per_group, seed)``: the path of a small EMT-labelled extxyz dataset
  (``tests/_emt_data.py``; presets ``cu``: 4-atom Cu cells, ``cual``: 8-atom Cu/Al cells), generated
  once per session and arguments. Shared between tests: treat it as read-only (copy it to change it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _emt_data import write_cu_emt, write_cual_emt

_PRESETS = {"cu": write_cu_emt, "cual": write_cual_emt}


@pytest.fixture(scope="session")
def emt_dataset(tmp_path_factory):
    cache: dict[tuple, Path] = {}

    def make(preset: str = "cu", groups: int = 4, per_group: int = 4, seed: int = 0) -> Path:
        if preset not in _PRESETS:
            raise ValueError(f"emt_dataset: unknown preset {preset!r}; expected one of {sorted(_PRESETS)}")
        key = (preset, groups, per_group, seed)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"emt_{preset}_{groups}x{per_group}_s{seed}")
            cache[key] = _PRESETS[preset](folder / f"{preset}.extxyz", groups=groups, per_group=per_group, seed=seed)
        return cache[key]

    return make


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker 'gpu'); torch sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def four_molecule_batch():
    """One fp32 batch of four rattled molecules (CH4, H2O, C2H6, NH3; cutoff 4 Å) with random energy
    and force labels: the batch of the μP coordinate checks and the symmetry-loss tests. Read-only."""
    import numpy as np
    from ase.build import molecule
    from batch_utils import batch_from_atoms

    mols = [molecule(n) for n in ("CH4", "H2O", "C2H6", "NH3")]
    for m in mols:
        m.rattle(0.05, seed=1)
    rng = np.random.default_rng(0)
    n_atoms = sum(len(m) for m in mols)
    return batch_from_atoms(mols, 4.0, energies=rng.normal(size=4), forces=rng.normal(size=(n_atoms, 3)))


@pytest.fixture(scope="session")
def small_study(emt_dataset):
    """``small_study(folder, extra_overrides=None, **changes)``: writes ``folder/study.yaml`` and returns its
    path: a small study on ``emt_dataset("cu", 10, 4, 1)`` (one architecture, the MPNN at widths 8 and 16
    from base width 8 with lr 0.004; a 40-atom budget; seed 0; the CPU trainer config; cutoff 3 Å, 20 %
    validation, no test split, the data cache under ``folder``). ``changes`` replace top-level keys
    (``overrides`` whole); ``extra_overrides`` are added to the overrides."""
    import yaml

    dataset = emt_dataset("cu", groups=10, per_group=4, seed=1)

    def write(folder: Path, extra_overrides: dict | None = None, **changes) -> Path:
        cfg = {
            "name": "t", "base_configs": ["configs/trainer/cpu.yaml"],
            "architectures": {"mpnn": {"config": "configs/model/mpnn.yaml", "base_width": 8, "lr": 0.004,
                                       "widths": [8, 16]}},
            "data": {"atoms": [40]}, "seeds": [0],
            "overrides": {"data.train": str(dataset), "data.cutoff": 3.0, "data.val_fraction": 0.2,
                          "data.test_fraction": 0.0, "data.cache_dir": str(folder / "cache"),
                          "model.backbone.init_args.cutoff": 3.0},
            **changes,
        }
        cfg["overrides"] = {**cfg["overrides"], **(extra_overrides or {})}
        path = folder / "study.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
