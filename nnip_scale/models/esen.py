"""eSEN-style SO(3)-equivariant network: spherical-tensor features and SO(2) convolutions in the edge frame.

The top of the symmetry staircase (eSCN, Passaro & Zitnick 2023; eSEN, Fu et al. 2025). Each atom
carries x_i ∈ R^{K×W}, K = (L+1)² real spherical-harmonic components (ℓ = 0..L, order of
``nnip_scale.nn.wigner``) of W channels; x starts as the element embedding in ℓ = 0 plus an
edge-degree embedding Σ_j u(d)·D_ijᵀ ψ(rbf(d), Z_i, Z_j)/⟨n⟩ (ψ in the m = 0 rows), which
populates every degree before the first block.
With r_ij = pos_j − pos_i (+ periodic shift), d = |r_ij|, R_ij the rotation taking r̂_ij to ẑ
(``edge_rotation``), D_ij its Wigner-D restricted to the |m| ≤ M rows, u(d) the envelope, each
block does (pre-norm residual):

    h      = LN(x)
    e_ij   = D_ij [h_i ‖ h_j]                                  edge frame, |m| ≤ M   [R, 2W]
    (y, g) = SO2Conv₁(e_ij ⊙ ρ(d))                             ρ: radial MLP of rbf(d)
    y      = SO2Conv₂(gate(y, g))                               SiLU on ℓ=0, σ(g) on ℓ>0
    x_i   ← x_i + Σ_j u(d)·D_ijᵀ y / ⟨n⟩                        rotate back + scatter_sum
    x_i   ← x_i + Lin₂(gate(Lin₁(LN(x_i))))                     per-degree feed-forward

SO2Conv mixes (ℓ, channel) for each |m| separately (m > 0 as the complex pair of ±m), so it
commutes with rotations about the edge axis; the roll the edge frame leaves free therefore
cancels and E is rotation invariant, x rotation equivariant. Heads: ε_i = MLP(h_i^{ℓ=0},
‖h_i^{ℓ,c}‖² for ℓ ≥ 1) with h = LN(x) (the invariant norms keep every weight of the last block
in the energy's graph, which conservative forces need);
direct forces F_i = σ_F·Σ_c w_c LN(x_i)_{ℓ=1,c}, mapped from the (y, z, x) order of the ℓ = 1
harmonics to Cartesian (x, y, z). **SO(3) only**: the complex-pair couplings and gates carry no
parity, so mirror images are not treated alike (tested).
"""

from typing import ClassVar

import torch
from torch import nn

from nnip_scale.models.base import ForceMode, PotentialModel
from nnip_scale.models.registry import register_model
from nnip_scale.nn import MLP
from nnip_scale.nn.so3 import SO2Convolution, SO3LayerNorm, SO3Linear, gate
from nnip_scale.nn.wigner import (
    MAX_DEGREE,
    edge_rotation,
    num_components,
    so2_wigner_blocks,
    wigner_d,
    wigner_projector,
)
from nnip_scale.ops import so2_layout, so2_rotate_in, so2_rotate_out_scatter
from nnip_scale.ops.registry import per_op_backend, resolve_backend
from nnip_scale.ops.so2 import so2_block_rows

#: ℓ = 1 rows are (y, z, x): Cartesian (x, y, z) = rows (2, 0, 1) of the ℓ = 1 block
_L1_TO_XYZ = [2, 0, 1]


class ESENLayer(nn.Module):
    """One eSEN block (module docstring): x [A, K, W] -> x [A, K, W]."""

    def __init__(self, lmax: int, mmax: int, width: int, num_radial: int, backend: str):
        super().__init__()
        self.lmax, self.width, self.backend = lmax, width, backend
        rows = so2_layout(lmax, mmax)
        self.n_positive = sum(1 for _, m in rows if m >= 0)
        self.norm_edge = SO3LayerNorm(lmax, width)
        self.radial = MLP([num_radial, width, self.n_positive * 2 * width])
        self.conv1 = SO2Convolution(lmax, mmax, 2 * width, width, n_extra=lmax * width, backend=backend)
        self.conv2 = SO2Convolution(lmax, mmax, width, width, backend=backend)
        self.norm_ffn = SO3LayerNorm(lmax, width)
        self.ffn_in = SO3Linear(lmax, width, width, n_extra=lmax * width)
        self.ffn_out = SO3Linear(lmax, width, width)
        # the radial factor of an m < 0 row is that of its +m row: index into the m ≥ 0 rows
        positive = {row: k for k, row in enumerate(r for r in rows if r[1] >= 0)}
        self.register_buffer(
            "radial_rows", torch.tensor([positive[(ell, abs(m))] for ell, m in rows]), persistent=False
        )

    def forward(
        self,
        x: torch.Tensor,
        wigner: torch.Tensor,
        edge_index: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        inv_avg_neighbors: torch.Tensor,
        block_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [A,K,W]; wigner [E,R,K] (edge-frame rows), or with ``block_rows`` their compact blocks
        [E,NB] (``nnip_scale.ops.so2``); rbf [E,num_radial]; envelope [E]."""
        i, j = edge_index[0], edge_index[1]
        n_edges, w = rbf.shape[0], self.width
        e = so2_rotate_in(self.norm_edge(x), wigner, i, j, backend=self.backend, block_rows=block_rows)  # [E,R,2W]
        rho = self.radial(rbf).view(n_edges, self.n_positive, 2 * w)
        y, g = self.conv1(e, rho)
        y, _ = self.conv2(gate(y, g, self.conv1.row_degree), None)
        y = y * envelope.view(-1, 1, 1)
        agg = so2_rotate_out_scatter(y, wigner, i, x.shape[0], backend=self.backend, block_rows=block_rows,
                                     n_components=num_components(self.lmax) if block_rows is not None else None)
        x = x + agg * inv_avg_neighbors
        h, g = self.ffn_in(self.norm_ffn(x))
        out, _ = self.ffn_out(gate(h, g, self.ffn_in.row_degree))
        return x + out


#: the layer's name before issue 14
ESENBlock = ESENLayer


@register_model(aliases=("nnip_scale.models.ESEN",))
class ESEN(PotentialModel):
    """eSEN-style SO(3)-equivariant potential with SO(2) edge convolutions.

    Args:
        width: channels W per spherical component (the size knob of the scaling study).
        depth: number of blocks (``layers``).
        lmax: largest degree L of the atom features (1..6).
        mmax: largest |m| kept in the edge frame (0..lmax).
        cutoff: radial cutoff (Å).
        num_radial: number of Bessel radial basis functions.
        envelope_order: order p of the polynomial cutoff envelope.
        max_atomic_number: size of the element table.
        forces: ``"direct"`` (linear map of the ℓ = 1 channels) or ``"conservative"`` (−∂E/∂r).
        compute_stress: return stress for periodic structures (conservative only).
        backend: ``nnip_scale.ops`` backend of the edge ops (auto|torch|native|pyg|cueq).
    """

    #: before issue 14 the Bessel basis was ``radial`` and the blocks ``blocks`` (checkpoints of before load)
    renamed_submodules: ClassVar[dict[str, str]] = {"radial.": "radial_basis.", "blocks.": "layers."}

    def __init__(
        self, width: int = 32, depth: int = 2, lmax: int = 2, mmax: int = 1, cutoff: float = 5.0,
        num_radial: int = 16, envelope_order: int = 6, max_atomic_number: int = 100, forces: ForceMode = "direct",
        compute_stress: bool = False, backend: str = "auto",
    ):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces=forces,
                         compute_stress=compute_stress, backend=backend, width=width, depth=depth)
        if not isinstance(lmax, int) or not 1 <= lmax <= MAX_DEGREE:
            raise ValueError(f"lmax must be an int in 1..{MAX_DEGREE}, got {lmax!r}")
        if not isinstance(mmax, int) or not 0 <= mmax <= lmax:
            raise ValueError(f"mmax must be an int in 0..lmax={lmax}, got {mmax!r}")
        self.lmax, self.mmax = lmax, mmax
        self.embedding = nn.Embedding(self.max_atomic_number + 1, width)
        self.init_edge_basis(num_radial, envelope_order)
        self.degree_embedding = MLP([num_radial + 2 * width, width, (lmax + 1) * width])
        self.layers = nn.ModuleList(ESENLayer(lmax, mmax, width, num_radial, backend) for _ in range(depth))
        self.norm_out = SO3LayerNorm(lmax, width)
        self.energy_head = MLP([(lmax + 1) * width, width, 1])
        self.force_head = nn.Linear(width, 1, bias=False) if forces == "direct" else None
        rows = torch.tensor([ell * ell + ell + m for ell, m in so2_layout(lmax, mmax)])
        self.register_buffer("edge_rows", rows, persistent=False)
        # (ℓ, offset) of each edge-frame row in the compact Wigner blocks the native rotations take
        self.register_buffer("block_rows", so2_block_rows(lmax, mmax), persistent=False)
        # Wigner-D constants, fp64 (cast to the input dtype in forward; see nnip_scale.nn.wigner)
        for name, t in zip(("points", "projector", "mask"), wigner_projector(lmax)):
            self.register_buffer(f"wigner_{name}", t, persistent=False)

    def label_stem(self) -> str:
        return f"esen_l{self.lmax}" + (f"_m{self.mmax}" if self.mmax != self.lmax else "")

    def compact_wigner(self, like: torch.Tensor) -> bool:
        """Whether the edge rotations run on the native kernels for tensors like ``like``, which take
        the compact per-degree Wigner blocks (built without the dense [E, R, K] rows); the torch path
        keeps the dense rows. An explicit ``native`` that cannot serve raises here, naming why."""
        backend = per_op_backend(self.backend, "so2_rotate_in")
        return resolve_backend(backend, like.device, like.dtype, "so2_rotate_in", compact=True,
                               components=num_components(self.lmax)) == "native"

    def atomic_outputs(self, batch: dict, edge_vec: torch.Tensor):
        g = self.edge_geometry(edge_vec)
        rbf, envelope, inv_avg = g.rbf, g.envelope, g.inv_avg_neighbors
        projector = (self.wigner_points, self.wigner_projector, self.wigner_mask)
        n0 = self.lmax + 1
        if self.compact_wigner(edge_vec):
            wigner = so2_wigner_blocks(edge_rotation(g.unit), self.lmax, self.mmax, projector=projector)  # [E,NB]
            rows, wigner0, rows0 = self.block_rows, wigner, self.block_rows[:n0]  # m = 0 rows: the first n0
        else:
            wigner = wigner_d(edge_rotation(g.unit), self.lmax, rows=self.edge_rows, projector=projector)  # [E,R,K]
            rows, wigner0, rows0 = None, wigner[:, :n0], None
        h0 = self.embedding(batch["atomic_numbers"])
        x = torch.cat([h0.unsqueeze(1), h0.new_zeros(h0.shape[0], num_components(self.lmax) - 1, self.width)], 1)
        # edge-degree embedding: m = 0 edge-frame coefficients from (rbf, Z_i, Z_j), rotated back,
        # so every degree is populated before the first block (its m > 0 weights see signal)
        i, j = batch["edge_index"][0], batch["edge_index"][1]
        psi = self.degree_embedding(torch.cat([rbf, h0[i], h0[j]], dim=-1)).view(-1, n0, self.width)
        psi = psi * envelope.view(-1, 1, 1)
        k = num_components(self.lmax) if rows0 is not None else None
        x = x + so2_rotate_out_scatter(psi, wigner0, i, x.shape[0], backend=self.backend, block_rows=rows0,
                                       n_components=k) * inv_avg
        for layer in self.layers:
            x = layer(x, wigner, batch["edge_index"], rbf, envelope, inv_avg, rows)
        h = self.norm_out(x)
        sq_norms = (h[:, 1:].square().transpose(1, 2) @ self.norm_out.degree_onehot).transpose(1, 2)  # [A, L, W]
        energy = self.energy_head(torch.cat([h[:, 0], sq_norms.flatten(1)], dim=-1)).squeeze(-1)
        forces = None
        if self.force_head is not None:
            forces = self.force_head(h[:, 1:4]).squeeze(-1)[:, _L1_TO_XYZ]  # (y, z, x) -> (x, y, z)
        return energy, forces
