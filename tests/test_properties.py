"""Properties over random linear SDEs of every noise type (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import adaptive_sde


class RandomLinear(nn.Module):
    """dX = A X dt + G(X) dW with G linear in X (or constant, for additive noise)."""

    def __init__(self, noise_type, sde_type, d, m, seed):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        gen = torch.Generator().manual_seed(seed)
        self.a = -torch.rand(d, generator=gen, dtype=torch.float64) * 2 + 0.5
        self.b = (torch.rand(d, m, generator=gen, dtype=torch.float64) - 0.5) * 1.5
        self.calls: list[tuple[torch.Tensor, int]] = []

    def f(self, t, y):
        self.calls.append((t.detach().clone(), y.shape[0]))
        return self.a * y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.b[:, 0] * y
        if self.noise_type == "additive":
            return self.b.expand(y.shape[0], -1, -1)
        return y[:, :, None] * self.b  # scalar (m = 1) and general


@st.composite
def problems(draw):
    noise_type = draw(st.sampled_from(["diagonal", "additive", "scalar", "general"]))
    sde_type = draw(st.sampled_from(["ito", "stratonovich"]))
    d = draw(st.integers(1, 3))
    m = {"diagonal": 1, "scalar": 1}.get(noise_type) or draw(st.integers(1, 3))
    batch = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.floats(1e-3, 0.7), min_size=1, max_size=4))
    t0 = draw(st.floats(-1.0, 1.0))
    ts = torch.tensor([t0, *gaps], dtype=torch.float64).cumsum(0)
    y0 = torch.tensor(
        draw(st.lists(st.floats(-2, 2), min_size=batch * d, max_size=batch * d)),
        dtype=torch.float64,
    ).reshape(batch, d)
    options = {
        "rtol": draw(st.floats(1e-3, 0.2)),
        "atol": draw(st.floats(1e-4, 1e-2)),
        "seed": draw(st.integers(0, 2**31)),
        "per_sample": draw(st.booleans()),
        "tolerance": draw(st.sampled_from(["paper", "conventional"])),
        "norm": draw(st.sampled_from(["rms", "max", "l2"])),
    }
    return noise_type, sde_type, d, m, y0, ts, options, draw(st.integers(0, 1000))


@given(problems())
def test_solves_are_finite_exact_at_outputs_counted_and_reproducible(problem):
    noise_type, sde_type, d, m, y0, ts, options, coeff_seed = problem
    sde = RandomLinear(noise_type, sde_type, d, m, coeff_seed)
    sol = adaptive_sde.solve(sde, y0, ts, **options)

    assert sol.ys.shape == (len(ts), y0.shape[0], d)
    assert torch.isfinite(sol.ys).all()
    assert torch.equal(sol.ys[0], y0)
    stats = sol.stats
    per_attempt = 3 if (noise_type == "general" and m >= 2 and sde_type == "ito") else 2
    # A retry after a rejection keeps its first stage: one evaluation fewer than an attempt.
    expected = (per_attempt - 1) * stats.num_steps + stats.num_accepted
    assert torch.equal(stats.nfe, expected)
    assert sum(rows for _, rows in sde.calls) == stats.total_nfe
    # Each output time is the end of an accepted step of every sample: it was evaluated there.
    times = torch.cat([t.flatten() if t.dim() else t.expand(rows) for t, rows in sde.calls])
    for t_out in ts[1:]:
        assert int((times == t_out).sum()) >= y0.shape[0]
    assert torch.all(stats.result == adaptive_sde.Result.SUCCESS)

    again = adaptive_sde.solve(
        RandomLinear(noise_type, sde_type, d, m, coeff_seed), y0, ts, **options
    )
    assert torch.equal(again.ys, sol.ys)
    assert torch.equal(again.stats.nfe, stats.nfe)
