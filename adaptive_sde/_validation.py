"""Checks of the arguments of a solve, each error naming the argument and what was expected."""

from __future__ import annotations

import math
from typing import Any

import torch


def check_state(y0: Any) -> torch.Tensor:
    """``y0`` must be a finite floating-point tensor of shape (batch, d)."""
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor of shape (batch, d), got {type(y0).__name__}")
    if y0.dim() != 2:
        raise ValueError(
            f"y0 must have shape (batch, d), got {tuple(y0.shape)}; "
            "use y0[None] for one sample, or y0.flatten(1) for images"
        )
    if y0.shape[0] == 0 or y0.shape[1] == 0:
        raise ValueError(
            f"y0 must have at least one sample and one dimension, got {tuple(y0.shape)}"
        )
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}")
    if not bool(torch.isfinite(y0).all()):
        bad = torch.nonzero(~torch.isfinite(y0).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"y0 must be finite; rows {bad} hold NaN or infinity")
    return y0


def check_times(ts: Any, y0: torch.Tensor) -> torch.Tensor:
    """``ts`` must be a 1-D, strictly increasing, finite floating-point tensor on y0's device."""
    if not isinstance(ts, torch.Tensor):
        raise TypeError(f"ts must be a 1-D torch.Tensor of times, got {type(ts).__name__}")
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be 1-D with at least two times, got shape {tuple(ts.shape)}")
    if not ts.is_floating_point():
        raise TypeError(f"ts must be a floating-point tensor, got dtype {ts.dtype}")
    if ts.device != y0.device:
        raise ValueError(f"ts must be on y0's device {y0.device}, got {ts.device}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("ts must be finite")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(f"ts must be strictly increasing, got {ts.tolist()[:8]}")
    return ts.detach()


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A finite number > 0 (or ``None`` where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_count(name: str, value: Any) -> int:
    """A positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
