"""Layers on spherical-tensor features x [N, K, C] (K = (lmax+1)² rows, order of ``nnip_scale.nn.wigner``).

- :class:`SO3LayerNorm`: layer norm for spherical tensors (ℓ = 0: mean/variance over channels
  with affine weight and bias; ℓ > 0: divide each degree by its RMS over (m, channel), scale
  per channel, no bias), equivariant under D(R).
- :class:`SO3Linear`: a linear map across channels per degree ℓ (same matrix for every m), bias
  on ℓ = 0 only, optional extra invariant outputs (gates) from ℓ = 0.
- :func:`gate`: SiLU on the ℓ = 0 row, σ(gate scalars) per (ℓ, channel) on the ℓ > 0 rows.
- :class:`SO2Convolution`: the per-m weights of ``nnip_scale.ops.so2_conv`` (parameters live here,
  the arithmetic in the op).

Raw parameters of ≥ 2 dims are stored as [..., fan_in, fan_out] (the μP helper's convention).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nnip_scale.ops import so2_conv, so2_layout


def degree_of_rows(lmax: int) -> torch.Tensor:
    """ℓ of each of the (lmax+1)² standard rows (int64)."""
    return torch.tensor([ell for ell in range(lmax + 1) for _ in range(2 * ell + 1)], dtype=torch.long)


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class SO3LayerNorm(nn.Module):
    """Equivariant layer norm of x [N, (lmax+1)², C] (module docstring); ``eps`` inside the root."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        deg = degree_of_rows(lmax)[1:] - 1
        onehot = torch.zeros(len(deg), max(lmax, 1))
        onehot[torch.arange(len(deg)), deg] = 1.0
        self.register_buffer("row_degree", deg, persistent=False)  # ℓ−1 of rows 1..K−1
        self.register_buffer("degree_onehot", onehot, persistent=False)  # exact 0/1 in any dtype
        self.register_buffer("degree_count", onehot.sum(0).clamp(min=1) * channels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0]
        s = s - s.mean(-1, keepdim=True)
        s = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + self.eps) * self.weight[0] + self.bias
        if self.lmax == 0:
            return s.unsqueeze(1)
        v = x[:, 1:]
        ms = (v.square().sum(-1) @ self.degree_onehot) / self.degree_count  # [N, lmax]: mean over (m, c)
        scale = torch.rsqrt(ms + self.eps).index_select(1, self.row_degree).unsqueeze(-1)
        return torch.cat([s.unsqueeze(1), v * scale * self.weight[1:].index_select(0, self.row_degree)], dim=1)


class SO3Linear(nn.Module):
    """Per-degree channel mixing x [N, K, C_in] -> (y [N, K, C_out], extra [N, n_extra])."""

    def __init__(self, lmax: int, c_in: int, c_out: int, n_extra: int = 0):
        super().__init__()
        self.lmax, self.c_out, self.n_extra = lmax, c_out, n_extra
        self.scalar = nn.Linear(c_in, c_out + n_extra)
        self.weight = _uniform((lmax, c_in, c_out), c_in) if lmax > 0 else None
        self.register_buffer("row_degree", degree_of_rows(lmax)[1:] - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scalar(x[:, 0])
        y0, extra = s[:, : self.c_out].unsqueeze(1), s[:, self.c_out :]
        if self.weight is None:
            return y0, extra
        w = self.weight.index_select(0, self.row_degree)  # [K−1, C_in, C_out]
        v = torch.bmm(x[:, 1:].transpose(0, 1), w).transpose(0, 1)
        return torch.cat([y0, v], dim=1), extra


def gate(y: torch.Tensor, gates: torch.Tensor, row_degree: torch.Tensor) -> torch.Tensor:
    """SiLU on row 0 (ℓ = 0); rows 1.. of degree ℓ times σ(gates[:, ℓ−1, c]).

    y [N, R, C]; gates [N, L·C]; ``row_degree`` int64 [R−1]: ℓ−1 of rows 1..R−1."""
    n, _, c = y.shape
    g = torch.sigmoid(gates.view(n, -1, c)).index_select(1, row_degree)
    return torch.cat([nn.functional.silu(y[:, :1]), y[:, 1:] * g], dim=1)


class SO2Convolution(nn.Module):
    """Weights of one SO(2) convolution (``nnip_scale.ops.so2_conv``) in the edge frame.

    ``w0`` [(lmax+1)·C_in, (lmax+1)·C_out + n_extra] for m = 0; ``wm.{m−1}`` [2, n·C_in, n·C_out]
    (real, imaginary part) for m = 1..mmax, n = lmax − m + 1."""

    def __init__(self, lmax: int, mmax: int, c_in: int, c_out: int, n_extra: int = 0, backend: str = "auto"):
        super().__init__()
        self.lmax, self.mmax, self.n_extra, self.backend = lmax, mmax, n_extra, backend
        n0 = lmax + 1
        self.w0 = _uniform((n0 * c_in, n0 * c_out + n_extra), n0 * c_in)
        self.wm = nn.ParameterList(
            _uniform((2, (lmax - m + 1) * c_in, (lmax - m + 1) * c_out), 2 * (lmax - m + 1) * c_in)
            for m in range(1, mmax + 1)
        )
        rows = so2_layout(lmax, mmax)
        self.register_buffer("row_degree", torch.tensor([ell - 1 for ell, _ in rows[1:]]), persistent=False)

    def forward(self, x: torch.Tensor, radial: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return so2_conv(x, radial, self.w0, list(self.wm), self.lmax, self.mmax, self.n_extra, self.backend)
