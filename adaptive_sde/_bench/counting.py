"""An SDE wrapper that counts evaluations, so that methods are compared by the work they do.

Every call of ``f`` or ``g`` counts the rows it evaluates divided by the batch size, a drift and
a diffusion call each counting one: one Euler step costs 2 per sample, one Gotta-Go-Fast attempt
4, whether the solver evaluates the whole batch or only the rows still running. torchsde's
Milstein and SRK call ``g`` under autograd for their derivative terms; the vector-Jacobian
products are not counted. Used by the demo and the analytic benchmark.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class BudgetExceeded(RuntimeError):
    """Raised by :class:`CountingSDE` once a run has spent its evaluation budget."""


class CountingSDE(nn.Module):
    """``sde`` with the same ``f``, ``g``, noise and SDE types, counting evaluations per sample
    in ``evaluations``; raises :class:`BudgetExceeded` past ``budget`` of them, so a sweep point
    that would take too long is abandoned instead of waited for."""

    def __init__(self, sde: nn.Module, batch: int, budget: float = float("inf")) -> None:
        super().__init__()
        self.sde: Any = sde  # any torchsde-style SDE: f and g are its own methods
        self.batch, self.budget = batch, budget
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.evaluations = 0.0

    def _count(self, y: torch.Tensor) -> None:
        self.evaluations += y.shape[0] / self.batch
        if self.evaluations > self.budget:
            raise BudgetExceeded(f"more than {self.budget:g} evaluations per sample")

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._count(y)
        return self.sde.f(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._count(y)
        return self.sde.g(t, y)
