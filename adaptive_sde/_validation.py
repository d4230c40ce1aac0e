"""Checks of the arguments of a solve, each error naming the argument and what was expected.

Every check takes the name of the argument as the caller knows it (``name=``), so that an entry
point with its own vocabulary (torchsde's ``dt``, the diffusion sampler's ``x_T`` or ``h_init``)
reports its own argument, not the name :func:`adaptive_sde.solve` happens to use inside.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch

# Time needs more digits than half precision has: float16 resolves about 1e-3 near 1, so most
# steps of an adaptive solve would round to nothing.
_TIME_DTYPES = (torch.float32, torch.float64)
SEED_RANGE = (0, 2**64)


def check_state(y0: Any, *, name: str = "y0") -> torch.Tensor:
    """``y0`` must be a finite floating-point tensor of shape (batch, d)."""
    if not isinstance(y0, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (batch, d), got {type(y0).__name__}"
        )
    if y0.dim() != 2:
        raise ValueError(
            f"{name} must have shape (batch, d), got {tuple(y0.shape)}; "
            f"use {name}[None] for one sample, or {name}.flatten(1) for images"
        )
    if y0.shape[0] == 0 or y0.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one sample and one dimension, got {tuple(y0.shape)}"
        )
    if not y0.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {y0.dtype}")
    if not bool(torch.isfinite(y0).all()):
        bad = torch.nonzero(~torch.isfinite(y0).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"{name} must be finite; rows {bad} hold NaN or infinity")
    return y0


def check_times(
    ts: Any, y0: torch.Tensor, *, name: str = "ts", state_name: str = "y0"
) -> torch.Tensor:
    """``ts`` must be a 1-D, strictly increasing, finite float32 or float64 tensor on the state's
    device (``state_name`` names the state in the device message)."""
    if not isinstance(ts, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor of times, got {type(ts).__name__}")
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least two times, got shape {tuple(ts.shape)}")
    if not ts.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {ts.dtype}")
    if ts.dtype not in _TIME_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {ts.dtype}: half-precision times resolve "
            f"only about three digits, too few for adaptive steps; pass {name}.float() or "
            f"{name}.double() (the state may stay in half precision)"
        )
    if ts.device != y0.device:
        raise ValueError(f"{name} must be on {state_name}'s device {y0.device}, got {ts.device}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"{name} must be finite")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing, got {ts.tolist()[:8]}")
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


def check_real(name: str, value: Any, *, low: float = -math.inf, allow_inf: bool = False) -> float:
    """A real number (not a bool) >= ``low``; finite unless ``allow_inf``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or value < low:
        bound = "" if low == -math.inf else f" >= {low:g}"
        raise ValueError(
            f"{name} must be a {'' if allow_inf else 'finite '}number{bound}, got {value}"
        )
    return float(value)


def check_count(name: str, value: Any) -> int:
    """A positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``True`` or ``False`` (or ``None`` where allowed), never a truthy stand-in: ``"no"`` is
    truthy, so ``bool("no")`` would turn a mode on."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    return value


def check_callable(name: str, value: Any, *, allow_none: bool = False) -> Callable[..., Any] | None:
    """A callable (or ``None`` where allowed), checked before any work is done."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


def check_seed(value: Any, *, name: str = "seed") -> None:
    """An integer seed in [0, 2**64), a ``torch.Generator`` or ``None``.

    The counter-based generator keys on 64 bits, so a larger integer would silently alias a
    smaller one (2**64 would give seed 0's paths), and a negative one a large one."""
    if value is None or isinstance(value, torch.Generator):
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, a torch.Generator or None, got a bool")
    try:
        integer = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int, a torch.Generator or None, got {type(value).__name__}"
        ) from None
    low, high = SEED_RANGE
    if not low <= integer < high:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {integer}")
