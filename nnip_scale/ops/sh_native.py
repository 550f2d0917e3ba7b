"""Native spherical harmonics: the harmonics as a table-driven polynomial on the symmetric-contraction kernels.

Y(v) up to ℓmax is a polynomial of degree ℓmax in the three components of v, with no weights: the same
kind of polynomial the native symmetric contraction evaluates (a monomial tree and CSR coefficients,
``PolynomialPlan.native_tables``; an unweighted plan has one implicit unit weight slot). So the harmonics
run on the registered ``symmetric_contraction`` kernels (forward, backward, double backward) with unit
weights (ones, no gradient) and one element (index zeros). No kernel of their own: the contraction
kernels are table-driven, and the harmonics are ≤ 1 % of a MACE training step (docs/ops.md has the numbers).

Layout: the contraction's kernels vectorise over channels (x [N, M, C], C innermost). With the edges
as its "atoms" (x = vectors viewed as [E, 3, 1]: one channel) they ran 3–14× slower than the torch
reference (scalar code per edge); so the edges are its channels instead, in blocks of ``EDGE_BLOCK``:
x [ceil(E / B), 3, B], weights [1, 1, B], index zeros [ceil(E / B)], the last block padded with zeros,
and [E, F] <-> [N, F, B] transposing copies around each call. The blocks give OpenMP its parallelism.

Three thin registered ops (schemas defined here, in Python; their CPU kernels call the contraction's
ops): ``torch.ops.nnip_scale.spherical_harmonics(vectors, <tables>, n_out, n_products) -> [E, n_out]``,
its vector-Jacobian product ``spherical_harmonics_backward(grad_out, vectors, <tables>, n_out,
n_products) -> grad_vectors [E, 3]`` and the vector-Jacobian product of that,
``spherical_harmonics_double_backward(grad_out, vectors, tangent, <tables>, n_out, n_products,
need_grad_out, need_vectors) -> (d_grad_out [E, n_out], d_vectors [E, 3])`` (an output not requested
has 0 rows). ``<tables>`` are the seven tables of the contraction; ``n_products`` = the monomials of
degree ≥ 2 (it only serves the FLOP formulas). Third and higher derivatives raise an error naming the
op (a conservative MACE's force loss needs second derivatives only).

Why own ops and not a direct call of the contraction's: a model's FLOP count must not depend on its
backend (docs/ops.md, "FLOP convention"), and ``FlopCounterMode`` counts what the dispatcher sees. Run
directly, the contraction's ops would be counted with the contraction's formulas (which count the dense
reference's weight rows and 0/1 output map, 2ER·K more than the harmonics' reference in the forward).
Wrapped in these ops, the counter sees them only (a counted op is not decomposed) and counts the
harmonics' formulas: what it counts on the torch reference ``equivariant._sh_torch`` (the monomials
x[prefix] · x[last] per degree, then ``mono @ S.T``), with E edges, Q monomials (``mono_parent``), R
rows (``row_out``; R = n_out), P = ``n_products``:

- forward 2ERQ (the matmul; the monomial products are element-wise, not counted);
- backward 2ERQ + 2EP (the matmul's backward; the reference's two gathers per product monomial are
  ``index_add`` in the backward, E per monomial each);
- double backward [need_grad_out]·2ERQ + [need_vectors]·2EP (the matmul again for the cotangent of
  grad_out; the same gathers' backward for the vectors).

CUDA: the contraction's CUDA twin is compiled but not registered with the resolver (docs/ops.md), so
these ops have a CPU kernel only; registering them on CUDA means adding ``"CUDA"`` to ``_DEVICES`` and to
the op's ``native_dtypes`` once that twin is.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.flop_counter import register_flop_formula

from nnip_scale.ops._native import native_state

NATIVE_DTYPES = (torch.float32, torch.float64)
_DEVICES = ("CPU",)
_TABLES = "Tensor mono_parent, Tensor mono_var, Tensor row_ptr, Tensor entry_mono, Tensor entry_coeff, " \
          "Tensor row_out, Tensor row_weight"
N_TABLES = 7  # mono_parent, mono_var, row_ptr, entry_mono, entry_coeff, row_out, row_weight (entry_coeff: index 4)
SCHEMAS = {
    "spherical_harmonics": f"(Tensor vectors, {_TABLES}, int n_out, int n_products) -> Tensor",
    "spherical_harmonics_backward": f"(Tensor grad_out, Tensor vectors, {_TABLES}, int n_out, int n_products) -> Tensor",
    "spherical_harmonics_double_backward": (f"(Tensor grad_out, Tensor vectors, Tensor tangent, {_TABLES}, int n_out, "
                                            "int n_products, bool need_grad_out, bool need_vectors) -> (Tensor, Tensor)"),
}
_NAMES = {op: f"nnip_scale::{op}" for op in SCHEMAS}


def native_args(plan, dtype: torch.dtype) -> tuple:
    """The arguments after ``vectors`` (and ``grad_out``/``tangent``) of the three ops: the plan's seven
    tables (``entry_coeff`` in ``dtype``), ``n_out`` and ``n_products`` (monomials of degree ≥ 2: all but
    the M = 3 first-degree ones and the constant)."""
    n_products = plan.n_monomials - plan.n_x - int(plan.has_constant)
    return (*plan.native_tables(dtype), plan.n_out, n_products)


def sh_native(plan, vectors: torch.Tensor) -> torch.Tensor:
    """``spherical_harmonics`` on the native kernels (the plan supplies the polynomial's tables)."""
    return torch.ops.nnip_scale.spherical_harmonics(vectors, *native_args(plan, vectors.dtype))


def sh_native_limit(components: int = 0, degree: int = 0) -> str | None:
    """Why the native harmonics cannot serve a plan with ``components`` outputs of polynomial ``degree``
    (the contraction kernels' tested range: at most 16 components, degree ≤ 3, i.e. ℓ ≤ 3)."""
    if components > 16 or degree > 3:
        return (f"{components} components of degree {degree} (ℓ > 3): the native harmonics run on the symmetric "
                "contraction's kernels, table-driven but tested for at most 16 components and degree ≤ 3 only")
    return None


def forward_flops(e: int, q: int, r: int) -> int:
    return 2 * e * r * q


def backward_flops(e: int, q: int, r: int, n_products: int) -> int:
    return 2 * e * r * q + 2 * e * n_products


def double_backward_flops(e: int, q: int, r: int, n_products: int, need_grad_out: bool, need_vectors: bool) -> int:
    return (2 * e * r * q if need_grad_out else 0) + (2 * e * n_products if need_vectors else 0)


# ----------------------------------------------------------------------------- the kernels
def _require(cond: bool, message) -> None:
    """``torch._check`` for the eager kernels, without its symbolic-shape machinery (cheaper per call)."""
    if not cond:
        raise RuntimeError(message())


def _check(op: str, vectors, entry_coeff, n_out: int, grad_out=None, tangent=None, require=_require) -> None:
    """The arguments the harmonics' ops add to the contraction's (whose kernels check the tables): an error
    names this op and the argument. Shared by the CPU kernels and (``require=torch._check``) the fake kernels."""
    require(vectors.dim() == 2 and vectors.shape[1] == 3, lambda: f"{op}: vectors must be [E, 3]")
    for name, t in (("entry_coeff", entry_coeff), ("grad_out", grad_out), ("tangent", tangent)):
        require(t is None or t.dtype == vectors.dtype, lambda name=name: f"{op}: {name} must have the vectors' dtype")
    if grad_out is not None:
        require(grad_out.dim() == 2 and grad_out.shape[0] == vectors.shape[0] and grad_out.shape[1] == n_out,
                lambda: f"{op}: grad_out must be [E, n_out={n_out}] with E = vectors.size(0)")
    if tangent is not None:
        require(tangent.shape == vectors.shape, lambda: f"{op}: tangent must be [E, 3] like vectors")


EDGE_BLOCK = 64  # edges per contraction "atom" (its channels); module docstring, "Layout"


def _to_channels(t: torch.Tensor) -> torch.Tensor:
    """[E, F] -> [ceil(E / B), F, B] (B = ``EDGE_BLOCK``): edges become the contraction's channels, blocks of
    B edges its atoms; the last block is padded with zeros (their outputs are dropped, their cotangents are
    0). One allocation, one transposing copy (any strides: also an expanded gradient)."""
    e, f = t.shape
    full, rem = divmod(e, EDGE_BLOCK)
    out = t.new_empty((full + (rem > 0), f, EDGE_BLOCK))
    if full:
        out[:full].copy_(t[: full * EDGE_BLOCK].reshape(full, EDGE_BLOCK, f).transpose(1, 2))
    if rem:
        out[full, :, rem:].zero_()
        out[full, :, :rem].copy_(t[full * EDGE_BLOCK:].T)
    return out


def _from_channels(t: torch.Tensor, e: int) -> torch.Tensor:
    """The inverse of ``_to_channels``: [N, F, B] -> [E, F]."""
    return t.transpose(1, 2).reshape(-1, t.shape[1])[:e].contiguous()


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The contraction's unit weights [1, 1, B] (one element, one weight slot) and index zeros [N]."""
    return x.new_ones((1, 1, x.shape[2])), torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


@contextlib.contextmanager
def _named(op: str):
    """An error of the contraction's kernels (e.g. inconsistent tables) also names the harmonics' op."""
    try:
        yield
    except RuntimeError as err:
        raise RuntimeError(f"{op} (on the symmetric contraction's kernels): {err}") from err


def _forward(vectors, *rest):
    tables, n_out, op = rest[:N_TABLES], rest[N_TABLES], _NAMES["spherical_harmonics"]
    _check(op, vectors, tables[4], n_out)
    x = _to_channels(vectors)
    with _named(op):
        out = torch.ops.nnip_scale.symmetric_contraction(x, *_unit(x), *tables, n_out)
    return _from_channels(out, vectors.shape[0])


def _backward(grad_out, vectors, *rest):
    tables, n_out, op = rest[:N_TABLES], rest[N_TABLES], _NAMES["spherical_harmonics_backward"]
    _check(op, vectors, tables[4], n_out, grad_out=grad_out)
    x = _to_channels(vectors)
    with _named(op):
        gx, _ = torch.ops.nnip_scale.symmetric_contraction_backward(_to_channels(grad_out), x, *_unit(x), *tables,
                                                                    n_out, True, False)
    return _from_channels(gx, vectors.shape[0])


def _double_backward(grad_out, vectors, tangent, *rest):
    tables, (n_out, _, need_grad_out, need_vectors) = rest[:N_TABLES], rest[N_TABLES:]
    op = _NAMES["spherical_harmonics_double_backward"]
    _check(op, vectors, tables[4], n_out, grad_out=grad_out, tangent=tangent)
    x, e = _to_channels(vectors), vectors.shape[0]
    with _named(op):
        dg, dx, _ = torch.ops.nnip_scale.symmetric_contraction_double_backward(
            _to_channels(grad_out), x, *_unit(x), _to_channels(tangent), None, *tables, n_out, need_grad_out,
            need_vectors, False)
    return _from_channels(dg, e if need_grad_out else 0), _from_channels(dx, e if need_vectors else 0)


def _register() -> None:
    """Schemas, CPU kernels, fake kernels, autograd and FLOP formulas of the three ops (requires ``_C``:
    the kernels are the contraction's)."""
    fwd_name, bwd_name, dbl_name = _NAMES.values()
    for op, kernel in zip(SCHEMAS, (_forward, _backward, _double_backward), strict=True):
        torch.library.define(_NAMES[op], SCHEMAS[op])
        torch.library.impl(_NAMES[op], _DEVICES, kernel)
    ops = torch.ops.nnip_scale

    @torch.library.register_fake(fwd_name)
    def _(vectors, *rest):
        _check(fwd_name, vectors, rest[4], rest[N_TABLES], require=torch._check)
        return vectors.new_empty((vectors.shape[0], rest[N_TABLES]))

    @torch.library.register_fake(bwd_name)
    def _(grad_out, vectors, *rest):
        _check(bwd_name, vectors, rest[4], rest[N_TABLES], grad_out=grad_out, require=torch._check)
        return vectors.new_empty(vectors.shape)

    @torch.library.register_fake(dbl_name)
    def _(grad_out, vectors, tangent, *rest):
        n_out, _, need_grad_out, need_vectors = rest[N_TABLES:]
        _check(dbl_name, vectors, rest[4], n_out, grad_out=grad_out, tangent=tangent, require=torch._check)
        e = vectors.shape[0]
        return vectors.new_empty((e if need_grad_out else 0, n_out)), vectors.new_empty((e if need_vectors else 0, 3))

    # ------------------------------------------------------------------ autograd
    def fwd_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:1 + N_TABLES])
        ctx.sizes = inputs[1 + N_TABLES:]

    def fwd_backward(ctx, grad):
        vectors, *tables = ctx.saved_tensors
        none = (None,) * (N_TABLES + 2)
        if grad is None or not ctx.needs_input_grad[0]:
            return (None,) + none
        return (ops.spherical_harmonics_backward(grad, vectors, *tables, *ctx.sizes),) + none

    torch.library.register_autograd(fwd_name, fwd_backward, setup_context=fwd_setup)

    def bwd_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:2 + N_TABLES])
        ctx.sizes = inputs[2 + N_TABLES:]

    def bwd_backward(ctx, tangent):
        grad_out, vectors, *tables = ctx.saved_tensors
        need_g, need_v = ctx.needs_input_grad[:2]
        none = (None,) * (N_TABLES + 2)
        if tangent is None or not (need_g or need_v):
            return (None, None) + none
        dg, dv = ops.spherical_harmonics_double_backward(grad_out, vectors, tangent, *tables, *ctx.sizes, need_g, need_v)
        return (dg if need_g else None, dv if need_v else None) + none

    torch.library.register_autograd(bwd_name, bwd_backward, setup_context=bwd_setup)

    def dbl_setup(ctx, inputs, output):
        pass

    def dbl_backward(ctx, *grads):
        raise RuntimeError(f"{dbl_name}: third and higher derivatives of the native spherical harmonics are not "
                           "implemented (backend='native'); use backend='torch' for them")

    torch.library.register_autograd(dbl_name, dbl_backward, setup_context=dbl_setup)

    # ------------------------------------------------------------------ FLOP formulas (shapes; module docstring)
    def sizes(vectors_shape, mono_parent_shape, row_out_shape):
        return int(vectors_shape[0]), int(mono_parent_shape[0]), int(row_out_shape[0])

    @register_flop_formula(ops.spherical_harmonics)
    def _(vectors_shape, mono_parent_shape, mono_var_shape, row_ptr_shape, entry_mono_shape, entry_coeff_shape,
          row_out_shape, row_weight_shape, n_out, n_products, out_shape=None, **kwargs) -> int:
        return forward_flops(*sizes(vectors_shape, mono_parent_shape, row_out_shape))

    @register_flop_formula(ops.spherical_harmonics_backward)
    def _(grad_shape, vectors_shape, mono_parent_shape, mono_var_shape, row_ptr_shape, entry_mono_shape,
          entry_coeff_shape, row_out_shape, row_weight_shape, n_out, n_products, out_shape=None, **kwargs) -> int:
        return backward_flops(*sizes(vectors_shape, mono_parent_shape, row_out_shape), n_products)

    @register_flop_formula(ops.spherical_harmonics_double_backward)
    def _(grad_shape, vectors_shape, tangent_shape, mono_parent_shape, mono_var_shape, row_ptr_shape,
          entry_mono_shape, entry_coeff_shape, row_out_shape, row_weight_shape, n_out, n_products, need_grad_out,
          need_vectors, out_shape=None, **kwargs) -> int:
        return double_backward_flops(*sizes(vectors_shape, mono_parent_shape, row_out_shape), n_products,
                                     need_grad_out, need_vectors)


if native_state()["ok"]:
    _register()
