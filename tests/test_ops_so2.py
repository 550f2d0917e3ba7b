"""The eSEN edge ops (nnip_scale.ops.so2): the m-major layout, roll equivariance of the SO(2)
convolution and the rotate-in/rotate-out adjoint. The generic checks (gradcheck/gradgradcheck,
compile, FLOP formulas against FlopCounterMode, empty inputs, bad input, the declared substitutions
of the backends without kernels) run for every op in ``tests/test_ops_harness.py``."""

import math

import pytest
import torch

from nnip_scale.nn.wigner import edge_rotation, num_components, wigner_d
from nnip_scale.ops import so2_conv, so2_layout, so2_rotate_in, so2_rotate_out_scatter

LMAX, MMAX, C_IN, C_OUT, E, A = 3, 2, 4, 5, 7, 4


def rows_of(lmax, mmax):
    return torch.tensor([ell * ell + ell + m for ell, m in so2_layout(lmax, mmax)])


def weights(lmax, mmax, c_in, c_out, n_extra, gen):
    n0 = lmax + 1
    w0 = torch.randn(n0 * c_in, n0 * c_out + n_extra, generator=gen, dtype=torch.float64)
    wm = [torch.randn(2, (lmax - m + 1) * c_in, (lmax - m + 1) * c_out, generator=gen, dtype=torch.float64)
          for m in range(1, mmax + 1)]
    return w0, wm


def z_rotation(phi):
    c, s = math.cos(phi), math.sin(phi)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_layout_is_m_major():
    assert so2_layout(2, 1) == ((0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (1, -1), (2, -1))
    assert len(so2_layout(6, 6)) == num_components(6)
    with pytest.raises(ValueError, match="need 0 <= mmax <= lmax, got lmax=2, mmax=3"):
        so2_layout(2, 3)


@pytest.mark.parametrize("mmax", [0, 1, 2, 3])
def test_so2_conv_commutes_with_rotations_about_the_edge_axis(mmax):
    """conv(D_roll·x) = D_roll·conv(x) for any roll angle; the extra outputs are roll invariant."""
    gen = torch.Generator().manual_seed(mmax)
    rows = rows_of(LMAX, mmax)
    x = torch.randn(E, len(rows), C_IN, generator=gen, dtype=torch.float64)
    n_pos = sum(1 for _, m in so2_layout(LMAX, mmax) if m >= 0)
    radial = torch.randn(E, n_pos, C_IN, generator=gen, dtype=torch.float64)
    w0, wm = weights(LMAX, mmax, C_IN, C_OUT, 3, gen)
    roll = wigner_d(z_rotation(0.83), LMAX)[rows][:, rows]  # closed on the kept rows
    y, extra = so2_conv(x, radial, w0, wm, LMAX, mmax, n_extra=3)
    y_r, extra_r = so2_conv(torch.einsum("ab,ebc->eac", roll, x), radial, w0, wm, LMAX, mmax, n_extra=3)
    assert y.shape == (E, len(rows), C_OUT) and extra.shape == (E, 3)
    assert float((y_r - torch.einsum("ab,ebc->eac", roll, y)).abs().max()) < 1e-12 * float(y.abs().max())
    assert float((extra_r - extra).abs().max()) < 1e-12 * float(extra.abs().max())
    if mmax > 0:  # the complex pairing mixes +m and -m: a real-only map would not commute
        assert float(wm[0][1].abs().max()) > 0


def test_rotate_out_scatter_is_the_adjoint_of_rotate_in():
    """⟨rotate_in(x), y⟩ = ⟨x, rotate_out_scatter(y)⟩ on the source half, and rotating in and back
    out with all |m| kept restores the features exactly (D orthogonal)."""
    gen = torch.Generator().manual_seed(0)
    K = num_components(LMAX)
    vec = torch.randn(E, 3, generator=gen, dtype=torch.float64)
    full_rows = rows_of(LMAX, LMAX)
    wig = wigner_d(edge_rotation(vec / vec.norm(dim=-1, keepdim=True)), LMAX, rows=full_rows)
    x = torch.randn(A, K, C_IN, generator=gen, dtype=torch.float64)
    src = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    dst = torch.tensor([1, 2, 3, 0, 2, 3, 0])
    e = so2_rotate_in(x, wig, src, dst)
    assert e.shape == (E, len(full_rows), 2 * C_IN)
    back = so2_rotate_out_scatter(e[..., :C_IN], wig, torch.arange(E), E)
    assert float((back - x[src]).abs().max()) < 1e-13
    y = torch.randn(E, len(full_rows), C_IN, generator=gen, dtype=torch.float64)
    lhs = (e[..., :C_IN] * y).sum()
    rhs = (x * so2_rotate_out_scatter(y, wig, src, A)).sum()
    assert abs(float(lhs - rhs)) < 1e-12 * abs(float(lhs))
