"""A tqdm progress bar driven by the slowest sample's time."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


class ProgressMeter:
    """Shows how far the slowest sample has got through ``[t0, t1]``; a no-op when disabled."""

    def __init__(self, t0: float, t1: float, enabled: bool, desc: str = "solve") -> None:
        self.t0 = t0
        self._bar = (
            tqdm(total=t1 - t0, desc=desc, unit="t", bar_format=_FORMAT) if enabled else None
        )

    def update(self, t: torch.Tensor, nfe: int) -> None:
        if self._bar is None:
            return
        self._bar.n = float(t.min()) - self.t0
        self._bar.set_postfix(nfe=nfe, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


_FORMAT = "{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}{postfix}]"
