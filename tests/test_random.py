"""Counter-based random numbers: distribution, independence, reproducibility."""

from __future__ import annotations

import math

import torch

from adaptive_sde import _random


def _keys(n, seed=0, tag=1):
    return _random.stream_keys(seed, torch.arange(n), tag)


def test_mix64_matches_the_integer_reference():
    values = [0, 1, 2**40 + 3, -5, 2**63 - 1]
    tensor = _random.mix64(torch.tensor(values, dtype=torch.int64))
    expected = [_random._signed(_random.mix64_int(v)) for v in values]
    assert tensor.tolist() == expected


def test_normals_have_the_moments_of_a_standard_normal():
    n = 200_000
    z = _random.normals(_keys(n), torch.zeros(n, dtype=torch.int64), 3, torch.float64)
    assert z.shape == (n, 3)
    se = 1 / math.sqrt(n)
    assert z.mean(0).abs().max() < 5 * se
    assert (z.var(0) - 1).abs().max() < 5 * math.sqrt(2) * se
    assert ((z**4).mean(0) - 3).abs().max() < 5 * math.sqrt(96) * se
    # Tail mass beyond 3 sigma: 0.0027 for a normal.
    assert abs(float((z.abs() > 3).double().mean()) - 0.0027) < 0.0005


def test_normals_are_uncorrelated_across_samples_channels_and_counters():
    n = 100_000
    keys = _keys(n)
    a = _random.normals(keys, torch.zeros(n, dtype=torch.int64), 4, torch.float64)
    b = _random.normals(keys, torch.ones(n, dtype=torch.int64), 4, torch.float64)
    bound = 5 / math.sqrt(n)
    corr = torch.corrcoef(torch.cat([a, b], 1).T)
    off_diagonal = corr - torch.eye(8, dtype=corr.dtype)
    assert off_diagonal.abs().max() < bound
    neighbours = torch.corrcoef(torch.stack([a[:-1, 0], a[1:, 0]]))[0, 1]
    assert abs(float(neighbours)) < bound


def test_draws_depend_only_on_seed_sample_id_and_counter():
    ids = torch.tensor([3, 17, 4])
    counters = torch.tensor([5, 0, 2])
    keys = _random.stream_keys(9, ids, 1)
    batch = _random.normals(keys, counters, 2, torch.float32)
    alone = _random.normals(_random.stream_keys(9, ids[1:2], 1), counters[1:2], 2, torch.float32)
    assert torch.equal(batch[1:2], alone)
    other_seed = _random.normals(_random.stream_keys(10, ids, 1), counters, 2, torch.float32)
    other_tag = _random.normals(_random.stream_keys(9, ids, 2), counters, 2, torch.float32)
    assert not torch.equal(batch, other_seed)
    assert not torch.equal(batch, other_tag)


def test_signs_are_balanced_and_independent():
    n = 100_000
    s = _random.signs(_keys(n), torch.zeros(n, dtype=torch.int64), 3, torch.float64)
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    assert s.mean(0).abs().max() < 5 / math.sqrt(n)
    assert float((s[:, 0] * s[:, 1]).mean()).__abs__() < 5 / math.sqrt(n)


def test_float32_normals_are_finite_and_standard():
    n = 100_000
    z = _random.normals(_keys(n), torch.zeros(n, dtype=torch.int64), 1, torch.float32)
    assert z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert abs(float(z.var()) - 1) < 0.03
