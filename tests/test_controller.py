"""The step-size controller: tolerance forms, norms, decisions, bounds."""

from __future__ import annotations

import math

import pytest
import torch

from adaptive_sde import StepController


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
    err = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
    y_next = torch.tensor([[1.0], [math.nan]], dtype=torch.float64)
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
