"""Model adapters: every common model convention turned into one score function s(x, t).

With the forward transition x_t = alpha(t) x_0 + sigma(t) noise (Song et al. 2021; Kingma et al.
2021, "Variational diffusion models"; Karras et al. 2022, "Elucidating the design space", EDM),
and the posterior means E[noise | x_t], E[x_0 | x_t] that the models learn:

- score model:            s = model(x, t)
- noise (epsilon) model:  s = -eps_hat / sigma
- data (x0) model:        s = (alpha x0_hat - x) / sigma^2
- v model (Salimans & Ho 2022, v = alpha eps - sigma x0):
                          eps_hat = (sigma x + alpha v_hat) / (alpha^2 + sigma^2), then as above
- denoiser D(x, s) (EDM / k-diffusion), trained on x_0 + s noise: in those coordinates
  x_t / alpha has noise level sigma / alpha, so
                          s = (alpha D(x / alpha, sigma / alpha) - x) / sigma^2
- a diffusers UNet with its DDPM scheduler config: the continuous time t maps to the model's
  timestep t N / T - 1, and ``prediction_type`` picks one of the conventions above.

Every adapter returns a function ``score(x, t)`` with x of shape (B, ...) and t of shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from adaptive_sde.diffusion._forward import DiscreteVPSDE, ForwardSDE
from adaptive_sde.diffusion._reverse import ScoreFn, check_output

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _b(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class ModelAdapter:
    """A model in one convention as both functions a sampler may want: calling it gives the
    score s(x, t); :meth:`data_prediction` gives D(x, t) = E[x_0 | x_t = x]. The
    signal-to-noise-time sampler steps on D, and takes it straight from an x0, epsilon, v or
    denoiser model instead of a round trip through the score, which at small sigma divides by
    sigma^2 and loses precision."""

    def __init__(self, score: ScoreFn, data_prediction: ScoreFn) -> None:
        self._score, self._data = score, data_prediction

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._score(x, t)

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._data(x, t)


def data_prediction_of(score_fn: ScoreFn, sde: ForwardSDE) -> ScoreFn:
    """D(x, t) of a score function: its own ``data_prediction`` if it has one (the adapters
    below, :meth:`GaussianMixture.score_fn`), otherwise Tweedie's formula
    D = (x + sigma^2 s) / alpha (Efron 2011)."""
    own = getattr(score_fn, "data_prediction", None)
    if callable(own):
        return own

    def data(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        score = check_output(score_fn(x, t), x, t, "the score function")
        return (x + sigma**2 * score) / alpha

    return data


def _score_of_data(data: ScoreFn, sde: ForwardSDE) -> ScoreFn:
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (alpha * data(x, t) - x) / sigma**2

    return score


def score_from_score(model: Model) -> ScoreFn:
    """A model that already returns the score."""
    return model


def _checked(model: Model) -> Model:
    """``model`` with its output checked for x's shape: the adapters' arithmetic would
    otherwise broadcast a wrong shape silently."""

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return check_output(model(x, t), x, t, "the model")

    return call


def score_from_noise(model: Model, sde: ForwardSDE) -> ModelAdapter:
    """A noise-prediction (epsilon) model: s = -eps / sigma, D = (x - sigma eps) / alpha."""
    model = _checked(model)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -model(x, t) / _b(sde.sigma(t), x)

    def data(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (x - sigma * model(x, t)) / alpha

    return ModelAdapter(score, data)


def score_from_data(model: Model, sde: ForwardSDE) -> ModelAdapter:
    """A data-prediction (x0) model: D is the model itself."""
    model = _checked(model)
    return ModelAdapter(_score_of_data(model, sde), model)


def score_from_velocity(model: Model, sde: ForwardSDE) -> ModelAdapter:
    """A v-prediction model, v = alpha eps - sigma x0: x0 = (alpha x - sigma v) / (alpha^2 +
    sigma^2)."""
    model = _checked(model)

    def data(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (alpha * x - sigma * model(x, t)) / (alpha**2 + sigma**2)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        eps = (sigma * x + alpha * model(x, t)) / (alpha**2 + sigma**2)
        return -eps / sigma

    return ModelAdapter(score, data)


def score_from_denoiser(denoiser: Model, sde: ForwardSDE) -> ModelAdapter:
    """A denoiser D(x, noise_level) in the variance-exploding coordinates of EDM / k-diffusion;
    ``noise_level`` is passed as a tensor of shape (B,)."""
    denoiser = _checked(denoiser)

    def data(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = sde.alpha(t), sde.sigma(t)
        return denoiser(x / _b(alpha, x), (sigma / alpha).to(x.dtype))

    return ModelAdapter(_score_of_data(data, sde), data)


_CONVERTERS: dict[str, Callable[[Model, ForwardSDE], ModelAdapter]] = {
    "epsilon": score_from_noise,
    "sample": score_from_data,
    "v_prediction": score_from_velocity,
}


def ddpm_schedule(config: Mapping[str, Any]) -> torch.Tensor:
    """The cumulative products alpha-bar_k of a diffusers DDPM-style scheduler config
    (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` or
    ``trained_betas``)."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64)
    else:
        kind = config.get("beta_schedule", "linear")
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        if kind == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":
            steps = torch.arange(n + 1, dtype=torch.float64) / n
            f = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
            betas = torch.clamp(1 - f[1:] / f[:-1], max=0.999)
        else:
            raise ValueError(
                f"beta_schedule {kind!r} is not supported; expected 'linear', 'scaled_linear' or "
                "'squaredcos_cap_v2' (or trained_betas)"
            )
    return torch.cumprod(1 - betas, dim=0)


def score_from_diffusers(
    unet: Any, scheduler: Any, sde: DiscreteVPSDE | None = None
) -> tuple[ModelAdapter, DiscreteVPSDE]:
    """A diffusers UNet (``UNet2DModel`` or any module called as ``unet(x, timestep).sample``)
    and its scheduler (or the scheduler's config) as ``(score_fn, sde)``: the VP SDE of the
    scheduler's own alpha-bar schedule, and the score under it. ``prediction_type`` of the config
    ("epsilon", "sample" or "v_prediction") picks the conversion. Continuous timesteps are passed
    as floats, which diffusers' sinusoidal embeddings accept."""
    config = getattr(scheduler, "config", scheduler)
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _CONVERTERS:
        raise ValueError(
            f"prediction_type {prediction!r} is not supported; expected one of {list(_CONVERTERS)}"
        )
    sde = sde or DiscreteVPSDE(ddpm_schedule(config))

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = unet(x, sde.timestep(t).to(x.dtype))
        return out.sample if hasattr(out, "sample") else out

    return _CONVERTERS[prediction](model, sde), sde
