"""The one table of the solver's options: name, default, meaning and check.

Every entry point reads its options from here: :class:`~adaptive_sde.StepController` (the
step-size options), :func:`adaptive_sde.solve` (its keywords default to ``None``, which means
"the table's default"), ``torchsde.sdeint(method="gtgf", options=...)`` (whose help text and type
checks are this table's) and :func:`adaptive_sde.diffusion.sample` (which overrides a few
defaults, in one place, for signal-to-noise time). A default changes here and nowhere else.

Two pairs of names were unified: ``seed`` (an int or a ``torch.Generator``; ``sample`` called
it ``generator``) and ``dt0`` (the first step; ``sample`` called it ``h_init``, and its largest
step ``h_max`` is the controller's ``dt_max``). The old names still work, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from adaptive_sde._validation import check_bool, check_count, check_real, check_seed

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Option:
    """One option: its default, what it means (one line, shown in error messages and by the
    torchsde bridge) and its check, ``check(name, value) -> value`` raising a ``TypeError`` or
    ``ValueError`` that names the argument as the caller spelled it."""

    default: Any
    help: str
    check: Check
    kind: str = "real"  # the type an option takes, see KINDS: checked first, a TypeError

    def check_kind(self, name: str, value: Any) -> None:
        """A ``TypeError`` naming the option when ``value`` is not of its kind (``None`` is
        of every kind whose default is ``None``)."""
        accepts, expected = KINDS[self.kind]
        if value is None and self.default is None:
            return
        if not accepts(value):
            raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The kinds of value options take: (test, what to say when a value fails it).
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "real": (_is_real, "a real number"),
    "int": (_is_int, "an int"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: isinstance(v, torch.Generator) or _is_int(v), "an int or a torch.Generator"),
    "callable": (callable, "a callable"),
}


def _real(
    low: float, *, low_open: bool = False, high: float | None = None, allow_inf: bool = False
) -> Check:
    def check(name: str, value: Any) -> float:
        value = check_real(name, value, allow_inf=allow_inf)
        bad = value < low or (low_open and value == low) or (high is not None and value > high)
        if bad:
            lo = "(" if low_open else "["
            hi = f"{high:g}]" if high is not None else "inf)"
            raise ValueError(f"{name} must be a number in {lo}{low:g}, {hi}, got {value}")
        return value

    return check


def _choice(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        return str(value)

    return check


def _boolean(name: str, value: Any) -> bool:
    return bool(check_bool(name, value))


def _optional_bool(name: str, value: Any) -> bool | None:
    return check_bool(name, value, allow_none=True)


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else check_count(name, value)


def _seed(name: str, value: Any) -> int | torch.Generator | None:
    check_seed(value, name=name)
    return value


def _optional_positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    return _real(0.0, low_open=True)(name, value)


TOLERANCES = ("paper", "conventional", "isotropic")
NORMS = ("rms", "max", "l2")
BATCH_ERRORS = ("rms", "max")

# The step-size controller's options (StepController's keywords).
CONTROLLER: dict[str, Option] = {
    "rtol": Option(1e-2, "relative tolerance, in [0, 1]", _real(0.0, high=1.0)),
    "atol": Option(1e-3, "absolute tolerance, >= 0", _real(0.0)),
    "tolerance": Option(
        "paper",
        'the tolerance\'s form: "paper" (max(atol, rtol * max(|y_em_prev|, |y_em|))), '
        '"conventional" (atol + rtol * max(|y|, |y_next|), torchsde\'s) or "isotropic"',
        _choice(*TOLERANCES),
        kind="str",
    ),
    "norm": Option(
        "rms", 'the error norm over a sample: "rms", "max" or "l2"', _choice(*NORMS), kind="str"
    ),
    "batch_error": Option(
        "max",
        'on a shared time grid, how the rows\' errors combine: "max" (every sample must pass) '
        'or "rms" (one RMS over the whole batch, torchsde\'s)',
        _choice(*BATCH_ERRORS),
        kind="str",
    ),
    "safety": Option(
        0.9, "safety factor of the next step, in (0, 1]", _real(0.0, low_open=True, high=1.0)
    ),
    "exponent": Option(
        0.7,
        "integral gain: the next step scales with E**-exponent (E the error ratio), > 0",
        _real(0.0, low_open=True),
    ),
    "pcoeff": Option(
        0.2,
        "proportional gain (Gustafsson's PI control): the next step also scales with "
        "(E_prev / E)**pcoeff, E_prev the error ratio of the last accepted step; 0 is plain "
        "I control, the paper's (with exponent 0.9)",
        _real(0.0),
    ),
    "factor_min": Option(
        0.2, "smallest h_next / h, in (0, 1]", _real(0.0, low_open=True, high=1.0)
    ),
    "factor_max": Option(
        10.0, "largest h_next / h, >= 1 (per-sample steps: 2, PER_SAMPLE_DEFAULTS)", _real(1.0)
    ),
    "factor_max_after_reject": Option(
        10.0,
        "largest h_next / h of a step accepted just after a rejection, >= 1 (Hairer's "
        "facmax = 1 after a rejection; per-sample steps: 1)",
        _real(1.0),
    ),
    "nonfinite_factor": Option(
        0.1,
        "h_next / h after a proposal that is not finite, in (0, 1]",
        _real(0.0, low_open=True, high=1.0),
    ),
    "dt_min": Option(0.0, "smallest step, >= 0", _real(0.0)),
    "dt_max": Option(math.inf, "largest step, > dt_min", _real(0.0, low_open=True, allow_inf=True)),
    "accept_at_dt_min": Option(
        False,
        "torchsde's meaning of dt_min: steps never shrink below it, and a step of dt_min is "
        "accepted whatever its error",
        _boolean,
        kind="bool",
    ),
}

# The rest of a solve's options (adaptive_sde.solve's keywords).
SOLVE: dict[str, Option] = {
    "dt0": Option(None, "the first step (default: the span / 100), > 0", _optional_positive),
    "seed": Option(
        None,
        "an int in [0, 2**64) or a torch.Generator, for the Brownian paths and Roberts' signs",
        _seed,
        kind="seed",
    ),
    "max_steps": Option(
        100_000, "attempted steps per sample, a positive int", check_count, kind="int"
    ),
    "extrapolate": Option(
        True, "keep the higher-order result (False: Euler-Maruyama)", _boolean, kind="bool"
    ),
    "decouple_signs": Option(
        None,
        "True, False or None (default: on for Itô general noise with m >= 2)",
        _optional_bool,
        kind="bool",
    ),
    "sync_every": Option(
        None,
        "passes between host reads, a positive int (default: 1 on the CPU, 8 on a GPU)",
        _optional_count,
        kind="int",
    ),
    "progress": Option(False, "a tqdm progress bar", _boolean, kind="bool"),
    "throw": Option(True, "raise SolveError when a sample fails", _boolean, kind="bool"),
}

OPTIONS: dict[str, Option] = {**CONTROLLER, **SOLVE}

# With per-sample steps each sample's error estimate is its own noisy draw (for multiplicative
# noise a chi-square-like variable at every step), so a lucky small estimate grows the step
# tenfold and the next attempt is rejected. A growth limit of 2, and none right after a
# rejection, cut the evaluations per sample at strong errors 0.03 / 0.01 on 1024 paths from
# 3.20 / 3.96 to 1.78 / 1.89 times the best fixed step (Itô GBM), 2.00 / 2.33 to 1.39 / 1.31
# (Kloeden-Platen sinh), 1.75 / 1.89 to 1.16 / 1.16 (tanh); the scalar-noise GBM, met in four
# steps from dt0, went from 0.96 / 1.52 to 1.75 / 1.65. The diffusion sampler keeps its own
# measured defaults (SAMPLE_DEFAULTS).
PER_SAMPLE_DEFAULTS: dict[str, Any] = {"factor_max": 2.0, "factor_max_after_reject": 1.0}


def device_sync_every(value: Any, device: torch.device) -> int:
    """``sync_every`` checked, its default (``None``) depending on the device: 1 on the CPU,
    where a host read costs nothing and each evaluation it saves counts, 8 elsewhere, where a
    read stalls the device's queue."""
    if value is None:
        return 1 if device.type == "cpu" else 8
    return check_count("sync_every", value)


# Renamed options: old name -> new name. The old names keep working, with a warning.
RENAMED: dict[str, str] = {"generator": "seed", "h_init": "dt0", "h_max": "dt_max"}


def resolve(
    given: Mapping[str, Any],
    *,
    names: Mapping[str, Option] = OPTIONS,
    defaults: Mapping[str, Any] | None = None,
    spelled: Callable[[str], str] = str,
) -> dict[str, Any]:
    """Every option of ``names``, checked: the given value where it is not ``None``, else the
    entry point's override in ``defaults``, else the table's default. ``spelled(name)`` is how
    the caller spells the option in messages (``options['seed']`` for sdeint)."""
    out: dict[str, Any] = {}
    for name, option in names.items():
        value = given.get(name)
        if value is None:
            value = (defaults or {}).get(name, option.default)
            if value is None:
                out[name] = None
                continue
        out[name] = option.check(spelled(name), value)
    return out


def renamed(old: str, value: Any, new_value: Any, *, stacklevel: int = 3) -> Any:
    """The value of an option given under its old name ``old``: a ``DeprecationWarning``, and
    an error if the new name was given too."""
    if value is None:
        return new_value
    new = RENAMED[old]
    if new_value is not None:
        raise TypeError(f"pass {new}= or its old name {old}=, not both")
    warnings.warn(
        f"{old}= is now called {new}= (same meaning); {old}= will be removed",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return value
