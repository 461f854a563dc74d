"""The optimiser: Adam or AdamW on torch's fused kernel, and a lean way to call that kernel.

`optimizer.step()` spends Python time on every call (hooks, profiler records, grouping the
tensors by device and dtype) that on the reference config's ~4 ms CPU step costs about as
much as the kernel itself. `FusedAdamStep` makes the same two kernel calls on the
optimizer's own state, so checkpoints, learning-rate changes and `state_dict` are unchanged.
"""

from __future__ import annotations

import torch
import torch.optim.optimizer as torch_optimizer
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


class FusedAdamStep:
    """Calling it steps `optimizer` exactly as `optimizer.step()` would (same kernels, same
    state), without torch.optim's per-call overhead, when the case is the plain one: fused
    Adam/AdamW, one parameter group, every parameter with a gradient and initialised state,
    no step hooks. Otherwise it calls `optimizer.step()`."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        params = group["params"]
        decoupled = group.get("decoupled_weight_decay", type(optimizer) is torch.optim.AdamW)
        self.kernel = getattr(torch, "_fused_adamw_" if decoupled else "_fused_adam_", None)
        self.usable = (
            type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)
            and self.kernel is not None
            and len(optimizer.param_groups) == 1
            and group.get("fused") is True
            and not any(
                group.get(k) for k in ("amsgrad", "maximize", "capturable", "differentiable")
            )
            and all(  # one kernel call needs one device and dtype
                p.device == params[0].device and p.dtype == params[0].dtype for p in params
            )
        )

    def __call__(self) -> None:
        optimizer = self.optimizer
        if not self.usable or self._has_hooks():
            optimizer.step()
            return
        group = optimizer.param_groups[0]
        params = group["params"]
        states = [optimizer.state.get(p) for p in params]
        if any(not s for s in states) or any(p.grad is None for p in params):
            optimizer.step()  # the first step creates the state
            return
        steps = [s["step"] for s in states]
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            self.kernel(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
            )

    def _has_hooks(self) -> bool:
        optimizer = self.optimizer
        return bool(
            optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or getattr(torch_optimizer, "_global_optimizer_pre_hooks", None)
            or getattr(torch_optimizer, "_global_optimizer_post_hooks", None)
        )
