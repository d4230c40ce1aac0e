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

Every adapter returns a function ``score(x, t, **model_kwargs)`` with x of shape (B, ...) and t
of shape (B,); ``model_kwargs`` (``encoder_hidden_states``, ``class_labels``, ...) reach the model
unchanged, and ``guidance_scale`` / ``unconditional_kwargs`` add classifier-free guidance (Ho &
Salimans 2022) in one batched model call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from adaptive_sde.diffusion._forward import DiscreteVPSDE, ForwardSDE
from adaptive_sde.diffusion._reverse import ScoreFn, check_output

Model = Callable[..., torch.Tensor]
"""``model(x, t, **model_kwargs)``, x of shape (n, ...) and t (or the noise level) of shape (n,)."""


def _b(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class ModelAdapter:
    """A model in one convention as both functions a sampler may want: calling it gives the
    score s(x, t); :meth:`data_prediction` gives D(x, t) = E[x_0 | x_t = x]. The
    signal-to-noise-time sampler steps on D, and takes it straight from an x0, epsilon, v or
    denoiser model instead of a round trip through the score, which at small sigma divides by
    sigma^2 and loses precision. Keyword arguments of both calls go to the model."""

    def __init__(self, score: ScoreFn, data_prediction: ScoreFn) -> None:
        self._score, self._data = score, data_prediction

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        return self._score(x, t, **model_kwargs)

    def data_prediction(
        self, x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any
    ) -> torch.Tensor:
        return self._data(x, t, **model_kwargs)


def data_prediction_of(score_fn: ScoreFn, sde: ForwardSDE) -> ScoreFn:
    """D(x, t) of a score function: its own ``data_prediction`` if it has one (the adapters
    below, :meth:`GaussianMixture.score_fn`), otherwise Tweedie's formula
    D = (x + sigma^2 s) / alpha (Efron 2011)."""
    own = getattr(score_fn, "data_prediction", None)
    if callable(own):
        return own

    def data(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        score = check_output(score_fn(x, t, **model_kwargs), x, t, "the score function")
        return (x + sigma**2 * score) / alpha

    return data


def _score_of_data(data: ScoreFn, sde: ForwardSDE) -> ScoreFn:
    def score(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (alpha * data(x, t, **model_kwargs) - x) / sigma**2

    return score


def score_from_score(model: Model) -> ScoreFn:
    """A model that already returns the score."""
    return model


# -- classifier-free guidance ------------------------------------------------------------------


def classifier_free_guidance(
    model: Model, guidance_scale: float, unconditional_kwargs: Mapping[str, Any]
) -> Model:
    """``model`` with classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598): the
    output ``u + w (c - u)`` of the conditional output c (the caller's ``model_kwargs``) and
    the unconditional one u (``unconditional_kwargs`` in their place), w = ``guidance_scale``.

    Both are computed in ONE model call on 2n rows: x and t repeated, and every keyword
    argument the conditional row block followed by the unconditional one. An unconditional
    tensor with first dimension 1 (e.g. the empty prompt's embedding) is repeated for every
    row; one with first dimension n is taken as it is. Keyword arguments that
    ``unconditional_kwargs`` does not name are shared by both halves. Guidance on the model's
    output (epsilon, x0, v or a denoiser) is guidance on D: every conversion is affine in the
    output, with the same coefficients for both halves."""
    scale = _check_scale(guidance_scale)
    if not isinstance(unconditional_kwargs, Mapping):
        raise TypeError(
            "unconditional_kwargs must be a mapping of the model's keyword arguments for the "
            f"unconditional half, got {type(unconditional_kwargs).__name__}"
        )
    unconditional = dict(unconditional_kwargs)

    def guided(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        n = x.shape[0]
        missing = [key for key in unconditional if key not in model_kwargs]
        if missing:
            raise ValueError(
                f"unconditional_kwargs names {missing}, which model_kwargs does not: pass the "
                "conditional values in model_kwargs"
            )
        both = {
            key: _halves(key, value, unconditional.get(key, _SHARED), n)
            for key, value in model_kwargs.items()
        }
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both)
        if not isinstance(out, torch.Tensor) or out.shape[:1] != (2 * n,):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the guided model must return 2n = {2 * n} rows, got {got}")
        cond, uncond = out[:n], out[n:]
        return uncond + scale * (cond - uncond)

    return guided


_SHARED = object()  # a keyword argument that unconditional_kwargs does not override


def _halves(key: str, cond: Any, uncond: Any, n: int) -> Any:
    """The value of keyword argument ``key`` for the 2n rows of a guided call."""
    if isinstance(cond, Mapping):
        inner = uncond if isinstance(uncond, Mapping) else {}
        if uncond is not _SHARED and not isinstance(uncond, Mapping):
            raise TypeError(f"unconditional_kwargs[{key!r}] must be a mapping like model_kwargs'")
        return {k: _halves(f"{key}.{k}", v, inner.get(k, _SHARED), n) for k, v in cond.items()}
    if not isinstance(cond, torch.Tensor) or cond.dim() == 0 or cond.shape[0] != n:
        if uncond is not _SHARED and uncond is not cond:
            raise ValueError(
                f"model_kwargs[{key!r}] must be a tensor with one row per sample ({n}) to be "
                "guided against unconditional_kwargs"
            )
        return cond  # shared by every row
    if uncond is _SHARED:
        return torch.cat([cond, cond])
    if not isinstance(uncond, torch.Tensor) or uncond.dim() == 0 or uncond.shape[0] not in (1, n):
        got = tuple(uncond.shape) if isinstance(uncond, torch.Tensor) else type(uncond).__name__
        raise ValueError(
            f"unconditional_kwargs[{key!r}] must be a tensor with first dimension 1 (shared by "
            f"every sample) or {n}, got {got}"
        )
    uncond = uncond.to(device=cond.device, dtype=cond.dtype).expand_as(cond)
    return torch.cat([cond, uncond])


def _check_scale(guidance_scale: Any) -> float:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
    return float(guidance_scale)


def _prepared(
    model: Model,
    guidance_scale: float | None,
    unconditional_kwargs: Mapping[str, Any] | None,
) -> Model:
    """``model`` with guidance if asked for, and its output checked for x's shape: the
    adapters' arithmetic would otherwise broadcast a wrong shape silently."""
    if (guidance_scale is None) != (unconditional_kwargs is None):
        raise ValueError(
            "guidance_scale and unconditional_kwargs go together: pass both for classifier-free "
            "guidance, or neither"
        )
    if guidance_scale is not None and unconditional_kwargs is not None:
        model = classifier_free_guidance(model, guidance_scale, unconditional_kwargs)
    inner = model

    def call(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        return check_output(inner(x, t, **model_kwargs), x, t, "the model")

    return call


# -- the conventions ---------------------------------------------------------------------------


def score_from_noise(
    model: Model,
    sde: ForwardSDE,
    *,
    guidance_scale: float | None = None,
    unconditional_kwargs: Mapping[str, Any] | None = None,
) -> ModelAdapter:
    """A noise-prediction (epsilon) model: s = -eps / sigma, D = (x - sigma eps) / alpha.
    ``guidance_scale`` with ``unconditional_kwargs``: classifier-free guidance
    (:func:`classifier_free_guidance`)."""
    model = _prepared(model, guidance_scale, unconditional_kwargs)

    def score(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        return -model(x, t, **model_kwargs) / _b(sde.sigma(t), x)

    def data(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (x - sigma * model(x, t, **model_kwargs)) / alpha

    return ModelAdapter(score, data)


def score_from_data(
    model: Model,
    sde: ForwardSDE,
    *,
    guidance_scale: float | None = None,
    unconditional_kwargs: Mapping[str, Any] | None = None,
) -> ModelAdapter:
    """A data-prediction (x0) model: D is the model itself. Guidance as in
    :func:`score_from_noise`."""
    model = _prepared(model, guidance_scale, unconditional_kwargs)
    return ModelAdapter(_score_of_data(model, sde), model)


def score_from_velocity(
    model: Model,
    sde: ForwardSDE,
    *,
    guidance_scale: float | None = None,
    unconditional_kwargs: Mapping[str, Any] | None = None,
) -> ModelAdapter:
    """A v-prediction model, v = alpha eps - sigma x0: x0 = (alpha x - sigma v) / (alpha^2 +
    sigma^2). Guidance as in :func:`score_from_noise`."""
    model = _prepared(model, guidance_scale, unconditional_kwargs)

    def data(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        return (alpha * x - sigma * model(x, t, **model_kwargs)) / (alpha**2 + sigma**2)

    def score(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = _b(sde.alpha(t), x), _b(sde.sigma(t), x)
        eps = (sigma * x + alpha * model(x, t, **model_kwargs)) / (alpha**2 + sigma**2)
        return -eps / sigma

    return ModelAdapter(score, data)


def score_from_denoiser(
    denoiser: Model,
    sde: ForwardSDE,
    *,
    guidance_scale: float | None = None,
    unconditional_kwargs: Mapping[str, Any] | None = None,
) -> ModelAdapter:
    """A denoiser D(x, noise_level, **model_kwargs) in the variance-exploding coordinates of
    EDM / k-diffusion (Karras et al. 2022); ``noise_level`` is passed as a tensor of shape (B,).
    Guidance as in :func:`score_from_noise`."""
    denoiser = _prepared(denoiser, guidance_scale, unconditional_kwargs)

    def data(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        alpha, sigma = sde.alpha(t), sde.sigma(t)
        return denoiser(x / _b(alpha, x), (sigma / alpha).to(x.dtype), **model_kwargs)

    return ModelAdapter(_score_of_data(data, sde), data)


_CONVERTERS: dict[str, Callable[..., ModelAdapter]] = {
    "epsilon": score_from_noise,
    "sample": score_from_data,
    "v_prediction": score_from_velocity,
}


# -- diffusers ---------------------------------------------------------------------------------


def ddpm_schedule(config: Mapping[str, Any]) -> torch.Tensor:
    """The cumulative products alpha-bar_k of a diffusers DDPM-style scheduler config
    (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` or
    ``trained_betas``, and ``rescale_betas_zero_snr``: Lin et al. 2024, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed", Algorithm 1, which makes the final alpha-bar 0)."""
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
    abar = torch.cumprod(1 - betas, dim=0)
    if config.get("rescale_betas_zero_snr", False):
        root = abar.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        abar = ((root - last) * first / (first - last)) ** 2
    return abar


def scheduler_alphas_cumprod(scheduler: Any) -> torch.Tensor:
    """The alpha-bar schedule of a diffusers scheduler, or of its config: the scheduler's own
    ``betas`` (cumulated in float64; zero-SNR rescaling and custom schedules included), else
    its ``alphas_cumprod``, else the schedule rebuilt from the config (:func:`ddpm_schedule`)."""
    betas = getattr(scheduler, "betas", None)
    if isinstance(betas, torch.Tensor) and betas.dim() == 1 and betas.numel() > 1:
        return torch.cumprod(1 - betas.detach().double().cpu(), dim=0)
    abar = getattr(scheduler, "alphas_cumprod", None)
    if isinstance(abar, torch.Tensor) and abar.dim() == 1 and abar.numel() > 1:
        return abar.detach().double().cpu()
    return ddpm_schedule(getattr(scheduler, "config", scheduler))


def _learned_variance(config: Mapping[str, Any]) -> bool:
    """Whether the UNet predicts its variance too (2C output channels, the first C the mean's
    prediction): diffusers' ``variance_type`` "learned" / "learned_range" (Nichol & Dhariwal
    2021)."""
    return config.get("variance_type") in ("learned", "learned_range")


def _limiter(
    config: Mapping[str, Any], clip_sample: bool | None, thresholding: bool | None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the scheduler does to its x0 prediction at every step, as a function of D:
    dynamic thresholding (Saharia et al. 2022, "Imagen", as diffusers' ``_threshold_sample``)
    or clipping to [-clip_sample_range, clip_sample_range]; ``None`` for neither. The config
    decides only when asked to: ``None`` for either option, where the config turns it on,
    warns and leaves D alone (the sampler's behaviour before these options existed)."""
    chosen = {"thresholding": thresholding, "clip_sample": clip_sample}
    for name, value in chosen.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True, False or None, got {type(value).__name__}")
        if value is None and config.get(name, False):
            warnings.warn(
                f"the scheduler's config sets {name}=True, which score_from_diffusers applies "
                f"only when asked: pass {name}=True to apply it to the data prediction as "
                f"diffusers' step does, or {name}=False to keep D as the model gives it "
                "(and silence this warning)",
                UserWarning,
                stacklevel=3,
            )
    if thresholding:
        ratio = float(config.get("dynamic_thresholding_ratio", 0.995))
        ceiling = float(config.get("sample_max_value", 1.0))

        def threshold(d: torch.Tensor) -> torch.Tensor:
            flat = d.reshape(d.shape[0], -1).abs().float()
            s = torch.quantile(flat, ratio, dim=1).clamp(min=1.0, max=ceiling).to(d.dtype)
            s = _b(s, d)
            return torch.clamp(d, -s, s) / s

        return threshold
    if clip_sample:
        bound = float(config.get("clip_sample_range", 1.0))
        return lambda d: torch.clamp(d, -bound, bound)
    return None


def score_from_diffusers(
    unet: Any,
    scheduler: Any,
    sde: DiscreteVPSDE | None = None,
    *,
    guidance_scale: float | None = None,
    unconditional_kwargs: Mapping[str, Any] | None = None,
    clip_sample: bool | None = None,
    thresholding: bool | None = None,
) -> tuple[ModelAdapter, DiscreteVPSDE]:
    """A diffusers UNet (``UNet2DModel``, ``UNet2DConditionModel``, or any module called as
    ``unet(x, timestep, **model_kwargs).sample``) and its scheduler (or the scheduler's config)
    as ``(score_fn, sde)``.

    - ``sde``: by default the VP SDE of the scheduler's own alpha-bar schedule
      (:func:`scheduler_alphas_cumprod`). A zero-terminal-SNR schedule
      (``rescale_betas_zero_snr=True``, Lin et al. 2024) ends at alpha-bar 0, which
      :class:`DiscreteVPSDE` replaces by a tiny positive value: the prior is N(0, I).
    - ``prediction_type`` of the config ("epsilon", "sample" or "v_prediction") picks the
      conversion; with ``variance_type`` "learned" / "learned_range" the UNet returns 2C
      channels, of which the first C are the prediction.
    - ``guidance_scale`` with ``unconditional_kwargs`` (e.g. ``{"encoder_hidden_states":
      empty_prompt_embedding}``): classifier-free guidance (Ho & Salimans 2022) in one batched
      UNet call, as diffusers' pipelines do (:func:`classifier_free_guidance`).
    - ``clip_sample`` / ``thresholding``: ``True`` clamps the data prediction D to
      [-clip_sample_range, clip_sample_range] / applies dynamic thresholding to it, as the
      scheduler's step does to its x0 prediction; ``False`` leaves D alone; ``None`` (default)
      leaves it alone and warns where the config turns the option on.

    Continuous timesteps are passed as floats, which diffusers' sinusoidal embeddings accept;
    model keyword arguments (``encoder_hidden_states``, ``class_labels``, ...) go to the UNet.
    """
    config = getattr(scheduler, "config", scheduler)
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _CONVERTERS:
        raise ValueError(
            f"prediction_type {prediction!r} is not supported; expected one of {list(_CONVERTERS)}"
        )
    limit = _limiter(config, clip_sample, thresholding)
    sde = sde or DiscreteVPSDE(scheduler_alphas_cumprod(scheduler))
    learned = _learned_variance(config)

    def model(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        out = unet(x, sde.timestep(t).to(x.dtype), **model_kwargs)
        out = out.sample if hasattr(out, "sample") else out
        if learned and isinstance(out, torch.Tensor) and out.dim() > 1:
            out = out[:, : x.shape[1]]  # the mean's prediction; the rest is the variance's
        return out

    adapter = _CONVERTERS[prediction](
        model, sde, guidance_scale=guidance_scale, unconditional_kwargs=unconditional_kwargs
    )
    if limit is None:
        return adapter, sde
    return _limited(adapter, limit, sde), sde


def _limited(
    adapter: ModelAdapter, limit: Callable[[torch.Tensor], torch.Tensor], sde: ForwardSDE
) -> ModelAdapter:
    """``adapter`` with ``limit`` applied to its data prediction, and the score of that D."""

    def data(x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        return limit(adapter.data_prediction(x, t, **model_kwargs))

    return ModelAdapter(_score_of_data(data, sde), data)
