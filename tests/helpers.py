"""Shared helpers for the tests: Monte-Carlo checks and host-read counting; the order fits and
the shared Brownian motion come from :mod:`adaptive_sde._bench.convergence`."""

from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from adaptive_sde._bench.convergence import (  # noqa: F401  (the tests import them from here)
    brownian_interval,
    fitted_order,
    fixed_step_strong_error,
)


def assert_within_mc(
    samples: torch.Tensor, expected: torch.Tensor, k: float = 4.0, what: str = "mean"
) -> None:
    """The sample mean (or variance) of each column is within k standard errors of ``expected``."""
    samples = samples.double()
    n = samples.shape[0]
    if what == "mean":
        estimate = samples.mean(0)
        se = samples.std(0) / math.sqrt(n)
    else:
        estimate = samples.var(0)
        centred = samples - samples.mean(0)
        # Standard error of the sample variance from the fourth central moment.
        se = torch.sqrt(((centred**4).mean(0) - estimate**2) / n)
    expected = expected.to(estimate)
    assert torch.all((estimate - expected).abs() <= k * se), (
        f"{what} {estimate.tolist()} vs exact {expected.tolist()} (standard error {se.tolist()})"
    )


class HostReads(TorchFunctionMode):
    """Counts the calls that make the host wait for the device: reading values (``item``,
    ``tolist``, ``bool``/``int``/``float`` of a tensor, ``numpy``, ``cpu``) and ops whose output
    shape depends on values (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``).
    On a CPU these cost nothing, but the same code on a GPU stalls its queue at each one, so
    counting them on the CPU bounds the synchronisations a GPU run makes."""

    _READS = frozenset(
        {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
    )
    _SHAPE_FROM_VALUES = frozenset({"nonzero", "masked_select", "unique", "unique_consecutive"})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        masked = name in ("__getitem__", "__setitem__") and _has_bool_index(args[1])
        if name in self._READS or name in self._SHAPE_FROM_VALUES or masked:
            self.count += 1
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def _has_bool_index(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)
