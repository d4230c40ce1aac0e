"""Gaussian mixtures whose score under every forward SDE is known in closed form.

A mixture of isotropic Gaussians N(mu_k, s_k^2 I) with weights w_k, pushed through the forward
transition x_t = alpha x_0 + sigma noise, stays a mixture: N(alpha mu_k, (alpha^2 s_k^2 +
sigma^2) I). Its log-density, score, and the posterior means a model would learn (noise, x0, v,
denoiser) follow exactly. The ground truth of the tests, benchmarks, the demo and the GMM
sampling command: a sampler's output can be compared with exact samples and exact densities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adaptive_sde.diffusion._adapters import ModelAdapter
from adaptive_sde.diffusion._forward import ForwardSDE


@dataclass
class GaussianMixture:
    """A mixture of isotropic Gaussians with weights ``weights`` (K,), means ``means`` (K, D) and
    standard deviations ``stds`` (K,); scores and densities are computed in the dtype and on the
    device of ``means`` (see :meth:`to`)."""

    means: torch.Tensor  # (K, D)
    stds: torch.Tensor  # (K,)
    weights: torch.Tensor  # (K,)

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 1.0, std: float = 0.05) -> GaussianMixture:
        """``modes`` equal Gaussians on a circle in 2-D (the paper's toy problem)."""
        angle = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
        means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        return cls(
            means,
            torch.full((modes,), std, dtype=torch.float64),
            torch.full((modes,), 1 / modes, dtype=torch.float64),
        )

    @classmethod
    def random(cls, dim: int, modes: int = 4, std: float = 0.3, seed: int = 0) -> GaussianMixture:
        """Well separated components in ``dim`` dimensions, unequal weights and stds."""
        gen = torch.Generator().manual_seed(seed)
        means = torch.randn(modes, dim, generator=gen, dtype=torch.float64) * 0.5
        stds = std * (0.6 + 0.8 * torch.rand(modes, generator=gen, dtype=torch.float64))
        weights = 0.5 + torch.rand(modes, generator=gen, dtype=torch.float64)
        return cls(means.clamp(-1, 1), stds, weights / weights.sum())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GaussianMixture:
        """The same mixture with its parameters on ``device`` in ``dtype``."""
        return GaussianMixture(
            *(p.to(device=device, dtype=dtype) for p in (self.means, self.stds, self.weights))
        )

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact samples and their components."""
        gen = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.weights.cpu().double(), n, replacement=True, generator=gen)
        z = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        k, z = k.to(self.means.device), z.to(self.means)
        return self.means[k] + self.stds[k, None] * z, k

    def _marginal(
        self, sde: ForwardSDE | None, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        one = torch.ones(1, 1, dtype=self.means.dtype, device=self.means.device)
        if sde is None or t is None:
            return one, torch.zeros_like(one)
        t = t.to(one).reshape(-1)
        return sde.alpha(t)[:, None], sde.sigma(t)[:, None]

    def log_resp(
        self, x: torch.Tensor, sde: ForwardSDE | None = None, t: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log w_k N(x; alpha mu_k, v_k I) for every component, shape (B, K), and v_k (B, K).
        Squared distances by matrix products, so high dimensions stay cheap."""
        alpha, sigma = self._marginal(sde, t)
        x = x.to(self.means.dtype).reshape(x.shape[0], -1)
        var = alpha**2 * self.stds**2 + sigma**2  # (B, K)
        sq = (
            (x**2).sum(1, keepdim=True)
            - 2 * alpha * (x @ self.means.T)
            + alpha**2 * (self.means**2).sum(1)[None]
        )
        logp = self.weights.log() - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return logp, var

    def log_prob(
        self, x: torch.Tensor, sde: ForwardSDE | None = None, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.logsumexp(self.log_resp(x, sde, t)[0], dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor, sde: ForwardSDE) -> torch.Tensor:
        """The exact score of the forward marginal at ``t`` (one time per row), in x's dtype."""
        alpha, _ = self._marginal(sde, t)
        flat = x.to(self.means.dtype).reshape(x.shape[0], -1)
        logp, var = self.log_resp(flat, sde, t)
        # sum_k r_k (alpha mu_k - x) / v_k, with r_k the posterior responsibilities
        weight = torch.softmax(logp, dim=1) / var  # (B, K)
        score = alpha * (weight @ self.means) - weight.sum(1, keepdim=True) * flat
        return score.reshape(x.shape).to(x.dtype)

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor, sde: ForwardSDE) -> torch.Tensor:
        """The exact posterior mean E[x_0 | x_t = x] (one time per row), in x's dtype: per
        component mu_k + alpha s_k^2 / v_k (x - alpha mu_k), weighted by the responsibilities."""
        alpha, _ = self._marginal(sde, t)
        flat = x.to(self.means.dtype).reshape(x.shape[0], -1)
        logp, var = self.log_resp(flat, sde, t)
        resp = torch.softmax(logp, dim=1)  # (B, K)
        gain = resp * alpha * self.stds**2 / var  # (B, K)
        x0 = resp @ self.means + gain.sum(1, keepdim=True) * flat - alpha * (gain @ self.means)
        return x0.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: ForwardSDE) -> ModelAdapter:
        """``score(x, t)`` for :func:`~adaptive_sde.diffusion.sample`, with the exact
        ``data_prediction`` beside it."""
        return ModelAdapter(
            lambda x, t: self.score(x, t, sde), lambda x, t: self.data_prediction(x, t, sde)
        )

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely component of each sample."""
        return self.log_resp(x)[0].argmax(dim=1)

    def mode_tv(self, x: torch.Tensor) -> float:
        """Total variation between the weights and the share of samples ``x`` assigned to each
        component: 0 for perfect mode weights (up to Monte-Carlo error), 1 at worst."""
        counts = torch.bincount(self.assign(x), minlength=len(self.weights))
        shares = counts.to(self.weights) / x.shape[0]
        return 0.5 * float((shares - self.weights).abs().sum())


@dataclass
class Spread:
    """How one component's samples compare with the truth, in Monte-Carlo standard errors."""

    count: int
    variance_error: float  # relative error of the pooled per-dimension variance
    z_variance: float
    z_mean: float  # squared error of the mean, normalised (a chi-square, standardised)


def component_spread(mixture: GaussianMixture, x: torch.Tensor) -> list[Spread]:
    """Assign each sample to its most likely component; compare each component's sample mean
    and pooled variance with the truth. Exact samples give z-scores that are standard normal."""
    x = x.to(mixture.means.dtype).reshape(x.shape[0], -1)
    k = mixture.assign(x)
    d = mixture.dim
    out = []
    for j in range(len(mixture.weights)):
        xs = x[k == j]
        n = xs.shape[0]
        if n < 2:  # a component the samples missed: as wrong as it gets
            out.append(Spread(n, math.inf, math.inf, math.inf))
            continue
        s2 = float(mixture.stds[j] ** 2)
        mean = xs.mean(0)
        var = float(((xs - mean) ** 2).sum()) / (d * (n - 1))
        z_var = (var - s2) / (s2 * math.sqrt(2 / (d * (n - 1))))
        chi = float(((mean - mixture.means[j]) ** 2).sum()) / (d * s2 / n)
        out.append(Spread(n, var / s2 - 1, z_var, (chi - 1) / math.sqrt(2 / d)))
    return out
