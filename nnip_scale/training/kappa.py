"""κ: forward FLOPs per atom per parameter (the paper's Figure 2), measured across widths.

C_fwd = κ·N·D: for each width, the forward pass (energy and forces as the model predicts them:
the force head, or −∂E/∂r for a conservative model) is counted with the convention of
``nnip_scale.training.flops`` on real batches; FLOPs per atom divided by N is κ at that width, and
κ of the architecture is the least-squares slope of FLOPs-per-atom against N through the origin.
The training step (forward, loss, backward) is counted too, and its ratio to the forward is
reported: the paper assumed C = 3κND, i.e. a ratio of 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from nnip_scale.data import keys as K
from nnip_scale.training.flops import count_flops
from nnip_scale.training.loss import EnergyForceLoss


@dataclass
class KappaPoint:
    arch: str
    width: int
    n_params: int
    atoms: int
    fwd_flops_per_atom: float
    train_flops_per_atom: float

    @property
    def kappa(self) -> float:
        return self.fwd_flops_per_atom / self.n_params

    @property
    def train_over_fwd(self) -> float:
        return self.train_flops_per_atom / self.fwd_flops_per_atom


def measure_point(arch: str, model: torch.nn.Module, batches: list[dict]) -> KappaPoint:
    """Forward and training-step FLOPs per atom of ``model`` over ``batches``."""
    loss_fn = EnergyForceLoss()
    atoms = sum(b[K.N_ATOMS] for b in batches)
    model.eval()

    def forward():
        with torch.no_grad():
            for b in batches:
                model(b)

    fwd = count_flops(forward)
    model.train()

    def train_step():
        for b in batches:
            loss_fn(model(b), b)["loss"].backward()

    train = count_flops(train_step)
    model.zero_grad(set_to_none=True)
    n = model.count_parameters()["n_params"]
    return KappaPoint(arch, int(model.width), int(n), int(atoms), fwd / atoms, train / atoms)


def fit_kappa(points: list[KappaPoint]) -> dict:
    """κ = slope of fwd-FLOPs-per-atom on N through the origin, per-width κ, and the train/fwd ratio."""
    N = np.array([p.n_params for p in points], dtype=float)
    y = np.array([p.fwd_flops_per_atom for p in points])
    kappa = float(N @ y / (N @ N))
    return {
        "kappa": kappa,
        "kappa_per_width": {str(p.width): p.kappa for p in points},
        "train_over_fwd": {str(p.width): p.train_over_fwd for p in points},
        "train_over_3_kappa_N": {str(p.width): p.train_flops_per_atom / (3 * kappa * p.n_params) for p in points},
        "max_rel_deviation_from_kappa_N": float(np.max(np.abs(y - kappa * N) / y)),
        "points": [asdict(p) | {"kappa": p.kappa, "train_over_fwd": p.train_over_fwd} for p in points],
    }
