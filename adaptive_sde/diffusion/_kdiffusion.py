"""The Gotta-Go-Fast sampler in k-diffusion's calling convention (Crowson's ``k_diffusion``, as
used by ComfyUI and AUTOMATIC1111): ``sample_x(model, x, sigma_min, sigma_max, extra_args=None,
callback=None, disable=None, ...)`` with a denoiser ``model(x, sigma, **extra_args)`` trained on
x_0 + sigma noise (Karras et al. 2022, EDM).

EDM's forward process is alpha = 1, sigma(t) = t (:class:`EDMSDE`), so the denoiser *is* the
data prediction D that the signal-to-noise-time sampler steps on: no conversion to a noise
prediction or a score is left to the caller, and the model is called at noise levels in
[sigma_min, sigma_max] only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

from adaptive_sde import _options
from adaptive_sde._controller import StepController
from adaptive_sde.diffusion._adapters import score_from_denoiser
from adaptive_sde.diffusion._forward import EDMSDE
from adaptive_sde.diffusion._sample import SampleStats, sample

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def sample_gtgf(
    model: Denoiser,
    x: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | None = None,
    dt_max: float | None = None,
    seed: int | torch.Generator | None = None,
    sample_ids: torch.Tensor | None = None,
    per_sample: bool = True,
    max_steps: int | None = None,
    return_info: bool = False,
    controller: StepController | None = None,
    generator: int | torch.Generator | None = None,
    h_init: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, SampleStats]:
    """Samples a k-diffusion denoiser with the adaptive Gotta-Go-Fast pair in signal-to-noise
    time (the reverse SDE, as k-diffusion's samplers with eta = 1), from ``sigma_max`` down to
    ``sigma_min``, and returns the denoised sample ``model(x, sigma_min)`` there.

    **Arguments:**

    - ``model(x, sigma, **extra_args)``: the denoiser, sigma of shape (n,); it is called on the
      samples still running only, with ``extra_args`` tensors whose first dimension is the batch
      restricted to those rows (other values pass unchanged).
    - ``x``: the starting noise, already scaled by ``sigma_max`` (``torch.randn(shape) *
      sigma_max``), as k-diffusion's samplers take it.
    - ``sigma_min``, ``sigma_max``: the noise levels sampling ends and starts at (EDM: 0.002, 80).
    - ``callback(info)``: after every pass of the sampler in which some samples accepted a step,
      with k-diffusion's keys: ``x`` (every sample's current state, (B, ...)), ``i`` (the pass),
      ``sigma`` and ``sigma_hat`` (every sample's noise level, (B,): each sample takes its own
      steps), ``denoised`` (every sample's latest data prediction; zeros before its first
      accepted step), and ``rows`` (the samples that moved).
    - ``disable``: turns the progress bar off (``None``: on where stderr is a terminal).
    - ``rtol``, ``atol``, ``dt0``, ``dt_max``, ``per_sample``, ``max_steps``, ``sample_ids``,
      ``controller``: as in :func:`sample`; ``seed`` seeds the Brownian paths (``None``: one
      draw from PyTorch's global generator, so ``torch.manual_seed`` fixes the result, as with
      k-diffusion). ``generator`` and ``h_init`` are the old names of ``seed`` and ``dt0`` (a
      ``DeprecationWarning``).
    - ``return_info``: also return the :class:`SampleStats`.

    The solver runs in float32 (float64 for a float64 ``x``); a half-precision ``x`` is handed
    to the model in its own dtype, and the result is returned in x's dtype. Runs under
    ``torch.no_grad()``, as k-diffusion's samplers do.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (batch, ...), got {got}")
    sde = EDMSDE(sigma_min, sigma_max)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    model_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else None
    on_accept = None if callback is None else _CallbackRelay(callback, x, dtype, sde.sigma_max)
    out, stats = sample(
        score_from_denoiser(_within(model, sde), sde),
        sde,
        tuple(x.shape),
        rtol=rtol,
        atol=atol,
        dt0=_options.renamed("h_init", h_init, dt0),
        dt_max=dt_max,
        seed=_options.renamed("generator", generator, seed),
        controller=controller,
        sample_ids=sample_ids,
        progress=_progress(disable),
        per_sample=per_sample,
        max_steps=max_steps,
        dtype=dtype,
        device=x.device,
        x_T=x.to(dtype),
        model_dtype=model_dtype,
        space="snr",
        model_kwargs=extra_args,
        on_accept=on_accept,
    )
    out = out.to(x.dtype)
    return (out, stats) if return_info else out


def _within(model: Denoiser, sde: EDMSDE) -> Denoiser:
    """``model`` called with sigma held to [sigma_min, sigma_max] in sigma's dtype: the
    sampler's clock ends exactly at both, but exp(-log(sigma)) may round one unit below. A
    sigma further out is a bug, and an error."""

    def call(x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        lo = torch.tensor(sde.sigma_min, dtype=sigma.dtype, device=sigma.device)
        hi = torch.tensor(sde.sigma_max, dtype=sigma.dtype, device=sigma.device)
        slack = 1e-5 if sigma.dtype == torch.float64 else 1e-3
        if bool((sigma < lo * (1 - slack)).any() | (sigma > hi * (1 + slack)).any()):
            raise RuntimeError(
                f"sample_gtgf would call the model at sigma in [{float(sigma.min()):.6g}, "
                f"{float(sigma.max()):.6g}], outside [sigma_min, sigma_max] = "
                f"[{sde.sigma_min:g}, {sde.sigma_max:g}]; please report this"
            )
        return model(x, torch.clamp(sigma, lo, hi), **extra_args)

    return call


def _progress(disable: bool | None) -> bool:
    """tqdm's meaning of ``disable``: ``None`` shows the bar only on a terminal."""
    if disable is None:
        return sys.stderr.isatty()
    if not isinstance(disable, bool):
        raise TypeError(f"disable must be True, False or None, got {type(disable).__name__}")
    return not disable


class _CallbackRelay:
    """The sampler's ``on_accept`` hook as k-diffusion's ``callback``: keeps every sample's
    latest state, noise level and data prediction, and hands the whole batch to ``callback``."""

    def __init__(
        self, callback: Callback, x: torch.Tensor, dtype: torch.dtype, sigma_max: float
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self.callback, self.shape, self.out_dtype = callback, tuple(x.shape), x.dtype
        batch = x.shape[0]
        self.x = x.detach().reshape(batch, -1).to(dtype).clone()
        self.denoised = torch.zeros_like(self.x)
        self.sigma = torch.full((batch,), sigma_max, dtype=torch.float64, device=x.device)
        self.i = 0

    def __call__(
        self, rows: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, d: torch.Tensor
    ) -> None:
        self.x[rows] = x.to(self.x.dtype)
        self.denoised[rows] = d.to(self.x.dtype)
        self.sigma[rows] = torch.exp(-lam)
        sigma = self.sigma.to(self.out_dtype)
        self.callback(
            {
                "x": self.x.reshape(self.shape).to(self.out_dtype),
                "i": self.i,
                "sigma": sigma,
                "sigma_hat": sigma,
                "denoised": self.denoised.reshape(self.shape).to(self.out_dtype),
                "rows": rows,
            }
        )
        self.i += 1
