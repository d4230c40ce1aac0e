"""Forward SDEs of score-based generative models (Song et al., ICLR 2021, §3.4 and App. B).

Each forward SDE ``dx = f(x, t) dt + g(t) dW`` on ``t in [0, T]`` has a Gaussian transition
``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)``; its prior ``N(0, sigma(T)^2 I)`` (or the VP / sub-VP
standard normal) is where sampling starts, and ``eps`` the default time where it ends.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch


class ForwardSDE(ABC):
    """The interface the reverse-time SDE, the samplers and the model adapters rely on."""

    T: float = 1.0
    eps: float  # default end time of sampling

    @abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t) for x of shape (B, ...) and t of shape (B,)."""

    @abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), shape of t."""

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Mean coefficient: E[x_t | x_0] = alpha(t) x_0."""

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Standard deviation of x_t given x_0."""

    def prior_std(self) -> float:
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64)))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) = log(alpha / sigma), half the log signal-to-noise ratio; decreasing in t.
        The clock of the signal-to-noise-time sampler (Lu et al. 2022, DPM-Solver)."""
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        """The time t with ``half_log_snr(t) = lam``, the inverse of :meth:`half_log_snr`.
        Here by bisection in float64 (subclasses with a closed form override it)."""
        lam = lam.double()
        lo = torch.full_like(lam, 1e-12 * self.T)
        hi = torch.full_like(lam, float(self.T))
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.half_log_snr(mid) > lam  # still too clean: the answer is later
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def check_eps(self, eps: float) -> float:
        if not (isinstance(eps, (int, float)) and 0 < eps < self.T):
            raise ValueError(f"eps must be a number in (0, T) = (0, {self.T}), got {eps!r}")
        return float(eps)


class VPSDE(ForwardSDE):
    """Variance preserving: dx = -beta(t)/2 x dt + sqrt(beta(t)) dW, beta linear in t (DDPM's
    continuous limit). alpha = exp(-int beta / 2), sigma = sqrt(1 - alpha^2)."""

    eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> None:
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.T = beta_min, beta_max, T

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _time_of_beta_integral(self, b: torch.Tensor) -> torch.Tensor:
        """The root t >= 0 of beta_min t + (beta_max - beta_min) t^2 / 2 = b, written without
        cancellation."""
        slope = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * b))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        # alpha^2 / sigma^2 = 1 / expm1(int beta)
        return -0.5 * torch.log(torch.expm1(self._beta_integral(t)))

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        lam = lam.double()
        return self._time_of_beta_integral(torch.nn.functional.softplus(-2 * lam))

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * _expand(self.beta(t), x) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.beta(t))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * self._beta_integral(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-self._beta_integral(t)))


class SubVPSDE(VPSDE):
    """Sub-variance preserving: the VP drift with g^2 = beta(t) (1 - exp(-2 int beta));
    sigma = 1 - exp(-int beta) (Song et al. 2021, eq. 11)."""

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self._beta_integral(t)))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self._beta_integral(t))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        b = self._beta_integral(t)
        return -0.5 * b - torch.log(-torch.expm1(-b))

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        # e^lam = r / (1 - r^2) with r = alpha = exp(-b / 2): 1/r = (e^-lam + sqrt(e^-2lam + 4)) / 2
        inv = torch.exp(-lam.double())
        return self._time_of_beta_integral(2 * torch.log(0.5 * (inv + torch.sqrt(inv**2 + 4))))


class VESDE(ForwardSDE):
    """Variance exploding: dx = sqrt(d s^2/dt) dW with the noise scale s(t) = sigma_min
    (sigma_max / sigma_min)^t (Song et al. 2021, eq. 9). alpha = 1, and ``sigma(t)`` is the exact
    transition std from t = 0, sqrt(s(t)^2 - sigma_min^2); Song et al.'s networks are conditioned
    on s(t) (``noise_scale``), which differs from it only near t = 0."""

    eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.T = sigma_min, sigma_max, T

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def noise_scale(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.noise_scale(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        ratio = math.log(self.sigma_max / self.sigma_min)
        return self.sigma_min * torch.sqrt(torch.expm1(2 * ratio * t))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.sigma(t))

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        ratio = math.log(self.sigma_max / self.sigma_min)
        return torch.log1p(torch.exp(-2 * lam.double()) / self.sigma_min**2) / (2 * ratio)


class EDMSDE(ForwardSDE):
    """The forward SDE of EDM and k-diffusion (Karras et al. 2022, arXiv:2206.00364): alpha = 1
    and sigma(t) = t, so time *is* the noise level, dx = sqrt(2 t) dW on [0, sigma_max]. Sampling
    runs from ``sigma_max`` down to ``sigma_min`` (the default ``eps``); a denoiser D(x, sigma) is
    the data prediction as it stands."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.T = self.sigma_max
        self.eps = self.sigma_min

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(2 * t)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(t)

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.exp(-lam.double())


ZERO_SNR_ALPHA_BAR = 2.0**-24
"""The final alpha-bar that stands in for 0 in a zero-terminal-SNR :class:`DiscreteVPSDE`."""


class DiscreteVPSDE(ForwardSDE):
    """The VP SDE of a discrete-time DDPM schedule: alpha(t)^2 interpolates the model's
    cumulative products alpha-bar_k (log-linearly) at t = (k + 1) / N, k = 0 .. N-1, so a
    diffusers model trained on ``num_train_timesteps = N`` steps is sampled on its own schedule.
    beta(t) = -d log alpha-bar / dt on each interval.

    A zero-terminal-SNR schedule (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
    Steps are Flawed"; diffusers' ``rescale_betas_zero_snr=True``) ends at alpha-bar = 0, where
    x_T is pure noise and the prior is exactly N(0, I). Its logarithm, the half log-SNR and the
    time of a given SNR would be infinite there, so the last value is replaced by
    :data:`ZERO_SNR_ALPHA_BAR` = 2^-24 (diffusers' own stand-in in its Euler and DPM
    schedulers), or half the one before it if that is smaller: the prior's variance is
    1 - 2^-24, and every coefficient stays finite."""

    eps = 1e-3

    def __init__(self, alphas_cumprod: torch.Tensor, T: float = 1.0) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten().clone()
        if abar.numel() >= 2 and float(abar[-1]) == 0.0 and float(abar[-2]) > 0.0:
            abar[-1] = min(ZERO_SNR_ALPHA_BAR, 0.5 * float(abar[-2]))
        if abar.numel() < 2 or not bool(((abar > 0) & (abar <= 1)).all()):
            raise ValueError(
                "alphas_cumprod must hold at least two values in (0, 1] (the last may be 0, a "
                "zero-terminal-SNR schedule)"
            )
        if not bool((abar[1:] <= abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be non-increasing")
        self.N = abar.numel()
        self.T = T
        self.eps = max(1e-3, 0.5 / self.N)
        # log alpha-bar at t = k / N for k = 0 .. N, with alpha-bar(0) = 1.
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), abar.log()])

    def _interp(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log alpha-bar(t) and its slope in t."""
        pos = torch.clamp(t.double() / self.T * self.N, 0, self.N)
        k = torch.clamp(pos.floor().long(), max=self.N - 1)
        table = self._log_abar.to(t.device)
        lo, hi = table[k], table[k + 1]
        frac = pos - k
        return (lo + frac * (hi - lo)).to(t.dtype), ((hi - lo) * self.N / self.T).to(t.dtype)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return -self._interp(t)[1]

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * _expand(self.beta(t), x) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp(self.beta(t), min=0))

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * self._interp(t)[0])

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(self._interp(t)[0]))

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        log_abar = self._interp(t)[0]
        return 0.5 * (log_abar - torch.log(-torch.expm1(log_abar)))

    def time_at(self, lam: torch.Tensor) -> torch.Tensor:
        # alpha-bar = sigmoid(2 lam); log alpha-bar is linear in t between the knots k / N.
        target = -torch.nn.functional.softplus(-2 * lam.double())
        table = self._log_abar.to(lam.device)
        k = torch.searchsorted(-table, -target).clamp(1, self.N) - 1
        lo, hi = table[k], table[k + 1]
        frac = ((target - lo) / (hi - lo)).clamp(0, 1)
        return (k + frac) * self.T / self.N

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The model's (fractional) timestep index for continuous t: k = t N / T - 1."""
        return t / self.T * self.N - 1


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (B,) shaped to broadcast against x (B, ...)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))
