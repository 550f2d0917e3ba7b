"""Haar-random rotations of batches: rotation augmentation and the symmetry loss.

The paper's symmetry loss for models without built-in rotational symmetry:

    L_sym = (1/M) · Σ_m L(model(R_m x), R_m y),    total loss = L + λ·L_sym,

with R_m Haar-random rotations (here: an independent rotation per structure and copy). Rotating a
structure by R (3×3, det +1) maps row vectors v -> v·Rᵀ: positions, lattice vectors (cell rows),
forces; the stress tensor maps to R·σ·Rᵀ; energies, edge lists and integer cell shifts are
unchanged (r_ij = r_j − r_i + S·cell rotates with the cell).

Rotations are sampled on the batch's device from a generator seeded with (seed, step, rank,
stream), so a resumed run draws the same rotations, and without host synchronisation. The
rotation arithmetic is element-wise (not matmul), so the FLOP counter of
``nnip_scale.training.flops`` sees only the model's own work: M copies cost M extra steps.
"""

from __future__ import annotations

import torch

from nnip_scale.data import keys as K

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def rotation_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit generator seed from (seed, global step, rank, stream) (splitmix64-style mixing)."""
    x = (int(seed) * _MIX[0] + int(step) * _MIX[1] + int(rank) * _MIX[2] + int(stream)) & (2**64 - 1)
    x ^= x >> 31
    x = (x * _MIX[1]) & (2**64 - 1)
    x ^= x >> 29
    return x & (2**63 - 1)


def haar_rotations(
    n: int, seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``n`` Haar-random proper rotations [n, 3, 3], deterministic given ``seed``.

    QR of a standard Gaussian matrix, columns sign-fixed by the sign of diag(R) (Haar on O(3)),
    then the first column negated where det = −1 (right-multiplying by diag(−1, 1, 1) maps the
    det −1 coset onto SO(3) and preserves Haar measure). Computed in float64, returned in ``dtype``."""
    if n < 0:
        raise ValueError(f"number of rotations must be >= 0, got {n}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    g = torch.randn(n, 3, 3, generator=gen, device=device, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    q = q * sign.unsqueeze(-2)
    det = torch.linalg.det(q)
    flip = torch.ones_like(q[:, 0, :])
    flip[:, 0] = torch.sign(det)
    q = q * flip.unsqueeze(-2)
    return q.to(dtype)


def _rotate_rows(v: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """v [..., 3] row vectors, rot [..., 3, 3] -> v·Rᵀ (element-wise: not counted as matmul FLOPs)."""
    return (rot * v.unsqueeze(-2)).sum(-1)


def rotate_batch(batch: dict, rotations: torch.Tensor) -> dict:
    """A copy of ``batch`` with structure s rotated by ``rotations[s]`` [S, 3, 3] (module docstring).
    Tensors that do not change (energies, edges, shifts, indices) are shared, not copied."""
    n_structures = batch[K.N_STRUCTURES]
    if rotations.shape != (n_structures, 3, 3):
        raise ValueError(
            f"expected one 3×3 rotation per structure, shape ({n_structures}, 3, 3); got {tuple(rotations.shape)}"
        )
    out = dict(batch)
    rot = rotations.to(batch[K.POSITIONS].dtype)
    rot_atom = rot[batch[K.BATCH]]
    out[K.POSITIONS] = _rotate_rows(batch[K.POSITIONS], rot_atom)
    out[K.CELL] = _rotate_rows(batch[K.CELL], rot.to(batch[K.CELL].dtype).unsqueeze(1))
    if K.FORCES in batch:
        out[K.FORCES] = _rotate_rows(batch[K.FORCES], rot_atom.to(batch[K.FORCES].dtype))
    if K.STRESS in batch:
        r = rot.to(batch[K.STRESS].dtype)
        # R σ Rᵀ, element-wise: (R σ)_ik = Σ_j R_ij σ_jk ; (R σ Rᵀ)_il = Σ_k (Rσ)_ik R_lk
        r_sigma = (r.unsqueeze(-1) * batch[K.STRESS].unsqueeze(-3)).sum(-2)
        out[K.STRESS] = (r_sigma.unsqueeze(-2) * r.unsqueeze(-3)).sum(-1)
    return out


def random_rotate_batch(batch: dict, seed: int) -> dict:
    """``rotate_batch`` with fresh Haar rotations drawn from ``seed`` on the batch's device."""
    pos = batch[K.POSITIONS]
    rotations = haar_rotations(batch[K.N_STRUCTURES], seed, device=pos.device, dtype=pos.dtype)
    return rotate_batch(batch, rotations)
