"""Native symmetric contraction (the MACE/ACE product basis with per-element weights).

Registers, for ``torch.ops.nnip_scale.symmetric_contraction``, its vector-Jacobian product
``torch.ops.nnip_scale.symmetric_contraction_backward`` and the vector-Jacobian product of that,
``torch.ops.nnip_scale.symmetric_contraction_double_backward`` (schemas in
``csrc/symmetric_contraction/schema.cpp``, CPU kernels in ``csrc/symmetric_contraction/cpu/``, CUDA kernels
in ``csrc/symmetric_contraction/cuda/``: compiled, not registered with the resolver until run on a GPU,
docs/ops.md): fake kernels (shapes from the inputs only), autograd and FLOP formulas.

The contraction out = F(x, W) = Σ_r W[z, w_r] ⊙ P_r(x) is a polynomial of degree ν (the correlation)
in the features x and linear in the weights W. Derivatives:

- backward ``B(g; x, W) = (∂/∂x, ∂/∂W) ⟨g, F(x, W)⟩`` (grad_x, grad_W; only the requested ones);
- double backward: for cotangents (vx, vW) of (grad_x, grad_W), ⟨(vx, vW), B(g; x, W)⟩ =
  ⟨g, Ḟ⟩ with Ḟ = ∂F/∂x·vx + F(x, vW) the forward-mode derivative of F along (vx, vW). So
  ∂/∂g = Ḟ, and ∂/∂x, ∂/∂W are the reverse mode of ⟨g, Ḟ⟩ (second derivatives of the
  monomials of x). One fused op computes the three (``need_*`` flags), recomputing the monomials of
  x; nothing N-sized is saved for the backward beyond the inputs.
- third and higher derivatives are not implemented: differentiating the double backward raises an
  error naming the op (a conservative MACE's force loss needs second derivatives only).

FLOPs: the formulas give what ``FlopCounterMode`` counts on the torch reference
(``equivariant._sc_torch``: the dense product-basis matrix S [R, Q] times the monomials, then the 0/1
map of rows to outputs; the ``index_add`` backward of its gathers at 1 FLOP per element;
elementwise products not counted; ``nnip_scale.training.flops.count_flops``), so a model's FLOP
count does not depend on the backend. N atoms, C channels, M = x rows, Z elements, Q monomials,
R rows, K outputs: forward 2NC·R(Q + K); backward 2NC·R·K + [x]·(2NC·R·Q + 2NC·(Q − M)) +
[W]·(N + Z)·R·C; double backward, with tangents vx, vW: [vx ∧ (W ∨ g)]·2NC·R·Q + [g ∧ (vx ∨ vW)]·2NC·R·K
+ [vW ∧ x]·2NC·R·Q + [x ∧ (vx ∨ vW)]·2NC·(Q − M) + [W ∧ vx]·(N + Z)·R·C (the products of the reference
that the same derivative goes through). Q − M assumes no constant monomial (the product basis has
degrees 1..ν; with one, the count is 2NC higher than the reference's).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from nnip_scale.ops._native import native_state

NATIVE_DTYPES = (torch.float32, torch.float64)
N_TABLES = 7  # mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight


def sc_native(plan, x, weights, index):
    """``symmetric_contraction`` on the native kernels (the plan supplies the product-basis tables)."""
    return torch.ops.nnip_scale.symmetric_contraction(x, weights, index, *plan.native_tables(x.dtype), plan.n_out)


def forward_flops(n: int, c: int, q: int, r: int, k: int) -> int:
    return 2 * n * c * r * (q + k)


def backward_flops(n: int, c: int, m: int, z: int, q: int, r: int, k: int, need_x: bool, need_weights: bool) -> int:
    if not (need_x or need_weights):
        return 0
    total = 2 * n * c * r * k
    if need_x:  # S^T times the monomial gradient; index_add of the monomial products' gathers
        total += 2 * n * c * r * q + 2 * n * c * (q - m)
    if need_weights:  # index_add of the weight gathers (per atom, per row)
        total += (n + z) * r * c
    return total


def double_backward_flops(n: int, c: int, m: int, z: int, q: int, r: int, k: int, has_tangent_x: bool,
                          has_tangent_weights: bool, need_grad_out: bool, need_x: bool, need_weights: bool) -> int:
    rq, rk = 2 * n * c * r * q, 2 * n * c * r * k
    total = rq if has_tangent_x and (need_weights or need_grad_out) else 0
    total += rk if need_grad_out and (has_tangent_x or has_tangent_weights) else 0
    total += rq if has_tangent_weights and need_x else 0
    total += 2 * n * c * (q - m) if need_x and (has_tangent_x or has_tangent_weights) else 0
    return total + ((n + z) * r * c if need_weights and has_tangent_x else 0)


def _register() -> None:
    """Fake kernels, autograd and FLOP formulas of the native ops (requires ``_C`` loaded)."""
    ops = torch.ops.nnip_scale
    fwd_name = "nnip_scale::symmetric_contraction"
    bwd_name = "nnip_scale::symmetric_contraction_backward"
    dbl_name = "nnip_scale::symmetric_contraction_double_backward"

    def check_shapes(op, x, weights, index, mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out,
                     row_weight):
        torch._check(x.dim() == 3, lambda: f"{op}: x must be 3-D [N, M, C]")
        torch._check(weights.dim() == 3 and weights.shape[2] == x.shape[2],
                     lambda: f"{op}: weights must be [Z, Wn, C] with C = x.size(2)")
        torch._check(index.dim() == 1 and index.shape[0] == x.shape[0], lambda: f"{op}: index must be [N]")
        torch._check(index.dtype == torch.int64, lambda: f"{op}: index must be int64")
        torch._check(mono_var.shape[0] == mono_parent.shape[0], lambda: f"{op}: mono_var must be [Q]")
        torch._check(row_ptr.shape[0] == row_out.shape[0] + 1, lambda: f"{op}: row_ptr must be [R + 1]")
        torch._check(row_weight.shape[0] == row_out.shape[0], lambda: f"{op}: row_weight must be [R]")
        torch._check(entry_coeff.shape[0] == entry_mono.shape[0], lambda: f"{op}: entry_coeff must be [nnz]")
        for t in (weights, entry_coeff):
            torch._check(t.dtype == x.dtype, lambda: f"{op}: weights and entry_coeff must have x's dtype")

    def check_grad_out(op, grad_out, x, n_out):
        torch._check(grad_out.dim() == 3 and grad_out.shape[0] == x.shape[0] and grad_out.shape[1] == n_out
                     and grad_out.shape[2] == x.shape[2], lambda: f"{op}: grad_out must be [N, n_out, C]")

    @torch.library.register_fake(fwd_name)
    def _(x, weights, index, *rest):
        tables, n_out = rest[:N_TABLES], rest[N_TABLES]
        check_shapes(fwd_name, x, weights, index, *tables)
        return x.new_empty((x.shape[0], n_out, x.shape[2]))

    @torch.library.register_fake(bwd_name)
    def _(grad_out, x, weights, index, *rest):
        tables, (n_out, need_x, need_weights) = rest[:N_TABLES], rest[N_TABLES:]
        check_shapes(bwd_name, x, weights, index, *tables)
        check_grad_out(bwd_name, grad_out, x, n_out)
        return (x.new_empty((x.shape[0] if need_x else 0, x.shape[1], x.shape[2])),
                x.new_empty((weights.shape[0] if need_weights else 0, weights.shape[1], x.shape[2])))

    @torch.library.register_fake(dbl_name)
    def _(grad_out, x, weights, index, tangent_x, tangent_weights, *rest):
        tables, (n_out, need_grad_out, need_x, need_weights) = rest[:N_TABLES], rest[N_TABLES:]
        check_shapes(dbl_name, x, weights, index, *tables)
        check_grad_out(dbl_name, grad_out, x, n_out)
        return (x.new_empty((x.shape[0] if need_grad_out else 0, n_out, x.shape[2])),
                x.new_empty((x.shape[0] if need_x else 0, x.shape[1], x.shape[2])),
                x.new_empty((weights.shape[0] if need_weights else 0, weights.shape[1], x.shape[2])))

    # ------------------------------------------------------------------ autograd of the forward
    def fwd_setup(ctx, inputs, output):
        x, weights, index, *rest = inputs
        ctx.save_for_backward(x, weights, index, *rest[:N_TABLES])
        ctx.n_out = rest[N_TABLES]

    def fwd_backward(ctx, grad):
        x, weights, index, *tables = ctx.saved_tensors
        nx, nw = ctx.needs_input_grad[:2]
        none = (None,) * (2 + N_TABLES)
        if not (nx or nw) or grad is None:
            return (None, None) + none
        gx, gw = ops.symmetric_contraction_backward(grad, x, weights, index, *tables, ctx.n_out, nx, nw)
        return (gx if nx else None, gw if nw else None) + none

    torch.library.register_autograd(fwd_name, fwd_backward, setup_context=fwd_setup)

    # ------------------------------------------------------------------ autograd of the backward
    def bwd_setup(ctx, inputs, output):
        grad_out, x, weights, index, *rest = inputs
        ctx.save_for_backward(grad_out, x, weights, index, *rest[:N_TABLES])
        ctx.n_out, ctx.computed = rest[N_TABLES], tuple(rest[N_TABLES + 1:])

    def bwd_backward(ctx, ggx, ggw):
        g, x, weights, index, *tables = ctx.saved_tensors
        # upstream gradients of the outputs that were computed (the others come back as 0-row tensors)
        ggx, ggw = (t if (c and t is not None) else None for t, c in zip((ggx, ggw), ctx.computed))
        need_g, need_x, need_w = ctx.needs_input_grad[:3]
        none = (None,) * (1 + N_TABLES + 3)
        if (ggx is None and ggw is None) or not (need_g or need_x or need_w):
            return (None, None, None) + none
        dg, dx, dw = ops.symmetric_contraction_double_backward(
            g, x, weights, index, ggx, ggw, *tables, ctx.n_out, need_g, need_x, need_w
        )
        return (dg if need_g else None, dx if need_x else None, dw if need_w else None) + none

    torch.library.register_autograd(bwd_name, bwd_backward, setup_context=bwd_setup)

    # ------------------------------------------------------------------ the double backward: no further
    def dbl_setup(ctx, inputs, output):
        pass

    def dbl_backward(ctx, *grads):
        raise RuntimeError(
            f"{dbl_name}: third and higher derivatives of the native symmetric contraction are not "
            "implemented (backend='native'); use backend='torch' for them"
        )

    torch.library.register_autograd(dbl_name, dbl_backward, setup_context=dbl_setup)

    # ------------------------------------------------------------------ FLOP formulas
    @register_flop_formula(ops.symmetric_contraction)
    def _(x_shape, weights_shape, index_shape, mono_parent_shape, mono_var_shape, row_ptr_shape, entry_mono_shape,
          entry_coeff_shape, row_out_shape, row_weight_shape, n_out, out_shape=None, **kwargs) -> int:
        return forward_flops(int(x_shape[0]), int(x_shape[2]), int(mono_parent_shape[0]), int(row_out_shape[0]),
                             int(n_out))

    @register_flop_formula(ops.symmetric_contraction_backward)
    def _(grad_shape, x_shape, weights_shape, index_shape, mono_parent_shape, mono_var_shape, row_ptr_shape,
          entry_mono_shape, entry_coeff_shape, row_out_shape, row_weight_shape, n_out, need_x, need_weights,
          out_shape=None, **kwargs) -> int:
        return backward_flops(int(x_shape[0]), int(x_shape[2]), int(x_shape[1]), int(weights_shape[0]),
                              int(mono_parent_shape[0]), int(row_out_shape[0]), int(n_out), need_x, need_weights)

    @register_flop_formula(ops.symmetric_contraction_double_backward)
    def _(grad_shape, x_shape, weights_shape, index_shape, tangent_x_shape, tangent_weights_shape, mono_parent_shape,
          mono_var_shape, row_ptr_shape, entry_mono_shape, entry_coeff_shape, row_out_shape, row_weight_shape, n_out,
          need_grad_out, need_x, need_weights, out_shape=None, **kwargs) -> int:
        return double_backward_flops(int(x_shape[0]), int(x_shape[2]), int(x_shape[1]), int(weights_shape[0]),
                                     int(mono_parent_shape[0]),
                                     int(row_out_shape[0]), int(n_out), tangent_x_shape is not None,
                                     tangent_weights_shape is not None, need_grad_out, need_x, need_weights)


if native_state()["ok"]:
    _register()
