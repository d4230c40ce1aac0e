"""Samplers for score-based models: the adaptive Gotta-Go-Fast sampler and its baselines.

:func:`sample` is Jolicoeur-Martineau et al. (2021), Algorithm 1, with the library's engine, by
default in signal-to-noise time (:mod:`adaptive_sde.diffusion._snr`): every sample takes its own
steps, reuses its Brownian path after a rejection (the paper's code redraws, which biases mode
weights; Rackauckas & Nie 2017, docs/method.md), stops being evaluated once it reaches ``eps``,
and ends with one denoising evaluation. :func:`sample_euler_maruyama` (the paper's 1000-step
reference) and :func:`sample_probability_flow` (the probability-flow ODE with scipy's adaptive
RK45, as Song et al. 2021) are the baselines to compare against on your own model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from adaptive_sde import _options, _random
from adaptive_sde._brownian import BrownianRegister, resolve_seed
from adaptive_sde._controller import StepController, given_controller
from adaptive_sde._integrate import solve
from adaptive_sde._solution import Result, Solution, SolveError, SolveStats, failure_message
from adaptive_sde._validation import check_bool, check_state
from adaptive_sde.diffusion._adapters import data_prediction_of
from adaptive_sde.diffusion._forward import ForwardSDE
from adaptive_sde.diffusion._reverse import ReverseSDE, RowTracker, ScoreCounter, ScoreFn
from adaptive_sde.diffusion._snr import AcceptHook, SNRSampler

_PRIOR_TAG = 0x5052494F52215F5F  # "PRIOR!__"
_EM_TAG = 0x45554C45524D4152  # "EULERMAR"

# The sampler's defaults where they differ from the option table's (adaptive_sde._options), in
# one place: in x the paper's (Jolicoeur-Martineau et al. 2021, §3.2 and Table 1, for data in
# [-1, 1]); in signal-to-noise time the rtol, tolerance form, first and largest step in lambda
# chosen from `adaptive-sde bench gmm` (docs/diffusion.md has the measurements).
DEFAULT_ATOL = 0.0078
_PAPER_CONTROL = {"exponent": 0.9, "pcoeff": 0.0}  # the paper's I control, as measured here
SAMPLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "snr": {
        "rtol": 0.1,
        "atol": DEFAULT_ATOL,
        "tolerance": "isotropic",
        "dt0": 0.1,
        "dt_max": 1.0,
        **_PAPER_CONTROL,
    },
    "x": {"rtol": 0.02, "atol": DEFAULT_ATOL, "tolerance": "paper", "dt0": 0.01, **_PAPER_CONTROL},
}
SNR_WEIGHTS = "gaussian"  # the second stage's weights in signal-to-noise time
SPACES = ("snr", "x")


@dataclass
class SampleStats:
    """What a sampler spent. ``score_evals`` is per sample (tensor (B,)), denoising included;
    ``model_calls`` and ``rows_evaluated`` are totals over the batch (a call evaluates the rows
    still running); ``solve`` holds the solver's own statistics where there is one."""

    score_evals: torch.Tensor
    model_calls: int
    rows_evaluated: int
    accepted: int
    rejected: int
    solve: SolveStats | None = None

    def summary(self) -> dict[str, float]:
        return {
            "score_evals_mean": float(self.score_evals.double().mean()),
            "score_evals_max": int(self.score_evals.max()),
            "model_calls": self.model_calls,
            "rows_evaluated": self.rows_evaluated,
            "accepted": self.accepted,
            "rejected": self.rejected,
        }


def _batch_shape(shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be (batch, *sample_shape) with positive sizes, e.g. (64, 3, 32, 32), "
            f"got {shape}"
        )
    return shape[0], shape[1:]


def prior_sample(
    sde: ForwardSDE,
    shape: Sequence[int],
    seed: int | torch.Generator | None = None,
    sample_ids: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draws from the prior N(0, sigma(T)^2 I), counter-based: sample i depends only on the seed
    and its id, never on the rest of the batch."""
    batch, dims = _batch_shape(shape)
    ids = _sample_ids(sample_ids, batch, device)
    keys = _random.stream_keys(resolve_seed(seed), ids, _PRIOR_TAG)
    z = _random.normals(keys, torch.zeros_like(ids), math.prod(dims), dtype)
    return (sde.prior_std() * z).reshape(batch, *dims)


def sample(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    shape: Sequence[int],
    *,
    rtol: float | None = None,
    atol: float | None = None,
    eps: float | None = None,
    dt0: float | None = None,
    dt_max: float | None = None,
    denoise: bool = True,
    seed: int | torch.Generator | None = None,
    sample_ids: torch.Tensor | None = None,
    progress: bool = False,
    per_sample: bool = True,
    max_steps: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    norm: str | None = None,
    tolerance: str | None = None,
    controller: StepController | None = None,
    sync_every: int | None = None,
    model_dtype: torch.dtype | None = None,
    space: str = "snr",
    model_kwargs: Mapping[str, Any] | None = None,
    grad: bool = False,
    on_accept: AcceptHook | None = None,
    generator: int | torch.Generator | None = None,
    h_init: float | None = None,
    h_max: float | None = None,
) -> tuple[torch.Tensor, SampleStats]:
    """Samples a score-based model with the adaptive Gotta-Go-Fast solver.

    By default (``space="snr"``) the pair steps on the data prediction D in signal-to-noise
    time, where the reverse SDE has unit additive noise and no stiff term
    (:mod:`adaptive_sde.diffusion._snr`; docs/diffusion.md); ``space="x"`` solves the reverse
    SDE in x with :func:`adaptive_sde.solve`, the paper's own form.

    **Arguments:**

    - ``score_fn(x, t)``: the score, x of shape ``shape`` with a batch of the running samples,
      t of shape (B,). Adapt other model conventions with ``score_from_noise`` and friends.
    - ``sde``: the forward SDE (:class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`, ...).
    - ``shape``: (batch, *sample_shape), e.g. (64, 3, 32, 32).
    - ``rtol``, ``atol``: the paper's ε_rel and ε_abs, for data in [-1, 1]. ``atol`` = 0.0078 is
      about one 8-bit colour level (2/256); for data on another scale, scale ``atol`` with it
      (data in [0, 1]: 0.0039; standardised data: about 0.0078 times its standard deviation).
      ``rtol`` defaults to 0.1 in signal-to-noise time and 0.02 in x, each chosen from
      ``adaptive-sde bench gmm`` (exact-score Gaussian mixtures against 1000-step
      Euler-Maruyama and k-diffusion's and diffusers' samplers; docs/benchmarks.md).
    - ``eps``: end time (default ``sde.eps``: 1e-3 VP / sub-VP, 1e-5 VE); ``dt0``: the
      first step (default 0.1 in lambda = log(alpha / sigma) in signal-to-noise time, 0.01 in t
      in x); ``dt_max``: the largest step (default 1 in lambda in signal-to-noise time). In low
      dimensions the cap, not ``rtol``, limits the accuracy of the low-noise steps: on the 2-D
      ring (20 000 samples, VE, rtol 0.1) the components' variance is +6.6 % too large at 1,
      +1.0 % at 0.5 (64 instead of 43 evaluations per sample), -0.1 % at 0.25.
    - ``denoise``: finish with one more evaluation, the posterior mean D(x, eps) = E[x_0 | x_eps]
      (Tweedie's formula), which removes the noise left at ``eps``.
    - ``seed``: an int or ``torch.Generator`` seeding the prior and the Brownian paths;
      ``sample_ids`` (B,) name the samples, so that sample i is the same in any batch.
    - ``generator``, ``h_init``, ``h_max``: the old names of ``seed``, ``dt0`` and ``dt_max``
      (a ``DeprecationWarning``).
    - ``progress``: a tqdm bar (time reached by the slowest sample, evaluations so far).
    - ``per_sample``: every sample its own steps (default); ``False`` shares one time grid.
    - ``x_T``: start from these prior samples instead of drawing them.
    - ``sync_every``: loop passes between host reads (see :func:`adaptive_sde.solve`; default 1
      on the CPU, 8 on a GPU).
    - ``dtype``: the solver's state; ``model_dtype``: the dtype x is handed to the score function
      in (``torch.float16`` / ``torch.bfloat16`` for a half-precision model; the score is cast
      back, so the solver's state and error estimate stay in ``dtype``).
    - ``tolerance``, ``norm``: the tolerance's form and the error norm (see
      :class:`adaptive_sde.StepController`); ``tolerance`` defaults to ``"isotropic"`` in
      signal-to-noise time (one scale per sample, the RMS of its state: elementwise scales
      favour the diagonal modes of a 2-D ring) and to the paper's ``"paper"`` in x.
    - ``controller``: a :class:`adaptive_sde.StepController` instead of ``rtol``, ``atol``,
      ``tolerance``, ``norm`` and ``dt_max`` (its other options, such as ``pcoeff``, apply
      too). In signal-to-noise time it must bound the step (``dt_max``, e.g. 1.0): without a
      cap the pair jumps across the low-noise end in one step that its error estimate cannot
      see, and the samples collapse to the mean. The defaults of this sampler are
      :data:`SAMPLE_DEFAULTS`.
    - ``space``: ``"snr"`` (default) or ``"x"``, above. With ``sync_every > 1`` the
      signal-to-noise-time sampler evaluates D at every attempt's start again (choosing the
      rows that need it would read the device): two evaluations per attempt instead of one per
      rejection.
    - ``model_kwargs``: keyword arguments of the score function (``encoder_hidden_states``,
      ``class_labels``, ...). Every tensor whose first dimension is the batch size is restricted
      to the rows being evaluated (per-sample steps evaluate only the samples still running),
      so that sample i always sees row i; other values pass unchanged. With the adapters
      (``score_from_noise``, ``score_from_diffusers``, ...) they reach the model.
    - ``grad``: keep the autograd graph (to differentiate the samples); by default the sampler
      runs under ``torch.no_grad()``, as diffusers' pipelines do, which saves the memory of every
      activation of every model call.
    - ``on_accept(rows, lam, x, d)``: with ``space="snr"``, called after every pass in which some
      samples accepted a step (see :data:`adaptive_sde.diffusion._snr.AcceptHook`).

    **Returns:** ``(x, stats)``: samples of shape ``shape`` and a :class:`SampleStats`.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if on_accept is not None and space != "snr":
        raise ValueError("on_accept needs space='snr'")
    seed = _options.renamed("generator", generator, seed)
    dt0 = _options.renamed("h_init", h_init, dt0)
    dt_max = _options.renamed("h_max", h_max, dt_max)
    check_bool("per_sample", per_sample)
    control = _controller(
        controller,
        space,
        per_sample,
        rtol=rtol,
        atol=atol,
        tolerance=tolerance,
        norm=norm,
        dt_max=dt_max,
    )
    o = _options.resolve(
        {"dt0": dt0, "max_steps": max_steps},
        names={name: _options.OPTIONS[name] for name in ("dt0", "max_steps")},
        defaults=SAMPLE_DEFAULTS[space],
    )
    with _grad_mode(grad):
        return _sample(
            score_fn,
            sde,
            shape,
            controller=control,
            eps=eps,
            dt0=o["dt0"],
            denoise=denoise,
            seed=seed,
            sample_ids=sample_ids,
            progress=progress,
            per_sample=per_sample,
            max_steps=o["max_steps"],
            dtype=dtype,
            device=device,
            x_T=x_T,
            sync_every=sync_every,
            model_dtype=model_dtype,
            space=space,
            model_kwargs=model_kwargs,
            on_accept=on_accept,
        )


def _controller(controller: Any, space: str, per_sample: bool, **options: Any) -> StepController:
    """The sampler's controller: the one given, or one built from the options with the
    sampler's defaults (:data:`SAMPLE_DEFAULTS`)."""
    controller = given_controller(controller, (StepController,), options)
    if controller is None:
        controller = StepController(**options, defaults=SAMPLE_DEFAULTS[space])
    if space == "snr" and not math.isfinite(controller.dt_max):
        raise ValueError(
            "the controller must bound the step in signal-to-noise time: pass dt_max (sample's "
            "default is 1.0, in lambda = log(alpha / sigma)); without a cap the pair jumps "
            "across the low-noise end in one step its error estimate cannot see, and the "
            "samples collapse to the mean"
        )
    return controller.for_grid(shared=not per_sample)


def _sample(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    shape: Sequence[int],
    *,
    controller: StepController,
    eps: float | None,
    dt0: float,
    denoise: bool,
    seed: int | torch.Generator | None,
    sample_ids: torch.Tensor | None,
    progress: bool,
    per_sample: bool,
    max_steps: int,
    dtype: torch.dtype,
    device: torch.device | str | None,
    x_T: torch.Tensor | None,
    sync_every: int | None,
    model_dtype: torch.dtype | None,
    space: str,
    model_kwargs: Mapping[str, Any] | None,
    on_accept: AcceptHook | None,
) -> tuple[torch.Tensor, SampleStats]:
    """:func:`sample` once the grad mode is set."""
    for name, value in (("denoise", denoise), ("progress", progress)):
        check_bool(name, value)
    batch, dims, eps, seed, ids, x_T = _start(sde, shape, eps, seed, sample_ids, dtype, device, x_T)
    if space == "snr":
        return _sample_snr(
            score_fn,
            sde,
            x_T.reshape(batch, -1).to(dtype),
            dims,
            eps,
            seed,
            ids,
            controller=controller,
            h_init=dt0,
            denoise=denoise,
            max_steps=max_steps,
            progress=progress,
            model_dtype=model_dtype,
            model_kwargs=model_kwargs,
            on_accept=on_accept,
            sync_every=_options.device_sync_every(sync_every, x_T.device),
        )
    reverse = ReverseSDE(
        sde, score_fn, dims, model_dtype=model_dtype, model_kwargs=model_kwargs, batch=batch
    )
    y0 = x_T.reshape(batch, -1).to(dtype)
    ts = torch.tensor([0.0, sde.T - eps], dtype=torch.float64, device=y0.device)
    # The tracker tells the reverse SDE which rows the solver evaluates, for model_kwargs.
    bm = RowTracker(
        batch,
        y0.shape[1],
        seed=seed,
        sample_ids=ids,
        dtype=dtype,
        device=y0.device,
        time_dtype=torch.float64,
    )
    reverse.tracker = bm
    try:
        solution = solve(
            reverse,
            y0,
            ts,
            controller=controller,
            dt0=dt0,
            bm=bm,  # per-sample or shared grid, sample i's noise depends on (seed, id) only
            seed=seed,
            per_sample=per_sample,
            max_steps=max_steps,
            progress=progress,
            sync_every=sync_every,
        )
    except SolveError as error:
        if error.solution is None:
            raise
        message = failure_message(
            error.solution.stats,
            header="could not be generated",
            to_time=lambda s: sde.T - s,  # the solver runs in s = T - t
            advice={Result.NONFINITE: "the score was not finite"},
            hint=None,
        )
        raise SolveError(message, error.solution) from None
    reverse.tracker = None  # the denoising step evaluates the whole batch
    x = solution.ys[-1]
    evals = solution.stats.nfe.clone()
    if denoise:
        x = _tweedie(reverse.score, sde, x, eps)
        evals += 1
        _check_output(x, "sample", "the score was not finite in the final denoising step")
    stats = SampleStats(
        score_evals=evals,
        model_calls=reverse.score.calls,
        rows_evaluated=reverse.score.rows,
        accepted=solution.stats.total_accepted,
        rejected=solution.stats.total_rejected,
        solve=solution.stats,
    )
    return x.reshape(batch, *dims), stats


def _sample_snr(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    x_T: torch.Tensor,
    dims: tuple[int, ...],
    eps: float,
    seed: int,
    ids: torch.Tensor,
    *,
    controller: StepController,
    h_init: float,
    denoise: bool,
    max_steps: int,
    progress: bool,
    model_dtype: torch.dtype | None,
    model_kwargs: Mapping[str, Any] | None = None,
    on_accept: AcceptHook | None = None,
    sync_every: int = 1,
) -> tuple[torch.Tensor, SampleStats]:
    """:func:`sample` in signal-to-noise time (:mod:`adaptive_sde.diffusion._snr`)."""
    batch = x_T.shape[0]
    data = ScoreCounter(
        data_prediction_of(score_fn, sde),
        dims,
        model_dtype,
        model_kwargs=model_kwargs,
        batch=batch,
    )
    register = BrownianRegister(
        batch,
        x_T.shape[1],
        seed=seed,
        sample_ids=ids,
        dtype=x_T.dtype,
        device=x_T.device,
        time_dtype=torch.float64,
    )
    sampler = SNRSampler(
        data,
        sde,
        controller,
        register,
        weights=SNR_WEIGHTS,
        h_init=h_init,
        max_steps=max_steps,
        progress=progress,
        on_accept=on_accept,
        sync_every=sync_every,
    )
    result = sampler.run(x_T, eps)
    stats, x = result.stats, result.x
    evals = stats.nfe.clone()
    success = stats.success
    if success:
        if denoise:
            t = torch.full((batch,), eps, dtype=x.dtype, device=x.device)
            x = data(x, t)  # the final denoising step: the sample is D at eps
            evals += 1
        finite = torch.isfinite(x).all(dim=1)
        stats.result = torch.where(finite, stats.result, Result.NONFINITE)
        success = bool(finite.all())
    if not success:
        ts = torch.tensor([sde.T, eps], dtype=torch.float64, device=x.device)
        solution = Solution(ts=ts, ys=torch.stack([x_T, x]), stats=stats, dt_next=stats.dt_largest)
        message = failure_message(
            stats,
            header="could not be generated",
            advice={Result.NONFINITE: "the model's prediction was not finite"},
            hint=None,
        )
        raise SolveError(message, solution)
    # one host read for both totals
    accepted, rejected = torch.stack([stats.num_accepted.sum(), stats.num_rejected.sum()]).tolist()
    sample_stats = SampleStats(
        score_evals=evals,
        model_calls=data.calls,
        rows_evaluated=data.rows,
        accepted=int(accepted),
        rejected=int(rejected),
        solve=stats,
    )
    return x.reshape(batch, *dims), sample_stats


def sample_euler_maruyama(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    shape: Sequence[int],
    *,
    steps: int = 1000,
    eps: float | None = None,
    denoise: bool = True,
    seed: int | torch.Generator | None = None,
    sample_ids: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    model_dtype: torch.dtype | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    grad: bool = False,
    generator: int | torch.Generator | None = None,
) -> tuple[torch.Tensor, SampleStats]:
    """The reverse SDE with ``steps`` fixed Euler-Maruyama steps from T to ``eps`` (the paper's
    reference at 1000 steps), then the same denoising step as :func:`sample`; ``model_dtype``,
    ``model_kwargs``, ``grad`` and ``seed`` (formerly ``generator``) as there."""
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    seed = _options.renamed("generator", generator, seed)
    batch, dims, eps, seed, ids, x_T = _start(sde, shape, eps, seed, sample_ids, dtype, device, x_T)
    reverse = ReverseSDE(
        sde,
        score_fn,
        dims,
        sde_type="ito",
        model_dtype=model_dtype,
        model_kwargs=model_kwargs,
        batch=batch,
    )
    with _grad_mode(grad):
        return _euler_maruyama(reverse, sde, x_T, dims, steps, eps, seed, ids, denoise, dtype)


def _euler_maruyama(
    reverse: ReverseSDE,
    sde: ForwardSDE,
    x_T: torch.Tensor,
    dims: tuple[int, ...],
    steps: int,
    eps: float,
    seed: int,
    ids: torch.Tensor,
    denoise: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, SampleStats]:
    """:func:`sample_euler_maruyama` once the grad mode is set."""
    batch = x_T.shape[0]
    keys = _random.stream_keys(seed, ids, _EM_TAG)
    y = x_T.reshape(batch, -1).to(dtype)
    h = (sde.T - eps) / steps
    for k in range(steps):
        s = torch.tensor(k * h, dtype=torch.float64, device=y.device)
        z = _random.normals(keys, torch.full_like(ids, k), y.shape[1], dtype)
        y = y + h * reverse.f(s, y) + reverse.g(s, y) * math.sqrt(h) * z
    if denoise:
        y = _tweedie(reverse.score, sde, y, eps)
    _check_output(y, "sample_euler_maruyama", "the score was not finite along the way")
    evals = torch.full((batch,), steps + int(denoise), dtype=torch.int64, device=y.device)
    stats = SampleStats(evals, reverse.score.calls, reverse.score.rows, steps * batch, 0)
    return y.reshape(batch, *dims), stats


def sample_probability_flow(
    score_fn: ScoreFn,
    sde: ForwardSDE,
    shape: Sequence[int],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    eps: float | None = None,
    denoise: bool = False,
    seed: int | torch.Generator | None = None,
    sample_ids: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    generator: int | torch.Generator | None = None,
) -> tuple[torch.Tensor, SampleStats]:
    """The probability-flow ODE solved adaptively by scipy's ``solve_ivp`` (RK45 with tolerances
    1e-5, as Song et al. 2021), on the whole batch at once. Deterministic given the prior.
    Always without autograd (scipy's solver cannot carry a graph: every evaluation runs under
    ``torch.no_grad()``); ``model_kwargs`` as in :func:`sample`."""
    seed = _options.renamed("generator", generator, seed)
    batch, dims, eps, _, _, x_T = _start(sde, shape, eps, seed, sample_ids, dtype, device, x_T)
    flow = ReverseSDE(
        sde, score_fn, dims, probability_flow=True, model_kwargs=model_kwargs, batch=batch
    )
    y0 = x_T.reshape(batch, -1).to(dtype)

    def rhs(s: float, flat: np.ndarray) -> np.ndarray:
        y = torch.as_tensor(flat, dtype=dtype, device=y0.device).reshape(y0.shape)
        with torch.no_grad():
            dy = flow.f(torch.tensor(s, dtype=torch.float64), y).double().cpu().numpy().ravel()
        if not np.isfinite(dy).all():
            # RK45 would shrink its step for ever on a NaN: stop at the first one.
            rows = np.nonzero(~np.isfinite(dy.reshape(batch, -1)).all(axis=1))[0][:5].tolist()
            raise SolveError(
                f"sample_probability_flow: the score was not finite at t={sde.T - s:.6g} "
                f"(samples {rows})",
                None,
            )
        return dy

    result = solve_ivp(
        rhs,
        (0.0, sde.T - eps),
        y0.double().cpu().numpy().ravel(),
        rtol=rtol,
        atol=atol,
        method=method,
    )
    if not result.success:
        raise RuntimeError(f"solve_ivp failed: {result.message}")
    y = torch.as_tensor(result.y[:, -1], dtype=dtype, device=y0.device).reshape(y0.shape)
    if denoise:
        y = _tweedie(flow.score, sde, y, eps)
    _check_output(y, "sample_probability_flow", "the score was not finite")
    evals = torch.full((batch,), int(result.nfev) + int(denoise), dtype=torch.int64)
    stats = SampleStats(evals, flow.score.calls, flow.score.rows, 0, 0)
    return y.reshape(batch, *dims), stats


def _start(
    sde: ForwardSDE,
    shape: Sequence[int],
    eps: float | None,
    seed: int | torch.Generator | None,
    sample_ids: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
    x_T: torch.Tensor | None,
) -> tuple[int, tuple[int, ...], float, int, torch.Tensor, torch.Tensor]:
    """What every sampler starts from: the checked shape and end time, the seed, the sample ids
    and the prior samples (drawn, or the given ``x_T`` checked)."""
    batch, dims = _batch_shape(shape)
    eps = sde.check_eps(sde.eps if eps is None else eps)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"dtype must be torch.float32 or torch.float64 (the solver's state), got {dtype}; "
            "for a half-precision model pass model_dtype"
        )
    seed = resolve_seed(seed)
    ids = _sample_ids(sample_ids, batch, device)
    if x_T is None:
        x_T = prior_sample(sde, shape, seed, ids, dtype, device)
    elif not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != (batch, *dims):
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must have shape {(batch, *dims)}, got {got}")
    else:
        check_state(x_T.reshape(batch, -1), name="x_T")  # floating point and finite
    return batch, dims, eps, seed, ids, x_T


def _grad_mode(grad: bool) -> contextlib.AbstractContextManager[Any]:
    """The caller's grad mode with ``grad=True`` (to differentiate the samples), else
    ``torch.no_grad()``: sampling keeps no graph by default."""
    if not isinstance(grad, bool):
        raise TypeError(f"grad must be True or False, got {type(grad).__name__}")
    return contextlib.nullcontext() if grad else torch.no_grad()


def _check_output(x: torch.Tensor, sampler: str, what: str) -> None:
    """Every sampler's last line of defence: no NaN or infinity is returned as a sample."""
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        raise SolveError(
            f"{sampler}: {int(bad.numel())} of {x.shape[0]} samples are not finite (samples "
            f"{bad[:5].tolist()}); {what}",
            None,
        )


def _tweedie(score: ScoreCounter, sde: ForwardSDE, y: torch.Tensor, eps: float) -> torch.Tensor:
    """E[x_0 | x_eps] = (x + sigma^2 score) / alpha (Tweedie's formula; Efron 2011)."""
    t = torch.full((y.shape[0],), eps, dtype=torch.float64, device=y.device)
    alpha = sde.alpha(t).to(y.dtype)[:, None]
    sigma = sde.sigma(t).to(y.dtype)[:, None]
    with torch.no_grad() if not y.requires_grad else torch.enable_grad():
        return (y + sigma**2 * score(y, t.to(y.dtype))) / alpha


def _sample_ids(
    sample_ids: torch.Tensor | None, batch: int, device: torch.device | str | None
) -> torch.Tensor:
    if sample_ids is None:
        return torch.arange(batch, device=device)
    ids = torch.as_tensor(sample_ids, device=device).to(torch.int64)
    if tuple(ids.shape) != (batch,):
        raise ValueError(f"sample_ids must have shape ({batch},), got {tuple(ids.shape)}")
    return ids
