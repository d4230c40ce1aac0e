"""One Gotta-Go-Fast step: Euler-Maruyama and a stochastic Improved Euler from two evaluations.

From ``(t, y)``, a step ``h`` and the Brownian increment ``dW`` over ``[t, t + h]``
(Jolicoeur-Martineau et al. 2021, arXiv:2105.14080, Algorithm 1; Roberts 2012, arXiv:1210.0933)::

    y_em  = y + h f(t, y) + g(t, y) dW                            Euler-Maruyama
    K1    = h f(t, y)          + g(t, y)          (dW - S sqrt(h))
    K2    = h f(t + h, y + K1) + g(t + h, y + K1) (dW + S sqrt(h))
    y_hi  = y + (K1 + K2) / 2                                      stochastic Improved Euler
    error = y_hi - y_em

``S`` is zero for Stratonovich SDEs (the scheme is then stochastic Heun, which converges to the
Stratonovich solution) and for additive noise (where it cancels). For Itô SDEs with multiplicative
noise, plain Heun would converge to the *Stratonovich* solution; Roberts' fix draws ``S = +-1``
independently per sample, per Brownian channel and per attempt, which makes the scheme converge
to the Itô solution at no extra cost: strong order 1 for diagonal and scalar noise, 1/2 for
general noise with several channels. One sign shared by all channels converges to a wrong limit.

Adaptive steps and signs (our addition). With several Brownian channels that feed the same component
(Itô general noise, m >= 2), the error estimate contains the cross terms ``S_j S_k h``: whether a
step is accepted then depends on the signs, the accepted steps select their signs, and the mean of
the solution is biased by an amount that does not shrink with the tolerance (on
``adaptive_sde._bench.problems.COMMUTING_ITO``, ``adaptive-sde bench sign_bias``: +0.02 to +0.03 on
a mean of 1.35, 2.7 to 4 standard errors of 60 000 paths, at rtol 0.1 to 0.005). ``decouple_signs``
removes the bias: the error estimate uses signs ``S``, the kept result a second, independent set
``S'`` and one more evaluation, so the kept result's signs never influence which steps are taken.
Diagonal noise (component i driven by channel i alone, g_i depending on y_i alone, torchsde's
convention) and scalar noise have no cross terms and need no third evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptive_sde import _random
from adaptive_sde._sde import SDEAdapter

_SIGN_TAG = 0x524F424552545321  # "ROBERTS!"
_KEPT_SIGN_TAG = 0x4B45505453494753  # "KEPTSIGS"


@dataclass(frozen=True)
class StepResult:
    """The outcome of one attempted step, for the rows that were stepped.

    ``y_next`` is the state to keep on acceptance (the higher-order ``y_hi`` with extrapolation,
    ``y_em`` without); ``y_em`` feeds the paper's tolerance; ``error`` is ``y_hi - y_em``, and
    not finite wherever ``y_next`` or ``y_em`` is not (the controller's one check of a
    proposal's finiteness);
    ``start_finite`` is false for rows whose drift or diffusion was not finite at the step's
    start, where no smaller step can help. For additive noise (with ``g`` defined), ``g_start``
    and ``g_end`` are the diffusion at the two stages, ``(t, y)`` and ``(t_next, y + K1)``: the
    loop compares a step's ``g_end`` with the next step's ``g_start``, at the same time but
    another state, to catch a ``g`` that depends on ``y`` despite the declared noise type.
    """

    y_next: torch.Tensor
    y_em: torch.Tensor
    error: torch.Tensor
    start_finite: torch.Tensor
    g_start: torch.Tensor | None = None
    g_end: torch.Tensor | None = None


class GottaGoFastStep:
    """The Euler-Maruyama / stochastic Improved Euler pair with a free error estimate.

    **Arguments:**

    - ``sde``: the :class:`~adaptive_sde._sde.SDEAdapter` of the problem.
    - ``extrapolate``: keep the higher-order result on acceptance (the paper's default, "one
      simple trick"); ``False`` keeps the Euler-Maruyama result, for ablations only: with
      adaptive steps and multiplicative noise, Euler-Maruyama depends on the quadratic variation
      of a partition chosen from the path, and is biased.
    - ``decouple_signs``: draw the kept result's Roberts signs independently of the error
      estimate's (see the module docstring); ``None`` turns it on where it is needed, for Itô
      SDEs with general noise and two or more channels.

    Two evaluations of ``(f, g)`` per attempt, whatever its outcome; three with decoupled signs.
    """

    def __init__(
        self,
        sde: SDEAdapter,
        *,
        extrapolate: bool = True,
        decouple_signs: bool | None = None,
    ) -> None:
        self.sde = sde
        self.extrapolate = extrapolate
        self.needs_signs = sde.sde_type == "ito" and not sde.is_additive
        if decouple_signs is None:
            decouple_signs = sde.noise_type == "general" and (sde.brownian_size or 0) >= 2
        self.decouple_signs = bool(decouple_signs) and self.needs_signs and extrapolate
        self.evaluations_per_step = 3 if self.decouple_signs else 2

    def step(
        self,
        t: torch.Tensor,
        t_next: torch.Tensor,
        y: torch.Tensor,
        dw: torch.Tensor,
        signs: torch.Tensor | None,
        start: tuple[torch.Tensor, torch.Tensor] | None = None,
        kept_signs: torch.Tensor | None = None,
    ) -> StepResult:
        """Attempt the step from ``t`` to ``t_next`` (both of shape (n,)).

        ``signs`` are Roberts' signs, shape (n, m), when :attr:`needs_signs`; ``kept_signs`` the
        independent second set when :attr:`decouple_signs`; ``start`` an already computed
        ``(f, g)`` at ``(t, y)``, to avoid evaluating it twice.
        """
        sde = self.sde
        h = (t_next - t).to(y.dtype)[:, None]
        sqrt_h = torch.sqrt(h)
        g_start: torch.Tensor | None = None
        if sde.has_g:
            f1, g1 = start if start is not None else sde.drift_and_diffusion(t, y)
            g_dw = sde.product(g1, dw)
            g_start = g1

            def g1_times(v: torch.Tensor) -> torch.Tensor:
                return sde.product(g1, v)
        else:
            f1, g_dw = sde.drift_and_product(t, y, dw)

            def g1_times(v: torch.Tensor) -> torch.Tensor:
                return sde.product_at(t, y, v)

        start_finite = torch.isfinite(f1).all(dim=1) & torch.isfinite(g_dw).all(dim=1)
        y_em = y + h * f1 + g_dw
        watch_g = sde.is_additive and sde.has_g
        g_end: list[torch.Tensor] = []

        def improved_euler(s: torch.Tensor | None) -> torch.Tensor:
            shift = None if s is None else s * sqrt_h
            k1 = h * f1 + (g_dw if shift is None else g_dw - g1_times(shift))
            v = dw if shift is None else dw + shift
            if watch_g:
                f2, g2 = sde.drift_and_diffusion(t_next, y + k1)
                g_end.append(g2.detach())
                g2_v = sde.product(g2, v)
            else:
                f2, g2_v = sde.drift_and_product(t_next, y + k1, v)
            return y + 0.5 * (k1 + h * f2 + g2_v)

        y_hi = improved_euler(signs)
        error = y_hi - y_em  # not finite wherever y_hi or y_em is not
        if not self.extrapolate:
            y_next = y_em
        elif self.decouple_signs:
            y_next = improved_euler(kept_signs)
            error = error + 0.0 * y_next.detach()  # and wherever the kept result is not
        else:
            y_next = y_hi
        return StepResult(
            y_next=y_next,
            y_em=y_em,
            error=error,
            start_finite=start_finite,
            g_start=g_start.detach() if watch_g and g_start is not None else None,
            g_end=g_end[0] if watch_g else None,
        )


class RobertsSigns:
    """Roberts' random signs for a solve, counter-based like the Brownian register.

    One stream per row of the Brownian motion. The error estimate's signs are held until the
    step is accepted, like its Brownian increment (the ``accepted`` count is their counter); the
    kept result's decoupled signs are fresh per attempt (the attempt count is theirs).
    """

    def __init__(
        self, seed: int, ids: torch.Tensor, size: int, dtype: torch.dtype, decoupled: bool
    ) -> None:
        self.size, self.dtype = size, dtype
        self._keys = _random.stream_keys(seed, ids, _SIGN_TAG)
        self._kept_keys = _random.stream_keys(seed, ids, _KEPT_SIGN_TAG) if decoupled else None

    def draw(
        self,
        rows: torch.Tensor | None,
        accepted: torch.Tensor,
        attempts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(signs, kept_signs)`` for ``rows`` (all rows for ``None``), shape (n, size)."""
        keys = self._keys if rows is None else self._keys[rows]
        signs = _random.signs(keys, accepted, self.size, self.dtype)
        if self._kept_keys is None:
            return signs, None
        kept_keys = self._kept_keys if rows is None else self._kept_keys[rows]
        return signs, _random.signs(kept_keys, attempts, self.size, self.dtype)
