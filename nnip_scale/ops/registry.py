"""Registry of the hot ops and the one backend resolver.

Backends: ``torch`` (pure PyTorch reference, the ground truth), ``native`` (``nnip_scale._C``),
``pyg`` (torch-scatter, optional), ``cueq`` (cuequivariance-torch, optional) and ``auto``.

Each op is an :class:`OpSpec`: its implementation per concrete backend, the device types and
dtypes of its native kernels, per-backend shape limits, the substitutions it declares for backends
it does not implement, and its FLOP formula. :func:`resolve_backend` is the only place that turns a
requested backend into the one that runs (docs/ops.md has the table):

- ``auto``: ``native`` where its kernels serve the call (device, dtype, shape limits), else
  ``cueq`` on CUDA where the op has a cuequivariance implementation and it is installed, else
  ``torch``;
- an explicit backend runs, or raises a ``RuntimeError`` naming the op, the backend and why it
  cannot serve the call (no kernel for the op, the device or the dtype; a shape limit; not built
  or not installed). It never silently runs something else, with one documented exception: an op
  may *declare* a substitution for a backend it does not implement at all (``OpSpec.fallback``,
  e.g. ``scatter_sum`` with ``cueq`` → ``auto``: cuequivariance has no standalone scatter), which
  is part of the op's contract and listed by :func:`backend_table`.

Models hold one backend name for all their ops; :func:`per_op_backend` maps it to the name each op
is called with (a model asking for ``native`` calls ops that have no native kernel with ``torch``).

FLOP convention: a scatter-add of E×F values = E·F FLOPs; gathers move data and count 0;
elsewhere 2 FLOPs per multiply-add (as ``torch.utils.flop_counter``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nnip_scale.ops._native import native_state

BACKENDS = ("auto", "torch", "native", "pyg", "cueq")
_CONCRETE = ("torch", "native", "pyg", "cueq")
_PACKAGES = {"pyg": "torch_scatter", "cueq": "cuequivariance_torch"}
_INSTALL = {
    "pyg": "needs torch-scatter, which is not installed; install it with "
    "`pip install --no-build-isolation 'nnip-scale[pyg]'` (compiles ~10 min) or use backend='auto'",
    "cueq": "needs cuequivariance-torch, which is not installed; install it with "
    "`pip install 'nnip-scale[cueq]'` or use backend='auto'/'torch'",
}


@dataclass
class OpSpec:
    """One hot op.

    ``impls``: backend name → callable with the op's signature (minus ``backend``).
    ``native_dtypes``: device type → dtypes of the native kernels (a device type that is absent
    has no native kernel). ``limits``: backend → ``check(**attrs)`` returning why that backend
    cannot serve a call with these shape attributes (e.g. ``ell=4``), or None. ``fallback``: a
    declared substitution for a backend the op does not implement (the target backend, or
    ``"auto"``). ``flops``: takes the op's arguments with tensors replaced by their shapes and
    returns a FLOP count (int)."""

    name: str
    impls: dict[str, Callable] = field(default_factory=dict)
    native_dtypes: dict[str, tuple[torch.dtype, ...]] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    flops: Callable[..., int] | None = None
    limits: dict[str, Callable[..., str | None]] = field(default_factory=dict)


_OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Add (or replace) an op in the registry."""
    for backend, target in spec.fallback.items():
        if backend in spec.impls or target not in BACKENDS:
            raise ValueError(
                f"nnip_scale.ops.{spec.name}: fallback {backend!r} -> {target!r} must map a backend the op "
                f"does not implement to one of {BACKENDS}"
            )
    _OPS[spec.name] = spec
    _RESOLVED.clear()
    return spec


def get_op(name: str) -> OpSpec:
    if name not in _OPS:
        raise KeyError(f"nnip_scale.ops: unknown op {name!r}; registered: {sorted(_OPS)}")
    return _OPS[name]


def registered_ops() -> list[str]:
    return sorted(_OPS)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[str]:
    """Concrete backends usable in this process (``torch`` always first)."""
    out = ["torch"]
    if native_state()["ok"]:
        out.append("native")
    out += [b for b in ("pyg", "cueq") if _installed(_PACKAGES[b])]
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def why_not(op: str, backend: str, device: torch.device | str, dtype: torch.dtype, **attrs) -> str | None:
    """Why the concrete ``backend`` cannot serve a call of ``op`` on ``device``/``dtype`` with the
    shape attributes ``attrs`` (None if it can). Declared fallbacks are not followed here."""
    spec = get_op(op)
    dev = torch.device(device).type
    if backend not in _CONCRETE:
        raise ValueError(f"nnip_scale.ops: unknown concrete backend {backend!r}; expected one of {_CONCRETE}")
    if backend not in spec.impls:
        return f"{op} has no {backend} implementation (implemented by: {', '.join(sorted(spec.impls))})"
    if backend == "native":
        state = native_state()
        if not state["ok"]:
            return state["reason"]
        if dev == "cuda" and not state["with_cuda"]:
            return (
                "nnip_scale._C was built without CUDA kernels; rebuild with "
                "`FORCE_CUDA=1 pip install --no-build-isolation -e .`"
            )
        if dev not in spec.native_dtypes:
            return f"{op} has no native {dev} kernel (native kernels: {', '.join(sorted(spec.native_dtypes)) or 'none'})"
        if dtype not in spec.native_dtypes[dev]:
            supported = [_dtype_name(d) for d in spec.native_dtypes[dev]]
            return f"dtype {dtype} on {dev} is not supported (supported: {supported})"
    elif backend in _PACKAGES and not _installed(_PACKAGES[backend]):
        return _INSTALL[backend]
    check = spec.limits.get(backend)
    return check(**attrs) if check is not None else None


def native_supports(op: str, device: torch.device | str, dtype: torch.dtype, **attrs) -> bool:
    """Whether the native kernels of ``op`` serve this device type, dtype and shape attributes."""
    return why_not(op, "native", device, dtype, **attrs) is None


def resolve_backend(
    name: str, device: torch.device | str, dtype: torch.dtype, op: str = "scatter_sum", **attrs
) -> str:
    """The concrete backend that runs ``op`` when ``name`` is requested on ``device``/``dtype``
    (``attrs``: the op's shape attributes, e.g. ``ell``). ``auto`` → native where it serves the
    call, then cueq on CUDA, then torch. An explicit backend that cannot serve the call raises a
    RuntimeError naming the op, the backend and why (after the op's declared substitution, if any)."""
    if name not in BACKENDS:
        raise ValueError(f"nnip_scale.ops: unknown backend {name!r}; expected one of {BACKENDS}")
    spec = get_op(op)
    dev = torch.device(device).type
    if name == "auto":
        if why_not(op, "native", dev, dtype, **attrs) is None:
            return "native"
        if dev == "cuda" and why_not(op, "cueq", dev, dtype, **attrs) is None:
            return "cueq"
        return "torch"
    requested = name
    if name not in spec.impls and name in spec.fallback:
        name = spec.fallback[name]
        if name == "auto":
            return resolve_backend("auto", dev, dtype, op, **attrs)
    why = why_not(op, name, dev, dtype, **attrs)
    if why is not None:
        via = f" (declared substitution for {requested!r})" if name != requested else ""
        raise RuntimeError(f"nnip_scale.ops.{op}: backend={name!r}{via} unavailable: {why}")
    return name


def per_op_backend(backend: str, op: str) -> str:
    """The backend a model configured with ``backend`` passes to ``op``: ``backend`` itself when it
    is ``auto``/``torch``, when ``op`` implements it or declares a substitution for it; otherwise
    ``torch`` (e.g. a ``native`` eSEN calls ``so2_conv``, which has no native kernel, with ``torch``).
    Static (no device or dtype): an op that implements the backend but cannot serve a call still
    raises at the call."""
    if backend not in BACKENDS:
        raise ValueError(f"nnip_scale.ops: unknown backend {backend!r}; expected one of {BACKENDS}")
    spec = get_op(op)
    if backend in ("auto", "torch") or backend in spec.impls or backend in spec.fallback:
        return backend
    return "torch"


def backend_table() -> dict[str, dict[str, str]]:
    """op → backend → what it means for that op: ``cpu: float32, float64 | cuda: ...`` for native,
    ``implemented`` / ``→ X (declared)`` / ``—`` (for docs and tests)."""
    table = {}
    for name in registered_ops():
        spec, row = _OPS[name], {}
        for backend in _CONCRETE:
            if backend == "native" and "native" in spec.impls:
                row[backend] = "; ".join(
                    f"{dev}: {', '.join(_dtype_name(d) for d in dts)}" for dev, dts in spec.native_dtypes.items()
                )
            elif backend in spec.impls:
                row[backend] = "implemented"
            elif backend in spec.fallback:
                row[backend] = f"→ {spec.fallback[backend]} (declared)"
            else:
                row[backend] = "—"
        table[name] = row
    return table


_RESOLVED: dict[tuple, Callable] = {}


def dispatch(op: str, backend: str, tensor: torch.Tensor, **attrs) -> Callable:
    """The implementation of ``op`` for ``backend`` resolved on ``tensor``'s device and dtype and
    the shape attributes ``attrs`` (cached: resolution costs nothing per call)."""
    key = (op, backend, tensor.device.type, tensor.dtype, tuple(sorted(attrs.items())))
    impl = _RESOLVED.get(key)
    if impl is None:
        impl = _RESOLVED[key] = get_op(op).impls[resolve_backend(backend, tensor.device.type, tensor.dtype, op, **attrs)]
    return impl


def is_native(op: str, impl: Callable) -> bool:
    """Whether ``impl`` (from :func:`dispatch`) is ``op``'s native implementation, whose kernels check
    their index arguments themselves: the public functions then skip :func:`check_index_range`, which
    would be a second pass over the indices."""
    return impl is get_op(op).impls.get("native")


# ----------------------------------------------------------------------------- argument checks
# Shared by the public op functions, so every op words a bad argument the same way: the op, the
# argument, what it got and what was expected (docs/ops.md: "errors name the op and the argument").
def check_same_device(op: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """All tensors of ``tensors`` (name → tensor; None entries are skipped) on the device of the
    first one, else a ValueError ``nnip_scale.ops.<op>: <name> is on <dev> but <first> is on <dev>``."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    ref_name, ref = items[0]
    for name, t in items[1:]:
        if t.device != ref.device:
            raise ValueError(
                f"nnip_scale.ops.{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; expected one device"
            )


def check_same_dtype(op: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """All tensors of ``tensors`` (None entries skipped) floating and of the first one's dtype, else a
    ValueError naming the op, the argument and both dtypes."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    ref_name, ref = items[0]
    for name, t in items:
        if not t.is_floating_point():
            raise ValueError(f"nnip_scale.ops.{op}: {name} has dtype {t.dtype}; expected a floating dtype")
        if t.dtype != ref.dtype:
            raise ValueError(
                f"nnip_scale.ops.{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; "
                "expected one floating dtype"
            )


def check_index(op: str, name: str, index: torch.Tensor, length: int | None = None) -> None:
    """``index`` a 1-D int64 tensor (of ``length`` entries when given), else a ValueError naming the op
    and the argument."""
    if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype != torch.int64 or (
        length is not None and index.shape[0] != length
    ):
        what = f"a 1-D int64 tensor of {length} entries" if length is not None else "a 1-D int64 tensor"
        got = f"shape {tuple(index.shape)} dtype {index.dtype}" if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"nnip_scale.ops.{op}: {name} must be {what}, got {got}")


def check_index_range(op: str, name: str, index: torch.Tensor, bound: int, bound_name: str) -> None:
    """Entries of ``index`` in [0, bound), else a RuntimeError worded as the native CPU kernels'
    (``nnip_scale.ops.<op>: <name> has 3 entries outside [0, <bound_name>=<bound>)``). CPU tensors
    only: on an accelerator the check would need a host sync, so there it is skipped (as by the
    native CUDA kernels), and so it is while torch.compile traces. Costs one pass over ``index``
    (~30 µs per 100k entries on one thread): for the paths whose kernels do not check themselves."""
    if (index.device.type != "cpu" or not isinstance(bound, int) or index.numel() == 0
            or torch.compiler.is_compiling()):
        return
    lo, hi = torch.aminmax(index)
    if int(lo) < 0 or int(hi) >= bound:
        bad = int(((index < 0) | (index >= bound)).sum())
        raise RuntimeError(f"nnip_scale.ops.{op}: {name} has {bad} entries outside [0, {bound_name}={bound})")


def check_size(op: str, name: str, value) -> None:
    """``value`` a Python int >= 0 (a SymInt under torch.compile passes), not a tensor (that would
    need a host sync), else a TypeError/ValueError naming the op and the argument."""
    if isinstance(value, torch.SymInt):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"nnip_scale.ops.{op}: {name} must be a Python int (e.g. batch['n_atoms']), got {type(value).__name__}"
            + (" (a tensor would need a host sync)" if isinstance(value, torch.Tensor) else "")
        )
    if value < 0:
        raise ValueError(f"nnip_scale.ops.{op}: {name} must be >= 0, got {value}")


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else x


def flops(op: str, *args, **kwargs) -> int:
    """FLOPs of one call of ``op``; pass the op's arguments (tensors or their shapes)."""
    spec = get_op(op)
    if spec.flops is None:
        raise LookupError(f"nnip_scale.ops.{op}: no FLOP formula registered; expected every registered op to have one")
    return int(spec.flops(*(_shape(a) for a in args), **{k: _shape(v) for k, v in kwargs.items()}))
