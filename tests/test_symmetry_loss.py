"""Haar rotations, batch rotation (positions, cell, forces, stress), the symmetry loss, its FLOP
accounting, rotation augmentation and the CLI options."""

import json

import numpy as np
import pytest
import torch
from _emt_data import write_emt_molecules
from ase.build import bulk
from batch_utils import FakeStats, batch_from_atoms
from cli_utils import data_args, trainer_args
from scipy import stats

from nnip_scale.models import MCEGNN, MPNN
from nnip_scale.training import NNIPModule
from nnip_scale.training.flops import calibrate
from nnip_scale.training.symmetry import haar_rotations, random_rotate_batch, rotate_batch, rotation_seed

CUTOFF = 4.0


@pytest.fixture(scope="module")
def batch(four_molecule_batch):
    return four_molecule_batch


def model(cls, **kw):
    torch.manual_seed(0)
    m = cls(width=16, depth=2, cutoff=CUTOFF, **kw).double()
    m.set_statistics(FakeStats((1, 6, 7, 8, 13, 29)))
    return m


def test_haar_rotations_are_uniform_proper_rotations():
    R = haar_rotations(20000, seed=3)
    eye = torch.eye(3, dtype=R.dtype)
    assert torch.allclose(R @ R.transpose(1, 2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R), dtype=R.dtype), atol=1e-12)
    # Haar moments: E[R] = 0, E[R_ij²] = 1/3 (standard errors 0.004 and 0.002 at 20000 draws)
    assert R.mean(0).abs().max() < 0.02
    assert (R.square().mean(0) - 1 / 3).abs().max() < 0.01
    # rotation angle θ (tr R = 1 + 2cos θ) has CDF (θ − sin θ)/π under Haar measure on SO(3)
    theta = torch.arccos(((R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)).numpy()
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 0.01
    # deterministic given the seed; the seed mixes (seed, step, rank, stream)
    assert torch.equal(haar_rotations(4, seed=rotation_seed(0, 7)), haar_rotations(4, seed=rotation_seed(0, 7)))
    seeds = {rotation_seed(0, 7), rotation_seed(0, 8), rotation_seed(1, 7), rotation_seed(0, 7, rank=1),
             rotation_seed(0, 7, stream=1)}
    assert len(seeds) == 5


def test_rotate_batch_rotates_every_vector_quantity():
    """Periodic cells with stress: a conservative (exactly equivariant) MCEGNN predicts E
    unchanged, F·Rᵀ and R·σ·Rᵀ on the rotated batch; the rotated labels are rotated the same way."""
    cells = []
    for k in range(2):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.numbers[k] = 13
        a.rattle(0.1, seed=k)
        cells.append(a)
    rng = np.random.default_rng(1)
    b = batch_from_atoms(cells, CUTOFF, forces=rng.normal(size=(8, 3)))
    b["stress"] = torch.as_tensor(rng.normal(size=(2, 3, 3)))
    R = haar_rotations(2, seed=5)
    rb = rotate_batch(b, R)
    Ra = R[b["batch"]]
    assert torch.allclose(rb["positions"], torch.einsum("aij,aj->ai", Ra, b["positions"]), atol=1e-12)
    assert torch.allclose(rb["cell"], b["cell"] @ R.transpose(1, 2), atol=1e-12)
    assert torch.allclose(rb["forces"], torch.einsum("aij,aj->ai", Ra, b["forces"]), atol=1e-12)
    assert torch.allclose(rb["stress"], R @ b["stress"] @ R.transpose(1, 2), atol=1e-12)
    assert rb["energy"] is b["energy"] and rb["edge_shift"] is b["edge_shift"]
    net = model(MCEGNN, forces="conservative", compute_stress=True)
    p, q = net(b), net(rb)
    assert torch.allclose(q["energy"], p["energy"], atol=1e-10)
    assert torch.allclose(q["forces"], torch.einsum("aij,aj->ai", Ra, p["forces"]), atol=1e-10)
    assert torch.allclose(q["stress"], R @ p["stress"] @ R.transpose(1, 2), atol=1e-10)
    with pytest.raises(ValueError, match=r"one 3×3 rotation per structure, shape \(2, 3, 3\)"):
        rotate_batch(b, R[:1])


def test_symmetry_loss_equals_loss_for_an_equivariant_model(batch):
    net = model(MCEGNN)
    terms = NNIPModule(net, symmetry_loss_copies=5).step_terms(net, batch, train=True)
    assert float(terms["symmetry"]) == pytest.approx(float(terms["energy"] + terms["forces"]), rel=1e-10)
    assert float(terms["loss"]) == pytest.approx(2 * float(terms["symmetry"]), rel=1e-10)
    # λ weighs it; evaluation never adds it
    terms = NNIPModule(net, symmetry_loss_copies=5, symmetry_loss_weight=0.5).step_terms(net, batch, train=True)
    assert float(terms["loss"]) == pytest.approx(1.5 * float(terms["symmetry"]), rel=1e-10)
    assert "symmetry" not in NNIPModule(net, symmetry_loss_copies=5).step_terms(net, batch, train=False)


def test_symmetry_loss_differs_for_the_unconstrained_mpnn(batch):
    net = model(MPNN)
    terms = NNIPModule(net, symmetry_loss_copies=5).step_terms(net, batch, train=True)
    plain = float(terms["energy"] + terms["forces"])
    assert abs(float(terms["symmetry"]) - plain) > 1e-6 * plain


@pytest.mark.parametrize("cls", [MPNN, MCEGNN])
def test_training_flops_scale_with_copies(cls, batch):
    """Measured like the compute ledger does (step_terms + backward on the batch and its
    prefixes): M = 5 copies cost (M + 1)× the FLOPs of a plain step."""
    net = model(cls)

    def cost(copies):
        module = NNIPModule(net, symmetry_loss_copies=copies)
        cm = calibrate(lambda b: module.step_terms(net, b)["loss"].backward(), [batch])
        return cm(batch["n_edges"], batch["n_atoms"], batch["n_structures"])

    assert cost(5) / cost(0) == pytest.approx(6.0, rel=0.02)


def test_rotation_augmentation(batch):
    """Augmented training batches are rotated copies (energy unchanged, forces rotated), the same
    rotations at the same (seed, step); an equivariant model's loss is unchanged, the MPNN's not."""
    seed = rotation_seed(0, 0)
    rb = random_rotate_batch(batch, seed)
    R = haar_rotations(batch["n_structures"], seed)[batch["batch"]]
    assert torch.equal(rb["energy"], batch["energy"])
    assert torch.allclose(rb["forces"], torch.einsum("aij,aj->ai", R, batch["forces"]), atol=1e-12)
    assert torch.equal(random_rotate_batch(batch, seed)["positions"], rb["positions"])
    for cls, same in ((MCEGNN, True), (MPNN, False)):
        net = model(cls)
        plain = float(NNIPModule(net).step_terms(net, batch, train=True)["loss"])
        module = NNIPModule(net, rotation_augmentation=True)
        aug = float(module.step_terms(net, batch, train=True)["loss"])
        assert aug == float(module.step_terms(net, batch, train=True)["loss"])
        assert float(module.step_terms(net, batch, train=False)["loss"]) == plain  # never in evaluation
        assert (abs(aug - plain) < 1e-10 * plain) == same, (cls.__name__, aug, plain)
    with pytest.raises(ValueError, match="symmetry_loss_copies must be >= 0"):
        NNIPModule(net, symmetry_loss_copies=-1)


@pytest.fixture(scope="module")
def emt_molecules(tmp_path_factory):
    """30 rattled small molecules labelled with ASE's EMT (H, C, N, O)."""
    names = ("CH4", "NH3", "H2O", "C2H6", "CH3OH", "HCN") * 5
    specs = [(name, k, f"{name}{k % 3}") for k, name in enumerate(names)]
    return write_emt_molecules(tmp_path_factory.mktemp("emt_mol") / "mol.extxyz", specs, rattle=0.05)


def test_cli_symmetry_options_round_trip(emt_molecules, tmp_path):
    """`nnip-scale fit --model.symmetry_loss_copies 2 --model.rotation_augmentation true` trains,
    logs the symmetry term, and its ledger counts 3× the training FLOPs of the same run without."""
    from nnip_scale.cli import build_cli

    def fit(name, *extra):
        args = [
            "fit", "--seed_everything", "0",
            "--model.backbone.class_path", "nnip_scale.models.MPNN",
            "--model.backbone.init_args.width", "16", "--model.backbone.init_args.depth", "1",
            "--model.backbone.init_args.cutoff", "4.0",
            *data_args(emt_molecules, tmp_path, cutoff=4.0, val_fraction=0.2, batch_size=6),
            *trainer_args(tmp_path / name, val_every=4, log_every=1), "--trainer.max_steps", "4",
            *extra,
        ]
        cli = build_cli(args)
        ledger = [json.loads(line) for line in open(f"{cli.trainer.logger.log_dir}/ledger.jsonl")]
        return cli, ledger[-1]

    cli, row = fit("sym", "--model.symmetry_loss_copies", "2", "--model.symmetry_loss_weight", "0.5",
                   "--model.rotation_augmentation", "true")
    assert cli.model.hparams.symmetry_loss_copies == 2 and cli.model.hparams.rotation_augmentation
    assert np.isfinite(float(cli.trainer.callback_metrics["train/symmetry_term"]))
    _, plain = fit("plain")
    assert row["step"] == plain["step"] == 4 and row["atoms_seen"] == plain["atoms_seen"]
    assert row["flops"] / plain["flops"] == pytest.approx(3.0, rel=0.02)
