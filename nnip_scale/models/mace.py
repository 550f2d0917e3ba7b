"""MACE (Batatia et al. 2022): the many-body axis of the symmetry staircase, body order ν = correlation + 1.

Each atom carries C channels of natural-parity O(3) irreps ℓ = 0..max_ell, layout [A, D, C]
(``nnip_scale.nn.irreps``). With r_ij = r_j − r_i (+ periodic shift), d = |r_ij|, r̂ = r_ij/d,
Y(r̂) the spherical harmonics ℓ = 0..sh_max_ell and u(d) the cutoff envelope, one interaction is

    h̃_j   = Linear_up(h_j)                                               (per ℓ, C → C)
    R_ij  = MLP(rbf(d)) · u(d)                                           [P paths × C]
    A_i   = Σ_j R_ij ⊙ (h̃_j ⊗ Y(r̂_ij)) / ⟨n⟩                            (channel-wise TP, one scatter)
    A'_i  = Linear(A_i)                                                  (per ℓ ≤ sh_max_ell: n_ℓ·C → C)
    B_i   = Σ_{ν'=1..correlation} W^{ν'}_{Z_i} · (A'_i)^{⊗ν'}                 (ACE symmetric contraction)
    h_i  ← Linear_post(B_i) + Linear_skip(h_i)                         (no skip in the first layer)
    ε_i  += Linear(h_i^{ℓ=0})  (last layer: MLP(h_i^{ℓ=0}), hidden ``readout_hidden``)

The Clebsch–Gordan and product-basis coefficients are cuequivariance descriptors; the hot ops
run through ``nnip_scale.ops`` (torch reference, native kernels or cuequivariance-torch, same
parameters). The model's ``backend`` is passed to each op through
``nnip_scale.ops.registry.per_op_backend`` (``MACE.op_backends`` lists the result): with
``native``, the spherical harmonics, the interaction (``channelwise_tp_scatter``), the symmetric
contraction and the scatters all run on nnip_scale's CPU kernels (no torch fallback); ``auto`` picks
per call (native on CPU, cueq on CUDA when installed, else torch).
The element-dependent contraction weights W_Z exist for the chemical elements listed in
``elements`` (default: all 1..max_atomic_number), as MACE has one weight set per element;
``elements="auto"`` takes the list from the training statistics (:meth:`MACE.set_statistics`,
the elements of the training split) and records it in ``init_config()``, so a checkpoint
rebuilds exactly the trained elements without the data. A structure with an element outside the
list is refused, naming it by symbol.

Direct forces: max_ell ≥ 1: F_i = Σ_c w_c h_i^{ℓ=1, c} (the last layer keeps its 1o channels);
max_ell = 0 (the invariant 4-body model): no vector features exist, so the equivariant edge head
F_i = Σ_j φ(h_i, h_j, rbf(d)) · u(d) · r̂_ij / ⟨n⟩ on the last layer's scalars.
All features are polar (natural parity) and all maps equivariant: E is O(3)-invariant
(rotations and reflections), F O(3)-equivariant; translation and permutation symmetric.
"""

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from nnip_scale.models.base import ForceMode, PotentialModel, element_symbol, element_symbols
from nnip_scale.models.registry import register_model
from nnip_scale.nn import MLP
from nnip_scale.nn.irreps import (
    IrrepsLinear,
    channelwise_tp_descriptor,
    spherical_harmonics_polynomial,
    symmetric_contraction_polynomial,
)
from nnip_scale.ops import scatter_sum
from nnip_scale.ops.equivariant import (
    ChannelwiseTPPlan,
    PolynomialPlan,
    channelwise_tp_scatter,
    spherical_harmonics,
    symmetric_contraction,
)
from nnip_scale.ops.registry import per_op_backend


class MACELayer(nn.Module):
    """One MACE layer (module docstring): h [A, irreps_dim(in_ells), C] -> [A, irreps_dim(out_ells), C]."""

    def __init__(
        self,
        in_ells: tuple[int, ...],
        out_ells: tuple[int, ...],
        width: int,
        sh_max_ell: int,
        correlation: int,
        num_radial: int,
        radial_hidden: int,
        radial_layers: int,
        n_elements: int,
        residual: bool,
        backend: str,
    ):
        super().__init__()
        self.backend, self.width = backend, width
        target = tuple(range(sh_max_ell + 1))
        ctp, out_segments = channelwise_tp_descriptor(in_ells, sh_max_ell, sh_max_ell, width)
        self.tp = ChannelwiseTPPlan(ctp)
        self.linear_up = IrrepsLinear(in_ells, in_ells, width, width)
        self.radial = MLP([num_radial] + [radial_hidden] * radial_layers + [self.tp.n_paths * width], unit_init=True)
        self.linear_message = IrrepsLinear(out_segments, target, width, width)
        self.contraction = PolynomialPlan(
            symmetric_contraction_polynomial(target, out_ells, width, correlation), weighted=True
        )
        self.contraction_weights = nn.Parameter(self._contraction_init(n_elements, torch.get_default_dtype(), None))
        self.linear_post = IrrepsLinear(out_ells, out_ells, width, width)
        self.skip = IrrepsLinear(in_ells, out_ells, width, width) if residual else None

    def _contraction_init(self, n_elements: int, dtype: torch.dtype, device) -> torch.Tensor:
        """Fresh per-element contraction weights [n_elements, n_weights, C]: path-normalised, so
        unit-variance A gives unit-variance B at init, every path alike."""
        std = self.contraction.weight_init_std.to(dtype=dtype, device=device)
        return torch.randn(n_elements, self.contraction.n_weights, self.width, dtype=dtype, device=device) * std[:, None]

    def reset_elements(self, n_elements: int) -> None:
        """Replace the contraction weights by freshly initialised ones for ``n_elements`` elements
        (same dtype and device); the old tensor is dropped."""
        old = self.contraction_weights
        self.contraction_weights = nn.Parameter(self._contraction_init(n_elements, old.dtype, old.device),
                                                requires_grad=old.requires_grad)

    def forward(self, h, sh, rbf, envelope, sender, receiver, element_slot, inv_avg_neighbors, n_atoms: int,
                zero_row: bool = False, receiver_ptr=None, sender_order=None):
        weights = (self.radial(rbf) * envelope.unsqueeze(-1)).view(rbf.shape[0], self.tp.n_paths, self.width)
        tp_backend = per_op_backend(self.backend, "channelwise_tp_scatter")
        a = channelwise_tp_scatter(self.tp, weights, self.linear_up(h), sh, sender, receiver, n_atoms, backend=tp_backend,
                                   receiver_ptr=receiver_ptr, sender_order=sender_order)
        a = self.linear_message(a * inv_avg_neighbors)
        sc_backend = per_op_backend(self.backend, "symmetric_contraction")
        w = self.contraction_weights
        if zero_row:  # atoms of elements without weights (slot = len(w)) contract with zeros
            w = torch.cat([w, w.new_zeros(1, *w.shape[1:])])
        b = symmetric_contraction(self.contraction, a, w, element_slot, backend=sc_backend)
        out = self.linear_post(b)
        return out if self.skip is None else out + self.skip(h)


#: the layer's name before issue 14
MACEInteraction = MACELayer


@register_model(aliases=("nnip_scale.models.MACE",))
class MACE(PotentialModel):
    """MACE with an energy readout per layer and a direct (equivariant) or conservative force head.

    Args:
        width: channels C per irrep (the size knob of the scaling study).
        depth: number of interactions.
        max_ell: highest ℓ of the hidden features (0..3; 0 = the invariant 4-body model).
        sh_max_ell: highest ℓ of the edge spherical harmonics and of the contraction input (1..3, ≥ max_ell).
        correlation: order of the symmetric contraction (1..3); body order ν = correlation + 1.
        cutoff: radial cutoff (Å).
        num_radial: number of Bessel radial basis functions.
        envelope_order: order p of the polynomial cutoff envelope.
        radial_hidden, radial_layers: hidden width and depth of the radial MLP (fixed, not scaled).
        readout_hidden: hidden width of the last layer's energy MLP.
        elements: atomic numbers with their own contraction weights; ``"auto"``: the elements of
            the training split, set by :meth:`set_statistics` (before that the model cannot run;
            ``init_config()`` then records the list, so a checkpoint restores it without data);
            ``None``: all of 1..max_atomic_number.
        max_atomic_number: size of the element embedding table.
        forces: ``"direct"`` (equivariant force head) or ``"conservative"`` (−∂E/∂r).
        compute_stress: return stress for periodic structures (conservative only).
        backend: ops backend (auto|torch|native|pyg|cueq), mapped per op by
            ``nnip_scale.ops.registry.per_op_backend`` (module docstring; ``op_backends``).
    """

    def __init__(
        self, width: int = 32, depth: int = 2, max_ell: int = 1, sh_max_ell: int = 3, correlation: int = 3,
        cutoff: float = 5.0, num_radial: int = 8, envelope_order: int = 5, radial_hidden: int = 64,
        radial_layers: int = 3, readout_hidden: int = 16, elements: list[int] | Literal["auto"] | None = None,
        max_atomic_number: int = 100, forces: ForceMode = "direct", compute_stress: bool = False,
        backend: str = "auto",
    ):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces=forces,
                         compute_stress=compute_stress, backend=backend, width=width, depth=depth)
        if not 1 <= correlation <= 3:
            raise ValueError(f"correlation must be in 1..3 (body order 2..4), got {correlation}")
        if not 1 <= sh_max_ell <= 3 or not 0 <= max_ell <= sh_max_ell:
            raise ValueError(
                f"expected 0 <= max_ell <= sh_max_ell and 1 <= sh_max_ell <= 3, got max_ell={max_ell}, sh_max_ell={sh_max_ell}"
            )
        if isinstance(elements, str) and elements != "auto":
            raise ValueError(f"elements must be 'auto', a list of atomic numbers or null, got {elements!r}")
        #: ``elements: auto``: the list comes from the training statistics (or a checkpoint)
        self.elements_auto = elements == "auto"
        #: the configured or learnt atomic numbers (sorted); None: all of them, or auto not yet set
        self.elements: list[int] | None = (
            None if elements is None or self.elements_auto else self._parse_elements(elements))
        # element_slot[Z] = row of the contraction weights of element Z (-1: none)
        self.register_buffer("element_slot", torch.full((self.max_atomic_number + 1,), -1, dtype=torch.long),
                             persistent=False)
        self._fill_element_slots()
        self._record_elements()
        zs = self.element_list
        self.max_ell, self.sh_max_ell, self.correlation = max_ell, sh_max_ell, correlation
        self.radial_hidden, self.radial_layers, self.readout_hidden = radial_hidden, radial_layers, readout_hidden
        direct_vectors = forces == "direct" and max_ell >= 1
        hidden = tuple(range(max_ell + 1))
        last = (0, 1) if direct_vectors else (0,)
        self.embedding = nn.Embedding(self.max_atomic_number + 1, width)
        self.init_edge_basis(num_radial, envelope_order)
        self.sh_plan = PolynomialPlan(spherical_harmonics_polynomial(sh_max_ell), weighted=False)
        layers, readouts, in_ells = [], [], (0,)
        for t in range(depth):
            out_ells = last if t == depth - 1 else hidden
            layers.append(MACELayer(
                in_ells, out_ells, width, sh_max_ell, correlation, num_radial, radial_hidden,
                radial_layers, len(zs), residual=t > 0, backend=backend,
            ))
            readouts.append(MLP([width, readout_hidden, 1]) if t == depth - 1 else nn.Linear(width, 1, bias=False))
            in_ells = out_ells
        self.layers, self.readouts = nn.ModuleList(layers), nn.ModuleList(readouts)
        self.force_head = None
        if forces == "direct":
            if direct_vectors:
                self.force_head = nn.Linear(width, 1, bias=False)
            else:
                self.force_head = MLP([2 * width + num_radial, width, 1], bias_last=False)

    @property
    def op_backends(self) -> dict[str, str]:
        """The backend each hot op is called with (``per_op_backend`` of the model's backend)."""
        ops = ("spherical_harmonics", "channelwise_tp_scatter", "symmetric_contraction", "scatter_sum")
        return {op: per_op_backend(self.backend, op) for op in ops}

    def label_stem(self) -> str:
        return f"mace_l{self.max_ell}_nu{self.correlation + 1}"

    # ------------------------------------------------------------------ elements
    def _parse_elements(self, elements) -> list[int]:
        """Sorted distinct atomic numbers of ``elements``, all in 1..max_atomic_number."""
        try:
            items = list(elements)
            if any(isinstance(z, (bool, str)) or int(z) != z for z in items):
                raise TypeError
            zs = sorted({int(z) for z in items})
        except (TypeError, ValueError):
            zs = []
        if not zs or any(not 1 <= z <= self.max_atomic_number for z in zs):
            raise ValueError(f"elements must be atomic numbers in 1..{self.max_atomic_number}, 'auto' or null, "
                             f"got {elements!r}")
        return zs

    @property
    def element_list(self) -> list[int]:
        """The atomic numbers that have contraction weights, in weight-row order ([] while
        ``elements: auto`` has not been set)."""
        if self.elements is not None:
            return list(self.elements)
        return [] if self.elements_auto else list(range(1, self.max_atomic_number + 1))

    def _record_elements(self) -> None:
        """What ``init_config()["elements"]`` holds: ``"auto"`` until the list is learnt, then the list
        (so a checkpoint rebuilds exactly the trained elements), or the configured list / ``None``."""
        self.record_init_arg("elements", "auto" if self.elements_auto and self.elements is None else (
            None if self.elements is None else list(self.elements)))

    def _fill_element_slots(self) -> None:
        zs = self.element_list
        with torch.no_grad():
            self.element_slot.fill_(-1)
            if zs:
                self.element_slot[zs] = torch.arange(len(zs), device=self.element_slot.device)

    def set_elements(self, elements: Iterable[int]) -> bool:
        """Give ``elements: auto`` its element list: fresh contraction weights for exactly these
        atomic numbers (same dtype and device). Returns whether the parameters were replaced
        (``False`` when the list is already the model's). A model with an explicit list (or
        ``None``) accepts only its own list."""
        zs = self._parse_elements(list(elements))
        if zs == self.element_list:
            return False
        if not self.elements_auto:
            raise ValueError(
                f"this MACE was built with the elements {element_symbols(self.element_list)}, not "
                f"{element_symbols(zs)}; only a model with elements: auto takes its list from the data or a checkpoint"
            )
        for layer in self.layers:
            layer.reset_elements(len(zs))
        self.elements = zs
        self._fill_element_slots()
        self._record_elements()
        return True

    def missing_elements_message(self, zs: Iterable[int]) -> str | None:
        """``"element Cu (Z=29) is not among the model's elements H, C, N, O"`` for the atomic
        numbers of ``zs`` without contraction weights; ``None`` when there are none."""
        have = set(self.element_list)
        missing = sorted({int(z) for z in zs} - have)
        if not missing:
            return None
        names = ", ".join(element_symbol(z) + ("" if element_symbol(z).startswith("Z=") else f" (Z={z})")
                          for z in missing)
        verb = "element {} is" if len(missing) == 1 else "elements {} are"
        listed = element_symbols(self.element_list) if have else "(none yet: elements: auto before any statistics)"
        return f"{verb.format(names)} not among the model's elements {listed}"

    def check_elements(self, zs: Iterable[int], expected: str) -> None:
        """Raise ``ValueError`` naming (by symbol) the atomic numbers of ``zs`` that have no
        contraction weights; ``expected`` ends the message (what would have been right)."""
        message = self.missing_elements_message(zs)
        if message is not None:
            raise ValueError(f"{message}; {expected}")

    def set_statistics(self, stats: Any) -> None:
        """The base class's statistics; with ``elements: auto`` not yet set, the element list
        becomes the training split's elements (``stats.elements``) and the contraction weights are
        created for them. Otherwise every training element must already have weights."""
        zs = sorted({int(z) for z in stats.elements})
        learn = self.elements_auto and self.elements is None
        in_table = all(1 <= z <= self.max_atomic_number for z in zs)
        if not learn and in_table:  # (elements outside the table: the base class names them)
            self.check_elements(zs, "the training data hold them and every training element needs contraction "
                                    "weights; " + (
                                        "this model's list was set from earlier statistics or its checkpoint, "
                                        "expected training data with only those elements (a new model learns others)"
                                        if self.elements_auto else
                                        "expected them in the model's `elements` (or elements: auto)"))
        super().set_statistics(stats)
        if learn:
            self.set_elements(zs)

    def restore_init_args(self, init_args: dict, source: str = "the checkpoint") -> bool:
        """Before a checkpoint's weights are loaded into a model built from a config: with
        ``elements: auto``, take the element list the checkpoint was trained with (its
        ``init_args["elements"]``); with an explicit list, refuse a checkpoint trained with another
        list (its weight rows would belong to other elements). Returns whether parameters were
        replaced (then any optimizer holding the old ones is stale)."""
        if "elements" not in init_args or init_args["elements"] == "auto":
            return False
        saved = init_args["elements"]
        zs = list(range(1, self.max_atomic_number + 1)) if saved is None else self._parse_elements(saved)
        if self.elements_auto:
            return self.set_elements(zs)
        if zs != self.element_list:
            raise ValueError(
                f"{source} holds MACE contraction weights for the elements {element_symbols(zs)}, but the "
                f"model is configured with {element_symbols(self.element_list)}; expected the same elements "
                f"(elements: auto takes the checkpoint's)"
            )
        return False

    def _element_slots(self, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Weight row of every atom, and whether a zero row must be appended (atoms of elements
        without weights, evaluated only inside ``unseen_elements_allowed()``)."""
        if self.elements_auto and self.elements is None:
            raise RuntimeError(
                "this MACE has elements: auto but no element list yet; expected set_statistics() with the "
                "training statistics first (NNIPModule does it at setup) or a model loaded from a checkpoint "
                "(nnip_scale.checkpoint.load_backbone)"
            )
        if self.unseen_elements_ok:
            slot = self.element_slot[z]
            return torch.where(slot < 0, len(self.element_list), slot), True
        # Checked on the CPU and in evaluation; a training step on an accelerator is not (the check
        # would be a host sync every step): its data were checked when the statistics were set.
        if z.device.type == "cpu" or not self.training:
            z_max = self.element_slot.shape[0] - 1
            bad = (z < 0) | (z > z_max) | (self.element_slot[z.clamp(0, z_max)] < 0)
            if bool(bad.any()):
                self.check_elements(
                    torch.unique(z[bad]).tolist(),
                    "MACE has contraction weights only for these, expected structures made of them"
                    + (" (elements: auto learnt them from the training data)" if self.elements_auto else ""))
        return self.element_slot[z], False

    def atomic_outputs(self, batch: dict, edge_vec: torch.Tensor):
        z = batch["atomic_numbers"]
        n_atoms: int = batch["n_atoms"]
        receiver, sender = batch["edge_index"][0], batch["edge_index"][1]
        # the collate's edge layout (data.batching.edge_layout; absent from a hand-made batch): spares the
        # native interaction kernels their per-call sorts
        layout = batch.get("edge_receiver_ptr"), batch.get("edge_sender_order")
        g = self.edge_geometry(edge_vec)
        unit, rbf, envelope, inv_avg = g.unit, g.rbf, g.envelope, g.inv_avg_neighbors
        sh = spherical_harmonics(self.sh_plan, unit, backend=per_op_backend(self.backend, "spherical_harmonics"))
        slot, zero_row = self._element_slots(z)
        h = self.embedding(z).unsqueeze(1)  # [A, 1 (ℓ = 0), C]
        energy = 0.0
        for layer, readout in zip(self.layers, self.readouts):
            h = layer(h, sh, rbf, envelope, sender, receiver, slot, inv_avg, n_atoms, zero_row, *layout)
            energy = energy + readout(h[:, 0, :]).squeeze(-1)
        forces = None
        if isinstance(self.force_head, nn.Linear):
            forces = self.force_head(h[:, 1:4, :]).squeeze(-1)  # 1o rows are (x, y, z)
        elif self.force_head is not None:
            s = h[:, 0, :]
            w = self.force_head(torch.cat([s[receiver], s[sender], rbf], dim=-1)) * envelope.unsqueeze(-1)
            forces = scatter_sum(w * unit, receiver, n_atoms, backend=self.backend) * inv_avg
        return energy, forces
