"""Built-in dataset generators: determinism, resume, units, FD labels, spin, stress, CLI."""

import hashlib
import json

import ase.io
import numpy as np
import pytest

from nnip_scale.data.generate import ensure_builtin, generate, read_manifest
from nnip_scale.data.generate.check import check_dataset, check_frame


def _hashes(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.glob("*.extxyz"))}


@pytest.fixture(scope="module")
def mol_tiny(tmp_path_factory):
    return generate("molecules", "tiny", root=tmp_path_factory.mktemp("a"), workers=1, progress=False)


@pytest.fixture(scope="module")
def alloy_tiny(tmp_path_factory):
    return generate("alloys", "tiny", root=tmp_path_factory.mktemp("b"), workers=1, progress=False)


def test_layout_and_manifest(mol_tiny):
    m = read_manifest(mol_tiny)
    frames = [f for p in sorted(mol_tiny.glob("*.extxyz")) for f in ase.io.read(p, ":")]
    assert m["n_trajectories"] == 16 and m["n_structures"] == len(frames) == 128
    assert m["n_atoms"] == sum(len(f) for f in frames)
    assert m["scf_failures"] == 0 and m["seed"] == 0
    f = ase.io.read(mol_tiny / "g2__H2O__T1000__r0.extxyz", "3")
    assert f.info["group"] == "g2/H2O/T1000/r0" and f.info["source"] == "gfn2-xtb"
    assert f.info["charge"] == 0 and f.info["spin"] == 1 and f.info["temperature_K"] == 1000.0
    assert f.get_forces().shape == (3, 3) and -140.0 < f.get_potential_energy() < -136.0
    assert "momenta" not in f.arrays and not f.pbc.any()
    # frames of one trajectory differ (MD moved) and are labelled at their own positions
    traj = ase.io.read(mol_tiny / "g2__H2O__T1000__r0.extxyz", ":")
    assert len({round(t.get_potential_energy(), 6) for t in traj}) == len(traj) == 8


def test_determinism_across_workers_and_seed(mol_tiny, tmp_path):
    again = generate("molecules", "tiny", root=tmp_path / "w2", workers=2, progress=False)
    assert _hashes(again) == _hashes(mol_tiny)
    other = generate("molecules", "tiny", root=tmp_path / "s1", seed=1, workers=1, progress=False)
    h0, h1 = _hashes(mol_tiny), _hashes(other)
    assert h0.keys() == h1.keys() and all(h0[k] != h1[k] for k in h0)


def test_resume_regenerates_only_missing(mol_tiny, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(mol_tiny, root / "molecules-tiny")
    out = root / "molecules-tiny"
    before = _hashes(out)
    victim = out / "g2__CH3__T300__r0.extxyz"
    victim.unlink()
    (out / "manifest.json").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.extxyz")}
    assert read_manifest(out) is None
    assert ensure_builtin("molecules-tiny", root=root, workers=1) == out
    m = read_manifest(out)
    assert m["resumed_trajectories"] == 15 and m["n_structures"] == 128
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.extxyz") if p != victim} == mtimes
    assert _hashes(out) == before  # the regenerated file is byte-identical
    with pytest.raises(ValueError, match=r"is complete with seed 0, not 5; use another --root"):
        generate("molecules", "tiny", root=root, seed=5, workers=1, progress=False)


def test_xtb_units_against_direct_tblite():
    from ase.collections import g2
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator

    from nnip_scale.data.generate.molecules import ACCURACY, xtb_calculator

    atoms = g2["H2O"].copy()
    tb = Calculator("GFN2-xTB", atoms.numbers, atoms.positions / Bohr)
    tb.set("verbosity", 0)
    tb.set("accuracy", ACCURACY)
    res = tb.singlepoint()
    atoms.calc = xtb_calculator(0, 1)
    e_h = float(res.get("energy"))
    assert -5.2 < e_h < -4.9  # GFN2-xTB water, Hartree
    assert atoms.get_potential_energy() == pytest.approx(e_h * 27.211386, rel=1e-6)
    assert atoms.get_potential_energy() == pytest.approx(e_h * Hartree, abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), -res.get("gradient") * Hartree / Bohr, atol=1e-9)


def test_fd_forces_molecules(mol_tiny):
    res = check_dataset(mol_tiny, samples=4, n_coords=6, seed=3)
    assert res["n_frames"] == 4
    assert res["max_abs_force_error_eV_per_A"] < 1e-3
    assert res["max_abs_energy_error_eV"] < 1e-5
    assert read_manifest(mol_tiny)["fd_check"]["max_abs_force_error_eV_per_A"] < 1e-3


def test_open_shell_multiplicity(mol_tiny):
    from ase import Atoms
    from ase.collections import g2
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator

    from nnip_scale.data.generate.molecules import multiplicity

    assert [multiplicity(g2[n]) for n in ("H2O", "CH3", "NO", "O2", "CH2_s3B1d")] == [1, 2, 2, 3, 3]
    assert multiplicity(Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])) == 2  # parity, no magmoms
    bad = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], magmoms=[0.5, 0.5])
    with pytest.raises(ValueError, match="H2: 2 electrons cannot have 1 unpaired electrons"):
        multiplicity(bad)
    f = ase.io.read(mol_tiny / "g2__CH3__T300__r0.extxyz", "-1")
    assert f.info["spin"] == 2
    tb = Calculator("GFN2-xTB", f.numbers, f.positions / Bohr, uhf=1)
    tb.set("verbosity", 0)
    tb.set("accuracy", 0.001)
    assert f.get_potential_energy() == pytest.approx(float(tb.singlepoint().get("energy")) * Hartree,
                                                     abs=1e-5)
    o2 = ase.io.read(mol_tiny / "g2__O2__T300__r0.extxyz", "0")
    assert o2.info["spin"] == 3


def test_alloy_stress_and_fd(alloy_tiny):
    frames = [f for p in sorted(alloy_tiny.glob("*.extxyz")) for f in ase.io.read(p, ":")]
    assert len(frames) == 48 and all(len(f) == 32 and f.pbc.all() for f in frames)
    assert {f.info["source"] for f in frames} == {"emt"}
    stress = np.array([f.get_stress(voigt=False) for f in frames])
    np.testing.assert_allclose(stress, stress.transpose(0, 2, 1), atol=1e-12)
    assert stress.std(axis=0).min() > 1e-4  # random strains: every component varies (eV/Å³)
    assert len({tuple(sorted(set(f.get_chemical_symbols()))) for f in frames}) > 2
    errs = check_frame(frames[7], n_coords=6, rng=np.random.default_rng(0))
    assert errs["forces"] < 1e-4 and errs["stress"] < 1e-5 and errs["energy"] < 1e-8


def test_cli_list_generate_check(alloy_tiny, tmp_path, capsys):
    import shutil

    from nnip_scale.data.generate.cli import main

    assert main(["list", "--root", str(tmp_path)]) == 0
    assert "alloys-tiny      absent" in capsys.readouterr().out
    # finished trajectories without a manifest: `generate` resumes (FD check + manifest only)
    shutil.copytree(alloy_tiny, tmp_path / "alloys-tiny")
    (tmp_path / "alloys-tiny" / "manifest.json").unlink()
    assert main(["list", "--root", str(tmp_path)]) == 0
    assert "alloys-tiny      partial (no manifest)" in capsys.readouterr().out
    assert main(["generate", "alloys", "--size", "tiny", "--root", str(tmp_path), "--workers", "1",
                 "--no-progress"]) == 0
    assert "alloys-tiny: 48 structures, 1536 atoms" in capsys.readouterr().out
    assert main(["list", "--root", str(tmp_path)]) == 0
    assert "alloys-tiny      present (48 structures)" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "alloys-tiny"), "--samples", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["n_frames"] == 1
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert f"error: {tmp_path / 'nope'}: not a dataset directory" in capsys.readouterr().err
    assert main(["generate", "proteins"]) == 2
    with pytest.raises(ValueError, match=r"unknown builtin dataset 'foo': expected one of"):
        ensure_builtin("foo", root=tmp_path)


def test_builtin_data_folder_is_resolved_once_and_said(tmp_path, monkeypatch, capsys):
    from nnip_scale.data.generate import ensure_builtin, resolve_root, user_data_dir

    monkeypatch.delenv("NNIP_SCALE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert user_data_dir() == tmp_path / "cache" / "nnip-scale" / "data"
    assert resolve_root("molecules-tiny") == (user_data_dir(), "the user data directory; set NNIP_SCALE_DATA to use another")
    (elsewhere / "data" / "molecules-tiny").mkdir(parents=True)  # a checkout that generated it in ./data
    assert resolve_root("molecules-tiny")[0].resolve() == elsewhere / "data"
    assert resolve_root("molecules-tiny")[1] == "found in ./data of the working directory"
    monkeypatch.setenv("NNIP_SCALE_DATA", str(tmp_path / "mine"))
    assert resolve_root("molecules-tiny") == (tmp_path / "mine", "from $NNIP_SCALE_DATA")
    # a complete dataset: one line says where it is read from and why
    done = tmp_path / "mine" / "alloys-tiny"
    done.mkdir(parents=True)
    (done / "manifest.json").write_text("{}")
    assert ensure_builtin("alloys-tiny") == done
    assert capsys.readouterr().err.strip() == f"nnip-scale: builtin:alloys-tiny: reading {done.resolve()} (from $NNIP_SCALE_DATA)"
