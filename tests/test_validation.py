"""Bad input gets an error that names the argument and what was expected."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import adaptive_sde
from adaptive_sde._bench.problems import GBM_ITO, OU

TS = torch.tensor([0.0, 1.0], dtype=torch.float64)
Y0 = torch.ones(4, 1, dtype=torch.float64)


def solve(sde=None, y0=Y0, ts=TS, **kwargs):
    return adaptive_sde.solve(sde or GBM_ITO.make_sde(), y0, ts, **kwargs)


class Custom(nn.Module):
    def __init__(self, noise_type="diagonal", sde_type="ito", g_shape=None, f_shape=None):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.g_shape, self.f_shape = g_shape, f_shape

    def f(self, t, y):
        return torch.zeros(self.f_shape or y.shape, dtype=y.dtype)

    def g(self, t, y):
        return torch.ones(self.g_shape or y.shape, dtype=y.dtype)


def test_y0_must_be_a_tensor():
    with pytest.raises(TypeError, match=r"y0 must be a torch.Tensor"):
        solve(y0=[[1.0]])


def test_y0_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"y0 must have shape \(batch, d\)"):
        solve(y0=torch.ones(4, dtype=torch.float64))


def test_y0_must_be_floating_point():
    with pytest.raises(TypeError, match="y0 must be a floating-point"):
        solve(y0=torch.ones(4, 1, dtype=torch.int64))


def test_y0_must_be_finite():
    y0 = Y0.clone()
    y0[2, 0] = math.inf
    with pytest.raises(ValueError, match=r"y0 must be finite; rows \[2\]"):
        solve(y0=y0)


def test_ts_must_be_strictly_increasing():
    with pytest.raises(ValueError, match="ts must be strictly increasing"):
        solve(ts=torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="ts must be strictly increasing"):
        solve(ts=torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_ts_must_be_a_floating_point_vector_of_two_or_more_times():
    with pytest.raises(TypeError, match="ts must be a floating-point"):
        solve(ts=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ts must be 1-D with at least two times"):
        solve(ts=torch.tensor([0.0], dtype=torch.float64))
    with pytest.raises(TypeError, match=r"ts must be a 1-D torch.Tensor"):
        solve(ts=[0.0, 1.0])
    with pytest.raises(ValueError, match="ts must be finite"):
        solve(ts=torch.tensor([0.0, math.nan], dtype=torch.float64))


def test_ts_must_be_on_the_device_of_y0():
    with pytest.raises(ValueError, match="ts must be on y0's device"):
        solve(ts=TS.to("meta"))


def test_unknown_noise_type():
    with pytest.raises(ValueError, match=r"sde.noise_type must be one of"):
        solve(Custom(noise_type="diag"))


def test_unknown_sde_type():
    with pytest.raises(ValueError, match=r"sde.sde_type must be one of"):
        solve(Custom(sde_type="ito-ish"))


def test_sde_without_drift_or_diffusion():
    class NoDiffusion(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return y

    with pytest.raises(TypeError, match="sde must define a diffusion"):
        solve(NoDiffusion())


def test_drift_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"drift f\(t, y\) must return a tensor of shape \(4, 1\)"):
        solve(Custom(f_shape=(4, 2)))


@pytest.mark.parametrize(
    ("noise_type", "g_shape", "expected"),
    [
        ("diagonal", (4, 1, 1), r"\(4, 1\)"),
        ("scalar", (4, 1, 2), r"\(4, 1, 1\)"),
        ("general", (4, 1), r"\(4, 1, "),
        ("additive", (4, 2, 3), r"\(4, 1, "),
    ],
)
def test_diffusion_of_the_wrong_shape_for_the_noise_type(noise_type, g_shape, expected):
    with pytest.raises(ValueError, match=rf"{noise_type} noise must return shape {expected}"):
        solve(Custom(noise_type=noise_type, g_shape=g_shape))


def test_g_prod_only_sde_needs_its_brownian_size():
    class GProd(nn.Module):
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return y

        def g_prod(self, t, y, v):
            return v.sum(1, keepdim=True) * y

    with pytest.raises(ValueError, match="brownian_size"):
        solve(GProd())
    sol = solve(GProd(), brownian_size=2, seed=0, rtol=0.1)
    assert torch.isfinite(sol.ys).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rtol": -0.01}, ValueError, "rtol"),
        ({"atol": -1.0}, ValueError, "atol"),
        ({"rtol": 0.0, "atol": 0.0}, ValueError, "both be zero"),
        ({"dt0": 0.0}, ValueError, "dt0 must be a finite number > 0"),
        ({"dt0": -0.1}, ValueError, "dt0"),
        ({"max_steps": 0}, ValueError, "max_steps must be a positive integer"),
        ({"norm": "linf"}, ValueError, "norm must be one of"),
        ({"tolerance": "diffrax"}, ValueError, "tolerance must be one of"),
        ({"bm": object()}, TypeError, "bm must be None"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        solve(**kwargs)


def test_register_of_the_wrong_size():
    bm = adaptive_sde.BrownianRegister(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="bm must have batch_size=4"):
        solve(bm=bm)
    bm = adaptive_sde.BrownianRegister(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="diagonal noise needs a Brownian motion of size 1"):
        solve(bm=bm)


def test_additive_sde_gets_its_brownian_size_from_g():
    sol = adaptive_sde.solve(OU.make_sde(), OU.initial(3), TS, seed=0)
    assert sol.ys.shape == (2, 3, 1)


# -- issue 12: nothing silent ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, 2**70, -1])
def test_a_seed_outside_64_bits_is_refused(seed):
    # The seed was masked to 64 bits: 2**64 gave seed 0's paths, -1 those of 2**64 - 1.
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        solve(seed=seed)


def test_the_largest_seed_is_accepted_and_differs_from_seed_zero():
    top = solve(seed=2**64 - 1, rtol=0.1)
    zero = solve(seed=0, rtol=0.1)
    assert not torch.equal(top.ys, zero.ys)


@pytest.mark.parametrize(
    "switch", ["per_sample", "adaptive", "extrapolate", "throw", "progress", "accept_at_dt_min"]
)
@pytest.mark.parametrize("value", ["no", 1])
def test_switches_must_be_bools_not_truthy_stand_ins(switch, value):
    with pytest.raises(TypeError, match=rf"{switch} must be True or False, got"):
        solve(**{switch: value})


@pytest.mark.parametrize("switch", ["extrapolate", "throw", "progress", "accept_at_dt_min"])
def test_a_switch_given_as_none_takes_the_option_table_s_default(switch):
    from adaptive_sde._options import OPTIONS

    default = OPTIONS[switch].default
    assert isinstance(default, bool)
    assert torch.equal(solve(seed=0, **{switch: None}).ys, solve(seed=0, **{switch: default}).ys)


@pytest.mark.parametrize("switch", ["per_sample", "adaptive"])
def test_the_solve_s_own_switches_refuse_none(switch):
    with pytest.raises(TypeError, match=rf"{switch} must be True or False, got"):
        solve(**{switch: None})


def test_decouple_signs_takes_a_bool_or_none():
    with pytest.raises(TypeError, match="decouple_signs must be True, False or None"):
        solve(decouple_signs="auto")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_times_are_refused_up_front(dtype):
    # They made every step "too small" (float16 resolves about 1e-3 near 1).
    with pytest.raises(TypeError, match=r"ts must be float32 or float64.*ts\.float\(\)"):
        solve(y0=Y0.float(), ts=TS.to(dtype))


def test_sample_ids_must_be_an_integer_tensor_of_the_batch():
    with pytest.raises(TypeError, match="sample_ids must be an integer tensor"):
        solve(sample_ids=[0, 1, 2, 3])
    with pytest.raises(TypeError, match="sample_ids must be an integer tensor"):
        solve(sample_ids=torch.zeros(4))
    with pytest.raises(ValueError, match=r"sample_ids must have shape \(4,\)"):
        solve(sample_ids=torch.arange(3))


def test_validators_name_the_callers_argument():
    from adaptive_sde._brownian import resolve_seed
    from adaptive_sde._validation import (
        check_bool,
        check_callable,
        check_count,
        check_positive,
        check_real,
        check_seed,
        check_state,
        check_times,
    )

    with pytest.raises(ValueError, match="x_T must be finite"):
        check_state(torch.tensor([[math.nan]]), name="x_T")
    with pytest.raises(TypeError, match="x_T must be a floating-point tensor"):
        check_state(torch.ones(2, 2, dtype=torch.int64), name="x_T")
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        check_times(torch.tensor([1.0, 0.0]), torch.ones(1, 1), name="times")
    with pytest.raises(ValueError, match="times must be on x's device"):
        check_times(TS.to("meta"), Y0, name="times", state_name="x")
    with pytest.raises(ValueError, match="h_init must be a finite number > 0"):
        check_positive("h_init", 0.0)
    with pytest.raises(ValueError, match="h_init must be a finite number > 0"):
        check_positive(name="h_init", value=-1.0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        check_count("steps", 0)
    with pytest.raises(TypeError, match="denoise must be True or False"):
        check_bool("denoise", "yes")
    with pytest.raises(TypeError, match="callback must be callable"):
        check_callable("callback", 5)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        check_real("eps", -1.0, low=0.0)
    with pytest.raises(ValueError, match=r"generator must be an integer in \[0, 2\*\*64\)"):
        check_seed(2**64, name="generator")
    with pytest.raises(TypeError, match=r"generator must be an int, a torch\.Generator or None"):
        resolve_seed("0", name="generator")
    assert resolve_seed(7) == 7 and check_state(Y0) is Y0  # the defaults keep working


class OtherDtype(nn.Module):
    """Returns float32 from one of f / g whatever y's dtype."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, which):
        super().__init__()
        self.which = which

    def f(self, t, y):
        return -y.float() if self.which == "f" else -y

    def g(self, t, y):
        return 0.1 * (y.float() if self.which == "g" else y)


@pytest.mark.parametrize(
    ("which", "what"), [("f", r"drift f\(t, y\)"), ("g", r"diffusion g\(t, y\)")]
)
def test_an_sde_answering_in_another_dtype_is_named_up_front(which, what):
    # It used to fail steps later, deep inside an index_put.
    with pytest.raises(TypeError, match=rf"{what} returned dtype torch.float32, but y is"):
        solve(OtherDtype(which), seed=0)


def test_g_prod_answering_in_another_dtype_is_named():
    class GProd(nn.Module):
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return -y

        def g_prod(self, t, y, v):
            return (v.sum(1, keepdim=True) * y).float()

    with pytest.raises(TypeError, match=r"g_prod\(t, y, v\) returned dtype torch.float32"):
        solve(GProd(), brownian_size=2, seed=0)


class FloatOfTime(nn.Module):
    """A torchsde-style SDE that needs a 0-d t: float(t) fails on a column."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -float(t) * y

    def g(self, t, y):
        return 0.1 * y


def test_code_that_needs_a_scalar_time_gets_a_per_sample_hint():
    with pytest.raises((TypeError, ValueError, RuntimeError)) as info:
        solve(FloatOfTime(), seed=0)
    message = str(info.value)
    assert "t is a column of shape (4, 1)" in message and "per_sample=False" in message
    assert info.value.__cause__ is not None  # the user's own error stays attached
    sol = solve(FloatOfTime(), seed=0, per_sample=False)  # as the hint says
    assert torch.isfinite(sol.ys).all()


def test_errors_after_the_first_evaluation_are_the_users_own():
    class FailsLater(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.calls = 0

        def f(self, t, y):
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("model broke")
            return -y

        def g(self, t, y):
            return 0.1 * y

    with pytest.raises(RuntimeError, match=r"^model broke$"):
        solve(FailsLater(), seed=0)


class DeclaredAdditive(nn.Module):
    """noise_type "additive" with a g of shape (batch, d, m); ``depends_on_y`` breaks the
    declaration (a geometric Brownian motion), the other g depends on time only."""

    noise_type, sde_type = "additive", "ito"

    def __init__(self, depends_on_y):
        super().__init__()
        self.depends_on_y = depends_on_y

    def f(self, t, y):
        return 0.1 * y

    def g(self, t, y):
        if self.depends_on_y:
            return 0.5 * y[:, :, None]
        scale = 0.5 + torch.sin(3 * t) * torch.ones_like(y)  # time-dependent, y-free
        return scale[:, :, None]


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_additive_noise_declared_for_a_g_that_depends_on_y_is_an_error(per_sample, dtype):
    # It returned the Stratonovich solution of an Itô SDE as a success.
    y0 = torch.ones(16, 1, dtype=dtype)
    with pytest.raises(ValueError, match=r"noise_type is 'additive', but .*g\(t, y\) depends on y"):
        solve(DeclaredAdditive(True), y0=y0, ts=TS.to(dtype), seed=0, per_sample=per_sample)


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("sync_every", [1, 4])
def test_additive_noise_that_depends_on_time_only_passes_the_watch(per_sample, sync_every):
    y0 = torch.ones(16, 1)
    sol = solve(
        DeclaredAdditive(False),
        y0=y0,
        ts=TS.float(),
        seed=0,
        rtol=1e-3,
        per_sample=per_sample,
        sync_every=sync_every,
    )
    assert sol.stats.success and torch.isfinite(sol.ys).all()
