"""Counter-based random numbers, keyed per sample.

Every random number the solver uses is a pure function of ``(seed, sample id, counter)``. A
sample's Brownian path and Roberts signs therefore do not depend on which other samples share its
batch, on how many rows were active when it was drawn, or on the device: solving a batch and
solving each of its samples alone give the same result, and a batch split across processes gives
the same samples as one process.

The generator is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014): the ``i``-th output of stream ``k`` is ``mix64(k + i * GOLDEN)``. Each
sample owns a stream whose key is itself a SplitMix64 output of the seed and the sample id. The
64-bit arithmetic runs on int64 tensors, whose multiplication wraps modulo 2**64 on every backend
PyTorch supports; logical right shifts are written as arithmetic shifts followed by a mask.
Normals come from the Box-Muller transform of two 32-bit uniforms (two normals per 64-bit word).
"""

from __future__ import annotations

import math

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_TWO_PI = 2.0 * math.pi
_INV_2_32 = 1.0 / 4294967296.0


def _signed(value: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= (1 << 63) else value


def _srl(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser: a bijection of 64-bit words with full avalanche."""
    x = x ^ _srl(x, 30)
    x = x * _signed(_MUL1)
    x = x ^ _srl(x, 27)
    x = x * _signed(_MUL2)
    return x ^ _srl(x, 31)


def mix64_int(value: int) -> int:
    """``mix64`` on a Python integer, for keys computed once on the host."""
    x = value & _MASK64
    x ^= x >> 30
    x = (x * _MUL1) & _MASK64
    x ^= x >> 27
    x = (x * _MUL2) & _MASK64
    return x ^ (x >> 31)


def stream_keys(seed: int, sample_ids: torch.Tensor, tag: int) -> torch.Tensor:
    """One 64-bit stream key per sample, for the purpose named by ``tag``."""
    base = _signed(mix64_int(mix64_int(seed) ^ mix64_int(tag)))
    return mix64(sample_ids.to(torch.int64) * _signed(_GOLDEN) + base)


def uniform_words(keys: torch.Tensor, counters: torch.Tensor, width: int) -> torch.Tensor:
    """``width`` 64-bit words per row: words ``counter*width .. counter*width+width-1`` of each
    row's stream. ``keys`` and ``counters`` have shape (n,); the result (n, width) is int64."""
    index = counters.to(torch.int64)[:, None] * width + torch.arange(
        width, device=keys.device, dtype=torch.int64
    )
    return mix64(keys[:, None] + index * _signed(_GOLDEN))


def normals(
    keys: torch.Tensor, counters: torch.Tensor, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normals of shape (n, size), the ``counter``-th draw of each row's stream."""
    pairs = (size + 1) // 2
    words = uniform_words(keys, counters, pairs)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    high = _srl(words, 32).to(work)
    low = (words & 0xFFFFFFFF).to(work)
    radius = torch.sqrt(-2.0 * torch.log((high + 0.5) * _INV_2_32))
    angle = low * (_TWO_PI * _INV_2_32)
    z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return z[:, :size].to(dtype)


def signs(
    keys: torch.Tensor, counters: torch.Tensor, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Independent random signs (+1 or -1, probability 1/2 each) of shape (n, size)."""
    words = uniform_words(keys, counters, size)
    return (1 - 2 * _srl(words, 63)).to(dtype)
