"""Message aggregation: ``scatter_sum`` (edges → atoms) and its adjoint ``gather_rows``.

Shapes: ``src`` [E, F...], ``index`` int64 [E] with values in [0, dim_size), ``dim_size`` a
plain Python int (e.g. the batch's ``n_atoms``, so there is no host sync). Output [dim_size, F...].
Indices need not be sorted; rows that receive nothing are zero; E = 0 gives zeros.

Native ops ``torch.ops.nnip_scale.scatter_sum`` / ``gather_rows`` are registered here with a fake
kernel (shapes from inputs only), autograd (each one's backward is the other op, so double
backward works) and a FLOP formula for ``FlopCounterMode``.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from nnip_scale.ops._native import native_state
from nnip_scale.ops.registry import (
    OpSpec,
    check_index,
    check_index_range,
    check_same_device,
    check_size,
    dispatch,
    register_op,
)

_REDUCED = (torch.bfloat16, torch.float16)
_NATIVE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------- torch reference
# The native CPU kernels range-check ``index`` themselves; the torch and pyg paths check it here (CPU
# only, registry.check_index_range), so an out-of-range entry is the same clear error on every backend.
def _scatter_sum_torch(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    check_index_range("scatter_sum", "index", index, dim_size, "dim_size")
    if src.dtype in _REDUCED:  # accumulate in fp32, round once (as the native kernels)
        return src.float().new_zeros((dim_size, *src.shape[1:])).index_add(0, index, src.float()).to(src.dtype)
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add(0, index, src)


def _gather_rows_torch(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    check_index_range("gather_rows", "index", index, x.shape[0], "x.size(0)")
    return x.index_select(0, index)


# ----------------------------------------------------------------------------- pyg (torch-scatter)
def _scatter_sum_pyg(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    import torch_scatter

    check_index_range("scatter_sum", "index", index, dim_size, "dim_size")
    return torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce="sum")


# ----------------------------------------------------------------------------- native (_C)
def _scatter_sum_native(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    return torch.ops.nnip_scale.scatter_sum(src, index, dim_size)


def _gather_rows_native(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.ops.nnip_scale.gather_rows(x, index)


def _register_native() -> None:
    """Fake kernels, autograd and FLOP formulas of the native ops (requires ``_C`` loaded)."""
    ops = torch.ops.nnip_scale

    @torch.library.register_fake("nnip_scale::scatter_sum")
    def _(src, index, dim_size):
        torch._check(index.dim() == 1, lambda: "scatter_sum: index must be 1-D")
        torch._check(src.shape[0] == index.shape[0], lambda: "scatter_sum: src/index length differ")
        return src.new_empty((dim_size, *src.shape[1:]))

    @torch.library.register_fake("nnip_scale::gather_rows")
    def _(x, index):
        torch._check(index.dim() == 1, lambda: "gather_rows: index must be 1-D")
        return x.new_empty((index.shape[0], *x.shape[1:]))

    def _scatter_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    def _scatter_backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return ops.gather_rows(grad, index), None, None

    def _gather_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])
        ctx.n_rows = inputs[0].shape[0]

    def _gather_backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return ops.scatter_sum(grad, index, ctx.n_rows), None

    torch.library.register_autograd(
        "nnip_scale::scatter_sum", _scatter_backward, setup_context=_scatter_setup
    )
    torch.library.register_autograd(
        "nnip_scale::gather_rows", _gather_backward, setup_context=_gather_setup
    )

    @register_flop_formula(ops.scatter_sum)
    def _(src_shape, index_shape, dim_size, *args, out_shape=None, **kwargs) -> int:
        return scatter_sum_flops(src_shape, index_shape, dim_size)

    @register_flop_formula(ops.gather_rows)
    def _(x_shape, index_shape, *args, out_shape=None, **kwargs) -> int:
        return 0


# ----------------------------------------------------------------------------- FLOP formulas
def scatter_sum_flops(src_shape, index_shape=None, dim_size=None) -> int:
    """One FLOP per added element: E·F for src [E, F...]."""
    return math.prod(int(s) for s in src_shape)


def gather_rows_flops(x_shape, index_shape=None) -> int:
    """Gathers move data: 0 FLOPs."""
    return 0


register_op(
    OpSpec(
        name="scatter_sum",
        impls={"torch": _scatter_sum_torch, "native": _scatter_sum_native, "pyg": _scatter_sum_pyg},
        native_dtypes={"cpu": _NATIVE_DTYPES, "cuda": _NATIVE_DTYPES},
        fallback={"cueq": "auto"},  # cuequivariance has no standalone scatter: declared substitution
        flops=scatter_sum_flops,
    )
)
register_op(
    OpSpec(
        name="gather_rows",
        impls={"torch": _gather_rows_torch, "native": _gather_rows_native},
        native_dtypes={"cpu": _NATIVE_DTYPES, "cuda": _NATIVE_DTYPES},
        # declared substitutions: cuequivariance has no gather; index_select is what torch-scatter users call
        fallback={"cueq": "auto", "pyg": "torch"},
        flops=gather_rows_flops,
    )
)
if native_state()["ok"]:
    _register_native()


# ----------------------------------------------------------------------------- public API
def _check(op: str, name: str, t: torch.Tensor, index: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() < 1:
        got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"nnip_scale.ops.{op}: {name} must be a tensor with >= 1 dim, got {got}")
    check_index(op, "index", index)
    check_same_device(op, {name: t, "index": index})


def scatter_sum(
    src: torch.Tensor, index: torch.Tensor, dim_size: int, backend: str = "auto"
) -> torch.Tensor:
    """Sum rows of ``src`` [E, F...] into ``dim_size`` rows: out[i] = Σ_{e: index[e]=i} src[e].

    Returns [dim_size, F...] in ``src``'s dtype (bf16/fp16 accumulate in fp32). Differentiable
    to any order on every backend. An index outside [0, dim_size) is an error naming the op and
    the argument (on CPU; CUDA kernels skip such entries, checking would need a host sync)."""
    _check("scatter_sum", "src", src, index)
    check_size("scatter_sum", "dim_size", dim_size)
    if src.shape[0] != index.shape[0]:
        raise ValueError(
            f"nnip_scale.ops.scatter_sum: src has {src.shape[0]} rows but index has "
            f"{index.shape[0]} entries"
        )
    return dispatch("scatter_sum", backend, src)(src, index, dim_size)


def gather_rows(x: torch.Tensor, index: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Rows of ``x`` [N, F...] picked by ``index`` [E]: out[e] = x[index[e]] → [E, F...]."""
    _check("gather_rows", "x", x, index)
    return dispatch("gather_rows", backend, x)(x, index)
