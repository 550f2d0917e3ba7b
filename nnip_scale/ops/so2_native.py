"""Native eSEN edge rotations: ``so2_rotate_in`` and ``so2_rotate_out_scatter`` on compact Wigner blocks.

Registers, for ``torch.ops.nnip_scale.so2_rotate_in`` / ``so2_rotate_out_scatter`` and their
vector-Jacobian products ``*_backward`` (schemas in ``csrc/so2/schema.cpp``, CPU kernels in
``csrc/so2/cpu/``): fake kernels (shapes from the inputs only), autograd and FLOP formulas.

Compact Wigner blocks. Row r of the edge-frame Wigner-D rows (degree ℓ_r) is nonzero only on the
2ℓ_r + 1 components of its degree; ``wigner`` [E, NB] keeps just those entries, row r's at
``wigner[:, off_r : off_r + 2ℓ_r + 1]``, and ``block_rows`` int64 [R, 2] holds (ℓ_r, off_r)
(``nnip_scale.ops.so2.so2_block_rows``: the entries grouped by degree, NB = Σ_ℓ R_ℓ·(2ℓ+1)).

Derivatives. Both ops are bilinear: rotate-in F(x, D) and rotate-out G(y, D). The backward
B(g; x, D) = (B_x(g; D), B_D(g; x)) is one fused op (only the requested parts are computed) and is
itself differentiable: for upstream gradients (ġx, ġD) of its outputs,

    ∂/∂g = F(ġx, D) + F(x, ġD),   ∂/∂D = B_D(g; ġx),   ∂/∂x = B_x(g; ġD)

(⟨ġx, B_x(g; D)⟩ = ⟨g, F(ġx, D)⟩ and ⟨ġD, B_D(g; x)⟩ = ⟨g, F(x, ġD)⟩), and the same with y for
rotate-out. So the double backward of a conservative eSEN's force loss is forward and backward calls
of the registered ops, and any order composes. Nothing E×K×C is saved for the backward: the
rotated per-edge messages are recomputed inside the kernels from the inputs.

FLOPs: the formulas give what ``FlopCounterMode`` (with the ``index_add`` convention of
``training.flops``) counts on the dense torch reference (``so2._rotate_in_torch`` /
``_rotate_out_scatter_torch``), so a model's FLOP count does not depend on the backend:
rotate-in forward 2·E·R·K·2C, backward [D]·2·E·R·K·2C + [x]·(2·E·R·K·2C + 2·E·K·C); rotate-out
forward 2·E·K·R·C + E·K·C, backward ([y] + [D])·2·E·K·R·C.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from nnip_scale.ops._native import native_state

NATIVE_DTYPES = (torch.float32, torch.float64)
#: the largest atom feature the native kernels are tested for: ℓmax = 6, (6 + 1)² components
MAX_COMPONENTS = 49


def rotate_in_native(x, wigner, src, dst, block_rows=None):
    """``so2_rotate_in`` on the native kernel (compact blocks only; the resolver guarantees it)."""
    return torch.ops.nnip_scale.so2_rotate_in(x, wigner, src, dst, block_rows)


def rotate_out_scatter_native(y, wigner, index, dim_size, block_rows=None, n_components=None):
    """``so2_rotate_out_scatter`` on the native kernel (compact blocks only)."""
    return torch.ops.nnip_scale.so2_rotate_out_scatter(y, wigner, index, dim_size, block_rows, n_components)


def rotate_in_forward_flops(e: int, r: int, k: int, c: int) -> int:
    return 2 * e * r * k * 2 * c


def rotate_in_backward_flops(e, r, k, c, need_x, need_wigner) -> int:
    return (2 * e * r * k * 2 * c if need_wigner else 0) + (2 * e * r * k * 2 * c + 2 * e * k * c if need_x else 0)


def rotate_out_forward_flops(e: int, r: int, k: int, c: int) -> int:
    return 2 * e * k * r * c + e * k * c


def rotate_out_backward_flops(e, r, k, c, need_y, need_wigner) -> int:
    return (2 * e * k * r * c if need_y else 0) + (2 * e * k * r * c if need_wigner else 0)


def _register() -> None:
    """Fake kernels, autograd and FLOP formulas of the native ops (requires ``_C`` loaded)."""
    ops = torch.ops.nnip_scale
    in_name, in_bwd = "nnip_scale::so2_rotate_in", "nnip_scale::so2_rotate_in_backward"
    out_name, out_bwd = "nnip_scale::so2_rotate_out_scatter", "nnip_scale::so2_rotate_out_scatter_backward"

    def check_common(op, feat, wigner, idx, block_rows, feat_name):
        torch._check(feat.dim() == 3, lambda: f"{op}: {feat_name} must be 3-D")
        torch._check(wigner.dim() == 2, lambda: f"{op}: wigner must be 2-D [E, NB]")
        torch._check(wigner.dtype == feat.dtype, lambda: f"{op}: wigner must have the dtype of {feat_name}")
        torch._check(block_rows.dim() == 2 and block_rows.shape[1] == 2, lambda: f"{op}: block_rows must be [R, 2]")
        for t in idx:
            torch._check(t.dim() == 1 and t.shape[0] == wigner.shape[0], lambda: f"{op}: indices must be [E]")

    @torch.library.register_fake(in_name)
    def _(x, wigner, src, dst, block_rows):
        check_common(in_name, x, wigner, (src, dst), block_rows, "x")
        return x.new_empty((wigner.shape[0], block_rows.shape[0], 2 * x.shape[2]))

    @torch.library.register_fake(in_bwd)
    def _(grad_out, x, wigner, src, dst, block_rows, need_x, need_wigner):
        check_common(in_bwd, x, wigner, (src, dst), block_rows, "x")
        torch._check(grad_out.dim() == 3 and grad_out.shape[2] == 2 * x.shape[2],
                     lambda: f"{in_bwd}: grad_out must be [E, R, 2C]")
        return (x.new_empty((x.shape[0] if need_x else 0, x.shape[1], x.shape[2])),
                x.new_empty((wigner.shape[0] if need_wigner else 0, wigner.shape[1])))

    @torch.library.register_fake(out_name)
    def _(y, wigner, index, dim_size, block_rows, n_components):
        check_common(out_name, y, wigner, (index,), block_rows, "y")
        return y.new_empty((dim_size, n_components, y.shape[2]))

    @torch.library.register_fake(out_bwd)
    def _(grad_out, y, wigner, index, block_rows, need_y, need_wigner):
        check_common(out_bwd, y, wigner, (index,), block_rows, "y")
        torch._check(grad_out.dim() == 3 and grad_out.shape[2] == y.shape[2],
                     lambda: f"{out_bwd}: grad_out must be [N, K, C]")
        return (y.new_empty((y.shape[0] if need_y else 0, y.shape[1], y.shape[2])),
                y.new_empty((wigner.shape[0] if need_wigner else 0, wigner.shape[1])))

    def add(acc, t):
        return t if acc is None else acc + t

    # ------------------------------------------------------------------ rotate in
    def in_setup(ctx, inputs, output):
        x, wigner, src, dst, block_rows = inputs
        ctx.save_for_backward(x, wigner, src, dst, block_rows)

    def in_backward(ctx, grad):
        x, wigner, src, dst, block_rows = ctx.saved_tensors
        nx, nw = ctx.needs_input_grad[:2]
        if not (nx or nw):
            return None, None, None, None, None
        gx, gw = ops.so2_rotate_in_backward(grad, x, wigner, src, dst, block_rows, nx, nw)
        return (gx if nx else None), (gw if nw else None), None, None, None

    torch.library.register_autograd(in_name, in_backward, setup_context=in_setup)

    def in_bwd_setup(ctx, inputs, output):
        grad_out, x, wigner, src, dst, block_rows, need_x, need_wigner = inputs
        ctx.save_for_backward(grad_out, x, wigner, src, dst, block_rows)
        ctx.computed = (need_x, need_wigner)

    def in_bwd_backward(ctx, ggx, ggw):
        g, x, wigner, src, dst, block_rows = ctx.saved_tensors
        # upstream gradients of the outputs that were computed (the others come back as 0-row tensors)
        ggx, ggw = (t if (c and t is not None) else None for t, c in zip((ggx, ggw), ctx.computed))
        need_g, need_x, need_w = ctx.needs_input_grad[:3]
        d_g = d_x = d_w = None
        if need_g:
            if ggx is not None:
                d_g = add(d_g, ops.so2_rotate_in(ggx, wigner, src, dst, block_rows))
            if ggw is not None:
                d_g = add(d_g, ops.so2_rotate_in(x, ggw, src, dst, block_rows))
        if need_w and ggx is not None:
            d_w = ops.so2_rotate_in_backward(g, ggx, wigner, src, dst, block_rows, False, True)[1]
        if need_x and ggw is not None:
            d_x = ops.so2_rotate_in_backward(g, x, ggw, src, dst, block_rows, True, False)[0]
        return (d_g, d_x, d_w) + (None,) * 5

    torch.library.register_autograd(in_bwd, in_bwd_backward, setup_context=in_bwd_setup)

    # ------------------------------------------------------------------ rotate out + scatter
    def out_setup(ctx, inputs, output):
        y, wigner, index, dim_size, block_rows, n_components = inputs
        ctx.save_for_backward(y, wigner, index, block_rows)

    def out_backward(ctx, grad):
        y, wigner, index, block_rows = ctx.saved_tensors
        ny, nw = ctx.needs_input_grad[:2]
        if not (ny or nw):
            return (None,) * 6
        gy, gw = ops.so2_rotate_out_scatter_backward(grad, y, wigner, index, block_rows, ny, nw)
        return (gy if ny else None), (gw if nw else None), None, None, None, None

    torch.library.register_autograd(out_name, out_backward, setup_context=out_setup)

    def out_bwd_setup(ctx, inputs, output):
        grad_out, y, wigner, index, block_rows, need_y, need_wigner = inputs
        ctx.save_for_backward(grad_out, y, wigner, index, block_rows)
        ctx.computed = (need_y, need_wigner)

    def out_bwd_backward(ctx, ggy, ggw):
        g, y, wigner, index, block_rows = ctx.saved_tensors
        ggy, ggw = (t if (c and t is not None) else None for t, c in zip((ggy, ggw), ctx.computed))
        need_g, need_y, need_w = ctx.needs_input_grad[:3]
        n, k = g.shape[0], g.shape[1]
        d_g = d_y = d_w = None
        if need_g:
            if ggy is not None:
                d_g = add(d_g, ops.so2_rotate_out_scatter(ggy, wigner, index, n, block_rows, k))
            if ggw is not None:
                d_g = add(d_g, ops.so2_rotate_out_scatter(y, ggw, index, n, block_rows, k))
        if need_w and ggy is not None:
            d_w = ops.so2_rotate_out_scatter_backward(g, ggy, wigner, index, block_rows, False, True)[1]
        if need_y and ggw is not None:
            d_y = ops.so2_rotate_out_scatter_backward(g, y, ggw, index, block_rows, True, False)[0]
        return (d_g, d_y, d_w) + (None,) * 4

    torch.library.register_autograd(out_bwd, out_bwd_backward, setup_context=out_bwd_setup)

    # ------------------------------------------------------------------ FLOP formulas
    @register_flop_formula(ops.so2_rotate_in)
    def _(x_shape, wigner_shape, src_shape, dst_shape, rows_shape, *args, out_shape=None, **kwargs) -> int:
        return rotate_in_forward_flops(int(wigner_shape[0]), int(rows_shape[0]), int(x_shape[1]), int(x_shape[2]))

    @register_flop_formula(ops.so2_rotate_in_backward)
    def _(grad_shape, x_shape, wigner_shape, src_shape, dst_shape, rows_shape, need_x, need_wigner, *args,
          out_shape=None, **kwargs) -> int:
        return rotate_in_backward_flops(int(wigner_shape[0]), int(rows_shape[0]), int(x_shape[1]), int(x_shape[2]),
                                        need_x, need_wigner)

    @register_flop_formula(ops.so2_rotate_out_scatter)
    def _(y_shape, wigner_shape, index_shape, dim_size, rows_shape, n_components, *args, out_shape=None,
          **kwargs) -> int:
        return rotate_out_forward_flops(int(y_shape[0]), int(rows_shape[0]), int(n_components), int(y_shape[2]))

    @register_flop_formula(ops.so2_rotate_out_scatter_backward)
    def _(grad_shape, y_shape, wigner_shape, index_shape, rows_shape, need_y, need_wigner, *args, out_shape=None,
          **kwargs) -> int:
        return rotate_out_backward_flops(int(y_shape[0]), int(rows_shape[0]), int(grad_shape[1]), int(y_shape[2]),
                                         need_y, need_wigner)


if native_state()["ok"]:
    _register()
