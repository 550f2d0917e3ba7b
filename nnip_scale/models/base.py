"""The base class every backbone derives from: statistics buffers, edge geometry, constructor
arguments, outputs.

A backbone is a plain ``nn.Module``: the batch dict of ``docs/conventions.md`` in, a dict with
``energy`` [S] (eV), ``forces`` [A,3] (eV/Å) and, when asked, ``stress`` [S,3,3] (eV/Å³) out.
Subclasses implement :meth:`atomic_outputs`; this class turns its per-atom energies into
total energies (adding per-element reference energies) and provides conservative forces
(−∂E/∂r) and stress ((1/V)·∂E/∂ε) when the model is configured for them.

What every model shares lives here, once: the recorded constructor arguments (:meth:`init_config`,
which checkpoints and μP rebuilds use: every subclass's ``__init__`` is wrapped so that its bound
arguments, defaults included, are recorded before its body runs), the width/depth checks, the radial
basis and envelope (:meth:`init_edge_basis`) and the per-edge geometry (:meth:`edge_geometry`), and
the state_dict keys of renamed submodules (:attr:`PotentialModel.renamed_submodules`), so checkpoints
written before a rename still load.
"""

import abc
import contextlib
import copy
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import nn

from nnip_scale.nn import BesselBasis, PolynomialEnvelope
from nnip_scale.ops import scatter_sum

ForceMode = Literal["direct", "conservative"]

_ELEMENT_SYMBOLS = None


def element_symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` (``'Z=…'`` when unknown)."""
    global _ELEMENT_SYMBOLS
    if _ELEMENT_SYMBOLS is None:
        from ase.data import chemical_symbols

        _ELEMENT_SYMBOLS = chemical_symbols
    return _ELEMENT_SYMBOLS[z] if 0 < z < len(_ELEMENT_SYMBOLS) else f"Z={z}"


def element_symbols(zs: Iterable[int]) -> str:
    """``"H, C, N, O"`` for atomic numbers ``zs`` (sorted); a run of more than 12 consecutive
    atomic numbers is written ``"H … Fm (Z=1..100)"``."""
    zs = sorted({int(z) for z in zs})
    if len(zs) > 12 and zs[-1] - zs[0] == len(zs) - 1:
        return f"{element_symbol(zs[0])} … {element_symbol(zs[-1])} (Z={zs[0]}..{zs[-1]})"
    return ", ".join(element_symbol(z) for z in zs)


class EdgeGeometry(NamedTuple):
    """Per-edge quantities every model builds from r_ij (:meth:`PotentialModel.edge_geometry`)."""

    #: |r_ij| [E] (Å)
    distance: torch.Tensor
    #: r̂_ij = r_ij/|r_ij| [E,3] (``None`` when not asked for)
    unit: torch.Tensor | None
    #: radial basis of |r_ij| [E, num_radial] (``radial_basis``)
    rbf: torch.Tensor
    #: cutoff envelope u(|r_ij|) [E] in [0, 1] (``envelope``)
    envelope: torch.Tensor
    #: 1/⟨n⟩, the inverse mean neighbour count of the training data (scalar tensor)
    inv_avg_neighbors: torch.Tensor


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the plain type its annotation ``hint`` names where that is lossless: an integer for
    a ``float`` argument becomes a float (``cutoff: 5`` → ``5.0``), an integral number for an ``int``
    argument an ``int``, 0/1 for a ``bool`` argument a bool. Anything else is kept as given."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, bool) or value is None:
        return value
    if float in options and int not in options and isinstance(value, numbers.Integral):
        return float(value)
    if int in options and isinstance(value, numbers.Integral):
        return int(value)
    if bool in options and isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    return value


def _recording_init(init):
    """Wrap a model's ``__init__`` so that the outermost call records its bound arguments (defaults
    applied, ``**kwargs`` flattened) in ``_init_args`` before the body runs. ``functools.wraps`` keeps
    the signature, annotations and docstring (LightningCLI, the checkpoint loader and
    ``inspect.signature`` see the model's own arguments)."""
    signature = inspect.signature(init)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(f"{init.__qualname__}: a PotentialModel's constructor cannot take *args; expected "
                        f"arguments that init_config() can record by name")
    hints: dict[str, Any] | None = None

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        nonlocal hints
        if type(self).__init__ is __init__:  # the outermost constructor: record its arguments
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            if hints is None:
                try:
                    hints = typing.get_type_hints(init)
                except (NameError, TypeError, AttributeError):  # an annotation that does not resolve: as given
                    hints = {}
            record: dict[str, Any] = {}
            for name, param in list(signature.parameters.items())[1:]:
                value = bound.arguments[name]
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    record.update(value)
                else:
                    record[name] = _coerce(value, hints.get(name))
            object.__setattr__(self, "_init_args", record)
        init(self, *args, **kwargs)

    return __init__


class PotentialModel(nn.Module, abc.ABC):
    """Base class of the interatomic-potential backbones.

    Args:
        cutoff: radial cutoff (Å); the data's neighbour-list cutoff must be at least this.
        max_atomic_number: size of the element table (elements 1..max_atomic_number).
        forces: ``"direct"`` (a force head, as in the paper) or ``"conservative"`` (−∂E/∂r).
        compute_stress: also return the stress of periodic structures (conservative only).
        backend: ``nnip_scale.ops`` backend for the hot ops (auto|torch|native|pyg|cueq).
        width, depth: the model's size knob W and its number of layers, checked (ints ≥ 1) and kept as
            ``self.width``/``self.depth`` (a model without them passes neither).
    """

    #: whether the model reads the batch's ``charge`` and ``spin`` (none of the built-in models does;
    #: training on data that vary them warns)
    uses_charge_spin: bool = False
    #: parameter-name prefixes excluded from N (the element embedding table; docs/conventions.md)
    embedding_prefixes: tuple[str, ...] = ("embedding.",)
    #: inside :meth:`unseen_elements_allowed`: a model with per-element parameters evaluates atoms
    #: of elements it has none for instead of refusing them
    unseen_elements_ok: bool = False
    #: state_dict key prefixes of submodules renamed since checkpoints were written, old → new (e.g.
    #: ``{"radial.": "radial_basis."}``): a state_dict with the old keys loads (:meth:`_load_from_state_dict`)
    renamed_submodules: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])

    def __init__(
        self,
        *,
        cutoff: float,
        max_atomic_number: int,
        forces: ForceMode,
        compute_stress: bool,
        backend: str,
        width: int | None = None,
        depth: int | None = None,
    ):
        super().__init__()
        if width is not None or depth is not None:
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in (width, depth)):
                raise ValueError(f"{type(self).__name__}: width and depth must be ints >= 1, got width={width!r}, "
                                 f"depth={depth!r}")
            self.width, self.depth = int(width), int(depth)
        if forces not in ("direct", "conservative"):
            raise ValueError(f"forces must be 'direct' or 'conservative', got {forces!r}")
        if compute_stress and forces != "conservative":
            raise ValueError("compute_stress=True needs forces='conservative' (stress is −∂E/∂ε)")
        if not 1 <= max_atomic_number <= 118:
            raise ValueError(f"max_atomic_number must be in 1..118, got {max_atomic_number}")
        self.cutoff = float(cutoff)
        self.max_atomic_number = int(max_atomic_number)
        self.force_mode = forces
        self.compute_stress = bool(compute_stress)
        self.backend = backend
        n = self.max_atomic_number + 1
        # Filled from the training split by set_statistics(); saved in the state_dict.
        self.register_buffer("element_energies", torch.zeros(n))
        self.register_buffer("known_elements", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("force_scale", torch.ones(()))
        self.register_buffer("avg_num_neighbors", torch.ones(()))
        self.register_buffer("statistics_set", torch.zeros((), dtype=torch.bool))
        for name, value in (("cutoff", self.cutoff), ("max_atomic_number", self.max_atomic_number),
                            ("forces", self.force_mode), ("compute_stress", self.compute_stress)):
            self.record_init_arg(name, value)

    # ------------------------------------------------------------------ constructor arguments
    def init_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (saved in checkpoints, used by μP rebuilds):
        every argument the model was built with, defaults included, as the model resolved it
        (:meth:`record_init_arg`, e.g. MCEGNN's ``vector_channels: null`` → its channel count, MACE's
        ``elements: auto`` → the learnt list). ``type(self)(**init_config())`` rebuilds the model."""
        if "_init_args" not in self.__dict__:
            raise TypeError(f"{type(self).__name__} has no recorded constructor arguments; expected a "
                            f"PotentialModel built through its constructor")
        return copy.deepcopy(self._init_args)

    def record_init_arg(self, name: str, value: Any) -> None:
        """Record the resolved value of constructor argument ``name`` (what :meth:`init_config` returns
        for it), e.g. a default computed from other arguments or a list learnt from the training data.
        An argument the outermost constructor does not take (a subclass fixed it) is not recorded."""
        recorded = self.__dict__.get("_init_args")
        if recorded is not None and name in recorded:
            recorded[name] = copy.deepcopy(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Rename the keys of :attr:`renamed_submodules` (old checkpoints) before loading."""
        for old, new in self.renamed_submodules.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                renamed = prefix + new + key[len(prefix + old):]
                if renamed not in state_dict:
                    state_dict[renamed] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ edge geometry
    def init_edge_basis(self, num_radial: int, envelope_order: int) -> None:
        """The radial basis ``self.radial_basis`` (``num_radial`` Bessel functions of |r_ij|) and the
        cutoff envelope ``self.envelope`` (order ``envelope_order``) over ``self.cutoff``."""
        self.num_radial, self.envelope_order = num_radial, envelope_order
        self.radial_basis = BesselBasis(self.cutoff, num_radial)
        self.envelope = PolynomialEnvelope(self.cutoff, envelope_order)

    def edge_geometry(self, edge_vec: torch.Tensor, unit: bool = True) -> EdgeGeometry:
        """|r_ij|, r̂_ij (if ``unit``), the radial basis, the envelope and 1/⟨n⟩ of edge vectors
        [E, 3] (needs :meth:`init_edge_basis`)."""
        dist = torch.linalg.vector_norm(edge_vec, dim=-1)
        return EdgeGeometry(
            distance=dist,
            unit=edge_vec / dist.unsqueeze(-1) if unit else None,
            rbf=self.radial_basis(dist),
            envelope=self.envelope(dist),
            inv_avg_neighbors=1.0 / self.avg_num_neighbors,
        )

    # ------------------------------------------------------------------ statistics
    def set_statistics(self, stats: Any) -> None:
        """Take per-element reference energies, force RMS and mean neighbour count.

        ``stats`` is a ``nnip_scale.data.DatasetStatistics`` (or anything with the attributes
        ``element_energies``, ``elements``, ``force_rms``, ``avg_num_neighbors``).
        Raises ``ValueError`` if the data holds an element outside this model's table.
        """
        elements = [int(z) for z in stats.elements]
        outside = [z for z in elements if z > self.max_atomic_number or z < 1]
        if outside:
            names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in outside)
            raise ValueError(
                f"the training data contains element(s) {names} outside the model's element table "
                f"(Z = 1..{self.max_atomic_number}); expected only elements the model can embed — "
                f"raise max_atomic_number in the model config"
            )
        e_ref = torch.as_tensor(stats.element_energies, dtype=torch.float64)
        with torch.no_grad():
            self.element_energies.zero_()
            k = min(len(e_ref), len(self.element_energies))
            self.element_energies[:k] = e_ref[:k].to(self.element_energies.dtype)
            self.known_elements.zero_()
            self.known_elements[elements] = True
            force_rms = float(stats.force_rms)
            self.force_scale.fill_(force_rms if force_rms > 0 else 1.0)
            self.energy_scale.fill_(force_rms if force_rms > 0 else 1.0)
            avg = float(stats.avg_num_neighbors)
            self.avg_num_neighbors.fill_(avg if avg > 0 else 1.0)
            self.statistics_set.fill_(True)

    @contextlib.contextmanager
    def unseen_elements_allowed(self) -> Iterator["PotentialModel"]:
        """Within this context, structures with elements the model has no per-element parameters
        for (MACE's contraction weights) are evaluated (with zero weights for those atoms:
        meaningless numbers, kept apart by ``NNIPModule(unseen_elements="separate")``) instead of
        refused. Models without per-element parameters evaluate every element of their table anyway."""
        previous = self.unseen_elements_ok
        self.unseen_elements_ok = True
        try:
            yield self
        finally:
            self.unseen_elements_ok = previous

    def restore_init_args(self, init_args: dict, source: str = "the checkpoint") -> bool:
        """Called with a checkpoint's backbone ``init_args`` before its weights are loaded into this
        model (built from a config): adopt what the checkpoint resolved from its training data
        (MACE's ``elements: auto``). Returns whether parameters were replaced. Default: nothing."""
        return False

    # ------------------------------------------------------------------ size
    def count_parameters(self) -> dict[str, int]:
        """``n_params``: trainable parameters excluding the element embedding table (the N of the
        scaling laws); ``n_params_total``: all trainable parameters."""
        total = 0
        core = 0
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            total += p.numel()
            if not name.startswith(self.embedding_prefixes):
                core += p.numel()
        return {"n_params": core, "n_params_total": total}

    def arch_label(self) -> str:
        """The architecture label a run is recorded under (ledger ``arch``, κ tool, reports): the
        class name plus whatever tells its configurations apart (``mace_l1_nu4``, ``esen_l2``),
        with ``_conservative`` for −∂E/∂r forces. Width and depth are not part of it: they are the
        axes a scaling study varies within one architecture."""
        return self.label_stem() + ("_conservative" if self.force_mode == "conservative" else "")

    def label_stem(self) -> str:
        return type(self).__name__.lower()

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def edge_vectors(batch: dict, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """r_ij = pos[j] − pos[i] + S_ij·cell[batch[i]]  -> [E, 3] (Å)."""
        i, j = batch["edge_index"][0], batch["edge_index"][1]
        vec = positions[j] - positions[i]
        shifts = batch["edge_shift"].to(positions.dtype)
        cell_of_edge = cell[batch["batch"][i]]
        return vec + torch.einsum("ek,ekl->el", shifts, cell_of_edge)

    # ------------------------------------------------------------------ model body
    @abc.abstractmethod
    def atomic_outputs(
        self, batch: dict, edge_vec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-atom raw energies [A] (dimensionless, scaled by ``energy_scale``) and, for a direct
        model, raw forces [A,3] (scaled by ``force_scale``; ``None`` for conservative models)."""

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        positions = batch["positions"]
        cell = batch["cell"].to(positions.dtype)
        n_structures: int = batch["n_structures"]
        conservative = self.force_mode == "conservative"
        stress = self.compute_stress and conservative
        create_graph = torch.is_grad_enabled()  # training: the force loss backpropagates through −∂E/∂r
        with torch.set_grad_enabled(torch.is_grad_enabled() or conservative):
            strain = None
            if conservative:
                positions = positions.detach().requires_grad_(True)
            if stress:
                strain = torch.zeros(n_structures, 3, 3, dtype=positions.dtype, device=positions.device)
                strain.requires_grad_(True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                positions = positions + torch.einsum("ai,aij->aj", positions, sym[batch["batch"]])
                cell = cell + torch.bmm(cell, sym)
            edge_vec = self.edge_vectors(batch, positions, cell)
            atom_raw, force_raw = self.atomic_outputs(batch, edge_vec)
            z = batch["atomic_numbers"]
            atom_energy = self.element_energies[z].to(atom_raw.dtype) + self.energy_scale * atom_raw
            energy = scatter_sum(
                atom_energy.unsqueeze(-1), batch["batch"], n_structures, backend=self.backend
            ).squeeze(-1)
            out = {"energy": energy, "energies": atom_energy}  # energies: per atom (eV), Σ = energy
            if conservative:
                inputs = [positions] if strain is None else [positions, strain]
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=create_graph
                )
                out["forces"] = -grads[0]
                if strain is not None:
                    volume = torch.linalg.det(batch["cell"].to(positions.dtype)).abs()
                    periodic = batch["pbc"].any(dim=1)
                    safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
                    sigma = grads[1] / safe_volume.view(-1, 1, 1)
                    out["stress"] = torch.where(periodic.view(-1, 1, 1), sigma, torch.zeros_like(sigma))
            else:
                out["forces"] = self.force_scale * force_raw
        if not create_graph:  # evaluation: drop the graph built for −∂E/∂r
            out = {k: v.detach() for k, v in out.items()}
        return out
