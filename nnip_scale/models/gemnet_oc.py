"""GemNet-OC-style invariant many-body network: explicit angles (triplets) and dihedrals (quadruplets).

The paper's third step of the symmetry staircase (ℓ = 0, body order 4), after GemNet (Gasteiger,
Groß & Günnemann 2021) and GemNet-OC (Gasteiger et al. 2022); our own design and code. Atoms carry
h_i ∈ R^W, directed edges (messages j → i, stored as edge (i, j)) carry m_ij ∈ R^W. With
r_ij = r_j − r_i (+ periodic shift), d = |r_ij|, r̂ = r_ij/d, rbf(d) the Bessel basis, u(d) the
envelope at the edge cutoff c and u_q(d) the envelope at the quadruplet cutoff c_q ≤ c:

    m_ij  = σ(W_e [h_i, h_j, rbf(d_ij)])                                  edge embedding
    per layer:
    m_ij ← m_ij + φ_ae(h_i, h_j, m_ij)                                   atom → edge
    x_jk  = σ(W_t m_jk) ⊙ (V_t rbf(d_jk)) · u(d_jk)                      [W_t]
    t_ij  = σ(B_t · vec_ℓ( Σ_k P_ℓ(cos θ_kji) x_jk / ⟨n⟩ ))               triplets k→j→i
    y_kl  = σ(W_q m_kl) ⊙ (V_q rbf(d_kl)) · u_q(d_kl)                    [W_q]
    z_lkj = y_kl ⊙ (A_q P(cos θ_lkj)) · u_q(d_jk)                        per quadruplet triplet
    q_ij  = σ(B_q · vec_ℓm( Σ_{k,l} D_ℓm z_lkj / ⟨n_q⟩² ))               quadruplets l→k→j→i
    m_ij ← m_ij + φ_e(m_ij, t_ij, q_ij)                                  edge update
    h_i  ← h_i + φ_a(h_i, Σ_j (V_a rbf(d_ij)) ⊙ m_ij · u(d_ij) / ⟨n⟩)    edge → atom
    heads: ε_i = φ_E(h_i);  F_i = Σ_j φ_F(m_ij)·u(d_ij)·r̂_ij / ⟨n⟩      (direct forces)

φ are two-layer SiLU MLPs, σ = SiLU, ⟨n⟩ the mean neighbour count of the training data and
⟨n_q⟩ = max(1, ⟨n⟩·(c_q/c)³). The triplet and quadruplet sums go through GemNet-OC's "efficient
bilinear" layer B: the basis-weighted sum over k (or k, l) comes first, as one scatter of [T, K, C]
onto the edges (``nnip_scale.ops.basis_scatter``), then one dense layer on the K·C values of every
edge. W_t = ⌈triplet_fraction·W⌉, W_q = ⌈quadruplet_fraction·W⌉, so every layer scales with W (μP).

**Geometry without angles.** With unit vectors v = r̂_jk (j → k), q = −r̂_ij (j → i) and, for a
quadruplet, p = r̂_kl (k → l): cos θ_kji = v·q, cos θ_lkj = −p·v, and the dihedral φ enters only
through x = p·q − (p·v)(q·v) = sin θ_lkj sin θ_kji cos φ and ρ² = (1 − (p·v)²)(1 − (q·v)²):
a_m = Re[(x + iy)^m] = sin^m θ_lkj sin^m θ_kji cos mφ obeys a_{m+1} = 2x·a_m − ρ²·a_{m−1}. The
basis D_ℓm = c_ℓm·(d^m P_ℓ/dt^m)(cos θ_kji)·a_m (0 ≤ m ≤ ℓ ≤ L_q; c_ℓm the Schmidt factor) is the
real spherical harmonic of the output direction about the central bond, azimuth measured from the
source, times sin^m θ_lkj: |D| ≤ 1, and every basis function is a *polynomial* in dot products of
unit vectors (no arccos, atan2 or square root), so collinear triplets and planar quadruplets have
finite values and derivatives of every order, and only even functions of φ appear. The energy is
invariant under rotations, reflections, translations and permutations, and the forces
Σ_j f_ij r̂_ij (f invariant) are equivariant. Every contribution of an edge carries u(d) or u_q(d),
so the energy is continuous (and so are its first two derivatives, which the envelope zeroes) as
atoms cross either cutoff.

Index lists (triplets, quadruplet edges, quadruplets) are built once per forward by
``nnip_scale.ops.interaction_index`` (CSR of edges by atom, no Python loops, sizes read to the host
once; see ``nnip_scale/ops/triplets.py``). Left out from GemNet-OC: the separate atom-to-atom
interaction graph, per-block output heads and the larger embedding cutoff (one edge cutoff here).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from nnip_scale.models.base import ForceMode, PotentialModel
from nnip_scale.models.registry import register_model
from nnip_scale.nn import MLP, PolynomialEnvelope
from nnip_scale.ops import basis_scatter, interaction_index, scatter_sum


def legendre(x: torch.Tensor, n: int) -> torch.Tensor:
    """P_0..P_{n−1}(x) -> [..., n] (Bonnet's recurrence; polynomials, so smooth at x = ±1)."""
    out = [torch.ones_like(x)]
    if n > 1:
        out.append(x)
    for ell in range(1, n - 1):
        out.append(((2 * ell + 1) * x * out[ell] - ell * out[ell - 1]) / (ell + 1))
    return torch.stack(out, dim=-1)


def dihedral_basis(cos_out: torch.Tensor, x: torch.Tensor, rho2: torch.Tensor, lmax: int) -> torch.Tensor:
    """D_ℓm for 0 ≤ m ≤ ℓ ≤ lmax, ordered (ℓ, m) -> [..., (lmax+1)(lmax+2)/2] (module docstring).

    ``cos_out`` = cos θ_kji, ``x`` = sin θ_lkj sin θ_kji cos φ, ``rho2`` = sin² θ_lkj sin² θ_kji (all
    polynomials of unit-vector dot products)."""
    re = [torch.ones_like(x), x]  # Re[(x + iy)^m]: a_{m+1} = 2x·a_m − |x + iy|²·a_{m−1}, |x + iy|² = rho2
    for m in range(1, lmax):
        re.append(2 * x * re[m] - rho2 * re[m - 1])
    columns = []
    for ell in range(lmax + 1):
        for m in range(ell + 1):
            columns.append(_schmidt(ell, m) * _legendre_derivative(cos_out, ell, m) * re[m])
    return torch.stack(columns, dim=-1)


def _schmidt(ell: int, m: int) -> float:
    return 1.0 if m == 0 else math.sqrt(2.0 * math.factorial(ell - m) / math.factorial(ell + m))


def _legendre_derivative(t: torch.Tensor, ell: int, m: int) -> torch.Tensor:
    """d^m P_ℓ/dt^m (the associated Legendre function without its sin^m factor), by the recurrence
    (ℓ' − m + 1)·Q_{ℓ'+1} = (2ℓ' + 1)·t·Q_ℓ' − (ℓ' + m)·Q_{ℓ'−1} from Q_m = (2m − 1)!!."""
    prev, cur = torch.zeros_like(t), torch.full_like(t, float(math.prod(range(1, 2 * m, 2))))
    for k in range(m, ell):
        prev, cur = cur, ((2 * k + 1) * t * cur - (k + m) * prev) / (k - m + 1)
    return cur


class GemNetOCLayer(nn.Module):
    """One interaction block (module docstring): (h [A,W], m [E,W]) -> (h, m)."""

    def __init__(self, width: int, trip_width: int, quad_width: int, num_radial: int, num_spherical: int,
                 quad_basis_size: int, backend: str):
        super().__init__()
        self.backend = backend
        self.atom_to_edge = MLP([3 * width, width, width])
        self.trip_down = nn.Linear(width, trip_width)
        self.trip_radial = nn.Linear(num_radial, trip_width, bias=False)
        self.trip_bilinear = nn.Linear(num_spherical * trip_width, trip_width)
        self.quad_down = nn.Linear(width, quad_width)
        self.quad_radial = nn.Linear(num_radial, quad_width, bias=False)
        self.quad_angle = nn.Linear(num_spherical, quad_width, bias=False)
        self.quad_bilinear = nn.Linear(quad_basis_size * quad_width, quad_width)
        self.edge_update = MLP([width + trip_width + quad_width, width, width])
        self.atom_radial = nn.Linear(num_radial, width, bias=False)
        self.atom_update = MLP([2 * width, width, width])

    def forward(self, h: torch.Tensor, m: torch.Tensor, g: dict) -> tuple[torch.Tensor, torch.Tensor]:
        act = nn.functional.silu
        i, j = g["i"], g["j"]
        n_atoms, n_edges = h.shape[0], m.shape[0]
        m = m + self.atom_to_edge(torch.cat([h[i], h[j], m], dim=-1))
        # triplets k -> j -> i: sources are edges (j, k), targets edges (i, j)
        x = act(self.trip_down(m)) * self.trip_radial(g["rbf"]) * g["env"].unsqueeze(-1)
        a = basis_scatter(x, g["trip_basis"], g["trip_in"], g["trip_out"], n_edges, backend=self.backend)
        t = act(self.trip_bilinear(a.flatten(1) * g["inv_avg"]))
        # quadruplets l -> k -> j -> i: (k, l) -> quad triplet (l, k, j) -> edge (i, j)
        y = act(self.quad_down(m)) * self.quad_radial(g["rbf"]) * g["env_q"].unsqueeze(-1)
        z = y[g["qtrip_in"]] * self.quad_angle(g["qtrip_basis"]) * g["env_q"][g["qtrip_out"]].unsqueeze(-1)
        b = basis_scatter(z, g["quad_basis"], g["quad_trip"], g["quad_out"], n_edges, backend=self.backend)
        q = act(self.quad_bilinear(b.flatten(1) * g["inv_avg_q2"]))
        m = m + self.edge_update(torch.cat([m, t, q], dim=-1))
        msg = self.atom_radial(g["rbf"]) * m * g["env"].unsqueeze(-1)
        agg = scatter_sum(msg, i, n_atoms, backend=self.backend) * g["inv_avg"]
        h = h + self.atom_update(torch.cat([h, agg], dim=-1))
        return h, m


@register_model(aliases=("nnip_scale.models.GemNetOC",))
class GemNetOC(PotentialModel):
    """GemNet-OC-style invariant potential with triplet and quadruplet interactions.

    Args:
        width: atom and edge embedding width W (the size knob of the scaling study).
        depth: number of interaction blocks.
        cutoff: edge cutoff c (Å): atom and triplet interactions.
        quadruplet_cutoff: cutoff c_q ≤ c (Å) of the two inner edges of a quadruplet.
        quadruplet_max_neighbors: keep only this many nearest quadruplet edges per atom (None: all;
            a cap makes the energy jump when two neighbours swap order).
        num_radial: number of Bessel radial basis functions.
        num_spherical: number of Legendre polynomials P_0..P_{L−1} of the triplet angles.
        quadruplet_lmax: largest ℓ of the quadruplet basis D_ℓm ((L_q+1)(L_q+2)/2 functions).
        triplet_fraction: W_t / W (triplet channel width, rounded up).
        quadruplet_fraction: W_q / W (quadruplet channel width, rounded up).
        envelope_order: order p of the polynomial envelopes (both cutoffs).
        max_atomic_number: size of the element table.
        forces: ``"direct"`` (F_i = Σ_j f_ij r̂_ij, f invariant) or ``"conservative"`` (−∂E/∂r).
        compute_stress: return stress for periodic structures (conservative only).
        backend: ``nnip_scale.ops`` backend of the scatters and index construction.
    """

    #: the Bessel basis was ``radial`` before it became ``radial_basis`` (checkpoints of before load)
    renamed_submodules: ClassVar[dict[str, str]] = {"radial.": "radial_basis."}

    def __init__(
        self, width: int = 44, depth: int = 2, cutoff: float = 5.0, quadruplet_cutoff: float = 3.0,
        quadruplet_max_neighbors: int | None = None, num_radial: int = 16, num_spherical: int = 7,
        quadruplet_lmax: int = 2, triplet_fraction: float = 0.5, quadruplet_fraction: float = 0.25,
        envelope_order: int = 6, max_atomic_number: int = 100, forces: ForceMode = "direct",
        compute_stress: bool = False, backend: str = "auto",
    ):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces=forces,
                         compute_stress=compute_stress, backend=backend, width=width, depth=depth)
        if not 0 < quadruplet_cutoff <= cutoff:
            raise ValueError(
                f"quadruplet_cutoff must be in (0, cutoff={cutoff}] Å (the quadruplet edges are a subset of "
                f"the edges), got {quadruplet_cutoff}"
            )
        if quadruplet_max_neighbors is not None and (
            not isinstance(quadruplet_max_neighbors, int) or quadruplet_max_neighbors < 1
        ):
            raise ValueError(f"quadruplet_max_neighbors must be None or an int >= 1, got {quadruplet_max_neighbors!r}")
        if num_radial < 1 or num_spherical < 1 or quadruplet_lmax < 0:
            raise ValueError(
                f"expected num_radial >= 1, num_spherical >= 1, quadruplet_lmax >= 0, got {num_radial}, "
                f"{num_spherical}, {quadruplet_lmax}"
            )
        for name, frac in (("triplet_fraction", triplet_fraction), ("quadruplet_fraction", quadruplet_fraction)):
            if not 0 < frac <= 4:
                raise ValueError(f"{name} must be in (0, 4], got {frac}")
        self.quadruplet_cutoff = float(quadruplet_cutoff)
        self.quadruplet_max_neighbors = quadruplet_max_neighbors
        self.num_spherical, self.quadruplet_lmax = num_spherical, quadruplet_lmax
        self.triplet_fraction, self.quadruplet_fraction = float(triplet_fraction), float(quadruplet_fraction)
        self.triplet_width = math.ceil(self.triplet_fraction * width)
        self.quadruplet_width = math.ceil(self.quadruplet_fraction * width)
        self.quad_basis_size = (quadruplet_lmax + 1) * (quadruplet_lmax + 2) // 2
        self.embedding = nn.Embedding(self.max_atomic_number + 1, width)
        self.init_edge_basis(num_radial, envelope_order)
        self.quad_envelope = PolynomialEnvelope(self.quadruplet_cutoff, envelope_order)
        self.edge_embedding = nn.Linear(2 * width + num_radial, width)
        self.layers = nn.ModuleList(
            GemNetOCLayer(width, self.triplet_width, self.quadruplet_width, num_radial, num_spherical,
                          self.quad_basis_size, backend)
            for _ in range(depth)
        )
        self.energy_head = MLP([width, width, 1])
        self.force_head = MLP([width, width, 1]) if forces == "direct" else None

    def label_stem(self) -> str:
        return "gemnet_oc"

    def interaction_graph(self, batch: dict, edge_vec: torch.Tensor) -> dict:
        """Index lists, bases, radial features and envelopes shared by every layer."""
        geometry = self.edge_geometry(edge_vec)
        dist, unit = geometry.distance, geometry.unit
        idx = interaction_index(batch["edge_index"], batch["edge_shift"], dist, batch["n_atoms"],
                                self.quadruplet_cutoff, self.quadruplet_max_neighbors, backend=self.backend)
        # triplet k -> j -> i: a = r̂_jk (source edge), q = −r̂_ij (target edge); cos θ_kji = a·q
        cos_kji = -(unit[idx.trip_in] * unit[idx.trip_out]).sum(-1)
        # quadruplet l -> k -> j -> i: p = r̂_kl (e1), v = r̂_jk (e2), q = −r̂_ij (e3)
        p, v = unit[idx.qtrip_in], unit[idx.qtrip_out]
        pv = (p * v).sum(-1)
        p_q, v_q, q = p[idx.quad_trip], v[idx.quad_trip], -unit[idx.quad_out]
        pv_q, qv = pv[idx.quad_trip], (q * v_q).sum(-1)
        x = (p_q * q).sum(-1) - pv_q * qv
        rho2 = (1 - pv_q * pv_q) * (1 - qv * qv)
        avg_q = torch.clamp(self.avg_num_neighbors * (self.quadruplet_cutoff / self.cutoff) ** 3, min=1.0)
        return {
            "i": batch["edge_index"][0],
            "j": batch["edge_index"][1],
            "unit": unit,
            "rbf": geometry.rbf,
            "env": geometry.envelope,
            "env_q": self.quad_envelope(dist),
            "inv_avg": geometry.inv_avg_neighbors,
            "inv_avg_q2": 1.0 / (avg_q * avg_q),
            "trip_in": idx.trip_in,
            "trip_out": idx.trip_out,
            "trip_basis": legendre(cos_kji, self.num_spherical),
            "qtrip_in": idx.qtrip_in,
            "qtrip_out": idx.qtrip_out,
            "qtrip_basis": legendre(-pv, self.num_spherical),
            "quad_trip": idx.quad_trip,
            "quad_out": idx.quad_out,
            "quad_basis": dihedral_basis(qv, x, rho2, self.quadruplet_lmax),
            "sizes": idx.sizes,
        }

    def atomic_outputs(self, batch: dict, edge_vec: torch.Tensor):
        g = self.interaction_graph(batch, edge_vec)
        i, j = g["i"], g["j"]
        h = self.embedding(batch["atomic_numbers"])
        m = nn.functional.silu(self.edge_embedding(torch.cat([h[i], h[j], g["rbf"]], dim=-1)))
        for layer in self.layers:
            h, m = layer(h, m, g)
        energy = self.energy_head(h).squeeze(-1)
        forces = None
        if self.force_head is not None:
            f = self.force_head(m) * g["env"].unsqueeze(-1)  # [E, 1] invariant magnitudes
            forces = scatter_sum(f * g["unit"], i, batch["n_atoms"], backend=self.backend) * g["inv_avg"]
        return energy, forces
