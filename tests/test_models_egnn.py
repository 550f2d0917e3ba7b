"""MC-EGNN-specific tests (fp64): N by hand, defaults and argument errors; the generic physics and
contract checks (O(3) in both force modes, …) are in tests/model_contract.py."""

import pytest
import torch
from batch_utils import FakeStats
from model_contract import O3, ModelContract

from nnip_scale.models.mc_egnn import MCEGNN


def make_model(**kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = MCEGNN(width=16, depth=2, vector_channels=4, cutoff=4.0, num_radial=8, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


class TestMCEGNNContract(ModelContract):
    symmetry = O3

    def make_model(self, **kw):
        return make_model(**kw)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_parameter_count_excludes_embedding(forces):
    w, c, r, depth = 8, 3, 4, 2
    model = MCEGNN(width=w, depth=depth, vector_channels=c, num_radial=r, max_atomic_number=10, forces=forces)
    message = (2 * w + r + 3 * c) * w + w + w * w + w
    update = 2 * w * w + w + w * w + w
    vector_message = w * w + w + w * 2 * c + 2 * c
    mix, gate = c * c, w * c + c
    energy_head = (w + c) * w + w + w + 1
    force_head = c if forces == "direct" else 0
    counts = model.count_parameters()
    assert counts["n_params"] == depth * (message + update + vector_message + mix + gate) + energy_head + force_head
    assert counts["n_params_total"] == counts["n_params"] + 11 * w


def test_vector_channels_default():
    assert MCEGNN(width=24).vector_channels == 4  # max(4, width // 8)
    assert MCEGNN(width=128).vector_channels == 16
    m = MCEGNN(width=24, depth=2, cutoff=4.5, num_radial=6, forces="conservative", compute_stress=True)
    assert MCEGNN(**m.init_config()).vector_channels == 4


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="vector_channels must be >= 1, got 0"):
        MCEGNN(width=8, depth=1, vector_channels=0)
    with pytest.raises(ValueError, match="MCEGNN: width and depth must be ints >= 1, got width=8, depth=0"):
        MCEGNN(width=8, depth=0)


def test_old_module_name_still_works():
    """``nnip_scale.models.egnn`` (the module before issue 14) re-exports the same class, with a
    deprecation warning; its class path still names a registered model (old checkpoints and configs)."""
    import importlib
    import sys

    from nnip_scale.models import registered_model, resolve_model

    sys.modules.pop("nnip_scale.models.egnn", None)
    with pytest.warns(DeprecationWarning, match="nnip_scale.models.mc_egnn"):
        old = importlib.import_module("nnip_scale.models.egnn")
    assert old.MCEGNN is MCEGNN and old.EGNNLayer is old.MCEGNNLayer
    assert registered_model("nnip_scale.models.egnn.MCEGNN") is MCEGNN
    assert resolve_model("nnip_scale.models.egnn.MCEGNN") is MCEGNN
