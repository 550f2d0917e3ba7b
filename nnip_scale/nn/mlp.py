"""Multi-layer perceptrons."""

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear layers with SiLU between them (none after the last).

    Args:
        sizes: layer widths, input first: ``(in, hidden..., out)``.
        bias_last: whether the last layer has a bias.
    """

    def __init__(self, sizes: Sequence[int], bias_last: bool = True):
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = k == len(sizes) - 2
            layers.append(nn.Linear(n_in, n_out, bias=bias_last or not last))
            if not last:
                layers.append(nn.SiLU())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (Sequential semantics)
        return super().forward(x)
