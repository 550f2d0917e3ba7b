"""Interatomic-potential backbones: plain ``nn.Module``s, batch dict in, energy/forces out.

Each model registers itself in its own module (``@register_model``, with the alias
``nnip_scale.models.<Class>``). Importing this package imports every model module in it, so a model
added as ``nnip_scale/models/<name>.py`` is registered (checkpoints may name it), resolvable by short
name and importable as ``nnip_scale.models.<Class>`` without editing this file. :func:`build` turns a
config's ``class_path`` (or a short name) and ``init_args`` into a model.
"""

import importlib
import pkgutil

from nnip_scale.models.base import PotentialModel
from nnip_scale.models.esen import ESEN
from nnip_scale.models.gemnet_oc import GemNetOC
from nnip_scale.models.mace import MACE
from nnip_scale.models.mc_egnn import MCEGNN
from nnip_scale.models.mpnn import MPNN
from nnip_scale.models.registry import (
    build,
    model_spec_from_config,
    register_model,
    registered_model,
    registered_models,
    resolve_model,
)

#: modules of this package that define no model (``egnn``: the deprecated name of ``mc_egnn``)
_NOT_MODELS = {"base", "registry", "egnn"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_MODELS:
        importlib.import_module(f"{__name__}.{_info.name}")
del _info


def __getattr__(name: str):
    """``nnip_scale.models.<Class>`` for a model registered under that alias (a model file added to
    this package registers it with ``@register_model(aliases=("nnip_scale.models.<Class>",))``)."""
    cls = registered_model(f"{__name__}.{name}")
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls


__all__ = ["ESEN", "GemNetOC", "MACE", "MCEGNN", "MPNN", "PotentialModel", "build", "model_spec_from_config",
           "register_model", "registered_model", "registered_models", "resolve_model"]
