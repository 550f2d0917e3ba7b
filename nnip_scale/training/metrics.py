"""Energy/force metrics as torchmetrics, so DDP reduces them correctly (sums and counts are
all-reduced, not averages of averages)."""

import torch
from torchmetrics import Metric

from nnip_scale.training.loss import per_structure_mean


class EnergyForceMetrics(Metric):
    """Accumulates, over any number of batches (and ranks):

    - ``energy_mae_per_atom``: mean over structures of |E_pred − E|/n (eV/atom)
    - ``force_mae``: mean absolute force-component error over all atoms (eV/Å)
    - ``force_l2``: mean per-atom ‖F_pred − F‖₂ over all atoms (eV/Å)
    - ``force_cos``: mean cosine similarity between predicted and true forces over atoms
      whose true force is non-zero
    - ``loss``: the structure-weighted mean of the batch losses passed in
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("e_abs", "n_struct", "f_abs", "f_l2", "n_atoms", "cos_sum", "cos_n", "loss_sum"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: dict, batch: dict, loss: torch.Tensor) -> None:  # type: ignore[override]
        with torch.no_grad():
            n = batch["num_atoms"].to(torch.float64)
            e_err = (pred["energy"].detach().double() - batch["energy"].double()).abs() / n
            dF = pred["forces"].detach().double() - batch["forces"].double()
            f_true = batch["forces"].double()
            f_pred = pred["forces"].detach().double()
            norm_true = torch.linalg.vector_norm(f_true, dim=-1)
            norm_pred = torch.linalg.vector_norm(f_pred, dim=-1)
            valid = norm_true > 1e-12
            cos = (f_true * f_pred).sum(-1) / (norm_true * norm_pred).clamp_min(1e-12)
            n_struct = torch.as_tensor(float(batch["n_structures"]), dtype=torch.float64, device=n.device)
            self.e_abs += e_err.sum()
            self.n_struct += n_struct
            self.f_abs += dF.abs().sum()
            self.f_l2 += torch.linalg.vector_norm(dF, dim=-1).sum()
            self.n_atoms += float(batch["n_atoms"])
            self.cos_sum += torch.where(valid, cos, torch.zeros_like(cos)).sum()
            self.cos_n += valid.sum()
            self.loss_sum += loss.detach().double() * n_struct

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "energy_mae_per_atom": self.e_abs / self.n_struct,
            "force_mae": self.f_abs / (3.0 * self.n_atoms),
            "force_l2": self.f_l2 / self.n_atoms,
            "force_cos": self.cos_sum / self.cos_n.clamp_min(1.0),
            "loss": self.loss_sum / self.n_struct,
        }


__all__ = ["EnergyForceMetrics", "per_structure_mean"]
