"""Native channel-wise tensor product with gather and scatter (the MACE interaction).

Registers, for ``torch.ops.nnip_scale.channelwise_tp_scatter`` and its vector-Jacobian product
``torch.ops.nnip_scale.channelwise_tp_scatter_backward`` (schemas in ``csrc/channelwise_tp/schema.cpp``,
CPU kernels in ``csrc/channelwise_tp/cpu/``, CUDA kernels in ``csrc/channelwise_tp/cuda/``: compiled, not
registered with the resolver until run on a GPU, docs/ops.md): fake kernels (shapes from the inputs only),
autograd and FLOP formulas.

Derivatives. The product out = F(w, x, sh) is linear in each of w, x and sh. Its backward
``B(g; w, x, sh) = (∂/∂w, ∂/∂x, ∂/∂sh) ⟨g, F⟩`` is one fused op (grad_weights, grad_x, grad_sh; only
the requested ones are computed) and is itself differentiable: for upstream gradients
(ġw, ġx, ġsh) of its three outputs,

    ∂/∂g  = F(ġw, x, sh) + F(w, ġx, sh) + F(w, x, ġsh)
    ∂/∂w  = B_w(g; ·, ġx, sh) + B_w(g; ·, x, ġsh)
    ∂/∂x  = B_x(g; ġw, ·, sh) + B_x(g; w, ·, ġsh)
    ∂/∂sh = B_sh(g; ġw, x, ·) + B_sh(g; w, ġx, ·)

(multilinearity: ⟨ġ, B(g; w, x, sh)⟩ = ⟨g, F(ġw, x, sh) + F(w, ġx, sh) + F(w, x, ġsh)⟩). So the
double backward is three forward and three backward calls of the registered ops, and derivatives
of any order compose. Nothing E-sized is saved for the backward beyond the inputs: the per-edge
products are recomputed.

FLOPs: the formulas give what ``FlopCounterMode`` counts on the dense torch reference
(``equivariant._ctp_torch``, same convention), so a model's FLOP count does not depend on the
backend. With S = ``dense_pairs`` (Σ over output rows of the dim of their x segment), J harmonics,
K output rows, I x rows: forward 2EJS + 2ESC + EKC; backward [sh]·(2EJS + 2ESC) + [x]·(2ESC + EIC)
+ [w]·EKC + N·K·C.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from nnip_scale.ops._native import native_state

NATIVE_DTYPES = (torch.float32, torch.float64)


def ctp_native(plan, weights, x, sh, sender, receiver, n_atoms, receiver_ptr=None, sender_order=None):
    """``channelwise_tp_scatter`` on the native kernels (the plan supplies the CG tables; the batch's
    edge layout, when given, spares the kernels their sorts)."""
    return torch.ops.nnip_scale.channelwise_tp_scatter(
        weights, x, sh, sender, receiver, n_atoms, *plan.native_tables(x.dtype), plan.dense_pairs,
        receiver_ptr, sender_order
    )


def forward_flops(e: int, c: int, j: int, k: int, dense_pairs: int) -> int:
    return 2 * e * j * dense_pairs + 2 * e * dense_pairs * c + e * k * c


def backward_flops(e, c, i, j, k, n, dense_pairs, need_weights, need_x, need_sh) -> int:
    total = n * k * c
    if need_sh:
        total += 2 * e * j * dense_pairs + 2 * e * dense_pairs * c
    if need_x:
        total += 2 * e * dense_pairs * c + e * i * c
    if need_weights:
        total += e * k * c
    return total


def _register() -> None:
    """Fake kernels, autograd and FLOP formulas of the native ops (requires ``_C`` loaded)."""
    ops = torch.ops.nnip_scale
    fwd_name, bwd_name = "nnip_scale::channelwise_tp_scatter", "nnip_scale::channelwise_tp_scatter_backward"

    def check_shapes(op, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff):
        e = sh.shape[0]
        torch._check(x.dim() == 3, lambda: f"{op}: x must be 3-D [A, I, C]")
        torch._check(weights.dim() == 3 and weights.shape[0] == e and weights.shape[2] == x.shape[2],
                     lambda: f"{op}: weights must be [E, P, C] with E = sh.size(0), C = x.size(2)")
        torch._check(sh.dim() == 2, lambda: f"{op}: sh must be 2-D [E, J]")
        torch._check(sender.dim() == 1 and sender.shape[0] == e, lambda: f"{op}: sender must be [E]")
        torch._check(receiver.dim() == 1 and receiver.shape[0] == e, lambda: f"{op}: receiver must be [E]")
        torch._check(pair_ptr.shape[0] == path_of_k.shape[0] + 1, lambda: f"{op}: pair_ptr must be [K + 1]")
        torch._check(entry_ptr.shape[0] == pair_x.shape[0] + 1, lambda: f"{op}: entry_ptr must be [Q + 1]")
        torch._check(entry_coeff.shape[0] == entry_sh.shape[0], lambda: f"{op}: entry_coeff must be [nnz]")
        for t in (weights, sh, entry_coeff):
            torch._check(t.dtype == x.dtype, lambda: f"{op}: weights, sh and entry_coeff must have x's dtype")

    @torch.library.register_fake(fwd_name)
    def _(weights, x, sh, sender, receiver, n_atoms, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff, dense_pairs,
          receiver_ptr=None, sender_order=None):
        check_shapes(fwd_name, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff)
        check_layout(fwd_name, sh.shape[0], n_atoms, receiver_ptr, sender_order)
        return x.new_empty((n_atoms, path_of_k.shape[0], x.shape[2]))

    @torch.library.register_fake(bwd_name)
    def _(grad_out, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff,
          dense_pairs, need_weights, need_x, need_sh, receiver_ptr=None, sender_order=None):
        check_shapes(bwd_name, weights, x, sh, sender, receiver, path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff)
        check_layout(bwd_name, sh.shape[0], grad_out.shape[0], receiver_ptr, sender_order)
        torch._check(grad_out.dim() == 3 and grad_out.shape[1] == path_of_k.shape[0] and grad_out.shape[2] == x.shape[2],
                     lambda: f"{bwd_name}: grad_out must be [N, K, C]")
        e = sh.shape[0]
        return (
            x.new_empty((e if need_weights else 0, weights.shape[1], x.shape[2])),
            x.new_empty((x.shape[0] if need_x else 0, x.shape[1], x.shape[2])),
            x.new_empty((e if need_sh else 0, sh.shape[1])),
        )

    def check_layout(op, e, n_receivers, receiver_ptr, sender_order):
        if receiver_ptr is not None:
            torch._check(receiver_ptr.dim() == 1 and receiver_ptr.shape[0] == n_receivers + 1,
                         lambda: f"{op}: receiver_ptr must be [n_atoms + 1]")
        if sender_order is not None:
            torch._check(sender_order.dim() == 1 and sender_order.shape[0] == e, lambda: f"{op}: sender_order must be [E]")

    # ------------------------------------------------------------------ autograd of the forward
    def fwd_setup(ctx, inputs, output):
        weights, x, sh, sender, receiver, n_atoms, *rest = inputs
        tables, dense_pairs, receiver_ptr, sender_order = rest[:6], rest[6], rest[7], rest[8]
        ctx.save_for_backward(weights, x, sh, sender, receiver, *tables, receiver_ptr, sender_order)
        ctx.dense_pairs = dense_pairs

    def fwd_backward(ctx, grad):
        weights, x, sh, sender, receiver, *tables, receiver_ptr, sender_order = ctx.saved_tensors
        nw, nx, nsh = ctx.needs_input_grad[:3]
        none = (None,) * 12
        if not (nw or nx or nsh):
            return (None, None, None) + none
        gw, gx, gsh = ops.channelwise_tp_scatter_backward(
            grad, weights, x, sh, sender, receiver, *tables, ctx.dense_pairs, nw, nx, nsh, receiver_ptr, sender_order
        )
        return (gw if nw else None, gx if nx else None, gsh if nsh else None) + none

    torch.library.register_autograd(fwd_name, fwd_backward, setup_context=fwd_setup)

    # ------------------------------------------------------------------ autograd of the backward
    def bwd_setup(ctx, inputs, output):
        grad_out, weights, x, sh, sender, receiver, *rest = inputs
        tables, (dense_pairs, nw, nx, nsh, receiver_ptr, sender_order) = rest[:6], rest[6:]
        ctx.save_for_backward(grad_out, weights, x, sh, sender, receiver, *tables, receiver_ptr, sender_order)
        ctx.dense_pairs, ctx.computed = dense_pairs, (nw, nx, nsh)

    def bwd_backward(ctx, ggw, ggx, ggsh):
        g, w, x, sh, sender, receiver, *tables, receiver_ptr, sender_order = ctx.saved_tensors
        dense = ctx.dense_pairs
        # upstream gradients of the outputs that were computed (the others come back as 0-row tensors)
        ggw, ggx, ggsh = (t if (c and t is not None) else None for t, c in zip((ggw, ggx, ggsh), ctx.computed))
        need_g, need_w, need_x, need_sh = ctx.needs_input_grad[:4]
        n_atoms = g.shape[0]

        def fwd(a, b, c):
            return ops.channelwise_tp_scatter(a, b, c, sender, receiver, n_atoms, *tables, dense, receiver_ptr,
                                              sender_order)

        def bwd(a, b, c, nw, nx, nsh):
            return ops.channelwise_tp_scatter_backward(g, a, b, c, sender, receiver, *tables, dense, nw, nx, nsh,
                                                       receiver_ptr, sender_order)

        d_g = d_w = d_x = d_sh = None

        def add(acc, t):
            return t if acc is None else acc + t

        if need_g:
            if ggw is not None:
                d_g = add(d_g, fwd(ggw, x, sh))
            if ggx is not None:
                d_g = add(d_g, fwd(w, ggx, sh))
            if ggsh is not None:
                d_g = add(d_g, fwd(w, x, ggsh))
        if ggw is not None and (need_x or need_sh):
            _, bx, bsh = bwd(ggw, x, sh, False, need_x, need_sh)
            d_x = bx if need_x else d_x
            d_sh = bsh if need_sh else d_sh
        if ggx is not None and (need_w or need_sh):
            bw, _, bsh = bwd(w, ggx, sh, need_w, False, need_sh)
            d_w = bw if need_w else d_w
            d_sh = add(d_sh, bsh) if need_sh else d_sh
        if ggsh is not None and (need_w or need_x):
            bw, bx, _ = bwd(w, x, ggsh, need_w, need_x, False)
            d_w = add(d_w, bw) if need_w else d_w
            d_x = add(d_x, bx) if need_x else d_x
        return (d_g, d_w, d_x, d_sh) + (None,) * 14

    torch.library.register_autograd(bwd_name, bwd_backward, setup_context=bwd_setup)

    # ------------------------------------------------------------------ FLOP formulas
    @register_flop_formula(ops.channelwise_tp_scatter)
    def _(weights_shape, x_shape, sh_shape, sender_shape, receiver_shape, n_atoms, path_of_k_shape, *args,
          out_shape=None, **kwargs) -> int:
        dense_pairs = args[5]  # after pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff
        return forward_flops(int(sh_shape[0]), int(x_shape[2]), int(sh_shape[1]), int(path_of_k_shape[0]), int(dense_pairs))

    @register_flop_formula(ops.channelwise_tp_scatter_backward)
    def _(grad_shape, weights_shape, x_shape, sh_shape, sender_shape, receiver_shape, path_of_k_shape, *args,
          out_shape=None, **kwargs) -> int:
        dense_pairs, nw, nx, nsh = args[5:9]
        return backward_flops(int(sh_shape[0]), int(x_shape[2]), int(x_shape[1]), int(sh_shape[1]),
                              int(path_of_k_shape[0]), int(grad_shape[0]), int(dense_pairs), nw, nx, nsh)


if native_state()["ok"]:
    _register()
