"""Loss and metric values against hand computations."""

import math

import pytest
import torch

from nnip_scale.training import EnergyForceLoss, EnergyForceMetrics


def toy():
    # two structures: 2 atoms and 1 atom
    batch = {
        "batch": torch.tensor([0, 0, 1]),
        "num_atoms": torch.tensor([2, 1]),
        "n_structures": 2,
        "n_atoms": 3,
        "energy": torch.tensor([-10.0, -3.0], dtype=torch.float64),
        "forces": torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5]], dtype=torch.float64),
    }
    pred = {
        "energy": torch.tensor([-9.0, -3.5], dtype=torch.float64),
        "forces": torch.tensor([[1.0, 0, 0], [0, -1.0, 4.0], [0, 0, 0.5]], dtype=torch.float64),
    }
    return pred, batch


def test_paper_loss_by_hand():
    pred, batch = toy()
    terms = EnergyForceLoss("mae_l2", energy_weight=2.0, force_weight=0.5)(pred, batch)
    e = (abs(1.0) / 2 + abs(-0.5) / 1) / 2  # mean over structures of |ΔE|/n
    f = ((0.0 + 5.0) / 2 + 0.0 / 1) / 2  # |(0,-3,4)| = 5: per-structure mean, then over structures
    assert terms["energy"].item() == pytest.approx(e)
    assert terms["forces"].item() == pytest.approx(f)
    assert terms["loss"].item() == pytest.approx(2.0 * e + 0.5 * f)


def test_mse_and_huber_by_hand():
    pred, batch = toy()
    mse = EnergyForceLoss("mse")(pred, batch)
    assert mse["energy"].item() == pytest.approx((0.5**2 + 0.5**2) / 2)
    assert mse["forces"].item() == pytest.approx(((0 + 25 / 3) / 2 + 0) / 2)
    hub = EnergyForceLoss("huber", huber_delta=1.0)(pred, batch)
    assert hub["energy"].item() == pytest.approx(0.5 * 0.5**2)
    per_atom = (0.0 + (2.5 + 3.5) / 3) / 2  # huber(3)=2.5, huber(4)=3.5 with δ=1
    assert hub["forces"].item() == pytest.approx(per_atom / 2)


def test_stress_term_requires_stress():
    pred, batch = toy()
    with pytest.raises(ValueError, match="stress_weight > 0 but the model output or the batch has no stress"):
        EnergyForceLoss(stress_weight=1.0)(pred, batch)


def test_metrics_accumulate_sums_not_averages():
    pred, batch = toy()
    m = EnergyForceMetrics()
    m.update(pred, batch, torch.tensor(1.0))
    # a second batch of one structure
    b2 = {
        "batch": torch.tensor([0]), "num_atoms": torch.tensor([1]), "n_structures": 1, "n_atoms": 1,
        "energy": torch.tensor([0.0]), "forces": torch.tensor([[0.0, 3.0, 0.0]]),
    }
    p2 = {"energy": torch.tensor([2.0]), "forces": torch.tensor([[0.0, 3.0, 3.0]])}
    m.update(p2, b2, torch.tensor(4.0))
    out = m.compute()
    assert out["energy_mae_per_atom"].item() == pytest.approx((0.5 + 0.5 + 2.0) / 3)
    assert out["force_mae"].item() == pytest.approx((7.0 + 3.0) / (3 * 4))
    assert out["force_l2"].item() == pytest.approx((5.0 + 3.0) / 4)
    cos = [1.0, (-2.0) / (2.0 * math.sqrt(17.0)), 1.0, 9.0 / (3.0 * math.sqrt(18.0))]
    assert out["force_cos"].item() == pytest.approx(sum(cos) / 4)
    assert out["loss"].item() == pytest.approx((1.0 * 2 + 4.0 * 1) / 3)
