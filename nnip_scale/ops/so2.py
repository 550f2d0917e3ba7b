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

Compact Wigner blocks. The Wigner rows of an edge are block diagonal (row (ℓ, m) is nonzero only on
the 2ℓ+1 components of degree ℓ), so ``so2_rotate_in`` and ``so2_rotate_out_scatter`` also take
``wigner`` as [E, NB] with only those entries plus ``block_rows`` [R, 2] = (ℓ_r, offset of row r's
entries) (:func:`so2_block_rows`; entries grouped by degree, NB = Σ_ℓ R_ℓ·(2ℓ+1)), built once per
forward with :func:`nnip_scale.nn.wigner.so2_wigner_blocks` (from rotations, no dense [E, R, K] matrix) or
:func:`so2_compact_wigner` (from dense rows). The native kernels (``nnip_scale.ops.so2_native``,
``csrc/so2/``) take only this form: with a dense ``wigner`` the resolver runs ``torch`` for
``auto`` and an explicit ``native`` raises. The torch reference expands compact blocks to the dense
rows (a scatter, no arithmetic), so both forms give the same numbers and FLOP counts.
``so2_conv`` stays dense matrix products (BLAS) on every backend.
"""

from __future__ import annotations

import functools
import math

import torch

from nnip_scale.ops.registry import (
    OpSpec,
    check_index_range,
    check_same_device,
    check_same_dtype,
    check_size,
    dispatch,
    is_native,
    register_op,
)
from nnip_scale.ops.so2_native import MAX_COMPONENTS, NATIVE_DTYPES, rotate_in_native, rotate_out_scatter_native

_FALLBACK = {"native": "torch", "pyg": "torch", "cueq": "torch"}  # so2_conv: dense matmuls on every backend
_ROTATE_FALLBACK = {"pyg": "torch", "cueq": "torch"}  # the rotations: native kernels, no pyg/cueq ones


def so2_layout(lmax: int, mmax: int) -> tuple[tuple[int, int], ...]:
    """(ℓ, m) of each edge-frame row in m-major order (module docstring)."""
    if not 0 <= mmax <= lmax:
        raise ValueError(f"so2_layout: need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
    rows = [(ell, 0) for ell in range(lmax + 1)]
    for m in range(1, mmax + 1):
        rows += [(ell, m) for ell in range(m, lmax + 1)]
        rows += [(ell, -m) for ell in range(m, lmax + 1)]
    return tuple(rows)


@functools.cache
def _block_rows(lmax: int, mmax: int) -> tuple[tuple[int, int], ...]:
    rows = so2_layout(lmax, mmax)
    offsets, off = {}, 0
    for ell in range(lmax + 1):  # entries grouped by degree, rows of one degree in layout order
        for r, (l_r, _) in enumerate(rows):
            if l_r == ell:
                offsets[r] = off
                off += 2 * ell + 1
    return tuple((ell, offsets[r]) for r, (ell, _) in enumerate(rows))


def so2_block_rows(lmax: int, mmax: int, device=None) -> torch.Tensor:
    """int64 [R, 2]: (ℓ_r, offset of row r's 2ℓ_r+1 entries in a compact Wigner row) for the rows of
    ``so2_layout(lmax, mmax)``; the entries are grouped by degree (all rows of degree 0, then 1, …),
    so the m = 0 rows are ``so2_block_rows(lmax, mmax)[:lmax + 1]`` of the same compact tensor."""
    return torch.tensor(_block_rows(lmax, mmax), dtype=torch.int64, device=device)


def so2_num_blocks(lmax: int, mmax: int) -> int:
    """NB, the compact Wigner entries per edge: Σ_ℓ R_ℓ·(2ℓ+1)."""
    return sum(2 * ell + 1 for ell, _ in so2_layout(lmax, mmax))


def so2_compact_wigner(wigner: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """The compact blocks [E, NB] (see :func:`so2_block_rows`) of dense edge-frame Wigner rows
    [E, R, K] of ``so2_layout(lmax, mmax)`` (a gather; the off-block entries, zero for Wigner-D
    rows, are dropped)."""
    K = (lmax + 1) ** 2
    n_rows = len(so2_layout(lmax, mmax))
    if wigner.dim() != 3 or tuple(wigner.shape[1:]) != (n_rows, K):
        _fail("so2_compact_wigner", f"expected wigner [E, {n_rows}, {K}] for lmax={lmax}, mmax={mmax}, "
              f"got {tuple(wigner.shape)}")
    flat = [r * K + ell * ell + j for r, (ell, _) in sorted(enumerate(_block_rows(lmax, mmax)), key=lambda t: t[1][1])
            for j in range(2 * ell + 1)]
    index = torch.tensor(flat, dtype=torch.int64, device=wigner.device)
    return wigner.flatten(1).index_select(1, index)


def _dense_from_blocks(wigner: torch.Tensor, block_rows: torch.Tensor, n_components: int) -> torch.Tensor:
    """Dense rows [E, R, K] from compact blocks [E, NB] (a scatter without arithmetic: entries that no
    row uses go to padding columns that are cut off), so the torch reference runs the dense bmm."""
    E, R = wigner.shape[0], block_rows.shape[0]
    width = 2 * math.isqrt(n_components) - 1  # 2ℓ+1 of the largest degree K components hold
    ell, off = block_rows[:, 0:1], block_rows[:, 1:2]
    j = torch.arange(width, device=wigner.device)
    valid = j < 2 * ell + 1  # [R, width]
    src = torch.where(valid, off + j, 0).clamp(max=max(wigner.shape[1] - 1, 0))
    col = torch.where(valid, ell * ell + j, n_components + j)
    vals = wigner[:, src.reshape(-1)].reshape(E, R, width)
    dense = wigner.new_zeros(E, R, n_components + width)
    dense = dense.scatter(2, col.unsqueeze(0).expand(E, R, width), vals)
    return dense[..., :n_components]


# ----------------------------------------------------------------------------- torch reference
def _rotate_in_torch(x, wigner, src, dst, block_rows=None):
    if block_rows is not None:
        wigner = _dense_from_blocks(wigner, block_rows, x.shape[1])
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


def _rotate_out_scatter_torch(y, wigner, index, dim_size, block_rows=None, n_components=None):
    if block_rows is not None:
        wigner = _dense_from_blocks(wigner, block_rows, n_components)
    msg = torch.bmm(wigner.transpose(1, 2), y)  # [E, K, C]
    out = msg.new_zeros((dim_size, *msg.shape[1:]))
    return out.index_add(0, index, msg)


# ----------------------------------------------------------------------------- FLOP formulas
def _dims(t):
    return tuple(int(s) for s in (t.shape if isinstance(t, torch.Tensor) else t))


def rotate_in_flops(x_shape, wigner_shape, src_shape=None, dst_shape=None, block_rows_shape=None) -> int:
    if block_rows_shape is not None:  # compact blocks: the same count as the dense rows they stand for
        E, R, K = _dims(wigner_shape)[0], _dims(block_rows_shape)[0], _dims(x_shape)[1]
    else:
        E, R, K = _dims(wigner_shape)
    return 2 * E * R * K * 2 * _dims(x_shape)[-1]


def so2_conv_flops(x_shape, radial_shape, w0_shape, wm_shapes, lmax=None, mmax=None, n_extra=0) -> int:
    E = _dims(x_shape)[0]
    total = 2 * E * math.prod(_dims(w0_shape))
    for w in wm_shapes:
        _, fan_in, fan_out = _dims(w)
        total += 2 * E * (2 * fan_in) * (2 * fan_out)
    return total


def rotate_out_scatter_flops(
    y_shape, wigner_shape, index_shape=None, dim_size=None, block_rows_shape=None, n_components=None
) -> int:
    if block_rows_shape is not None:
        E, R, K = _dims(wigner_shape)[0], _dims(block_rows_shape)[0], int(n_components)
    else:
        E, R, K = _dims(wigner_shape)
    C = _dims(y_shape)[-1]
    return 2 * E * K * R * C + E * K * C


def _native_limit(compact: bool = True, components: int = 0) -> str | None:
    """Why the native rotations cannot serve a call (None if they can)."""
    if not compact:
        return ("the native kernels take the compact per-degree Wigner blocks (pass block_rows; see "
                "nn.wigner.so2_wigner_blocks / so2_compact_wigner); a dense [E, R, K] wigner runs on torch")
    if components > MAX_COMPONENTS:
        return f"{components} components > {MAX_COMPONENTS} (ℓmax = 6): the native kernels are tested for ℓmax ≤ 6"
    return None


def _rotation_spec(name: str, torch_impl, native_impl, flops) -> OpSpec:
    """The spec of a rotation op: both rotations share one native policy (CPU kernels for
    ``NATIVE_DTYPES``, the limits of :func:`_native_limit`, no pyg/cueq kernels)."""
    return OpSpec(
        name,
        impls={"torch": torch_impl, "native": native_impl},
        native_dtypes={"cpu": NATIVE_DTYPES},
        fallback=_ROTATE_FALLBACK,
        flops=flops,
        limits={"native": _native_limit},
    )


register_op(_rotation_spec("so2_rotate_in", _rotate_in_torch, rotate_in_native, rotate_in_flops))
register_op(OpSpec("so2_conv", impls={"torch": _so2_conv_torch}, fallback=_FALLBACK, flops=so2_conv_flops))
register_op(
    _rotation_spec("so2_rotate_out_scatter", _rotate_out_scatter_torch, rotate_out_scatter_native, rotate_out_scatter_flops)
)


# ----------------------------------------------------------------------------- public API
def _fail(op: str, what: str) -> None:
    raise ValueError(f"nnip_scale.ops.{op}: {what}")


def _check_compact(op: str, wigner, block_rows, n_edges: int, n_components: int) -> None:
    if block_rows.dim() != 2 or block_rows.shape[1] != 2 or block_rows.dtype != torch.int64:
        _fail(op, f"expected block_rows int64 [R, 2] (so2_block_rows), got {tuple(block_rows.shape)} {block_rows.dtype}")
    if wigner.dim() != 2 or wigner.shape[0] != n_edges:
        _fail(op, f"expected compact wigner [E={n_edges}, NB] with block_rows, got {tuple(wigner.shape)}")
    if block_rows.device != wigner.device:
        _fail(op, f"block_rows is on {block_rows.device} but wigner is on {wigner.device}")
    # the layout (ℓmax, mmax) that R rows of K = (ℓmax+1)² components stand for, and its NB entries per
    # edge: shapes only (no host sync), so blocks that do not match the table fail here, on every backend
    lmax = math.isqrt(n_components) - 1
    mmax = next((m for m in range(lmax + 1) if len(so2_layout(lmax, m)) == block_rows.shape[0]), None)
    if mmax is None:
        _fail(op, f"block_rows has {block_rows.shape[0]} rows, which is no so2_layout(lmax={lmax}, mmax) "
              f"for K = {n_components} components")
    # (the rows may be a subset of a larger table's, e.g. its m = 0 rows: at least that table's NB)
    if wigner.shape[1] < so2_num_blocks(lmax, mmax):
        _fail(op, f"expected compact wigner [E, NB >= {so2_num_blocks(lmax, mmax)}] for lmax={lmax}, mmax={mmax} "
              f"(block_rows), got {tuple(wigner.shape)}")
    if block_rows.device.type == "cpu" and not torch.compiler.is_compiling() and block_rows.numel():
        ell, off = block_rows[:, 0], block_rows[:, 1]
        if bool((ell < 0).any() | (ell > lmax).any() | (off < 0).any() | (off + 2 * ell + 1 > wigner.shape[1]).any()):
            _fail(op, f"block_rows has rows outside ℓ in [0, {lmax}] or outside the compact wigner's "
                  f"{wigner.shape[1]} entries per edge")


_SQUARES = tuple((ell + 1) ** 2 for ell in range(64))


def _components(op: str, n) -> int:
    """K = (ℓmax+1)² as a Python int (also for a symbolic size under torch.compile: compared, not computed)."""
    for k in _SQUARES:
        if n == k:
            return k
    _fail(op, f"expected (ℓmax+1)² atom components, got {n}")


def _check_features(op: str, name: str, t, wigner, index_names, indices) -> None:
    if t.dtype != wigner.dtype:
        _fail(op, f"wigner has dtype {wigner.dtype} but {name} has {t.dtype}")
    for iname, idx in zip(index_names, indices):
        if idx.dtype != torch.int64:
            _fail(op, f"{iname} must be an int64 tensor, got {idx.dtype}")
        if idx.device != t.device or wigner.device != t.device:
            _fail(op, f"{iname} is on {idx.device} and wigner on {wigner.device} but {name} is on {t.device}")


def so2_rotate_in(
    x: torch.Tensor,
    wigner: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    backend: str = "auto",
    block_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Edge-frame features D_e·[x_src ‖ x_dst]: x [A, K, C], src/dst int64 [E] -> [E, R, 2C] (source
    channels first). ``wigner``: the dense rows [E, R, K], or with ``block_rows`` [R, 2]
    (:func:`so2_block_rows`) their compact blocks [E, NB] (module docstring), the form the native
    kernels take."""
    op = "so2_rotate_in"
    if x.dim() != 3:
        _fail(op, f"expected x [A, K, C], got {tuple(x.shape)}")
    if block_rows is None:
        if wigner.dim() != 3 or wigner.shape[2] != x.shape[1]:
            _fail(op, f"expected x [A, K, C] and wigner [E, R, K] with the same K, got "
                  f"{tuple(x.shape)} and {tuple(wigner.shape)}")
        components = 0  # not used: dense rows run on torch
    else:
        components = _components(op, x.shape[1])
        _check_compact(op, wigner, block_rows, wigner.shape[0], components)
    if src.shape != (wigner.shape[0],) or dst.shape != src.shape:
        _fail(op, f"expected src/dst [E={wigner.shape[0]}], got {tuple(src.shape)}, {tuple(dst.shape)}")
    _check_features(op, "x", x, wigner, ("src", "dst"), (src, dst))
    impl = dispatch(op, backend, x, compact=block_rows is not None, components=components)
    if not is_native(op, impl):  # the native kernels range-check themselves
        for name, t in (("src", src), ("dst", dst)):
            check_index_range(op, name, t, x.shape[0], "x.size(0)")
    return impl(x, wigner, src, dst, block_rows)


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
    y: torch.Tensor,
    wigner: torch.Tensor,
    index: torch.Tensor,
    dim_size: int,
    backend: str = "auto",
    block_rows: torch.Tensor | None = None,
    n_components: int | None = None,
) -> torch.Tensor:
    """Σ_{e: index[e]=i} D_eᵀ·y_e: y [E, R, C], index int64 [E] -> [dim_size, K, C] (``dim_size`` a
    Python int, no host sync). ``wigner``: dense rows [E, R, K], or with ``block_rows`` [R, 2] and
    ``n_components`` (K, a Python int) their compact blocks [E, NB] (module docstring)."""
    op = "so2_rotate_out_scatter"
    if isinstance(dim_size, torch.Tensor):
        raise TypeError(f"nnip_scale.ops.{op}: dim_size must be a Python int, not a tensor")
    if block_rows is None:
        if y.dim() != 3 or wigner.dim() != 3 or y.shape[:2] != wigner.shape[:2]:
            _fail(op, f"expected y [E, R, C] and wigner [E, R, K] with the same E, R, got "
                  f"{tuple(y.shape)} and {tuple(wigner.shape)}")
        n_components = 0  # not used: dense rows run on torch
    else:
        if not isinstance(n_components, (int, torch.SymInt)) or isinstance(n_components, bool):
            raise TypeError(f"nnip_scale.ops.{op}: n_components must be a Python int with block_rows, "
                            f"got {n_components!r}")
        if y.dim() != 3 or y.shape[1] != block_rows.shape[0]:
            _fail(op, f"expected y [E, R={block_rows.shape[0]}, C] (R = block_rows.size(0)), got {tuple(y.shape)}")
        n_components = _components(op, n_components)
        _check_compact(op, wigner, block_rows, y.shape[0], n_components)
    if index.shape != (y.shape[0],) or index.dtype != torch.int64:
        _fail(op, f"expected index int64 [{y.shape[0]}], got {tuple(index.shape)} {index.dtype}")
    _check_features(op, "y", y, wigner, ("index",), (index,))
    check_size(op, "dim_size", dim_size)
    impl = dispatch(op, backend, y, compact=block_rows is not None, components=n_components)
    if not is_native(op, impl):  # the native kernels range-check themselves
        check_index_range(op, "index", index, dim_size, "dim_size")
    if block_rows is None:
        return impl(y, wigner, index, dim_size)
    return impl(y, wigner, index, dim_size, block_rows, n_components)
