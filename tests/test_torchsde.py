"""method="gtgf" inside torchsde: registration, argument mapping, contract, gradients, adjoint."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchsde
from torch import nn
from torchsde._core import methods as torchsde_methods
from torchsde.settings import METHODS

import adaptive_sde
from adaptive_sde._bench.problems import GBM_ITO, OU, PROBLEMS
from tests.helpers import brownian_interval

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def test_import_registers_the_method_once():
    assert "gtgf" in METHODS
    select = torchsde_methods.select
    adaptive_sde.register()
    adaptive_sde.register()
    assert torchsde_methods.select is select  # idempotent: no wrapper around a wrapper
    assert select("gtgf", "ito").sde_type == "ito"
    assert select("gtgf", "stratonovich").sde_type == "stratonovich"
    assert select("euler", "ito").__name__ == "Euler"  # other methods untouched


def test_an_sde_type_the_method_cannot_serve_is_refused():
    with pytest.raises(ValueError, match="serves Itô and Stratonovich SDEs"):
        torchsde_methods.select("gtgf", "rough")


def _strong_error(problem, rtol, dtype, batch=64):
    bm = brownian_interval(batch, problem.brownian_size, seed=3, dtype=dtype)
    y0 = problem.initial(batch, dtype)
    ys = torchsde.sdeint(
        problem.make_sde(),
        y0,
        TS.to(dtype),
        bm=bm,
        method="gtgf",
        rtol=rtol,
        atol=rtol / 10,
        dt=0.05,
        options={"seed": 0},
    )
    exact = problem.exact(y0.double(), lambda a, b: bm(a, b).double(), 0.0, 1.0)
    return float((ys[-1].double() - exact).abs().mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_every_noise_and_sde_type_converges_as_rtol_tightens(problem, dtype):
    loose, tight = _strong_error(problem, 0.1, dtype), _strong_error(problem, 0.003, dtype)
    assert tight < loose / 2.5, (loose, tight)
    assert tight < 0.05


def test_sdeint_with_a_bm_equals_solve_with_that_bm():
    bm = brownian_interval(50, 1, seed=8)
    y0 = GBM_ITO.initial(50)
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    stats = []
    ys = torchsde.sdeint(
        GBM_ITO.make_sde(),
        y0,
        ts,
        bm=bm,
        method="gtgf",
        rtol=0.01,
        atol=0.001,
        dt=0.02,
        dt_min=1e-6,
        options={"seed": 4, "stats_callback": stats.append},
    )
    sol = adaptive_sde.solve(
        GBM_ITO.make_sde(),
        y0,
        ts,
        bm=bm,
        per_sample=False,
        seed=4,
        rtol=0.01,
        atol=0.001,
        dt0=0.02,
        tolerance="conventional",
        batch_error="rms",  # torchsde's rule on a shared grid, sdeint's default
    )
    torch.testing.assert_close(ys, sol.ys, rtol=0, atol=0)
    assert torch.equal(stats[0].nfe, sol.stats.nfe)
    assert torch.equal(stats[0].num_rejected, sol.stats.num_rejected)
    assert stats[0].total_rejected > 0


def test_two_methods_compared_on_the_same_path():
    bm = brownian_interval(100, 1, seed=1)
    y0 = GBM_ITO.initial(100)
    exact = GBM_ITO.exact(y0, bm, 0.0, 1.0)
    other_path = GBM_ITO.exact(y0, brownian_interval(100, 1, seed=2), 0.0, 1.0)
    # rtol 5e-3: sdeint's default rule on a shared grid is one RMS of the error over the batch,
    # looser per sample than "every sample passes" (mean error 0.013 at rtol 1e-2).
    gtgf = torchsde.sdeint(GBM_ITO.make_sde(), y0, TS, bm=bm, method="gtgf", rtol=5e-3, atol=5e-4)
    euler = torchsde.sdeint(GBM_ITO.make_sde(), y0, TS, bm=bm, method="euler", dt=1e-2)
    # Both approximate the solution of this very path, not merely its distribution.
    assert float((gtgf[-1] - exact).abs().mean()) < 0.01
    assert float((euler[-1] - exact).abs().mean()) < 0.3
    assert float((gtgf[-1] - other_path).abs().mean()) > 1.0


class Recording(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def f(self, t, y):
        self.times.append(float(t))
        return y

    def g(self, t, y):
        return 0.5 * y


def test_outputs_are_exact_at_ts_not_interpolated():
    sde = Recording()
    ts = torch.tensor([0.0, 0.123, 0.5, 0.91], dtype=torch.float64)
    torchsde.sdeint(
        sde, torch.ones(4, 1, dtype=torch.float64), ts, method="gtgf", rtol=0.01, atol=0.001
    )
    assert all(float(t) in sde.times for t in ts[1:])


def test_adaptive_false_does_not_make_it_fixed_step_but_the_option_does():
    stats = []
    y0 = GBM_ITO.initial(8)
    for options in ({}, {"fixed_steps": True}):
        torchsde.sdeint(
            GBM_ITO.make_sde(),
            y0,
            TS,
            method="gtgf",
            dt=0.1,
            rtol=0.01,
            atol=0.001,
            adaptive=False,
            options={**options, "stats_callback": stats.append},
        )
    assert stats[0].total_rejected > 0
    assert torch.all(stats[1].num_accepted == 10) and stats[1].total_rejected == 0


def test_per_sample_option_uses_the_register_and_finishes_samples_separately():
    stats = []
    y0 = GBM_ITO.initial(64)
    sde = GBM_ITO.make_sde()
    sde.f = lambda t, y: 1.0 * y  # per-sample time arrives as a column: elementwise code works
    ys = torchsde.sdeint(
        sde,
        y0,
        TS,
        method="gtgf",
        rtol=0.05,
        atol=0.005,
        options={"per_sample": True, "seed": 1, "stats_callback": stats.append},
    )
    assert torch.isfinite(ys).all()
    assert int(stats[0].nfe.min()) < int(stats[0].nfe.max())


def test_extra_solver_state_returns_and_takes_the_next_step_sizes():
    y0 = GBM_ITO.initial(4)
    ys, (dt_next,) = torchsde.sdeint(
        GBM_ITO.make_sde(),
        y0,
        TS,
        method="gtgf",
        rtol=0.01,
        atol=0.001,
        extra=True,
        options={"seed": 0},
    )
    assert dt_next.shape == (4,) and torch.all(dt_next > 0)
    stats = []
    ts2 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    torchsde.sdeint(
        GBM_ITO.make_sde(),
        ys[-1],
        ts2,
        method="gtgf",
        rtol=0.01,
        atol=0.001,
        dt=1e-6,
        extra_solver_state=(dt_next,),
        options={"seed": 0, "stats_callback": stats.append},
    )
    # The continuation started from dt_next, not from the tiny dt.
    assert float(stats[0].dt_smallest.min()) > 1e-5


def test_logqp_and_names_work_as_torchsde_documents():
    class Named(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def drift(self, t, y):
            return -y

        def prior(self, t, y):
            return -2 * y

        def diffusion(self, t, y):
            return 0.3 * torch.ones_like(y)

    y0 = torch.ones(6, 2, dtype=torch.float64)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    names = {"drift": "drift", "diffusion": "diffusion", "prior_drift": "prior"}
    ys, logqp = torchsde.sdeint(
        Named(), y0, ts, method="gtgf", rtol=0.01, atol=0.001, names=names, logqp=True
    )
    assert ys.shape == (3, 6, 2) and logqp.shape == (2, 6)
    # log-ratio increments: 1/2 |(f - h) / g|^2 dt = 1/2 * 2 * (y/0.3)^2 dt > 0
    assert torch.all(logqp > 0)


def test_unknown_option_keys_are_errors():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rtoll'\]"):
        torchsde.sdeint(
            GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, method="gtgf", options={"rtoll": 0.1}
        )


def test_per_sample_with_a_shared_time_bm_is_refused():
    bm = brownian_interval(2, 1)
    with pytest.raises(ValueError, match="needs the library's per-sample Brownian register"):
        torchsde.sdeint(
            GBM_ITO.make_sde(),
            GBM_ITO.initial(2),
            TS,
            bm=bm,
            method="gtgf",
            options={"per_sample": True},
        )


def test_torchsde_default_tolerances_get_advice_when_the_budget_runs_out():
    with pytest.raises(adaptive_sde.SolveError, match="torchsde's default tolerances"):
        torchsde.sdeint(
            GBM_ITO.make_sde(), GBM_ITO.initial(64), TS, method="gtgf", options={"max_steps": 200}
        )


def test_dt_min_keeps_torchsde_meaning_with_a_warning():
    stats = []
    with pytest.warns(UserWarning, match="accepted at dt_min"):
        torchsde.sdeint(
            GBM_ITO.make_sde(),
            GBM_ITO.initial(16),
            TS,
            method="gtgf",
            rtol=1e-4,
            atol=1e-5,
            dt_min=0.05,
            options={"stats_callback": stats.append},
        )
    assert stats[0].summary()["forced"] > 0
    assert float(stats[0].dt_smallest.min()) >= 0.05 * (1 - 1e-9)


class NeuralSDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, d=3, hidden=16):
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(d + 1, hidden), nn.Tanh(), nn.Linear(hidden, d))
        self.diffusion = nn.Sequential(
            nn.Linear(d + 1, hidden), nn.Tanh(), nn.Linear(hidden, d), nn.Softplus()
        )

    def f(self, t, y):
        return self.drift(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))

    def g(self, t, y):
        return 0.1 * self.diffusion(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


@pytest.mark.parametrize("method", ["euler", "gtgf"])
def test_neural_sde_training_step_runs_unchanged(method):
    torch.manual_seed(0)
    model = NeuralSDE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    y0 = torch.randn(32, 3)
    ts = torch.linspace(0, 1, 5)
    target = torch.zeros(5, 32, 3)
    before = [p.detach().clone() for p in model.parameters()]
    ys = torchsde.sdeint(model, y0, ts, method=method, dt=0.05, rtol=1e-2, atol=1e-3)
    loss = (ys - target).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)
    )


class Linear(nn.Module):
    """dX = a X dt + G dW with trainable a and b, in every noise type."""

    def __init__(self, noise_type, sde_type, m):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.a = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([[0.4, 0.2], [-0.1, 0.3]], dtype=torch.float64)[:, :m])

    def f(self, t, y):
        return self.a * y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.b.diagonal() * y
        if self.noise_type == "additive":
            return self.b.expand(y.shape[0], -1, -1)
        return y[:, :, None] * self.b  # scalar (m = 1) and general


def test_backpropagation_matches_finite_differences_on_a_fixed_path():
    bm = brownian_interval(8, 2, seed=2)
    y0 = torch.ones(8, 2, dtype=torch.float64)

    def loss(a0):
        sde = Linear("general", "ito", 2)
        with torch.no_grad():
            sde.a[0] = a0
        ys = torchsde.sdeint(
            sde, y0, TS, bm=bm, method="gtgf", dt=0.05, options={"fixed_steps": True, "seed": 1}
        )
        return ys[-1].square().sum(), sde

    value, sde = loss(0.3)
    value.backward()
    eps = 1e-6
    fd = (loss(0.3 + eps)[0] - loss(0.3 - eps)[0]).detach() / (2 * eps)
    assert float(sde.a.grad[0]) == pytest.approx(float(fd), rel=1e-6)


@pytest.mark.parametrize(
    ("noise_type", "sde_type", "m", "rel", "rtol"),
    [
        ("diagonal", "stratonovich", 2, 0.02, 1e-3),
        ("diagonal", "ito", 2, 0.02, 1e-3),
        ("scalar", "stratonovich", 1, 0.02, 1e-3),
        ("additive", "ito", 2, 0.02, 1e-3),
        ("general", "stratonovich", 2, 0.02, 1e-3),
        # Itô general noise converges with strong order 1/2 only (Roberts' signs), so the
        # forward and the backward solve agree less closely at the same tolerance: at rtol 1e-3
        # the gradients differ by 0.02-0.074 of their size over 8 pairs of sign seeds, at 1e-4
        # by 0.005-0.019.
        ("general", "ito", 2, 0.05, 1e-4),
    ],
)
def test_adjoint_gradients_agree_with_backpropagation(noise_type, sde_type, m, rel, rtol):
    batch = 16
    bm = brownian_interval(batch, m, seed=5)
    y0 = torch.ones(batch, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    kwargs = {"bm": bm, "rtol": rtol, "atol": rtol / 10, "dt": 0.01, "options": {"seed": 3}}
    sde = Linear(noise_type, sde_type, m)
    ys = torchsde.sdeint(sde, y0, ts, method="gtgf", **kwargs)
    backprop = torch.autograd.grad(ys[-1].sum(), [sde.a, sde.b])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns about Itô adjoints being slow
        ys_adj = torchsde.sdeint_adjoint(
            sde,
            y0,
            ts,
            method="gtgf",
            adjoint_method="gtgf",
            adjoint_rtol=rtol,
            adjoint_atol=rtol / 10,
            adjoint_options={"seed": 4},
            **kwargs,
        )
    torch.testing.assert_close(ys_adj, ys)  # the same forward solve
    adjoint = torch.autograd.grad(ys_adj[-1].sum(), [sde.a, sde.b])
    for got, want in zip(adjoint, backprop, strict=True):
        assert float((got - want).abs().max()) <= rel * float(want.abs().max())


@pytest.mark.parametrize("where", ["options", "adjoint_options"])
def test_per_sample_stepping_cannot_serve_the_adjoint(where):
    sde = Linear("diagonal", "stratonovich", 2)
    with pytest.raises(ValueError, match="cannot serve sdeint_adjoint"):
        ys = torchsde.sdeint_adjoint(
            sde,
            torch.ones(2, 2, dtype=torch.float64),
            TS,
            method="gtgf",
            adjoint_method="gtgf",
            **{where: {"per_sample": True}},
        )
        ys.sum().backward()


def test_solver_step_interface():
    bm = brownian_interval(4, 1)
    solver = torchsde_methods.select("gtgf", "ito")(
        sde=torchsde._core.base_sde.ForwardSDE(OU.make_sde()),
        bm=bm,
        dt=0.1,
        adaptive=False,
        rtol=0.01,
        atol=0.001,
        dt_min=1e-5,
        options={},
    )
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)
    y1, extra = solver.step(t0, t1, OU.initial(4), ())
    assert y1.shape == (4, 1) and extra == ()
    ts = torch.tensor([0.0, 0.1], dtype=torch.float64)
    same = adaptive_sde.solve(
        OU.make_sde(), OU.initial(4), ts, bm=bm, per_sample=False, adaptive=False, dt0=0.1
    )
    torch.testing.assert_close(y1, same.ys[-1], rtol=0, atol=0)


def test_an_unsupported_torchsde_version_fails_at_import_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(torchsde, "__version__", "0.3.0")
    with pytest.raises(ImportError, match=r"torchsde >= 0.2.6 and < 0.3.*0\.3\.0"):
        adaptive_sde.register()


def _brownian_of_each_kind(batch):
    w0 = torch.zeros(batch, 1, dtype=torch.float64)
    return {
        "BrownianInterval": brownian_interval(batch, 1, seed=6),
        "BrownianTree": torchsde.BrownianTree(t0=0.0, w0=w0, t1=1.0, entropy=6, tol=1e-6),
        "BrownianPath": torchsde.BrownianPath(t0=0.0, w0=w0),
    }


@pytest.mark.parametrize("kind", ["BrownianInterval", "BrownianTree", "BrownianPath"])
def test_a_user_brownian_motion_of_each_kind_is_honoured(kind):
    batch = 100
    bm = _brownian_of_each_kind(batch)[kind]
    y0 = GBM_ITO.initial(batch)
    # rtol 5e-3 for the batch-RMS rule, as in test_two_methods_compared_on_the_same_path.
    ys = torchsde.sdeint(GBM_ITO.make_sde(), y0, TS, bm=bm, method="gtgf", rtol=5e-3, atol=5e-4)
    exact = GBM_ITO.exact(y0, bm, 0.0, 1.0)
    assert float((ys[-1] - exact).abs().mean()) < 0.01  # the solution of that very path


# -- issue 12: nothing silent ------------------------------------------------------------------

# A value of the wrong type for every option (the solve checks the ranges).
BAD_OPTION_VALUES = {
    "per_sample": "no",
    "seed": 1.5,
    "fixed_steps": "yes",
    "tolerance": 1,
    "norm": None,
    "safety": "0.9",
    "exponent": [0.9],
    "factor_min": None,
    "factor_max": "10",
    "factor_max_after_reject": "1",
    "pcoeff": None,
    "batch_error": 2,
    "dt_max": "inf",
    "max_steps": 100.0,
    "extrapolate": 1,
    "decouple_signs": "auto",
    "progress": "false",
    "sync_every": 2.0,
    "throw": 0,
    "stats_callback": 5,
}


def test_every_option_has_a_bad_value_in_the_type_test():
    assert set(BAD_OPTION_VALUES) == set(adaptive_sde._torchsde.OPTIONS)


@pytest.mark.parametrize(("key", "value"), sorted(BAD_OPTION_VALUES.items()))
def test_option_values_of_the_wrong_type_are_refused_by_name(key, value):
    # {"per_sample": "no"} turned per-sample mode on (bool("no") is True); stats_callback=5
    # failed only after the solve.
    calls = []

    class Counting(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            calls.append(1)
            return -y

        def g(self, t, y):
            return 0.1 * y

    with pytest.raises(TypeError, match=rf"options\['{key}'\] must be"):
        torchsde.sdeint(Counting(), GBM_ITO.initial(2), TS, method="gtgf", options={key: value})
    assert len(calls) <= 1  # refused before the solve (torchsde's contract check calls f once)


@pytest.mark.parametrize("seed", [2**64, -1])
def test_an_out_of_range_seed_option_is_refused(seed):
    with pytest.raises(ValueError, match=r"options\['seed'\] must be an integer in \[0, 2\*\*64\)"):
        torchsde.sdeint(
            GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, method="gtgf", options={"seed": seed}
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": 0.0}, r"^dt must be a finite number > 0"),
        ({"dt": -0.1}, r"^dt must be a finite number > 0"),
        ({"dt": float("nan")}, r"^dt must be a finite number > 0"),
        ({"dt_min": -1.0}, r"^dt_min must be a finite number >= 0"),
    ],
)
def test_sdeint_arguments_are_named_as_sdeint_names_them(kwargs, match):
    # dt=0 was reported as "dt0 ...", a name sdeint does not have.
    with pytest.raises(ValueError, match=match):
        torchsde.sdeint(GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, method="gtgf", **kwargs)


@pytest.mark.parametrize(
    "state",
    [(torch.zeros(2, dtype=torch.float64),), (torch.ones(3, dtype=torch.float64),)],
    ids=["zero-steps", "wrong-batch"],
)
def test_a_bad_extra_solver_state_is_named(state):
    with pytest.raises(ValueError, match=r"extra_solver_state\[0\] must"):
        torchsde.sdeint(
            GBM_ITO.make_sde(),
            GBM_ITO.initial(2),
            TS,
            method="gtgf",
            extra_solver_state=state,
        )


def test_a_brownian_interval_shorter_than_ts_is_refused():
    # torchsde only warns and clamps the queries: the path then stops moving at t1.
    bm = brownian_interval(4, 1, t1=0.5)
    with pytest.raises(ValueError, match=r"bm covers the times \[0, 0\.5\], but ts spans \[0, 1\]"):
        torchsde.sdeint(GBM_ITO.make_sde(), GBM_ITO.initial(4), TS, bm=bm, method="gtgf")
    later = brownian_interval(4, 1, t0=0.2, t1=1.0)
    with pytest.raises(ValueError, match=r"bm covers the times \[0\.2, 1\]"):
        adaptive_sde.solve(GBM_ITO.make_sde(), GBM_ITO.initial(4), TS, bm=later, per_sample=False)


def test_the_per_sample_hint_says_how_to_turn_the_option_off():
    class FloatOfTime(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -float(t) * y

        def g(self, t, y):
            return 0.1 * y

    with pytest.raises((TypeError, ValueError, RuntimeError), match="t is a column") as info:
        torchsde.sdeint(
            FloatOfTime(), GBM_ITO.initial(4), TS, method="gtgf", options={"per_sample": True}
        )
    assert "drop options={'per_sample': True}" in str(info.value)


def _ito_sde(noise_type):
    sde = Linear(noise_type, "ito", 1 if noise_type == "scalar" else 2)
    return sde, sde.b.shape[1]


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "general"])
def test_the_solution_is_a_function_of_the_given_path(noise_type):
    # Roberts' signs were drawn from PyTorch's global generator: the same bm gave another
    # answer on every call (4.4e-3 apart on a GBM at rtol 1e-2).
    sde, m = _ito_sde(noise_type)
    y0 = torch.ones(32, 2, dtype=torch.float64)
    bm = brownian_interval(32, m, seed=11)
    kwargs = {"bm": bm, "method": "gtgf", "rtol": 1e-2, "atol": 1e-3}
    first = torchsde.sdeint(sde, y0, TS, **kwargs)
    torch.manual_seed(123)  # the global generator must not matter
    again = torchsde.sdeint(sde, y0, TS, **kwargs)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    other = torchsde.sdeint(sde, y0, TS, **{**kwargs, "bm": brownian_interval(32, m, seed=12)})
    assert not torch.equal(other, first)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "general"])
def test_sdeint_adjoint_forward_pass_equals_sdeint(noise_type):
    # torchsde's own test_adjoint.py::test_against_sdeint, which failed for gtgf.
    sde, m = _ito_sde(noise_type)
    y0 = torch.ones(16, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    bm = brownian_interval(16, m, seed=4)
    kwargs = {"bm": bm, "method": "gtgf", "rtol": 1e-2, "atol": 1e-3}
    ys = torchsde.sdeint(sde, y0, ts, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns about Itô adjoints being slow
        ys_adj = torchsde.sdeint_adjoint(sde, y0, ts, adjoint_method="gtgf", **kwargs)
    torch.testing.assert_close(ys_adj, ys, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["BrownianInterval", "BrownianTree", "BrownianPath"])
def test_every_kind_of_torchsde_path_seeds_the_signs_deterministically(kind):
    batch = 16
    bm = _brownian_of_each_kind(batch)[kind]
    y0 = GBM_ITO.initial(batch)
    kwargs = {"bm": bm, "method": "gtgf", "rtol": 1e-2, "atol": 1e-3}
    first = torchsde.sdeint(GBM_ITO.make_sde(), y0, TS, **kwargs)
    again = torchsde.sdeint(GBM_ITO.make_sde(), y0, TS, **kwargs)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_successive_single_steps_draw_independent_signs(monkeypatch):
    # Each step() is a solve of its own whose sign counters start at zero: with one seed for
    # every step (the path's, or options' seed), every step would draw the same signs.
    seeds = []
    original = adaptive_sde._integrate.RobertsSigns

    def recording(seed, *args, **kwargs):
        seeds.append(seed)
        return original(seed, *args, **kwargs)

    monkeypatch.setattr(adaptive_sde._integrate, "RobertsSigns", recording)
    for options in ({}, {"seed": 5}):
        solver = torchsde_methods.select("gtgf", "ito")(
            sde=torchsde._core.base_sde.ForwardSDE(GBM_ITO.make_sde()),
            bm=brownian_interval(4, 1),
            dt=0.1,
            adaptive=False,
            rtol=0.01,
            atol=0.001,
            dt_min=1e-5,
            options=options,
        )
        y = GBM_ITO.initial(4)
        times = [torch.tensor(t, dtype=torch.float64) for t in (0.0, 0.1, 0.2)]
        first = solver.step(times[0], times[1], y, ())[0]
        solver.step(times[1], times[2], first, ())
        again = solver.step(times[0], times[1], y, ())[0]
        torch.testing.assert_close(again, first, rtol=0, atol=0)  # a repeated step repeats
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]
    assert seeds[3] != seeds[4] and seeds[3] == seeds[5]
