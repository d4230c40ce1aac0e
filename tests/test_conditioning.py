"""Diffusion users' conventions (issue 13): sampling without autograd, model keyword arguments
that follow the rows evaluated, classifier-free guidance in one batched call, and diffusers'
schedules (the scheduler's own alpha-bar, zero terminal SNR, learned variance, clipping)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from adaptive_sde.diffusion import (
    VPSDE,
    DiscreteVPSDE,
    classifier_free_guidance,
    ddpm_schedule,
    sample,
    sample_euler_maruyama,
    score_from_data,
    score_from_diffusers,
    score_from_noise,
)

diffusers = pytest.importorskip("diffusers")  # the test extra installs it


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and shared CI machines most predictably)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gaussian_data(mean: torch.Tensor, std: float, sde: Any, x: torch.Tensor, t: torch.Tensor):
    """E[x_0 | x_t] for data N(mean, std^2 I), one mean per row."""
    alpha = sde.alpha(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    sigma = sde.sigma(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    gain = alpha * std**2 / (alpha**2 * std**2 + sigma**2)
    return mean + gain * (x - alpha * mean)


# -- 1. no autograd unless asked ----


def test_sampling_keeps_no_graph_unless_grad_is_asked_for():
    sde = VPSDE()
    weight = torch.nn.Parameter(torch.tensor(0.3))
    modes: list[bool] = []

    def model(x, t):
        modes.append(torch.is_grad_enabled())
        return _gaussian_data(weight * torch.ones_like(x), 0.5, sde, x, t)

    score = score_from_data(model, sde)
    for space in ("snr", "x"):
        modes.clear()
        x, _ = sample(score, sde, (4, 3), seed=0, space=space)
        assert not any(modes) and not x.requires_grad
        modes.clear()
        x, _ = sample(score, sde, (4, 3), seed=0, space=space, grad=True)
        assert all(modes) and x.requires_grad
        x.sum().backward()  # the samples can be differentiated in the parameters
        assert weight.grad is not None and math.isfinite(float(weight.grad))
        weight.grad = None
    modes.clear()
    y, _ = sample_euler_maruyama(score, sde, (4, 3), steps=20, seed=0)
    assert not any(modes) and not y.requires_grad
    y, _ = sample_euler_maruyama(score, sde, (4, 3), steps=20, seed=0, grad=True)
    assert y.requires_grad
    with pytest.raises(TypeError, match="grad"):
        sample(score, sde, (4, 3), grad="yes")  # type: ignore[arg-type]


# -- 2. model_kwargs follow the rows ----


def _conditioned_model(sde: Any, seen: list[int]):
    """A data model conditioned on a per-row mean ``mean`` (B, D) and a shared ``std``."""

    def model(x, t, *, mean, std):
        assert mean.shape == x.shape, "the conditioning must follow the rows evaluated"
        seen.append(x.shape[0])
        return _gaussian_data(mean, std, sde, x, t)

    return model


@pytest.mark.parametrize("space", ["snr", "x"])
def test_model_kwargs_follow_the_rows_so_sample_i_alone_equals_row_i(space):
    sde = VPSDE()
    seen: list[int] = []
    score = score_from_data(_conditioned_model(sde, seen), sde)
    batch, d = 6, 4
    means = torch.linspace(-1, 1, batch, dtype=torch.float64)[:, None].expand(batch, d).clone()
    kwargs = {"mean": means, "std": 0.1}
    x, _ = sample(
        score, sde, (batch, d), seed=3, model_kwargs=kwargs, space=space, dtype=torch.float64
    )
    assert min(seen) < batch, "per-sample steps evaluate subsets of the batch"
    torch.testing.assert_close(x.mean(1), means[:, 0], atol=0.2, rtol=0)
    for i in (0, 4):
        alone, _ = sample(
            score,
            sde,
            (1, d),
            seed=3,
            sample_ids=torch.tensor([i]),
            model_kwargs={"mean": means[i : i + 1], "std": 0.1},
            space=space,
            dtype=torch.float64,
        )
        torch.testing.assert_close(alone[0], x[i], rtol=1e-5, atol=1e-7)
    # Euler-Maruyama evaluates the whole batch: the kwargs pass as they are.
    y, _ = sample_euler_maruyama(score, sde, (batch, d), steps=10, model_kwargs=kwargs)
    assert y.shape == (batch, d)
    with pytest.raises(TypeError, match="model_kwargs"):
        sample(score, sde, (batch, d), model_kwargs=[means])  # type: ignore[arg-type]


def test_guidance_is_one_batched_call_of_the_guided_combination():
    calls: list[int] = []

    def model(x, t, *, label, shared):
        calls.append(x.shape[0])
        return x * label[:, None] + t[:, None] + shared

    guided = classifier_free_guidance(model, 4.0, {"label": torch.zeros(1)})
    x, t = torch.randn(3, 2), torch.rand(3)
    label = torch.tensor([1.0, 2.0, 3.0])
    out = guided(x, t, label=label, shared=0.5)
    cond, uncond = (
        model(x, t, label=label, shared=0.5),
        model(x, t, label=torch.zeros(3), shared=0.5),
    )
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))
    assert calls[0] == 6  # conditional and unconditional rows in one call
    with pytest.raises(ValueError, match="unconditional_kwargs"):
        score_from_noise(model, VPSDE(), guidance_scale=2.0)
    with pytest.raises(ValueError, match="model_kwargs does not"):
        classifier_free_guidance(model, 2.0, {"other": torch.zeros(1)})(x, t, label=label, shared=0)
    with pytest.raises(ValueError, match=r"unconditional_kwargs\['label'\]"):
        classifier_free_guidance(model, 2.0, {"label": torch.zeros(2)})(x, t, label=label, shared=0)


def _tiny_conditional_unet() -> Any:
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=4,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=4,
        attention_head_dim=2,
        norm_num_groups=4,
    ).eval()


def test_a_guided_conditional_unet_sample_alone_equals_its_row_in_the_batch():
    unet = _tiny_conditional_unet().double()
    rows: list[int] = []

    def counted(x, timestep, **kwargs):
        rows.append(x.shape[0])
        return unet(x, timestep, **kwargs)

    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    null = torch.zeros(1, 2, 4, dtype=torch.float64)
    score, sde = score_from_diffusers(
        counted, scheduler, guidance_scale=3.0, unconditional_kwargs={"encoder_hidden_states": null}
    )
    batch = 3
    prompts = torch.randn(
        batch, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    kwargs = {"encoder_hidden_states": prompts}
    x, stats = sample(
        score,
        sde,
        (batch, 1, 4, 4),
        seed=2,
        model_kwargs=kwargs,
        rtol=0.3,  # loose, but not so loose that every row takes the same steps
        dtype=torch.float64,
    )
    assert torch.isfinite(x).all()
    assert len(rows) == stats.model_calls and sum(rows) == 2 * stats.rows_evaluated
    assert min(rows) < 2 * batch  # some calls evaluated a subset, with its own prompts
    i = 1
    alone, _ = sample(
        score,
        sde,
        (1, 1, 4, 4),
        seed=2,
        sample_ids=torch.tensor([i]),
        model_kwargs={"encoder_hidden_states": prompts[i : i + 1]},
        rtol=0.3,  # loose, but not so loose that every row takes the same steps
        dtype=torch.float64,
    )
    torch.testing.assert_close(alone[0], x[i], rtol=1e-5, atol=1e-6)


# -- 4. diffusers' schedules ----


def test_score_from_diffusers_reads_a_zero_terminal_snr_schedule_and_samples_it():
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        clip_sample=False,
    )
    abar = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
    assert float(abar[-1]) == 0.0
    std = 0.5
    holder: dict[str, DiscreteVPSDE] = {}

    def exact_v(x, timestep):  # the exact v-prediction of data N(0, std^2 I)
        s = holder["sde"]
        tt = (timestep.double() + 1) / 1000.0
        alpha, sigma = s.alpha(tt)[:, None, None, None], s.sigma(tt)[:, None, None, None]
        x0 = alpha * std**2 / (alpha**2 * std**2 + sigma**2) * x
        eps = (x - alpha * x0) / sigma
        return alpha * eps - sigma * x0

    score, sde = score_from_diffusers(exact_v, scheduler)
    holder["sde"] = sde
    k = torch.tensor([0, 500, 998])
    torch.testing.assert_close(sde.alpha((k + 1).double() / 1000) ** 2, abar[k], rtol=1e-6, atol=0)
    end = torch.tensor([sde.T], dtype=torch.float64)
    assert 0 < float(sde.alpha(end) ** 2) <= 2.0**-24 * (1 + 1e-9)  # the stand-in for 0
    assert abs(sde.prior_std() - 1) < 1e-7  # the prior is N(0, I)
    lam = sde.half_log_snr(end)
    assert torch.isfinite(lam).all() and torch.isfinite(sde.beta(end)).all()
    torch.testing.assert_close(sde.time_at(lam), end)
    # A config without the scheduler object gives the same schedule (diffusers computes it in
    # float32, which loses 4e-5 near the end, where the rescaling cancels).
    torch.testing.assert_close(ddpm_schedule(scheduler.config)[:-1], abar[:-1], rtol=1e-4, atol=0)
    for space in ("snr", "x"):
        x, _ = sample(score, sde, (400, 1, 2, 2), seed=5, space=space, dtype=torch.float64)
        var = float(x.var())
        assert abs(var / std**2 - 1) < 0.15, (space, var)  # 1600 values: 3.5 % Monte-Carlo error


def test_score_from_diffusers_takes_the_mean_channels_of_a_learned_variance_unet():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=4,
        in_channels=1,
        out_channels=2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False)
    score, sde = score_from_diffusers(unet, scheduler)
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        eps = unet(x, sde.timestep(t)).sample[:, :1]
        torch.testing.assert_close(score(x, t), -eps / sde.sigma(t)[:, None, None, None])


def test_clip_sample_and_thresholding_act_on_the_data_prediction_or_warn():
    scheduler = diffusers.DDPMScheduler(clip_sample=True, clip_sample_range=0.5)
    sde = DiscreteVPSDE(scheduler.alphas_cumprod)

    def big_eps(x, timestep):
        return -3 * x  # a data prediction far outside [-1, 1]

    x, t = torch.randn(3, 1, 4, 4), torch.tensor([0.1, 0.5, 0.9])
    with pytest.warns(UserWarning, match="clip_sample=True"):
        unclipped, _ = score_from_diffusers(big_eps, scheduler, sde)
    assert unclipped.data_prediction(x, t).abs().max() > 1
    clipped, _ = score_from_diffusers(big_eps, scheduler, sde, clip_sample=True)
    d = clipped.data_prediction(x, t)
    assert d.abs().max() <= 0.5
    alpha, sigma = sde.alpha(t)[:, None, None, None], sde.sigma(t)[:, None, None, None]
    torch.testing.assert_close(clipped(x, t), (alpha * d - x) / sigma**2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_from_diffusers(big_eps, scheduler, sde, clip_sample=False)
    thresholded, _ = score_from_diffusers(
        big_eps,
        diffusers.DDPMScheduler(thresholding=True, sample_max_value=2.0, clip_sample=False),
        sde,
        thresholding=True,
    )
    d = thresholded.data_prediction(x, t)
    assert d.abs().max() <= 1 + 1e-6  # dynamic thresholding rescales into [-1, 1]
    raw = unclipped.data_prediction(x, t)
    s = torch.quantile(raw.reshape(3, -1).abs(), 0.995, dim=1).clamp(1, 2.0)[:, None, None, None]
    torch.testing.assert_close(d, raw.clamp(-s, s) / s)
    with pytest.raises(TypeError, match="clip_sample"):
        score_from_diffusers(big_eps, scheduler, sde, clip_sample="on")
