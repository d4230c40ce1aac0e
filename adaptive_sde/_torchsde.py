"""``method="gtgf"`` for ``torchsde.sdeint`` and ``torchsde.sdeint_adjoint``.

``import adaptive_sde`` registers the method; torchsde's own contract checks (shapes, noise and
SDE types, ``names=``, ``logqp=``) keep running unchanged before the solve reaches us. How
torchsde's arguments map onto the method:

- ``dt``: the first step (with ``options={"fixed_steps": True}``, the fixed step).
- ``rtol``, ``atol``: the tolerance, in torchsde's conventional form
  ``atol + rtol * max(|y|, |y_next|)`` unless ``options={"tolerance": "paper"}``. torchsde's
  defaults (1e-5, 1e-4) are strict for a strong-order-1 method; 1e-2 / 1e-3 is a usual start.
- ``dt_min``: torchsde's meaning: steps never shrink below it, and a step of ``dt_min`` is
  accepted whatever its error (a warning says how many were).
- ``adaptive``: ignored. The method is adaptive by nature; torchsde's default
  ``adaptive=False`` does not turn it into a fixed-step method (``fixed_steps`` does).
- ``bm``: honoured: the solution is a function of that path (without a ``seed`` option,
  Roberts' signs are seeded from the path too), and the path must cover ``ts``. Without ``bm``,
  torchsde makes a ``BrownianInterval``; with ``options={"per_sample": True}`` the library's
  per-sample :class:`~adaptive_sde.BrownianRegister` replaces it (rows must then be
  independent).
- ``extra=True`` returns ``extra_solver_state = (dt_next,)``, each sample's next step, which
  ``extra_solver_state=`` takes back to continue a solve.
- ``options``: the method's settings, see :data:`OPTIONS`; an unknown key is an error, and so
  is a value of the wrong type (``{"per_sample": "no"}`` is a ``TypeError``, not a truthy value).

Statistics without global state: ``options={"stats_callback": fn}`` calls ``fn`` with the
:class:`~adaptive_sde.SolveStats` of every solve (for ``sdeint_adjoint``, pass it in
``adjoint_options`` too to see the backward solves).
"""

from __future__ import annotations

import struct
import sys
import warnings
from typing import Any

import torch
import torchsde
from torchsde._core import adjoint as torchsde_adjoint
from torchsde._core import base_solver
from torchsde._core import methods as torchsde_methods
from torchsde._core import sdeint as torchsde_sdeint
from torchsde._core.adjoint_sde import AdjointSDE
from torchsde.settings import LEVY_AREA_APPROXIMATIONS, METHODS, NOISE_TYPES, SDE_TYPES

from adaptive_sde import _options
from adaptive_sde._brownian import resolve_seed
from adaptive_sde._integrate import seed_of_path, solve
from adaptive_sde._random import mix64_int
from adaptive_sde._sde import SDEAdapter
from adaptive_sde._solution import Solution, SolveError
from adaptive_sde._validation import check_bool, check_callable, check_positive, check_real

METHOD = "gtgf"
SUPPORTED_TORCHSDE = ((0, 2, 6), (0, 3, 0))  # >= 0.2.6, < 0.3

# The method's options: the solver's own (their defaults, meaning and checks are those of the
# one option table, adaptive_sde._options, with the few defaults that differ here), and the
# options that only this bridge has.
_SOLVER_OPTIONS = (
    "seed",
    "tolerance",
    "norm",
    "batch_error",
    "safety",
    "exponent",
    "pcoeff",
    "factor_min",
    "factor_max",
    "factor_max_after_reject",
    "dt_max",
    "max_steps",
    "extrapolate",
    "decouple_signs",
    "progress",
    "sync_every",
    "throw",
)
# torchsde's conventions: its tolerance form, and its adaptive rule on a shared grid (one RMS
# of the error over the whole batch); dt_min means a step accepted whatever its error.
SDEINT_DEFAULTS: dict[str, Any] = {"tolerance": "conventional", "batch_error": "rms"}
_BRIDGE_OPTIONS: dict[str, _options.Option] = {
    "per_sample": _options.Option(
        False,
        "every sample takes its own steps (rows must be independent; needs the default bm)",
        lambda name, value: check_bool(name, value),
        kind="bool",
    ),
    "fixed_steps": _options.Option(
        False,
        "fixed steps of dt (for order studies)",
        lambda name, value: check_bool(name, value),
        kind="bool",
    ),
    "stats_callback": _options.Option(
        None,
        "a callable, receives the SolveStats of each solve",
        lambda name, value: check_callable(name, value, allow_none=True),
        kind="callable",
    ),
}
_TABLE: dict[str, _options.Option] = {
    **{name: _options.OPTIONS[name] for name in _SOLVER_OPTIONS},
    **_BRIDGE_OPTIONS,
}
OPTIONS: dict[str, str] = {
    name: f"{option.help} (default {SDEINT_DEFAULTS.get(name, option.default)!r})"
    for name, option in _TABLE.items()
}


_TORCHSDE_DEFAULT_TOLERANCES = (1e-5, 1e-4)
_STRICT_DEFAULTS = (
    "Note: these are torchsde's default tolerances rtol=1e-5, atol=1e-4, strict for a "
    "strong-order-1 method; pass e.g. rtol=1e-2, atol=1e-3 to sdeint."
)


_warned_strict_defaults = False


def _warn_strict_defaults(solution: Solution) -> None:
    """Once per process: a solve at torchsde's default tolerances, with what it cost."""
    global _warned_strict_defaults
    if _warned_strict_defaults:
        return
    _warned_strict_defaults = True
    per_sample = float(solution.stats.nfe.double().mean())
    warnings.warn(
        f"method='gtgf' ran at torchsde's default tolerances rtol=1e-5, atol=1e-4: "
        f"{per_sample:.0f} evaluations per sample. They are strict for a strong-order-1 "
        "method: on torchsde's latent-SDE example they cost gtgf about 60 times the evaluations "
        "of rtol=1e-2, atol=1e-3, a usual start; pass rtol and atol to sdeint (this warning is "
        "shown once)",
        stacklevel=4,
    )


class _DefaultBrownianInterval(torchsde.BrownianInterval):
    """The BrownianInterval torchsde makes when the user gives no ``bm``: the same object,
    marked, so that per-sample stepping can replace it but never a user's own path."""


class GottaGoFastSolver(base_solver.BaseSDESolver):
    """The Gotta-Go-Fast method behind torchsde's solver interface (see the module docstring)."""

    strong_order = 1.0  # diagonal, scalar and additive noise; 0.5 for Itô general noise
    weak_order = 1.0
    sde_type = SDE_TYPES.ito
    noise_types = NOISE_TYPES.all()
    levy_area_approximations = LEVY_AREA_APPROXIMATIONS.all()

    def __init__(
        self,
        sde: Any,
        bm: Any,
        dt: float,
        adaptive: bool,
        rtol: float,
        atol: float,
        dt_min: float,
        options: dict[str, Any],
    ) -> None:
        super().__init__(
            sde=sde,
            bm=bm,
            dt=dt,
            adaptive=adaptive,
            rtol=rtol,
            atol=atol,
            dt_min=dt_min,
            options=options,
        )
        self.options: dict[str, Any] = dict(options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method='gtgf'; the options are "
                + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
            )
        _check_arguments(dt, rtol, atol, dt_min)
        self.settings = _check_options(self.options)
        self.per_sample = self.settings["per_sample"]
        if self.per_sample and (_is_adjoint(sde) or _inside_sdeint_adjoint()):
            raise ValueError(
                "options={'per_sample': True} cannot serve sdeint_adjoint: the backward solve "
                "re-queries the forward Brownian path on one shared time grid. Drop per_sample "
                "(in options and adjoint_options)."
            )
        if self.per_sample and not isinstance(bm, _DefaultBrownianInterval):
            raise ValueError(
                "options={'per_sample': True} needs the library's per-sample Brownian register, "
                f"but a {type(bm).__name__} was given as bm: its one time grid is shared by the "
                "batch. Drop bm, or drop per_sample."
            )

    def init_extra_solver_state(self, t0: torch.Tensor, y0: torch.Tensor) -> tuple[torch.Tensor]:
        return (
            torch.full((y0.shape[0],), float(self.dt), dtype=_time_dtype(t0, y0), device=y0.device),
        )

    def integrate(
        self, y0: torch.Tensor, ts: torch.Tensor, extra0: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        dt0 = _check_extra_state(extra0, y0.shape[0]) if extra0 else float(self.dt)
        strict = (float(self.rtol), float(self.atol)) == _TORCHSDE_DEFAULT_TOLERANCES
        try:
            solution = self._solve(self._adapter(y0), y0, ts, dt0)
        except SolveError as error:
            if strict:
                raise SolveError(f"{error}\n{_STRICT_DEFAULTS}", error.solution) from None
            raise
        if strict and not self.settings["fixed_steps"]:
            _warn_strict_defaults(solution)
        forced = int(solution.stats.num_forced.sum())
        if forced:
            warnings.warn(
                f"method='gtgf': {forced} steps were accepted at dt_min={float(self.dt_min):g} "
                "without meeting rtol/atol (torchsde's meaning of dt_min); lower dt_min or loosen "
                "the tolerances",
                stacklevel=2,
            )
        callback = self.settings["stats_callback"]
        if callback is not None:
            callback(solution.stats)
        return solution.ys, (solution.dt_next,)

    def _solve(self, adapter: SDEAdapter, y0: torch.Tensor, ts: torch.Tensor, dt0: Any) -> Solution:
        o = self.settings
        solver_options = {name: o[name] for name in _SOLVER_OPTIONS}
        return solve(
            adapter,
            y0,
            ts,
            rtol=float(self.rtol),
            atol=float(self.atol),
            dt0=dt0,
            bm=None if self.per_sample else self.bm,
            per_sample=self.per_sample,
            adaptive=not o["fixed_steps"],
            dt_min=float(self.dt_min),
            accept_at_dt_min=True,
            **solver_options,
        )

    def step(
        self, t0: torch.Tensor, t1: torch.Tensor, y0: torch.Tensor, extra0: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One fixed step from ``t0`` to ``t1`` (torchsde's solver interface)."""
        ts = torch.stack([torch.as_tensor(t0), torch.as_tensor(t1)]).to(y0.dtype)
        solution = solve(
            self._adapter(y0),
            y0,
            ts,
            dt0=float(t1 - t0),
            adaptive=False,
            per_sample=False,
            bm=self.bm,
            seed=self._step_seed(ts),
            extrapolate=self.settings["extrapolate"],
            decouple_signs=self.settings["decouple_signs"],
        )
        return solution.ys[-1], extra0

    def _step_seed(self, ts: torch.Tensor) -> int:
        """The signs' seed of one step of :meth:`step`: the solve's seed (or the path's) mixed
        with the step's start, so that successive steps draw independent Roberts signs (each
        step is a solve of its own, whose sign counters start at zero) and a repeated step
        draws the same."""
        seed = self.settings["seed"]
        base = resolve_seed(seed) if seed is not None else seed_of_path(self.bm, ts)
        (start_bits,) = struct.unpack("<Q", struct.pack("<d", float(ts[0])))
        return mix64_int(base ^ mix64_int(start_bits))

    def _adapter(self, y0: torch.Tensor) -> SDEAdapter:
        # torchsde's adjoint SDE defines g and f_and_g only to raise: it really provides these.
        adjoint_methods = frozenset({"f", "g_prod", "f_and_g_prod"})
        adapter = SDEAdapter(
            self.sde,
            y0.shape[1],
            int(self.bm.shape[-1]),
            provided=adjoint_methods if _is_adjoint(self.sde) else None,
        )
        adapter.per_sample_switch = "drop options={'per_sample': True}"
        return adapter


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every option checked by the option table's own checks, named as the caller wrote it
    (``options['norm']``), before anything runs: torchsde passes options through untouched,
    and a truthy stand-in such as ``"no"`` must not turn a mode on. Returns every option,
    the defaults filled in."""
    for name, value in options.items():
        _TABLE[name].check_kind(f"options[{name!r}]", value)
    defaults = dict(SDEINT_DEFAULTS)
    if options.get("per_sample"):
        defaults.update(_options.PER_SAMPLE_DEFAULTS)
    return _options.resolve(
        options, names=_TABLE, defaults=defaults, spelled=lambda name: f"options[{name!r}]"
    )


def _check_arguments(dt: Any, rtol: Any, atol: Any, dt_min: Any) -> None:
    """sdeint's own arguments, named as sdeint names them (the solve calls dt ``dt0``)."""
    check_positive("dt", dt)
    check_real("rtol", _number(rtol), low=0.0)
    check_real("atol", _number(atol), low=0.0)
    check_real("dt_min", _number(dt_min), low=0.0)


def _number(value: Any) -> Any:
    """A one-element tensor as a Python number, for the checks; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _check_extra_state(extra0: tuple[Any, ...], batch: int) -> torch.Tensor:
    """``extra_solver_state`` must be ``(dt_next,)`` from an earlier solve: one step per sample."""
    dt_next = extra0[0]
    if len(extra0) != 1 or not isinstance(dt_next, torch.Tensor):
        raise TypeError(
            "extra_solver_state must be (dt_next,), the tensor returned with extra=True, got "
            f"{tuple(type(x).__name__ for x in extra0)}"
        )
    if tuple(dt_next.shape) != (batch,) or not dt_next.is_floating_point():
        raise ValueError(
            f"extra_solver_state[0] must be a floating-point tensor of shape ({batch},), one next "
            f"step per sample, got dtype {dt_next.dtype} and shape {tuple(dt_next.shape)}"
        )
    if not bool((torch.isfinite(dt_next) & (dt_next > 0)).all()):
        raise ValueError("extra_solver_state[0] must hold finite steps > 0")
    return dt_next


class _GottaGoFastStratonovich(GottaGoFastSolver):
    sde_type = SDE_TYPES.stratonovich


def _is_adjoint(sde: Any) -> bool:
    return isinstance(sde, AdjointSDE)


def _inside_sdeint_adjoint(depth: int = 8) -> bool:
    """Whether torchsde.sdeint_adjoint is constructing this solver (it gives no other sign)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code is torchsde_adjoint.sdeint_adjoint.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _time_dtype(t0: Any, y0: torch.Tensor) -> torch.dtype:
    return t0.dtype if isinstance(t0, torch.Tensor) and t0.is_floating_point() else y0.dtype


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def register() -> None:
    """Make ``method="gtgf"`` known to torchsde. Idempotent; called by ``import adaptive_sde``."""
    version = _version(torchsde.__version__)
    low, high = SUPPORTED_TORCHSDE
    if not low <= version < high:
        raise ImportError(
            f"adaptive_sde supports torchsde >= 0.2.6 and < 0.3 (it hooks into torchsde's method "
            f"registry), but torchsde {torchsde.__version__} is installed: "
            "pip install 'torchsde>=0.2.6,<0.3'"
        )
    if METHOD not in METHODS:
        setattr(METHODS, METHOD, METHOD)
    if not getattr(torchsde_methods.select, "_adaptive_sde", False):
        original = torchsde_methods.select

        def select(method: str, sde_type: str) -> Any:
            if method != METHOD:
                return original(method=method, sde_type=sde_type)
            if sde_type == SDE_TYPES.ito:
                return GottaGoFastSolver
            if sde_type == SDE_TYPES.stratonovich:
                return _GottaGoFastStratonovich
            raise ValueError(
                f"method='gtgf' serves Itô and Stratonovich SDEs, got sde_type={sde_type!r}"
            )

        select._adaptive_sde = True  # type: ignore[attr-defined]
        torchsde_methods.select = select
    # torchsde builds its default Brownian motion through this module-level name.
    if torchsde_sdeint.BrownianInterval is not _DefaultBrownianInterval:
        torchsde_sdeint.BrownianInterval = _DefaultBrownianInterval
