"""Equivariant hot ops (MACE): spherical harmonics, the channel-wise tensor product with
gather/scatter (the interaction) and the symmetric contraction (the ACE product basis).

The math — which products, which Clebsch–Gordan coefficients — comes from cuequivariance
descriptors (``cue.SegmentedPolynomial``). A *plan* compiles one descriptor into index and
coefficient tensors: an ``nn.Module`` holding only non-persistent buffers (no parameters, nothing
in the state_dict), so it follows ``.to()``/``.double()`` and a checkpoint does not depend on it.
Backends: ``torch`` executes the plan with einsum/index ops (the ground truth; its sub-ops run
with ``backend="torch"``); ``cueq`` runs the very same polynomial through
``cuequivariance_torch.SegmentedPolynomial`` (``method="naive"`` on CPU, ``"uniform_1d"``/
``"fused_tp"`` on CUDA); ``native`` runs ``channelwise_tp_scatter`` on nnip_scale's fused CPU
kernel (``nnip_scale.ops.tp_native``) and ``symmetric_contraction`` on its CPU kernel
(``nnip_scale.ops.sc_native``); their CUDA twins are compiled but not registered with the resolver
until run on a GPU (docs/ops.md); ``spherical_harmonics`` runs natively on the contraction's CPU
kernels (``nnip_scale.ops.sh_native``, ℓ ≤ 3). Which backend runs is decided by
``nnip_scale.ops.registry.resolve_backend`` only. Weights are always passed in by the model.

Layout: cuequivariance's ``ir_mul``. Features of C channels over irreps of total dimension D are
[N, D, C] (component-major, channel inner; ``x.reshape(N, D*C)`` is the flat ir_mul layout).

FLOPs: the torch reference is einsum/bmm, so ``FlopCounterMode`` counts it; the registered
formulas give the same count from shapes (2 per multiply-add, gathers 0, scatter 1 per element).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import torch
from torch import nn

from nnip_scale.ops.registry import OpSpec, check_index_range, check_same_dtype, dispatch, is_native, register_op
from nnip_scale.ops.sc_native import NATIVE_DTYPES as SC_NATIVE_DTYPES
from nnip_scale.ops.sc_native import sc_native
from nnip_scale.ops.scatter import gather_rows, scatter_sum
from nnip_scale.ops.sh_native import NATIVE_DTYPES as SH_NATIVE_DTYPES
from nnip_scale.ops.sh_native import sh_native, sh_native_limit
from nnip_scale.ops.tp_native import NATIVE_DTYPES, ctp_native

_CUEQ_METHODS = {"cpu": "naive"}
_CUEQ_MODULES: dict[tuple, tuple] = {}


class _CueqCache:
    """Lazily built ``cuequivariance_torch.SegmentedPolynomial`` per (polynomial, device, dtype),
    shared process-wide (building one takes seconds) and kept off the module tree, so it never
    enters a state_dict."""

    def __init__(self, polynomial, cuda_method: str):
        self.polynomial, self.cuda_method = polynomial, cuda_method

    def get(self, t: torch.Tensor):
        key = (id(self.polynomial), t.device, t.dtype)
        if key not in _CUEQ_MODULES:
            import cuequivariance_torch as cuet

            method = _CUEQ_METHODS.get(t.device.type, self.cuda_method)
            math = t.dtype if method == "naive" or t.dtype in (torch.float32, torch.float64) else torch.float32
            module = cuet.SegmentedPolynomial(self.polynomial, method=method, math_dtype=math).to(t.device)
            _CUEQ_MODULES[key] = (self.polynomial, module)  # the polynomial is kept alive: its id stays unique
        return _CUEQ_MODULES[key][1]


class _Plan(nn.Module):
    """Base of the compiled plans: only non-persistent buffers. Floating tables stay float64 on
    every ``.to()``/``.float()``/``.double()`` (only their device follows), so a model built in
    fp32 and moved to fp64 keeps exact coefficients; ``table(name, dtype)`` casts on use."""

    def _apply(self, fn, recurse=True):
        for name, buf in self._buffers.items():
            if buf is not None:
                moved = fn(buf)
                self._buffers[name] = buf.to(device=moved.device, dtype=torch.float64) if buf.is_floating_point() else moved
        return self

    def table(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return getattr(self, name).to(dtype)


# ============================================================================ polynomial of one input
class PolynomialPlan(_Plan):
    """Compiled polynomial of one input x with at most one weight operand (``weighted``):
    out[k]_u = Σ_paths c · w[s0]_u · x[s1]_u ⋯ x[sν]_u, each x segment one scalar component
    (times a channel mode u for the symmetric contraction; none for spherical harmonics).

    Torch execution: the distinct monomials x_{s1}⋯x_{sν} (sorted index tuples, built degree by
    degree from their prefixes), then one dense matmul with S[row, monomial] (the summed path
    coefficients; row = (weight segment, output component)), then the weights and one matmul
    with the 0/1 map row → output component."""

    def __init__(self, polynomial, weighted: bool):
        super().__init__()
        self.polynomial, self.weighted = polynomial, bool(weighted)
        n_in = 2 if weighted else 1
        if polynomial.num_inputs != n_in or polynomial.num_outputs != 1:
            raise ValueError(f"PolynomialPlan: expected {n_in} input(s) and 1 output, got {polynomial}")
        x_op, out_op = n_in - 1, n_in
        self.n_x = polynomial.inputs[x_op].num_segments
        self.n_out = polynomial.outputs[0].num_segments
        self.n_weights = polynomial.inputs[0].num_segments if weighted else 0
        terms: dict[tuple, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        for op, stp in polynomial.operations:
            for path in stp.paths:
                c = path.coefficients
                if c.size != 1:
                    raise ValueError(f"PolynomialPlan: expected scalar path coefficients, got {c.shape}")
                w, xs, k = None, [], None
                for buf, seg in zip(op.buffers, path.indices):
                    if buf == x_op:
                        xs.append(seg)
                    elif buf == out_op:
                        k = seg
                    else:
                        w = seg
                row = (w, k) if weighted else (k,)
                terms[row][tuple(sorted(xs))] += float(c.reshape(()))
        degree = max((len(m) for t in terms.values() for m in t), default=0)
        levels: list[list[tuple]] = [[()], [(m,) for m in range(self.n_x)]]
        needed = {m for t in terms.values() for m in t}
        for d in range(degree, 1, -1):  # every prefix of a needed monomial is needed
            needed |= {m[:-1] for m in needed if len(m) == d}
        for d in range(2, degree + 1):
            levels.append(sorted(m for m in needed if len(m) == d))
        pos1 = {m: i for i, m in enumerate(levels[1])}
        for d in range(2, degree + 1):
            prev = {m: i for i, m in enumerate(levels[d - 1])}
            prefix = torch.tensor([prev[m[:-1]] for m in levels[d]], dtype=torch.long)
            last = torch.tensor([pos1[(m[-1],)] for m in levels[d]], dtype=torch.long)
            self.register_buffer(f"prefix{d}", prefix, persistent=False)
            self.register_buffer(f"last{d}", last, persistent=False)
        self.degree = degree
        self.has_constant = () in needed
        order = ([()] if self.has_constant else []) + [m for lev in levels[1:] for m in lev]
        col = {m: i for i, m in enumerate(order)}
        rows = sorted(terms, key=lambda r: tuple(-1 if v is None else v for v in r))
        if not weighted:
            rows = [(k,) for k in range(self.n_out)]
        s = torch.zeros(len(rows), len(order), dtype=torch.float64)
        for r, row in enumerate(rows):
            for m, c in terms.get(row, {}).items():
                s[r, col[m]] += c
        self.register_buffer("coeffs", s, persistent=False)
        if weighted:
            sel = torch.zeros(len(rows), self.n_out, dtype=torch.float64)
            sel[torch.arange(len(rows)), torch.tensor([k for _, k in rows])] = 1.0
            self.register_buffer("row_to_out", sel, persistent=False)
            self.register_buffer("row_weight", torch.tensor([w for w, _ in rows], dtype=torch.long), persistent=False)
        self.n_rows, self.n_monomials = len(rows), len(order)
        self.weight_init_std = _unit_output_weight_std(terms, self.n_weights) if weighted else None
        self.cueq = _CueqCache(polynomial, "uniform_1d")
        if weighted:
            self._build_native_tables(terms, rows, order, col)
        else:  # one implicit unit weight slot (w = 0): the native harmonics run on the contraction's kernels
            self._build_native_tables({(0, k): t for (k,), t in terms.items()}, [(0, k) for (k,) in rows], order, col)

    def _build_native_tables(self, terms, rows, order, col) -> None:
        """Sparse tables of the native symmetric contraction (csrc/symmetric_contraction/tables.h),
        built from the plan's own polynomial (pure Python: also under a meta device):

        - the monomial tree, in the column order of ``coeffs`` (Q = ``n_monomials``): monomial q is
          ``mono[mono_parent[q]] * x[mono_var[q]]`` (parent −1: ``x[mono_var[q]]``; var −1: the
          constant 1); every prefix comes before its extensions;
        - the nonzero coefficients of ``coeffs`` (R = ``n_rows`` rows) as CSR (``row_ptr``,
          ``entry_mono``, ``entry_coeff``), rows ordered by output then weight, each with its output
          row ``row_out`` and weight row ``row_weight``.
        Nothing about ℓ or the correlation is encoded elsewhere: the kernels only follow the tables."""
        parent = [-1 if len(m) <= 1 else col[m[:-1]] for m in order]
        var = [-1 if len(m) == 0 else m[-1] for m in order]
        row_ptr, entry_mono, entry_coeff, row_out, row_weight = [0], [], [], [], []
        for w, k in sorted(rows, key=lambda r: (r[1], r[0])):
            for m, c in sorted(terms.get((w, k), {}).items(), key=lambda mc: col[mc[0]]):
                if c != 0.0:
                    entry_mono.append(col[m])
                    entry_coeff.append(c)
            row_ptr.append(len(entry_mono))
            row_out.append(k)
            row_weight.append(w)
        long = dict(dtype=torch.long)
        self.register_buffer("native_mono_parent", torch.tensor(parent, **long), persistent=False)
        self.register_buffer("native_mono_var", torch.tensor(var, **long), persistent=False)
        self.register_buffer("native_row_ptr", torch.tensor(row_ptr, **long), persistent=False)
        self.register_buffer("native_entry_mono", torch.tensor(entry_mono, **long), persistent=False)
        self.register_buffer("native_entry_coeff", torch.tensor(entry_coeff, dtype=torch.float64), persistent=False)
        self.register_buffer("native_row_out", torch.tensor(row_out, **long), persistent=False)
        self.register_buffer("native_row_weight", torch.tensor(row_weight, **long), persistent=False)
        self.native_nnz = len(entry_mono)

    def native_tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(mono_parent, mono_var, row_ptr, entry_mono, entry_coeff in ``dtype``, row_out, row_weight):
        the table arguments of ``torch.ops.nnip_scale.symmetric_contraction`` (then ``n_out``)."""
        return (self.native_mono_parent, self.native_mono_var, self.native_row_ptr, self.native_entry_mono,
                self.table("native_entry_coeff", dtype), self.native_row_out, self.native_row_weight)

    def monomials(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, M, C] -> the distinct monomials [N, Q, C] in the column order of ``coeffs``."""
        parts = [x.new_ones(x.shape[0], 1, x.shape[2])] if self.has_constant else []
        level = x
        parts.append(x)
        for d in range(2, self.degree + 1):
            level = level.index_select(1, getattr(self, f"prefix{d}")) * x.index_select(1, getattr(self, f"last{d}"))
            parts.append(level)
        return torch.cat(parts, dim=1)


def _gaussian_moment(k: int) -> float:
    """E[z^k] for z ~ N(0, 1): 0 for odd k, (k − 1)!! for even k."""
    return 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))


def _unit_output_weight_std(terms: dict, n_weights: int) -> torch.Tensor:
    """Per weight segment w, the init std s_w that gives every output component unit variance
    when the input components are iid N(0, 1) ("path normalisation").

    Row (w, k) is the polynomial p_wk(x) = Σ_m c_m·x^m that weight w multiplies in output k; its
    second moment T²_wk = Σ_{m, m'} c_m c_m' E[x^m x^m'] is exact (Isserlis: a product of
    Gaussian moments per variable). With independent zero-mean weights, Var(out_k) =
    Σ_w s_w² T²_wk; choosing s_w² = 1 / (n_k · T²_wk), n_k the number of weight segments that
    feed output k, makes every path contribute equally and Var(out_k) = 1. (The components of
    one output irrep have equal T² under isotropic input, so s_w is well defined; the mean over
    the k that w feeds is taken.)"""
    second = {}
    for (w, k), poly in terms.items():
        items = list(poly.items())
        t2 = 0.0
        for m1, c1 in items:
            for m2, c2 in items:
                counts = Counter(m1) + Counter(m2)
                t2 += c1 * c2 * math.prod(_gaussian_moment(n) for n in counts.values())
        second[(w, k)] = t2
    feeds = Counter(k for _, k in second)
    per_w: dict[int, list[float]] = {}
    for (w, k), t2 in second.items():
        if t2 <= 0.0:
            raise ValueError(f"polynomial path (weight {w}, output {k}) has zero second moment; cannot normalise it")
        per_w.setdefault(w, []).append(feeds[k] * t2)
    missing = sorted(set(range(n_weights)) - set(per_w))
    if missing:
        raise ValueError(f"weight segments {missing} feed no output; expected every weight to be used")
    return torch.tensor([1.0 / math.sqrt(sum(v) / len(v)) for _, v in sorted(per_w.items())], dtype=torch.float64)


def _sh_torch(plan: PolynomialPlan, vectors: torch.Tensor) -> torch.Tensor:
    mono = plan.monomials(vectors.unsqueeze(-1)).squeeze(-1)  # [E, Q]
    return mono @ plan.table("coeffs", mono.dtype).T


def _sh_cueq(plan: PolynomialPlan, vectors: torch.Tensor) -> torch.Tensor:
    return plan.cueq.get(vectors)([vectors])[0]


def _sc_torch(plan: PolynomialPlan, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    basis = torch.einsum("jq,nqc->njc", plan.table("coeffs", x.dtype), plan.monomials(x))  # [N, rows, C]
    w = weights.index_select(1, plan.row_weight).index_select(0, index)  # [N, rows, C]
    return torch.einsum("jk,njc->nkc", plan.table("row_to_out", x.dtype), w * basis)


def _sc_cueq(plan: PolynomialPlan, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[0], x.shape[2]
    out = plan.cueq.get(x)(  # explicit sizes: N or Z may be 0
        [weights.reshape(weights.shape[0], plan.n_weights * c), x.reshape(n, plan.n_x * c)], input_indices={0: index}
    )[0]
    return out.reshape(n, plan.n_out, c)


def spherical_harmonics_flops(plan, vectors_shape) -> int:
    return 2 * int(vectors_shape[0]) * plan.n_rows * plan.n_monomials


def symmetric_contraction_flops(plan, x_shape, weights_shape=None, index_shape=None) -> int:
    n, c = int(x_shape[0]), int(x_shape[2])
    return 2 * n * c * plan.n_rows * (plan.n_monomials + plan.n_out)


# ============================================================================ channel-wise TP
class ChannelwiseTPPlan(_Plan):
    """Compiled channel-wise tensor product ``uv,iu,jv,kuv+ijk`` (v = 1): weights [E, P, C]
    (one per path and channel), node features x [A, I, C], edge attributes (spherical harmonics)
    sh [E, J] -> one output segment per path, [A, K, C] after the scatter onto receivers.

    Torch execution groups the paths by their x segment s: A_s = sh·CG_s [E, d_s, K_s] (channel
    independent), then one bmm per s with the gathered x_j, the per-path weights, one scatter."""

    def __init__(self, polynomial):
        super().__init__()
        self.polynomial = polynomial
        if polynomial.num_inputs != 3 or len(polynomial.operations) != 1:
            raise ValueError(f"ChannelwiseTPPlan: expected a 3-input, 1-operation polynomial, got {polynomial}")
        op, stp = polynomial.operations[0]
        if stp.subscripts != "uv,iu,jv,kuv+ijk" or tuple(op.buffers) != (0, 1, 2, 3):
            raise ValueError(f"ChannelwiseTPPlan: expected subscripts 'uv,iu,jv,kuv+ijk', got {stp.subscripts!r}")
        w_op, x_op, sh_op, out_op = stp.operands
        if any(seg[1] != 1 for seg in w_op.segments):
            raise ValueError("ChannelwiseTPPlan: expected v = 1 (one weight per path and channel)")

        def offsets(operand):
            out, o = [], 0
            for seg in operand.segments:
                out.append(o)
                o += seg[0]
            return out, o

        x_off, self.dim_x = offsets(x_op)
        sh_off, self.dim_sh = offsets(sh_op)
        out_off, self.dim_out = offsets(out_op)
        self.n_paths = w_op.num_segments
        by_x = defaultdict(list)
        for path in stp.paths:
            by_x[path.indices[1]].append(path)
        self.x_slices, col_out, col_path, covered = [], [], [], []
        for s in sorted(by_x):
            d = x_op.segments[s][0]
            paths = by_x[s]
            k_total = sum(out_op.segments[p.indices[3]][0] for p in paths)
            cg = torch.zeros(d, self.dim_sh, k_total, dtype=torch.float64)
            col = 0
            for p in paths:
                wseg, _, jseg, kseg = p.indices
                dj, dk = sh_op.segments[jseg][0], out_op.segments[kseg][0]
                cg[:, sh_off[jseg] : sh_off[jseg] + dj, col : col + dk] = torch.as_tensor(p.coefficients)
                col_out += range(out_off[kseg], out_off[kseg] + dk)
                col_path += [wseg] * dk
                covered.append(kseg)
                col += dk
            self.register_buffer(f"cg{len(self.x_slices)}", cg, persistent=False)
            self.x_slices.append((x_off[s], x_off[s] + d))
        if sorted(covered) != list(range(out_op.num_segments)):
            raise ValueError("ChannelwiseTPPlan: expected every output segment to come from exactly one path")
        inverse = torch.empty(self.dim_out, dtype=torch.long)
        inverse[torch.tensor(col_out)] = torch.arange(self.dim_out)
        self.register_buffer("out_order", inverse, persistent=False)
        self.register_buffer("col_path", torch.tensor(col_path, dtype=torch.long), persistent=False)
        self.flops_per_edge_channel = 2 * sum(
            (hi - lo) * getattr(self, f"cg{g}").shape[2] for g, (lo, hi) in enumerate(self.x_slices)
        ) + 2 * self.dim_out  # bmm + weight product + scatter-add
        self.flops_per_edge = 2 * sum(getattr(self, f"cg{g}").numel() for g in range(len(self.x_slices)))
        self.cueq = _CueqCache(polynomial, "uniform_1d")
        self._build_native_tables(stp, x_off, sh_off, out_off)
        self.max_ell = max((seg[0] - 1) // 2 for operand in (x_op, sh_op, out_op) for seg in operand.segments)

    def _build_native_tables(self, stp, x_off, sh_off, out_off) -> None:
        """Sparse CG tables of the native kernel (csrc/channelwise_tp/tables.h): per output row k
        its path, its (k, x row i) pairs with a nonzero block, and per pair the (harmonic j,
        coefficient) entries, all in increasing order. ``dense_pairs`` = Σ_k dim(x segment of k)
        is what the dense reference multiplies per edge and channel (FLOP accounting)."""
        path_of_k = [-1] * self.dim_out
        pairs: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
        dense_pairs = 0
        for path in stp.paths:
            wseg, xseg, jseg, kseg = path.indices
            c = np.asarray(path.coefficients, dtype=np.float64)  # [d_x, d_j, d_k] (numpy: also under a meta device)
            dense_pairs += c.shape[0] * c.shape[2]
            for kk in range(c.shape[2]):
                path_of_k[out_off[kseg] + kk] = wseg
            for ii, jj, kk in zip(*(a.tolist() for a in np.nonzero(c))):
                pairs[out_off[kseg] + kk][x_off[xseg] + ii].append((sh_off[jseg] + jj, float(c[ii, jj, kk])))
        pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff = [0], [], [0], [], []
        for k in range(self.dim_out):
            for i in sorted(pairs[k]):
                pair_x.append(i)
                for j, c in sorted(pairs[k][i]):
                    entry_sh.append(j)
                    entry_coeff.append(c)
                entry_ptr.append(len(entry_sh))
            pair_ptr.append(len(pair_x))
        long = dict(dtype=torch.long)
        self.register_buffer("native_path_of_k", torch.tensor(path_of_k, **long), persistent=False)
        self.register_buffer("native_pair_ptr", torch.tensor(pair_ptr, **long), persistent=False)
        self.register_buffer("native_pair_x", torch.tensor(pair_x, **long), persistent=False)
        self.register_buffer("native_entry_ptr", torch.tensor(entry_ptr, **long), persistent=False)
        self.register_buffer("native_entry_sh", torch.tensor(entry_sh, **long), persistent=False)
        self.register_buffer("native_entry_coeff", torch.tensor(entry_coeff, dtype=torch.float64), persistent=False)
        self.dense_pairs = int(dense_pairs)

    def native_tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(path_of_k, pair_ptr, pair_x, entry_ptr, entry_sh, entry_coeff in ``dtype``): the table
        arguments of ``torch.ops.nnip_scale.channelwise_tp_scatter``."""
        return (self.native_path_of_k, self.native_pair_ptr, self.native_pair_x, self.native_entry_ptr,
                self.native_entry_sh, self.table("native_entry_coeff", dtype))


def _ctp_torch(plan, weights, x, sh, sender, receiver, n_atoms, receiver_ptr=None, sender_order=None):
    # the edge layout only spares the native kernels their sorts: index_add needs none
    xj = gather_rows(x, sender, backend="torch")  # [E, I, C]
    parts = []
    for g, (lo, hi) in enumerate(plan.x_slices):
        a = torch.einsum("ej,ijk->eki", sh, plan.table(f"cg{g}", sh.dtype))  # [E, K_g, d_g]
        parts.append(torch.bmm(a, xj[:, lo:hi]))  # [E, K_g, C]
    msg = torch.cat(parts, dim=1) * weights.index_select(1, plan.col_path)
    return scatter_sum(msg, receiver, n_atoms, backend="torch").index_select(1, plan.out_order)


def _ctp_cueq(plan, weights, x, sh, sender, receiver, n_atoms, receiver_ptr=None, sender_order=None):
    e, c = weights.shape[0], weights.shape[2]
    if e == 0:  # cuequivariance's naive path rejects an empty edge batch; the sum over no edges is 0
        return _ctp_torch(plan, weights, x, sh, sender, receiver, n_atoms)
    out = plan.cueq.get(x)(  # explicit sizes: E or A may be 0
        [weights.reshape(e, plan.n_paths * c), x.reshape(x.shape[0], plan.dim_x * c), sh],
        input_indices={1: sender},
        output_shapes={0: x.new_empty(n_atoms, 0)},
        output_indices={0: receiver},
    )[0]
    return out.reshape(n_atoms, plan.dim_out, c)


def channelwise_tp_flops(plan, weights_shape, x_shape, sh_shape, sender_shape=None, receiver_shape=None, n_atoms=None) -> int:
    e, c = int(weights_shape[0]), int(weights_shape[2])
    return e * (plan.flops_per_edge + c * plan.flops_per_edge_channel) - e * c * plan.dim_out


def _ctp_native_limit(ell: int = 0) -> str | None:
    if ell > 3:
        return f"ℓ = {ell} > 3: the native kernel is table-driven but tested for ℓ ≤ 3 only"
    return None


register_op(OpSpec("spherical_harmonics", impls={"torch": _sh_torch, "cueq": _sh_cueq, "native": sh_native},
                   native_dtypes={"cpu": SH_NATIVE_DTYPES},  # CPU only until the contraction's CUDA twin is registered
                   limits={"native": sh_native_limit}, flops=spherical_harmonics_flops))
register_op(
    OpSpec(
        "channelwise_tp_scatter",
        impls={"torch": _ctp_torch, "cueq": _ctp_cueq, "native": ctp_native},
        native_dtypes={"cpu": NATIVE_DTYPES},
        limits={"native": _ctp_native_limit},
        flops=channelwise_tp_flops,
    )
)
def _sc_native_limit(components: int = 0, correlation: int = 0) -> str | None:
    if components > 16:
        return (f"x and the output have up to {components} components > 16 (irreps beyond ℓ = 3): the native "
                "kernel is table-driven but tested for ℓ ≤ 3 only")
    if correlation > 3:
        return f"correlation {correlation} > 3: the native kernel is table-driven but tested for correlation ≤ 3 only"
    return None


register_op(
    OpSpec(
        "symmetric_contraction",
        impls={"torch": _sc_torch, "cueq": _sc_cueq, "native": sc_native},
        # CPU only until the CUDA twin (csrc/symmetric_contraction/cuda/; compiled in CI, emulated in ctest)
        # has run on a GPU: untested device code is not picked by `auto` nor run under `native`
        native_dtypes={"cpu": SC_NATIVE_DTYPES},
        limits={"native": _sc_native_limit},
        flops=symmetric_contraction_flops,
    )
)


# ============================================================================ public API
def spherical_harmonics(plan: PolynomialPlan, vectors: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Y(r̂) of unit vectors [E, 3] (x, y, z) -> [E, Σ(2ℓ+1)] (cuequivariance's component
    normalisation: ‖Y_ℓ‖² = 2ℓ + 1)."""
    if vectors.dim() != 2 or vectors.shape[1] != 3:
        raise ValueError(f"nnip_scale.ops.spherical_harmonics: expected vectors [E, 3], got {tuple(vectors.shape)}")
    check_same_dtype("spherical_harmonics", {"vectors": vectors})
    return dispatch("spherical_harmonics", backend, vectors, components=plan.n_out, degree=plan.degree)(plan, vectors)


def channelwise_tp_scatter(
    plan: ChannelwiseTPPlan,
    weights: torch.Tensor,
    x: torch.Tensor,
    sh: torch.Tensor,
    sender: torch.Tensor,
    receiver: torch.Tensor,
    n_atoms: int,
    backend: str = "auto",
    receiver_ptr: torch.Tensor | None = None,
    sender_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MACE interaction: out[i] = Σ_{e: receiver[e]=i} w_e ⊙ (x[sender[e]] ⊗ sh_e) per path
    and channel. weights [E, P, C], x [A, I, C], sh [E, J], sender/receiver int64 [E] with values
    in [0, A) / [0, n_atoms) -> [n_atoms, K, C] (ir_mul). Differentiable to any order.

    ``receiver_ptr`` int64 [n_atoms + 1] and ``sender_order`` int64 [E]: the edge layout of a batch
    whose edges are sorted by receiver (:func:`nnip_scale.data.batching.edge_layout`, stored by the
    collate as ``batch["edge_receiver_ptr"]`` / ``batch["edge_sender_order"]``). They spare the native
    kernels their per-call sorts (forward by receiver, backward by sender); the result is the same bit
    for bit. The native CPU kernels check them (one pass each; an inconsistent layout is an error);
    the torch and cueq paths do not need them."""
    op = "nnip_scale.ops.channelwise_tp_scatter"
    if not all(isinstance(t, torch.Tensor) for t in (weights, x, sh, sender, receiver)):
        raise TypeError(f"{op}: weights, x, sh, sender and receiver must be tensors")
    if isinstance(n_atoms, torch.Tensor):
        raise TypeError(f"{op}: n_atoms must be a Python int (e.g. batch['n_atoms']), not a tensor (that would need a host sync)")
    if x.dim() != 3 or sh.dim() != 2 or weights.dim() != 3:
        raise ValueError(
            f"{op}: expected weights [E, P, C], x [A, I, C], sh [E, J]; got weights {tuple(weights.shape)}, "
            f"x {tuple(x.shape)}, sh {tuple(sh.shape)}"
        )
    e = sh.shape[0]
    if (weights.shape[:2] != (e, plan.n_paths) or x.shape[1] != plan.dim_x or sh.shape[1] != plan.dim_sh
            or weights.shape[2] != x.shape[2]):
        raise ValueError(
            f"{op}: expected weights [E={e}, P={plan.n_paths}, C], "
            f"x [A, {plan.dim_x}, C], sh [E, {plan.dim_sh}]; got weights {tuple(weights.shape)}, "
            f"x {tuple(x.shape)}, sh {tuple(sh.shape)}"
        )
    for name, t in (("sender", sender), ("receiver", receiver)):
        if t.dim() != 1 or t.dtype != torch.int64 or t.shape[0] != e:
            raise ValueError(f"{op}: {name} must be a 1-D int64 tensor of E={e} entries, got shape {tuple(t.shape)} "
                             f"dtype {t.dtype}")
    for name, t, n in (("receiver_ptr", receiver_ptr, n_atoms + 1), ("sender_order", sender_order, e)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.int64 or t.shape[0] != n):
            got = f"shape {tuple(t.shape)} dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be a 1-D int64 tensor of {n} entries "
                             f"({'n_atoms + 1' if name == 'receiver_ptr' else 'E'}), got {got}")
    for name, t in (("weights", weights), ("sh", sh), ("sender", sender), ("receiver", receiver),
                    ("receiver_ptr", receiver_ptr), ("sender_order", sender_order)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}; expected one device")
    for name, t in (("weights", weights), ("sh", sh)):
        if t.dtype != x.dtype:
            raise ValueError(f"{op}: {name} has dtype {t.dtype} but x has {x.dtype}; expected one floating dtype")
    impl = dispatch("channelwise_tp_scatter", backend, x, ell=plan.max_ell)
    if not is_native("channelwise_tp_scatter", impl):  # the native kernels range-check themselves
        check_index_range("channelwise_tp_scatter", "sender", sender, x.shape[0], "x.size(0)")
        check_index_range("channelwise_tp_scatter", "receiver", receiver, n_atoms, "n_atoms")
    return impl(plan, weights, x, sh, sender, receiver, n_atoms, receiver_ptr, sender_order)


def symmetric_contraction(
    plan: PolynomialPlan, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """ACE product basis with per-element weights: x [N, M, C] (ir_mul), weights [Z, W, C],
    index int64 [N] (row of ``weights`` per atom, values in [0, Z)) -> [N, K, C]. The native
    kernels give forward, backward and double backward (a third derivative raises); torch any order."""
    op = "nnip_scale.ops.symmetric_contraction"
    if not all(isinstance(t, torch.Tensor) for t in (x, weights, index)):
        raise TypeError(f"{op}: x, weights and index must be tensors")
    if not plan.weighted:
        raise ValueError(f"{op}: expected a weighted PolynomialPlan (a symmetric contraction), got an unweighted one")
    if x.dim() != 3 or x.shape[1] != plan.n_x or weights.dim() != 3 or weights.shape[1:] != (plan.n_weights, x.shape[2]):
        raise ValueError(
            f"{op}: expected x [N, {plan.n_x}, C] and weights "
            f"[Z, {plan.n_weights}, C]; got x {tuple(x.shape)}, weights {tuple(weights.shape)}"
        )
    if index.dim() != 1 or index.dtype != torch.int64 or index.shape[0] != x.shape[0]:
        raise ValueError(
            f"{op}: index must be a 1-D int64 tensor of N={x.shape[0]} entries, got shape {tuple(index.shape)} "
            f"dtype {index.dtype}"
        )
    for name, t in (("weights", weights), ("index", index)):
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}; expected one device")
    if weights.dtype != x.dtype:
        raise ValueError(f"{op}: weights has dtype {weights.dtype} but x has {x.dtype}; expected one floating dtype")
    impl = dispatch("symmetric_contraction", backend, x, components=max(plan.n_x, plan.n_out), correlation=plan.degree)
    if not is_native("symmetric_contraction", impl):  # the native kernels range-check themselves
        check_index_range("symmetric_contraction", "index", index, weights.shape[0], "weights.size(0)")
    return impl(plan, x, weights, index)
