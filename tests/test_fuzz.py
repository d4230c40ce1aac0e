"""The public entry points' arguments, fuzzed (hypothesis): nothing silent, nothing hangs.

Every call of :func:`adaptive_sde.solve` and of ``torchsde.sdeint(method="gtgf")`` either
succeeds with finite outputs and consistent statistics, or raises ``ValueError`` / ``TypeError``
naming one of the bad arguments it was given, or (a valid call whose solve fails) raises a
``SolveError`` whose message names an argument to change. Each argument is drawn either from
values that are valid whatever the others are (``GOOD``) or from values that are wrong on their
own (``BAD``), so a refusal must name a bad one. Step budgets are small and every example runs
under a wall-clock guard, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import math
import re
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torchsde
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import adaptive_sde
from adaptive_sde import Result, SolveError
from adaptive_sde._bench.problems import COMMUTING_ITO, GBM_ITO, GBM_STRATONOVICH, OU, SCALAR_GBM
from tests.helpers import brownian_interval

PROBLEMS = [GBM_ITO, GBM_STRATONOVICH, OU, SCALAR_GBM, COMMUTING_ITO]
SECONDS_PER_EXAMPLE = 30
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Times: valid, including ones a float32 clock cannot step through (a NO_PROGRESS failure).
GOOD_TIMES = [
    ([0.0, 1.0], torch.float64),
    ([0.0, 0.25, 1.0], torch.float32),
    ([2.0, 2.001], torch.float64),
    ([1e6, 1e6 + 1], torch.float32),
]


@contextmanager
def wall_clock_guard(seconds: float) -> Iterator[None]:
    """Fail the example, rather than hang, if it runs longer than ``seconds`` (where the
    platform has SIGALRM; elsewhere the small step budgets bound the run)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the call ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def names_one_of(message: str, names: set[str]) -> bool:
    """Whether ``message`` names one of ``names`` as a word (``sde`` also as "SDE")."""
    for name in names:
        flags = re.IGNORECASE if name == "sde" else 0
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message, flags):
            return True
    return False


# -- adaptive_sde.solve ------------------------------------------------------------------------

GOOD_SOLVE = {
    "rtol": st.sampled_from([0.3, 0.1, 0.05, 1e-2]),
    "atol": st.sampled_from([0.0, 1e-3, 1e-2]),
    "dt0": st.sampled_from([None, 0.1, 1e-3, 1e-30, "PER_SAMPLE"]),
    "seed": st.one_of(
        st.integers(0, 2**64 - 1),
        st.just(None),
        st.builds(torch.Generator().manual_seed, st.just(3)),
    ),
    "per_sample": st.booleans(),
    "adaptive": st.booleans(),
    "tolerance": st.sampled_from(["paper", "conventional"]),
    "norm": st.sampled_from(["rms", "max", "l2"]),
    "safety": st.sampled_from([0.9, 0.5, 1.0]),
    "exponent": st.sampled_from([0.9, 0.5, 2.0]),
    "factor_min": st.sampled_from([0.2, 0.5, 1.0]),
    "factor_max": st.sampled_from([10.0, 1.0, 3]),
    "dt_min": st.sampled_from([0.0, 1e-6]),
    "dt_max": st.sampled_from([math.inf, 0.5]),
    "max_steps": st.integers(1, 200),
    "extrapolate": st.booleans(),
    "decouple_signs": st.sampled_from([None, True, False]),
    "throw": st.booleans(),
    "accept_at_dt_min": st.booleans(),
    "sync_every": st.sampled_from([None, 1, 3]),
    "bm": st.sampled_from([None, "REGISTER", "INTERVAL"]),
    "sample_ids": st.sampled_from([None, "IDS"]),
}
BAD_SOLVE = {
    "y0": st.sampled_from(["LIST", "1D", "INT", "NAN", "EMPTY"]),
    "ts": st.sampled_from(["LIST", "UNSORTED", "ONE", "INT", "HALF", "NAN"]),
    "rtol": st.sampled_from([-0.1, math.nan, 1.5, "0.01", True, math.inf]),
    "atol": st.sampled_from([-1.0, math.nan, "0", None]),
    "dt0": st.sampled_from([0.0, -0.1, math.nan, math.inf, "0.1", "WRONG_SHAPE", "ZERO_ROW"]),
    "seed": st.sampled_from([2**64, -1, 1.5, "3", True]),
    "per_sample": st.sampled_from(["no", 1, None]),
    "adaptive": st.sampled_from(["yes", 0]),
    "tolerance": st.sampled_from(["diffrax", 1]),
    "norm": st.sampled_from(["linf", 3]),
    "safety": st.sampled_from([0.0, 1.5, "0.9"]),
    "exponent": st.sampled_from([0.0, -1.0]),
    "factor_min": st.sampled_from([0.0, 2.0]),
    "factor_max": st.sampled_from([0.5, math.nan]),
    "dt_min": st.sampled_from([-1.0, math.nan]),
    "dt_max": st.sampled_from([0.0, -1.0, "inf"]),
    "max_steps": st.sampled_from([0, -1, 2.5, True]),
    "extrapolate": st.sampled_from(["no"]),
    "decouple_signs": st.sampled_from(["auto", 1]),
    "brownian_size": st.sampled_from([0, 1.5]),
    "throw": st.sampled_from(["no", 0]),
    "progress": st.sampled_from(["no", 1]),
    "accept_at_dt_min": st.sampled_from(["no"]),
    "sync_every": st.sampled_from([0, 2.5, True]),
    "bm": st.sampled_from(["OBJECT", "WRONG_BATCH", "SHORT_INTERVAL"]),
    "sample_ids": st.sampled_from(["LIST", "FLOAT", "LONG"]),
}


def _state(kind: str | None, batch: int, d: int, dtype: torch.dtype, problem) -> Any:
    y0 = problem.initial(batch, dtype)
    return {
        None: y0,
        "LIST": y0.tolist(),
        "1D": y0[0],
        "INT": y0.to(torch.int64),
        "NAN": y0.index_fill(0, torch.tensor([0]), math.nan),
        "EMPTY": y0[:0],
    }[kind]


def _times(kind: str | None, good: tuple[list[float], torch.dtype]) -> Any:
    values, dtype = good
    ts = torch.tensor(values, dtype=dtype)
    return {
        None: ts,
        "LIST": values,
        "UNSORTED": ts.flip(0),
        "ONE": ts[:1],
        "INT": torch.arange(2),
        "HALF": ts.half(),
        "NAN": torch.tensor([0.0, math.nan], dtype=dtype),
    }[kind]


def _stand_ins(arguments: dict, batch: int, m: int, ts: Any, dtype: torch.dtype) -> dict:
    """Stand-in names made real: Brownian motions, sample ids, per-sample first steps."""
    t1 = float(ts[-1]) if isinstance(ts, torch.Tensor) and ts.numel() else 1.0
    t0 = float(ts[0]) if isinstance(ts, torch.Tensor) and ts.numel() else 0.0
    values = {
        "REGISTER": lambda: adaptive_sde.BrownianRegister(batch, m, seed=1, dtype=dtype),
        "INTERVAL": lambda: brownian_interval(batch, m, t0=t0, t1=max(t1, t0 + 1), dtype=dtype),
        "SHORT_INTERVAL": lambda: brownian_interval(batch, m, t0=t0, t1=t0 + 1e-3, dtype=dtype),
        "WRONG_BATCH": lambda: adaptive_sde.BrownianRegister(batch + 1, m, dtype=dtype),
        "OBJECT": object,
        "IDS": lambda: torch.arange(batch) + 10,
        "LIST": lambda: list(range(batch)),
        "FLOAT": lambda: torch.zeros(batch),
        "LONG": lambda: torch.arange(batch + 1),
        "PER_SAMPLE": lambda: torch.linspace(0.01, 0.1, batch, dtype=torch.float64),
        "WRONG_SHAPE": lambda: torch.full((batch + 1,), 0.1),
        "ZERO_ROW": lambda: torch.zeros(max(batch, 2)),
    }
    made = dict(arguments)
    for name in ("bm", "sample_ids", "dt0"):
        if isinstance(made.get(name), str) and made[name] in values:
            made[name] = values[made[name]]()
    return made


def _coordinate_good(arguments: dict, bad: set[str]) -> dict:
    """Good values that are valid only together: a torchsde path needs the shared grid (and
    steps it can afford), and sample ids name the rows of the default register only."""
    arguments = dict(arguments)
    if arguments.get("bm") == "INTERVAL" and "per_sample" not in bad:
        arguments["per_sample"] = False
    if arguments.get("bm") == "INTERVAL" and arguments.get("dt0") == 1e-30:
        # torchsde's BrownianInterval refines a dependency tree down to the average step it
        # is queried at, (t1 - t0) / 1e-30 pieces: its own cost, with any torchsde method.
        arguments["dt0"] = 1e-3
    if arguments.get("bm") is not None and "sample_ids" not in bad:
        arguments.pop("sample_ids", None)
    if "bm" in bad:
        arguments.pop("sample_ids", None)  # the bad path, not the ids, must be what is refused
    return arguments


def check_solution(solution: adaptive_sde.Solution, ts: torch.Tensor, y0: torch.Tensor) -> None:
    """Finite outputs where the solve succeeded, and statistics that add up."""
    s = solution.stats
    assert solution.ys.shape == (len(ts), *y0.shape) and solution.ys.dtype == y0.dtype
    # Two or three evaluations per attempt; a retry after a rejection keeps its first stage (one
    # fewer), and the first stage of the state a sample ends on is not evaluated unless it was
    # already (one more): between (e - 1) * attempts + accepted and e * attempts + 1.
    attempts, accepted = s.num_steps, s.num_accepted
    assert any(
        bool(torch.all((s.nfe >= (e - 1) * attempts + accepted) & (s.nfe <= e * attempts + 1)))
        for e in (2, 3)
    ), (s.nfe, attempts, accepted)
    assert {int(code) for code in s.result} <= {int(code) for code in Result}
    assert s.success == bool((s.result == Result.SUCCESS).all())
    ok = s.result == Result.SUCCESS
    assert torch.isfinite(solution.ys[:, ok]).all()
    assert torch.all(s.t_final[ok] == ts[-1])
    assert torch.all(s.num_accepted[ok] >= 1)
    assert torch.all(s.dt_smallest[ok] <= s.dt_largest[ok])
    assert torch.all(s.num_forced <= s.num_accepted)


@FUZZ
@given(data=st.data())
def test_solve_runs_or_refuses_naming_a_bad_argument(data):
    problem = data.draw(st.sampled_from(PROBLEMS), label="problem")
    batch = data.draw(st.integers(1, 3), label="batch")
    good_times = data.draw(st.sampled_from(GOOD_TIMES), label="times")
    state_dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    bad = data.draw(st.sets(st.sampled_from(sorted(BAD_SOLVE)), max_size=3), label="bad")
    arguments = {
        name: data.draw(BAD_SOLVE[name] if name in bad else GOOD_SOLVE[name], label=name)
        for name in sorted(set(GOOD_SOLVE) | bad)
    }
    arguments = _coordinate_good(arguments, bad)
    y0 = _state(arguments.pop("y0", None), batch, problem.state_size, state_dtype, problem)
    ts = _times(arguments.pop("ts", None), good_times)
    arguments = _stand_ins(arguments, batch, problem.brownian_size, ts, state_dtype)

    with wall_clock_guard(SECONDS_PER_EXAMPLE), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns about queries on short intervals
        if bad:
            with pytest.raises((ValueError, TypeError)) as caught:
                adaptive_sde.solve(problem.make_sde(), y0, ts, **arguments)
            assert names_one_of(str(caught.value), bad), (bad, str(caught.value))
            event("refused")
            return
        try:
            solution = adaptive_sde.solve(problem.make_sde(), y0, ts, **arguments)
        except SolveError as error:
            event("SolveError")
            assert arguments["throw"], "a SolveError although throw=False"
            names = set(arguments) | {"sde", "y0", "ts", "dt0", "max_steps", "rtol", "per_sample"}
            assert names_one_of(str(error), names), str(error)
            check_solution(error.solution, ts, y0)
            return
    event("solved" if solution.stats.success else "returned failures")
    check_solution(solution, ts, y0)
    assert solution.stats.success or not arguments["throw"]
    assert int(solution.stats.num_steps.max()) <= arguments["max_steps"]


# -- torchsde.sdeint(method="gtgf") ------------------------------------------------------------

GOOD_OPTIONS = {
    "per_sample": st.booleans(),
    "seed": st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    "fixed_steps": st.booleans(),
    "tolerance": st.sampled_from(["conventional", "paper"]),
    "norm": st.sampled_from(["rms", "max", "l2"]),
    "safety": st.sampled_from([0.9, 0.5]),
    "exponent": st.sampled_from([0.9, 1.0]),
    "factor_min": st.sampled_from([0.2, 0.5]),
    "factor_max": st.sampled_from([10.0, 2.0]),
    "dt_max": st.sampled_from([math.inf, 0.3]),
    "max_steps": st.integers(1, 200),
    "extrapolate": st.booleans(),
    "decouple_signs": st.sampled_from([None, True, False]),
    "progress": st.just(False),
    "sync_every": st.sampled_from([None, 1, 4]),
    "throw": st.booleans(),
    "stats_callback": st.just("RECORD"),
}
BAD_OPTIONS = {
    "per_sample": st.sampled_from(["no", 1, None]),
    "seed": st.sampled_from([2**64, -1, 1.5, "0"]),
    "fixed_steps": st.sampled_from(["yes", 0]),
    "tolerance": st.sampled_from(["diffrax", 1]),
    "norm": st.sampled_from(["linf", 3]),
    "safety": st.sampled_from([0.0, "0.9"]),
    "exponent": st.sampled_from([0.0, [0.9]]),
    "factor_min": st.sampled_from([0.0, None]),
    "factor_max": st.sampled_from([0.5, "10"]),
    "dt_max": st.sampled_from([0.0, "inf"]),
    "max_steps": st.sampled_from([0, 100.0, True]),
    "extrapolate": st.sampled_from(["yes", 1]),
    "decouple_signs": st.sampled_from(["auto", 0]),
    "progress": st.sampled_from(["false", 1]),
    "sync_every": st.sampled_from([0, 2.0]),
    "throw": st.sampled_from([0, "no"]),
    "stats_callback": st.sampled_from([5, "print"]),
}
GOOD_SDEINT = {
    "dt": st.sampled_from([1e-3, 0.05, 0.2]),
    "rtol": st.sampled_from([0.1, 0.03, 1e-2]),
    "atol": st.sampled_from([1e-3, 1e-2]),
    "dt_min": st.sampled_from([1e-5, 0.0]),
    "bm": st.sampled_from([None, "INTERVAL"]),
}
BAD_SDEINT = {
    "dt": st.sampled_from([0.0, -0.1, math.nan, "0.1"]),
    "rtol": st.sampled_from([-1.0, "x", math.nan]),
    "atol": st.sampled_from([-1.0, "x"]),
    "dt_min": st.sampled_from([-1.0, math.nan]),
    "bm": st.just("SHORT_INTERVAL"),
    "extra_solver_state": st.sampled_from(["ZEROS", "WRONG_BATCH"]),
}


@FUZZ
@given(data=st.data())
def test_sdeint_runs_or_refuses_naming_a_bad_argument_or_option(data):
    problem = data.draw(st.sampled_from(PROBLEMS), label="problem")
    batch = data.draw(st.integers(1, 3), label="batch")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    bad_options = data.draw(st.sets(st.sampled_from(sorted(BAD_OPTIONS)), max_size=2), label="bo")
    bad_arguments = data.draw(st.sets(st.sampled_from(sorted(BAD_SDEINT)), max_size=2), label="ba")
    options = {
        key: data.draw(BAD_OPTIONS[key] if key in bad_options else GOOD_OPTIONS[key], label=key)
        for key in sorted(GOOD_OPTIONS)
    }
    arguments = {
        name: data.draw(BAD_SDEINT[name] if name in bad_arguments else GOOD_SDEINT[name])
        for name in sorted(set(GOOD_SDEINT) | bad_arguments)
    }
    m = problem.brownian_size
    if arguments["bm"] == "INTERVAL":
        arguments["bm"] = brownian_interval(batch, m, dtype=dtype)
        if "per_sample" not in bad_options:
            options["per_sample"] = False  # a path of one's own needs the shared grid
    elif arguments["bm"] == "SHORT_INTERVAL":
        arguments["bm"] = brownian_interval(batch, m, t1=0.5, dtype=dtype)
        if "per_sample" not in bad_options:
            options["per_sample"] = False
    state = arguments.pop("extra_solver_state", None)
    if state is not None:
        size = batch + 1 if state == "WRONG_BATCH" else batch
        arguments["extra_solver_state"] = (torch.zeros(size, dtype=dtype),)
    recorded: list[adaptive_sde.SolveStats] = []
    if options["stats_callback"] == "RECORD":
        options["stats_callback"] = recorded.append
    bad = bad_options | bad_arguments
    y0 = problem.initial(batch, dtype)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)

    def call():
        return torchsde.sdeint(
            problem.make_sde(), y0, ts, method="gtgf", options=options, **arguments
        )

    with wall_clock_guard(SECONDS_PER_EXAMPLE), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde's and dt_min's warnings
        if bad:
            with pytest.raises((ValueError, TypeError)) as caught:
                call()
            assert names_one_of(str(caught.value), bad), (bad, str(caught.value))
            event("refused")
            return
        try:
            ys = call()
        except SolveError as error:
            event("SolveError")
            assert options["throw"], "a SolveError although throw=False"
            names = set(arguments) | set(options) | {"sde", "y0", "ts", "rtol", "dt"}
            assert names_one_of(str(error), names), str(error)
            return
    assert ys.shape == (len(ts), batch, problem.state_size)
    stats = recorded[-1]
    event("solved" if stats.success else "returned failures")
    ok = stats.result == Result.SUCCESS
    assert torch.isfinite(ys[:, ok]).all()
    assert torch.all(stats.t_final[ok] == ts[-1])
    assert int(stats.num_steps.max()) <= options["max_steps"]
    assert stats.success or not options["throw"]


# -- adaptive_sde.diffusion.sample -------------------------------------------------------------

GOOD_SAMPLE = {
    "rtol": st.sampled_from([None, 0.4, 0.1]),
    "atol": st.sampled_from([0.0078, 0.05]),
    "eps": st.sampled_from([None, 0.01, 0.3]),
    "dt0": st.sampled_from([None, 0.05, 0.5]),
    "dt_max": st.sampled_from([None, 0.5, 2.0]),
    "denoise": st.booleans(),
    "seed": st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    "per_sample": st.booleans(),
    "max_steps": st.integers(1, 300),
    "dtype": st.sampled_from([torch.float32, torch.float64]),
    "norm": st.sampled_from(["rms", "max", "l2"]),
    "tolerance": st.sampled_from([None, "paper", "conventional", "isotropic"]),
    "sync_every": st.sampled_from([None, 1, 3]),
    "space": st.sampled_from(["snr", "x"]),
    "grad": st.booleans(),
}
BAD_SAMPLE = {
    "rtol": st.sampled_from([-0.1, 1.5, "0.1", math.nan]),
    "atol": st.sampled_from([-1.0, "x"]),
    "eps": st.sampled_from([0.0, 1.5, -1e-3]),
    "dt0": st.sampled_from([0.0, -0.1, math.inf, "0.1"]),
    "dt_max": st.sampled_from([0.0, math.nan, "1"]),
    "seed": st.sampled_from([2**64, -1, 1.5, "0"]),
    "per_sample": st.sampled_from(["no", 1]),
    "max_steps": st.sampled_from([0, 10.5]),
    "dtype": st.sampled_from([torch.int64, torch.float16]),
    "norm": st.sampled_from(["linf", 3]),
    "tolerance": st.sampled_from(["diffrax", 1]),
    "sync_every": st.sampled_from([0, 2.0]),
    "space": st.sampled_from(["w", None]),
    "x_T": st.sampled_from(["WRONG_SHAPE", "NAN"]),
    "sample_ids": st.sampled_from(["WRONG_SHAPE"]),
    "grad": st.sampled_from(["yes"]),
}


@FUZZ
@given(data=st.data())
def test_sample_runs_or_refuses_naming_a_bad_argument(data):
    from adaptive_sde.diffusion import VESDE, VPSDE, GaussianMixture, sample

    sde = data.draw(st.sampled_from([VPSDE(), VESDE()]), label="sde")
    batch = data.draw(st.integers(1, 4), label="batch")
    bad = data.draw(st.sets(st.sampled_from(sorted(BAD_SAMPLE)), max_size=2), label="bad")
    arguments = {
        name: data.draw(BAD_SAMPLE[name] if name in bad else GOOD_SAMPLE[name], label=name)
        for name in sorted(set(GOOD_SAMPLE) | bad)
    }
    if arguments.get("x_T") == "WRONG_SHAPE":
        arguments["x_T"] = torch.zeros(batch, 3)
    elif arguments.get("x_T") == "NAN":
        arguments["x_T"] = torch.full((batch, 2), math.nan)
    if arguments.get("sample_ids") == "WRONG_SHAPE":
        arguments["sample_ids"] = torch.arange(batch + 1)
    mixture = GaussianMixture.ring()
    score = mixture.score_fn(sde)

    with wall_clock_guard(SECONDS_PER_EXAMPLE), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if bad:
            with pytest.raises((ValueError, TypeError)) as caught:
                sample(score, sde, (batch, 2), **arguments)
            assert names_one_of(str(caught.value), bad), (bad, str(caught.value))
            event("refused")
            return
        try:
            x, stats = sample(score, sde, (batch, 2), **arguments)
        except SolveError as error:
            event("SolveError")
            names = {"max_steps", "rtol", "atol", "dt0", "eps"}
            assert names_one_of(str(error), names), str(error)
            return
    event("sampled")
    assert x.shape == (batch, 2) and bool(torch.isfinite(x).all())
    assert x.dtype == arguments["dtype"]
    # finished rows leave the batch at each host read; inside a block of sync_every > 1 passes
    # they are frozen but still evaluated
    if arguments["sync_every"] in (None, 1):
        assert stats.rows_evaluated == int(stats.score_evals.sum())
    else:
        assert stats.rows_evaluated >= int(stats.score_evals.sum())
    assert int(stats.solve.num_steps.max()) <= arguments["max_steps"]
    assert x.requires_grad is False  # the exact mixture has no parameters to differentiate
