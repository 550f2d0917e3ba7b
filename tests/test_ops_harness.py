"""The op test harness (issue 11): every registered op × every available backend that implements it.

Sample inputs come from ``tests/op_cases.py`` (one entry per op in ``registered_ops()``; an op without
one fails ``test_every_registered_op_has_cases``). For each (op, backend, case), in fp64:

- parity with the torch reference (values and derivatives up to the entry's order, ≤ 1e-10 relative;
  the reference itself is not compared with itself);
- ``gradcheck`` and ``gradgradcheck`` (fast mode when the inputs have many elements);
- ``torch.library.opcheck`` of the raw ``torch.ops.nnip_scale`` overloads (native);
- ``torch.compile(fullgraph=True, dynamic=True)`` forward and backward equal to eager, at two sizes;
- the registered FLOP formula equal to ``FlopCounterMode`` on the reference; native ops' formulas for
  the backward and double backward equal to the reference's count, for each subset of inputs;
- empty inputs (no edges, no atoms) and atoms without edges (zero output rows);
- bad input (wrong dtype, device, shape, out-of-range index): an error naming the op and the argument;
- the resolver contract: a declared substitution runs its target, an unimplemented or uninstalled
  backend raises naming the op and the backend.

Ids read ``<op>-<backend>-<case>``, e.g. ``channelwise_tp_scatter-native-l2-C7``. Gaps known and
reported (in files other agents own) are strict xfails with their reason (``OpCases.gaps``).
Op-specific tests (determinism across threads, raw-op argument checks, limits, third-derivative
errors, fp32 tolerances, CUDA) stay in ``tests/test_ops_<op>.py``.
"""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from op_cases import F64, KINDS, OP_CASES, outputs, rel_err

from nnip_scale.ops import available_backends, flops, get_op, registered_ops, resolve_backend
from nnip_scale.ops.registry import BACKENDS
from nnip_scale.training.flops import count_flops

AVAILABLE = available_backends()
CONCRETE = [b for b in BACKENDS if b != "auto"]
TOL = 1e-10
# cuequivariance's CPU path costs ~0.1 s per call in double backward: it runs these tests on its first case only
# (its derivatives on every case are in the parity test)
FIRST_CASE_ONLY = {"cueq": ("gradcheck", "compile")}
FULL_GRADCHECK_NUMEL = 100  # above this many input + output elements: gradcheck's fast mode (random projections)


# ============================================================================ parametrisation
def _backends(op: str) -> list[str]:
    return [b for b in AVAILABLE if b in get_op(op).impls]


def _params(test: str, backends=None, cases: str | None = "cases", first: int | None = None,
            differentiable: bool = False):
    """(op, backend, case id) params of every op with cases; ``test`` names the gap entries that apply."""
    out = []
    for op in registered_ops():
        entry = OP_CASES.get(op)
        if entry is None or (differentiable and not entry.differentiable):
            continue
        for backend in _backends(op):
            if backends is not None and backend not in backends:
                continue
            gap = entry.gap(backend, test)
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            ids = list(getattr(entry, cases))[:first] if cases else [None]
            if test == "flops" and entry.flops_cases is not None:
                ids = list(entry.flops_cases)
            if cases == "cases" and backend in entry.backend_cases:
                ids = [c for c in ids if c in entry.backend_cases[backend]] or list(entry.backend_cases[backend])[:1]
            if test in FIRST_CASE_ONLY.get(backend, ()):
                ids = ids[:1]
            for cid in ids:
                name = f"{op}-{backend}" + (f"-{cid}" if cid else "")
                out.append(pytest.param(op, backend, cid, id=name, marks=marks))
    return out


def _leaves(sample, needs=None):
    """sample.args with the differentiable inputs replaced by fresh leaves (``needs``: which of them
    require a gradient; default all). Returns (args, leaves)."""
    args, leaves = list(sample.args), []
    needs = [True] * len(sample.diff) if needs is None else needs
    for pos, need in zip(sample.diff, needs, strict=True):
        args[pos] = args[pos].detach().clone().requires_grad_(need)
        if need:
            leaves.append(args[pos])
    return tuple(args), leaves


def _loss(outs) -> torch.Tensor:
    """A nonlinear scalar of the floating outputs (so second derivatives of linear ops are not 0)."""
    return sum((o * o.cos()).sum() for o in outs if o.is_floating_point())


def _derivatives(sample, backend: str, order: int) -> list[torch.Tensor]:
    """Outputs, then the gradients of order 1..``order`` of nonlinear scalars of them."""
    args, leaves = _leaves(sample)
    outs = outputs(sample.run(backend, args))
    res = [o.detach() for o in outs]
    if not leaves or order == 0:
        return res
    grads = torch.autograd.grad(_loss(outs), leaves, create_graph=order > 1, materialize_grads=True)
    res += [g.detach() for g in grads]
    for k in range(2, order + 1):
        scalar = sum(((t * t.sin()) if k == 2 else t.square()).sum() for t in grads)
        grads = torch.autograd.grad(scalar, leaves, create_graph=k < order, materialize_grads=True)
        res += [g.detach() for g in grads]
    return res


def _amax(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def _sample(op: str, cid: str, kind: str = "cases", **kw):
    return getattr(OP_CASES[op], kind)[cid](dtype=F64, **kw)


# ============================================================================ coverage
def test_every_registered_op_has_cases():
    """A registered op without sample inputs would skip the harness: each needs an OP_CASES entry with
    cases, empty inputs and bad inputs of known kinds (including a bad shape)."""
    ops = set(registered_ops())
    assert ops - set(OP_CASES) == set(), f"registered ops without cases in tests/op_cases.py: {sorted(ops - set(OP_CASES))}"
    assert set(OP_CASES) - ops == set(), f"cases for ops that are not registered: {sorted(set(OP_CASES) - ops)}"
    for op, entry in OP_CASES.items():
        assert entry.cases and entry.empty, op
        kinds = {bad.kind for bad in entry.bad()}
        assert "shape" in kinds and kinds <= set(KINDS), (op, kinds)
        assert set(entry.orders) <= set(get_op(op).impls), (op, entry.orders)


# ============================================================================ parity, derivatives
@pytest.mark.parametrize("op,backend,cid", _params("parity", backends=[b for b in AVAILABLE if b != "torch"]))
def test_parity_with_the_reference_fp64(op, backend, cid):
    sample = _sample(op, cid)
    order = OP_CASES[op].orders.get(backend, 2) if OP_CASES[op].differentiable else 0
    got, ref = _derivatives(sample, backend, order), _derivatives(sample, "torch", order)
    assert float(ref[0].abs().max()) > 0.1  # not 0 = 0
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, k
        assert rel_err(a, b) <= TOL, (k, rel_err(a, b))


@pytest.mark.parametrize("op,backend,cid", _params("gradcheck", differentiable=True))
def test_gradcheck_and_gradgradcheck_fp64(op, backend, cid):
    sample = _sample(op, cid)
    args, leaves = _leaves(sample)
    n_out = sum(o.numel() for o in outputs(sample.run(backend)))
    fast = sum(t.numel() for t in leaves) + n_out > FULL_GRADCHECK_NUMEL

    def f(*inputs):
        full = list(args)
        for pos, t in zip(sample.diff, inputs, strict=True):
            full[pos] = t
        return tuple(o for o in outputs(sample.run(backend, tuple(full))) if o.is_floating_point())

    assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=fast)


# only ops whose outputs are rows of atoms (their sample says how many trailing atoms have no edges)
@pytest.mark.parametrize("op,backend,cid", [p for p in _params("zero-rows", first=1) if _sample(*p.values[::2]).zero_rows])
def test_atoms_without_edges_get_zero_rows(op, backend, cid):
    sample = _sample(op, cid)
    out = outputs(sample.run(backend))[0]
    assert float(out[-sample.zero_rows:].abs().max()) == 0.0
    assert float(out[: -sample.zero_rows].abs().max()) > 0.0


# ============================================================================ native registration
@pytest.mark.parametrize("op,backend,cid", _params("opcheck", backends=["native"], first=2))
def test_opcheck_native(op, backend, cid):
    calls = _sample(op, cid).native_calls()
    assert calls, f"{op}: a native op must list its raw overloads for opcheck"
    for overload, args in calls:
        torch.library.opcheck(overload, args)


@pytest.mark.parametrize("op,backend,cid", _params("compile", first=1))
def test_compile_fullgraph_forward_and_backward(op, backend, cid):
    """torch.compile(fullgraph=True, dynamic=True) of forward + backward equals eager, at the case's size
    and a second one (no recompilation failure)."""
    torch._dynamo.reset()  # every test compiles the same closures' code: start from an empty cache
    first = _sample(op, cid)
    call = first.call

    def f(*args):
        return call(backend, *args)

    def loss(*args):
        return _loss(outputs(call(backend, *args)))

    compiled = torch.compile(loss if first.diff else f, fullgraph=True, dynamic=True, backend="aot_eager")
    for variant in (0, 1):
        sample = _sample(op, cid, variant=variant)
        if not sample.diff:
            for a, b in zip(outputs(compiled(*sample.args)), outputs(f(*sample.args)), strict=True):
                assert torch.equal(a, b)
            continue
        args, leaves = _leaves(sample)
        eager = [loss(*args).detach(), *torch.autograd.grad(loss(*args), leaves)]
        args2, leaves2 = _leaves(sample)
        value = compiled(*args2)
        got = [value.detach(), *torch.autograd.grad(value, leaves2)]
        for a, b in zip(got, eager, strict=True):
            assert rel_err(a, b) <= TOL


# ============================================================================ FLOPs
def _flop_counts(sample, backend: str, needs) -> tuple[int, int]:
    """(backward, double backward) FLOPs counted by FlopCounterMode when the inputs ``needs`` require
    a gradient."""
    args, leaves = _leaves(sample, needs)
    outs = [o for o in outputs(sample.run(backend, args)) if o.is_floating_point()]
    g = torch.Generator().manual_seed(5)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    bwd = count_flops(lambda: torch.autograd.grad(outs, leaves, cot, retain_graph=True))
    grads = torch.autograd.grad(outs, leaves, cot, create_graph=True)
    scalar = sum(t.square().sum() for t in grads)
    if not scalar.requires_grad:  # the gradients do not depend on the inputs (a linear op)
        return bwd, 0
    return bwd, count_flops(lambda: torch.autograd.grad(scalar, leaves, allow_unused=True))


@pytest.mark.parametrize("op,backend,cid", _params("flops", backends=["torch", "native"], first=2))
def test_flop_formula_equals_flopcounter(op, backend, cid):
    """The registered formula equals FlopCounterMode's count on the reference; a native op counts what
    the reference counts, forward, backward and double backward, for each subset of inputs."""
    sample = _sample(op, cid)
    expected = flops(op, *sample.flops_args)
    with torch.no_grad():
        assert count_flops(lambda: sample.run(backend)) == expected
    if backend == "native":
        keep = 2 if OP_CASES[op].flops_double_backward else 1
        for needs in itertools.product((True, False), repeat=len(sample.diff)):
            if any(needs):
                got, ref = _flop_counts(sample, "native", needs), _flop_counts(sample, "torch", needs)
                assert got[:keep] == ref[:keep], needs


# ============================================================================ empty inputs
@pytest.mark.parametrize("op,backend,cid", _params("empty", cases="empty"))
def test_empty_inputs(op, backend, cid):
    """No edges (every atom without edges), no atoms: the reference's shapes, exact zeros, gradients of
    the inputs' shapes."""
    sample = _sample(op, cid, kind="empty")
    args, leaves = _leaves(sample)
    got = outputs(sample.run(backend, args))
    ref = outputs(sample.run("torch"))
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a.detach(), b)
    if sample.zero_rows:
        assert _amax(got[0][-sample.zero_rows:]) == 0.0
    if leaves:
        grads = torch.autograd.grad(_loss(got), leaves, materialize_grads=True)
        for g, leaf in zip(grads, leaves, strict=True):
            assert g.shape == leaf.shape and _amax(g) == 0.0


# ============================================================================ bad input
def _bad_params():
    out = []
    for p in _params("bad", cases=None):
        op, backend, _ = p.values
        for kind in sorted({bad.kind for bad in OP_CASES[op].bad()}, key=KINDS.index):
            gap = OP_CASES[op].gap(backend, f"bad-{kind}")
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            out.append(pytest.param(op, backend, kind, id=f"{op}-{backend}-{kind}", marks=marks))
    return out


@pytest.mark.parametrize("op,backend,kind", _bad_params())
def test_bad_input_error_names_the_op_and_the_argument(op, backend, kind):
    for bad in (b for b in OP_CASES[op].bad() if b.kind == kind):
        with pytest.raises((ValueError, TypeError, RuntimeError, IndexError)) as info:
            bad.call(backend)
        msg = str(info.value)
        assert op in msg and re.search(rf"\b{re.escape(bad.argument)}\b", msg), (bad.argument, msg)


# ============================================================================ resolver contract
def _declared():
    return [pytest.param(op, b, id=f"{op}-{b}") for op in registered_ops() if op in OP_CASES
            for b in get_op(op).fallback]


@pytest.mark.parametrize("op,backend", _declared())
def test_declared_substitution_runs_its_target(op, backend):
    """A backend the op does not implement but declares a substitution for runs the declared target
    (bitwise the same result), or raises naming the op when the target cannot serve the call."""
    sample = _sample(op, next(iter(OP_CASES[op].cases)))
    target = resolve_backend(backend, "cpu", F64, op)
    assert target in get_op(op).impls
    for a, b in zip(outputs(sample.run(backend)), outputs(sample.run(target)), strict=True):
        assert torch.equal(a, b)


def _unserved():
    out = []
    for op in registered_ops():
        spec = get_op(op)
        for b in CONCRETE:
            if op in OP_CASES and b not in spec.fallback and (b not in spec.impls or b not in AVAILABLE):
                out.append(pytest.param(op, b, id=f"{op}-{b}"))
    return out


@pytest.mark.parametrize("op,backend", _unserved())
def test_unserved_backend_raises_naming_op_and_backend(op, backend):
    """An explicit backend the op does not implement (or that is not installed) never runs something
    else: a RuntimeError names the op, the backend and why."""
    sample = _sample(op, next(iter(OP_CASES[op].cases)))
    why = "has no" if backend not in get_op(op).impls else "(needs|unavailable)"
    with pytest.raises(RuntimeError, match=rf"nnip_scale\.ops\.{op}: backend='{backend}' unavailable: .*{why}"):
        sample.run(backend)
