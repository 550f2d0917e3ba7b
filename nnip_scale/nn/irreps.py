"""O(3) irreps helpers on cuequivariance: natural-parity irreps, cached descriptors and the
per-ℓ equivariant linear layer.

Feature layout (cuequivariance ``ir_mul``): [N, D, C] with D = Σ over segments of (2ℓ+1)
components and C channels; a segment list names the ℓ of each (2ℓ+1)-row block in order.
Natural parity: ℓ even → ``e``, ℓ odd → ``o`` (polar tensors; the spherical harmonics Y_ℓ have
this parity), so every map built from them is O(3)-equivariant, reflections included.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn


def irreps_string(ells: Sequence[int], mul: int) -> str:
    """``"{mul}x0e+{mul}x1o+…"`` for the natural-parity irreps ℓ in ``ells``."""
    return "+".join(f"{mul}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in ells)


def irreps_dim(ells: Sequence[int]) -> int:
    return sum(2 * ell + 1 for ell in ells)


@functools.lru_cache(maxsize=32)
def spherical_harmonics_polynomial(max_ell: int):
    """cuequivariance polynomial of Y_0..Y_max_ell of a 1o vector (x, y, z)."""
    import cuequivariance as cue

    return cue.descriptors.spherical_harmonics(cue.O3(1, -1), list(range(max_ell + 1))).polynomial


@functools.lru_cache(maxsize=32)
def channelwise_tp_descriptor(in_ells: tuple[int, ...], sh_max_ell: int, target_max_ell: int, mul: int):
    """Channel-wise TP ``mul×in_ells ⊗ Y_0..sh_max_ell``, outputs filtered to natural-parity
    ℓ ≤ target_max_ell (one output segment per path, sorted by irrep). Returns
    (polynomial, ℓ of each output segment)."""
    import cuequivariance as cue

    d = cue.descriptors.channelwise_tensor_product(
        cue.Irreps(cue.O3, irreps_string(in_ells, mul)),
        cue.Irreps(cue.O3, irreps_string(range(sh_max_ell + 1), 1)),
        cue.Irreps(cue.O3, irreps_string(range(target_max_ell + 1), 1)),
    )
    out_segments = tuple(ir.l for m, ir in d.operands[-1].irreps for _ in range(m // mul))
    return d.polynomial, out_segments


@functools.lru_cache(maxsize=32)
def symmetric_contraction_polynomial(in_ells: tuple[int, ...], out_ells: tuple[int, ...], mul: int, correlation: int):
    """ACE symmetric contraction of ``mul×in_ells`` to ``mul×out_ells``, degrees 1..correlation."""
    import cuequivariance as cue

    return cue.descriptors.symmetric_contraction(
        cue.Irreps(cue.O3, irreps_string(in_ells, mul)),
        cue.Irreps(cue.O3, irreps_string(out_ells, mul)),
        tuple(range(1, correlation + 1)),
    ).polynomial


class IrrepsLinear(nn.Module):
    """Equivariant linear map: for each output ℓ, all input copies of that ℓ [n_ℓ·C_in] are mixed
    into C_out channels, the same matrix for every component m (no bias: only ℓ = 0 could have one,
    and the layers that follow do not need it).

    Args:
        in_segments: ℓ of each input segment, in layout order (copies of one ℓ may repeat).
        out_ells: output ℓ's (each once), sorted.
        in_channels, out_channels: C_in, C_out.

    Weights ``weights.{k}`` [n_ℓ·C_in, C_out] (used as x @ W, init N(0, 1/fan_in)).
    x [N, Σ(2ℓ+1) over in_segments, C_in] -> [N, Σ(2ℓ+1) over out_ells, C_out].
    """

    def __init__(self, in_segments: Sequence[int], out_ells: Sequence[int], in_channels: int, out_channels: int):
        super().__init__()
        self.out_ells = tuple(out_ells)
        self.out_channels = out_channels
        offsets, o = [], 0
        for ell in in_segments:
            offsets.append(o)
            o += 2 * ell + 1
        self.in_dim = o
        self.weights = nn.ParameterList()
        for k, ell in enumerate(self.out_ells):
            copies = [off for off, l_in in zip(offsets, in_segments) if l_in == ell]
            if not copies:
                raise ValueError(f"IrrepsLinear: output ℓ={ell} has no input of that ℓ (inputs: {list(in_segments)})")
            # rows of x in (m, copy) order, so a reshape gives [N, 2ℓ+1, n_ℓ·C_in]
            rows = [off + m for m in range(2 * ell + 1) for off in copies]
            self.register_buffer(f"rows{k}", torch.tensor(rows, dtype=torch.long), persistent=False)
            fan_in = len(copies) * in_channels
            self.weights.append(nn.Parameter(torch.randn(fan_in, out_channels) / math.sqrt(fan_in)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        parts = []
        for k, ell in enumerate(self.out_ells):
            xs = x.index_select(1, getattr(self, f"rows{k}")).reshape(n, 2 * ell + 1, -1)
            parts.append(xs @ self.weights[k])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
