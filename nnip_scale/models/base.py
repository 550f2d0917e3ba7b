"""The base class every backbone derives from: statistics buffers, edge vectors, outputs.

A backbone is a plain ``nn.Module``: the batch dict of ``docs/conventions.md`` in, a dict with
``energy`` [S] (eV), ``forces`` [A,3] (eV/Å) and, when asked, ``stress`` [S,3,3] (eV/Å³) out.
Subclasses implement :meth:`atomic_outputs`; this class turns its per-atom energies into
total energies (adding per-element reference energies) and provides conservative forces
(−∂E/∂r) and stress ((1/V)·∂E/∂ε) when the model is configured for them.
"""

import abc
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn

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


class PotentialModel(nn.Module, abc.ABC):
    """Base class of the interatomic-potential backbones.

    Args:
        cutoff: radial cutoff (Å); the data's neighbour-list cutoff must be at least this.
        max_atomic_number: size of the element table (elements 1..max_atomic_number).
        forces: ``"direct"`` (a force head, as in the paper) or ``"conservative"`` (−∂E/∂r).
        compute_stress: also return the stress of periodic structures (conservative only).
        backend: ``nnip_scale.ops`` backend for the hot ops (auto|torch|native|pyg|cueq).
    """

    #: whether the model reads the batch's ``charge`` and ``spin`` (none of the built-in models does;
    #: training on data that vary them warns)
    uses_charge_spin: bool = False
    #: parameter-name prefixes excluded from N (the element embedding table; docs/conventions.md)
    embedding_prefixes: tuple[str, ...] = ("embedding.",)
    #: inside :meth:`unseen_elements_allowed`: a model with per-element parameters evaluates atoms
    #: of elements it has none for instead of refusing them
    unseen_elements_ok: bool = False

    def __init__(
        self,
        *,
        cutoff: float,
        max_atomic_number: int,
        forces: ForceMode,
        compute_stress: bool,
        backend: str,
    ):
        super().__init__()
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

    @abc.abstractmethod
    def init_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (saved in checkpoints)."""

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
