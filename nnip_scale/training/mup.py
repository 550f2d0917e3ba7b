"""μP (maximal-update parametrisation) for Adam-type optimisers, for any width-parametrised backbone.

Yang et al., *Tensor Programs V* (2022), Table 3: tune the learning rate η* at a base width and
reuse it at every width. Parameters are classified from their shapes alone, like the ``mup``
package's infshapes: the backbone is rebuilt on the ``meta`` device (no memory, no compute) at
the base width and at a second width, and a dimension is *infinite* when its size changes with
width. With ``m = fan_in / fan_in(base)`` the width multiplier of a parameter:

=========  =====================================  ====================  ======================
kind       shape                                  Adam LR               init
=========  =====================================  ====================  ======================
hidden     fan_in and fan_out infinite             η*/m                  standard (var ∝ 1/fan_in)
output     fan_in infinite, fan_out finite         η*/m                  standard × m^(-1/2)
input      fan_in finite, fan_out infinite         η*                    standard
vector     1-D with an infinite dim (bias, norm)   η*                    standard
fixed      no infinite dim                         η*                    standard
=========  =====================================  ====================  ======================

The output rule: PyTorch's default init has std ∝ fan_in^(-1/2); multiplying by
(fan_in_base / fan_in)^(1/2) = m^(-1/2) gives std ∝ 1/fan_in, equal to the standard init at the
base width (so the base-width model is the same in both parametrisations and η* transfers).
This is Table 3's "output weights: init var 1/fan_in², LR 1/fan_in", written relative to the
base model; it is equivalent to ``mup``'s readout multiplier 1/m with an unscaled LR, without
touching any forward pass. Weight decay keeps its coefficient, so AdamW's decoupled decay
(LR × coefficient) scales with the group's LR like the update does.

Which dimension is fan_in:
- ``nn.Linear`` and other modules storing ``weight`` as ``[out, in, *kernel]``: dim 1 (the
  ``torch.nn.init`` convention); ``nn.Embedding`` ``[num, dim]``: dim 0 (a one-hot input: the
  embedding table is an input layer);
- any other parameter of ≥ 2 dims (stacked per-element or per-path weights used as
  ``x @ W``): the last two dims are ``[..., fan_in, fan_out]`` and leading dims are stack dims
  (kept finite: a stack whose length scales with width is treated as part of fan_out);
- a module may override this for its own parameters with a class attribute
  ``mup_fan_in_dim = {"param_name": dim}``.
A dimension whose size grows like width² (a flattened weight matrix, e.g. cuequivariance's
``[1, Σ_paths mul_in·mul_out]``) is a flattened hidden matrix; its multiplier is
``sqrt(numel / numel_base)``. A flattened weight with a single width factor (e.g. a ``[1, w]``
readout stored flat) cannot be told from an input layer by shape; it is classified ``input``
unless its module declares ``mup_kind = {"param_name": "output"}`` (any kind may be declared this
way; the multiplier is then the fan_in ratio, or the numel ratio for a flattened weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

ParamKind = Literal["hidden", "output", "input", "vector", "fixed"]


@dataclass(frozen=True)
class MuParam:
    """μP role of one parameter: ``kind``, width multiplier ``m`` (fan_in / base fan_in; 1 when
    fan_in is finite), the resulting ``lr_scale`` and ``init_scale`` (factors on η* and on the
    standard init)."""

    name: str
    kind: ParamKind
    width_mult: float

    @property
    def lr_scale(self) -> float:
        return 1.0 / self.width_mult if self.kind in ("hidden", "output") else 1.0

    @property
    def init_scale(self) -> float:
        return self.width_mult ** -0.5 if self.kind == "output" else 1.0


def build_at_width(model: nn.Module, width: int, device: str | torch.device = "meta") -> nn.Module:
    """``type(model)(**{**model.init_config(), "width": width})`` built on ``device``."""
    if not hasattr(model, "init_config"):
        raise TypeError(
            f"{type(model).__name__} has no init_config(); μP needs a backbone that can be rebuilt at "
            f"another width (expected the PotentialModel contract: a `width` argument and init_config())"
        )
    config = model.init_config()
    if "width" not in config:
        raise ValueError(
            f"{type(model).__name__}.init_config() has no 'width'; μP needs the width knob "
            f"(got keys {sorted(config)})"
        )
    with torch.device(device):
        return type(model)(**{**config, "width": int(width)})


def _fan_in_dims(model: nn.Module) -> dict[str, int]:
    """Parameter name -> index of its fan_in dimension (module docstring)."""
    out: dict[str, int] = {}
    for mod_name, mod in model.named_modules():
        override = getattr(mod, "mup_fan_in_dim", {}) or {}
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p_name in override:
                out[full] = int(override[p_name]) % max(p.ndim, 1)
            elif isinstance(mod, nn.Embedding):
                out[full] = 0
            elif p.ndim >= 2 and p_name == "weight" and _is_torch_layer(mod):
                out[full] = 1
            elif p.ndim >= 2:
                out[full] = p.ndim - 2
            else:
                out[full] = 0
    return out


def _declared_kinds(model: nn.Module) -> dict[str, ParamKind]:
    """Parameter name -> kind declared by its module's ``mup_kind`` attribute."""
    out: dict[str, ParamKind] = {}
    for mod_name, mod in model.named_modules():
        for p_name, kind in (getattr(mod, "mup_kind", {}) or {}).items():
            if kind not in ("hidden", "output", "input", "vector", "fixed"):
                raise ValueError(f"{type(mod).__name__}.mup_kind[{p_name!r}] = {kind!r}; expected one of "
                                 f"hidden, output, input, vector, fixed")
            out[f"{mod_name}.{p_name}" if mod_name else p_name] = kind
    return out


def _declared_mult(kind: ParamKind, shape, bshape, degrees, fan_in: int) -> float:
    if kind not in ("hidden", "output"):
        return 1.0
    ratio = math.prod(shape) / math.prod(bshape)
    if max(degrees, default=0) == 2:
        return math.sqrt(ratio)
    if len(shape) >= 2 and degrees[fan_in] > 0 and sum(d > 0 for d in degrees) > 1:
        return shape[fan_in] / bshape[fan_in]
    return ratio  # the only width factor is fan_in (e.g. a flat [1, w] readout)


def _is_torch_layer(mod: nn.Module) -> bool:
    """Layers that store ``weight`` as [out, in, *kernel] (torch.nn's convention)."""
    return isinstance(mod, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd))


def _degree(size: int, size_other: int, width: int, width_other: int) -> int:
    """How a dimension grows with width: 0 (finite), 1 (∝ width) or 2 (∝ width², flattened)."""
    if size == size_other:
        return 0
    exponent = math.log(size_other / size) / math.log(width_other / width)
    return 2 if exponent > 1.5 else 1


def classify_parameters(model: nn.Module, base_width: int) -> dict[str, MuParam]:
    """The μP role of every trainable parameter of ``model`` relative to ``base_width``.

    Raises ``ValueError`` when no parameter changes shape with width (μP would be a no-op, which
    means the model's width knob does not reach its parameters)."""
    if not isinstance(base_width, int) or base_width < 1:
        raise ValueError(f"mup_base_width must be a positive int, got {base_width!r}")
    base = build_at_width(model, base_width)  # checks init_config() and its 'width'
    width = int(model.init_config()["width"])
    other = 2 * width if 2 * width != base_width else 3 * width
    probe = build_at_width(model, other)
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    probe_shapes = {n: tuple(p.shape) for n, p in probe.named_parameters()}
    fan_in_dim = _fan_in_dims(model)
    declared = _declared_kinds(model)
    roles: dict[str, MuParam] = {}
    any_infinite = False
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in base_shapes or name not in probe_shapes or len(probe_shapes[name]) != p.ndim:
            raise ValueError(
                f"parameter {name!r} of {type(model).__name__} (shape {tuple(p.shape)}) does not exist with the "
                f"same rank at width {base_width} or {other}; μP needs the same parameters at every width"
            )
        shape, pshape, bshape = tuple(p.shape), probe_shapes[name], base_shapes[name]
        degrees = [_degree(s, t, width, other) for s, t in zip(shape, pshape)]
        any_infinite |= any(degrees)
        if name in declared:
            roles[name] = MuParam(name, declared[name], _declared_mult(declared[name], shape, bshape, degrees,
                                                                       fan_in_dim[name]))
            continue
        if max(degrees, default=0) == 2:  # a flattened width x width matrix
            mult = math.sqrt(math.prod(shape) / math.prod(bshape))
            roles[name] = MuParam(name, "hidden", mult)
            continue
        if p.ndim < 2:
            roles[name] = MuParam(name, "vector" if any(degrees) else "fixed", 1.0)
            continue
        k = fan_in_dim[name]
        fan_in_inf = degrees[k] > 0
        fan_out_inf = any(d > 0 for i, d in enumerate(degrees) if i != k)
        mult = shape[k] / bshape[k] if fan_in_inf else 1.0
        if fan_in_inf and fan_out_inf:
            kind: ParamKind = "hidden"
        elif fan_in_inf:
            kind = "output"
        elif fan_out_inf:
            kind = "input"
        else:
            kind = "fixed"
        roles[name] = MuParam(name, kind, mult)
    if not any_infinite:
        raise ValueError(
            f"no parameter of {type(model).__name__} changes shape between width {width} and {other}; "
            f"μP needs a model whose parameters scale with `width`"
        )
    return roles


def lr_scales(model: nn.Module, base_width: int) -> dict[int, float]:
    """``id(parameter) -> factor on η*`` for :func:`nnip_scale.training.optim.parameter_groups`."""
    roles = classify_parameters(model, base_width)
    return {id(p): roles[n].lr_scale for n, p in model.named_parameters() if n in roles}


@torch.no_grad()
def apply_mup_init(model: nn.Module, base_width: int) -> dict[str, MuParam]:
    """Rescale the output weights of a *freshly initialised* ``model`` (std × m^(-1/2)), once.

    Marks the model so a second call is a no-op; weights later restored from a checkpoint
    overwrite these and are never rescaled (the rescale happens at construction, before any
    restore). Returns the classification."""
    roles = classify_parameters(model, base_width)
    if getattr(model, "_mup_init_base_width", None) is not None:
        return roles
    for name, p in model.named_parameters():
        role = roles.get(name)
        if role is not None and role.init_scale != 1.0:
            p.mul_(role.init_scale)
    model._mup_init_base_width = int(base_width)
    return roles


def describe(roles: dict[str, MuParam]) -> str:
    """One line per parameter: name, kind, width multiplier, LR and init factors."""
    return "\n".join(
        f"{r.name}: {r.kind} m={r.width_mult:.3g} lr×{r.lr_scale:.3g} init×{r.init_scale:.3g}"
        for r in roles.values()
    )
