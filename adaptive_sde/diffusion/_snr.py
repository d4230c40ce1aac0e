"""The Gotta-Go-Fast pair on the reverse SDE in signal-to-noise time.

Every forward SDE of :mod:`adaptive_sde.diffusion` is linear: x_t = alpha_t x_0 + sigma_t noise.
In the signal-to-noise ratio ``u = alpha^2 / sigma^2`` and ``w = alpha x / sigma^2`` its
reverse-time SDE is exactly (the stochastic-localisation form; Montanari 2023,
arXiv:2305.10690)::

    dw = D(x, t(u)) du + dB_u,        x = alpha w / u,

with ``D(x, t) = E[x_0 | x_t = x]`` the data prediction and ``B`` a standard Brownian motion in
the clock ``u``: unit additive noise and no linear term. The stiff part of the reverse drift in x
(the score grows like 1 / sigma^2) is gone, and D is bounded by the data. Steps are taken in
``lambda = log(alpha / sigma) = log(u) / 2`` (the clock of DPM-Solver, Lu et al. 2022), where a
diffusion's difficulty is spread evenly; the noise is queried from a
:class:`~adaptive_sde.BrownianRegister` in ``u``, so a rejected step's increment is bridged and
reused exactly, as in the generic solver.

One attempted step from lambda_s to lambda_t, ``h = lambda_t - lambda_s``, written back in x
(:func:`pair_step`)::

    low  (Euler in u):  x_L = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) D_s
                              + (alpha_t / u_t) dB,            dB = B(u_t) - B(u_s)
    high:               x_H = x_L + alpha_t c(h) (D(x_L, t) - D_s)
    error:              x_H - x_L

The low step is SDE-DPM-Solver++(1) (Lu et al. 2022, arXiv:2211.01095), which is DDPM's
ancestral step with x_0 = D. The default weight ``"gaussian"`` (:func:`gaussian_weight`) makes
one step exact for Gaussian data; ``c(h) = (1 - e^-2h) / 2`` is the trapezoid rule in u (the
paper's stochastic Improved Euler); ``c(h) = 1 - (1 - e^-2h) / (2h)`` integrates D linear in
lambda exactly (the "exponential" weights of DPM-Solver++(2)); ``"matched"`` and
``"martingale"`` are two fixed weights for data-dominated steps, kept for the measurement in
``adaptive-sde bench gmm`` (the trapezoid rule loses about 30 % of Gaussian data's variance, the
Gaussian weights 0.2-0.4 %). The tolerance acts on x, the data's scale, and the error estimate
needs no random signs (the noise is additive). A rejected attempt costs one evaluation, D(x_L):
D_s did not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from adaptive_sde._brownian import BrownianRegister
from adaptive_sde._controller import Attempt, Controller, ControllerState
from adaptive_sde._loop import put_rows, take_rows
from adaptive_sde._progress import ProgressMeter
from adaptive_sde._solution import RUNNING, Result, SolveStats
from adaptive_sde.diffusion._forward import ForwardSDE
from adaptive_sde.diffusion._reverse import ScoreCounter

WEIGHTS = ("trapezoid", "exponential", "matched", "martingale", "gaussian")
# A step that would end within this fraction of itself short of the end or of a pending
# Brownian breakpoint is stretched to land on it (as in the generic loop).
_LANDING_SLACK = 0.01
# The smallest step in lambda; below it a rejected step ends the sample (DT_MIN_REACHED).
_H_FLOOR = 1e-10

AcceptHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""``on_accept(rows, lam, x, d)``: the batch indices of the rows that accepted a step, their new
lambda (float64), their new states x (n, D) and the data prediction D(x_L, t) at the step's end
(n, D), the sampler's freshest estimate of the clean sample."""


def pair_step(
    x: torch.Tensor,
    d_s: torch.Tensor,
    lam_s: torch.Tensor,
    lam_t: torch.Tensor,
    sigma_s: torch.Tensor,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    db: torch.Tensor,
) -> torch.Tensor:
    """The low (first-order) step x_L of the module docstring, for rows of ``x`` (n, D); the
    per-row coefficients are (n,) float64, ``db`` the increment of B over [u_s, u_t]."""
    h = lam_t - lam_s
    keep = (sigma_t / sigma_s) * torch.exp(-h)
    gain = alpha_t * -torch.expm1(-2 * h)
    scale = sigma_t * torch.exp(-lam_t)  # alpha_t / u_t
    dtype = x.dtype
    return (
        keep.to(dtype)[:, None] * x + gain.to(dtype)[:, None] * d_s + scale.to(dtype)[:, None] * db
    )


def second_stage_weight(h: torch.Tensor, weights: str) -> torch.Tensor:
    """c(h) of the module docstring: the weight of D(x_L) - D_s in the high step."""
    one_minus = -torch.expm1(-2 * h)
    if weights == "trapezoid":
        return 0.5 * one_minus
    if weights == "martingale":
        return 2 * h / torch.clamp(one_minus, min=1e-300) - 1
    if weights == "matched":
        return 1 - 2 * h / torch.expm1(2 * torch.clamp(h, min=1e-300))
    # 1 - (1 - e^-2h) / 2h, with its series where h is small enough to cancel
    series = h - (2.0 / 3.0) * h**2 + (1.0 / 3.0) * h**3
    return torch.where(h < 1e-4, series, 1 - one_minus / (2 * torch.clamp(h, min=1e-300)))


def gaussian_weight(
    u_s: torch.Tensor, u_t: torch.Tensor, d_change: torch.Tensor, db: torch.Tensor
) -> torch.Tensor:
    """c for which the pair samples Gaussian data with isotropic covariance exactly.

    For such data D is a martingale in u with dD = Sigma_u dB, Sigma_u = 1 / (a + u), and
    D(x_L) - D_s = Sigma_t dB exactly, so rho_t = u_t Sigma_t (the Jacobian of D in x, in
    [0, 1]) is read off the two evaluations by projecting on dB. The one-step variance is exact
    for c = (sqrt((a + u_t) / (a + u_s)) - 1) / rho_t: the trapezoid rule (1 - e^-2h) / 2 where
    the noise dominates (rho -> 0), e^h - 1 where the data does (rho -> 1)."""
    db64, dd64 = db.double(), d_change.double()
    proj = (dd64 * db64).sum(1) / torch.clamp((db64 * db64).sum(1), min=1e-300)
    rho = torch.clamp(u_t * proj, 0.0, 1.0)
    du = u_t - u_s
    base = u_t * (1 - rho) + rho * u_s  # rho (a + u_s)
    q = du * rho / torch.clamp(base, min=1e-300)
    return du / (base * (torch.sqrt(1 + q) + 1))


@dataclass
class _Rows:
    """The sampler's per-sample state; every field has the batch as its first dimension."""

    lam: torch.Tensor  # float64
    u: torch.Tensor  # exp(2 lam), float64; the register's clock
    h: torch.Tensor  # next proposed step in lambda
    x: torch.Tensor
    d: torch.Tensor  # D at (x, t(lam)), valid where not stale
    stale: torch.Tensor  # D must be evaluated at the current x
    control: ControllerState  # the controller's per-sample state
    status: torch.Tensor
    evals: torch.Tensor
    accepted: torch.Tensor
    rejected: torch.Tensor
    dt_smallest: torch.Tensor
    dt_largest: torch.Tensor

    def take(self, rows: torch.Tensor | None) -> _Rows:
        if rows is None:
            return self
        return _Rows(**{f.name: take_rows(getattr(self, f.name), rows) for f in fields(self)})

    def put(self, rows: torch.Tensor | None, part: _Rows) -> None:
        for f in fields(self):
            value = getattr(part, f.name)
            if rows is not None:
                value = put_rows(getattr(self, f.name), rows, value)
            setattr(self, f.name, value)


@dataclass
class SNRResult:
    """What :class:`SNRSampler` returns: the final states at ``eps`` and, with ``denoise``,
    their data prediction D (the sample); statistics per sample in :class:`SolveStats` form
    (``nfe`` counts evaluations of D before the final one, times are forward times t)."""

    x: torch.Tensor
    stats: SolveStats


class SNRSampler:
    """Integrates ``dw = D du + dB_u`` from t = T to ``eps``, every sample on its own steps.

    **Arguments:** ``data`` (a :class:`ScoreCounter` around D(x, t)), ``sde`` (the forward
    SDE), ``controller`` (its ``rtol``/``atol`` act on x), ``register`` (the Brownian register,
    queried in u), ``weights`` (one of ``WEIGHTS``, see the module docstring), ``h_init`` (the
    first step in lambda), ``max_steps`` (attempts per sample), ``progress``, ``on_accept`` (an
    :data:`AcceptHook` called after every pass in which some rows accepted a step, e.g. for
    k-diffusion's ``callback``; it costs a host read per pass), ``sync_every`` (passes between
    host reads, as in :func:`adaptive_sde.solve`).

    With ``sync_every = 1`` (the CPU default) each pass reads the device to evaluate D only at
    the states accepted last pass, so a rejected attempt costs one evaluation. With
    ``sync_every > 1`` (other devices) choosing those rows would read the device, so every
    attempt evaluates D at its start again (two evaluations per attempt, as the pair in x), and
    rows that finish inside a block of passes are frozen: they take zero-length steps whose
    results and evaluations do not count in their statistics.

    ``data`` is called as ``data(x, t, rows)`` with ``rows`` the indices in the batch of the
    rows of x (``None``: the whole batch), so that its ``model_kwargs`` follow the samples.
    """

    def __init__(
        self,
        data: ScoreCounter,
        sde: ForwardSDE,
        controller: Controller,
        register: BrownianRegister,
        *,
        weights: str = "gaussian",
        h_init: float = 0.1,
        max_steps: int = 100_000,
        progress: bool = False,
        on_accept: AcceptHook | None = None,
        sync_every: int = 1,
    ) -> None:
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        self.data, self.sde, self.controller, self.register = data, sde, controller, register
        self.weights, self.h_init, self.max_steps = weights, h_init, max_steps
        self.progress = progress
        self.on_accept = on_accept
        self.sync_every = sync_every

    def _coefficients(self, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t, alpha and sigma at lambda (float64)."""
        t = self.sde.time_at(lam)
        return t, self.sde.alpha(t), self.sde.sigma(t)

    def _predict(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """D at the rows ``rows`` of the batch (``None``: all of it)."""
        return self.data(x, t.to(x.dtype), rows)

    def run(self, x_T: torch.Tensor, eps: float) -> SNRResult:
        """Sample from the prior draws ``x_T`` (B, D) to time ``eps``; returns x at ``eps``."""
        batch, device = x_T.shape[0], x_T.device
        t64 = torch.tensor([self.sde.T, eps], dtype=torch.float64, device=device)
        lam_start, lam_end = self.sde.half_log_snr(t64).tolist()  # one host read
        u_end = math.exp(2 * lam_end)

        def counter() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.int64, device=device)

        lam = torch.full((batch,), lam_start, dtype=torch.float64, device=device)
        s = _Rows(
            lam=lam,
            u=torch.exp(2 * lam),
            h=torch.full_like(lam, self.h_init),
            x=x_T,
            d=torch.zeros_like(x_T),
            stale=torch.ones(batch, dtype=torch.bool, device=device),
            control=self.controller.start(x_T),
            status=torch.full((batch,), RUNNING, dtype=torch.int64, device=device),
            evals=counter(),
            accepted=counter(),
            rejected=counter(),
            dt_smallest=torch.full_like(lam, math.inf),
            dt_largest=torch.zeros_like(lam),
        )
        meter = ProgressMeter(lam_start, lam_end, self.progress, desc="sample")
        evaluations = 0
        try:
            while True:
                # The one host read of a block of passes; the running rows are gathered by a
                # stable sort on the device, since nonzero would be a second read.
                running = s.status == RUNNING
                n = int(running.sum())
                if n == 0:
                    break
                rows = None
                if n < batch:
                    rows = torch.argsort((~running).to(torch.uint8), stable=True)[:n]
                part = s.take(rows)
                for _ in range(self.sync_every):
                    evaluations += self._attempt(part, rows, lam_end, u_end)
                s.put(rows, part)
                meter.update(s.lam, evaluations)
        finally:
            meter.close()
        t_final = torch.where(
            s.status == Result.SUCCESS, torch.full_like(s.lam, eps), self.sde.time_at(s.lam)
        )
        stats = SolveStats(
            nfe=s.evals,
            num_accepted=s.accepted,
            num_rejected=s.rejected,
            num_forced=torch.zeros_like(s.evals),
            dt_smallest=s.dt_smallest,
            dt_largest=s.dt_largest,
            result=s.status,
            t_final=t_final,
        )
        return SNRResult(x=s.x, stats=stats)

    def _attempt(self, s: _Rows, rows: torch.Tensor | None, lam_end: float, u_end: float) -> int:
        """One attempted step for the rows of ``s`` (updated in place); returns evaluations."""
        evaluations = 0
        live = s.status == RUNNING  # the others finished earlier in this block: frozen
        t_s, _, sigma_s = self._coefficients(s.lam)
        if self.sync_every == 1:
            stale = torch.nonzero(s.stale).flatten()
            if stale.numel():  # D at states accepted last pass (every state at the start)
                where = stale if rows is None else rows[stale]  # their indices in the batch
                s.d = s.d.index_put((stale,), self._predict(s.x[stale], t_s[stale], where))
                s.evals = s.evals.index_add(0, stale, torch.ones_like(stale))
                evaluations += int(stale.numel())
        else:
            s.d = self._predict(s.x, t_s, rows)
            s.evals = s.evals + live.to(torch.int64)
            evaluations += s.x.shape[0]
        s.stale = torch.zeros_like(s.stale)
        start_finite = torch.isfinite(s.d).all(dim=1)

        # The proposal, clipped to land exactly on the end and on pending Brownian breakpoints
        # (both held in u, so landing needs no round trip through the logarithm).
        limit = torch.clamp(self.register.horizon(rows, s.u), max=u_end)
        reach = s.u * torch.exp(2 * (1 + _LANDING_SLACK) * s.h)
        clipped = reach >= limit
        u_t = torch.where(clipped, limit, s.u * torch.exp(2 * s.h))
        u_t = torch.where(live, u_t, s.u)  # a frozen row steps from u to u
        lam_t = torch.where(u_t == u_end, torch.full_like(u_t, lam_end), 0.5 * torch.log(u_t))
        h = lam_t - s.lam
        t_t, alpha_t, sigma_t = self._coefficients(lam_t)
        db = self.register.increment(rows, s.u, u_t)

        x_low = pair_step(s.x, s.d, s.lam, lam_t, sigma_s, alpha_t, sigma_t, db)
        d_low = self._predict(x_low, t_t, rows)
        evaluations += x_low.shape[0]
        if self.weights == "gaussian":
            c = alpha_t * gaussian_weight(s.u, u_t, d_low - s.d, db)
        else:
            c = alpha_t * second_stage_weight(h, self.weights)
        c = c.to(x_low.dtype)
        correction = c[:, None] * (d_low - s.d)
        x_high = x_low + correction

        with torch.no_grad():
            decision = self.controller.adapt(
                Attempt(
                    t=s.lam,
                    h=s.h,
                    h_taken=h,
                    clipped=clipped,
                    y=s.x,
                    y_next=x_high,
                    y_em=x_low,
                    error=correction + 0.0 * x_low,  # not finite where x_L is not
                    live=live,
                    veto=self._stuck(start_finite, live),
                ),
                s.control,
            )
            accept = decision.accept
        self.register.commit(rows, accept)

        s.x = torch.where(accept[:, None], x_high, s.x)
        s.control = decision.state
        s.stale = accept
        s.evals = s.evals + live.to(torch.int64)
        s.accepted = s.accepted + accept.to(torch.int64)
        s.rejected = s.rejected + (~accept & live).to(torch.int64)
        s.dt_smallest = torch.where(accept, torch.minimum(s.dt_smallest, h), s.dt_smallest)
        s.dt_largest = torch.where(accept, torch.maximum(s.dt_largest, h), s.dt_largest)
        h_next = decision.h_next
        s.lam = torch.where(accept, lam_t, s.lam)
        s.u = torch.where(accept, u_t, s.u)
        s.h = torch.where(live, h_next, s.h)
        if self.on_accept is not None:
            self._report(rows, accept, s, d_low)
        done = accept & (u_t == u_end)
        code = torch.full_like(s.status, RUNNING)
        code = torch.where(
            s.accepted + s.rejected >= self.max_steps, Result.MAX_STEPS_REACHED, code
        )
        code = torch.where(decision.ended != RUNNING, decision.ended, code)
        too_small = ~accept & (h_next < _H_FLOOR) & (code == RUNNING)
        code = torch.where(too_small, Result.DT_MIN_REACHED, code)
        code = torch.where(too_small & ~decision.finite, Result.NONFINITE, code)
        code = torch.where(~start_finite, Result.NONFINITE, code)
        code = torch.where(done, Result.SUCCESS, code)
        s.status = torch.where(live, code, s.status)
        return evaluations

    def _stuck(self, start_finite: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Rows that cannot accept: D not finite at their start (on a shared grid, at any
        row's start, so that the grid stays one)."""
        stuck = ~start_finite & live
        if self.controller.shared:
            return stuck.any().expand_as(stuck)
        return stuck

    def _report(
        self, rows: torch.Tensor | None, accept: torch.Tensor, s: _Rows, d_low: torch.Tensor
    ) -> None:
        """Calls ``on_accept`` with the rows of this pass that accepted (if any)."""
        assert self.on_accept is not None
        took = torch.nonzero(accept).flatten()
        if took.numel():
            where = took if rows is None else rows[took]
            self.on_accept(where, s.lam[took], s.x[took], d_low[took])
