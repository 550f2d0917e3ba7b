"""The unconstrained message-passing network (the paper's ℓ = 0, ν = 2 baseline).

Messages are MLPs of the two atoms' features and the *raw* relative vector r_ij (plus a radial
basis of |r_ij|), so the model is translation invariant but has no rotational symmetry: it must
learn rotations from data. A radial envelope makes every message vanish smoothly at the cutoff.

Direct force heads:
- ``edge`` (default): F_i = Σ_j w_ij·r_ij·u(r_ij)/⟨n⟩ with w_ij = MLP(h_i, h_j, r_ij/c, rbf). The
  weights see the raw vector components, so the forces are *not* rotation-equivariant; the head
  only supplies the pairwise-direction bias that lets an unconstrained model resolve bond-length
  changes of 0.01 Å. Measured on GFN2-xTB molecular MD (docs/models.md): it learns where the
  node head does not move off the predict-zero baseline in the same number of steps.
- ``node``: F_i = MLP(h_i) (three numbers per atom from the atom's features alone).
"""

from typing import ClassVar, Literal

import torch
from torch import nn

from nnip_scale.models.base import ForceMode, PotentialModel
from nnip_scale.models.registry import register_model
from nnip_scale.nn import MLP
from nnip_scale.ops import scatter_sum


class MPNNLayer(nn.Module):
    """One message-passing step: m_ij = φ_m(h_i, h_j, r_ij/c, rbf(|r_ij|))·u(|r_ij|);
    h_i ← h_i + φ_u(h_i, Σ_j m_ij / ⟨n_neigh⟩)."""

    def __init__(self, width: int, num_radial: int, backend: str):
        super().__init__()
        self.message = MLP([2 * width + 3 + num_radial, width, width])
        self.update = MLP([2 * width, width, width])
        self.backend = backend

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        edge_geometry: torch.Tensor,
        envelope: torch.Tensor,
        n_atoms: int,
        inv_avg_neighbors: torch.Tensor,
    ) -> torch.Tensor:
        """h [A,W]; edge_geometry [E, 3+R]; envelope [E] -> new h [A,W]."""
        i, j = edge_index[0], edge_index[1]
        m = self.message(torch.cat([h[i], h[j], edge_geometry], dim=-1)) * envelope.unsqueeze(-1)
        agg = scatter_sum(m, i, n_atoms, backend=self.backend) * inv_avg_neighbors
        return h + self.update(torch.cat([h, agg], dim=-1))


@register_model(aliases=("nnip_scale.models.MPNN",))
class MPNN(PotentialModel):
    """Unconstrained MPNN with an energy head and a direct force head.

    Args:
        width: feature width W of atoms and messages (the size knob of the scaling study).
        depth: number of message-passing layers.
        cutoff: radial cutoff (Å).
        num_radial: number of Bessel radial basis functions (resolution matters: 32 over 5 Å).
        envelope_order: order p of the polynomial cutoff envelope.
        max_atomic_number: size of the element table.
        forces: ``"direct"`` (force head) or ``"conservative"`` (−∂E/∂r).
        force_head: direct force head, ``"edge"`` (default) or ``"node"`` (module docstring).
        compute_stress: return stress for periodic structures (conservative only).
        backend: ops backend for message aggregation (auto|torch|native|pyg|cueq).
    """

    #: the Bessel basis was ``radial`` before it became ``radial_basis`` (checkpoints of before load)
    renamed_submodules: ClassVar[dict[str, str]] = {"radial.": "radial_basis."}

    def __init__(
        self, width: int = 64, depth: int = 3, cutoff: float = 5.0, num_radial: int = 32, envelope_order: int = 6,
        max_atomic_number: int = 100, forces: ForceMode = "direct", force_head: Literal["edge", "node"] = "edge",
        compute_stress: bool = False, backend: str = "auto",
    ):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces=forces,
                         compute_stress=compute_stress, backend=backend, width=width, depth=depth)
        if force_head not in ("edge", "node"):
            raise ValueError(f"force_head must be 'edge' or 'node', got {force_head!r}")
        self.force_head_kind = force_head
        self.embedding = nn.Embedding(self.max_atomic_number + 1, width)
        self.init_edge_basis(num_radial, envelope_order)
        self.layers = nn.ModuleList(MPNNLayer(width, num_radial, backend) for _ in range(depth))
        self.energy_head = MLP([width, width, 1])
        self.force_head = None
        if forces == "direct":
            n_in, n_out = (2 * width + 3 + num_radial, 1) if force_head == "edge" else (width, 3)
            self.force_head = MLP([n_in, width, n_out])

    def atomic_outputs(self, batch: dict, edge_vec: torch.Tensor):
        n_atoms: int = batch["n_atoms"]
        g = self.edge_geometry(edge_vec, unit=False)
        geometry = torch.cat([edge_vec / self.cutoff, g.rbf], dim=-1)
        envelope, inv_avg = g.envelope, g.inv_avg_neighbors
        h = self.embedding(batch["atomic_numbers"])
        for layer in self.layers:
            h = layer(h, batch["edge_index"], geometry, envelope, n_atoms, inv_avg)
        energy = self.energy_head(h).squeeze(-1)
        forces = None
        if self.force_head is not None and self.force_head_kind == "node":
            forces = self.force_head(h)
        elif self.force_head is not None:
            i, j = batch["edge_index"][0], batch["edge_index"][1]
            w = self.force_head(torch.cat([h[i], h[j], geometry], dim=-1)) * envelope.unsqueeze(-1)
            forces = scatter_sum(w * edge_vec, i, n_atoms, backend=self.backend) * inv_avg
        return energy, forces
