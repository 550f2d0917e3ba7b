"""A tiny potential whose training-step FLOPs can be counted by hand (ledger tests)."""

import torch
from torch import nn


class LinearPotential(nn.Module):
    """h = W1·pos + b1 [A,d]; E = Σ_atoms w2·h; F = W3·h. Not physical: only a FLOP-count fixture."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.width, self.depth = d, 1
        self.lin = nn.Linear(3, d)
        self.out = nn.Linear(d, 1, bias=False)
        self.force = nn.Linear(d, 3, bias=False)

    def forward(self, batch):
        h = self.lin(batch["positions"])
        e_atom = self.out(h).squeeze(-1)
        energy = torch.zeros(batch["n_structures"], dtype=h.dtype).index_add(0, batch["batch"], e_atom)
        return {"energy": energy, "forces": self.force(h)}

    def count_parameters(self) -> dict:
        n = sum(p.numel() for p in self.parameters())  # 3d + d (lin) + d (out) + 3d (force) = 8d
        return {"n_params": n, "n_params_total": n}

    @staticmethod
    def hand_count_forward_flops(n_atoms: int, d: int) -> int:
        """lin 2·A·3·d + out 2·A·d + force 2·A·3·d + energy index_add A (no loss, no backward)."""
        return 14 * n_atoms * d + n_atoms

    @staticmethod
    def hand_count_train_flops(n_atoms: int, d: int) -> int:
        """Forward: lin 2·A·3·d, out 2·A·d, force 2·A·3·d, energy index_add A, the loss's
        per-structure force mean A. Backward: lin weight grad 2·A·3·d (positions need no grad);
        out weight + input grads 2·2·A·d; force weight + input grads 2·2·A·3·d; gathers 0."""
        A = n_atoms
        forward = 6 * A * d + 2 * A * d + 6 * A * d + A + A
        backward = 6 * A * d + 4 * A * d + 12 * A * d
        return forward + backward
