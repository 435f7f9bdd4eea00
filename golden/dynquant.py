"""Bit-exact integer reference for per-token dynamic quantization (SPEC 4.5).

The hardware unit :class:`trilut.hw.dynquant.DynQuant` is compared against
:func:`row_quantize` integer for integer; the next linear layer's
requantizer consumes the row's absmax through :func:`requantize_rows` (or
:func:`scale_rows` in front of :func:`~trilut.golden.quant.residual_add`).

Integer rule (one row = the last axis; x signed, ``in_bits`` wide, at float
scale S_x; F = ``frac_bits``)::

    a = max(|x|) over the row                # 0 <= a <= 2**(in_bits-1)
    r = (127 << F) // a   if a > 0 else 0    # one floor divide per row
    q = (x * r + (1 << (F - 1))) >> F        # round half up, arithmetic shift

q is int8 in [-127, 127] and x ~ q * (S_x * a / 127): the row's float scale
is S_x * a / 127 (:func:`row_scale`). The row's absmax ``a`` (not r) travels
with the row: it is what the next requantizer multiplies by.

Properties (proved here, tested in tests/test_golden_dynquant.py):

* No clamp is needed: r <= 127 * 2**F / a and |x| <= a give
  |x * r| <= 127 * 2**F, so q = floor(x*r / 2**F + 1/2) lies in
  [floor(-126.5), floor(127.5)] = [-127, 127].
* Row extremes map exactly to +-127 when F >= in_bits (required): with
  rho = (127 << F) mod a < a <= 2**(in_bits-1) <= 2**(F-1),
  a * r = 127 * 2**F - rho > 127 * 2**F - 2**(F-1), so x = a gives 127 and
  x = -a gives -127 (the rounding offset 2**(F-1) exceeds rho, so no tie).
* a = 0 (an all-zero row) gives r = 0 and q = 0 (defined, no division).
* Error against exact arithmetic: x * r / 2**F = 127 x / a - x * rho / (a * 2**F)
  and |x * rho / (a * 2**F)| < a / 2**F <= 2**(in_bits - 1 - F), so
  |q - 127 x / a| <= 1/2 + 2**(in_bits - 1 - F); q differs from the float
  per-token quantization round_half_up(127 x / a) by at most 1, and only
  when 127 x / a lies within 2**(in_bits - 1 - F) of a rounding tie.
  The default F = in_bits + 8 makes that window 2**-9 wide.

Widths (all proved from the bounds above, for 2 <= in_bits <= 32 and
in_bits <= F <= FRAC_BITS_MAX):

=================  ===========================  ====================
value              bound                        bits
=================  ===========================  ====================
x                  [-2**(in_bits-1), ...)       in_bits signed
a = max |x|        <= 2**(in_bits-1)            in_bits unsigned
dividend 127 << F  < 2**(F+7)                   F + 7 unsigned
r                  <= 127 * 2**F                F + 7 unsigned
x * r              |.| <= 127 * 2**F            F + 8 signed
x * r + 2**(F-1)   |.| < 2**(F+7)               F + 8 signed
q                  [-127, 127]                  8 signed
=================  ===========================  ====================

With int16 input and the default F = 24: r is 31 bits, x * r 32 bits; with
int32 input, F = 40: r 47 bits, x * r 48 bits. FRAC_BITS_MAX = 55 keeps
x * r inside int64 here.

The next linear layer (weights at scale S_w, output at S_out) sees
acc = sum q * w at the per-row scale S_x * S_w * a / 127, so its dyadic
multiplier is static once the row's a is multiplied in::

    y = requantize(acc * a, m, e, bias)      # (m, e) ~ S_x * S_w / (127 * S_out)

:func:`row_requant_params` derives (m, e) and :func:`row_bias` the integer
bias (at scale S_x * S_w / 127, i.e. in units of acc * a). Widths:
|acc * a| <= 2**(acc_bits - 1) * 2**(in_bits - 1) (acc_bits + in_bits - 1
bits signed: 47 for int32 acc and int16 x); the golden functions check the
actual values and raise ``ValueError`` if acc * a or (acc * a + bias) * m
could leave int64.
"""
from __future__ import annotations

import numpy as np

from .checks import check_int, check_int_array
from .quant import INT8_MAX, M_BITS_DEFAULT, _round_half_up, requant_params, requantize

__all__ = [
    "QMAX", "IN_BITS_MAX", "FRAC_BITS_MAX", "default_frac_bits", "row_absmax",
    "row_multiplier", "row_quantize", "row_scale", "scale_rows", "requantize_rows",
    "row_requant_params", "row_bias",
]

QMAX = INT8_MAX            # rows map to [-127, 127]
IN_BITS_MAX = 32
FRAC_BITS_MAX = 55         # |x * r + 2**(F-1)| < 2**(F+7) <= 2**62

_INT64_MAX = (1 << 63) - 1


def default_frac_bits(in_bits):
    """The default F for ``in_bits`` wide input: in_bits + 8 (error window 2**-9)."""
    in_bits = check_int("in_bits", in_bits, 2, IN_BITS_MAX)
    return in_bits + 8


def _check_bits(in_bits, frac_bits):
    in_bits = check_int("in_bits", in_bits, 2, IN_BITS_MAX)
    if frac_bits is None:
        return in_bits, default_frac_bits(in_bits)
    return in_bits, check_int("frac_bits", frac_bits, in_bits, FRAC_BITS_MAX)


def _rows(x, in_bits):
    """x as an int64 array of rows (last axis), checked against in_bits."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"x must have an integer dtype, got {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"x must have rows along its last axis, got shape {arr.shape}")
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = int(arr.min()) if int(arr.min()) < lo else int(arr.max())
        raise ValueError(f"x must lie in [{lo}, {hi}] for in_bits={in_bits}, got {bad}")
    return arr.astype(np.int64)


def row_absmax(x, in_bits=16):
    """max |x| over each row (last axis), int64 of shape ``x.shape[:-1] + (1,)``."""
    in_bits = check_int("in_bits", in_bits, 2, IN_BITS_MAX)
    return np.max(np.abs(_rows(x, in_bits)), axis=-1, keepdims=True)


def row_multiplier(absmax, frac_bits):
    """r = (127 << frac_bits) // absmax, and 0 where absmax == 0 (int64).

    ``absmax`` is an integer array (any shape) of non-negative values; the
    divider in hardware computes exactly this.
    """
    frac_bits = check_int("frac_bits", frac_bits, 1, FRAC_BITS_MAX)
    a = check_int_array("absmax", absmax, 0)
    return np.where(a > 0, (np.int64(QMAX) << frac_bits) // np.maximum(a, 1), 0)


def row_quantize(x, in_bits=16, frac_bits=None):
    """Per-token dynamic quantization of integer rows (module docstring rule).

    ``x``: integer array, rows along the last axis, values in the signed
    ``in_bits`` range (2..32; the units see int16 or int32). ``frac_bits``
    (F, default in_bits + 8) must lie in [in_bits, 55]. Returns
    ``(q, absmax)``: q int8 of x's shape in [-127, 127], absmax int64 of
    shape ``x.shape[:-1] + (1,)``. x ~ q * row_scale(absmax, S_x).

    Raises ``TypeError`` for non-integer input or parameters and
    ``ValueError`` for values out of range or an empty row.
    """
    in_bits, frac_bits = _check_bits(in_bits, frac_bits)
    x = _rows(x, in_bits)
    a = np.max(np.abs(x), axis=-1, keepdims=True)
    r = row_multiplier(a, frac_bits)
    q = (x * r + (np.int64(1) << (frac_bits - 1))) >> frac_bits
    return q.astype(np.int8), a


def row_scale(absmax, s_x):
    """Float scale of each quantized row: S_x * absmax / 127 (offline/analysis only).

    An all-zero row (absmax 0) gets scale 0.0: its q is 0, so q * scale is exact.
    """
    return float(s_x) * np.asarray(absmax, dtype=np.float64) / QMAX


def scale_rows(acc, absmax):
    """acc * absmax in int64: a linear layer's accumulator brought to the
    static scale S_x * S_w / 127 (absmax broadcasts per row, shape (..., 1)).

    Raises ``ValueError`` if the product could leave int64 or absmax is
    negative or does not broadcast per row.
    """
    acc, a = check_int_array("acc", acc), check_int_array("absmax", absmax)
    try:
        shape = np.broadcast_shapes(acc.shape, a.shape)
    except ValueError:
        shape = None
    if shape != acc.shape:
        raise ValueError(f"absmax of shape {a.shape} does not broadcast over acc of shape "
                         f"{acc.shape} (one absmax per row: shape acc.shape[:-1] + (1,))")
    if a.size and int(a.min()) < 0:
        raise ValueError(f"absmax must be >= 0, got {int(a.min())}")
    amax = int(a.max()) if a.size else 0
    accmax = int(np.abs(acc).max()) if acc.size else 0
    if accmax * amax > _INT64_MAX:
        raise ValueError(f"acc * absmax could overflow int64: |acc| up to {accmax}, "
                         f"absmax up to {amax}")
    return acc * a


def requantize_rows(acc, absmax, m, e, bias=None, lo=-(INT8_MAX + 1), hi=INT8_MAX,
                    m_bits=M_BITS_DEFAULT):
    """Requantize a linear layer's accumulator whose input was row-quantized.

    ``requantize(acc * absmax, m, e, bias, lo, hi, m_bits)``: ``acc`` int
    (rows along the last axis), ``absmax`` the input rows' absmax from
    :func:`row_quantize` (shape ``acc.shape[:-1] + (1,)``), (m, e) static
    from :func:`row_requant_params` (per tensor or per output channel),
    ``bias`` from :func:`row_bias` (scale S_x * S_w / 127). Returns int64.
    For the residual path use ``residual_add(scale_rows(acc, absmax), ...)``.
    """
    return requantize(scale_rows(acc, absmax), m, e, bias, lo, hi, m_bits)


def row_requant_params(s_x, s_w, s_out, m_bits=M_BITS_DEFAULT):
    """Static dyadic (m, e) for :func:`requantize_rows`: ratio S_x * S_w / (127 * S_out).

    ``s_w`` may be an array of per-output-channel scales (arrays returned).
    Raises ``ValueError`` as :func:`~trilut.golden.quant.requant_params`.
    """
    ratio = float(s_x) * np.asarray(s_w, dtype=np.float64) / (QMAX * float(s_out))
    return requant_params(ratio if ratio.ndim else float(ratio), m_bits)


def row_bias(bias, s_x, s_w):
    """Integer bias for :func:`requantize_rows`: round_half_up(bias * 127 / (S_x * S_w)).

    ``bias`` float (per output channel), ``s_w`` float or per-channel array.
    Returns int64; raises ``ValueError`` on non-finite values or a bias
    beyond +-2**62.
    """
    b = np.asarray(bias, dtype=np.float64) * QMAX / (float(s_x) * np.asarray(s_w, np.float64))
    if not np.isfinite(b).all():
        raise ValueError("bias * 127 / (s_x * s_w) is not finite")
    if b.size and np.abs(b).max() >= 2.0**62:
        raise ValueError(f"row bias {np.abs(b).max():.3g} does not fit int64 arithmetic")
    return _round_half_up(b).astype(np.int64)
