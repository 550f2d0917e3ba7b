"""Real spherical harmonics, Wigner-D matrices and the edge-frame rotation (fp64, ℓ ≤ 6, ≤ 1e-10)."""

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from scipy.spatial.transform import Rotation

from nnip_scale.nn.wigner import edge_rotation, num_components, spherical_harmonics_orthonormal, wigner_d

LMAX = 6
TOL = 1e-10
Z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def rotations(n, seed):
    return torch.as_tensor(Rotation.random(n, random_state=seed).as_matrix())


def units(n, seed):
    v = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 3)))
    return v / v.norm(dim=-1, keepdim=True)


def special_directions():
    """Exactly ±ẑ, 1e-12 off either pole, on the equator, and exactly ±x̂ / ±ŷ."""
    eps = 1e-12
    raw = [
        [0, 0, 1], [0, 0, -1], [eps, 0, 1], [0, -eps, 1], [eps, eps, -1], [-eps, 0, -1],
        [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [1, 1, 0], [1, 0, 1e-14], [1, 0, -1e-14],
    ]
    v = torch.tensor(raw, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def test_harmonics_addition_theorem_and_low_degree_forms():
    """Σ_m Y_ℓm(u)·Y_ℓm(v) = (2ℓ+1)/(4π)·P_ℓ(u·v) for every ℓ ≤ 6 (normalisation and completeness
    of each degree), and the explicit ℓ = 1 order (y, z, x)·sqrt(3/4π)."""
    u, v = units(20, 0), units(20, 1)
    yu, yv = spherical_harmonics_orthonormal(u, LMAX), spherical_harmonics_orthonormal(v, LMAX)
    assert yu.shape == (20, num_components(LMAX))
    cos = (u * v).sum(-1).numpy()
    for ell in range(LMAX + 1):
        sl = slice(ell * ell, (ell + 1) ** 2)
        lhs = (yu[:, sl] * yv[:, sl]).sum(-1).numpy()
        rhs = (2 * ell + 1) / (4 * np.pi) * legendre.legval(cos, [0] * ell + [1])
        np.testing.assert_allclose(lhs, rhs, rtol=0, atol=TOL)
    c1 = np.sqrt(3 / (4 * np.pi))
    np.testing.assert_allclose(yu[:, 1:4].numpy(), c1 * u[:, [1, 2, 0]].numpy(), rtol=0, atol=1e-14)
    # the real harmonics at ẑ: only the m = 0 components are non-zero
    yz = spherical_harmonics_orthonormal(Z, LMAX)
    m0 = [ell * ell + ell for ell in range(LMAX + 1)]
    np.testing.assert_allclose(yz[m0].numpy(), np.sqrt((2 * np.arange(LMAX + 1) + 1) / (4 * np.pi)), atol=1e-14)
    assert float(yz.abs().sum() - yz[m0].abs().sum()) < 1e-14


def test_wigner_is_a_representation_and_orthogonal():
    r1, r2 = rotations(8, 1), rotations(8, 2)
    d1, d2, d12 = wigner_d(r1, LMAX), wigner_d(r2, LMAX), wigner_d(r1 @ r2, LMAX)
    assert float((d12 - d1 @ d2).abs().max()) < TOL
    eye = torch.eye(num_components(LMAX), dtype=torch.float64)
    assert float((d1 @ d1.transpose(-1, -2) - eye).abs().max()) < TOL
    assert float((wigner_d(torch.eye(3, dtype=torch.float64), LMAX) - eye).abs().max()) < TOL
    assert float((wigner_d(r1.transpose(-1, -2), LMAX) - d1.transpose(-1, -2)).abs().max()) < TOL
    # block diagonal exactly: nothing couples different degrees
    for ell in range(LMAX + 1):
        sl = slice(ell * ell, (ell + 1) ** 2)
        block = d1[:, sl, :].clone()
        block[:, :, sl] = 0
        assert float(block.abs().max()) == 0.0
    # ℓ = 1 is the rotation matrix itself in the (y, z, x) order
    perm = [1, 2, 0]
    assert float((d1[:, 1:4, 1:4] - r1[:, perm][:, :, perm]).abs().max()) < 1e-13


def test_wigner_acts_on_harmonics():
    """Y(R x) = D(R) Y(x) (the defining property) for random rotations and directions."""
    rot, x = rotations(10, 3), units(10, 4)
    lhs = spherical_harmonics_orthonormal(torch.einsum("nij,nj->ni", rot, x), LMAX)
    rhs = torch.einsum("nab,nb->na", wigner_d(rot, LMAX), spherical_harmonics_orthonormal(x, LMAX))
    assert float((lhs - rhs).abs().max()) < TOL


def test_edge_rotation_maps_every_direction_to_the_axis():
    u = torch.cat([units(50, 5), special_directions()])
    rot = edge_rotation(u)
    assert torch.isfinite(rot).all()
    eye = torch.eye(3, dtype=torch.float64)
    assert float((rot @ rot.transpose(-1, -2) - eye).abs().max()) < 1e-14
    assert float((torch.linalg.det(rot) - 1).abs().max()) < 1e-14  # proper rotations
    assert float((torch.einsum("nij,nj->ni", rot, u) - Z).abs().max()) < 1e-14
    # D of the edge rotation maps Y(r̂) to Y(ẑ), for every degree
    yd = torch.einsum("nab,nb->na", wigner_d(rot, LMAX), spherical_harmonics_orthonormal(u, LMAX))
    assert float((yd - spherical_harmonics_orthonormal(Z, LMAX)).abs().max()) < TOL


def _wigner_of_vector(v):
    return wigner_d(edge_rotation(v / v.norm(dim=-1, keepdim=True)), LMAX)


def test_edge_wigner_gradients_are_finite_at_and_near_the_poles():
    v = (special_directions() * 1.7).requires_grad_(True)
    weights = torch.randn(len(v), num_components(LMAX), num_components(LMAX), dtype=torch.float64)
    (grad,) = torch.autograd.grad((_wigner_of_vector(v) * weights).sum(), v, create_graph=True)
    assert torch.isfinite(grad).all()
    (hess,) = torch.autograd.grad(grad.square().sum(), v)
    assert torch.isfinite(hess).all()
    # analytic first and second derivatives agree with finite differences exactly at both poles
    # and 1e-12 off them (each point lies inside one smooth chart)
    for k in range(6):
        point = v.detach()[k : k + 1].clone().requires_grad_(True)
        torch.autograd.gradcheck(lambda p: _wigner_of_vector(p)[..., :9, :9], (point,), atol=1e-8)
        torch.autograd.gradgradcheck(lambda p: _wigner_of_vector(p)[..., 1:4, 1:4], (point,), atol=1e-7)


def test_roll_invariant_quantities_are_continuous_across_the_equator():
    """The edge frame's roll jumps where r̂_z changes sign, but anything invariant to the roll
    (here Dᵀ·P_{m=0}·D, the projector onto the edge-axis components) is continuous there."""
    k = num_components(LMAX)
    p0 = torch.zeros(k, k, dtype=torch.float64)
    for ell in range(LMAX + 1):
        p0[ell * ell + ell, ell * ell + ell] = 1.0
    for x, y in [(1.0, 0.0), (0.3, -0.8), (-0.6, 0.6)]:
        v = torch.tensor([[x, y, 1e-13], [x, y, -1e-13]], dtype=torch.float64)
        d = _wigner_of_vector(v)
        proj = d.transpose(-1, -2) @ p0 @ d
        assert float((proj[0] - proj[1]).abs().max()) < 1e-11
        assert float((edge_rotation(v / v.norm(dim=-1, keepdim=True))[0] - edge_rotation(
            v / v.norm(dim=-1, keepdim=True))[1]).abs().max()) > 0.1  # the frames do differ


def test_selected_rows_match_the_full_matrix():
    rot = rotations(4, 9)
    rows = torch.tensor([0, 2, 6, 12, 3, 1])
    assert float((wigner_d(rot, 3, rows=rows) - wigner_d(rot, 3)[:, rows]).abs().max()) == 0.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="lmax must be an int in 0..6, got 7"):
        spherical_harmonics_orthonormal(Z, 7)
    with pytest.raises(ValueError, match=r"expected vectors \[..., 3\], got shape \(4,\)"):
        spherical_harmonics_orthonormal(torch.zeros(4), 2)
    with pytest.raises(ValueError, match=r"expected rotations \[..., 3, 3\], got shape \(2, 3\)"):
        wigner_d(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match="expected unit vectors"):
        edge_rotation(torch.zeros(5, 2))


def test_deprecated_name_gives_the_same_harmonics():
    """``spherical_harmonics`` (the name before issue 14) still works, warns, and is the orthonormal set."""
    from nnip_scale.nn import wigner

    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with pytest.warns(DeprecationWarning, match="spherical_harmonics_orthonormal"):
        old = wigner.spherical_harmonics(x, 3)
    assert torch.equal(old, spherical_harmonics_orthonormal(x, 3))
