"""Energy/force metrics as torchmetrics, so DDP reduces them correctly (sums and counts are
all-reduced, not averages of averages)."""

import torch
from torchmetrics import Metric

from nnip_scale.data import keys as K
from nnip_scale.training.loss import per_structure_mean

#: 1 eV/Å³ in GPa (1.602176634e-19 J / 1e-30 m³ = 1.602176634e11 Pa)
EV_PER_A3_IN_GPA = 160.2176634


class EnergyForceMetrics(Metric):
    """Accumulates, over any number of batches (and ranks):

    - ``energy_mae_per_atom``: mean over structures of |E_pred − E|/n (eV/atom)
    - ``force_mae``: mean absolute force-component error over all atoms (eV/Å)
    - ``force_l2``: mean per-atom ‖F_pred − F‖₂ over all atoms (eV/Å)
    - ``force_cos``: mean cosine similarity between predicted and true forces over atoms
      whose true force is non-zero
    - ``stress_mae`` (eV/Å³) and ``stress_mae_gpa`` (GPa): mean absolute stress-component error
      over the structures whose batch carries stress labels and whose model predicts stress
      (only reported when there were any)
    - ``loss``: the mean over structures of the per-structure losses passed in

    ``mask`` (bool [S]) restricts an update to some structures of the batch (the rest are not
    counted): validation keeps structures with elements the model never saw apart.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("e_abs", "n_struct", "f_abs", "f_l2", "n_atoms", "cos_sum", "cos_n", "loss_sum", "s_abs", "s_n"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: dict, batch: dict, loss: torch.Tensor, mask: torch.Tensor | None = None) -> None:  # type: ignore[override]
        """``loss``: the per-structure losses [S] (or one scalar for the whole batch, without ``mask``)."""
        with torch.no_grad():
            n = batch[K.NUM_ATOMS].to(torch.float64)
            keep = torch.ones_like(n, dtype=torch.bool) if mask is None else mask.to(n.device)
            atom_keep = keep[batch[K.BATCH]]
            e_err = (pred["energy"].detach().double() - batch[K.ENERGY].double()).abs() / n
            dF = pred["forces"].detach().double() - batch[K.FORCES].double()
            f_true = batch[K.FORCES].double()
            f_pred = pred["forces"].detach().double()
            norm_true = torch.linalg.vector_norm(f_true, dim=-1)
            norm_pred = torch.linalg.vector_norm(f_pred, dim=-1)
            valid = (norm_true > 1e-12) & atom_keep
            cos = (f_true * f_pred).sum(-1) / (norm_true * norm_pred).clamp_min(1e-12)
            zero = torch.zeros((), dtype=torch.float64, device=n.device)
            self.e_abs += torch.where(keep, e_err, zero).sum()
            self.n_struct += keep.sum()
            self.f_abs += torch.where(atom_keep[:, None], dF.abs(), zero).sum()
            self.f_l2 += torch.where(atom_keep, torch.linalg.vector_norm(dF, dim=-1), zero).sum()
            self.n_atoms += atom_keep.sum()
            self.cos_sum += torch.where(valid, cos, zero).sum()
            self.cos_n += valid.sum()
            loss = loss.detach().double()
            if loss.dim() == 0:
                if mask is not None:
                    raise ValueError("EnergyForceMetrics.update: a mask needs per-structure losses [S]")
                self.loss_sum += loss * len(n)
            else:
                self.loss_sum += torch.where(keep, loss, zero).sum()
            if "stress" in pred and K.STRESS in batch:
                ds = (pred["stress"].detach().double() - batch[K.STRESS].double()).abs().mean(dim=(1, 2))
                self.s_abs += torch.where(keep, ds, zero).sum()
                self.s_n += keep.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "energy_mae_per_atom": self.e_abs / self.n_struct,
            "force_mae": self.f_abs / (3.0 * self.n_atoms),
            "force_l2": self.f_l2 / self.n_atoms,
            "force_cos": self.cos_sum / self.cos_n.clamp_min(1.0),
            "loss": self.loss_sum / self.n_struct,
            **({"stress_mae": self.s_abs / self.s_n, "stress_mae_gpa": self.s_abs / self.s_n * EV_PER_A3_IN_GPA}
               if float(self.s_n) > 0 else {}),
        }


__all__ = ["EnergyForceMetrics", "per_structure_mean"]
