"""The multi-channel E(n)-equivariant graph network (the paper's ℓ = 1, ν = 2 step).

EGNN (Satorras et al. 2021) generalised to C Cartesian vector channels per atom. Each atom
carries invariant features h_i ∈ R^W and vectors X_i ∈ R^{C×3} (Å-free, dimensionless: built
from r_ij / cutoff). X starts at zero; the first layer's vector messages populate it. Per layer,
with r_ij = pos_j − pos_i (+ periodic shift), d = |r_ij|, r̂ = r_ij/d, u(d) the cutoff envelope:

    s_ij  = [⟨X_i^c, r̂⟩, ⟨X_j^c, r̂⟩, ⟨X_i^c, X_j^c⟩]_c             (3C rotation invariants)
    m_ij  = φ_m(h_i, h_j, rbf(d), s_ij) · u(d)                        [W]
    a_ij, b_ij = split(φ_x(m_ij)) · u(d)                              [C], [C]
    h_i  ← h_i + φ_h(h_i, Σ_j m_ij / ⟨n⟩)
    V_i   = X_i + Σ_j (a_ij^c · r_ij/c + b_ij^c · X_j^c) / ⟨n⟩
    X_i  ← V_i + g(h_i) ⊙ (M · V_i)                                  (M ∈ R^{C×C}, no bias)

Only r_ij, inner products and linear maps of vectors enter, so h and E are O(3)-invariant and
X (hence the direct forces F_i = Σ_c w_c X_i^c) is O(3)-equivariant — reflections included —
and everything is translation invariant. Energy head: E_i = φ_E(h_i, ‖X_i^c‖²).

(This module was ``nnip_scale.models.egnn`` until issue 14; that name still imports, and checkpoints
and configs naming ``nnip_scale.models.egnn.MCEGNN`` still load.)
"""

from typing import ClassVar

import torch
from torch import nn

from nnip_scale.models.base import ForceMode, PotentialModel
from nnip_scale.models.registry import register_model
from nnip_scale.nn import MLP
from nnip_scale.ops import scatter_sum


class MCEGNNLayer(nn.Module):
    """One multi-channel EGNN step (module docstring): (h [A,W], X [A,C,3]) -> (h, X)."""

    def __init__(self, width: int, channels: int, num_radial: int, backend: str):
        super().__init__()
        self.width, self.channels, self.backend = width, channels, backend
        self.message = MLP([2 * width + num_radial + 3 * channels, width, width])
        self.update = MLP([2 * width, width, width])
        self.vector_message = MLP([width, width, 2 * channels])
        self.mix = nn.Linear(channels, channels, bias=False)
        self.gate = nn.Linear(width, channels)

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        unit: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        inv_cutoff: float,
        inv_avg_neighbors: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [A,W]; x [A,C,3]; edge_vec, unit [E,3] (Å, unit); rbf [E,R]; envelope [E]."""
        n_atoms, c = h.shape[0], self.channels
        i, j = edge_index[0], edge_index[1]
        xi, xj = x[i], x[j]  # [E,C,3]
        invariants = torch.cat(
            [
                torch.einsum("eck,ek->ec", xi, unit),
                torch.einsum("eck,ek->ec", xj, unit),
                (xi * xj).sum(-1),
            ],
            dim=-1,
        )
        env = envelope.unsqueeze(-1)
        m = self.message(torch.cat([h[i], h[j], rbf, invariants], dim=-1)) * env
        coeff = self.vector_message(m) * env
        a, b = coeff[:, :c], coeff[:, c:]
        vec_msg = a.unsqueeze(-1) * (edge_vec * inv_cutoff).unsqueeze(1) + b.unsqueeze(-1) * xj
        # one aggregation for both the invariant and the vector messages
        packed = torch.cat([m, vec_msg.reshape(-1, 3 * c)], dim=-1)
        agg = scatter_sum(packed, i, n_atoms, backend=self.backend) * inv_avg_neighbors
        h = h + self.update(torch.cat([h, agg[:, : self.width]], dim=-1))
        v = x + agg[:, self.width :].reshape(n_atoms, c, 3)
        mixed = self.mix(v.transpose(1, 2)).transpose(1, 2)  # linear over channels, per component
        return h, v + self.gate(h).unsqueeze(-1) * mixed


@register_model(aliases=("nnip_scale.models.MCEGNN", "nnip_scale.models.egnn.MCEGNN"))
class MCEGNN(PotentialModel):
    """Multi-channel EGNN with an energy head and an equivariant direct force head.

    Args:
        width: invariant feature width W (the size knob of the scaling study).
        depth: number of message-passing layers.
        vector_channels: number C of vector channels per atom (``None``: max(4, width // 8)).
        cutoff: radial cutoff (Å).
        num_radial: number of Bessel radial basis functions.
        envelope_order: order p of the polynomial cutoff envelope.
        max_atomic_number: size of the element table.
        forces: ``"direct"`` (F_i = Σ_c w_c X_i^c, equivariant) or ``"conservative"`` (−∂E/∂r).
        compute_stress: return stress for periodic structures (conservative only).
        backend: ops backend for message aggregation (auto|torch|native|pyg|cueq).
    """

    #: the Bessel basis was ``radial`` before it became ``radial_basis`` (checkpoints of before load)
    renamed_submodules: ClassVar[dict[str, str]] = {"radial.": "radial_basis."}

    def __init__(
        self, width: int = 64, depth: int = 3, vector_channels: int | None = None, cutoff: float = 5.0,
        num_radial: int = 32, envelope_order: int = 6, max_atomic_number: int = 100, forces: ForceMode = "direct",
        compute_stress: bool = False, backend: str = "auto",
    ):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces=forces,
                         compute_stress=compute_stress, backend=backend, width=width, depth=depth)
        channels = max(4, width // 8) if vector_channels is None else int(vector_channels)
        if channels < 1:
            raise ValueError(f"vector_channels must be >= 1, got {vector_channels}")
        self.vector_channels = channels
        self.record_init_arg("vector_channels", channels)
        self.embedding = nn.Embedding(self.max_atomic_number + 1, width)
        self.init_edge_basis(num_radial, envelope_order)
        self.layers = nn.ModuleList(MCEGNNLayer(width, channels, num_radial, backend) for _ in range(depth))
        self.energy_head = MLP([width + channels, width, 1])
        self.force_head = nn.Linear(channels, 1, bias=False) if forces == "direct" else None

    def atomic_outputs(self, batch: dict, edge_vec: torch.Tensor):
        g = self.edge_geometry(edge_vec)
        h = self.embedding(batch["atomic_numbers"])
        x = h.new_zeros((h.shape[0], self.vector_channels, 3))
        for layer in self.layers:
            h, x = layer(h, x, batch["edge_index"], edge_vec, g.unit, g.rbf, g.envelope, 1.0 / self.cutoff,
                         g.inv_avg_neighbors)
        energy = self.energy_head(torch.cat([h, (x * x).sum(-1)], dim=-1)).squeeze(-1)
        forces = None
        if self.force_head is not None:
            forces = self.force_head(x.transpose(1, 2)).squeeze(-1)  # [A,3,C] -> [A,3]
        return energy, forces
