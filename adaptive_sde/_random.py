"""Counter-based random numbers, keyed per sample.

Every random number the solver uses is a pure function of ``(seed, sample id, counter)``. A
sample's Brownian path and Roberts signs therefore do not depend on which other samples share its
batch, on how many rows were active when it was drawn, or on the device: solving a batch and
solving each of its samples alone give the same result, and a batch split across processes gives
the same samples as one process. (The 64-bit words are the same on every device; the normals
made from them round as the device's ``log``, ``cos`` and ``sin`` do.)

The generator is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014): the ``i``-th output of stream ``k`` is ``mix64(k + i * GOLDEN)``. Each
sample owns a stream whose key is itself a SplitMix64 output of the seed and the sample id. The
64-bit arithmetic runs on int64 tensors, whose multiplication wraps modulo 2**64 on every backend
PyTorch supports; logical right shifts are written as arithmetic shifts followed by a mask.

Each 64-bit word gives two normals by the Box-Muller transform (Box & Muller, 1958): its low 32
bits, read unsigned, give the radius ``sqrt(-2 log u)`` with ``u = (low + 1/2) / 2**32`` in
``(0, 1]`` (never 0, so never an infinite radius; at most ``sqrt(66 log 2) = 6.76``), and its high
32 bits, read signed, give the angle ``2 pi high / 2**32`` in ``[-pi, pi)``, whose cosine and sine
are the two normals. Both uniforms have 32 bits, for float32 and float64 outputs alike (float64
outputs are exact functions of the 32-bit uniforms, so they are not finer-grained than that).
Each word also gives 64 random signs, one per bit.

Why SplitMix64 rather than Philox-4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC 2011): in eager PyTorch every tensor operation is a pass over memory and a
dispatch, and Philox's ten rounds of 32x32->64-bit products need about 100 int64 passes per four
32-bit words (PyTorch has no 32-bit multiply-high), against 12 passes per two 32-bit words here.
What made the generator fast was the rest: it mixes in place, splits each word through an int32
view, writes into one preallocated output and, on the CPU, works in row chunks that stay in the
cache. Against ``torch.randn`` of float32 on one CPU thread (medians of interleaved runs on a
shared 2-core machine, ratios varying by about 0.2 with the load) the earlier version (same hash)
cost 3.4-3.9x at 4096 x 1024, 2.3x at 1024 x 64 and 2.7x at 65536 x 16; this one 1.2-1.6x, 1.5-1.7x
and 1.5-1.6x. Tiny draws (64 x 16) are bound by the ~30 kernel dispatches, about 20x ``randn``.
Inverse-CDF sampling (``torch.special.ndtri`` of a uniform) measured slower than Box-Muller's
log, sqrt, cos and sin together, and ``torch.polar`` (one kernel for both) is not vectorised.
"""

from __future__ import annotations

import math
import sys

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_TWO_PI = 2.0 * math.pi
_INV_2_32 = 1.0 / 4294967296.0
_LOW_32 = 0xFFFFFFFF
# Where the high 32 bits of an int64 sit in its int32 view.
_HIGH_HALF = 1 if sys.byteorder == "little" else 0
# Rows of a CPU draw are generated in chunks of about this many 64-bit words per thread, so that
# the dozen passes over each chunk stay in the cache. On other devices a draw is one chunk.
_CPU_CHUNK_WORDS = 32768


def _signed(value: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= (1 << 63) else value


# The SplitMix64 finaliser as (shift, mask of a logical shift by it, multiplier after it).
_MIX_STEPS = (
    (30, (1 << 34) - 1, _signed(_MUL1)),
    (27, (1 << 37) - 1, _signed(_MUL2)),
    (31, (1 << 33) - 1, None),
)
# 2**-33 as 0-d CPU tensors (usable as a scalar on any device) of each float dtype, so that
# ``torch.add`` can take it as its first argument.
_HALF_ULPS: dict[torch.dtype, torch.Tensor] = {}


def _half_ulp(work: torch.dtype) -> torch.Tensor:
    """``2**-33``, half the step of the 32-bit uniforms, as a 0-d tensor of dtype ``work``."""
    half = _HALF_ULPS.get(work)
    if half is None:
        half = _HALF_ULPS[work] = torch.tensor(0.5 * _INV_2_32, dtype=work)
    return half


def _srl(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def _mix64_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` in place on ``x``, with ``scratch`` (same shape and dtype) overwritten."""
    for shift, mask, multiplier in _MIX_STEPS:
        torch.bitwise_right_shift(x, shift, out=scratch)
        scratch.bitwise_and_(mask)
        x.bitwise_xor_(scratch)
        if multiplier is not None:
            x.mul_(multiplier)
    return x


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser: a bijection of 64-bit words with full avalanche."""
    x = x.to(torch.int64, copy=True)
    return _mix64_(x, torch.empty_like(x))


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


def _stream_starts(keys: torch.Tensor, counters: torch.Tensor, width: int) -> torch.Tensor:
    """Each row's Weyl-sequence value at its first word, ``key + counter * width * GOLDEN``
    (``keys`` and ``counters`` broadcast: one key may serve many counters, or the reverse)."""
    return torch.mul(counters.to(torch.int64), _signed(width * _GOLDEN)).add(keys)


# Constant index tensors, kept per (name, size, device): they are never written.
_CACHE: dict[tuple[str, int, torch.device], torch.Tensor] = {}


def _constant(name: str, size: int, device: torch.device) -> torch.Tensor:
    """``j * GOLDEN`` as int64 (``"steps"``) or ``j`` as int32 (``"shifts"``) for ``j < size``,
    on ``device``. Kept (small kernels fewer per draw) unless made in compiled code, in
    inference mode or as a tensor subclass (a fake tensor)."""
    key = (name, size, device)
    value = _CACHE.get(key)
    if value is None:
        if name == "steps":
            value = torch.arange(size, device=device, dtype=torch.int64).mul_(_signed(_GOLDEN))
        else:
            value = torch.arange(size, device=device, dtype=torch.int32)
        plain = type(value) is torch.Tensor and not value.is_inference()
        if plain and not torch.compiler.is_compiling() and len(_CACHE) < 256:
            _CACHE[key] = value
    return value


def _word_steps(width: int, device: torch.device) -> torch.Tensor:
    """``j * GOLDEN`` for the ``width`` words ``j`` of a draw."""
    return _constant("steps", width, device)


def uniform_words(keys: torch.Tensor, counters: torch.Tensor, width: int) -> torch.Tensor:
    """``width`` 64-bit words per row: words ``counter*width .. counter*width+width-1`` of each
    row's stream. ``keys`` and ``counters`` have shape (n,); the result (n, width) is int64."""
    words = torch.add(
        _stream_starts(keys, counters, width)[:, None], _word_steps(width, keys.device)
    )
    return _mix64_(words, torch.empty_like(words))


def _chunk_rows(n: int, width: int, device: torch.device) -> int:
    """Rows per chunk of a draw of ``width`` words per row."""
    if device.type != "cpu" or width == 0:
        return max(n, 1)
    return max(1, _CPU_CHUNK_WORDS * torch.get_num_threads() // width)


def _box_muller(
    words: torch.Tensor,
    scratch: torch.Tensor,
    radius: torch.Tensor,
    angle: torch.Tensor,
    sine: torch.Tensor,
    out: torch.Tensor,
    variance: torch.Tensor | None,
) -> None:
    """Two normals per word of ``words`` (k, pairs), written to ``out`` (k, size): column ``j``
    is ``r_j cos a_j`` and column ``pairs + j`` is ``r_j sin a_j``, times the square root of
    the row's ``variance`` (k,) if given. ``words`` must be contiguous; ``scratch`` (int64) and
    ``radius``, ``angle``, ``sine`` (the working float dtype, contiguous) have its shape and are
    overwritten."""
    k, pairs = words.shape
    half = _half_ulp(radius.dtype)
    # u = (low + 1/2) 2**-32 in (0, 1]: the float rounding of a low word near 2**32 gives 1 at
    # most (so a radius of 0), and the smallest u is 2**-33. The radius is sqrt(-2 v log u).
    torch.bitwise_and(words, _LOW_32, out=scratch)
    radius.copy_(scratch)
    torch.add(half, radius, alpha=_INV_2_32, out=radius).log_()
    radius.mul_(-2.0 if variance is None else variance[:, None] * -2.0).sqrt_()
    angle.copy_(words.view(torch.int32).view(k, pairs, 2)[..., _HIGH_HALF])
    angle.mul_(_TWO_PI * _INV_2_32)
    rest = out.shape[1] - pairs  # pairs or pairs - 1 sines
    if rest:
        torch.sin(angle, out=sine)
    torch.mul(angle.cos_(), radius, out=out[:, :pairs])
    if rest:
        torch.mul(sine[:, :rest], radius[:, :rest], out=out[:, pairs:])


def normals(
    keys: torch.Tensor, counters: torch.Tensor, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normals of shape (n, size), the ``counter``-th draw of each row's stream."""
    return scaled_normals(keys, counters, size, dtype, None)


def scaled_normals(
    keys: torch.Tensor,
    counters: torch.Tensor,
    size: int,
    dtype: torch.dtype,
    variance: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`normals` times the square root of a per-row ``variance`` (n,) (``None``: 1), taken
    inside the transform (as ``sqrt(-2 variance log u)``), which saves passes over the draw. A
    variance of 0 gives zeros; it must not be negative."""
    device = keys.device
    pairs = (size + 1) // 2
    starts = _stream_starts(keys, counters, pairs)
    n = starts.shape[0]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.empty(n, size, dtype=work, device=device)
    if n == 0 or size == 0:
        return out.to(dtype)
    if variance is not None:
        variance = variance.to(work).expand(n)
    steps = _word_steps(pairs, device)
    rows = min(_chunk_rows(n, pairs, device), n)
    words, scratch = torch.empty(2, rows, pairs, dtype=torch.int64, device=device)
    radius, angle, sine = torch.empty(3, rows, pairs, dtype=work, device=device)
    for first in range(0, n, rows):
        last = min(first + rows, n)
        k = last - first
        w = words[:k]
        torch.add(starts[first:last, None], steps, out=w)
        _mix64_(w, scratch[:k])
        part = None if variance is None else variance[first:last]
        _box_muller(w, scratch[:k], radius[:k], angle[:k], sine[:k], out[first:last], part)
    return out if work == dtype else out.to(dtype)


def signs(
    keys: torch.Tensor, counters: torch.Tensor, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Independent random signs (+1 or -1, probability 1/2 each) of shape (n, size), 64 per word
    of the row's ``counter``-th draw of ``ceil(size / 64)`` words: column ``j`` is -1 where bit
    ``31 - j % 32`` of 32-bit half ``j // 32`` is set, the halves of word ``k`` being ``2k`` (its
    low 32 bits) and ``2k + 1`` (its high 32 bits). The bits are read in int32 lanes."""
    width = (size + 63) // 64
    words = uniform_words(keys, counters, width)
    n, device = words.shape[0], words.device
    halves = words.view(torch.int32)  # (n, 2 width), low and high half of each word
    if _HIGH_HALF == 0:  # big-endian: the high half comes first in memory
        halves = halves.view(n, width, 2).flip(-1).reshape(n, 2 * width)
    halves = halves[:, : (size + 31) // 32, None]
    top = halves << _constant("shifts", min(size, 32), device)  # each bit to the sign bit
    plus_minus = top.bitwise_right_shift_(31).bitwise_or_(1)  # -1 where it is set, else +1
    return plus_minus.view(n, -1)[:, :size].to(dtype)
