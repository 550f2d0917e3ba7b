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

before its checkpoints are loaded (importing the module that defines it is enough).
"""

from __future__ import annotations

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
