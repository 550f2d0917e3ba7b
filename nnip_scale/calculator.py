"""An ASE calculator over a trained nnip-scale model (energy, forces; stress where the model
computes it).

Checkpoints load without running code (:mod:`nnip_scale.checkpoint`): only registered model
classes are built, from plain-data arguments.
"""

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from nnip_scale.checkpoint import load_backbone
from nnip_scale.data.neighbors import neighbor_list
from nnip_scale.models.base import PotentialModel, element_symbol, element_symbols

__all__ = ["NNIPCalculator", "load_backbone"]


class NNIPCalculator(Calculator):
    """ASE calculator for an nnip-scale backbone.

    Args:
        model: a trained backbone (see :meth:`from_checkpoint`).
        device: torch device to run on.
        dtype: float dtype of the computation (``torch.float64`` for tight MD energy conservation).
    """

    #: what every model computes; ``stress`` is added per instance for models that compute it
    implemented_properties = ["energy", "free_energy", "energies", "forces"]

    def __init__(self, model: PotentialModel, device: str | torch.device = "cpu", dtype=torch.float32, **kwargs):
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.cutoff = float(model.cutoff)
        # per model: ASE raises PropertyNotImplementedError for anything not listed (filters, writers
        # and optimisers catch that), so a direct-force model does not claim stress
        self.implemented_properties = list(type(self).implemented_properties) + (
            ["stress"] if getattr(model, "compute_stress", False) else [])

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device = "cpu", dtype=torch.float32, **kwargs):
        return cls(load_backbone(checkpoint, map_location="cpu"), device=device, dtype=dtype, **kwargs)

    def _batch(self, atoms) -> dict:
        z = atoms.numbers
        known = self.model.known_elements.cpu().numpy()
        bad = sorted({int(x) for x in z if x >= len(known) or not known[x]})
        if bad:
            names = ", ".join(f"{element_symbol(x)} (Z={x})" for x in bad)
            raise ValueError(
                f"atoms contain element(s) {names} that the model was not trained on; expected only "
                f"its trained elements {element_symbols(np.flatnonzero(known).tolist())}"
            )
        from nnip_scale.data.batching import atoms_item, build_batch  # the one batch builder

        edge_index, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, self.cutoff)
        return build_batch([atoms_item(atoms, edge_index, shifts)], self.dtype, self.device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = self._batch(self.atoms)
        if "stress" in properties and not self.atoms.pbc.any():
            raise PropertyNotImplementedError(
                "stress was asked for a non-periodic structure; expected a periodic cell (stress is "
                "−(1/V)·∂E/∂ε and a molecule has no volume)"
            )
        with torch.no_grad():
            out = self.model(batch)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if "stress" in out and self.atoms.pbc.any():
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().cpu().double().numpy())
