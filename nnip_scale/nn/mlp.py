"""Multi-layer perceptrons."""

import math
from collections.abc import Sequence

import torch
from torch import nn

# 1/sqrt(E[SiLU(z)^2]), z ~ N(0, 1): E[SiLU(z)^2] = 0.3557755 (numerical quadrature, checked in tests/test_models_mace.py)
SILU_GAIN = 1.0 / math.sqrt(0.3557755)


class MLP(nn.Sequential):
    """Linear layers with SiLU between them (none after the last).

    Args:
        sizes: layer widths, input first: ``(in, hidden..., out)``.
        bias_last: whether the last layer has a bias.
        unit_init: variance-preserving initialisation instead of PyTorch's default: weights
            N(0, g²/fan_in), biases 0, g = 1 for the first layer and g = 1/sqrt(E[SiLU(z)²]) for
            z ~ N(0, 1) (≈ 1.68) after a SiLU, so unit-variance inputs give outputs of unit
            variance. PyTorch's default (uniform, std 1/sqrt(3·fan_in)) shrinks the signal by
            roughly 3× per layer, which a deep radial MLP whose output multiplies every message
            cannot afford.
    """

    def __init__(self, sizes: Sequence[int], bias_last: bool = True, unit_init: bool = False):
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = k == len(sizes) - 2
            layers.append(nn.Linear(n_in, n_out, bias=bias_last or not last))
            if not last:
                layers.append(nn.SiLU())
        super().__init__(*layers)
        if unit_init:
            with torch.no_grad():
                for k, layer in enumerate(m for m in self if isinstance(m, nn.Linear)):
                    gain = 1.0 if k == 0 else SILU_GAIN
                    layer.weight.normal_(0.0, gain / math.sqrt(layer.in_features))
                    if layer.bias is not None:
                        layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (Sequential semantics)
        return super().forward(x)
