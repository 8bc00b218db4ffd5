"""Adapter dropout that draws only the dropped positions (`training.sparse_dropout`).

PEFT's adapters apply `nn.Dropout` to their input at every adapted layer, and on a CPU drawing
one Bernoulli number per activation is a large share of a small model's step (a third of a
compiled SmolLM2-135M step: BENCHMARKS.md, long runs): torch's CPU generator makes them one at a
time. At p = 0.05 only one activation in twenty is dropped, so this draws the gaps between
dropped positions instead, from a geometric distribution: in a row of independent Bernoulli(p)
trials the distances between successes are independent Geometric(p), so the mask has exactly
the distribution of `nn.Dropout`'s, from about p * n random numbers instead of n. The masks
differ from `nn.Dropout`'s for the same seed, so runs with it are keyed by it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Gaps drawn beyond the expected count, in standard deviations of the count: the chance that
# they end before the tensor does (its tail then kept) is below 1e-30 (Bernstein's bound). No
# check for it: a data-dependent branch would split a compiled block at every adapter.
SPARE_SD = 12.0


def dropped_positions(n: int, p: float, device: Any) -> torch.Tensor:
    """Positions in [0, n) each dropped independently with probability p (sorted, distinct),
    padded with n."""
    mean = n * p
    count = int(mean + SPARE_SD * (mean * (1.0 - p)) ** 0.5 + 16)
    gaps = torch.empty(count, dtype=torch.float64, device=device).geometric_(p)
    return gaps.cumsum(0).sub_(1).clamp_(max=n).long()


def sparse_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """`F.dropout(x, p, training=True)` in distribution, drawing ~p * numel random numbers."""
    n = x.numel()
    mask = torch.full((n + 1,), 1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    mask = mask.index_fill(0, dropped_positions(n, p, x.device), 0.0)
    return x * mask[:n].view(x.shape)


class SparseDropout(nn.Dropout):
    """`nn.Dropout` whose training masks come from `sparse_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        if self.p >= 1.0:
            return torch.zeros_like(x)
        return sparse_dropout(x, self.p)


def use_sparse_dropout(model: nn.Module) -> int:
    """Swap every plain `nn.Dropout` inside the adapters (PEFT's `lora_dropout`, `vera_dropout`,
    ... module dicts) for `SparseDropout` of the same p; returns how many."""
    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if not (name.endswith("_dropout") and isinstance(child, nn.ModuleDict)):
                continue
            for key, dropout in child.items():
                if type(dropout) is nn.Dropout and dropout.p > 0:
                    child[key] = SparseDropout(dropout.p)
                    swapped += 1
    return swapped
