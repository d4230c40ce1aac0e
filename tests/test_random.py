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


def _inverse_mix64_int(value: int) -> int:
    """The input word that ``mix64_int`` maps to ``value`` (the finaliser is a bijection)."""
    mask = (1 << 64) - 1

    def unshift(y: int, shift: int) -> int:
        x = y
        for _ in range(64 // shift + 1):
            x = y ^ (x >> shift)
        return x

    x = unshift(value & mask, 31)
    x = (x * pow(_random._MUL2, -1, 1 << 64)) & mask
    x = unshift(x, 27)
    x = (x * pow(_random._MUL1, -1, 1 << 64)) & mask
    return unshift(x, 30)


def test_uniform_words_are_the_splitmix64_stream():
    keys = _keys(3, seed=5)
    counters = torch.tensor([0, 7, 2**40])
    words = _random.uniform_words(keys, counters, 3)
    for i in range(3):
        for j in range(3):
            index = int(counters[i]) * 3 + j
            state = int(keys[i]) + index * _random._GOLDEN
            assert int(words[i, j]) == _random._signed(_random.mix64_int(state))
    assert _inverse_mix64_int(_random.mix64_int(12345)) == 12345


def _normals_of_words(words: list[int], dtype: torch.dtype) -> torch.Tensor:
    """The two normals (cos, sin) of each given 64-bit word, drawn through the public API: row i's
    key is chosen so that the first word of its stream is ``words[i]``."""
    keys = torch.tensor([_random._signed(_inverse_mix64_int(w)) for w in words])
    return _random.normals(keys, torch.zeros(len(words), dtype=torch.int64), 2, dtype)


def test_extreme_words_give_finite_normals_with_the_documented_radius():
    lows = [0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]
    highs = [0, 1, 2**31 - 1, 2**31, 2**32 - 1]
    words = [(h << 32) | lo for h in highs for lo in lows]
    for dtype in (torch.float32, torch.float64):
        z = _normals_of_words(words, dtype)
        assert torch.isfinite(z).all()
        radius = z.double().norm(dim=1)
        lo = torch.tensor([w & 0xFFFFFFFF for w in words], dtype=torch.float64)
        expected = torch.sqrt(-2 * torch.log((lo + 0.5) / 2**32))
        torch.testing.assert_close(radius, expected, rtol=1e-5, atol=1e-3)
        assert float(radius.max()) <= math.sqrt(66 * math.log(2)) + 1e-4
        # The high word is the angle: 0 is along the cosine, 2**31 (read signed: -2**31) is -pi.
        assert float(z[0, 1]) == 0 and float(z[0, 0]) > 6
        assert float(z[3 * len(lows), 0]) < -6


def test_float32_normals_round_the_float64_ones():
    n = 10_000
    keys, counters = _keys(n, seed=3), torch.arange(n)
    z32 = _random.normals(keys, counters, 5, torch.float32)
    z64 = _random.normals(keys, counters, 5, torch.float64)
    torch.testing.assert_close(z32.double(), z64, rtol=1e-5, atol=1e-5)


def test_normals_pass_a_kolmogorov_smirnov_test():
    n = 200_000
    for dtype in (torch.float32, torch.float64):
        z = _random.normals(_keys(n, seed=11), torch.zeros(n, dtype=torch.int64), 2, dtype)
        for column in z.double().T:
            x = column.sort().values
            cdf = torch.special.ndtr(x)
            grid = torch.arange(n + 1, dtype=torch.float64) / n
            d = torch.maximum(grid[1:] - cdf, cdf - grid[:-1]).max()
            # Critical value of the KS statistic at the 0.1% level: 1.95 / sqrt(n).
            assert float(d) < 1.95 / math.sqrt(n)


def test_the_tails_have_normal_mass():
    # 2M normals: the counts beyond 3, 4 and 4.5 sigma are within 5 binomial standard deviations
    # of a normal's; float32 and float64 draw the same tails.
    n, size = 100_000, 20
    for dtype in (torch.float32, torch.float64):
        z = _random.normals(_keys(n, seed=13), torch.zeros(n, dtype=torch.int64), size, dtype)
        total = z.numel()
        for threshold in (3.0, 4.0, 4.5):
            p = math.erfc(threshold / math.sqrt(2))
            count = int((z.abs() > threshold).sum())
            sd = math.sqrt(total * p * (1 - p))
            assert abs(count - total * p) < 5 * sd, (dtype, threshold, count, total * p)
        assert float(z.abs().max()) <= math.sqrt(66 * math.log(2)) + 1e-4


def test_a_rows_draws_do_not_depend_on_the_batch_or_the_order(monkeypatch):
    n = 3_000
    ids = torch.randperm(10 * n, generator=torch.Generator().manual_seed(0))[:n]
    keys = _random.stream_keys(17, ids, 3)
    counters = torch.randint(0, 2**20, (n,), generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    for size in (1, 7, 40):
        for dtype in (torch.float32, torch.float64):
            z = _random.normals(keys, counters, size, dtype)
            assert torch.equal(_random.normals(keys[perm], counters[perm], size, dtype), z[perm])
            for i in (0, 1234, n - 1):
                alone = _random.normals(keys[i : i + 1], counters[i : i + 1], size, dtype)
                assert torch.equal(alone, z[i : i + 1])
            # The draws of one row at counters queried out of order are the same draws.
            row = keys[5:6].expand(6)
            order = torch.tensor([4, 0, 5, 2, 1, 3])
            seq = _random.normals(row, torch.arange(6), size, dtype)
            assert torch.equal(_random.normals(row, order, size, dtype), seq[order])
            # CPU draws run in chunks of rows: small chunks put rows in other chunks.
            with monkeypatch.context() as m:
                m.setattr(_random, "_CPU_CHUNK_WORDS", 97)
                assert torch.equal(_random.normals(keys, counters, size, dtype), z)
        s = _random.signs(keys, counters, size, torch.float32)
        assert torch.equal(_random.signs(keys[perm], counters[perm], size, torch.float32), s[perm])


def test_signs_are_the_bits_of_the_words():
    keys, counters = _keys(50, seed=7), torch.arange(50)
    for size in (1, 3, 64, 130):
        words = _random.uniform_words(keys, counters, (size + 63) // 64)
        s = _random.signs(keys, counters, size, torch.float64)
        for i in (0, 17, 49):
            for j in range(size):
                word = int(words[i, j // 64]) & ((1 << 64) - 1)
                half = (word >> (32 * ((j // 32) % 2))) & 0xFFFFFFFF
                bit = (half >> (31 - j % 32)) & 1
                assert float(s[i, j]) == (-1.0 if bit else 1.0)


def test_signs_are_uncorrelated_across_bits_words_and_counters():
    n = 50_000
    keys = _keys(n, seed=9)
    a = _random.signs(keys, torch.zeros(n, dtype=torch.int64), 70, torch.float64)
    b = _random.signs(keys, torch.ones(n, dtype=torch.int64), 70, torch.float64)
    corr = torch.corrcoef(torch.cat([a, b], 1).T)
    off_diagonal = corr - torch.eye(140, dtype=corr.dtype)
    # 9660 pairs: the largest of that many N(0, 1/n) correlations stays below 5 / sqrt(n).
    assert off_diagonal.abs().max() < 5 / math.sqrt(n)
    assert a.mean(0).abs().max() < 5 / math.sqrt(n)


def test_empty_draws_and_low_precision_dtypes():
    keys, counters = _keys(4), torch.zeros(4, dtype=torch.int64)
    assert _random.normals(keys[:0], counters[:0], 3, torch.float32).shape == (0, 3)
    assert _random.normals(keys, counters, 0, torch.float32).shape == (4, 0)
    z16 = _random.normals(keys, counters, 3, torch.bfloat16)
    assert z16.dtype == torch.bfloat16
    z32 = _random.normals(keys, counters, 3, torch.float32)
    torch.testing.assert_close(z16.float(), z32, rtol=1e-2, atol=1e-2)


def test_scaled_normals_are_the_normals_times_the_row_scale():
    n = 500
    keys, counters = _keys(n, seed=2), torch.arange(n)
    scale = torch.rand(n, dtype=torch.float64)
    scale[::7] = 0
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        z = _random.normals(keys, counters, 9, dtype)
        scaled = _random.scaled_normals(keys, counters, 9, dtype, scale**2)
        assert scaled.dtype == dtype
        torch.testing.assert_close(scaled, z * scale.to(dtype)[:, None], rtol=tol, atol=tol)
        assert torch.all(scaled[::7] == 0)


def test_keys_and_counters_broadcast():
    # One stream's draws at many counters, or one counter for many streams (torchsde's adjoint
    # solves a state of batch 1 against the forward batch's noise).
    keys, counters = _keys(6, seed=4), torch.arange(6)
    one_key, one_counter = keys[2:3], counters[4:5]
    for draw in (_random.normals, _random.signs):
        assert torch.equal(
            draw(one_key, counters, 5, torch.float64),
            draw(one_key.expand(6), counters, 5, torch.float64),
        )
        assert torch.equal(
            draw(keys, one_counter, 5, torch.float64),
            draw(keys, one_counter.expand(6), 5, torch.float64),
        )
    assert _random.uniform_words(keys, one_counter, 3).shape == (6, 3)
