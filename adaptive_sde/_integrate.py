"""``adaptive_sde.solve``: check the arguments, assemble the pieces of a solve, run it."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from adaptive_sde import _options
from adaptive_sde._brownian import BrownianRegister, BrownianSource, TorchsdeBrownian, resolve_seed
from adaptive_sde._controller import ConstantStepSize, StepController, given_controller
from adaptive_sde._loop import Integration
from adaptive_sde._random import mix64_int
from adaptive_sde._sde import SDEAdapter
from adaptive_sde._solution import Solution, SolveError, failure_message
from adaptive_sde._step import GottaGoFastStep, RobertsSigns
from adaptive_sde._validation import (
    check_bool,
    check_count,
    check_positive,
    check_state,
    check_times,
)

_PATH_TAG = 0x5041544853454544  # "PATHSEED"
_REVERSED_PATH_TAG = 0x5245564552534544  # "REVERSED"
_SHARED_BM_MESSAGE = (
    "a {name} has one time grid for the whole batch, so it cannot serve per-sample steps: pass "
    "per_sample=False, or bm=None for the per-sample BrownianRegister"
)


def solve(
    sde: Any,
    y0: torch.Tensor,
    ts: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | torch.Tensor | None = None,
    bm: Any = None,
    seed: int | torch.Generator | None = None,
    per_sample: bool = True,
    adaptive: bool = True,
    controller: StepController | ConstantStepSize | None = None,
    tolerance: str | None = None,
    norm: str | None = None,
    batch_error: str | None = None,
    safety: float | None = None,
    exponent: float | None = None,
    pcoeff: float | None = None,
    factor_min: float | None = None,
    factor_max: float | None = None,
    factor_max_after_reject: float | None = None,
    dt_min: float | None = None,
    dt_max: float | None = None,
    max_steps: int | None = None,
    extrapolate: bool | None = None,
    decouple_signs: bool | None = None,
    brownian_size: int | None = None,
    throw: bool | None = None,
    progress: bool | None = None,
    accept_at_dt_min: bool | None = None,
    sync_every: int | None = None,
    sample_ids: torch.Tensor | None = None,
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
      ``f_and_g``, or ``g_prod`` / ``f_and_g_prod``), answering in ``y``'s dtype. A ``g``
      declared additive is checked not to depend on ``y`` (a ``ValueError`` if it does). With
      ``per_sample=True`` it receives ``t`` as a tensor of shape (n, 1), one time per row, and
      must treat rows independently (it may be called on a subset of rows); with
      ``per_sample=False``, ``t`` is a 0-d tensor.
    - ``y0``: the initial state, shape (batch, d), finite, float32 or float64.
    - ``ts``: output times, 1-D and strictly increasing; the solve starts at ``ts[0]`` and every
      output is computed by a step that ends exactly there (no interpolation).
    - ``rtol``, ``atol``, ``tolerance``, ``norm``, ``batch_error``, ``safety``, ``exponent``,
      ``pcoeff``, ``factor_min``, ``factor_max``, ``factor_max_after_reject``, ``dt_min``,
      ``dt_max``, ``accept_at_dt_min``:
      the step-size controller's options, see :class:`~adaptive_sde.StepController` (``None``:
      its default, from the one option table :mod:`adaptive_sde._options`; rtol 1e-2, atol
      1e-3, the paper's tolerance ``max(atol, rtol * max(|y_em_prev|, |y_em|))``).
    - ``controller``: a :class:`~adaptive_sde.StepController` or
      :class:`~adaptive_sde.ConstantStepSize` to use instead (then none of the options
      above may be given). With per-sample steps the controller ``solve`` builds limits the
      growth (``factor_max`` 2, ``factor_max_after_reject`` 1: ``PER_SAMPLE_DEFAULTS`` of
      :mod:`adaptive_sde._options`, where the measurements are); one given here keeps its own.
    - ``dt0``: the first step (default ``(ts[-1] - ts[0]) / 100``), a number or a tensor of shape
      (batch,) with one first step per sample (such as ``Solution.dt_next`` of an earlier solve;
      with ``per_sample=False`` the batch starts with the smallest of them); with
      ``adaptive=False`` the fixed step.
    - ``bm``: the Brownian motion: ``None`` (a :class:`~adaptive_sde.BrownianRegister` seeded by
      ``seed``), a ``BrownianRegister``, or a torchsde ``BrownianInterval`` / ``BrownianTree`` /
      ``BrownianPath`` (only with ``per_sample=False``, as it has one time grid; it must cover
      ``ts``).
    - ``seed``: an ``int`` in [0, 2**64) or a ``torch.Generator``, for the default register and
      Roberts' signs. ``None``: one draw from PyTorch's generator, except with a torchsde ``bm``,
      whose path then seeds the signs (the solution is a function of the given path).
    - ``sample_ids``: the ids of the rows for the default register, shape (batch,) (default
      ``arange(batch)``): a sample's Brownian path and signs depend only on ``(seed, id)``, so
      a large ensemble can be solved in pieces (:mod:`adaptive_sde.distributed`) with the
      results of one solve.
    - ``per_sample``: every sample takes its own steps (default). ``False``: one time grid for the
      batch, needed when rows interact (particles, mean-field terms); a step is accepted only if
      every sample passes.
    - ``adaptive``: ``False`` takes fixed steps of ``dt0`` (for convergence-order studies): the
      same as ``controller=ConstantStepSize()``.
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

    A rejected step costs one evaluation, not two: the state did not move, so the retry keeps
    the first stage ``(f, g)`` at ``(t, y)`` and evaluates only its second stage (for SDEs that
    give ``g``; with ``g_prod`` alone the first stage's product depends on the increment). With
    ``sync_every > 1`` the rows that moved are not known on the host inside a block of passes,
    and the first stage is evaluated again after the block's first pass.
    - ``sync_every``: passes of the loop between host reads of which samples are still running.
      Finished samples leave the evaluated batch at these reads; in between, a finished sample
      takes zero-length steps that are discarded (not counted in its statistics). ``None``
      (default): 1 on the CPU, where a read costs nothing and compaction saves evaluations, and
      8 on other devices, where a read stalls the device's queue. A torchsde Brownian object
      reads its times on the host at every step anyway, so it always uses 1.

    **Returns:** a :class:`~adaptive_sde.Solution` with ``ts``, ``ys`` of shape
    ``(len(ts), batch, d)`` and per-sample statistics. Gradients flow through the accepted states;
    the step-size decisions are not differentiated.
    """
    y0 = check_state(y0)
    ts = check_times(ts, y0)
    batch, d = y0.shape
    check_bool("per_sample", per_sample)
    check_bool("adaptive", adaptive)
    o = _options.resolve(
        {
            "seed": seed,
            "max_steps": max_steps,
            "extrapolate": extrapolate,
            "decouple_signs": decouple_signs,
            "sync_every": sync_every,
            "progress": progress,
            "throw": throw,
        },
        names=_options.SOLVE,
    )
    control = _controller(
        controller,
        adaptive,
        per_sample,
        rtol=rtol,
        atol=atol,
        tolerance=tolerance,
        norm=norm,
        batch_error=batch_error,
        safety=safety,
        exponent=exponent,
        pcoeff=pcoeff,
        factor_min=factor_min,
        factor_max=factor_max,
        factor_max_after_reject=factor_max_after_reject,
        dt_min=dt_min,
        dt_max=dt_max,
        accept_at_dt_min=accept_at_dt_min,
    )
    span = float(ts[-1] - ts[0])
    h = _first_steps(dt0, span, batch, ts)
    if not per_sample:
        h = h.min().expand(batch).clone()  # one grid for the batch: the smallest first step
    max_steps, sync_every = o["max_steps"], o["sync_every"]
    if brownian_size is not None:
        brownian_size = check_count("brownian_size", brownian_size)
    bm_size = getattr(bm, "brownian_size", None) or _torchsde_size(bm) or brownian_size
    adapter = sde if isinstance(sde, SDEAdapter) else SDEAdapter(sde, d, bm_size)
    adapter.per_sample_time = per_sample

    # The first stage of the first step, evaluated once up front: it checks the SDE's shapes
    # before any work, and tells the Brownian size of general and additive noise.
    t0 = ts[0].expand(batch)
    start = adapter.drift_and_diffusion(t0, y0) if adapter.has_g else None
    m = adapter.brownian_size
    assert m is not None
    stepper = GottaGoFastStep(
        adapter, extrapolate=o["extrapolate"], decouple_signs=o["decouple_signs"]
    )
    if sample_ids is not None and bm is not None:
        raise ValueError("sample_ids names the rows of the default register: pass it with bm=None")
    _check_sample_ids(sample_ids, batch)
    brownian = _make_brownian(bm, seed, batch, m, y0, ts, per_sample, sample_ids)
    signs = None
    if stepper.needs_signs:
        # One sign stream per row of the Brownian motion (its batch is the state's, except in
        # torchsde's adjoint, which drives a state of batch 1 with the forward batch's noise).
        signs = RobertsSigns(
            _signs_seed(brownian, seed, ts),
            _sample_ids(brownian, y0.device),
            m,
            y0.dtype,
            decoupled=stepper.decouple_signs,
        )
    h = control.first_step(h)
    sync_every = _options.device_sync_every(sync_every, y0.device)
    if isinstance(brownian, TorchsdeBrownian):
        sync_every = 1
    integration = Integration(
        stepper,
        control,
        brownian,
        signs,
        ts,
        max_steps=max_steps,
        per_sample=per_sample,
        progress=o["progress"],
        sync_every=sync_every,
    )
    solution = integration.run(y0, h, start)
    if o["throw"] and not solution.stats.success:
        span_of_ts = (float(ts[0]), float(ts[-1]))
        raise SolveError(failure_message(solution.stats, span=span_of_ts), solution)
    return solution


def _controller(
    controller: Any, adaptive: bool, per_sample: bool, **options: Any
) -> StepController | ConstantStepSize:
    """The solve's controller: the one given, or one built from the options (``None``: the
    option table's default); fixed steps with ``adaptive=False``."""
    controller = given_controller(controller, (StepController, ConstantStepSize), options)
    if controller is not None:
        if not adaptive and isinstance(controller, StepController):
            raise ValueError("adaptive=False takes fixed steps: it cannot use a StepController")
        return controller.for_grid(shared=not per_sample)
    defaults = _options.PER_SAMPLE_DEFAULTS if per_sample else None
    built = StepController(**options, shared=not per_sample, defaults=defaults)  # checks them
    if not adaptive:  # fixed steps of dt0: the tolerances are checked, and not used
        return ConstantStepSize(shared=not per_sample)
    return built


def _check_sample_ids(sample_ids: Any, batch: int) -> None:
    if sample_ids is None:
        return
    if not isinstance(sample_ids, torch.Tensor) or sample_ids.is_floating_point():
        raise TypeError(
            f"sample_ids must be an integer tensor of shape ({batch},), got "
            + (
                f"dtype {sample_ids.dtype}"
                if isinstance(sample_ids, torch.Tensor)
                else type(sample_ids).__name__
            )
        )
    if tuple(sample_ids.shape) != (batch,):
        raise ValueError(
            f"sample_ids must have shape ({batch},), one id per row of y0, got "
            f"{tuple(sample_ids.shape)}"
        )


def _signs_seed(
    brownian: BrownianSource, seed: int | torch.Generator | None, ts: torch.Tensor
) -> int:
    """The seed of Roberts' signs. The register's own seed; an explicit ``seed``; for a torchsde
    Brownian motion without one, a seed derived from that path, so that the solution is a
    function of the given path (as with every torchsde method, and as ``sdeint_adjoint``'s
    forward pass needs to repeat ``sdeint``); else a draw from PyTorch's generator."""
    if isinstance(brownian, BrownianRegister):
        return brownian.seed
    if seed is None and isinstance(brownian, TorchsdeBrownian):
        return seed_of_path(brownian.bm, ts)
    return resolve_seed(seed)


def seed_of_path(bm: Any, ts: torch.Tensor) -> int:
    """A seed that is a function of a torchsde Brownian motion: its entropy where torchsde keeps
    one (``BrownianInterval``, and the ``BrownianTree`` / ``BrownianPath`` /
    ``ReverseBrownian`` built on one), else a hash of its increment over ``ts``."""
    base, reverse = _torchsde_interval(bm)
    entropy = getattr(base, "_entropy", None)
    if isinstance(entropy, int) and not isinstance(entropy, bool):
        material = entropy
    else:
        dw = bm(float(ts[0]), float(ts[-1]))
        digest = hashlib.blake2b(dw.detach().cpu().numpy().tobytes(), digest_size=8).digest()
        material = int.from_bytes(digest, "little")
    tag = _REVERSED_PATH_TAG if reverse else _PATH_TAG
    return mix64_int(mix64_int(material) ^ tag)


def _torchsde_interval(bm: Any) -> tuple[Any, bool]:
    """The ``BrownianInterval`` under a torchsde Brownian object, and whether the object runs
    it backwards in time (torchsde's adjoint wraps the forward path in a ``ReverseBrownian``)."""
    reverse = False
    for _ in range(8):
        if hasattr(bm, "base_brownian"):
            bm, reverse = bm.base_brownian, not reverse
        elif hasattr(bm, "_interval") and not hasattr(bm, "_entropy"):
            bm = bm._interval
        else:
            break
    return bm, reverse


def _check_path_covers(bm: Any, ts: torch.Tensor) -> None:
    """A torchsde Brownian motion must cover ``ts``: torchsde only warns about a query outside
    its interval and clamps it, which returns increments of zero and a wrong solution."""
    base, reverse = _torchsde_interval(bm)
    start, end = getattr(base, "_start", None), getattr(base, "_end", None)
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
        return  # not a torchsde interval: nothing to check it with
    if reverse:
        start, end = -end, -start
    t0, t1 = float(ts[0]), float(ts[-1])
    slack = 4 * torch.finfo(ts.dtype).eps * max(1.0, abs(t0), abs(t1))
    if t0 < start - slack or t1 > end + slack:
        raise ValueError(
            f"bm covers the times [{start:g}, {end:g}], but ts spans [{t0:g}, {t1:g}]: make the "
            "Brownian motion with t0 <= ts[0] and t1 >= ts[-1] (torchsde clamps queries outside "
            "its interval, which would give a wrong path; a BrownianPath covers [t0, t0 + 1])"
        )


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
    ts: torch.Tensor,
    per_sample: bool,
    sample_ids: torch.Tensor | None,
) -> BrownianSource:
    if bm is None:
        return BrownianRegister(
            batch,
            m,
            seed=seed,
            sample_ids=sample_ids,
            dtype=y0.dtype,
            device=y0.device,
            time_dtype=ts.dtype,
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
        _check_path_covers(bm, ts)
        return TorchsdeBrownian(bm)
    raise TypeError(
        "bm must be None, an adaptive_sde.BrownianRegister or a torchsde BrownianInterval / "
        f"BrownianTree / BrownianPath, got {type(bm).__name__}"
    )
