"""Registry of the hot ops and their backends.

Backends: ``torch`` (pure PyTorch reference, the ground truth), ``native`` (``nnip_scale._C``),
``pyg`` (torch-scatter, optional), ``cueq`` (cuequivariance-torch, optional) and ``auto`` (the
fastest available for the device and dtype). An op that has no implementation in the requested
backend follows its spec's ``fallback`` chain (e.g. ``cueq`` → ``native`` → ``torch`` for
scatter_sum), documented in docs/ops.md. Parameters never live in a backend.

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


@dataclass
class OpSpec:
    """One hot op: its implementations per concrete backend and its FLOP formula.

    ``impls`` maps backend name → callable with the op's signature (minus ``backend``);
    ``native_dtypes`` maps device type → dtypes the native kernels support; ``fallback`` maps a
    backend without an implementation to the next one to try; ``flops`` takes the op's arguments
    with tensors replaced by their shapes and returns a FLOP count (int)."""

    name: str
    impls: dict[str, Callable] = field(default_factory=dict)
    native_dtypes: dict[str, tuple[torch.dtype, ...]] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    flops: Callable[..., int] | None = None


_OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Add (or replace) an op in the registry."""
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
    if _installed("torch_scatter"):
        out.append("pyg")
    if _installed("cuequivariance_torch"):
        out.append("cueq")
    return out


def native_supports(op: str, device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the native kernels of ``op`` run on this device type and dtype."""
    state = native_state()
    dev = torch.device(device).type
    if not state["ok"] or (dev == "cuda" and not state["with_cuda"]):
        return False
    return dtype in get_op(op).native_dtypes.get(dev, ())


def resolve_backend(
    name: str, device: torch.device | str, dtype: torch.dtype, op: str = "scatter_sum"
) -> str:
    """Map a requested backend to the concrete one that will run ``op`` on ``device``/``dtype``.

    ``auto`` → ``native`` where supported, else ``torch``. A backend the op does not implement
    follows the op's fallback chain. An explicitly requested backend that cannot run raises a
    RuntimeError saying why and what to install or rebuild."""
    if name not in BACKENDS:
        raise ValueError(f"nnip_scale.ops: unknown backend {name!r}; expected one of {BACKENDS}")
    spec = get_op(op)
    if name == "auto":
        return "native" if native_supports(op, device, dtype) else "torch"
    seen = []
    while name not in spec.impls:
        seen.append(name)
        if name not in spec.fallback:
            raise RuntimeError(f"nnip_scale.ops.{op}: no implementation for backend {name!r}")
        name = spec.fallback[name]
        if name == "auto":
            return resolve_backend("auto", device, dtype, op)
    if name == "native" and not native_supports(op, device, dtype):
        if seen:  # reached through a fallback: degrade to the reference instead of failing
            return "torch"
        state = native_state()
        dev = torch.device(device).type
        if not state["ok"]:
            why = state["reason"]
        elif dev == "cuda" and not state["with_cuda"]:
            why = (
                "nnip_scale._C was built without CUDA kernels; rebuild with "
                "`FORCE_CUDA=1 pip install --no-build-isolation -e .`"
            )
        else:
            supported = [str(d).removeprefix("torch.") for d in spec.native_dtypes.get(dev, ())]
            why = f"dtype {dtype} on {dev} is not supported (supported: {supported})"
        raise RuntimeError(f"nnip_scale.ops.{op}: backend='native' unavailable: {why}")
    if name == "pyg" and not _installed("torch_scatter"):
        raise RuntimeError(
            f"nnip_scale.ops.{op}: backend='pyg' needs torch-scatter, which is not installed; "
            "install it with `pip install --no-build-isolation 'nnip-scale[pyg]'` (compiles ~10 min) "
            "or use backend='auto'"
        )
    return name


_RESOLVED: dict[tuple, Callable] = {}


def _resolved_impl(op: str, backend: str, device_type: str, dtype: torch.dtype) -> Callable:
    key = (op, backend, device_type, dtype)
    impl = _RESOLVED.get(key)
    if impl is None:
        impl = _RESOLVED[key] = get_op(op).impls[resolve_backend(backend, device_type, dtype, op)]
    return impl


def dispatch(op: str, backend: str, tensor: torch.Tensor) -> Callable:
    """The implementation of ``op`` for ``backend`` resolved on ``tensor``'s device and dtype
    (cached: resolution costs nothing per call)."""
    return _resolved_impl(op, backend, tensor.device.type, tensor.dtype)


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else x


def flops(op: str, *args, **kwargs) -> int:
    """FLOPs of one call of ``op``; pass the op's arguments (tensors or their shapes)."""
    spec = get_op(op)
    if spec.flops is None:
        raise LookupError(f"nnip_scale.ops.{op}: no FLOP formula registered; expected every registered op to have one")
    return int(spec.flops(*(_shape(a) for a in args), **{k: _shape(v) for k, v in kwargs.items()}))
