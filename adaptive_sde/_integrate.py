"""The integration loop: adaptive Gotta-Go-Fast steps, per sample or on a shared time grid."""

from __future__ import annotations

import math
from typing import Any

import torch

from adaptive_sde import _random
from adaptive_sde._brownian import BrownianRegister, BrownianSource, TorchsdeBrownian, resolve_seed
from adaptive_sde._controller import StepController
from adaptive_sde._progress import ProgressMeter
from adaptive_sde._sde import SDEAdapter
from adaptive_sde._solution import Result, Solution, SolveError, SolveStats, failure_message
from adaptive_sde._step import GottaGoFastStep
from adaptive_sde._validation import check_count, check_positive, check_state, check_times

_SIGN_TAG = 0x524F424552545321  # "ROBERTS!"
_KEPT_SIGN_TAG = 0x4B45505453494753  # "KEPTSIGS"
_RUNNING = -1
# A step that would end within this fraction of itself short of an output time or a pending
# Brownian breakpoint is stretched to land on it, rather than leaving a sliver of a step.
_LANDING_SLACK = 0.01
_SHARED_BM_MESSAGE = (
    "a {name} has one time grid for the whole batch, so it cannot serve per-sample steps: pass "
    "per_sample=False, or bm=None for the per-sample BrownianRegister"
)


def solve(
    sde: Any,
    y0: torch.Tensor,
    ts: torch.Tensor,
    *,
    rtol: float = 1e-2,
    atol: float = 1e-3,
    dt0: float | torch.Tensor | None = None,
    bm: Any = None,
    seed: int | torch.Generator | None = None,
    per_sample: bool = True,
    adaptive: bool = True,
    tolerance: str = "paper",
    norm: str = "rms",
    safety: float = 0.9,
    exponent: float = 0.9,
    factor_min: float = 0.2,
    factor_max: float = 10.0,
    dt_min: float = 0.0,
    dt_max: float = math.inf,
    max_steps: int = 100_000,
    extrapolate: bool = True,
    decouple_signs: bool | None = None,
    brownian_size: int | None = None,
    throw: bool = True,
    progress: bool = False,
    accept_at_dt_min: bool = False,
) -> Solution:
    """Solve an Itô or Stratonovich SDE adaptively with the Gotta-Go-Fast method.

    Each attempted step costs two evaluations of the SDE and yields an Euler-Maruyama result and a
    stochastic Improved Euler result; their difference is the error estimate, the better one is
    kept, and the step size follows the error (Jolicoeur-Martineau et al. 2021, arXiv:2105.14080).
    Itô SDEs with multiplicative noise use Roberts' random signs (arXiv:1210.0933) so the scheme
    converges to the Itô solution. A rejected step's Brownian increment is bridged, never redrawn
    (Rackauckas & Nie 2017), so adaptivity does not bias the distribution of the solution.

    **Arguments:**

    - ``sde``: a torchsde-style SDE: ``noise_type`` in ``"diagonal" | "additive" | "scalar" |
      "general"``, ``sde_type`` in ``"ito" | "stratonovich"``, and ``f`` and ``g`` (or
      ``f_and_g``, or ``g_prod`` / ``f_and_g_prod``). With ``per_sample=True`` it receives ``t`` as
      a tensor of shape (n, 1), one time per row, and must treat rows independently (it may be
      called on a subset of rows); with ``per_sample=False``, ``t`` is a 0-d tensor.
    - ``y0``: the initial state, shape (batch, d), finite, float32 or float64.
    - ``ts``: output times, 1-D and strictly increasing; the solve starts at ``ts[0]`` and every
      output is computed by a step that ends exactly there (no interpolation).
    - ``rtol``, ``atol``, ``tolerance``, ``norm``, ``safety``, ``exponent``, ``factor_min``,
      ``factor_max``, ``dt_min``, ``dt_max``: the step-size controller, see
      :class:`~adaptive_sde.StepController`. ``tolerance="paper"`` is
      ``max(atol, rtol * max(|y_em_prev|, |y_em|))``; ``"conventional"`` is
      ``atol + rtol * max(|y|, |y_next|)``.
    - ``dt0``: the first step (default ``(ts[-1] - ts[0]) / 100``), a number or a tensor of shape
      (batch,) with one first step per sample (such as ``Solution.dt_next`` of an earlier solve);
      with ``adaptive=False`` the fixed step.
    - ``bm``: the Brownian motion: ``None`` (a :class:`~adaptive_sde.BrownianRegister` seeded by
      ``seed``), a ``BrownianRegister``, or a torchsde ``BrownianInterval`` / ``BrownianTree`` /
      ``BrownianPath`` (only with ``per_sample=False``, as it has one time grid).
    - ``seed``: an ``int`` or ``torch.Generator`` for the default register.
    - ``per_sample``: every sample takes its own steps (default). ``False``: one time grid for the
      batch, needed when rows interact (particles, mean-field terms); a step is accepted only if
      every sample passes.
    - ``adaptive``: ``False`` takes fixed steps of ``dt0`` (for convergence-order studies).
    - ``max_steps``: the budget of attempted steps per sample.
    - ``extrapolate``: keep the higher-order result (default); ``False`` keeps Euler-Maruyama
      (an ablation: biased with adaptive steps and multiplicative noise).
    - ``decouple_signs``: for Itô SDEs with several Brownian channels, draw the kept result's
      Roberts signs independently of the error estimate's, at one more evaluation per attempt,
      so that adaptivity cannot select the signs. ``None`` (default): on for general noise with
      m >= 2, off otherwise (diagonal noise, where g_i depends on y_i only, needs none).
    - ``brownian_size``: ``m``, needed only for general or additive noise when the SDE defines
      ``g_prod`` but no ``g`` and ``bm`` is not given.
    - ``throw``: raise :class:`~adaptive_sde.SolveError` if any sample fails (default); ``False``
      returns the solution with result codes in ``stats.result``.
    - ``progress``: show a tqdm progress bar driven by the slowest sample.
    - ``accept_at_dt_min``: torchsde's meaning of ``dt_min``: a step that would shrink below it is
      taken at ``dt_min`` and accepted whatever its error (counted in ``stats.num_forced``),
      instead of ending the sample with ``DT_MIN_REACHED``.

    **Returns:** a :class:`~adaptive_sde.Solution` with ``ts``, ``ys`` of shape
    ``(len(ts), batch, d)`` and per-sample statistics. Gradients flow through the accepted states;
    the step-size decisions are not differentiated.
    """
    y0 = check_state(y0)
    ts = check_times(ts, y0)
    batch, d = y0.shape
    span = float(ts[-1] - ts[0])
    h = _first_steps(dt0, span, batch, ts)
    max_steps = check_count("max_steps", max_steps)
    controller = StepController(
        rtol,
        atol,
        tolerance=tolerance,
        norm=norm,
        safety=safety,
        exponent=exponent,
        factor_min=factor_min,
        factor_max=factor_max,
        dt_min=dt_min,
        dt_max=dt_max,
        shared=not per_sample,
        accept_at_dt_min=accept_at_dt_min,
    )
    if brownian_size is not None:
        brownian_size = check_count("brownian_size", brownian_size)
    bm_size = getattr(bm, "brownian_size", None) or _torchsde_size(bm) or brownian_size
    adapter = sde if isinstance(sde, SDEAdapter) else SDEAdapter(sde, d, bm_size)
    adapter.per_sample_time = per_sample

    time_dtype = ts.dtype
    t = ts[0].expand(batch).clone()
    # The first stage of the first step, evaluated once up front: it checks the SDE's shapes
    # before any work, and tells the Brownian size of general and additive noise.
    start = adapter.drift_and_diffusion(t, y0) if adapter.has_g else None
    m = adapter.brownian_size
    assert m is not None
    stepper = GottaGoFastStep(adapter, extrapolate=extrapolate, decouple_signs=decouple_signs)
    brownian = _make_brownian(bm, seed, batch, m, y0, time_dtype, per_sample)
    sign_keys = kept_sign_keys = None
    if stepper.needs_signs:
        sign_seed = brownian.seed if isinstance(brownian, BrownianRegister) else resolve_seed(seed)
        # One sign stream per row of the Brownian motion (its batch is the state's, except in
        # torchsde's adjoint, which drives a state of batch 1 with the forward batch's noise).
        ids = _sample_ids(brownian, y0.device)
        sign_keys = _random.stream_keys(sign_seed, ids, _SIGN_TAG)
        kept_sign_keys = _random.stream_keys(sign_seed, ids, _KEPT_SIGN_TAG)

    device = y0.device
    ys = torch.full((len(ts), batch, d), math.nan, dtype=y0.dtype, device=device)
    ys[0] = y0
    y, y_em_prev = y0, y0.detach()
    h = torch.clamp(h, min=dt_min if controller.accept_at_dt_min else None, max=dt_max)
    out_index = torch.ones(batch, dtype=torch.int64, device=device)
    status = torch.full((batch,), _RUNNING, dtype=torch.int64, device=device)
    # nfe, accepted, rejected, forced (accepted at dt_min, only with accept_at_dt_min)
    counts = torch.zeros(4, batch, dtype=torch.int64, device=device)
    dt_smallest = torch.full((batch,), math.inf, dtype=time_dtype, device=device)
    dt_largest = torch.zeros(batch, dtype=time_dtype, device=device)
    meter = ProgressMeter(float(ts[0]), float(ts[-1]), progress)
    nfe_host = 0

    try:
        while True:
            running = status == _RUNNING
            rows: torch.Tensor | None = torch.nonzero(running).flatten()
            n = int(rows.numel())  # type: ignore[union-attr]
            if n == 0:
                break
            if n == batch:
                rows = None
            t_r, h_r, y_r = _take(t, rows), _take(h, rows), _take(y, rows)
            out_r = _take(out_index, rows)

            target = ts[out_r]
            limit = torch.minimum(target, brownian.horizon(rows, t_r))
            clipped = t_r + (1 + _LANDING_SLACK) * h_r >= limit
            t_next = torch.where(clipped, limit, t_r + h_r)
            dw = brownian.increment(rows, t_r, t_next)
            signs = kept_signs = None
            if sign_keys is not None:
                # The error estimate's signs are held until the step is accepted, like its
                # Brownian increment; the kept result's (decoupled) signs are fresh per attempt.
                accepted_r, rejected_r = _take(counts[1], rows), _take(counts[2], rows)
                signs = _random.signs(_take(sign_keys, rows), accepted_r, m, y0.dtype)
                if kept_sign_keys is not None and stepper.decouple_signs:
                    kept_signs = _random.signs(
                        _take(kept_sign_keys, rows), accepted_r + rejected_r, m, y0.dtype
                    )
            result = stepper.step(t_r, t_next, y_r, dw, signs, start, kept_signs)
            start = None

            with torch.no_grad():
                e = controller.error_ratio(
                    y_r.detach(),
                    result.y_next.detach(),
                    result.y_em.detach(),
                    _take(y_em_prev, rows),
                    result.error.detach(),
                )
                if adaptive:
                    accept, factor = controller.decide(e)
                    forced = controller.forced(h_r, e) & ~accept
                    accept = accept | forced
                else:
                    accept, factor = ~torch.isnan(e), torch.ones_like(e)
                    forced = torch.zeros_like(accept)
                stuck = ~result.start_finite
                if not per_sample:
                    stuck = stuck.any().expand_as(stuck)
                accept = accept & ~stuck
            brownian.commit(rows, accept)

            y_kept = torch.where(accept[:, None], result.y_next, y_r)
            y = _put(y, rows, y_kept)
            with torch.no_grad():
                y_em_prev = _put(
                    y_em_prev,
                    rows,
                    torch.where(accept[:, None], result.y_em.detach(), _take(y_em_prev, rows)),
                )
                h_taken = t_next - t_r
                t = _put(t, rows, torch.where(accept, t_next, t_r))
                hit = accept & clipped & (t_next == target)
                out_rows = torch.arange(batch, device=device) if rows is None else rows
            # In place is safe for autograd here: nothing reads the overwritten entries of ys.
            ys[out_r, out_rows] = torch.where(hit[:, None], y_kept, ys[out_r, out_rows])
            with torch.no_grad():
                out_r = out_r + hit.to(torch.int64)
                out_index = _put(out_index, rows, out_r)
                step_counts = torch.stack(
                    [
                        torch.full_like(out_r, stepper.evaluations_per_step),
                        accept.to(torch.int64),
                        (~accept).to(torch.int64),
                        forced.to(torch.int64),
                    ]
                )
                counts = counts.index_add(1, out_rows, step_counts)
                big = torch.full_like(h_taken, math.inf)
                dt_smallest = _put(
                    dt_smallest,
                    rows,
                    torch.minimum(_take(dt_smallest, rows), torch.where(accept, h_taken, big)),
                )
                dt_largest = _put(
                    dt_largest,
                    rows,
                    torch.maximum(
                        _take(dt_largest, rows), torch.where(accept, h_taken, 0 * h_taken)
                    ),
                )

                h_new = (
                    controller.next_step(h_taken, h_r, clipped, accept, factor) if adaptive else h_r
                )
                h = _put(h, rows, h_new)
                too_small = ~accept & (h_new < controller.step_floor(t_r))
                attempts_r = _take(counts[1] + counts[2], rows)
                code = torch.full_like(out_r, _RUNNING)
                code = torch.where(attempts_r >= max_steps, Result.MAX_STEPS_REACHED, code)
                code = torch.where(too_small, Result.DT_MIN_REACHED, code)
                code = torch.where(too_small & torch.isnan(e), Result.NONFINITE, code)
                code = torch.where(stuck, Result.NONFINITE, code)
                code = torch.where(out_r >= len(ts), Result.SUCCESS, code)
                status = _put(status, rows, code)
            nfe_host += stepper.evaluations_per_step * n
            meter.update(t, nfe_host)
    finally:
        meter.close()

    stats = SolveStats(
        nfe=counts[0],
        num_accepted=counts[1],
        num_rejected=counts[2],
        num_forced=counts[3],
        dt_smallest=dt_smallest,
        dt_largest=dt_largest,
        result=status,
        t_final=t,
    )
    solution = Solution(ts=ts, ys=ys, stats=stats, dt_next=h)
    if throw and not stats.success:
        raise SolveError(failure_message(stats), solution)
    return solution


def _take(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return x if rows is None else x[rows]


def _put(x: torch.Tensor, rows: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """``x`` with ``value`` in ``rows``, out of place (earlier states stay valid for autograd)."""
    return value if rows is None else x.index_put((rows,), value)


def _torchsde_size(bm: Any) -> int | None:
    shape = getattr(bm, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) == 2 else None


def _sample_ids(brownian: BrownianSource, device: torch.device) -> torch.Tensor:
    ids = getattr(brownian, "sample_ids", None)
    return ids if ids is not None else torch.arange(brownian.batch_size, device=device)


def _first_steps(
    dt0: float | torch.Tensor | None, span: float, batch: int, ts: torch.Tensor
) -> torch.Tensor:
    """The first proposed step of every sample, shape (batch,)."""
    if isinstance(dt0, torch.Tensor) and dt0.numel() > 1:
        if tuple(dt0.shape) != (batch,):
            raise ValueError(
                f"dt0 must be a number or have shape ({batch},), got {tuple(dt0.shape)}"
            )
        if not bool(torch.isfinite(dt0).all() and (dt0 > 0).all()):
            raise ValueError("dt0 must hold finite numbers > 0")
        return dt0.detach().to(dtype=ts.dtype, device=ts.device).clone()
    first = check_positive("dt0", dt0, allow_none=True) or span / 100
    return torch.full((batch,), first, dtype=ts.dtype, device=ts.device)


def _make_brownian(
    bm: Any,
    seed: int | torch.Generator | None,
    batch: int,
    m: int,
    y0: torch.Tensor,
    time_dtype: torch.dtype,
    per_sample: bool,
) -> BrownianSource:
    if bm is None:
        return BrownianRegister(
            batch, m, seed=seed, dtype=y0.dtype, device=y0.device, time_dtype=time_dtype
        )
    if isinstance(bm, BrownianSource):
        if bm.brownian_size != m:
            raise ValueError(f"bm must have brownian_size={m}, got {bm.brownian_size}")
        if isinstance(bm, BrownianRegister) and (
            bm.batch_size != batch or bm.dtype != y0.dtype or bm.device != y0.device
        ):
            raise ValueError(
                f"bm must have batch_size={batch}, y0's dtype {y0.dtype} and device {y0.device}, "
                f"got {bm.batch_size}, {bm.dtype} on {bm.device}"
            )
        if per_sample and not bm.per_sample:
            raise ValueError(_SHARED_BM_MESSAGE.format(name=type(bm).__name__))
        return bm
    if callable(bm) and hasattr(bm, "shape"):
        if per_sample:
            raise ValueError(_SHARED_BM_MESSAGE.format(name=type(bm).__name__))
        if _torchsde_size(bm) != m:
            raise ValueError(f"bm must give increments with m={m} channels, got shape {bm.shape}")
        return TorchsdeBrownian(bm)
    raise TypeError(
        "bm must be None, an adaptive_sde.BrownianRegister or a torchsde BrownianInterval / "
        f"BrownianTree / BrownianPath, got {type(bm).__name__}"
    )
