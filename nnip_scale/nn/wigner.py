"""Real spherical harmonics, Wigner-D matrices of real rotations, and the edge-frame rotation.

Conventions (used by every spherical-tensor model here):
- Real, orthonormal spherical harmonics Y_ℓm (∫ Y_ℓm Y_ℓ'm' dΩ = δδ), **no** Condon–Shortley
  phase. A feature of degrees 0..L has K = (L+1)² components in the order ℓ = 0..L, m = −ℓ..ℓ;
  component (ℓ, m) sits at index ℓ² + ℓ + m. For ℓ = 1 that is (y, z, x)·sqrt(3/4π).
- m is the azimuthal index about the **z** axis: for m > 0, Y_ℓ,m ∝ Re (x + iy)^m and
  Y_ℓ,−m ∝ Im (x + iy)^m (times a polynomial in z and r²), so a rotation by φ about z turns each
  pair (Y_ℓ,m, Y_ℓ,−m) by the angle mφ (a complex factor e^{imφ} on Y_ℓ,m + i·Y_ℓ,−m).
- D(R) is defined by Y(R x) = D(R) Y(x) (block diagonal, orthogonal, D(R1 R2) = D(R1) D(R2)).

The Wigner-D construction uses the exact action on polynomials: Y_ℓ(R x) is a polynomial of
degree ℓ in the entries of R, and for fixed sample points x_k (a Fibonacci set) with
A_ℓ = Y_ℓ(X) of full column rank, Y_ℓ(R X) = A_ℓ D_ℓ(R)ᵀ gives D_ℓ(R) = Y_ℓ(R X)ᵀ pinv(A_ℓ)ᵀ.
No angles appear, so D is smooth (polynomial) in R everywhere, deterministic, differentiable
to any order, and exact to rounding in fp64 (the pseudo-inverse is computed once in fp64).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from nnip_scale.ops.so2 import so2_layout

MAX_DEGREE = 6


def num_components(lmax: int) -> int:
    """K = (lmax + 1)² components of a feature with degrees 0..lmax."""
    return (lmax + 1) ** 2


def _check_lmax(lmax: int) -> None:
    if not isinstance(lmax, int) or not 0 <= lmax <= MAX_DEGREE:
        raise ValueError(f"lmax must be an int in 0..{MAX_DEGREE}, got {lmax!r}")


def _norms(lmax: int) -> list[list[float]]:
    """Orthonormalisation constants N_ℓm (m ≥ 0) of the real harmonics (module docstring)."""
    out = []
    for ell in range(lmax + 1):
        row = []
        for m in range(ell + 1):
            c = (2 * ell + 1) / (4 * math.pi) * math.factorial(ell - m) / math.factorial(ell + m)
            row.append(math.sqrt(c if m == 0 else 2 * c))
        out.append(row)
    return out


def spherical_harmonics_orthonormal(vec: torch.Tensor, lmax: int) -> torch.Tensor:
    """Real solid harmonics r^ℓ·Y_ℓm(r̂) of ``vec`` [..., 3] -> [..., (lmax+1)²], in this module's
    convention: orthonormal (∫ Y² dΩ = 1), no Condon–Shortley phase, (ℓ, m)-ordered (index ℓ² + ℓ + m;
    ℓ = 1 is (y, z, x)·sqrt(3/4π)). The eSEN features and the Wigner-D use it; MACE's harmonics are
    cuequivariance's, component-normalised with ℓ = 1 = (x, y, z) (the op ``nnip_scale.ops.spherical_harmonics``).

    Homogeneous polynomials of degree ℓ in (x, y, z), so for unit vectors they are the
    orthonormal spherical harmonics Y_ℓm(r̂); finite and smooth everywhere (no angles)."""
    _check_lmax(lmax)
    if vec.shape[-1] != 3:
        raise ValueError(f"spherical_harmonics_orthonormal: expected vectors [..., 3], got shape {tuple(vec.shape)}")
    x, y, z = vec.unbind(-1)
    r2 = x * x + y * y + z * z
    cos_m, sin_m = [torch.ones_like(x)], [torch.zeros_like(x)]  # Re/Im of (x + iy)^m
    for _ in range(lmax):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(x * c - y * s)
        sin_m.append(x * s + y * c)
    # q[ell][m]: the associated-Legendre part, a polynomial in z and r² (no Condon–Shortley phase)
    q = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    for m in range(lmax + 1):
        q[m][m] = torch.full_like(x, float(math.prod(range(2 * m - 1, 0, -2))))  # (2m−1)!!
        if m + 1 <= lmax:
            q[m + 1][m] = (2 * m + 1) * z * q[m][m]
        for ell in range(m + 2, lmax + 1):
            q[ell][m] = ((2 * ell - 1) * z * q[ell - 1][m] - (ell + m - 1) * r2 * q[ell - 2][m]) / (ell - m)
    norms = _norms(lmax)
    comps = []
    for ell in range(lmax + 1):
        for m in range(-ell, ell + 1):
            a = abs(m)
            part = sin_m[a] if m < 0 else cos_m[a]
            comps.append(norms[ell][a] * q[ell][a] * part)
    return torch.stack(comps, dim=-1)


def spherical_harmonics(vec: torch.Tensor, lmax: int) -> torch.Tensor:
    """Deprecated name of :func:`spherical_harmonics_orthonormal` (before issue 14); same values."""
    warnings.warn("nnip_scale.nn.wigner.spherical_harmonics is deprecated: use spherical_harmonics_orthonormal "
                  "(the name says its convention)", DeprecationWarning, stacklevel=2)
    return spherical_harmonics_orthonormal(vec, lmax)


def _fibonacci_points(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


@functools.cache
def _projector_fp64(lmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # numpy, computed once
    """Sample points X [P,3], P_full [P,K] (column b holds pinv(A_ℓ(b))ᵀ) and the block mask [K,K]."""
    n_points = 4 * lmax + 4
    points = _fibonacci_points(n_points)
    sh = spherical_harmonics_orthonormal(torch.as_tensor(points, dtype=torch.float64), lmax).numpy()
    K = num_components(lmax)
    proj = np.zeros((n_points, K))
    mask = np.zeros((K, K))
    for ell in range(lmax + 1):
        sl = slice(ell * ell, (ell + 1) ** 2)
        a = sh[:, sl]
        if np.linalg.cond(a) > 1e3:
            raise RuntimeError(f"Wigner-D sample points are ill-conditioned at ℓ={ell}")  # never for ℓ ≤ 6
        proj[:, sl] = np.linalg.pinv(a).T
        mask[sl, sl] = 1.0
    return points, proj, mask


def wigner_projector(lmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The constants of :func:`wigner_d` as fp64 tensors (points [P,3], projector [P,K], block
    mask [K,K]) on the current default device, for a model to keep as (non-persistent) buffers so
    that compiled graphs see them as inputs rather than tracing their construction."""
    _check_lmax(lmax)
    return tuple(torch.tensor(a, dtype=torch.float64) for a in _projector_fp64(lmax))  # copies


_CACHE: dict = {}


def wigner_d(
    rotation: torch.Tensor,
    lmax: int,
    rows: torch.Tensor | None = None,
    projector: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Block-diagonal Wigner-D matrices of rotations [..., 3, 3] -> [..., K, K] (K = (lmax+1)²).

    ``rows`` (int64 [R], optional) keeps only those rows: [..., R, K] (e.g. the |m| ≤ mmax rows
    of the edge frame; cheaper than forming the full matrix and slicing). ``projector``: the
    tensors of :func:`wigner_projector` (any dtype/device; cast here); default: cached copies."""
    _check_lmax(lmax)
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"wigner_d: expected rotations [..., 3, 3], got shape {tuple(rotation.shape)}")
    if projector is None:
        key = (lmax, rotation.device, rotation.dtype)
        if key not in _CACHE:
            _CACHE[key] = tuple(t.to(rotation.device, rotation.dtype) for t in wigner_projector(lmax))
        projector = _CACHE[key]
    points, proj, mask = (t.to(rotation.dtype) for t in projector)
    rotated = torch.einsum("...ij,pj->...pi", rotation, points)  # R x_p  [..., P, 3]
    sh = spherical_harmonics_orthonormal(rotated, lmax)  # [..., P, K]
    if rows is not None:
        sh, mask = sh.index_select(-1, rows), mask.index_select(0, rows)
    return torch.einsum("...pa,pb->...ab", sh, proj) * mask


def edge_rotation(unit: torch.Tensor) -> torch.Tensor:
    """Rotations R [..., 3, 3] with R·r̂ = ẑ for unit vectors r̂ [..., 3], smooth and finite everywhere.

    Upper hemisphere (r̂_z ≥ 0): the minimal rotation taking r̂ to ẑ (Rodrigues, denominator
    1 + r̂_z ≥ 1). Lower hemisphere: first a half turn about x ((x, y, z) → (x, −y, −z)), then
    the same formula. Denominators never drop below 1, so values and gradients are finite at and
    near both poles. The roll about ẑ this choice fixes jumps at the equator; models built on it
    are invariant to that roll (SO(2)-equivariant edge operations), so outputs stay smooth."""
    if unit.shape[-1] != 3:
        raise ValueError(f"edge_rotation: expected unit vectors [..., 3], got shape {tuple(unit.shape)}")
    ux, uy, uz = unit.unbind(-1)
    s = torch.where(uz >= 0, torch.ones_like(uz), -torch.ones_like(uz))
    a, b, c = ux, s * uy, s * uz
    inv = 1.0 / (1.0 + c)
    r0 = torch.stack([1.0 - a * a * inv, -a * b * inv, -a], dim=-1)
    r1 = torch.stack([-a * b * inv, 1.0 - b * b * inv, -b], dim=-1)
    r2 = torch.stack([a, b, c], dim=-1)
    minimal = torch.stack([r0, r1, r2], dim=-2)
    col = torch.stack([torch.ones_like(s), s, s], dim=-1).unsqueeze(-2)  # R = minimal · diag(1, s, s)
    return minimal * col


def so2_wigner_blocks(
    rotation: torch.Tensor,
    lmax: int,
    mmax: int,
    projector: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Compact Wigner blocks [E, NB] of rotations [E, 3, 3] for the rows of ``so2_layout(lmax, mmax)`` (the layout the
    native edge rotations of ``nnip_scale.ops.so2`` take with ``so2_block_rows``),
    built per degree without the dense [E, R, K] matrix (the construction of
    :func:`wigner_d`: D_ℓ(R) = Y_ℓ(R X)ᵀ pinv(A_ℓ)ᵀ, restricted to the kept rows;
    the same numbers to rounding). ``projector``: the tensors of ``wigner_projector(lmax)``."""
    if rotation.dim() != 3 or tuple(rotation.shape[1:]) != (3, 3):
        raise ValueError(f"so2_wigner_blocks: expected rotations [E, 3, 3], got {tuple(rotation.shape)}")
    points, proj, _ = wigner_projector(lmax) if projector is None else projector
    points, proj = points.to(rotation), proj.to(rotation)
    rotated = torch.einsum("eij,pj->epi", rotation, points)  # R x_p  [E, P, 3]
    sh = spherical_harmonics_orthonormal(rotated, lmax)  # [E, P, K]
    rows = so2_layout(lmax, mmax)
    parts = []
    for ell in range(lmax + 1):
        keep = [ell * ell + ell + m for l_r, m in rows if l_r == ell]
        sh_l = sh[..., keep[0]:keep[0] + 1] if len(keep) == 1 else sh[..., keep]  # [E, P, R_ℓ]
        block = torch.einsum("epr,pb->erb", sh_l, proj[:, ell * ell:(ell + 1) ** 2])  # [E, R_ℓ, 2ℓ+1]
        parts.append(block.flatten(1))
    return torch.cat(parts, dim=1)
