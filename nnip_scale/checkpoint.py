"""The one checkpoint loader: reading a checkpoint runs no code.

Every path that opens a checkpoint goes through here: the ASE calculator
(:func:`load_backbone`), and ``nnip-scale fit|validate|test|predict --ckpt_path`` (the CLI checks
the file with :func:`check_checkpoint` before Lightning reads it, and Lightning then reads it with
``weights_only=True``).

- The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only. A
  pickled object of any other type (a ``__reduce__`` payload, a class instance) is refused before
  it is built. The checkpoints nnip-scale writes hold nothing else, so no type is allow-listed.
- The backbone a checkpoint names (``nnip_backbone.class_path``) is looked up as a string among
  the registered models (:mod:`nnip_scale.models.registry`) before anything is imported or
  called; its ``init_args`` must be plain data and fit the class's signature.
- The LightningModule hyperparameters (which LightningCLI feeds back into the config on
  ``--ckpt_path``) must be plain data and name arguments of the module class.

Anything else is a :class:`CheckpointError` naming the file and the offending entry.
"""

from __future__ import annotations

import inspect
import pickle
import re
import types
import typing
from pathlib import Path
from typing import Any

import torch

from nnip_scale.models.registry import registered_model, registered_models

#: the only ``_instantiator`` LightningCLI writes into hyperparameters (a name, never called here)
LIGHTNING_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
_PLAIN_SCALARS = (type(None), bool, int, float, str)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely; the message names the file and the entry."""


def _plain(value: Any, where: str, path: Path) -> None:
    """Refuse anything but None/bool/int/float/str and lists, tuples and str-keyed dicts of them."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            _plain(v, f"{where}[{k}]", path)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: entry {where} has a non-string key {k!r}; expected plain data")
            _plain(v, f"{where}.{k}", path)
        return
    raise CheckpointError(f"{path}: entry {where} holds a {type(value).__name__}; expected plain data "
                          f"(numbers, strings, booleans, lists, dicts)")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path`` as a dict, read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if match is None:  # not a pickle torch can read at all (garbage, truncated)
            detail = next((ln.strip() for ln in str(err).splitlines() if "Unsupported" in ln), str(err).splitlines()[0])
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
        detail = f"it names {match.group(1)}"
        raise CheckpointError(
            f"{path}: refused: the file holds pickled objects other than tensors and plain data ({detail.strip()}); "
            f"nnip-scale loads checkpoints without running code, expected a checkpoint written by nnip-scale fit"
        ) from None
    except Exception as err:  # torch raises several types for truncated or corrupt files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}; expected a checkpoint dict written by nnip-scale fit")
    return ckpt


def backbone_class(ckpt: dict, path: str | Path) -> tuple[type[torch.nn.Module], dict]:
    """The registered class and checked ``init_args`` of the checkpoint's ``nnip_backbone``."""
    path = Path(path)
    spec = ckpt.get("nnip_backbone")
    if not isinstance(spec, dict) or spec.get("init_args") is None:
        raise CheckpointError(
            f"{path}: the checkpoint does not record its backbone (key 'nnip_backbone'); expected a "
            f"checkpoint written by nnip-scale fit"
        )
    name = spec.get("class_path")
    cls = registered_model(name) if isinstance(name, str) else None
    if cls is None:
        raise CheckpointError(
            f"{path}: entry nnip_backbone.class_path = {name!r} is not a registered model; expected one of "
            f"{', '.join(registered_models())} (a custom model class loads once your code registers it with "
            f"nnip_scale.models.register_model)"
        )
    init_args = spec["init_args"]
    if not isinstance(init_args, dict):
        raise CheckpointError(f"{path}: entry nnip_backbone.init_args is a {type(init_args).__name__}; expected a dict")
    _plain(init_args, "nnip_backbone.init_args", path)
    try:
        inspect.signature(cls).bind(**init_args)
    except TypeError as err:
        accepted = ", ".join(p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs"))
        raise CheckpointError(f"{path}: entry nnip_backbone.init_args does not fit {name} ({err}); "
                              f"expected arguments among: {accepted}") from None
    _check_types(cls, init_args, name, path)
    return cls, init_args


def _check_types(cls: type, init_args: dict, name: str, path: Path) -> None:
    """Arguments annotated as int, float, bool, str or a Literal must have that type/value."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: the signature check above still holds
        return
    for key, value in init_args.items():
        hint = hints.get(key)
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if value is None and type(None) in options:
            continue
        options = [t for t in options if t is not type(None)]
        simple = [t for t in options if t in (int, float, bool, str)]
        literal_types = [t for t in options if typing.get_origin(t) is typing.Literal]
        if not options or len(simple) + len(literal_types) != len(options):
            continue  # a richer type (tuple, list, a class): left to the constructor
        literals = [v for t in literal_types for v in typing.get_args(t)]
        ok = value in literals if literals and isinstance(value, str) else False
        for t in simple:
            ok = ok or (isinstance(value, t) and not (t is int and isinstance(value, bool))) or (
                t is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            expected = " or ".join([t.__name__ for t in simple] + [repr(v) for v in literals])
            raise CheckpointError(f"{path}: entry nnip_backbone.init_args.{key} = {value!r}; expected {expected} "
                                  f"(the type {name} declares)")


def check_module_hparams(ckpt: dict, path: str | Path, module_cls: type) -> None:
    """The checkpoint's ``hyper_parameters`` are plain data naming arguments of ``module_cls``."""
    path = Path(path)
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: entry hyper_parameters is a {type(hparams).__name__}; expected a dict")
    accepted = [p for p in inspect.signature(module_cls).parameters if p not in ("self", "backbone")]
    for key, value in hparams.items():
        where = f"hyper_parameters.{key}"
        if key == "_instantiator":
            if value != LIGHTNING_INSTANTIATOR:
                raise CheckpointError(f"{path}: entry {where} = {value!r}; expected {LIGHTNING_INSTANTIATOR!r} or none")
            continue
        if key not in accepted:
            raise CheckpointError(f"{path}: entry {where} is not an argument of {module_cls.__name__}; "
                                  f"expected only: {', '.join(accepted)}")
        _plain(value, where, path)
    for section in ("datamodule_hyper_parameters",):
        if section in ckpt:
            _plain(ckpt[section], section, path)


def check_checkpoint(path: str | Path, module_cls: type | None = None) -> dict:
    """Read and check everything in the checkpoint that nnip-scale or Lightning acts on; returns it."""
    ckpt = read_checkpoint(path)
    backbone_class(ckpt, path)
    if module_cls is not None:
        check_module_hparams(ckpt, path, module_cls)
    return ckpt


def load_backbone(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the backbone saved in a checkpoint written by ``nnip-scale fit`` (eval mode)."""
    path = Path(checkpoint)
    ckpt = read_checkpoint(path, map_location)
    cls, init_args = backbone_class(ckpt, path)
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: no 'state_dict' entry; expected a checkpoint written by nnip-scale fit")
    try:
        model = cls(**init_args)
    except ValueError as err:  # plain data of the right types, but values the class refuses
        raise CheckpointError(f"{path}: entry nnip_backbone.init_args does not build {spec_name(ckpt)} ({err})") from None
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: entry state_dict does not match {spec_name(ckpt)} built from its "
                              f"init_args ({str(err).splitlines()[0]})") from None
    return model.eval()


def spec_name(ckpt: dict) -> str:
    return str((ckpt.get("nnip_backbone") or {}).get("class_path"))
