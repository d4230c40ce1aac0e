"""The sampler in signal-to-noise time (adaptive_sde.diffusion._snr): the transformation checked
against DDPM's posterior, the clock's inverse, exact moments on Gaussian data, unbiased mode
weights, the evaluation count of rejected attempts and batch independence."""

from __future__ import annotations

import math

import pytest
import torch

import adaptive_sde
from adaptive_sde._bench.controls import RedrawingBrownian
from adaptive_sde._controller import StepController
from adaptive_sde.diffusion import (
    EDMSDE,
    VESDE,
    VPSDE,
    DiscreteVPSDE,
    ForwardSDE,
    GaussianMixture,
    SubVPSDE,
    ddpm_schedule,
    prior_sample,
    sample,
    score_from_data,
    score_from_noise,
)
from adaptive_sde.diffusion._adapters import data_prediction_of
from adaptive_sde.diffusion._reverse import ScoreCounter
from adaptive_sde.diffusion._snr import SNRSampler, gaussian_weight, pair_step

ALL_SDES = [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(ddpm_schedule({})), EDMSDE()]
ALL_IDS = ["vp", "subvp", "ve", "ddpm", "edm"]
RING = GaussianMixture.ring()


def _times(sde: ForwardSDE) -> torch.Tensor:
    return torch.linspace(sde.eps, sde.T, 41, dtype=torch.float64)


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_IDS)
def test_half_log_snr_and_its_inverse(sde):
    t = _times(sde)
    lam = sde.half_log_snr(t)
    torch.testing.assert_close(lam, torch.log(sde.alpha(t) / sde.sigma(t)), rtol=1e-12, atol=1e-12)
    assert bool((lam[1:] < lam[:-1]).all())  # decreasing: sampling runs up in lambda
    torch.testing.assert_close(sde.time_at(lam), t, rtol=1e-10, atol=1e-12)
    # the closed forms agree with the generic bisection of the base class
    torch.testing.assert_close(ForwardSDE.time_at(sde, lam), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_IDS)
def test_first_order_step_is_the_ddpm_posterior_with_x0_the_data_prediction(sde):
    # q(x_s | x_t, x0) = N(a x_t + b x0, v) with alpha_ts = alpha_t / alpha_s,
    # s2_ts = sigma_t^2 - alpha_ts^2 sigma_s^2: a = alpha_ts sigma_s^2 / sigma_t^2,
    # b = alpha_s s2_ts / sigma_t^2, v = s2_ts sigma_s^2 / sigma_t^2 (Kingma et al. 2021, VDM).
    gen = torch.Generator().manual_seed(0)
    t_noisy = torch.linspace(0.3, 0.95, 6, dtype=torch.float64) * sde.T
    t_clean = t_noisy * torch.linspace(0.2, 0.9, 6, dtype=torch.float64)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    d = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    z = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    a_t, s_t = sde.alpha(t_noisy), sde.sigma(t_noisy)
    a_s, s_s = sde.alpha(t_clean), sde.sigma(t_clean)
    lam_t, lam_s = sde.half_log_snr(t_noisy), sde.half_log_snr(t_clean)
    # the register's increment over [u_t, u_s] in the clock u = exp(2 lambda)
    db = torch.sqrt(torch.exp(2 * lam_s) - torch.exp(2 * lam_t))[:, None] * z
    ours = pair_step(x, d, lam_t, lam_s, s_t, a_s, s_s, db)
    alpha_ts = a_t / a_s
    s2_ts = s_t**2 - alpha_ts**2 * s_s**2
    mean = (alpha_ts * s_s**2 / s_t**2)[:, None] * x + (a_s * s2_ts / s_t**2)[:, None] * d
    std = torch.sqrt(s2_ts * s_s**2 / s_t**2)[:, None]
    torch.testing.assert_close(ours, mean + std * z, rtol=1e-10, atol=1e-10)


def test_gaussian_weights_reach_their_limits():
    u_s = torch.tensor([1.0, 1.0], dtype=torch.float64)
    u_t = torch.tensor([math.e, math.e], dtype=torch.float64)  # h = 1/2
    db = torch.ones(2, 3, dtype=torch.float64)
    # rho = 0 (noise dominates): the trapezoid rule; rho = 1 (data dominates): e^h - 1
    change = torch.stack([torch.zeros(3), torch.full((3,), 1 / math.e)]).double()
    c = gaussian_weight(u_s, u_t, change, db)
    torch.testing.assert_close(c[0], torch.tensor(0.5 * (1 - math.exp(-1)), dtype=torch.float64))
    torch.testing.assert_close(c[1], torch.tensor(math.exp(0.5) - 1, dtype=torch.float64))


def _gaussian_data(std: float, d: int) -> GaussianMixture:
    return GaussianMixture(
        torch.zeros(1, d, dtype=torch.float64),
        torch.tensor([std], dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
    )


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("rtol", [0.4, 0.1])
def test_gaussian_data_mean_and_variance_are_exact(sde, rtol):
    # Exact sampling to eps and the final denoising D = k x give Var = k^2 (alpha^2 s^2 + sigma^2)
    # with k = alpha s^2 / (alpha^2 s^2 + sigma^2); 8000 x 16 values give the variance to 0.4 %.
    std, d, n = 0.05, 16, 8000
    data = _gaussian_data(std, d)
    x, _ = sample(data.score_fn(sde), sde, (n, d), rtol=rtol, seed=3, dtype=torch.float64)
    t = torch.tensor(sde.eps, dtype=torch.float64)
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    k = a * std**2 / (a**2 * std**2 + s**2)
    target = k**2 * (a**2 * std**2 + s**2)
    var = x.var(0)
    se = target * math.sqrt(2 / (n * d))
    assert abs(float(var.mean()) - target) < 4 * se, (float(var.mean()), target)
    mean_se = math.sqrt(target / n)
    assert float(x.mean(0).abs().max()) < 4.5 * mean_se


def test_other_second_stage_weights_under_disperse_gaussian_data():
    # The measurement behind the default: the trapezoid rule in u loses variance at the same cost.
    std, d, n, sde = 0.05, 16, 8000, VPSDE()
    data = _gaussian_data(std, d)
    ratios = {}
    for weights in ("gaussian", "trapezoid"):
        x = _run(data, sde, n, d, weights=weights)
        ratios[weights] = float(x.var(0).mean()) / std**2
    assert abs(ratios["gaussian"] - 0.96) < 0.03  # k^2 (a^2 s^2 + sigma^2) / s^2 = 0.958
    assert ratios["trapezoid"] < ratios["gaussian"] - 0.05


def _run(mixture, sde, n, d, *, weights="gaussian", register=None, rtol=0.1, tolerance="isotropic"):
    data = ScoreCounter(data_prediction_of(mixture.score_fn(sde), sde), (d,))
    controller = StepController(rtol, 0.0078, tolerance=tolerance, dt_max=1.0)
    register = register or adaptive_sde.BrownianRegister(
        n, d, seed=4, dtype=torch.float64, time_dtype=torch.float64
    )
    sampler = SNRSampler(data, sde, controller, register, weights=weights)
    x_T = prior_sample(sde, (n, d), 4, dtype=torch.float64)
    result = sampler.run(x_T, sde.eps)
    assert result.stats.success
    t = torch.full((n,), sde.eps, dtype=torch.float64)
    return data(result.x, t)


def _mode_counts(x):
    return torch.bincount(RING.assign(x), minlength=8)


def _within_binomial(counts, n, k=4.0):
    p = 1 / 8
    return bool(torch.all((counts - n * p).abs() <= k * math.sqrt(n * p * (1 - p))))


@pytest.mark.slow
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("rtol", [None, 0.4])
def test_ring_mode_weights_stay_equal(sde, rtol):
    # 20 000 samples: the elementwise tolerance of the paper made the diagonal modes 10 %
    # heavier at rtol 0.1 (about 2600 against 2350), which this band rejects
    n = 20_000
    x, stats = sample(RING.score_fn(sde), sde, (n, 2), rtol=rtol, seed=0)
    assert stats.rejected > 0.02 * stats.accepted  # the reuse of rejected noise is exercised
    counts = _mode_counts(x)
    assert _within_binomial(counts, n), counts.tolist()


@pytest.mark.slow
def test_redrawing_rejected_noise_biases_the_mode_weights():
    # The control: the same sampler and settings (the paper's elementwise tolerance, rtol 0.02)
    # with fresh noise after every rejection, as the paper's code does, over-weights the
    # diagonal modes; with the register's reuse the weights stay within the band.
    sde, n = VESDE(), 8000
    kept = _run(RING, sde, n, 2, rtol=0.02, tolerance="paper")
    assert _within_binomial(_mode_counts(kept), n), _mode_counts(kept).tolist()
    redrawn = _run(
        RING, sde, n, 2, register=RedrawingBrownian(n, 2, seed=0), rtol=0.02, tolerance="paper"
    )
    assert not _within_binomial(_mode_counts(redrawn), n), _mode_counts(redrawn).tolist()


def test_a_rejected_attempt_costs_one_evaluation():
    sde, n = VPSDE(), 64
    _, stats = sample(RING.score_fn(sde), sde, (n, 2), rtol=0.02, seed=1)
    solve = stats.solve
    assert int(solve.num_rejected.sum()) > 0
    # D at the start, one D(x_L) per attempt, one D at each newly accepted state (the last one
    # is the final denoising step)
    want = 2 * solve.num_accepted + solve.num_rejected + 1
    assert torch.equal(stats.score_evals, want)
    assert stats.rows_evaluated == int(stats.score_evals.sum())  # finished rows cost nothing


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_a_sample_solved_alone_equals_its_row_of_the_batch(sde):
    x, stats = sample(RING.score_fn(sde), sde, (8, 2), seed=7)
    for i in (0, 5):
        alone, alone_stats = sample(
            RING.score_fn(sde), sde, (1, 2), seed=7, sample_ids=torch.tensor([i])
        )
        torch.testing.assert_close(alone[0], x[i], rtol=1e-5, atol=1e-6)
        assert int(alone_stats.score_evals[0]) == int(stats.score_evals[i])


@pytest.mark.parametrize("space", ["snr", "x"])
def test_a_shared_grid_keeps_each_samples_own_noise(space):
    sde = VPSDE()
    x_T = prior_sample(sde, (6, 2), 2)
    kwargs = {"seed": 2, "per_sample": False, "space": space, "x_T": x_T}
    x, stats = sample(RING.score_fn(sde), sde, (6, 2), **kwargs)
    assert len(set(stats.score_evals.tolist())) == 1  # one grid
    again, _ = sample(RING.score_fn(sde), sde, (6, 2), **kwargs)
    assert torch.equal(x, again)
    # the same start, other sample ids: other Brownian paths (shards of a distributed run)
    other, _ = sample(RING.score_fn(sde), sde, (6, 2), sample_ids=torch.arange(6, 12), **kwargs)
    assert not torch.allclose(x, other)


def test_x_space_stays_selectable():
    sde = VPSDE()
    x, stats = sample(RING.score_fn(sde), sde, (32, 2), seed=0, space="x", rtol=0.05)
    assert torch.equal(stats.score_evals, stats.solve.nfe + 1)
    assert float((x.norm(dim=1) - 1).abs().median()) < 0.1
    with pytest.raises(ValueError, match="space must be one of"):
        sample(RING.score_fn(sde), sde, (4, 2), seed=0, space="w")


def test_adapters_hand_over_the_data_prediction_without_the_score():
    sde = VPSDE()
    calls = []

    def x0_model(x, t):
        calls.append("x0")
        return torch.tanh(x)

    adapter = score_from_data(x0_model, sde)
    x = torch.randn(4, 3)
    t = torch.full((4,), 1e-3)
    # at sigma = 0.01 the round trip through the score would lose digits in float32
    assert torch.equal(data_prediction_of(adapter, sde)(x, t), torch.tanh(x))
    eps_adapter = score_from_noise(lambda x, t: torch.zeros_like(x), sde)
    alpha = sde.alpha(t)[:, None]
    torch.testing.assert_close(data_prediction_of(eps_adapter, sde)(x, t), x / alpha)


def test_final_prediction_that_is_not_finite_is_an_error():
    sde = VPSDE()
    exact = RING.score_fn(sde)

    def score(x, t):  # NaN only at the very end, in the final denoising step
        out = exact(x, t)
        last = t <= sde.eps * (1 + 1e-6)
        return torch.where(last[:, None], torch.full_like(out, math.nan), out)

    with pytest.raises(adaptive_sde.SolveError, match="not finite"):
        sample(score, sde, (4, 2), seed=0)
    with pytest.raises(adaptive_sde.SolveError, match="not finite"):
        sample(score, sde, (4, 2), seed=0, space="x")


def test_blocks_of_passes_between_host_reads_give_the_same_samples():
    # sync_every > 1: finished rows are frozen inside a block, and D at each start is evaluated
    # again (two evaluations per attempt); the decisions, hence the samples, are the same.
    sde, n = VPSDE(), 48
    x, stats = sample(RING.score_fn(sde), sde, (n, 2), seed=4, dtype=torch.float64)
    for k in (3, 8):
        other, other_stats = sample(
            RING.score_fn(sde), sde, (n, 2), seed=4, dtype=torch.float64, sync_every=k
        )
        torch.testing.assert_close(other, x, rtol=1e-9, atol=1e-12)
        assert torch.equal(other_stats.solve.num_steps, stats.solve.num_steps)
        want = 2 * other_stats.solve.num_steps + 1  # + the final denoising step
        assert torch.equal(other_stats.score_evals, want)
    with pytest.raises(ValueError, match="sync_every must be a positive integer"):
        sample(RING.score_fn(sde), sde, (4, 2), seed=0, sync_every=0)


# -- one option table, one name per option (issue 11) ---------------------------------------------


def test_the_old_names_still_work_with_a_deprecation_warning():
    from adaptive_sde.diffusion import sample_euler_maruyama

    sde = VPSDE()
    score = RING.score_fn(sde)
    new, _ = sample(score, sde, (8, 2), seed=3, dt0=0.2, dt_max=0.5)
    with pytest.warns(DeprecationWarning, match="generator= is now called seed="):
        with pytest.warns(DeprecationWarning, match="h_init= is now called dt0="):
            with pytest.warns(DeprecationWarning, match="h_max= is now called dt_max="):
                old, _ = sample(score, sde, (8, 2), generator=3, h_init=0.2, h_max=0.5)
    assert torch.equal(new, old)
    em, _ = sample_euler_maruyama(score, sde, (8, 2), steps=20, seed=3)
    with pytest.warns(DeprecationWarning, match="generator="):
        em_old, _ = sample_euler_maruyama(score, sde, (8, 2), steps=20, generator=3)
    assert torch.equal(em, em_old)
    with pytest.raises(TypeError, match="pass seed= or its old name generator=, not both"):
        sample(score, sde, (8, 2), seed=3, generator=3)


def test_a_controller_object_replaces_the_tolerance_arguments():
    from adaptive_sde._controller import StepController
    from adaptive_sde.diffusion._sample import SAMPLE_DEFAULTS

    sde = VPSDE()
    score = RING.score_fn(sde)
    by_arguments, a = sample(score, sde, (16, 2), seed=1, rtol=0.2, dt_max=0.5)
    controller = StepController(defaults={**SAMPLE_DEFAULTS["snr"], "rtol": 0.2, "dt_max": 0.5})
    by_object, b = sample(score, sde, (16, 2), seed=1, controller=controller)
    assert torch.equal(by_arguments, by_object)
    assert torch.equal(a.score_evals, b.score_evals)
    with pytest.raises(ValueError, match="controller= and rtol"):
        sample(score, sde, (4, 2), seed=1, controller=controller, rtol=0.1)
    # Without a largest step in lambda the pair would jump across the low-noise end unseen.
    with pytest.raises(ValueError, match="must bound the step in signal-to-noise time"):
        sample(score, sde, (4, 2), seed=1, controller=StepController(rtol=0.1))


def test_pi_control_reaches_the_signal_to_noise_time_sampler():
    from adaptive_sde._controller import StepController
    from adaptive_sde.diffusion._sample import SAMPLE_DEFAULTS

    sde = VPSDE()
    score = RING.score_fn(sde)
    _, a = sample(score, sde, (16, 2), seed=1)
    pi = StepController(defaults={**SAMPLE_DEFAULTS["snr"], "pcoeff": 0.4})
    other, b = sample(score, sde, (16, 2), seed=1, controller=pi)
    assert bool(torch.isfinite(other).all())
    assert not torch.equal(a.solve.num_steps, b.solve.num_steps)  # the gain changed the steps
