"""Bit-exact integer reference for quantization and dyadic requantization.

This module is the contract for SPEC sections 1-2: the hardware requantizers
are compared against :func:`requantize` and :func:`residual_add` integer for
integer. Float code exists only on the offline (compiler) side:
:func:`quantize_ternary`, :func:`quantize_int8`, :func:`requant_params` and
:func:`dequantize` turn float tensors and scales into the integers the device
sees.

Rounding: one rule everywhere, round half up (ties toward +infinity). On the
device this is ``(v * m + (1 << (e - 1))) >> e`` with an arithmetic shift; the
offline float helpers use the same rule (``floor(x + 1/2)``, evaluated
exactly), so -2.5 -> -2 and 2.5 -> 3. BitNet's and I-ViT's PyTorch code round
ties to even instead; this only differs on exact ties.

Dyadic requantization: a float ratio M = S_in * S_w / S_out is replaced by
m / 2**e with m an unsigned ``m_bits``-bit integer and e >= 1 as large as
possible. ``M_BITS_DEFAULT = 16`` keeps m below 2**16, so m zero-extended to
17 bits is a non-negative operand of an ECP5 18x18 signed multiplier
(MULT18X18D) with one bit to spare. :func:`requant_params` then leaves
m >= 2**15 unless e is capped at ``E_MAX``, so the relative error
|m / 2**e - M| / M is at most 0.5 / (2**15 - 0.5) ~ 1.5e-5 (SPEC 4.6 measured
no accuracy difference between 8, 16 and 24 bits).

``E_MAX = 62``: the rounding constant 1 << (e - 1) is then at most 2**61, so it
and the shift amount are plain int64 values (a 6-bit shift field in hardware).
Ratios below about 2**-63 cannot be represented (m would round to 0) and are
rejected; realistic ratios are far larger.

Integer inputs are computed exactly in int64: :func:`requantize` and
:func:`residual_add` check from the input ranges that (acc + bias) * m plus
the rounding constant cannot leave int64, and raise ``ValueError`` otherwise.
Tested ranges: acc and bias anywhere in int32 (and up to 2**47 with small m),
m over the full 8/16/24-bit range, e in [1, 40], per-tensor, per-channel and
per-token (m, e).
"""
from __future__ import annotations

import numpy as np

from .checks import check_int

__all__ = [
    "INT8_MIN", "INT8_MAX", "INT16_MIN", "INT16_MAX", "M_BITS_DEFAULT", "E_MAX",
    "quantize_ternary", "quantize_int8", "requant_params", "requantize",
    "residual_add", "dequantize",
]

INT8_MIN, INT8_MAX = -(1 << 7), (1 << 7) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
M_BITS_DEFAULT = 16
E_MAX = 62

_INT64_MAX = (1 << 63) - 1
_M_BITS_FLOAT_MAX = 52  # round(ratio * 2**e) is exact in float64 below 2**52


def _int_array(name, x):
    """``x`` as an array, which must have an integer dtype."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr


def _span(arr):
    """(min, max) of an integer array as Python ints; (0, 0) when empty."""
    return (int(arr.min()), int(arr.max())) if arr.size else (0, 0)


def _broadcasts_over(shape, target):
    """Whether an array of ``shape`` broadcasts to ``target`` without enlarging it."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _finite_float_array(name, x):
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return arr


def _round_half_up(x):
    """floor(x + 1/2) for float arrays, exactly.

    ``x - floor(x)`` is exact unless it exceeds 1/2 (and then rounding cannot
    bring it below 1/2), so ties are detected exactly, unlike ``x + 0.5``.
    """
    f = np.floor(x)
    return f + (x - f >= 0.5)


def quantize_ternary(w, eps=1e-5):
    """BitNet b1.58 absmean quantization of a float weight tensor.

    gamma = mean(|w|); w_t = clip(round(w / (gamma + eps)), -1, 1) with round
    half up; returns ``(w_t, gamma)`` with w_t int8 in {-1, 0, 1}, so that
    w ~ w_t * gamma. An all-zero w gives w_t = 0 and scale 1.0 (any scale
    represents zeros exactly; 1.0 keeps later requantization ratios finite).
    Raises ``ValueError`` on empty or non-finite input.
    """
    w = _finite_float_array("w", w)
    gamma = float(np.mean(np.abs(w)))
    w_t = np.clip(_round_half_up(w / (gamma + eps)), -1, 1).astype(np.int8)
    return w_t, (gamma if gamma > 0 else 1.0)


def quantize_int8(x, per_token=False):
    """Symmetric absmax int8 quantization: returns ``(q, scale)``, x ~ q * scale.

    scale = absmax / 127, over the whole tensor (a float) or, with
    ``per_token``, over each row of the last axis (an array of shape
    ``x.shape[:-1] + (1,)``). q = clip(round(x / scale), -128, 127) with round
    half up, so in practice q lies in [-127, 127]. An all-zero tensor or row
    gets scale 1.0 (and q = 0) instead of dividing by zero.
    """
    x = _finite_float_array("x", x)
    if per_token:
        if x.ndim == 0:
            raise ValueError("per_token quantization needs at least one axis")
        scale = np.max(np.abs(x), axis=-1, keepdims=True) / INT8_MAX
        scale = np.where(scale > 0, scale, 1.0)
    else:
        scale = float(np.max(np.abs(x))) / INT8_MAX
        scale = scale if scale > 0 else 1.0
    q = np.clip(_round_half_up(x / scale), INT8_MIN, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize(q, scale):
    """Float view of an integer tensor: ``q * scale`` (scale broadcasts)."""
    return np.asarray(q, dtype=np.float64) * np.asarray(scale, dtype=np.float64)


def requant_params(ratio, m_bits=M_BITS_DEFAULT):
    """Dyadic multiplier ``(m, e)`` with m / 2**e ~ ratio (SPEC section 2).

    e is the largest integer in [1, E_MAX] with round(ratio * 2**e) < 2**m_bits
    (round half up) and m = round(ratio * 2**e). ``ratio`` may be a float (ints
    are returned) or an array of per-channel ratios (int64 arrays of the same
    shape are returned). ``m_bits`` must lie in [1, 52] so that the rounding
    is exact in float64.

    Raises ``ValueError`` if a ratio is not finite and positive, is too large
    (even e = 1 gives m >= 2**m_bits) or too small (m = 0 at e = E_MAX).
    """
    m_bits = check_int("m_bits", m_bits, 1, _M_BITS_FLOAT_MAX)
    r = np.asarray(ratio, dtype=np.float64)
    bad = ~np.isfinite(r) | (r <= 0)
    if bad.any():
        raise ValueError(f"ratio must be finite and > 0, got {r[bad].flat[0]}")
    frac, exp = np.frexp(r)  # r = frac * 2**exp with frac in [0.5, 1)
    # With e = m_bits - exp, ratio * 2**e = frac * 2**m_bits lies in
    # [2**(m_bits-1), 2**m_bits); one less if rounding reaches 2**m_bits.
    e = m_bits - exp - (_round_half_up(np.ldexp(frac, m_bits)) >= 2**m_bits)
    if (e < 1).any():
        first = r[e < 1].flat[0]
        raise ValueError(f"ratio {first} is too large for m_bits={m_bits}: even e=1 "
                         f"gives round(ratio * 2) >= 2**{m_bits}")
    e = np.minimum(e, E_MAX).astype(np.int64)
    m = _round_half_up(np.ldexp(r, e)).astype(np.int64)
    if (m == 0).any():
        first = r[m == 0].flat[0]
        raise ValueError(f"ratio {first} is too small: round(ratio * 2**{E_MAX}) is 0 "
                         f"(E_MAX={E_MAX})")
    if r.ndim == 0:
        return int(m), int(e)
    return m, e


def _dyadic(name, v, m, e, bias, m_bits):
    """round_half_up((v + bias) * m / 2**e) in int64, unclamped, with checks."""
    m_bits = check_int("m_bits", m_bits, 1)
    v = _int_array(name, v)
    m, e = _int_array("m", m), _int_array("e", e)
    label = name if bias is None else f"{name} + bias"
    bias = np.zeros((), np.int64) if bias is None else _int_array("bias", bias)
    for pname, arr in (("m", m), ("e", e), ("bias", bias)):
        if not _broadcasts_over(arr.shape, v.shape):
            raise ValueError(f"{pname} of shape {arr.shape} does not broadcast over "
                             f"{name} of shape {v.shape} (per-channel arrays run "
                             f"along the last axis)")
    m_lo, m_hi = _span(m)
    if m_lo < 0 or m_hi >= 1 << m_bits:
        raise ValueError(f"m must be in [0, 2**{m_bits}), got "
                         f"{m_lo if m_lo < 0 else m_hi}")
    e_lo, e_hi = _span(e)
    if e.size and (e_lo < 1 or e_hi > E_MAX):
        raise ValueError(f"e must be in [1, {E_MAX}], got {e_lo if e_lo < 1 else e_hi}")
    (v_lo, v_hi), (b_lo, b_hi) = _span(v), _span(bias)
    vmax = max(-(v_lo + b_lo), v_hi + b_hi)
    if vmax > _INT64_MAX or vmax * m_hi + (1 << max(e_hi - 1, 0)) > _INT64_MAX:
        raise ValueError(f"({label}) * m could overflow int64: |{label}| up to {vmax}, "
                         f"m up to {m_hi}")
    e = e.astype(np.int64)
    prod = (v.astype(np.int64) + bias.astype(np.int64)) * m.astype(np.int64)
    return (prod + (np.int64(1) << (e - 1))) >> e


def _check_bounds(lo, hi):
    lo, hi = check_int("lo", lo), check_int("hi", hi)
    if lo > hi:
        raise ValueError(f"lo must not exceed hi, got lo={lo}, hi={hi}")
    return lo, hi


def requantize(acc, m, e, bias=None, lo=INT8_MIN, hi=INT8_MAX, m_bits=M_BITS_DEFAULT):
    """Dyadic requantization: clamp(((acc + bias) * m + (1 << (e-1))) >> e, lo, hi).

    ``>>`` is an arithmetic shift, so the result is (acc + bias) * m / 2**e
    rounded half up (ties toward +infinity: -2.5 -> -2, 2.5 -> 3). ``acc`` and
    ``bias`` are integer arrays; ``m`` (0 <= m < 2**m_bits) and ``e``
    (1 <= e <= E_MAX) are integers or arrays. ``bias``, ``m`` and ``e`` must
    broadcast over ``acc`` without enlarging it: shape (N,) is per output
    channel (last axis), shape (M, 1) per token. Returns int64.

    Raises ``TypeError`` for non-integer inputs and ``ValueError`` for values
    out of range, shapes that do not broadcast, lo > hi, or inputs whose
    product could overflow int64.
    """
    lo, hi = _check_bounds(lo, hi)
    return np.clip(_dyadic("acc", acc, m, e, bias, m_bits), lo, hi)


def residual_add(x, mx, ex, y, my, ey, lo=INT16_MIN, hi=INT16_MAX, m_bits=M_BITS_DEFAULT):
    """Residual add of two integer tensors at different scales (SPEC section 2).

    Each input is brought to the output scale by its own dyadic multiplier,
    ``(x * mx + (1 << (ex-1))) >> ex`` and likewise for y (round half up, no
    clamp), the two are summed, and the sum is clamped once to [lo, hi]
    (int16 by default). x and y must have the same shape; (m, e) broadcast as
    in :func:`requantize`. Returns int64.
    """
    lo, hi = _check_bounds(lo, hi)
    x, y = _int_array("x", x), _int_array("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    total = _dyadic("x", x, mx, ex, None, m_bits) + _dyadic("y", y, my, ey, None, m_bits)
    return np.clip(total, lo, hi)
