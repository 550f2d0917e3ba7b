"""eSCN/eSEN edge ops: rotate atom features into the edge frame, SO(2) convolution, rotate back + scatter.

Layouts (see ``nnip_scale.nn.wigner`` for the harmonics convention):
- atom features ``x`` [A, K, C] with K = (lmax+1)² components in the order (ℓ, m), index ℓ²+ℓ+m;
- edge-frame features [E, R, C] keep only |m| ≤ mmax, **m-major**: the m = 0 rows (ℓ = 0..lmax),
  then for m = 1..mmax the +m rows (ℓ = m..lmax) followed by the −m rows (ℓ = m..lmax)
  (:func:`so2_layout` gives the row list); ``wigner`` [E, R, K] holds the matching rows of D(R_e).

``so2_conv`` applies, per m, a linear map across (ℓ, channel): for m = 0 a real matrix, for m > 0
the complex-like pair (W_r, W_i) acting on (x_{+m}, x_{−m}) as (x_{+m} + i x_{−m})·(W_r + i W_i),
which commutes with rotations about the edge axis. Inputs may first be modulated element-wise by
a per-edge radial factor (shared by +m and −m). Parameters live in the model.

FLOPs (2 per multiply-add for the matrix products, as FlopCounterMode; 1 per scatter-added value):
rotate-in 2·E·R·K·C_in; SO(2) conv 2·E·Σ(fan_in·fan_out) over the per-m maps (the m > 0 map is
[2n·C_in, 2n·C_out]); rotate-out + scatter 2·E·K·R·C + E·K·C.
"""

from __future__ import annotations

import math

import torch

from nnip_scale.ops.registry import (
    OpSpec,
    check_index,
    check_index_range,
    check_same_device,
    check_same_dtype,
    check_size,
    dispatch,
    register_op,
)

_FALLBACK = {"native": "torch", "pyg": "torch", "cueq": "torch"}  # no other kernels yet


def so2_layout(lmax: int, mmax: int) -> tuple[tuple[int, int], ...]:
    """(ℓ, m) of each edge-frame row in m-major order (module docstring)."""
    if not 0 <= mmax <= lmax:
        raise ValueError(f"so2_layout: need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
    rows = [(ell, 0) for ell in range(lmax + 1)]
    for m in range(1, mmax + 1):
        rows += [(ell, m) for ell in range(m, lmax + 1)]
        rows += [(ell, -m) for ell in range(m, lmax + 1)]
    return tuple(rows)


# ----------------------------------------------------------------------------- torch reference
def _rotate_in_torch(x, wigner, src, dst):
    pair = torch.cat([x.index_select(0, src), x.index_select(0, dst)], dim=-1)  # [E, K, 2C]
    return torch.bmm(wigner, pair)


def _so2_conv_torch(x, radial, w0, wm, lmax, mmax, n_extra):
    E, n0 = x.shape[0], lmax + 1
    x0 = x[:, :n0]
    if radial is not None:
        x0 = x0 * radial[:, :n0]
    c_in = x.shape[2]
    out0 = x0.reshape(E, n0 * c_in) @ w0  # explicit sizes: E may be 0
    c_out = (w0.shape[1] - n_extra) // n0
    parts = [out0[:, : n0 * c_out].reshape(E, n0, c_out)]
    row, rrow = n0, n0
    for m in range(1, mmax + 1):
        n = lmax - m + 1
        pos, neg = x[:, row : row + n], x[:, row + n : row + 2 * n]
        if radial is not None:
            r = radial[:, rrow : rrow + n]
            pos, neg = pos * r, neg * r
        w_re, w_im = wm[m - 1][0], wm[m - 1][1]
        big = torch.cat([torch.cat([w_re, w_im], dim=1), torch.cat([-w_im, w_re], dim=1)], dim=0)
        out = torch.cat([pos.reshape(E, n * c_in), neg.reshape(E, n * c_in)], dim=-1) @ big
        parts.append(out.reshape(E, 2 * n, c_out))
        row, rrow = row + 2 * n, rrow + n
    return torch.cat(parts, dim=1), out0[:, n0 * c_out :]


def _rotate_out_scatter_torch(y, wigner, index, dim_size):
    msg = torch.bmm(wigner.transpose(1, 2), y)  # [E, K, C]
    out = msg.new_zeros((dim_size, *msg.shape[1:]))
    return out.index_add(0, index, msg)


# ----------------------------------------------------------------------------- FLOP formulas
def _dims(t):
    return tuple(int(s) for s in (t.shape if isinstance(t, torch.Tensor) else t))


def rotate_in_flops(x_shape, wigner_shape, src_shape=None, dst_shape=None) -> int:
    E, R, K = _dims(wigner_shape)
    return 2 * E * R * K * 2 * _dims(x_shape)[-1]


def so2_conv_flops(x_shape, radial_shape, w0_shape, wm_shapes, lmax=None, mmax=None, n_extra=0) -> int:
    E = _dims(x_shape)[0]
    total = 2 * E * math.prod(_dims(w0_shape))
    for w in wm_shapes:
        _, fan_in, fan_out = _dims(w)
        total += 2 * E * (2 * fan_in) * (2 * fan_out)
    return total


def rotate_out_scatter_flops(y_shape, wigner_shape, index_shape=None, dim_size=None) -> int:
    E, R, K = _dims(wigner_shape)
    C = _dims(y_shape)[-1]
    return 2 * E * K * R * C + E * K * C


register_op(OpSpec("so2_rotate_in", impls={"torch": _rotate_in_torch}, fallback=_FALLBACK, flops=rotate_in_flops))
register_op(OpSpec("so2_conv", impls={"torch": _so2_conv_torch}, fallback=_FALLBACK, flops=so2_conv_flops))
register_op(
    OpSpec(
        "so2_rotate_out_scatter",
        impls={"torch": _rotate_out_scatter_torch},
        fallback=_FALLBACK,
        flops=rotate_out_scatter_flops,
    )
)


# ----------------------------------------------------------------------------- public API
def _fail(op: str, what: str) -> None:
    raise ValueError(f"nnip_scale.ops.{op}: {what}")


def so2_rotate_in(
    x: torch.Tensor, wigner: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Edge-frame features D_e·[x_src ‖ x_dst]: x [A, K, C], wigner [E, R, K], src/dst int64 [E]
    -> [E, R, 2C] (source channels first)."""
    if x.dim() != 3 or wigner.dim() != 3 or wigner.shape[2] != x.shape[1]:
        _fail("so2_rotate_in", f"expected x [A, K, C] and wigner [E, R, K] with the same K, got "
              f"{tuple(x.shape)} and {tuple(wigner.shape)}")
    if src.shape != (wigner.shape[0],) or dst.shape != src.shape:
        _fail("so2_rotate_in", f"expected src/dst [E={wigner.shape[0]}], got {tuple(src.shape)}, {tuple(dst.shape)}")
    op = "so2_rotate_in"
    check_same_dtype(op, {"x": x, "wigner": wigner})
    for name, t in (("src", src), ("dst", dst)):
        check_index(op, name, t, wigner.shape[0])
    check_same_device(op, {"x": x, "wigner": wigner, "src": src, "dst": dst})
    for name, t in (("src", src), ("dst", dst)):
        check_index_range(op, name, t, x.shape[0], "x.size(0)")
    return dispatch("so2_rotate_in", backend, x)(x, wigner, src, dst)


def so2_conv(
    x: torch.Tensor,
    radial: torch.Tensor | None,
    w0: torch.Tensor,
    wm: list[torch.Tensor],
    lmax: int,
    mmax: int,
    n_extra: int = 0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SO(2) convolution of edge-frame features x [E, R, C_in] (m-major rows of ``so2_layout``).

    ``radial`` [E, R₊, C_in] (R₊ = Σ_{m=0}^{mmax} (lmax−m+1), the m ≥ 0 rows) or None: factors
    multiplied into the inputs, the same for +m and −m. ``w0`` [(lmax+1)·C_in, (lmax+1)·C_out +
    n_extra]; ``wm[m−1]`` [2, n·C_in, n·C_out] (real, imaginary part; n = lmax−m+1).
    Returns (y [E, R, C_out], extra [E, n_extra]): the extra m = 0 outputs are invariant scalars
    (e.g. gates)."""
    rows = so2_layout(lmax, mmax)
    n0 = lmax + 1
    if x.dim() != 3 or x.shape[1] != len(rows):
        _fail("so2_conv", f"expected x [E, {len(rows)}, C_in] for lmax={lmax}, mmax={mmax}, got {tuple(x.shape)}")
    c_in = x.shape[2]
    if w0.dim() != 2 or w0.shape[0] != n0 * c_in or (w0.shape[1] - n_extra) % n0:
        _fail("so2_conv", f"w0 has shape {tuple(w0.shape)}; expected [{n0 * c_in}, {n0}·C_out + {n_extra}]")
    c_out = (w0.shape[1] - n_extra) // n0
    if len(wm) != mmax:
        _fail("so2_conv", f"expected {mmax} m > 0 weights, got {len(wm)}")
    for m, w in enumerate(wm, start=1):
        n = lmax - m + 1
        if tuple(w.shape) != (2, n * c_in, n * c_out):
            _fail("so2_conv", f"wm[{m - 1}] has shape {tuple(w.shape)}; expected (2, {n * c_in}, {n * c_out})")
    n_pos = sum(lmax - m + 1 for m in range(mmax + 1))
    if radial is not None and tuple(radial.shape) != (x.shape[0], n_pos, c_in):
        _fail("so2_conv", f"radial has shape {tuple(radial.shape)}; expected ({x.shape[0]}, {n_pos}, {c_in})")
    tensors = {"x": x, "radial": radial, "w0": w0, **{f"wm[{m}]": w for m, w in enumerate(wm)}}
    check_same_dtype("so2_conv", tensors)
    check_same_device("so2_conv", tensors)
    return dispatch("so2_conv", backend, x)(x, radial, w0, list(wm), lmax, mmax, n_extra)


def so2_rotate_out_scatter(
    y: torch.Tensor, wigner: torch.Tensor, index: torch.Tensor, dim_size: int, backend: str = "auto"
) -> torch.Tensor:
    """Σ_{e: index[e]=i} D_eᵀ·y_e: y [E, R, C], wigner [E, R, K], index int64 [E] -> [dim_size, K, C]
    (``dim_size`` a Python int, no host sync)."""
    if y.dim() != 3 or wigner.dim() != 3 or y.shape[:2] != wigner.shape[:2]:
        _fail("so2_rotate_out_scatter", f"expected y [E, R, C] and wigner [E, R, K] with the same E, R, got "
              f"{tuple(y.shape)} and {tuple(wigner.shape)}")
    op = "so2_rotate_out_scatter"
    check_index(op, "index", index, y.shape[0])
    check_size(op, "dim_size", dim_size)
    check_same_dtype(op, {"y": y, "wigner": wigner})
    check_same_device(op, {"y": y, "wigner": wigner, "index": index})
    check_index_range(op, "index", index, dim_size, "dim_size")
    return dispatch("so2_rotate_out_scatter", backend, y)(y, wigner, index, dim_size)
