"""What ``PotentialModel`` and the model registry give every model: recorded constructor arguments,
renamed submodules that old state_dicts still fill, ``models.build`` and config reading with clear
errors. (The per-model contract is tests/model_contract.py.)"""

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from nnip_scale.models import (
    MCEGNN,
    MPNN,
    PotentialModel,
    build,
    model_spec_from_config,
    register_model,
    registered_model,
    resolve_model,
)
from nnip_scale.models.registry import _REGISTRY, class_path

REPO = Path(__file__).resolve().parents[1]


class _Tiny(PotentialModel):
    """A minimal model: one linear map of the radial basis, summed onto atoms."""

    renamed_submodules: ClassVar[dict[str, str]] = {"old_head.": "head."}

    def __init__(self, width: int = 4, cutoff: float = 3.0, scale: float | None = None, **extra):
        super().__init__(cutoff=cutoff, max_atomic_number=10, forces="direct", compute_stress=False,
                         backend="torch", width=width, depth=1)
        self.extra = extra
        self.record_init_arg("scale", 1.0 if scale is None else scale)
        self.embedding = nn.Embedding(11, width)
        self.init_edge_basis(num_radial=3, envelope_order=4)
        self.head = nn.Linear(3, 1)

    def atomic_outputs(self, batch, edge_vec):
        raise RuntimeError("_Tiny is a bookkeeping fixture without a forward pass")


class _TinyFixed(_Tiny):
    """A subclass that fixes some arguments: its own signature is what it records."""

    def __init__(self, width: int = 6):
        super().__init__(width=width, cutoff=2.5, scale=3.0, colour="blue")


def test_constructor_arguments_are_recorded_with_defaults_and_resolved_values():
    m = _Tiny(5, colour="red")
    assert m.init_config() == {"width": 5, "cutoff": 3.0, "scale": 1.0, "colour": "red"}
    assert type(m.init_config()["cutoff"]) is float
    assert type(_Tiny(cutoff=4).init_config()["cutoff"]) is float  # an int for a float argument: 4.0, as before
    assert _TinyFixed().init_config() == {"width": 6}  # the outermost constructor's arguments only
    assert _TinyFixed(width=8).width == 8
    rebuilt = _Tiny(**m.init_config())
    assert rebuilt.init_config() == m.init_config() and rebuilt.extra == {"colour": "red"}


def test_constructors_with_star_args_are_refused_at_class_creation():
    with pytest.raises(TypeError, match=r"cannot take \*args"):
        class _Bad(_Tiny):
            def __init__(self, *widths):
                super().__init__()


def test_width_and_depth_are_checked_once_for_every_model():
    for bad in (0, -1, 2.0, True, "8"):
        with pytest.raises(ValueError, match=r"_Tiny: width and depth must be ints >= 1, got width="):
            _Tiny(width=bad)


def test_renamed_submodules_load_from_old_keys():
    m = _Tiny()
    old = {("old_head." + k[len("head."):] if k.startswith("head.") else k): v.clone() + 1
           for k, v in m.state_dict().items()}
    assert "old_head.weight" in old and "head.weight" not in old
    m.load_state_dict(old)  # strict
    assert torch.equal(m.head.weight, old["old_head.weight"])
    # inside a parent (Lightning's "backbone." prefix), too
    parent = nn.Module()
    parent.backbone = _Tiny()
    parent.load_state_dict({f"backbone.{k}": v for k, v in old.items()})
    assert torch.equal(parent.backbone.head.bias, old["old_head.bias"])


def test_edge_geometry_is_the_models_own_arithmetic():
    m = _Tiny()
    vec = torch.tensor([[0.3, -1.2, 0.5], [2.0, 0.1, 0.0]])
    g = m.edge_geometry(vec)
    d = torch.linalg.vector_norm(vec, dim=-1)
    assert torch.equal(g.distance, d) and torch.equal(g.unit, vec / d.unsqueeze(-1))
    assert torch.equal(g.rbf, m.radial_basis(d)) and torch.equal(g.envelope, m.envelope(d))
    assert torch.equal(g.inv_avg_neighbors, 1.0 / m.avg_num_neighbors)
    assert m.edge_geometry(vec, unit=False).unit is None


def test_build_resolves_class_paths_aliases_and_short_names():
    assert type(build("MPNN", {"width": 8}, depth=1)) is MPNN
    assert type(build("nnip_scale.models.mpnn.MPNN", {"width": 8, "depth": 1})) is MPNN
    assert resolve_model("nnip_scale.models.MCEGNN") is MCEGNN
    assert resolve_model("nnip_scale.models.egnn.MCEGNN") is MCEGNN  # the class path before issue 14
    assert resolve_model("MCEGNN") is MCEGNN
    assert build("MPNN", width=8, depth=1).init_config()["width"] == 8


def test_build_errors_name_the_class_path_and_what_was_expected():
    with pytest.raises(ValueError, match=r"model class_path 'Nope' is not a registered model; expected a registered "
                                         r"model \(ESEN, GemNetOC, MACE, MCEGNN, MPNN"):
        build("Nope", {})
    with pytest.raises(ValueError, match=r"model class_path 'nowhere\.Model': cannot import module 'nowhere'"):
        build("nowhere.Model")
    with pytest.raises(ValueError, match=r"module 'torch' has no nn\.Module class 'cat'"):
        resolve_model("torch.cat")
    with pytest.raises(ValueError, match=r"model 'MPNN': init_args do not fit nnip_scale\.models\.mpnn\.MPNN .*"
                                         r"expected arguments among: width, depth, cutoff"):
        build("MPNN", {"widht": 8})
    with pytest.raises(ValueError, match="model 'MPNN': init_args is a list; expected a mapping"):
        build("MPNN", [8])
    with pytest.raises(ValueError, match=r"is not a registered model"):
        resolve_model("nnip_scale.models.mpnn.MPNN2", import_modules=False)


def test_a_user_model_registers_itself_and_builds_from_its_class_path():
    @register_model
    class _Registered(_Tiny):
        pass

    name = class_path(_Registered)
    try:
        assert registered_model(name) is _Registered
        assert type(build(name, {"width": 3})) is _Registered
        impostor = type("_Registered", (_Tiny,), {"__module__": __name__, "__qualname__": _Registered.__qualname__})
        with pytest.raises(ValueError, match="already names"):
            register_model(impostor)
    finally:
        _REGISTRY.pop(name, None)


def test_model_spec_from_config(tmp_path):
    assert model_spec_from_config(REPO / "configs" / "model" / "egnn.yaml")[1]["vector_channels"] == 8
    short = tmp_path / "short.yaml"
    short.write_text("model:\n  backbone: MPNN\n")
    assert model_spec_from_config(short) == ("MPNN", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: 0.01\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: expected a model config with model\.backbone\.class_path"):
        model_spec_from_config(bad)
    with pytest.raises(ValueError, match=r"missing\.yaml: expected a model config"):
        model_spec_from_config(tmp_path / "missing.yaml")
