"""Deliberately wrong Brownian sources: the controls that show the unbiasedness checks can fail.

A test or benchmark that claims "adaptivity does not bias the solution" is only worth something
if it fails on a solver that does bias it. :class:`RedrawingBrownian` is that solver's noise: the
Brownian motion of the paper's code, which draws fresh noise at every query, so a rejected step's
increment is forgotten and acceptance selects the noise (the variance at T of an
Ornstein-Uhlenbeck process comes out about 0.19 against the exact 0.125, and a ring of Gaussians
sampled under the VE SDE over-weights its diagonal modes). The tests
(``test_unbiased``, ``test_diffusion``, ``test_snr``) run it beside the
:class:`~adaptive_sde.BrownianRegister` and require the bias to show; the ``gmm`` benchmark uses
it for the paper's configuration and ``unbiasedness`` reports both. It is not for real use.
"""

from __future__ import annotations

import math

import torch

from adaptive_sde import BrownianRegister


class RedrawingBrownian:
    """The paper's code's Brownian motion: every query, retries included, draws fresh noise, so
    a rejected step's noise is forgotten (biased: acceptance then selects the noise). A
    Brownian-register protocol object for :func:`adaptive_sde.solve`."""

    per_sample = True

    def __init__(self, batch: int, m: int, seed: int, dtype: torch.dtype = torch.float64) -> None:
        self.batch_size, self.brownian_size = batch, m
        self._inner = BrownianRegister(batch, m, seed=seed, dtype=dtype)

    def horizon(self, rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, math.inf)

    def increment(self, rows: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        dw = self._inner.increment(rows, t, t_next)
        self._inner.commit(rows, torch.ones_like(t, dtype=torch.bool))  # forget: never pending
        return dw

    def commit(self, rows: torch.Tensor, accepted: torch.Tensor) -> None:
        pass

    def depth_probe(self) -> None:
        return None

    def reserve(self, queries: int, probed: int | None) -> None:
        self._inner.reserve(queries, probed)
