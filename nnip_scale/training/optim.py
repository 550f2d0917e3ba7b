"""Optimizers: schedule-free AdamW (default, as in the paper) and AdamW with warmup + cosine."""

import math
from typing import Literal

import torch
from torch import nn

OptimizerName = Literal["schedulefree_adamw", "adamw"]


def parameter_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, lr_scales: dict[int, float] | None = None
) -> list[dict]:
    """Parameter groups: matrices get ``weight_decay``; biases, norms (1-D tensors) and embedding
    tables get none. With ``lr_scales`` (``id(param) -> factor``, e.g. from
    ``nnip_scale.training.mup.lr_scales``) each of those is further split by LR factor, and every
    group carries ``lr_scale`` and, when ``lr`` is given, ``lr = lr * lr_scale``."""
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    buckets: dict[tuple[bool, float], list] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or id(p) in embedding_params)
        scale = 1.0 if lr_scales is None else float(lr_scales.get(id(p), 1.0))
        buckets.setdefault((decays, scale), []).append(p)
    if lr_scales is None:
        buckets.setdefault((True, 1.0), [])  # the historical layout: the decay group always first
    groups = []
    for (decays, scale), params in sorted(buckets.items(), key=lambda kv: (not kv[0][0], -kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale}
        if lr is not None:
            group["lr"] = lr * scale
        groups.append(group)
    return groups


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine to ``min_ratio`` at
    ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module,
    name: OptimizerName,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    lr_scales: dict[int, float] | None = None,
):
    """Returns what ``LightningModule.configure_optimizers`` returns. ``lr_scales``: per-parameter
    factors on ``lr`` (μP; ``None``: one LR for all)."""
    groups = parameter_groups(model, weight_decay, lr, lr_scales)
    if name == "schedulefree_adamw":
        import schedulefree

        return schedulefree.AdamWScheduleFree(groups, lr=lr, betas=betas, warmup_steps=warmup_steps)
    if name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    raise ValueError(f"optimizer must be 'schedulefree_adamw' or 'adamw', got {name!r}")


def is_schedule_free(optimizer) -> bool:
    """Whether ``optimizer`` needs ``train()``/``eval()`` mode switches."""
    return hasattr(optimizer, "train") and hasattr(optimizer, "eval") and "train_mode" in optimizer.param_groups[0]
