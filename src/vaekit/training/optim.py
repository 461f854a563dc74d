"""The optimiser: Adam, or AdamW, on torch's fused kernel where this torch has it.

The Trainer steps it through `optimizer.step()` (or the GradScaler's `step`), the public
path: step hooks, global ones included, run as torch documents them. Calling the functional
`torch.optim.adam.adam(..., fused=True)` on the optimizer's state would be the same kernels
and save ~60 us of Python per step, but would skip hooks that no public API can list;
`benchmarks/train_throughput.py --functional-adam` measures what that would gain.
"""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, or AdamW (decoupled weight decay) when `weight_decay` > 0; the fused kernel (one
    pass over all parameters) where this torch has it."""
    kind, options = torch.optim.Adam, {"lr": lr}
    if weight_decay > 0:
        kind, options["weight_decay"] = torch.optim.AdamW, weight_decay
    try:
        return kind(model.parameters(), **options, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return kind(model.parameters(), **options)
