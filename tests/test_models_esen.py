"""eSEN-specific tests (fp64): the frame-axis geometry, reflections at depth 1, every lmax, the
direct force head's ℓ = 1 order, N, μP widths, argument errors and the hot-op FLOP estimate; the
generic physics and contract checks (SO(3) in both force modes, …) are in tests/model_contract.py."""

import numpy as np
import pytest
import torch
from ase import Atoms
from batch_utils import FakeStats, batch_from_atoms
from model_contract import MIRROR, SO3, ModelContract, check_broken, check_symmetry, standard_systems

from nnip_scale.models import ESEN
from nnip_scale.ops import flops, so2_layout

CUTOFF = 4.0


def make_model(width=8, depth=2, lmax=2, mmax=1, **kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = ESEN(width=width, depth=depth, lmax=lmax, mmax=mmax, cutoff=CUTOFF, num_radial=6, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


def axis_molecule():
    """A bent C-O-H whose C-O bond lies exactly along z (the edge-frame axis) and O-H along -z."""
    return Atoms("COH", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.25], [0.0, 0.0, 2.2]]) + Atoms(
        "H", positions=[[0.9, 0.3, -0.4]]
    )


class TestESENContract(ModelContract):
    """SO(3) only: the imaginary (±m-mixing) SO(2) weights make reflection-odd couplings, so the
    contract also asserts that mirror images get different energies and forces. The axis molecule
    (edges exactly along the frame axis, and the half turn mapping them onto −z) joins the
    symmetry, permutation, parity and finite-difference checks (atom 0's bond lies on the axis)."""

    symmetry = SO3

    def make_model(self, **kw):
        return make_model(**kw)

    def extra_systems(self):
        return [axis_molecule()]

    def fd_systems(self):
        return [*super().fd_systems(), (axis_molecule(), ((0, 0), (1, 2), (2, 1)))]


def test_reflections_are_not_symmetries_already_at_depth_one():
    """The reflection-odd couplings reach the ℓ ≥ 1 features in the first block (the edge-degree
    embedding gives the m > 0 rows signal); depth 2 is in the contract."""
    check_broken(make_model(depth=1), standard_systems()[0], [MIRROR, -np.eye(3)])


@pytest.mark.parametrize("lmax", [1, 2, 3, 4, 5, 6])
def test_every_lmax_builds_and_is_equivariant(lmax):
    model = make_model(width=4, depth=1, lmax=lmax, mmax=min(lmax, 2))
    check_symmetry(model, [standard_systems()[0], axis_molecule()], SO3)


def test_mmax_zero_is_equivariant():
    check_symmetry(make_model(lmax=2, mmax=0), [axis_molecule(), standard_systems()[1]], SO3)


def test_direct_force_head_reads_the_l1_channels_in_cartesian_order():
    """F_i = σ_F·Σ_c w_c h_i^{ℓ=1,c} with the ℓ = 1 rows (y, z, x) mapped to (x, y, z)."""
    model = make_model()
    captured = {}
    model.norm_out.register_forward_hook(lambda mod, inp, out: captured.update(h=out.detach()))
    forces = model(batch_from_atoms(standard_systems(), CUTOFF))["forces"].detach()
    l1 = captured["h"][:, 1:4]  # [A, 3 (y, z, x), W]
    expected = model.force_scale * torch.einsum("akc,c->ak", l1, model.force_head.weight[0].detach())
    assert float(forces.abs().max()) > 1e-3
    assert float((forces - expected[:, [2, 0, 1]]).abs().max()) < 1e-14
    assert float((forces - expected).abs().max()) > 1e-3  # the order matters


def n_params_expected(W, depth, L, M, R, direct):
    n_pos = sum(L - m + 1 for m in range(M + 1))
    norm = (L + 1) * W + W
    radial = R * W + W + W * n_pos * 2 * W + n_pos * 2 * W
    conv1 = (L + 1) * 2 * W * ((L + 1) * W + L * W) + sum(2 * (L - m + 1) ** 2 * 2 * W * W for m in range(1, M + 1))
    conv2 = ((L + 1) * W) ** 2 + sum(2 * ((L - m + 1) * W) ** 2 for m in range(1, M + 1))
    ffn_in = W * (W + L * W) + W + L * W + L * W * W
    ffn_out = W * W + W + L * W * W
    block = 2 * norm + radial + conv1 + conv2 + ffn_in + ffn_out
    degree_embedding = (R + 2 * W) * W + W + W * (L + 1) * W + (L + 1) * W
    return depth * block + degree_embedding + norm + ((L + 1) * W * W + W + W + 1) + (W if direct else 0)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_parameter_count_excludes_embedding(forces):
    W, depth, L, M, R = 8, 2, 3, 2, 5
    model = ESEN(width=W, depth=depth, lmax=L, mmax=M, num_radial=R, max_atomic_number=10, forces=forces)
    counts = model.count_parameters()
    assert counts["n_params"] == n_params_expected(W, depth, L, M, R, forces == "direct")
    assert counts["n_params_total"] == counts["n_params"] + 11 * W


def test_width_scaling_for_mup():
    m = ESEN(width=12, depth=3, lmax=3, mmax=2, cutoff=4.5, num_radial=6, forces="conservative", compute_stress=True)
    wide = type(m)(**{**m.init_config(), "width": 24})
    shapes = dict(wide.named_parameters())
    for name, p in m.named_parameters():
        if p.ndim >= 2:  # every weight matrix has a dimension that scales with width
            assert shapes[name].shape != p.shape, name
    from nnip_scale.training.mup import classify_parameters

    roles = classify_parameters(m, base_width=6)
    assert roles["layers.0.conv1.w0"].kind == "hidden" and roles["layers.0.conv1.wm.0"].kind == "hidden"
    assert roles["layers.0.radial.0.weight"].kind == "input" and roles["energy_head.2.weight"].kind == "output"


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lmax must be an int in 1..6, got 7"):
        ESEN(lmax=7)
    with pytest.raises(ValueError, match="mmax must be an int in 0..lmax=2, got 3"):
        ESEN(lmax=2, mmax=3)
    with pytest.raises(ValueError, match="ESEN: width and depth must be ints >= 1, got width=8, depth=0"):
        ESEN(width=8, depth=0)


def test_forward_flops_match_the_hot_op_estimate():
    """FlopCounterMode sees the edge ops (bmm/mm/index_add); the forward count is the sum of the
    registered op formulas plus the smaller MLP/Wigner/node terms (the training step's 2.5–3.2
    forwards is in the contract)."""
    from nnip_scale.training.flops import count_flops

    W, L, M, R, depth = 16, 2, 1, 6, 2
    model = make_model(width=W, depth=depth, lmax=L, mmax=M).float()
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms([*standard_systems(), axis_molecule()], CUTOFF).items()}
    E, A = batch["n_edges"], batch["n_atoms"]
    rows, K = len(so2_layout(L, M)), (L + 1) ** 2
    blk = model.layers[0]
    hot = (
        flops("so2_rotate_in", (A, K, W), (E, rows, K), (E,), (E,))
        + flops("so2_conv", (E, rows, 2 * W), None, blk.conv1.w0.shape, [w.shape for w in blk.conv1.wm])
        + flops("so2_conv", (E, rows, W), None, blk.conv2.w0.shape, [w.shape for w in blk.conv2.wm])
        + flops("so2_rotate_out_scatter", (E, rows, W), (E, rows, K), (E,), A)
        + 2 * E * (R * W + W * blk.n_positive * 2 * W)  # radial MLP
    ) * depth
    with torch.no_grad():
        forward = count_flops(lambda: model(batch))
    assert hot <= forward <= 1.25 * hot, (forward, hot)
