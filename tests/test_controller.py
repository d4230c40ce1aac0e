"""The step-size controller: tolerance forms, norms, decisions, bounds."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torchsde

import adaptive_sde
from adaptive_sde import ConstantStepSize, StepController
from adaptive_sde._bench.problems import GBM_ITO, OU
from adaptive_sde._controller import Attempt
from adaptive_sde._options import CONTROLLER, PER_SAMPLE_DEFAULTS


def _ratio(controller, error, y=None, y_next=None, y_em=None, y_em_prev=None):
    n, d = error.shape
    ones = torch.ones(n, d, dtype=torch.float64)
    return controller.error_ratio(
        ones if y is None else y,
        ones if y_next is None else y_next,
        ones if y_em is None else y_em,
        ones if y_em_prev is None else y_em_prev,
        error,
    )


def test_paper_tolerance_is_the_max_of_absolute_and_relative():
    c = StepController(0.1, 0.01)  # paper form
    err = torch.tensor([[0.05]], dtype=torch.float64)
    # delta = max(0.01, 0.1 * max(|2|, |3|)) = 0.3
    e = _ratio(
        c, err, y_em=torch.tensor([[3.0]]).double(), y_em_prev=torch.tensor([[-2.0]]).double()
    )
    assert float(e) == pytest.approx(0.05 / 0.3)
    # Near zero the absolute tolerance takes over.
    e = _ratio(c, err, y_em=torch.zeros(1, 1).double(), y_em_prev=torch.zeros(1, 1).double())
    assert float(e) == pytest.approx(5.0)


def test_conventional_tolerance_is_atol_plus_rtol_times_the_larger_state():
    c = StepController(0.1, 0.01, tolerance="conventional")
    err = torch.tensor([[0.05]], dtype=torch.float64)
    e = _ratio(c, err, y=torch.tensor([[1.0]]).double(), y_next=torch.tensor([[-4.0]]).double())
    assert float(e) == pytest.approx(0.05 / (0.01 + 0.4))


@pytest.mark.parametrize(
    ("norm", "expected"),
    [("rms", math.sqrt((1 + 4 + 0 + 9) / 4)), ("max", 3.0), ("l2", math.sqrt(14))],
)
def test_norms(norm, expected):
    c = StepController(0.0 + 1e-12, 1.0, norm=norm)
    err = torch.tensor([[1.0, -2.0, 0.0, 3.0]], dtype=torch.float64)
    zeros = torch.zeros_like(err)
    assert float(_ratio(c, err, y_em=zeros, y_em_prev=zeros)) == pytest.approx(expected, rel=1e-9)


def test_rms_norm_is_independent_of_dimension():
    c = StepController(1e-12, 1.0)
    for d in (1, 10, 1000):
        err = torch.full((1, d), 0.5, dtype=torch.float64)
        zeros = torch.zeros_like(err)
        assert float(_ratio(c, err, y_em=zeros, y_em_prev=zeros)) == pytest.approx(0.5)


def test_decisions_follow_the_error_with_safety_exponent_and_clamps():
    c = StepController(0.1, 0.01, safety=0.9, exponent=0.9, factor_min=0.2, factor_max=10)
    e = torch.tensor([0.5, 1.0, 2.0, 1e-9, 0.0, 1e6], dtype=torch.float64)
    accept, factor = c.decide(e)
    assert accept.tolist() == [True, True, False, True, True, False]
    assert float(factor[0]) == pytest.approx(0.9 * 0.5**-0.9)
    assert float(factor[1]) == pytest.approx(0.9)
    assert float(factor[2]) == pytest.approx(0.9 * 2**-0.9)
    assert float(factor[3]) == 10.0 and float(factor[4]) == 10.0  # E = 0: finite growth
    assert float(factor[5]) == 0.2


def test_non_finite_proposals_are_rejected_with_a_strong_shrink():
    c = StepController(0.1, 0.01)
    # The stepper's error is y_hi - y_em: not finite wherever a proposal is not.
    y_next = torch.tensor([[1.0], [math.nan]], dtype=torch.float64)
    err = y_next - torch.ones_like(y_next)
    e = _ratio(c, err, y_next=y_next)
    accept, factor = c.decide(e)
    assert accept.tolist() == [True, False]
    assert float(factor[1]) == c.nonfinite_factor == 0.1


def test_shared_decisions_need_every_sample_to_pass():
    c = StepController(0.1, 0.01, shared=True)
    accept, factor = c.decide(torch.tensor([0.2, 1.5, 0.1], dtype=torch.float64))
    assert accept.tolist() == [False, False, False]
    assert torch.all(factor == factor[0])
    accept, _ = c.decide(torch.tensor([0.2, math.nan], dtype=torch.float64))
    assert not accept.any()


def test_next_step_respects_dt_max_and_keeps_the_proposal_after_a_clipped_step():
    c = StepController(0.1, 0.01, dt_max=0.5)
    h_taken = torch.tensor([0.01, 0.1, 0.1], dtype=torch.float64)
    h_prop = torch.tensor([0.2, 0.1, 0.1], dtype=torch.float64)
    clipped = torch.tensor([True, False, False])
    accept = torch.tensor([True, True, False])
    factor = torch.tensor([2.0, 10.0, 0.5], dtype=torch.float64)
    h = c.next_step(h_taken, h_prop, clipped, accept, factor)
    assert h.tolist() == pytest.approx([0.2, 0.5, 0.05])


def test_step_floor_includes_dt_min_and_time_resolution():
    c = StepController(0.1, 0.01, dt_min=1e-3)
    assert float(c.step_floor(torch.tensor([1.0], dtype=torch.float64))) == 1e-3
    c = StepController(0.1, 0.01)
    floor = float(c.step_floor(torch.tensor([1e6], dtype=torch.float32)))
    assert floor > 1e6 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rtol": -0.1, "atol": 0.1}, "rtol"),
        ({"rtol": 0.1, "atol": -1.0}, "atol"),
        ({"rtol": 0.0, "atol": 0.0}, "both be zero"),
        ({"rtol": math.nan, "atol": 0.1}, "rtol"),
        ({"rtol": 1.5, "atol": 0.1}, r"rtol must be a number in \[0, 1\]"),
        ({"rtol": 0.1, "atol": 0.1, "norm": "l1"}, "norm"),
        ({"rtol": 0.1, "atol": 0.1, "tolerance": "mixed"}, "tolerance"),
        ({"rtol": 0.1, "atol": 0.1, "safety": 0.0}, "safety"),
        ({"rtol": 0.1, "atol": 0.1, "exponent": -1.0}, "exponent"),
        ({"rtol": 0.1, "atol": 0.1, "factor_max": 0.5}, "factor_max"),
        ({"rtol": 0.1, "atol": 0.1, "dt_min": 1.0, "dt_max": 0.5}, "dt_max"),
    ],
)
def test_bad_settings_raise_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepController(**kwargs)


def test_non_numeric_tolerance_is_a_type_error():
    with pytest.raises(TypeError, match="rtol"):
        StepController("0.1", 0.1)  # type: ignore[arg-type]


def test_the_isotropic_tolerance_does_not_depend_on_the_axes():
    gen = torch.Generator().manual_seed(0)
    y, y_em, y_prev, error = (
        torch.randn(6, 2, generator=gen, dtype=torch.float64) for _ in range(4)
    )
    angle = torch.tensor(0.7, dtype=torch.float64)
    rotation = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    )
    for form, invariant in (("isotropic", True), ("paper", False)):
        controller = StepController(0.1, 1e-3, tolerance=form)
        e = controller.error_ratio(y, y_em, y_em, y_prev, error)
        turned = controller.error_ratio(
            y @ rotation.T,
            y_em @ rotation.T,
            y_em @ rotation.T,
            y_prev @ rotation.T,
            error @ rotation.T,
        )
        assert torch.allclose(e, turned, rtol=1e-12) == invariant


# -- the controller as an object (issue 11) ------------------------------------------------------

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def _attempt(error, *, h=0.1, live=None, veto=None, y=None):
    n, d = error.shape
    ones = torch.ones(n, d, dtype=torch.float64) if y is None else y
    hs = torch.full((n,), h, dtype=torch.float64)
    return Attempt(
        t=torch.zeros(n, dtype=torch.float64),
        h=hs,
        h_taken=hs,
        clipped=torch.zeros(n, dtype=torch.bool),
        y=ones,
        y_next=ones,
        y_em=ones,
        error=error,
        live=torch.ones(n, dtype=torch.bool) if live is None else live,
        veto=torch.zeros(n, dtype=torch.bool) if veto is None else veto,
    )


def test_the_batch_rms_is_one_rms_over_every_element_of_the_batch():
    # torchsde's adaptive rule: sqrt(mean((error / scale)^2)) over the whole (batch, d) tensor.
    gen = torch.Generator().manual_seed(3)
    error = 0.01 * torch.rand(5, 3, generator=gen, dtype=torch.float64)
    c = StepController(0.1, 0.01, tolerance="conventional", batch_error="rms", shared=True)
    decision = c.adapt(_attempt(error), c.start(torch.ones(5, 3, dtype=torch.float64)))
    scale = 0.01 + 0.1 * 1.0
    whole = float(((error / scale) ** 2).mean().sqrt())
    expected = 0.1 * min(max(0.9 * whole**-0.9, 0.2), 10.0)
    assert decision.h_next.tolist() == pytest.approx([expected] * 5, rel=1e-12)
    assert bool(decision.accept.all()) == (whole <= 1)


def test_every_sample_must_pass_with_batch_error_max():
    error = torch.tensor([[0.001], [0.5]], dtype=torch.float64)  # ratios 0.009 and 4.5
    y0 = torch.ones(2, 1, dtype=torch.float64)
    strict = StepController(0.1, 0.01, tolerance="conventional", batch_error="max", shared=True)
    loose = StepController(0.1, 0.01, tolerance="conventional", batch_error="rms", shared=True)
    assert not strict.adapt(_attempt(error), strict.start(y0)).accept.any()
    # RMS of (0.009, 4.5) is 3.2: rejected too, but a milder shrink than the max's.
    d_loose = loose.adapt(_attempt(error), loose.start(y0))
    d_strict = strict.adapt(_attempt(error), strict.start(y0))
    assert torch.all(d_loose.h_next > d_strict.h_next)


def test_pi_control_follows_gustafsson_s_formula_and_remembers_accepted_steps_only():
    c = StepController(0.1, 0.01, exponent=0.7, pcoeff=0.4, tolerance="conventional")
    y0 = torch.ones(1, 1, dtype=torch.float64)
    state = c.start(y0)
    scale = 0.01 + 0.1
    first = c.adapt(_attempt(torch.tensor([[0.5 * scale]], dtype=torch.float64)), state)
    assert bool(first.accept[0])
    # E_prev starts at 1: factor = 0.9 * 0.5^-0.7 * (1 / 0.5)^0.4.
    assert float(first.h_next[0]) == pytest.approx(0.1 * 0.9 * 0.5**-0.7 * 2**0.4)
    rejected = c.adapt(_attempt(torch.tensor([[3.0 * scale]], dtype=torch.float64)), first.state)
    assert not bool(rejected.accept[0])
    assert float(rejected.state["e_prev"][0]) == pytest.approx(0.5)  # not the rejected 3.0
    assert float(rejected.h_next[0]) == pytest.approx(0.1 * 0.9 * 3.0**-0.7 * (0.5 / 3.0) ** 0.4)


def test_growth_after_a_rejection_is_capped():
    c = StepController(0.1, 0.01, factor_max_after_reject=1.0, tolerance="conventional")
    y0 = torch.ones(1, 1, dtype=torch.float64)
    scale = 0.11
    rejected = c.adapt(_attempt(torch.tensor([[5 * scale]], dtype=torch.float64)), c.start(y0))
    tiny = torch.tensor([[1e-6 * scale]], dtype=torch.float64)
    after = c.adapt(_attempt(tiny), rejected.state)
    assert bool(after.accept[0]) and float(after.h_next[0]) == pytest.approx(0.1)
    again = c.adapt(_attempt(tiny), after.state)
    assert float(again.h_next[0]) == pytest.approx(1.0)  # factor_max once a step passed


def test_vetoed_and_frozen_rows_are_never_accepted_and_keep_their_state():
    c = StepController(0.1, 0.01, pcoeff=0.2)  # a controller with a history
    y0 = torch.ones(3, 1, dtype=torch.float64)
    error = torch.zeros(3, 1, dtype=torch.float64)
    live = torch.tensor([True, True, False])
    veto = torch.tensor([False, True, False])
    state = c.start(y0)
    d = c.adapt(_attempt(error, live=live, veto=veto), state)
    assert d.accept.tolist() == [True, False, False]
    assert d.state["rejected_last"].tolist() == [False, True, False]


def test_constant_step_size_accepts_every_finite_step_and_ends_a_non_finite_one():
    c = ConstantStepSize()
    y = torch.tensor([[1.0], [math.nan]], dtype=torch.float64)
    error = torch.tensor([[1e9], [0.0]], dtype=torch.float64) + 0.0 * y  # NaN where y is
    d = c.adapt(_attempt(error, y=y), c.start(y))
    assert d.accept.tolist() == [True, False]
    assert d.h_next.tolist() == [0.1, 0.1]
    assert d.ended.tolist() == [-1, int(adaptive_sde.Result.NONFINITE)]


def test_adaptive_false_is_the_constant_controller():
    y0 = GBM_ITO.initial(8)
    kw = {"seed": 3, "dt0": 0.05}
    fixed = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, adaptive=False, **kw)
    constant = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, controller=ConstantStepSize(), **kw)
    assert torch.equal(fixed.ys, constant.ys)
    assert torch.all(constant.stats.num_steps == 20) and not constant.stats.num_rejected.any()


def test_a_controller_object_gives_the_same_solve_as_its_options():
    y0 = GBM_ITO.initial(16)
    options = {"rtol": 0.05, "atol": 0.005, "tolerance": "conventional", "pcoeff": 0.3}
    by_options = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=1, **options)
    # solve builds a per-sample controller with the per-sample growth limits; so does this one.
    controller = StepController(**options, defaults=PER_SAMPLE_DEFAULTS)
    by_object = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=1, controller=controller)
    assert torch.equal(by_options.ys, by_object.ys)
    assert torch.equal(by_options.stats.nfe, by_object.stats.nfe)


def test_a_controller_and_its_options_together_are_refused_by_name():
    with pytest.raises(ValueError, match="controller= and rtol, safety"):
        adaptive_sde.solve(
            GBM_ITO.make_sde(),
            GBM_ITO.initial(2),
            TS,
            controller=StepController(),
            rtol=0.1,
            safety=0.8,
        )
    with pytest.raises(TypeError, match="controller must be"):
        adaptive_sde.solve(GBM_ITO.make_sde(), GBM_ITO.initial(2), TS, controller="pi")


def test_the_controller_state_follows_its_sample_when_rows_finish():
    # PI history and the post-rejection cap are per sample: a sample solved alone must equal
    # its row of the batch, while the other rows finish at other passes.
    kw = {"seed": 7, "rtol": 0.05, "pcoeff": 0.3, "factor_max_after_reject": 1.5}
    y0 = GBM_ITO.initial(12)
    batch = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, **kw)
    assert int(batch.stats.num_steps.min()) < int(batch.stats.num_steps.max())
    for i in (0, 5, 11):
        alone = adaptive_sde.solve(
            GBM_ITO.make_sde(), y0[i : i + 1], TS, sample_ids=torch.tensor([i]), **kw
        )
        torch.testing.assert_close(alone.ys[:, 0], batch.ys[:, i], rtol=1e-12, atol=0)
        assert int(alone.stats.nfe[0]) == int(batch.stats.nfe[i])


def test_every_controller_option_has_one_default_in_the_table():
    c = StepController()
    for name, option in CONTROLLER.items():
        value = getattr(c, name)
        if name == "accept_at_dt_min":
            assert value is False
        elif name == "factor_max_after_reject":
            assert value == min(option.default, c.factor_max)
        else:
            assert value == option.default, name


def test_sdeint_at_torchsde_s_default_tolerances_warns_once_with_the_cost(monkeypatch):
    monkeypatch.setattr(adaptive_sde._torchsde, "_warned_strict_defaults", False)
    y0 = OU.initial(4)
    ts = torch.tensor([0.0, 0.2], dtype=torch.float64)
    with pytest.warns(
        UserWarning, match=r"default tolerances rtol=1e-5, atol=1e-4: \d+ evaluations"
    ):
        torchsde.sdeint(OU.make_sde(), y0, ts, method="gtgf", dt=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torchsde.sdeint(OU.make_sde(), y0, ts, method="gtgf", dt=0.01)  # once only
        torchsde.sdeint(OU.make_sde(), y0, ts, method="gtgf", dt=0.01, rtol=1e-2, atol=1e-3)


def test_sdeint_offers_every_sample_passes_as_an_option():
    y0 = GBM_ITO.initial(64)
    ts = TS
    stats = []
    for rule in ("rms", "max"):
        torchsde.sdeint(
            GBM_ITO.make_sde(),
            y0,
            ts,
            method="gtgf",
            dt=0.01,
            rtol=0.01,
            atol=0.001,
            options={"seed": 0, "batch_error": rule, "stats_callback": stats.append},
        )
    rms, every = stats
    # The RMS over the batch is below its largest row's ratio: fewer, larger steps.
    assert int(rms.num_steps[0]) < int(every.num_steps[0])


def test_per_sample_steps_take_the_per_sample_growth_limits():
    y0 = GBM_ITO.initial(16)
    default = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=2)
    explicit = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=2, **PER_SAMPLE_DEFAULTS)
    assert torch.equal(default.ys, explicit.ys)
    assert torch.equal(default.stats.nfe, explicit.stats.nfe)
    tenfold = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=2, factor_max=10.0)
    assert not torch.equal(default.stats.nfe, tenfold.stats.nfe)
    # A shared grid keeps the table's clamp: the batch's error is averaged, not one draw.
    shared = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=2, per_sample=False)
    same = adaptive_sde.solve(GBM_ITO.make_sde(), y0, TS, seed=2, per_sample=False, factor_max=10.0)
    assert torch.equal(shared.ys, same.ys)
