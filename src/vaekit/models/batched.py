from __future__ import annotations

import torch


def wide(t: torch.Tensor) -> torch.Tensor:
    """float32, or float64 where it already is (a float64 model scores in float64)."""
    return t if t.dtype == torch.float64 else t.float()
