"""Native fused channel-wise tensor product + gather/scatter (``torch.ops.nnip_scale.channelwise_tp_scatter``):
what is specific to it. The generic checks (fp64 parity with the reference to the third derivative,
gradcheck/gradgradcheck, opcheck, compile, FLOPs, empty inputs, bad input through the public
function) run for every op in ``tests/test_ops_harness.py``; MACE on the native kernels in
``tests/test_models_mace_native.py``.

Here: fp32 against the fp64 reference at the default MACE interaction; determinism (bitwise across
runs and thread counts); the raw op's own argument and table checks; gradients that are not
requested come back with zero rows; the resolver's limits (ℓ, dtype, device) and the backend table.
"""

import pytest
import torch
from op_cases import F64, assert_bitwise_deterministic, assert_native_close_to_fp64_reference, tp_inputs, tp_plan

from nnip_scale.ops import native_available, resolve_backend
from nnip_scale.ops.equivariant import channelwise_tp_scatter
from nnip_scale.ops.registry import backend_table, per_op_backend

needs_native = pytest.mark.skipif(not native_available(), reason="nnip_scale._C not built/loaded")
OP = "channelwise_tp_scatter"


@needs_native
def test_mace_default_interaction_fp32_and_fp64():
    """The default MACE interaction (hidden ℓ ≤ 1, harmonics ℓ ≤ 3), C = 24 (not a multiple of the
    channel block), fp32 and fp64 native against the fp64 reference."""
    plan = tp_plan(1, 24, 3)
    w, x, sh, snd, rcv = tp_inputs(plan, 30, 200, 24, seed=3)

    def fn(backend, w_, x_, sh_):
        return channelwise_tp_scatter(plan, w_, x_, sh_, snd, rcv, 30, backend=backend)

    assert_native_close_to_fp64_reference(fn, (w, x, sh), {torch.float32: 2e-5, F64: 1e-12})


@needs_native
def test_deterministic_across_runs_threads_and_bitwise():
    """Receiver-owned (forward) and sender-owned (backward) rows, edges summed in their order."""
    plan = tp_plan(2, 20)
    base = tp_inputs(plan, 300, 20000, 20, seed=9)

    def run():
        w, x, sh = (t.clone().requires_grad_(True) for t in base[:3])
        out = channelwise_tp_scatter(plan, w, x, sh, base[3], base[4], 300, backend="native")
        return [out.detach(), *torch.autograd.grad((out * out).sum(), (w, x, sh))]

    assert_bitwise_deterministic(run)


@needs_native
def test_raw_op_checks_its_arguments_and_tables():
    """The registered op, called without the public function's checks, rejects bad arguments and
    inconsistent tables itself (an error naming the op and the argument)."""
    plan = tp_plan(1, 3)
    w, x, sh, snd, rcv = tp_inputs(plan, 6, 10, 3)
    raw, name = torch.ops.nnip_scale.channelwise_tp_scatter, f"nnip_scale::{OP}"
    tables = list(plan.native_tables(F64))
    with pytest.raises(RuntimeError, match=rf"{name}: weights must have the dtype of x"):
        raw(w.float(), x, sh, snd, rcv, 6, *tables, plan.dense_pairs)
    with pytest.raises(RuntimeError, match=rf"{name}: sender must be int64"):
        raw(w, x, sh, snd.int(), rcv, 6, *tables, plan.dense_pairs)
    with pytest.raises(RuntimeError, match=rf"{name}: weights must have C = x.size\(2\)"):
        raw(w[..., :2], x, sh, snd, rcv, 6, *tables, plan.dense_pairs)
    bad = rcv.clone()
    bad[3] = 6
    with pytest.raises(RuntimeError, match=rf"{name}: receiver has 1 entries outside \[0, n_atoms=6\)"):
        raw(w, x, sh, snd, bad, 6, *tables, plan.dense_pairs)
    broken = list(tables)
    broken[2] = broken[2].clone()
    broken[2][0] = 99  # an x row that does not exist
    with pytest.raises(RuntimeError, match=rf"{name}: inconsistent Clebsch–Gordan tables: pair_x"):
        raw(w, x, sh, snd, rcv, 6, *broken, plan.dense_pairs)
    g = torch.zeros(6, plan.dim_out + 1, 3, dtype=F64)
    with pytest.raises(RuntimeError, match=rf"{name}_backward: grad_out must be \[N, K="):
        torch.ops.nnip_scale.channelwise_tp_scatter_backward(g, w, x, sh, snd, rcv, *tables, plan.dense_pairs,
                                                             True, True, True)
    # gradients that are not requested come back with zero rows
    gw, gx, gsh = torch.ops.nnip_scale.channelwise_tp_scatter_backward(
        g[:, :-1], w, x, sh, snd, rcv, *tables, plan.dense_pairs, False, True, False)
    assert gw.shape == (0, plan.n_paths, 3) and gsh.shape == (0, plan.dim_sh) and gx.shape == x.shape


@needs_native
def test_edge_layout_spares_the_sorts_changes_no_bit_and_is_checked():
    """A collated batch's edge layout (edges sorted by receiver; receiver_ptr and the stable sender
    order, data.batching.edge_layout): the output and the first and second derivatives are bitwise those
    of the same edges without it, and every way a layout can be wrong is an error naming it (the CPU
    kernels check it in one pass instead of sorting)."""
    from nnip_scale.data.batching import edge_layout

    plan, n = tp_plan(2, 9), 40
    w, x, sh, snd, rcv = tp_inputs(plan, n, 400, 9, seed=4)
    by_receiver = torch.argsort(rcv, stable=True)
    w, sh, snd, rcv = w[by_receiver], sh[by_receiver], snd[by_receiver], rcv[by_receiver]
    ptr, order = edge_layout(torch.stack([rcv, snd]), n)

    def run(**layout):
        leaves = [t.clone().requires_grad_() for t in (w, x, sh)]
        out = channelwise_tp_scatter(plan, *leaves, snd, rcv, n, backend="native", **layout)
        first = torch.autograd.grad((out * out).sum(), leaves, create_graph=True)
        second = torch.autograd.grad(sum((g * g.detach().cos()).sum() for g in first), leaves)
        return [out, *first, *second]

    for a, b in zip(run(receiver_ptr=ptr, sender_order=order), run(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(run(sender_order=order), run(), strict=True):
        assert torch.equal(a, b)

    def fails(match, **layout):
        with pytest.raises(RuntimeError, match=match):
            run(**layout)

    unstable = order.clone()
    same = torch.nonzero(snd[order][1:] == snd[order][:-1])[0, 0]  # two edges of one sender, swapped
    unstable[same], unstable[same + 1] = order[same + 1], order[same]
    duplicate, outside = order.clone(), order.clone()
    duplicate[1] = duplicate[0]
    outside[5] = len(order)
    for bad in (order.flip(0), unstable, duplicate, outside):
        fails(r"channelwise_tp_scatter_backward: sender_order is not the edges' stable order by sender", sender_order=bad)
    shifted = ptr.clone()
    shifted[n // 2] += 1
    fails(r"channelwise_tp_scatter: receiver_ptr is not the segment offsets of the sorted receivers", receiver_ptr=shifted)
    with pytest.raises(RuntimeError, match=r"receiver_ptr was given, so the edges must be sorted by receiver .*"
                                           r"receiver\[\d+\] = \d+ < receiver\[\d+\]"):
        channelwise_tp_scatter(plan, w, x, sh, snd, rcv.flip(0), n, backend="native", receiver_ptr=ptr)
    raw = torch.ops.nnip_scale.channelwise_tp_scatter
    with pytest.raises(RuntimeError, match=r"channelwise_tp_scatter: sender_order must have E = 400 entries"):
        raw(w, x, sh, snd, rcv, n, *plan.native_tables(F64), plan.dense_pairs, ptr, order[1:])
    with pytest.raises(RuntimeError, match=r"channelwise_tp_scatter: receiver_ptr must have n_atoms \+ 1 = 41 entries"):
        raw(w, x, sh, snd, rcv, n, *plan.native_tables(F64), plan.dense_pairs, ptr[1:], order)


def test_resolver_limits_and_backend_table():
    """An explicit native never runs something else (ℓ > 3, bf16, CUDA without a kernel raise, naming
    op, backend and why); auto picks native on CPU where it serves the call, else torch."""
    with pytest.raises(RuntimeError, match=rf"{OP}: backend='native' unavailable: .*(CUDA|cuda)"):
        resolve_backend("native", "cuda", torch.float32, OP, ell=1)
    expected = "native" if native_available() else "torch"
    for dtype in (torch.float32, torch.float64):
        assert resolve_backend("auto", "cpu", dtype, OP, ell=3) == expected
    assert resolve_backend("auto", "cpu", torch.float16, OP, ell=1) == "torch"
    assert resolve_backend("auto", "cpu", torch.float32, OP, ell=4) == "torch"
    assert resolve_backend("auto", "cuda", torch.float32, OP, ell=1) in ("cueq", "torch")
    if native_available():
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: ℓ = 4 > 3"):
            resolve_backend("native", "cpu", torch.float32, OP, ell=4)
        with pytest.raises(RuntimeError, match=r"backend='native' unavailable: dtype torch.bfloat16 on cpu"):
            resolve_backend("native", "cpu", torch.bfloat16, OP, ell=1)
    table = backend_table()
    assert table[OP]["native"] == "cpu: float32, float64"
    assert table["spherical_harmonics"]["native"] == "cpu: float32, float64"
    assert table["scatter_sum"]["cueq"] == "→ auto (declared)"
    # model-level mapping: ops without a kernel in the model's backend are called with torch
    assert [per_op_backend("native", op) for op in (OP, "spherical_harmonics", "scatter_sum")] == [
        "native", "native", "native"]
    assert per_op_backend("pyg", "spherical_harmonics") == "torch"
    assert per_op_backend("cueq", "scatter_sum") == "cueq"
    assert tp_plan(1, 3).max_ell == 1
