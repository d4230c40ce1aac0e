"""Accept or reject a step, and choose the next step size, from the step's error estimate.

Per sample (Jolicoeur-Martineau et al. 2021, §3)::

    delta  = tolerance scale, elementwise              (two forms, below)
    E      = || error / delta ||                        (per-sample RMS by default)
    accept = E <= 1
    h_next = clamp(safety * E**(-exponent), factor_min, factor_max) * h

Three tolerance forms:

- ``"paper"``: ``max(atol, rtol * max(|y_em_prev|, |y_em|))``, with ``y_em_prev`` the
  Euler-Maruyama proposal of the sample's last accepted step. The paper's choice, the default of
  :func:`adaptive_sde.solve`.
- ``"conventional"``: ``atol + rtol * max(|y|, |y_next|)``, as in torchsde, torchdiffeq and
  diffrax (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4).
- ``"isotropic"``: the paper's form with ``|.|`` the RMS of the state over the sample's
  elements, one scale for all of them: decisions that do not depend on the coordinates' axes
  (the diffusion sampler's default in signal-to-noise time, where elementwise scales made the
  diagonal modes of a 2-D ring heavier).

Norms: ``"rms"`` (the paper's "L2 scaled": root mean square over the sample's elements, so the
tolerance means the same whatever the dimension), ``"max"`` (L-infinity) and ``"l2"`` (the plain
Euclidean norm, which tightens as the dimension grows).

A proposal with a NaN or infinity anywhere is rejected and the step shrinks by
``nonfinite_factor``. ``E = 0`` (no noise and exact drift) gives the largest growth, never an
infinite step. The growth clamp follows diffrax's ``PIDController`` defaults ([0.2, 10]).
"""

from __future__ import annotations

import math

import torch

TOLERANCES = ("paper", "conventional", "isotropic")
NORMS = ("rms", "max", "l2")


class StepController:
    """Turns an error estimate into accept/reject and the next step size.

    **Arguments:** ``rtol``, ``atol`` (see the module docstring), ``tolerance``, ``norm``,
    ``safety`` (θ, 0.9), ``exponent`` (r, 0.9), ``factor_min`` / ``factor_max`` (the clamp on
    ``h_next / h``), ``nonfinite_factor`` (the shrink after a non-finite proposal), ``dt_min``,
    ``dt_max`` (bounds on the step; a rejected step that would go below ``dt_min`` ends the solve
    of that sample with a result code), ``shared`` (one decision for the whole batch: every
    sample must pass, the smallest factor wins), ``accept_at_dt_min`` (torchsde's meaning of
    ``dt_min``: steps never shrink below it, and a step of ``dt_min`` is accepted whatever its
    error, instead of ending the solve).
    """

    def __init__(
        self,
        rtol: float,
        atol: float,
        *,
        tolerance: str = "paper",
        norm: str = "rms",
        safety: float = 0.9,
        exponent: float = 0.9,
        factor_min: float = 0.2,
        factor_max: float = 10.0,
        nonfinite_factor: float = 0.1,
        dt_min: float = 0.0,
        dt_max: float = math.inf,
        shared: bool = False,
        accept_at_dt_min: bool = False,
    ) -> None:
        _check_real("rtol", rtol, low=0.0)
        _check_real("atol", atol, low=0.0)
        if rtol == 0 and atol == 0:
            raise ValueError("rtol and atol cannot both be zero: no step would ever be accepted")
        if rtol >= 1:
            raise ValueError(f"rtol must be below 1 (a relative error of 100%), got {rtol}")
        if tolerance not in TOLERANCES:
            raise ValueError(f"tolerance must be one of {TOLERANCES}, got {tolerance!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        _check_real("safety", safety, low=0.0, low_open=True, high=1.0)
        _check_real("exponent", exponent, low=0.0, low_open=True)
        _check_real("factor_min", factor_min, low=0.0, low_open=True, high=1.0)
        _check_real("factor_max", factor_max, low=1.0)
        _check_real("nonfinite_factor", nonfinite_factor, low=0.0, low_open=True, high=1.0)
        _check_real("dt_min", dt_min, low=0.0)
        if not (isinstance(dt_max, (int, float)) and dt_max > dt_min):
            raise ValueError(f"dt_max must be a number above dt_min={dt_min}, got {dt_max!r}")
        self.rtol, self.atol = float(rtol), float(atol)
        self.tolerance, self.norm = tolerance, norm
        self.safety, self.exponent = float(safety), float(exponent)
        self.factor_min, self.factor_max = float(factor_min), float(factor_max)
        self.nonfinite_factor = float(nonfinite_factor)
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.shared = shared
        self.accept_at_dt_min = accept_at_dt_min and self.dt_min > 0

    def error_ratio(
        self,
        y: torch.Tensor,
        y_next: torch.Tensor,
        y_em: torch.Tensor,
        y_em_prev: torch.Tensor,
        error: torch.Tensor,
    ) -> torch.Tensor:
        """The scaled error norm ``E`` of each row (n,); NaN where the proposal is not finite."""
        if self.tolerance == "paper":
            scale = torch.clamp(
                self.rtol * torch.maximum(y_em_prev.abs(), y_em.abs()), min=self.atol
            )
        elif self.tolerance == "isotropic":
            # The paper's form with each state's size measured by its RMS over the sample's
            # elements: the same scale for every element, so a rotation of the coordinates
            # does not change the decisions (elementwise scales favour some directions).
            size = torch.maximum(_rms(y_em_prev), _rms(y_em))
            scale = torch.clamp(self.rtol * size, min=self.atol)
        else:
            scale = self.atol + self.rtol * torch.maximum(y.abs(), y_next.abs())
        ratio = error / scale
        if self.norm == "rms":
            e = ratio.square().mean(dim=1).sqrt()
        elif self.norm == "max":
            e = ratio.abs().amax(dim=1)
        else:
            e = ratio.square().sum(dim=1).sqrt()
        finite = torch.isfinite(y_next).all(dim=1) & torch.isfinite(y_em).all(dim=1)
        return torch.where(finite, e, torch.full_like(e, math.nan))

    def decide(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(accept, factor)`` per row from the error ratios ``e`` (NaN = not finite)."""
        rows = e
        if self.shared:
            # One decision, computed once and broadcast: computing it per row could differ in
            # the last bit between vectorised and scalar kernels, and split the shared grid.
            e = e.max()  # NaN propagates: one bad row rejects the shared step
        finite = ~torch.isnan(e)
        accept = finite & (e <= 1)
        growth = self.safety * torch.pow(torch.clamp(e, min=1e-30), -self.exponent)
        growth = torch.clamp(growth, self.factor_min, self.factor_max)
        factor = torch.where(finite, growth, torch.full_like(growth, self.nonfinite_factor))
        return accept.expand_as(rows), factor.expand_as(rows)

    def forced(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Rows whose step, at ``dt_min``, is accepted whatever its (finite) error."""
        finite = ~torch.isnan(e)
        if not self.accept_at_dt_min:
            return torch.zeros_like(finite)
        if self.shared:
            finite = finite.all().expand_as(finite)
        return finite & (h <= self.dt_min * (1 + 1e-9))

    def next_step(
        self,
        h_taken: torch.Tensor,
        h_proposed: torch.Tensor,
        clipped: torch.Tensor,
        accept: torch.Tensor,
        factor: torch.Tensor,
    ) -> torch.Tensor:
        """The next proposed step. An accepted step that was clipped short (to land on an output
        time or a pending Brownian breakpoint) keeps at least the proposal it was clipped from."""
        h_next = h_taken * factor.to(h_taken.dtype)
        h_next = torch.where(accept & clipped, torch.maximum(h_next, h_proposed), h_next)
        if self.accept_at_dt_min:
            h_next = torch.clamp(h_next, min=self.dt_min)
        return torch.clamp(h_next, max=self.dt_max)

    def step_floor(self, t: torch.Tensor) -> torch.Tensor:
        """The smallest usable step at ``t``: ``dt_min``, and never below what the time's
        floating-point spacing can resolve (so a shrinking step cannot loop forever)."""
        eps = torch.finfo(t.dtype).eps
        resolution = 64 * eps * torch.clamp(t.abs(), min=1.0)
        return resolution if self.accept_at_dt_min else torch.clamp(resolution, min=self.dt_min)


def _rms(y: torch.Tensor) -> torch.Tensor:
    return y.square().mean(dim=1, keepdim=True).sqrt()


def _check_real(
    name: str,
    value: object,
    *,
    low: float,
    low_open: bool = False,
    high: float | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    bad = not math.isfinite(value) or value < low or (low_open and value == low)
    if high is not None and value > high:
        bad = True
    if bad:
        lo = "(" if low_open else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {hi}, got {value}")
