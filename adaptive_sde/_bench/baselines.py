"""The samplers diffusion users already have, run from the real libraries on our problems.

- k-diffusion (Crowson): ``sample_dpm_adaptive`` (eta 0 and 1), ``sample_dpmpp_2m_sde``,
  ``sample_dpmpp_3m_sde`` and ``sample_euler_ancestral``, called as k-diffusion's users call them:
  a denoiser ``D(x, sigma)`` in EDM's variance-exploding coordinates, ``x`` the prior noise
  scaled by ``sigma_max``, Karras et al.'s noise levels for the fixed-step samplers.
  ``import k_diffusion`` pulls training packages (torchvision, wandb, clip...), so only
  ``k_diffusion/sampling.py`` is loaded, from the installed distribution
  (``pip install --no-deps k-diffusion torchdiffeq``), with the one helper it takes from
  ``k_diffusion.utils``.
- diffusers: ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` on its own DDPM
  schedule, fed the exact epsilon of that schedule.

Every baseline gets the same prior draws as our sampler and the exact data prediction of the same
mixture, and reports evaluations per sample and model calls, counted by a wrapper around the model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaptive_sde.diffusion import DiscreteVPSDE, ForwardSDE, GaussianMixture

K_SAMPLERS = (
    "dpm_adaptive eta=0",
    "dpm_adaptive eta=1",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "euler_ancestral",
)
DIFFUSERS_SAMPLER = "diffusers sde-dpmsolver++"


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``k_diffusion.utils.append_dims``: trailing unit dimensions up to ``target_dims``."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load_k_diffusion_sampling() -> types.ModuleType:
    """``k_diffusion.sampling`` from the installed k-diffusion, without its package ``__init__``."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    try:
        files = importlib.metadata.files("k-diffusion") or []
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            "k-diffusion is not installed: pip install --no-deps k-diffusion torchdiffeq"
        ) from None
    path = next(Path(str(f.locate())) for f in files if str(f).endswith("k_diffusion/sampling.py"))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(path.parent)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = _append_dims  # type: ignore[attr-defined]
    sys.modules.setdefault("k_diffusion", package)
    sys.modules.setdefault("k_diffusion.utils", utils)
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = module
    spec.loader.exec_module(module)
    return module


class CountingModel:
    """A model wrapper that counts calls and the rows they evaluate."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.fn(x, *args, **kwargs)


DataFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ve_denoiser(data: DataFn, sde: ForwardSDE) -> Callable[..., torch.Tensor]:
    """A data prediction D(x, t) under ``sde`` as k-diffusion's denoiser D(x_ve, sigma_ve), in
    EDM's coordinates x_ve = x / alpha and sigma_ve = sigma / alpha (so that half_log_snr =
    -log sigma_ve): the same model on the same forward process our sampler sees."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = sde.time_at(-torch.log(sigma.double()))
        alpha = sde.alpha(t).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return data(alpha * x, t.to(x.dtype))

    return denoise


def sigma_range(sde: ForwardSDE, eps: float) -> tuple[float, float]:
    """(sigma_min, sigma_max) in EDM's coordinates of sampling ``sde`` from T down to ``eps``."""
    lam = sde.half_log_snr(torch.tensor([eps, sde.T], dtype=torch.float64))
    return float(torch.exp(-lam[0])), float(torch.exp(-lam[1]))


def run_k_diffusion(
    name: str,
    setting: float,
    data: DataFn,
    sde: ForwardSDE,
    x_T: torch.Tensor,
    seed: int,
) -> tuple[torch.Tensor, float, int]:
    """One k-diffusion sampler on the data prediction ``data(x, t)`` under ``sde``, from the
    prior draws ``x_T``; ``setting`` is ``rtol`` for dpm_adaptive, the number of steps
    otherwise. Returns (samples, evaluations per sample, model calls); dpm_adaptive ends at
    sigma_min and gets one more call to denoise there."""
    k = load_k_diffusion_sampling()
    sigma_min, sigma_max = sigma_range(sde, sde.eps)
    model = CountingModel(ve_denoiser(data, sde))
    x = (x_T.double() / float(sde.alpha(torch.tensor(sde.T, dtype=torch.float64)))).to(x_T.dtype)
    torch.manual_seed(seed)  # k-diffusion's default noise sampler draws with torch.randn_like
    with warnings.catch_warnings():
        # torchsde's BrownianInterval, under k-diffusion's Brownian-tree noise, warns when a
        # float32 time rounds past its end; nothing a user of the sampler could act on.
        warnings.filterwarnings("ignore", "Should have", UserWarning)
        return _k_diffusion_call(k, name, setting, model, x, sigma_min, sigma_max)


def _k_diffusion_call(
    k: types.ModuleType,
    name: str,
    setting: float,
    model: CountingModel,
    x: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
) -> tuple[torch.Tensor, float, int]:
    if name.startswith("dpm_adaptive"):
        eta = float(name.rsplit("=", 1)[1])
        out = k.sample_dpm_adaptive(
            model, x, sigma_min, sigma_max, rtol=setting, atol=0.0078, eta=eta, disable=True
        )
        out = model(out, torch.full((x.shape[0],), sigma_min, dtype=x.dtype, device=x.device))
    else:
        sigmas = k.get_sigmas_karras(int(setting), sigma_min, sigma_max).to(x.dtype)
        sampler = getattr(k, f"sample_{name}")
        out = sampler(model, x, sigmas, disable=True)
    return out, model.rows / x.shape[0], model.calls


def run_diffusers(
    steps: int, mixture: GaussianMixture, x_T: torch.Tensor, seed: int
) -> tuple[torch.Tensor, float, int]:
    """diffusers' SDE-DPM-Solver++(2M) on the DDPM linear schedule (1000 training steps, the VP
    SDE's discretisation), from the VP prior draws ``x_T``, fed the mixture's exact epsilon
    under that schedule."""
    import diffusers  # the test extra installs it

    scheduler: Any = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", algorithm_type="sde-dpmsolver++"
    )
    discrete = DiscreteVPSDE(scheduler.alphas_cumprod)

    def epsilon(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), (float(timestep) + 1) / 1000, dtype=torch.float64)
        alpha, sigma = discrete.alpha(t)[:, None], discrete.sigma(t)[:, None]
        d = mixture.data_prediction(x, t, discrete).double()
        return ((x.double() - alpha * d) / sigma).to(x.dtype)

    model = CountingModel(epsilon)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = x_T * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        x = scheduler.step(model(x, timestep), timestep, x, generator=generator).prev_sample
    return x, model.rows / x.shape[0], model.calls
