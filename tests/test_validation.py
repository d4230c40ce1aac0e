"""Bad input gets an error that names the argument and what was expected."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import adaptive_sde
from tests.problems import GBM_ITO, OU

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
