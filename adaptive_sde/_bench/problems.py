"""SDEs with exact solutions, shared by the tests, the benchmarks and the demo.

Each :class:`Problem` carries the SDE, its initial state, and the exact solution at ``t1`` as a
function of the Brownian path (``exact``), plus the exact mean and variance of ``X(t1)``. Most are
from Kloeden & Platen, *Numerical Solution of SDEs* (1992), §4.4, where the solution depends on
the path only through ``W(t1) - W(t0)``; the Ornstein-Uhlenbeck solution is a stochastic integral
over the path, computed from the same Brownian motion on a fine grid with the exact transition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

ExactFn = Callable[
    [torch.Tensor, Callable[[float, float], torch.Tensor], float, float], torch.Tensor
]


class GeometricBrownianMotion(nn.Module):
    """dX = mu X dt + sigma X dW (Itô) or ∘dW (Stratonovich), diagonal noise."""

    noise_type = "diagonal"

    def __init__(self, mu: float, sigma: float, sde_type: str = "ito") -> None:
        super().__init__()
        self.mu, self.sigma, self.sde_type = mu, sigma, sde_type

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma * y


class OrnsteinUhlenbeck(nn.Module):
    """dX = -theta X dt + sigma dW, additive noise (Itô = Stratonovich)."""

    noise_type = "additive"

    def __init__(self, theta: float, sigma: float, d: int = 1, sde_type: str = "ito") -> None:
        super().__init__()
        self.theta, self.sigma, self.d, self.sde_type = theta, sigma, d, sde_type

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.theta * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.d, dtype=y.dtype, device=y.device)
        return (self.sigma * eye).expand(y.shape[0], self.d, self.d)


class ScalarNoiseGBM(nn.Module):
    """Two geometric Brownian motions driven by one Brownian motion (scalar noise):
    dX_i = mu_i X_i dt + sigma_i X_i dW (Itô) or ∘dW (Stratonovich)."""

    noise_type = "scalar"
    mu: torch.Tensor
    sigma: torch.Tensor

    def __init__(
        self, mu: tuple[float, float], sigma: tuple[float, float], sde_type: str = "ito"
    ) -> None:
        super().__init__()
        self.sde_type = sde_type
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float64))
        self.register_buffer("sigma", torch.tensor(sigma, dtype=torch.float64))

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu.to(y.dtype) * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.sigma.to(y.dtype) * y)[:, :, None]


class CommutingLinear(nn.Module):
    """General noise, d = 2, m = 2 (Itô): dX_i = a_i X_i dt + sum_j b_ji X_i dW_j. The noise
    matrices are diagonal, so they commute and X_i(t) = X_i(0) exp((a_i - |b_.i|^2 / 2) t +
    sum_j b_ji W_j(t)). Every component feeds on both channels, so Roberts' signs must be drawn
    per channel: one sign shared by both converges to a wrong limit."""

    noise_type = "general"
    a: torch.Tensor
    b: torch.Tensor

    def __init__(
        self, a: tuple[float, float], b: tuple[tuple[float, float], ...], sde_type: str = "ito"
    ) -> None:
        super().__init__()
        self.sde_type = sde_type
        self.register_buffer("a", torch.tensor(a, dtype=torch.float64))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float64))  # b[j, i]

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a.to(y.dtype) * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y[:, :, None] * self.b.T.to(y.dtype)[None]


class SinhProblem(nn.Module):
    """Kloeden & Platen (4.4.20): dX = a²/2 X dt + a sqrt(1 + X²) dW (Itô), with
    X(t) = sinh(a W(t) + asinh X(0))."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a**2 * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * torch.sqrt(1 + y**2)


class TanhProblem(nn.Module):
    """Kloeden & Platen §4.4: dX = -a² X (1 - X²) dt + a (1 - X²) dW (Itô), with
    X(t) = tanh(a W(t) + atanh X(0)); the state stays in (-1, 1)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -(self.a**2) * y * (1 - y**2)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * (1 - y**2)


@dataclass(frozen=True)
class Problem:
    """An SDE with its exact solution.

    ``exact(x0, bm, t0, t1)`` is X(t1) for the path of ``bm`` (a callable ``bm(ta, tb)`` giving
    increments of shape (batch, m)); ``mean(t)`` and ``variance(t)`` are the exact moments of each
    component, started from ``x0``; ``strong_order`` is the strong order of the Gotta-Go-Fast pair
    with fixed steps. The tag ``"path-functional"`` marks solutions that depend on the whole
    path, not only on W(t1) - W(t0).
    """

    name: str
    make_sde: Callable[[], nn.Module]
    x0: tuple[float, ...]
    t1: float
    brownian_size: int
    strong_order: float
    exact: ExactFn
    mean: Callable[[float], torch.Tensor]
    variance: Callable[[float], torch.Tensor]
    tags: tuple[str, ...] = field(default=())

    @property
    def state_size(self) -> int:
        return len(self.x0)

    def initial(self, batch: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(self.x0, dtype=dtype).expand(batch, -1).clone()


def _gbm(name: str, mu: float, sigma: float, sde_type: str) -> Problem:
    drift = mu - 0.5 * sigma**2 if sde_type == "ito" else mu
    ito_mu = mu if sde_type == "ito" else mu + 0.5 * sigma**2

    def exact(x0, bm, t0, t1):
        return x0 * torch.exp(drift * (t1 - t0) + sigma * bm(t0, t1))

    return Problem(
        name=name,
        make_sde=lambda: GeometricBrownianMotion(mu, sigma, sde_type),
        x0=(1.0,),
        t1=1.0,
        brownian_size=1,
        strong_order=1.0,
        exact=exact,
        mean=lambda t: torch.tensor([math.exp(ito_mu * t)]),
        variance=lambda t: torch.tensor([math.exp(2 * ito_mu * t) * (math.exp(sigma**2 * t) - 1)]),
        tags=("multiplicative", sde_type),
    )


def _ou(theta: float, sigma: float, x0: float, sde_type: str = "ito") -> Problem:
    def exact(x0_, bm, t0, t1, steps: int = 4096):
        # Exact transition on a fine grid: X <- e^{-theta dt} X + sigma e^{-theta dt/2} dW; the
        # midpoint weight makes the quadrature error O(dt) in total, far below the test errors.
        dt = (t1 - t0) / steps
        decay = math.exp(-theta * dt)
        x = x0_.clone()
        for k in range(steps):
            x = decay * x + sigma * math.exp(-theta * dt / 2) * bm(t0 + k * dt, t0 + (k + 1) * dt)
        return x

    return Problem(
        name=f"ou_additive_{sde_type}",
        make_sde=lambda: OrnsteinUhlenbeck(theta, sigma, sde_type=sde_type),
        x0=(x0,),
        t1=1.0,
        brownian_size=1,
        strong_order=1.0,
        exact=exact,
        mean=lambda t: torch.tensor([x0 * math.exp(-theta * t)]),
        variance=lambda t: torch.tensor([sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * t))]),
        tags=("additive", sde_type, "path-functional"),
    )


def _scalar_gbm(sde_type: str = "ito") -> Problem:
    mu, sigma = (0.5, -0.2), (0.6, 0.3)
    correction = 0.5 if sde_type == "ito" else 0.0
    ito_mu = (
        mu if sde_type == "ito" else tuple(m + 0.5 * s**2 for m, s in zip(mu, sigma, strict=True))
    )

    def exact(x0, bm, t0, t1):
        w = bm(t0, t1)  # (batch, 1)
        m, s = torch.tensor(mu, dtype=x0.dtype), torch.tensor(sigma, dtype=x0.dtype)
        return x0 * torch.exp((m - correction * s**2) * (t1 - t0) + s * w)

    return Problem(
        name=f"gbm_scalar_noise_{sde_type}",
        make_sde=lambda: ScalarNoiseGBM(mu, sigma, sde_type),
        x0=(1.0, 2.0),
        t1=1.0,
        brownian_size=1,
        strong_order=1.0,
        exact=exact,
        mean=lambda t: torch.tensor([math.exp(ito_mu[0] * t), 2 * math.exp(ito_mu[1] * t)]),
        variance=lambda t: torch.tensor(
            [
                x**2 * math.exp(2 * m * t) * (math.exp(s**2 * t) - 1)
                for x, m, s in zip((1.0, 2.0), ito_mu, sigma, strict=True)
            ]
        ),
        tags=("multiplicative", sde_type),
    )


COMMUTING_A = (0.3, 0.3)
COMMUTING_B = ((0.8, 0.5), (0.6, -0.7))  # b[j][i]: channel j, component i


def _commuting(sde_type: str = "ito") -> Problem:
    a, b = COMMUTING_A, COMMUTING_B
    ito_a = (
        a
        if sde_type == "ito"
        else tuple(a[i] + 0.5 * sum(b[j][i] ** 2 for j in range(2)) for i in range(2))
    )

    def exact(x0, bm, t0, t1):
        w = bm(t0, t1)  # (batch, 2)
        bt = torch.tensor(b, dtype=x0.dtype)
        at = torch.tensor(ito_a, dtype=x0.dtype)
        return x0 * torch.exp((at - 0.5 * (bt**2).sum(0)) * (t1 - t0) + w @ bt)

    def variance(t: float) -> torch.Tensor:
        return torch.tensor(
            [
                math.exp(2 * ito_a[i] * t) * (math.exp(sum(b[j][i] ** 2 for j in range(2)) * t) - 1)
                for i in range(2)
            ]
        )

    return Problem(
        name=f"commuting_general_{sde_type}",
        make_sde=lambda: CommutingLinear(a, b, sde_type),
        x0=(1.0, 1.0),
        t1=1.0,
        brownian_size=2,
        strong_order=0.5 if sde_type == "ito" else 1.0,
        exact=exact,
        mean=lambda t: torch.tensor([math.exp(ito_a[0] * t), math.exp(ito_a[1] * t)]),
        variance=variance,
        tags=("multiplicative", "general", sde_type),
    )


def _sinh(a: float = 1.0, x0: float = 0.5) -> Problem:
    def exact(x0_, bm, t0, t1):
        return torch.sinh(a * bm(t0, t1) + torch.asinh(x0_))

    # sinh(aW + c) with W ~ N(0, t): E = sinh(c) e^{a²t/2}; E[sinh²] = (cosh(2c) e^{2a²t} - 1)/2.
    c = math.asinh(x0)
    return Problem(
        name="kp_sinh",
        make_sde=lambda: SinhProblem(a),
        x0=(x0,),
        t1=1.0,
        brownian_size=1,
        strong_order=1.0,
        exact=exact,
        mean=lambda t: torch.tensor([math.sinh(c) * math.exp(a * a * t / 2)]),
        variance=lambda t: torch.tensor(
            [
                (math.cosh(2 * c) * math.exp(2 * a * a * t) - 1) / 2
                - (math.sinh(c) * math.exp(a * a * t / 2)) ** 2
            ]
        ),
        tags=("multiplicative", "nonlinear", "ito"),
    )


def _tanh(a: float = 1.0, x0: float = 0.2) -> Problem:
    def exact(x0_, bm, t0, t1):
        return torch.tanh(a * bm(t0, t1) + torch.atanh(x0_))

    def moments(t: float) -> tuple[float, float]:
        # E over W ~ N(0, t) by Gauss-Hermite quadrature (no closed form).
        import numpy as np

        nodes, weights = np.polynomial.hermite_e.hermegauss(80)
        values = np.tanh(a * math.sqrt(t) * nodes + math.atanh(x0))
        w = weights / weights.sum()
        mean = float((w * values).sum())
        return mean, float((w * values**2).sum()) - mean**2

    return Problem(
        name="kp_tanh",
        make_sde=lambda: TanhProblem(a),
        x0=(x0,),
        t1=1.0,
        brownian_size=1,
        strong_order=1.0,
        exact=exact,
        mean=lambda t: torch.tensor([moments(t)[0]]),
        variance=lambda t: torch.tensor([moments(t)[1]]),
        tags=("multiplicative", "nonlinear", "ito"),
    )


GBM_ITO = _gbm("gbm_ito", mu=1.0, sigma=1.0, sde_type="ito")
GBM_STRATONOVICH = _gbm("gbm_stratonovich", mu=1.0, sigma=1.0, sde_type="stratonovich")
OU = _ou(theta=1.0, sigma=0.5, x0=1.0)
OU_STRATONOVICH = _ou(theta=1.0, sigma=0.5, x0=1.0, sde_type="stratonovich")
SCALAR_GBM = _scalar_gbm()
SCALAR_GBM_STRATONOVICH = _scalar_gbm("stratonovich")
COMMUTING_ITO = _commuting("ito")
COMMUTING_STRATONOVICH = _commuting("stratonovich")
KP_SINH = _sinh()
KP_TANH = _tanh()

PROBLEMS: tuple[Problem, ...] = (
    GBM_ITO,
    GBM_STRATONOVICH,
    OU,
    OU_STRATONOVICH,
    SCALAR_GBM,
    SCALAR_GBM_STRATONOVICH,
    COMMUTING_ITO,
    COMMUTING_STRATONOVICH,
    KP_SINH,
    KP_TANH,
)

# The factory under a public name, for GBMs with other parameters (the tests, the benchmarks).
make_gbm = _gbm
