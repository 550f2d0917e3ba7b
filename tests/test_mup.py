"""μP: shape-based classification, LR groups, the one-time output init, checkpoint restore, and
the coordinate check (activation/update scales flat across width with μP, growing without)."""

import importlib

import numpy as np
import pytest
import torch
from batch_utils import FakeStats
from torch import nn

from nnip_scale.models import MCEGNN, MPNN
from nnip_scale.models.base import PotentialModel
from nnip_scale.training import NNIPModule
from nnip_scale.training.loss import EnergyForceLoss
from nnip_scale.training.mup import apply_mup_init, classify_parameters, lr_scales
from nnip_scale.training.optim import build_optimizer, parameter_groups

CUTOFF = 4.0
ELEMENTS = (1, 6, 7, 8)


def _optional_models():
    """MACE / ESEN when their modules exist (other parts of the project add them)."""
    out = []
    for module, name in (("nnip_scale.models.mace", "MACE"), ("nnip_scale.models.esen", "ESEN")):
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return out


MODELS = [MPNN, MCEGNN, *_optional_models()]


@pytest.fixture(scope="module")
def batch(four_molecule_batch):
    return four_molecule_batch


def build(cls, width, seed=0):
    torch.manual_seed(seed)
    extra = {"elements": list(ELEMENTS)} if cls.__name__ == "MACE" else {}
    model = cls(width=width, depth=2, cutoff=CUTOFF, **extra).double()
    return model


# ---------------------------------------------------------------------- classification
def test_mpnn_classification_and_multipliers():
    w, base = 128, 32
    roles = classify_parameters(MPNN(width=w, depth=2, num_radial=8), base)
    assert roles["embedding.weight"].kind == "input" and roles["embedding.weight"].lr_scale == 1.0
    msg = roles["layers.0.message.0.weight"]  # [w, 2w + 3 + 8]: both dims scale with width
    assert msg.kind == "hidden"
    assert msg.width_mult == pytest.approx((2 * w + 11) / (2 * base + 11))
    assert msg.lr_scale == pytest.approx((2 * base + 11) / (2 * w + 11))
    assert roles["layers.0.update.2.weight"].lr_scale == pytest.approx(base / w)
    out = roles["energy_head.2.weight"]  # [1, w]
    assert out.kind == "output" and out.lr_scale == pytest.approx(0.25) and out.init_scale == pytest.approx(0.5)
    assert roles["force_head.2.weight"].kind == "output"
    assert roles["layers.0.message.0.bias"].kind == "vector" and roles["layers.0.message.0.bias"].lr_scale == 1.0
    assert roles["energy_head.2.bias"].kind == "fixed"


def test_egnn_classification():
    roles = classify_parameters(MCEGNN(width=64, depth=1, vector_channels=8), 16)
    assert roles["layers.0.mix.weight"].kind == "fixed"  # C x C: channels fixed by init_config
    assert roles["layers.0.gate.weight"].kind == "output"  # [C, w]: width -> finite
    assert roles["layers.0.vector_message.2.weight"].kind == "output"
    assert roles["force_head.weight"].kind == "fixed"
    assert roles["layers.0.update.0.weight"].lr_scale == pytest.approx(0.25)


class _Stacked(PotentialModel):
    """A model with a raw stacked weight [K, w, w], a flattened w² weight, an [K, w, 1] readout and
    a flat [1, w] readout declared as such (shape alone would call it an input layer)."""

    mup_kind = {"flat_out": "output"}

    def __init__(self, width=8, cutoff=4.0, max_atomic_number=10):
        super().__init__(cutoff=cutoff, max_atomic_number=max_atomic_number, forces="conservative",
                         compute_stress=False, backend="torch")
        self.width = width
        self.stack = nn.Parameter(torch.randn(3, width, width))
        self.flat = nn.Parameter(torch.randn(1, 5 * width * width))
        self.readout = nn.Parameter(torch.randn(3, width, 1))
        self.flat_out = nn.Parameter(torch.randn(1, width))

    def init_config(self):
        return {"width": self.width, "cutoff": self.cutoff, "max_atomic_number": self.max_atomic_number}

    def atomic_outputs(self, batch, edge_vec):  # never called: the model only feeds classify_parameters
        raise RuntimeError("_Stacked is a shape fixture for classify_parameters and has no forward pass")


def test_stacked_and_flattened_weights():
    roles = classify_parameters(_Stacked(width=32), 8)
    assert roles["stack"].kind == "hidden" and roles["stack"].lr_scale == pytest.approx(0.25)
    assert roles["flat"].kind == "hidden" and roles["flat"].lr_scale == pytest.approx(0.25)
    assert roles["readout"].kind == "output" and roles["readout"].init_scale == pytest.approx(0.5)
    assert roles["flat_out"].kind == "output" and roles["flat_out"].lr_scale == pytest.approx(0.25)


class _WidthIgnored(_Stacked):
    def __init__(self, width=8, cutoff=4.0, max_atomic_number=10):
        super().__init__(width=4, cutoff=cutoff, max_atomic_number=max_atomic_number)
        self.width = width


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no parameter of _WidthIgnored changes shape"):
        classify_parameters(_WidthIgnored(width=16), 8)
    with pytest.raises(TypeError, match="init_config"):
        classify_parameters(nn.Linear(3, 3), 8)
    with pytest.raises(ValueError, match="mup_base_width"):
        NNIPModule(MPNN(width=8, depth=1), mup_base_width=0)


@pytest.mark.parametrize("cls", MODELS)
def test_every_model_is_classified(cls):
    """Every backbone has hidden matrices and at least one output layer under the generic rule."""
    model = cls(width=32, cutoff=CUTOFF)
    roles = classify_parameters(model, 16)
    kinds = {r.kind for r in roles.values()}
    assert "hidden" in kinds and "output" in kinds, kinds
    assert set(roles) == {n for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------- optimizer groups
@pytest.mark.parametrize("optimizer", ["adamw", "schedulefree_adamw"])
def test_lr_groups_combine_with_weight_decay(optimizer):
    model, base, lr = MPNN(width=64, depth=2), 16, 2e-3
    roles = classify_parameters(model, base)
    out = build_optimizer(model, optimizer, lr, 0.1, (0.9, 0.999), 10, 100, 0.01, lr_scales=lr_scales(model, base))
    opt = out["optimizer"] if isinstance(out, dict) else out
    seen = {}
    for g in opt.param_groups:
        for p in g["params"]:
            assert id(p) not in seen
            seen[id(p)] = g
    for name, p in model.named_parameters():
        g = seen[id(p)]
        peak = g.get("initial_lr", g["lr"])  # LambdaLR has already applied the warmup factor to g["lr"]
        assert peak == pytest.approx(lr * roles[name].lr_scale), name
        decays = p.ndim >= 2 and not name.startswith("embedding.")
        assert g["weight_decay"] == (0.1 if decays else 0.0), name
    # without μP: the historical two groups at one LR
    groups = parameter_groups(model, 0.1)
    assert len(groups) == 2 and groups[0]["weight_decay"] == 0.1 and all(g["lr_scale"] == 1.0 for g in groups)


# ---------------------------------------------------------------------- init, once
def test_output_init_rescaled_once_and_base_width_unchanged():
    sp, mu = build(MPNN, 128), build(MPNN, 128)
    apply_mup_init(mu, 32)
    apply_mup_init(mu, 32)  # a second call must not rescale again
    sd_sp, sd_mu = sp.state_dict(), mu.state_dict()
    for name in sd_sp:
        factor = 0.5 if name in ("energy_head.2.weight", "force_head.2.weight") else 1.0
        assert torch.equal(sd_mu[name], sd_sp[name] * factor), name
    at_base = build(MPNN, 32)
    reference = build(MPNN, 32)
    apply_mup_init(at_base, 32)
    assert all(torch.equal(a, b) for a, b in zip(at_base.state_dict().values(), reference.state_dict().values()))


def test_checkpoint_restore_keeps_saved_weights(batch, tmp_path):
    import lightning as L

    class DM(L.LightningDataModule):
        statistics = FakeStats(ELEMENTS)
        cutoff = CUTOFF

        def train_dataloader(self):
            return torch.utils.data.DataLoader([batch] * 3, batch_size=None)

    def trainer(steps):
        return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, enable_model_summary=False)

    module = NNIPModule(build(MPNN, 64, seed=0), optimizer="adamw", mup_base_width=16, warmup_steps=1)
    t = trainer(3)
    t.fit(module, datamodule=DM())
    summary = module.mup_summary()
    assert summary["mup/width"] == 64 and summary["mup/base_width"] == 16
    assert sorted({v for k, v in summary.items() if k.endswith("_lr_scale")}) == pytest.approx(
        sorted({1.0, 0.25, (2 * 16 + 35) / (2 * 64 + 35)}))
    ckpt = tmp_path / "mup.ckpt"
    t.save_checkpoint(ckpt)
    saved = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    # a fresh module (different random init, μP output rescale applied at construction) resumes
    restored = NNIPModule(build(MPNN, 64, seed=1), optimizer="adamw", mup_base_width=16, warmup_steps=1)
    trainer(3).fit(restored, datamodule=DM(), ckpt_path=ckpt)  # max_steps reached: restore only
    for k, v in restored.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k


# ---------------------------------------------------------------------- coordinate check
WIDTHS = (16, 32, 64, 128)


def coordinate_scales(cls, batch, width, mup, seed, base=32, lr=3e-3, steps=3):
    """RMS of the last layer's hidden features and of the per-atom energy-head output at init and
    their change after ``steps`` Adam steps on ``batch`` (forward hooks)."""
    model = build(cls, width, seed)
    model.set_statistics(FakeStats(ELEMENTS))
    scales = None
    if mup:
        apply_mup_init(model, base)
        scales = lr_scales(model, base)
    opt = torch.optim.Adam(parameter_groups(model, 0.0, lr, scales))
    seen = {}
    head = model.energy_head if hasattr(model, "energy_head") else model.readouts[-1]  # MACE: per-layer readouts
    last = (model.layers if hasattr(model, "layers") else model.blocks)[-1]
    head.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach()))
    last.register_forward_hook(lambda m, i, o: seen.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach()))
    loss_fn = EnergyForceLoss()
    with torch.no_grad():
        model(batch)
    h0, out0 = seen["h"], seen["out"]
    for _ in range(steps):
        loss = loss_fn(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model(batch)

    def rms(x):
        return float(x.square().mean().sqrt())

    return {"h": rms(h0), "dh": rms(seen["h"] - h0), "dout": rms(seen["out"] - out0)}


def slopes(cls, batch, mup, widths=WIDTHS, base=32):
    """Log-log slope vs width of each scale (mean over 3 seeds)."""
    rows = [[coordinate_scales(cls, batch, w, mup, s, base=base) for s in range(3)] for w in widths]
    return {k: float(np.polyfit(np.log(widths), np.log([np.mean([r[k] for r in row]) for row in rows]), 1)[0])
            for k in rows[0][0]}


def check_coordinates(cls, batch, bound, sp_dh, sp_dout, widths=WIDTHS, base=32):
    """The coordinate check of one model: with μP every scale's |slope| < ``bound``; with the standard
    parametrisation the updates grow, Δh's slope > ``sp_dh`` and Δout's > ``sp_dout``."""
    mu = slopes(cls, batch, mup=True, widths=widths, base=base)
    sp = slopes(cls, batch, mup=False, widths=widths, base=base)
    for k in ("h", "dh", "dout"):
        assert abs(mu[k]) < bound, (k, mu)
    assert sp["dh"] > sp_dh and sp["dout"] > sp_dout, sp


@pytest.mark.slow
@pytest.mark.parametrize("cls", [MPNN, MCEGNN])
def test_coordinate_check(cls, batch):
    """μP: hidden features and the updates of hidden features and of the energy-head output keep
    their scale from width 16 to 128: |log-log slope| < 0.1 (μP predicts 0; measured −0.052…−0.012,
    so the bound leaves 2× margin for finite-width noise). Standard parametrisation with the same
    Adam LR: the updates grow with width (Adam moves every entry of a hidden matrix by ~η, so
    ΔW·x ∝ fan_in: slope → 1; measured ≈ 0.65 for Δh and ≈ 1.1 for Δout), so the test fails if μP
    is switched off."""
    check_coordinates(cls, batch, 0.1, sp_dh=0.4, sp_dout=0.7)


def test_coordinate_check_esen(batch):
    """The same check for the eSEN-style model (widths 8–64, base 16; ~12 s). Measured with μP:
    h −0.002, Δh +0.032, Δout −0.098; standard parametrisation: Δh +0.50, Δout +0.49. The bound
    0.15 is looser than the MPNN/EGNN's because its Δout slope sits near −0.1."""
    from nnip_scale.models import ESEN

    check_coordinates(ESEN, batch, 0.15, sp_dh=0.4, sp_dout=0.3, widths=(8, 16, 32, 64), base=16)


@pytest.mark.slow
def test_coordinate_check_mace(batch):
    """The same check for the MACE-style model (ℓ1, ν4; widths 32–256, base 64; ~35 s). Measured
    with μP (the 3 seeds here): h +0.011, Δh −0.018, Δout +0.089; with 4 seeds +0.05/+0.07/+0.18,
    and +0.08/+0.04/+0.17 on a 50-atom batch; standard parametrisation: Δh +1.0, Δout +1.7. The widths start at 32
    because below it Δh
    is dominated by the shared (width-independent) radial MLP, whose update reaches each channel
    coherently while the P·C radial outputs number fewer than ~2× its 64 hidden units: from width 16
    to 64 Δh falls by ~30 % under both parametrisations, then stays flat (docs/mup.md). Seed noise
    on a 20-atom batch is ±20–30 % per width, hence the bound 0.25 (SP exceeds it 4–7×)."""
    from nnip_scale.models import MACE

    check_coordinates(MACE, batch, 0.25, sp_dh=0.6, sp_dout=1.0, widths=(32, 64, 128, 256), base=64)


def test_lr_sweep_tool_reads_any_model_config(tmp_path):
    """tools/mup_lr_sweep.py --model-config: the backbone class and init_args come from a model
    config (width replaced by the grid's); a config without model.backbone is a clear error."""
    import importlib.util
    from pathlib import Path

    from nnip_scale.models import MACE

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("mup_lr_sweep", root / "tools" / "mup_lr_sweep.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cls, init, described = tool.load_backbone_spec(str(root / "configs" / "model" / "mace.yaml"))
    assert cls is MACE and "width" not in init and init["correlation"] == 3 and "mace.yaml" in described
    assert cls(width=4, **init).width == 4
    assert tool.load_backbone_spec(None)[0] is MPNN
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: 0.01\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: expected a model config with model\.backbone"):
        tool.load_backbone_spec(str(bad))
