"""The models a checkpoint may name: nnip-scale's own backbones and the classes a user registers.

A checkpoint records its backbone as ``{"class_path": ..., "init_args": ...}``. Loading one never
imports a module or calls anything the checkpoint names: the class path is looked up here, as a
string, among classes that the running program has registered, and anything else is refused
(``nnip_scale.checkpoint``). The built-in backbones register themselves; a custom model registers
with::

    from nnip_scale.models import PotentialModel, register_model

    @register_model
    class MyModel(PotentialModel):
        ...

before its checkpoints are loaded (importing the module that defines it is enough). Each built-in model
registers itself the same way, in its own module, with the aliases older checkpoints and configs use
(e.g. ``nnip_scale.models.MPNN``, ``nnip_scale.models.egnn.MCEGNN``).

Configs (not checkpoints) are code the user runs: :func:`build` and :func:`resolve_model` also accept a
short name (``MPNN``) and import a ``module.Class`` path that is not registered yet, as LightningCLI does.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}


def class_path(cls: type) -> str:
    """The ``module.QualName`` a checkpoint records for ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_model(cls: type[nn.Module] | None = None, *, aliases: tuple[str, ...] = ()):
    """Allow checkpoints to name ``cls`` (usable as a decorator, with or without arguments).

    ``cls`` is registered under its full class path and any ``aliases`` (e.g. the re-exported
    path ``nnip_scale.models.MPNN``). It must be an ``nn.Module`` subclass; a name already taken by
    another class is a ``ValueError`` (two classes must never answer to one name)."""

    def register(c: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(c, type) and issubclass(c, nn.Module)):
            raise TypeError(f"register_model: {c!r} is not an nn.Module subclass; expected a model class")
        for name in (class_path(c), *aliases):
            taken = _REGISTRY.get(name)
            if taken is not None and taken is not c:
                raise ValueError(f"register_model: {name!r} already names {class_path(taken)}; "
                                 f"expected a class path not yet registered")
            _REGISTRY[name] = c
        return c

    return register if cls is None else register(cls)


def registered_model(name: str) -> type[nn.Module] | None:
    """The class registered under ``name``, or None (never imports anything)."""
    return _REGISTRY.get(name)


def registered_models() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def resolve_model(name: str, *, import_modules: bool = True) -> type[nn.Module]:
    """The model class a config names (``model.backbone.class_path``).

    ``name`` is a registered class path or alias (``nnip_scale.models.mpnn.MPNN``,
    ``nnip_scale.models.MPNN``), a short name (``MPNN``: the class name of exactly one registered model)
    or, with ``import_modules``, a ``module.Class`` path to import (a user's model; its module registers
    it). Anything else is a ``ValueError`` naming ``name`` and what was expected."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model class_path {name!r}: expected a non-empty string such as 'nnip_scale.models.MPNN'")
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    short = {c for c in _REGISTRY.values() if c.__name__ == name}
    if len(short) == 1:
        return short.pop()
    expected = (f"expected a registered model ({', '.join(sorted({c.__name__ for c in _REGISTRY.values()}))} "
                f"or one of the class paths {', '.join(registered_models())})")
    if len(short) > 1:
        raise ValueError(f"model class_path {name!r} is the short name of several models "
                         f"({', '.join(sorted(class_path(c) for c in short))}); expected a full class path")
    module_name, _, cls_name = name.rpartition(".")
    if not import_modules or not module_name:
        raise ValueError(f"model class_path {name!r} is not a registered model; {expected}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model class_path {name!r}: cannot import module {module_name!r} ({err}); {expected}, "
                         f"or an importable module.Class") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"model class_path {name!r}: module {module_name!r} has no nn.Module class {cls_name!r}; "
                         f"{expected}, or an importable module.Class of an nn.Module")
    return cls


def build(class_path: str, init_args: dict[str, Any] | None = None, **overrides: Any) -> nn.Module:
    """The model ``class_path`` (:func:`resolve_model`) built with ``init_args`` updated by ``overrides``
    (e.g. ``width=64, backend="torch"``). Arguments the class does not take are a ``ValueError`` naming
    the class path and the accepted arguments; a value the constructor refuses raises its own error."""
    cls = resolve_model(class_path)
    if init_args is not None and not isinstance(init_args, dict):
        raise ValueError(f"model {class_path!r}: init_args is a {type(init_args).__name__}; expected a mapping "
                         f"of constructor arguments")
    args = {**(init_args or {}), **overrides}
    signature = inspect.signature(cls)
    try:
        signature.bind(**args)
    except TypeError as err:
        accepted = ", ".join(p for p in signature.parameters if p not in ("args", "kwargs"))
        raise ValueError(f"model {class_path!r}: init_args do not fit {cls.__module__}.{cls.__qualname__} ({err}); "
                         f"expected arguments among: {accepted}") from None
    return cls(**args)


def model_spec_from_config(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(class_path, init_args)`` of the backbone in a model config YAML (``model.backbone.class_path``
    and ``init_args``, as in ``configs/model/mpnn.yaml``; a bare ``model.backbone: MPNN`` gives no
    arguments). A file without them is a ``ValueError`` naming the file."""
    import yaml

    path = Path(path)
    expected = (f"{path}: expected a model config with model.backbone.class_path (and init_args), as in "
                f"configs/model/mpnn.yaml")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{expected} ({err})") from None
    backbone = cfg.get("model", {}).get("backbone") if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) \
        else None
    if isinstance(backbone, str) and backbone:
        return backbone, {}
    if not isinstance(backbone, dict) or not isinstance(backbone.get("class_path"), str):
        raise ValueError(f"{expected}; found no model.backbone.class_path")
    init_args = backbone.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"{expected}; model.backbone.init_args is a {type(init_args).__name__}, expected a mapping")
    return backbone["class_path"], dict(init_args)
