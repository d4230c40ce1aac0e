"""The reverse-time SDE and the probability-flow ODE of a forward SDE, as torchsde SDEs.

Reverse time (Anderson 1982; Song et al. 2021, eq. 6 and 13) from t = T down to t = eps::

    dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dW        (reverse SDE)
    dx = [f(x, t) - g(t)^2 score(x, t) / 2] dt                (probability-flow ODE)

torchsde and :func:`adaptive_sde.solve` integrate forward in time, so both are written in the
flipped time s = T - t, which runs from 0 to T - eps: the drift changes sign, the diffusion does
not. The state is the flattened data (B, D); the score function sees the data's own shape
(B, *shape) and t of shape (B,). The noise does not depend on the state, so the Itô and the
Stratonovich forms agree; the SDE declares itself Stratonovich by default, which gives the
Gotta-Go-Fast step the paper's exact form (no Roberts signs), and Itô on request, for torchsde's
Itô-only methods such as ``euler``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from adaptive_sde._brownian import BrownianRegister
from adaptive_sde.diffusion._forward import ForwardSDE

ScoreFn = Callable[..., torch.Tensor]
"""``score_fn(x, t, **model_kwargs)``: x of shape (n, *shape), t of shape (n,)."""


def check_output(out: object, x: torch.Tensor, t: torch.Tensor, what: str) -> torch.Tensor:
    """``out`` if it is a tensor of x's shape; otherwise a ValueError naming ``what`` returned
    it and the time of the call."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{what} must return the shape of x, {tuple(x.shape)}, got {got} "
            f"at t={float(t.max()):.6g}"
        )
    return out


def select_rows(value: Any, batch: int, rows: torch.Tensor | None) -> Any:
    """``value`` restricted to ``rows`` of the batch: a tensor whose first dimension is ``batch``
    is indexed by ``rows`` (all rows for ``None``); a mapping (e.g. diffusers'
    ``added_cond_kwargs``) has its values restricted the same way; anything else passes
    unchanged. This is how conditioning follows the samples when a sampler evaluates only the
    rows still running."""
    if isinstance(value, torch.Tensor):
        if rows is None or value.dim() == 0 or value.shape[0] != batch:
            return value
        return value[rows.to(value.device)]
    if isinstance(value, Mapping):
        return {key: select_rows(v, batch, rows) for key, v in value.items()}
    return value


class ScoreCounter:
    """Calls a score function with a shape check, and counts the calls and the rows they
    evaluate. Non-finite scores are left to the solver: at a trial point of a step they only
    reject the step; at an accepted state they end the sample with a result code.

    With ``model_dtype`` (e.g. ``torch.float16``), x reaches the model in that dtype and the
    score comes back in the solver's: the model runs in half precision while the solver's state,
    its error estimate and its step sizes stay in float32 (half precision cannot resolve the
    difference of two nearby states that the error estimate is). ``t`` keeps the solver's dtype;
    models embed it themselves.

    ``model_kwargs`` (with ``batch``, the number of samples) are passed to the score function as
    keyword arguments on every call, restricted to the rows evaluated (:func:`select_rows`):
    the caller names those rows by their index in the batch (``rows``; ``None`` = all)."""

    def __init__(
        self,
        score_fn: ScoreFn,
        shape: tuple[int, ...],
        model_dtype: torch.dtype | None = None,
        what: str = "the score function",
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        batch: int | None = None,
    ) -> None:
        self.score_fn, self.shape, self.model_dtype = score_fn, shape, model_dtype
        self.what = what
        self.model_kwargs = check_model_kwargs(model_kwargs)
        if self.model_kwargs and batch is None:
            raise ValueError("ScoreCounter needs batch to restrict model_kwargs to rows")
        self.batch = batch
        self.calls = 0
        self.rows = 0

    def kwargs_for(self, rows: torch.Tensor | None, n: int) -> dict[str, Any]:
        """``model_kwargs`` for the ``n`` rows ``rows`` of the batch (all rows for ``None``)."""
        if not self.model_kwargs:
            return {}
        assert self.batch is not None
        count = self.batch if rows is None else rows.numel()
        if count != n:
            raise RuntimeError(
                f"{self.what} was called on {n} rows but told of {count} (model_kwargs cannot "
                "follow the rows); please report this"
            )
        return {key: select_rows(v, self.batch, rows) for key, v in self.model_kwargs.items()}

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` flattened (n, D), ``t`` (n,), ``rows`` the indices of x's rows in the batch
        (``None``: all of it, in order); returns the score flattened (n, D)."""
        n = x.shape[0]
        model_x = x if self.model_dtype is None else x.to(self.model_dtype)
        shaped = model_x.reshape(n, *self.shape)
        out = check_output(
            self.score_fn(shaped, t, **self.kwargs_for(rows, n)), shaped, t, self.what
        )
        self.calls += 1
        self.rows += n
        return out.reshape(n, -1).to(x.dtype)


def check_model_kwargs(model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model_kwargs`` as a dict (empty for ``None``), with a TypeError naming it otherwise."""
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise TypeError(
            "model_kwargs must be a mapping of keyword-argument names to values, got "
            f"{type(model_kwargs).__name__}"
        )
    return dict(model_kwargs)


class RowTracker(BrownianRegister):
    """A :class:`~adaptive_sde.BrownianRegister` that remembers which rows of the batch the
    solver's loop asked it for last. :func:`adaptive_sde.solve` draws a step's Brownian
    increment for exactly the rows it then evaluates the SDE on, so :class:`ReverseSDE` reads
    the rows here to restrict ``model_kwargs`` to them (the SDE's ``f`` and ``g`` are only
    given the states)."""

    rows: torch.Tensor | None = None

    def increment(
        self, rows: torch.Tensor | None, t: torch.Tensor, t_next: torch.Tensor
    ) -> torch.Tensor:
        self.rows = rows
        return super().increment(rows, t, t_next)


class ReverseSDE(nn.Module):
    """The reverse-time SDE (``probability_flow=False``) or the probability-flow ODE of
    ``forward``, in the flipped time s = T - t, as a torchsde SDE with diagonal noise.

    **Arguments:** ``forward`` (a :class:`ForwardSDE`), ``score_fn(x, t)``, ``shape`` (the shape
    of one sample), ``probability_flow``, ``sde_type`` (``"stratonovich"`` or ``"ito"``; the same
    SDE), ``model_dtype`` (the dtype the score function receives x in; see
    :class:`ScoreCounter`), ``model_kwargs`` and ``batch`` (keyword arguments of the score
    function, restricted to the rows evaluated; see :class:`ScoreCounter`). The rows are those
    of :attr:`rows`, which :class:`RowTracker` sets when the solver draws noise for them
    (``None``, the default, is the whole batch).
    """

    noise_type = "diagonal"

    def __init__(
        self,
        forward: ForwardSDE,
        score_fn: ScoreFn,
        shape: tuple[int, ...],
        *,
        probability_flow: bool = False,
        sde_type: str = "stratonovich",
        model_dtype: torch.dtype | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        batch: int | None = None,
    ) -> None:
        super().__init__()
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        self.forward_sde = forward
        self.score = ScoreCounter(
            score_fn, tuple(shape), model_dtype, model_kwargs=model_kwargs, batch=batch
        )
        self.tracker: RowTracker | None = None
        self.shape = tuple(shape)
        self.probability_flow = probability_flow
        self.sde_type = sde_type

    def time(self, s: torch.Tensor, n: int) -> torch.Tensor:
        """Forward time t = T - s as a vector (n,), from s as torchsde or solve passes it."""
        return (self.forward_sde.T - s).reshape(-1).expand(n)

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.time(s, y.shape[0]).to(y.dtype)
        g2 = self.forward_sde.diffusion(t)[:, None] ** 2
        weight = 0.5 if self.probability_flow else 1.0
        score = self.score(y, t, self.rows)
        return -(self.forward_sde.drift(y, t) - weight * g2 * score)

    @property
    def rows(self) -> torch.Tensor | None:
        """The rows of the batch being evaluated: the tracker's last, else all of them."""
        return None if self.tracker is None else self.tracker.rows

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.probability_flow:
            return torch.zeros_like(y)
        t = self.time(s, y.shape[0]).to(y.dtype)
        return self.forward_sde.diffusion(t)[:, None].expand_as(y)
