"""Measured FLOPs of a training or evaluation step, and a per-batch cost model.

Counting convention (documented in docs/compute.md):
- ``torch.utils.flop_counter.FlopCounterMode`` counts the matmul-class ATen ops (mm, addmm, bmm,
  baddbmm, convolutions, attention) at **2 FLOPs per multiply-add**, in forward and backward alike.
- Index reductions of the reference message passing count one FLOP per added element:
  ``index_add``/``scatter_add``/``index_reduce``(sum) on E×F values = E·F FLOPs. Gathers
  (``index_select``, ``index``) move data and count 0. Native ops register their own formula with
  the same convention (``nnip_scale.ops``).
- Element-wise work (activations, adds, products, norms, the loss's arithmetic) is **not** counted,
  as in the usual C ≈ 6ND accounting: it is memory-bound and a small share of the arithmetic of
  models of the width studied here. GPU-hours capture its real cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nnip_scale.data import keys as K
from nnip_scale.data.batching import edge_layout


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _index_add_flops(self_shape, dim, index_shape, source_shape, *args, out_shape=None, **kwargs) -> int:
    return _numel(source_shape)


def _scatter_add_flops(self_shape, dim, index_shape, src_shape, *args, out_shape=None, **kwargs) -> int:
    return _numel(src_shape)


REFERENCE_OP_FLOPS = {
    torch.ops.aten.index_add: _index_add_flops,
    torch.ops.aten.index_add_: _index_add_flops,
    torch.ops.aten.scatter_add: _scatter_add_flops,
    torch.ops.aten.scatter_add_: _scatter_add_flops,
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn()`` runs (forward, autograd.grad, backward), by the convention above."""
    with FlopCounterMode(display=False, custom_mapping=REFERENCE_OP_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def slice_batch(batch: dict, k: int) -> dict:
    """The first ``k`` structures of a collated batch (docs/conventions.md), as a batch.

    Atoms are sorted by structure, so the first structures' atoms are a prefix and their edges
    are those whose centre lies in that prefix; indices stay valid."""
    n_atoms = int(batch[K.NUM_ATOMS][:k].sum())
    edge_mask = batch[K.EDGE_INDEX][0] < n_atoms
    out = dict(batch)
    for key in K.PER_ATOM:
        if key in batch:  # an unlabelled batch has no forces
            out[key] = batch[key][:n_atoms]
    for key in K.PER_STRUCTURE:
        if key in batch:
            out[key] = batch[key][:k]
    out[K.EDGE_INDEX] = batch[K.EDGE_INDEX][:, edge_mask]
    out[K.EDGE_SHIFT] = batch[K.EDGE_SHIFT][edge_mask]
    out[K.N_ATOMS], out[K.N_STRUCTURES], out[K.N_EDGES] = n_atoms, k, int(edge_mask.sum())
    if K.EDGE_RECEIVER_PTR in batch:  # the edges are sorted by receiver, so the kept ones still are
        out[K.EDGE_RECEIVER_PTR], out[K.EDGE_SENDER_ORDER] = edge_layout(out[K.EDGE_INDEX], n_atoms)
    return out


def batch_features(batch: dict) -> np.ndarray:
    """Cost-model features of a batch from its host-side counts: [edges, atoms, structures, 1]."""
    return np.array([batch[K.N_EDGES], batch[K.N_ATOMS], batch[K.N_STRUCTURES], 1.0])


class StepCostModel:
    """FLOPs of one step as a·edges + b·atoms + c·structures + d, fitted by least squares on
    exactly counted (sub-)batches. Message passing costs are affine in these counts, so the fit is
    exact up to rounding; the calibration residual is kept to show it."""

    def __init__(self, coefficients=None, max_rel_residual: float = 0.0):
        self.coefficients = None if coefficients is None else np.asarray(coefficients, dtype=np.float64)
        self.max_rel_residual = float(max_rel_residual)

    @property
    def calibrated(self) -> bool:
        return self.coefficients is not None

    def fit(self, features: np.ndarray, flops: np.ndarray) -> StepCostModel:
        X = np.asarray(features, dtype=np.float64)
        y = np.asarray(flops, dtype=np.float64)
        scale = np.maximum(np.abs(X).max(axis=0), 1.0)
        coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
        self.coefficients = coef / scale
        pred = X @ self.coefficients
        self.max_rel_residual = float(np.max(np.abs(pred - y) / np.maximum(y, 1.0)))
        return self

    def __call__(self, n_edges: int, n_atoms: int, n_structures: int) -> float:
        a, b, c, d = self.coefficients
        return float(a * n_edges + b * n_atoms + c * n_structures + d)

    def state_dict(self) -> dict:
        coef = None if self.coefficients is None else self.coefficients.tolist()
        return {"coefficients": coef, "max_rel_residual": self.max_rel_residual}

    @classmethod
    def from_state_dict(cls, state: dict) -> StepCostModel:
        return cls(state.get("coefficients"), state.get("max_rel_residual", 0.0))


def reference_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose ops run on the ``torch`` reference backend (FLOPs are
    measured there, whatever backend training uses); gradients of the original are untouched."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if isinstance(getattr(m, "backend", None), str):
            m.backend = "torch"
    return twin


def calibrate(step: Callable[[dict], object], batches: list[dict]) -> StepCostModel:
    """Count ``step(batch)`` FLOPs on prefixes of each batch (1, 2, ¼, ½, ¾ and all of its
    structures: points with different edge/atom/structure ratios) and fit the cost model."""
    feats, flops = [], []
    for batch in batches:
        S = int(batch[K.N_STRUCTURES])
        for k in sorted({k for k in (1, 2, S // 4, S // 2, (3 * S) // 4, S) if 1 <= k <= S}):
            sub = slice_batch(batch, k) if k < S else batch
            flops.append(count_flops(lambda sub=sub: step(sub)))
            feats.append(batch_features(sub))
    return StepCostModel().fit(np.stack(feats), np.array(flops))
