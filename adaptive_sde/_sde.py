"""The user's SDE, as the solver sees it.

Users write SDEs the torchsde way: an object (usually an ``nn.Module``) with ``noise_type``,
``sde_type`` and some of ``f``, ``g``, ``f_and_g``, ``g_prod``, ``f_and_g_prod``, all taking
``(t, y)`` with ``y`` of shape (batch, d). :class:`SDEAdapter` finds the methods that are there,
checks every shape against the declared noise type, and offers the solver two operations: the
drift and diffusion matrix at a point, and the drift with a diffusion-vector product.

Time is passed to the SDE as a 0-d tensor when the batch shares one time grid (torchsde's
convention), and as a column of shape (n, 1) when every sample has its own time, so that code
using ``t`` elementwise against ``y`` (``torch.sin(t) * y``) works in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("ito", "stratonovich")


class SDEAdapter:
    """Validates a torchsde-style SDE and evaluates it with shape checks.

    **Arguments:**

    - ``sde``: the user's SDE object.
    - ``state_size``: ``d``, the width of ``y``.
    - ``brownian_size``: ``m`` if already known (from a Brownian motion), else ``None``.
    - ``provided``: the names among ``f, g, f_and_g, g_prod, f_and_g_prod`` that the SDE really
      implements. By default they are read off the SDE, or off the SDE that a torchsde wrapper
      (``ForwardSDE``) holds in ``_base_sde``: such wrappers define every name, some only to
      raise.
    """

    def __init__(
        self,
        sde: Any,
        state_size: int,
        brownian_size: int | None = None,
        provided: frozenset[str] | None = None,
    ) -> None:
        noise_type = getattr(sde, "noise_type", None)
        sde_type = getattr(sde, "sde_type", None)
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"sde.noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde.sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
        self.sde = sde
        self.noise_type: str = noise_type
        self.sde_type: str = sde_type
        self.state_size = state_size
        self._per_sample_time = False
        # How to turn per-sample time off, for the hint when the first evaluation fails on it.
        self.per_sample_switch = "pass per_sample=False"
        self._evaluated = False  # whether an evaluation in the current time mode has succeeded

        source = getattr(sde, "_base_sde", sde)
        has = {
            name: (name in provided)
            if provided is not None
            else callable(getattr(source, name, None))
            for name in ("f", "g", "f_and_g", "g_prod", "f_and_g_prod")
        }
        if not (has["f"] or has["f_and_g"] or has["f_and_g_prod"]):
            raise TypeError("sde must define a drift: f(t, y), f_and_g(t, y) or f_and_g_prod")
        if not (has["g"] or has["f_and_g"] or has["g_prod"] or has["f_and_g_prod"]):
            raise TypeError(
                "sde must define a diffusion: g(t, y), f_and_g(t, y), g_prod(t, y, v) or "
                "f_and_g_prod(t, y, v)"
            )
        self._has = has
        self.has_g = has["g"] or has["f_and_g"]

        implied = {"diagonal": state_size, "scalar": 1}.get(noise_type)
        if not self.has_g and brownian_size is not None:
            # g_prod alone decides how noise enters; torchsde's adjoint SDE, "diagonal" after
            # its forward SDE, takes the forward batch's noise in a state of another size.
            implied = brownian_size
        if implied is not None and brownian_size is not None and brownian_size != implied:
            raise ValueError(
                f"{noise_type} noise needs a Brownian motion of size {implied}, got {brownian_size}"
            )
        self.brownian_size = implied if implied is not None else brownian_size
        if self.brownian_size is None and not self.has_g:
            raise ValueError(
                f"the Brownian size of an SDE with {noise_type} noise that defines only g_prod "
                "cannot be inferred: pass brownian_size=m (or a Brownian motion bm)"
            )

    @property
    def per_sample_time(self) -> bool:
        """Whether ``t`` reaches the SDE as a column (n, 1), one time per row, or as a 0-d
        tensor; setting it starts over the watch on the first evaluation."""
        return self._per_sample_time

    @per_sample_time.setter
    def per_sample_time(self, value: bool) -> None:
        self._per_sample_time = bool(value)
        self._evaluated = False

    @property
    def is_additive(self) -> bool:
        return self.noise_type == "additive"

    # -- evaluation ---------------------------------------------------------------------------

    def time(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``t`` of shape (n,) as the SDE receives it."""
        return t.to(dtype)[:, None] if self.per_sample_time else t[0].to(dtype)

    def drift_and_diffusion(
        self, t: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, g)`` at ``(t, y)``; only for SDEs that define ``g`` or ``f_and_g``."""
        ts = self.time(t, y.dtype)
        if self._has["f_and_g"]:
            f, g = self._call(self.sde.f_and_g, ts, y)
        else:
            f, g = self._call(self._drift, ts, y), self._call(self.sde.g, ts, y)
        self._check_drift(f, y)
        self._check_diffusion(g, y)
        self._evaluated = True
        return f, g

    def drift_and_product(
        self, t: torch.Tensor, y: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, g v)`` at ``(t, y)``, with the cheapest methods the SDE offers."""
        if self.has_g:
            f, g = self.drift_and_diffusion(t, y)
            return f, self.product(g, v)
        ts = self.time(t, y.dtype)
        if self._has["f_and_g_prod"]:
            f, gv = self._call(self.sde.f_and_g_prod, ts, y, v)
        else:
            f, gv = self._call(self._drift, ts, y), self._call(self.sde.g_prod, ts, y, v)
        self._check_drift(f, y)
        self._check_product(gv, y)
        self._evaluated = True
        return f, gv

    def product_at(self, t: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``g(t, y) v`` through ``g_prod``, for SDEs that define no ``g``."""
        ts = self.time(t, y.dtype)
        if self._has["g_prod"]:
            gv = self._call(self.sde.g_prod, ts, y, v)
        else:
            gv = self._call(self.sde.f_and_g_prod, ts, y, v)[1]
        self._check_product(gv, y)
        self._evaluated = True
        return gv

    def product(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The diffusion-vector product ``g v`` for the declared noise type."""
        if self.noise_type == "diagonal":
            return g * v
        return torch.bmm(g, v[:, :, None])[:, :, 0]

    def _call(self, method: Callable[..., Any], t: torch.Tensor, *args: torch.Tensor) -> Any:
        """Call one of the SDE's methods. The first evaluation with per-sample time explains a
        failure that a column ``t`` typically causes (``float(t)``, ``t.item()``)."""
        if self._evaluated:
            return method(t, *args)
        try:
            out = method(t, *args)
        except (TypeError, ValueError, RuntimeError) as error:
            if not (self.per_sample_time and t.numel() > 1):
                raise
            raise _with_hint(error, self._column_hint(t)) from error
        return out

    def _column_hint(self, t: torch.Tensor) -> str:
        return (
            f"the SDE failed at its first evaluation, where t is a column of shape "
            f"{tuple(t.shape)}, one time per row, because every sample takes its own steps "
            "(per-sample mode): code such as float(t) or t.item() needs a 0-d t. Use t "
            f"elementwise (torch.sin(t) * y), or {self.per_sample_switch} for one shared time "
            "grid and a 0-d t"
        )

    # -- shape checks -------------------------------------------------------------------------

    def _drift(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._has["f"]:
            return self.sde.f(t, y)
        if self._has["f_and_g"]:
            return self.sde.f_and_g(t, y)[0]
        raise TypeError("sde defines no drift f(t, y)")  # pragma: no cover - checked in __init__

    def _check_drift(self, f: Any, y: torch.Tensor) -> None:
        if not isinstance(f, torch.Tensor) or f.shape != y.shape:
            raise ValueError(
                f"the drift f(t, y) must return a tensor of shape {tuple(y.shape)} like y, got "
                f"{_describe(f)}"
            )
        _check_like_y("the drift f(t, y)", f, y)

    def _check_diffusion(self, g: Any, y: torch.Tensor) -> None:
        batch, d = y.shape
        if self.noise_type == "diagonal":
            expected: tuple[int, ...] = (batch, d)
        else:
            m = 1 if self.noise_type == "scalar" else (self.brownian_size or _last(g))
            expected = (batch, d, m)
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != expected:
            raise ValueError(
                f"the diffusion g(t, y) of an SDE with {self.noise_type} noise must return shape "
                f"{expected} (batch, d{'' if self.noise_type == 'diagonal' else ', m'}), got "
                f"{_describe(g)}"
            )
        _check_like_y("the diffusion g(t, y)", g, y)
        if self.brownian_size is None:
            self.brownian_size = expected[2]

    def _check_product(self, gv: Any, y: torch.Tensor) -> None:
        if not isinstance(gv, torch.Tensor) or gv.shape != y.shape:
            raise ValueError(
                f"g_prod(t, y, v) must return a tensor of shape {tuple(y.shape)} like y, got "
                f"{_describe(gv)}"
            )
        _check_like_y("g_prod(t, y, v)", gv, y)


def _check_like_y(what: str, value: torch.Tensor, y: torch.Tensor) -> None:
    """The SDE must answer in y's dtype and on y's device: a mismatch would otherwise surface
    steps later, deep inside the solver's bookkeeping."""
    if value.dtype != y.dtype:
        raise TypeError(
            f"{what} returned dtype {value.dtype}, but y is {y.dtype}: return y's dtype "
            "(e.g. .to(y.dtype)), or solve with y0 in the dtype the SDE computes in"
        )
    if value.device != y.device:
        raise ValueError(f"{what} returned a tensor on {value.device}, but y is on {y.device}")


def _with_hint(error: Exception, hint: str) -> Exception:
    """``error`` with ``hint`` added, of the same type where that type takes a message."""
    message = f"{error}\n({hint})"
    try:
        return type(error)(message)
    except Exception:  # an exception type that does not take one message
        return RuntimeError(message)


def _last(g: Any) -> int:
    shape: Any = getattr(g, "shape", ())
    return int(shape[-1]) if len(shape) == 3 else -1


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"
