"""MPNN-specific tests (fp64); the generic physics and contract checks are in tests/model_contract.py."""

import pytest
import torch
from batch_utils import FakeStats
from model_contract import TRANSLATION, ModelContract

from nnip_scale.models import MPNN

CUTOFF = 4.0


def make_model(**kw):
    torch.manual_seed(0)
    kw.setdefault("backend", "torch")
    m = MPNN(width=16, depth=2, cutoff=CUTOFF, **kw).double()
    m.set_statistics(FakeStats([1, 6, 7, 8, 13, 29], force_rms=0.7, avg_num_neighbors=6.0))
    return m


class TestMPNNContract(ModelContract):
    symmetry = TRANSLATION  # raw r_ij components: no rotational symmetry (nor equivariant direct forces)
    variants = {"edge": {"force_head": "edge"}, "node": {"force_head": "node", "forces": "direct"}}

    def make_model(self, **kw):
        return make_model(**kw)


@pytest.mark.parametrize("force_head", ["edge", "node"])
def test_parameter_count_excludes_embedding(force_head):
    model = MPNN(width=8, depth=2, cutoff=CUTOFF, num_radial=4, max_atomic_number=10, force_head=force_head)
    counts = model.count_parameters()
    w, r = 8, 4
    layer = (2 * w + 3 + r) * w + w + w * w + w + 2 * w * w + w + w * w + w
    energy_head = w * w + w + w + 1
    force_head_params = ((2 * w + 3 + r) * w + w + w + 1) if force_head == "edge" else (w * w + w + 3 * w + 3)
    assert counts["n_params"] == 2 * layer + energy_head + force_head_params
    assert counts["n_params_total"] == counts["n_params"] + 11 * w


def test_element_outside_table_is_a_clear_error():
    model = MPNN(width=8, depth=1, cutoff=CUTOFF, max_atomic_number=20)
    with pytest.raises(ValueError, match=r"element\(s\) Cu \(Z=29\) outside the model's element table \(Z = 1\.\.20\)"):
        model.set_statistics(FakeStats([1, 29]))
