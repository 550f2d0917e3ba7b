"""Training losses on energies and forces.

All losses are averaged over the structures of a batch with per-structure normalisation, so a
batch of large and small molecules weighs each structure equally (as in the paper).

- ``mae_l2`` (the paper's): λ_e·|E_pred − E|/n + λ_f·(1/n)·Σ_i ‖F_pred,i − F_i‖₂
- ``mse``:                  λ_e·((E_pred − E)/n)² + λ_f·(1/n)·Σ_i ‖F_pred,i − F_i‖²₂ / 3
- ``huber``:                Huber(δ) of the per-atom energy error and of each force component
  (mean over components of each atom, then over atoms of the structure).
Stress, when weighted, adds λ_s·mean |σ_pred − σ| (mae_l2), squared (mse) or Huber.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from nnip_scale.data import keys as K
from nnip_scale.ops import scatter_sum

LossName = Literal["mae_l2", "mse", "huber"]


def per_structure_mean(values: torch.Tensor, batch: dict, backend: str = "auto") -> torch.Tensor:
    """Mean over the atoms of each structure: values [A] -> [S]."""
    sums = scatter_sum(values.unsqueeze(-1), batch[K.BATCH], batch[K.N_STRUCTURES], backend=backend)
    return sums.squeeze(-1) / batch[K.NUM_ATOMS].to(values.dtype)


class EnergyForceLoss(torch.nn.Module):
    """Weighted energy + force (+ stress) loss.

    Args:
        kind: ``mae_l2`` (paper), ``mse`` or ``huber``.
        energy_weight: λ_e (per-atom energy term).
        force_weight: λ_f (force term).
        stress_weight: λ_s (0 disables; needs a stress-predicting model and stress labels).
        huber_delta: δ of the Huber loss (eV/atom for energy, eV/Å for forces).
    """

    def __init__(
        self,
        kind: LossName = "mae_l2",
        energy_weight: float = 1.0,
        force_weight: float = 1.0,
        stress_weight: float = 0.0,
        huber_delta: float = 0.01,
    ):
        super().__init__()
        if kind not in ("mae_l2", "mse", "huber"):
            raise ValueError(f"loss kind must be one of mae_l2, mse, huber; got {kind!r}")
        if min(energy_weight, force_weight, stress_weight) < 0:
            raise ValueError("loss weights must be non-negative")
        self.kind = kind
        self.energy_weight = energy_weight
        self.force_weight = force_weight
        self.stress_weight = stress_weight
        self.huber_delta = huber_delta

    def forward(self, pred: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Returns ``loss`` (scalar), its ``energy``/``forces``(/``stress``) terms and
        ``per_structure`` [S], the loss of each structure (``loss`` is its mean)."""
        n = batch[K.NUM_ATOMS].to(pred["energy"].dtype)
        de = (pred["energy"] - batch[K.ENERGY].to(pred["energy"].dtype)) / n
        dF = pred["forces"] - batch[K.FORCES].to(pred["forces"].dtype)
        if self.kind == "mae_l2":
            e_s = de.abs()
            f_atom = torch.linalg.vector_norm(dF, dim=-1)
        elif self.kind == "mse":
            e_s = de.square()
            f_atom = dF.square().sum(dim=-1) / 3.0
        else:
            e_s = F.huber_loss(de, torch.zeros_like(de), delta=self.huber_delta, reduction="none")
            f_atom = F.huber_loss(dF, torch.zeros_like(dF), delta=self.huber_delta, reduction="none").mean(-1)
        f_s = per_structure_mean(f_atom, batch)
        terms = {"energy": e_s.mean(), "forces": f_s.mean()}
        per_structure = self.energy_weight * e_s + self.force_weight * f_s
        if self.stress_weight > 0:
            if "stress" not in pred or K.STRESS not in batch:
                raise ValueError(
                    "stress_weight > 0 but the model output or the batch has no stress; expected a "
                    "conservative model with compute_stress=True and stress labels in every structure"
                )
            ds = pred["stress"] - batch[K.STRESS].to(pred["stress"].dtype)
            if self.kind == "mae_l2":
                s_s = ds.abs().mean(dim=(1, 2))
            elif self.kind == "mse":
                s_s = ds.square().mean(dim=(1, 2))
            else:
                s_s = F.huber_loss(ds, torch.zeros_like(ds), delta=self.huber_delta, reduction="none").mean(dim=(1, 2))
            terms["stress"] = s_s.mean()
            per_structure = per_structure + self.stress_weight * s_s
        terms["per_structure"] = per_structure
        terms["loss"] = per_structure.mean()
        return terms

    def describe(self) -> str:
        """The loss and its weights as one string (a run's identity: losses that differ here are
        different measurements and are never pooled)."""
        parts = [f"energy={self.energy_weight:g}", f"force={self.force_weight:g}"]
        if self.stress_weight > 0:
            parts.append(f"stress={self.stress_weight:g}")
        if self.kind == "huber":
            parts.append(f"delta={self.huber_delta:g}")
        return f"{self.kind}({','.join(parts)})"
