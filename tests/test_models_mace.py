"""MACE-specific tests (fp64): ℓ = 2 features, torch-vs-cueq parity of the equivariant ops, the
per-element contraction weights, N, μP shapes, argument errors, the hot-op FLOP estimate and the
initial scale; the generic physics and contract checks (O(3) for both configs — ℓ = 1 and the
invariant ℓ = 0 model — in both force modes, backend parity incl. cueq, …) are in
tests/model_contract.py."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from batch_utils import FakeStats, batch_from_atoms
from model_contract import O3, ModelContract, assert_rel_close, check_symmetry, standard_systems

from nnip_scale.models.mace import MACE
from nnip_scale.ops import flops

CUTOFF = 4.0
ELEMENTS = [1, 6, 8, 13, 29]
CONFIGS = {  # tiny versions of configs/model/mace.yaml and mace_invariant.yaml
    "mace": dict(max_ell=1, sh_max_ell=2, correlation=3),
    "invariant": dict(max_ell=0, sh_max_ell=2, correlation=3),
}


def make_model(config="mace", seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("backend", "torch")
    args = dict(width=4, depth=2, cutoff=CUTOFF, num_radial=6, radial_hidden=16, radial_layers=2,
                readout_hidden=8, elements=ELEMENTS, **CONFIGS.get(config, {}))
    m = MACE(**{**args, **kw}).double()
    m.set_statistics(FakeStats(ELEMENTS, force_rms=0.7, avg_num_neighbors=6.0))
    return m


class TestMACEContract(ModelContract):
    """All features have natural parity, so the group is O(3) ⋉ R³. A direct training step costs
    1.8–3 forwards, not the usual ~3: the products with the constant Clebsch–Gordan/product-basis
    tables need a gradient for one operand only, and the spherical harmonics (positions need no
    gradient) none (measured ≈ 2.2)."""

    symmetry = O3
    variants = CONFIGS
    train_flops_per_forward = (1.8, 3.0)

    def make_model(self, **kw):
        return make_model(**kw)


def test_higher_ell_features_are_equivariant():
    """max_ell 2 with spherical harmonics to ℓ = 3 (the ℓ ≤ 3 Clebsch–Gordan paths)."""
    model = make_model("l2", max_ell=2, sh_max_ell=3, correlation=2, depth=3)
    check_symmetry(model, standard_systems(), O3)


# ----------------------------------------------------------------------------- backend parity
def test_ops_agree_torch_vs_cueq_with_gradients():
    """Each equivariant op (spherical harmonics, channel-wise TP + gather/scatter, symmetric
    contraction) gives the same values and input/weight gradients on both backends (fp64)."""
    pytest.importorskip("cuequivariance_torch")
    from nnip_scale.nn.irreps import channelwise_tp_descriptor, spherical_harmonics_polynomial, symmetric_contraction_polynomial
    from nnip_scale.ops.equivariant import (
        ChannelwiseTPPlan,
        PolynomialPlan,
        channelwise_tp_scatter,
        spherical_harmonics,
        symmetric_contraction,
    )

    g = torch.Generator().manual_seed(0)
    C, A, E = 3, 6, 15
    sh_plan = PolynomialPlan(spherical_harmonics_polynomial(3), weighted=False)
    tp_plan = ChannelwiseTPPlan(channelwise_tp_descriptor((0, 1), 2, 2, C)[0])
    sc_plan = PolynomialPlan(symmetric_contraction_polynomial((0, 1, 2), (0, 1), C, 3), weighted=True)
    vec = torch.randn(E, 3, dtype=torch.float64, generator=g)
    w = torch.randn(E, tp_plan.n_paths, C, dtype=torch.float64, generator=g)
    x = torch.randn(A, 4, C, dtype=torch.float64, generator=g)
    sh9 = torch.randn(E, 9, dtype=torch.float64, generator=g)
    snd, rcv = torch.randint(0, A, (E,), generator=g), torch.randint(0, A, (E,), generator=g)
    m = torch.randn(A, 9, C, dtype=torch.float64, generator=g)
    wsc = torch.randn(3, sc_plan.n_weights, C, dtype=torch.float64, generator=g)
    idx = torch.randint(0, 3, (A,), generator=g)
    cases = [
        (lambda b, v: spherical_harmonics(sh_plan, v[0], b), [vec / vec.norm(dim=1, keepdim=True)]),
        (lambda b, v: channelwise_tp_scatter(tp_plan, v[0], v[1], v[2], snd, rcv, A, b), [w, x, sh9]),
        (lambda b, v: symmetric_contraction(sc_plan, v[0], v[1], idx, b), [m, wsc]),
    ]
    for fn, inputs in cases:
        results = {}
        for backend in ("torch", "cueq"):
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            out = fn(backend, leaves)
            grads = torch.autograd.grad((out * torch.cos(out)).sum(), leaves)
            results[backend] = (out, grads)
        assert float(results["torch"][0].detach().abs().max()) > 0.1
        assert_rel_close(results["cueq"][0], results["torch"][0])
        for gc, gt in zip(results["cueq"][1], results["torch"][1]):
            assert_rel_close(gc, gt)


# ----------------------------------------------------------------------------- contract
def test_contraction_weights_of_every_present_element_are_trained():
    """Beyond the contract's every-parameter check: every row (element) present in the batch."""
    batch = batch_from_atoms(standard_systems(), CUTOFF)  # H C O (molecule), Al Cu (cell): every slot
    for config in CONFIGS:
        for forces in ("direct", "conservative"):
            model = make_model(config, forces=forces)
            out = model(batch)
            (out["energy"].sum() + out["forces"].square().sum()).backward()
            for layer in model.layers:
                assert all(float(layer.contraction_weights.grad[s].abs().sum()) > 0 for s in range(len(ELEMENTS)))


def test_parameter_count_excludes_embedding():
    """N by hand for W channels, one layer, ℓ = 0, Y_0..1, correlation 1 (conservative): 2 TP paths
    (0e⊗0e→0e, 0e⊗1o→1o), one contraction weight (0e→0e) per element."""
    W, R, H, Z = 8, 5, 7, 12
    model = MACE(width=W, depth=1, max_ell=0, sh_max_ell=1, correlation=1, num_radial=R, radial_hidden=H,
                 radial_layers=1, readout_hidden=16, elements=[1, 6, 8], max_atomic_number=Z, forces="conservative")
    linear_up, radial = W * W, R * H + H + H * 2 * W + 2 * W
    linear_message, contraction, linear_post = 2 * W * W, 3 * 1 * W, W * W
    readout = W * 16 + 16 + 16 + 1
    counts = model.count_parameters()
    assert counts["n_params"] == linear_up + radial + linear_message + contraction + linear_post + readout
    assert counts["n_params_total"] == counts["n_params"] + (Z + 1) * W


def test_mup_shapes():
    from nnip_scale.training.mup import classify_parameters

    m = make_model("mace", forces="conservative", compute_stress=True)
    wide = MACE(**{**m.init_config(), "width": 8})
    for (n, p), (n2, p2) in zip(m.named_parameters(), wide.named_parameters()):
        assert n == n2 and p.ndim == p2.ndim
    kinds = classify_parameters(m, base_width=4)
    assert kinds["layers.1.linear_up.weights.0"].kind == "hidden"
    assert kinds["layers.1.linear_message.weights.1"].kind == "hidden"
    assert kinds["readouts.0.weight"].kind == "output"
    assert kinds["layers.0.contraction_weights"].kind == "input"  # [elements, n_weights, C]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="correlation must be in 1..3"):
        MACE(width=4, correlation=4)
    with pytest.raises(ValueError, match="expected 0 <= max_ell <= sh_max_ell"):
        MACE(width=4, max_ell=3, sh_max_ell=2)
    with pytest.raises(ValueError, match="elements must be atomic numbers in 1..10"):
        MACE(width=4, elements=[1, 11], max_atomic_number=10)
    model = MACE(width=4, elements=[1, 6], max_atomic_number=10)
    with pytest.raises(ValueError, match=r"element O \(Z=8\) is not among the model's elements H, C; the training data"):
        model.set_statistics(FakeStats([1, 6, 8]))


def test_forward_flops_match_the_hot_op_estimate():
    """FlopCounterMode sees the einsum/bmm of the torch reference: the forward count lies between
    the registered hot-op formulas plus the dense layers and 1.3× that (the training step's
    1.8–3 forwards is in the contract)."""
    from nnip_scale.training.flops import count_flops

    W, R, H = 8, 6, 16
    model = make_model("mace", width=W, num_radial=R, radial_hidden=H).float()
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in batch_from_atoms(standard_systems(), CUTOFF).items()}
    E, A = batch["n_edges"], batch["n_atoms"]
    hot = flops("spherical_harmonics", model.sh_plan, (E, 3))
    for layer in model.layers:
        P = layer.tp.n_paths
        hot += flops("channelwise_tp_scatter", layer.tp, (E, P, W), (A, layer.tp.dim_x, W), (E, 9))
        hot += flops("symmetric_contraction", layer.contraction, (A, 9, W))
        hot += 2 * E * (R * H + H * H + H * P * W)  # radial MLP
        dense = [layer.linear_up, layer.linear_message, layer.linear_post] + ([layer.skip] if layer.skip else [])
        hot += sum(2 * A * (2 * ell + 1) * w.numel() for lin in dense for ell, w in zip(lin.out_ells, lin.weights))
    with torch.no_grad():
        forward = count_flops(lambda: model(batch))
    assert hot <= forward <= 1.3 * hot, (forward, hot)


# ---------------------------------------------------------------------- initial scale
def test_silu_gain_is_the_inverse_rms_of_silu_on_a_unit_gaussian():
    from scipy import integrate

    from nnip_scale.nn.mlp import SILU_GAIN

    second, _ = integrate.quad(lambda z: (z / (1 + np.exp(-z))) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -40, 40)
    assert SILU_GAIN == pytest.approx(second ** -0.5, rel=1e-6)


def test_unit_init_mlp_preserves_unit_variance():
    from nnip_scale.nn import MLP

    torch.manual_seed(0)
    mlp = MLP([16, 256, 256, 256, 512], unit_init=True).double()
    out = mlp(torch.randn(4096, 16, dtype=torch.float64))
    assert float(out.square().mean().sqrt()) == pytest.approx(1.0, abs=0.15)
    assert all(float(m.bias.abs().max()) == 0.0 for m in mlp if isinstance(m, torch.nn.Linear))


@pytest.mark.slow
@pytest.mark.parametrize("in_ells,out_ells,correlation", [((0, 1, 2), (0, 1), 3), ((0, 1, 2, 3), (0,), 3), ((0, 1), (0, 1), 2)])
def test_contraction_init_gives_unit_variance_outputs(in_ells, out_ells, correlation):
    """Path-normalised contraction weights: with iid N(0, 1) inputs every output component has
    unit variance (the exact Gaussian second moments of the product basis), instead of the
    ~1/n_weights scale of a randn/n_weights init that left MACE's hidden features ~1e-3 at init."""
    from nnip_scale.nn.irreps import irreps_dim, symmetric_contraction_polynomial
    from nnip_scale.ops.equivariant import PolynomialPlan, symmetric_contraction

    torch.manual_seed(0)
    c, n = 16, 20000
    plan = PolynomialPlan(symmetric_contraction_polynomial(in_ells, out_ells, c, correlation), weighted=True)
    std = plan.weight_init_std
    assert std.shape == (plan.n_weights,) and bool((std > 0).all())
    x = torch.randn(n, irreps_dim(in_ells), c, dtype=torch.float64)
    index = torch.zeros(n, dtype=torch.long)
    # independent zero-mean weights: Var(out) = Σ_w s_w² E[p_w(x)²]; each path's second moment by
    # Monte Carlo over x (the weight draw itself would add a χ² spread over the few channels)
    variance = torch.zeros(irreps_dim(out_ells), dtype=torch.float64)
    for k in range(plan.n_weights):
        w = torch.zeros(1, plan.n_weights, c, dtype=torch.float64)
        w[0, k] = std[k]
        variance += symmetric_contraction(plan, x, w, index, backend="torch").square().mean(dim=(0, 2))
    assert torch.allclose(variance, torch.ones_like(variance), atol=0.05), variance


def test_hidden_features_are_order_one_at_init_and_flat_in_width():
    """At init the hidden features after the first interaction are O(1e-2) whatever the width
    (they were ~5e-4 before the contraction and radial MLP were normalised; mace-torch 0.3.16 gives
    1.5e-3–5e-3 on this batch at widths 8–128, growing with width)."""
    mols = [molecule(n) for n in ("CH4", "H2O", "C2H6", "CH3OH")]
    batch = batch_from_atoms(mols, CUTOFF)
    scales = {}
    for width in (8, 32, 128):
        rms = []
        for seed in range(3):
            model = make_model("mace", seed=seed, width=width, sh_max_ell=3, radial_hidden=64, radial_layers=3,
                               readout_hidden=16)
            seen = {}
            model.layers[0].register_forward_hook(lambda mod, inp, out, seen=seen: seen.__setitem__("h", out))
            with torch.no_grad():
                model(batch)
            rms.append(float(seen["h"].square().mean().sqrt()))
        scales[width] = float(np.mean(rms))
    assert all(5e-3 < s < 1.0 for s in scales.values()), scales
    assert max(scales.values()) / min(scales.values()) < 2.0, scales  # measured 1.7 (3 seeds, ~20 atoms)
