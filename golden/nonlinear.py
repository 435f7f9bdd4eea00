"""Bit-exact integer reference of I-ViT's nonlinearities (SPEC section 4).

The hardware row units (Shiftmax, ShiftGELU, LayerNorm) are compared against
these functions integer for integer. Every function takes integer NumPy
arrays whose rows are the LAST axis (any leading dimensions), computes in
int64, and returns int64. ``//`` is floor division and ``>>`` an arithmetic
shift, exactly as SPEC 4 writes them; nothing here rounds any other way.

Algorithms (x is an integer tensor at float scale s)
----------------------------------------------------
IEXP(x; s, n), x <= 0, output scale s / 2^n (IEXP(0) = |x0| * 2^n ~ 1.0)::

    p = x + (x >> 1) - (x >> 4)           # ~ x * log2(e)
    x0 = floor(-1 / s)                    # offline constant, see iexp_x0
    p = max(p, n * x0)
    q = p // x0;  r = p - q * x0          # q in 0..n, r in (x0, 0]
    t = r - 2 * x0                        # 2^(r/|x0|) ~ 1 + r/(2|x0|), doubled
    e = t << (n - q - 1) if q < n else t >> 1

shiftmax (I-ViT IntSoftmax), output scale 2^-(out_bits-1),
values 0 .. 2^(out_bits-1) - 1::

    e = IEXP(x - max(row); s, n)
    S = min(sum(e), 2^31 - 1);  f = (2^31 - 1) // S
    y = (e * f) >> (32 - out_bits)

shiftgelu (I-ViT IntGELU), GELU(x) ~ x * sigmoid(1.702 x), s' = 1.702 * s::

    m = max(row)        (mode "ivit")   |  m = max(x, 0) per element ("accurate")
    e1 = IEXP(x - m; s', n);  e2 = min(IEXP(-m; s', n), 2^31 - 1)
    S = min(e1 + e2, 2^31 - 1);  f = (2^31 - 1) // S
    sig = (e1 * f) >> (32 - sig_bits)     # 0 .. 2^(sig_bits-1) - 1
    y = x * sig                           # scale s * 2^-(sig_bits-1), see shiftgelu_scale

  Defaults per mode (GELU_DEFAULTS): "ivit" n=23, sig_bits=8 (I-ViT, int8
  input; sig >> 24); "accurate" n=16, sig_bits=16 (int16 input, SPEC 4.3).
  In "ivit" mode a negative row max makes -m > 0, so q < 0 and the shift
  n - q - 1 exceeds n (up to 84 at s = 2^-2, m = -128: e2 = 2^86). Only
  min(e1 + e2, 2^31 - 1) is ever used and e1 >= 0, so e2 is saturated at
  2^31 - 1 first (shift capped at 32): identical results in 64 bits, and
  the same saturating shifter suffices in hardware.

int_layernorm (I-ViT IntLayerNorm steps 1-4), output scale sqrt(C) / 2^30
before gamma/beta (see int_layernorm_scale), |z| <= 2^30::

    mu = round(sum(x) / C), ties to even, integers only:
         q = sum // C, r = sum - q*C; mu = q + (2r > C or (2r == C and q odd))
    y = x - mu;  var = sum(y^2);  std = max(isqrt(var), 1)
    f = (2^31 - 1) // std;  z = (y * f) >> 1

  std = 0 only when every y is 0, so clamping std to 1 (f = 2^31 - 1) gives
  z = 0 without a division by zero. gamma and beta (SPEC 4.4 step 5) are a
  per-channel requantization done by the requantizer, not here.

Where this differs from I-ViT
-----------------------------
* Exact arithmetic: I-ViT evaluates the same formulas on float tensors;
  with exact arithmetic the results are identical (tests check this against
  a float64 transcription at power-of-two scales, where float64 is exact).
* LayerNorm square root: I-ViT runs 10 Newton steps from 2^16
  (ivit_newton_sqrt). This model uses the exact floor square root (isqrt,
  a digit recurrence in hardware). The two agree for 142,883 <= var < 2^44
  except when var + 1 is a perfect square (Newton then may return
  isqrt + 1); below 142,883 Newton has not converged (tested).
* The "accurate" GELU mode and the saturation of e2 above are additions.
* std == 0 is clamped to 1 (I-ViT never reaches 0 since Newton from 2^16 in
  10 steps ends >= 64).

Widths and validation
---------------------
x0 must fit a signed X0_BITS (16) bit register; IEXP(0) = |x0| * 2^n must
be <= 2^31 - 1 in shiftmax/shiftgelu, so e * f <= 2^31 - 1 always (f = 1
whenever the sum saturates) and outputs stay in their stated range;
1 <= n <= 31; 2 <= out_bits, sig_bits <= 32; inputs must lie in the int32
range (the units see int8/int16). Row functions take ``max_len`` and reject
longer rows. Errors are ValueError (bad value) or TypeError (bad type).
Tested: int8 rows of 1..197 (all scales 2^-2..2^-5 against I-ViT), int16
rows of 384..768, every int16 value in the accurate GELU mode.
"""

import math
import numbers

import numpy as np

from .checks import check_int, check_int_array

__all__ = [
    "INT32_MAX", "X0_BITS", "GELU_SLOPE", "GELU_DEFAULTS",
    "IVIT_NEWTON_START", "IVIT_NEWTON_STEPS",
    "iexp_x0", "iexp", "shiftmax", "shiftgelu", "shiftgelu_scale",
    "isqrt", "int_layernorm", "int_layernorm_scale", "ivit_newton_sqrt",
]

INT32_MAX = 2**31 - 1          # saturation bound of row sums, dividend of every row divide
X0_BITS = 16                   # default signed width of the x0 register
N_MIN, N_MAX = 1, 31           # allowed IEXP shift parameter n
BITS_MIN, BITS_MAX = 2, 32     # allowed out_bits / sig_bits
GELU_SLOPE = 1.702             # GELU(x) ~ x * sigmoid(GELU_SLOPE * x)
GELU_DEFAULTS = {"ivit": (23, 8), "accurate": (16, 16)}   # mode -> (n, sig_bits)
IVIT_NEWTON_START = 2**16      # I-ViT LayerNorm Newton iteration: start value
IVIT_NEWTON_STEPS = 10         # ... and number of steps
_SHIFT_SAT = 32                # t << 32 >= 2^32 > INT32_MAX for any t >= 1


def _ints(x, name="x"):
    """Return x as an int64 array; TypeError unless integer, ValueError unless int32-ranged."""
    return check_int_array(name, x, -INT32_MAX - 1, INT32_MAX)


def _rows(x, max_len):
    """Check that x has a non-empty last axis no longer than max_len."""
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"expected rows along the last axis, got shape {x.shape}")
    if max_len is not None and x.shape[-1] > max_len:
        raise ValueError(f"row length {x.shape[-1]} exceeds max_len={max_len}")


def _check_peak(x0, n):
    """IEXP(0) = |x0| * 2^n must fit 31 bits, else saturated sums overflow the output range."""
    if -x0 << n > INT32_MAX:
        raise ValueError(f"IEXP(0) = |x0| * 2^n = {-x0} * 2^{n} exceeds 2^31 - 1: "
                         f"use a larger scale or a smaller n")


def iexp_x0(scale, bits=X0_BITS):
    """Return x0 = floor(-1 / scale), the integer standing for -1.0 in IEXP.

    Raises ValueError if scale is not finite and positive, or if x0 does not
    fit a signed ``bits``-wide register (default X0_BITS = 16, i.e.
    scale > 2^-15 roughly).
    """
    check_int("bits", bits, 2, 64)
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(1.0 / scale)):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    x0 = math.floor(-1.0 / scale)
    if x0 < -(1 << (bits - 1)):
        raise ValueError(f"x0 = floor(-1/scale) = {x0} does not fit a signed {bits}-bit "
                         f"register (scale {scale!r} too small)")
    return x0


def _iexp(x, x0, n):
    """IEXP on an int64 array; x may be positive, the shift is then capped at 32.

    A capped result is >= 2^32 > INT32_MAX and only ever used saturated.
    """
    p = np.maximum(x + (x >> 1) - (x >> 4), n * x0)
    q = p // x0
    t = p - q * x0 - 2 * x0
    return np.where(q < n, t << np.clip(n - q - 1, 0, _SHIFT_SAT), t >> 1)


def iexp(x, scale, n):
    """Shift exponential IEXP(x; scale, n) of SPEC 4.1 for integer x <= 0.

    Returns int64 e >= |x0| at scale scale / 2^n (e = |x0| * 2^n at x = 0),
    monotone non-decreasing in x. Raises ValueError for positive x.
    """
    x = _ints(x)
    check_int("n", n, N_MIN, N_MAX)
    x0 = iexp_x0(scale)
    if x.size and x.max() > 0:
        raise ValueError(f"iexp needs x <= 0, got max {x.max()}")
    return _iexp(x, x0, n)


def shiftmax(x, scale, n=15, out_bits=8, max_len=None):
    """Shiftmax of SPEC 4.2 over the last axis of integer logits x at ``scale``.

    Returns int64 probabilities in [0, 2^(out_bits-1) - 1] at scale
    2^-(out_bits-1). Bit-exact with I-ViT's IntSoftmax (n = 15, 8 bits).
    """
    x = _ints(x)
    _rows(x, max_len)
    check_int("n", n, N_MIN, N_MAX)
    check_int("out_bits", out_bits, BITS_MIN, BITS_MAX)
    x0 = iexp_x0(scale)
    _check_peak(x0, n)
    e = _iexp(x - x.max(axis=-1, keepdims=True), x0, n)
    f = INT32_MAX // np.minimum(e.sum(axis=-1, keepdims=True), INT32_MAX)
    return (e * f) >> (32 - out_bits)


def shiftgelu(x, scale, n=None, sig_bits=None, mode="ivit", max_len=None):
    """ShiftGELU of SPEC 4.3 on integer x at ``scale``; returns x * sig (int64).

    mode "ivit": row max over the last axis (bit-exact with I-ViT's IntGELU,
    defaults n = 23, sig_bits = 8). mode "accurate": element-wise stable
    sigmoid with m = max(x, 0), defaults n = 16, sig_bits = 16, meant for
    int16 input. The result is at scale shiftgelu_scale(scale, sig_bits) and
    bounded by |x| * (2^(sig_bits-1) - 1); it is requantized afterwards.
    """
    if mode not in GELU_DEFAULTS:
        raise ValueError(f"mode must be one of {sorted(GELU_DEFAULTS)}, got {mode!r}")
    n = GELU_DEFAULTS[mode][0] if n is None else n
    sig_bits = GELU_DEFAULTS[mode][1] if sig_bits is None else sig_bits
    x = _ints(x)
    _rows(x, max_len)
    check_int("n", n, N_MIN, N_MAX)
    check_int("sig_bits", sig_bits, BITS_MIN, BITS_MAX)
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    x0 = iexp_x0(GELU_SLOPE * float(scale))
    _check_peak(x0, n)
    m = x.max(axis=-1, keepdims=True) if mode == "ivit" else np.maximum(x, 0)
    e1 = _iexp(x - m, x0, n)
    e2 = np.minimum(_iexp(-m, x0, n), INT32_MAX)     # -m > 0 possible in "ivit" mode
    f = INT32_MAX // np.minimum(e1 + e2, INT32_MAX)
    return x * ((e1 * f) >> (32 - sig_bits))


def shiftgelu_scale(scale, sig_bits):
    """Float scale of shiftgelu's output: scale * 2^-(sig_bits-1)."""
    check_int("sig_bits", sig_bits, BITS_MIN, BITS_MAX)
    return float(scale) / 2 ** (sig_bits - 1)


def isqrt(v):
    """Exact floor square root, element-wise, of non-negative integers < 2^64.

    A radix-4 digit recurrence (one result bit per step, 32 steps), the form
    the hardware uses; returns int64. Raises ValueError for negative values.
    """
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise TypeError(f"isqrt needs an integer array, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"isqrt needs values >= 0, got {a.min()}")
    a = a.astype(np.uint64)
    res = np.zeros_like(a)
    one, two = np.uint64(1), np.uint64(2)
    bit = np.uint64(1 << 62)
    for _ in range(32):
        trial = res + bit
        ge = a >= trial
        a = np.where(ge, a - trial, a)
        res = np.where(ge, (res >> one) + bit, res >> one)
        bit >>= two
    return res.astype(np.int64)


def int_layernorm(x, max_len=None):
    """Integer LayerNorm of SPEC 4.4 steps 1-4 over the last axis (C channels).

    Returns int64 z with |z| <= 2^30 at scale sqrt(C) / 2^30 (see
    int_layernorm_scale), before gamma/beta. A constant row gives z = 0.
    Raises ValueError if sum(y^2) could exceed 63 bits.
    """
    x = _ints(x)
    _rows(x, max_len)
    c = x.shape[-1]
    if c * (int(x.max()) - int(x.min())) ** 2 >= 2**63:
        raise ValueError(f"variance of {c} channels spanning [{x.min()}, {x.max()}] "
                         f"could exceed 63 bits")
    q, r = np.divmod(x.sum(axis=-1, keepdims=True), c)
    mu = q + ((2 * r > c) | ((2 * r == c) & (q % 2 == 1)))
    y = x - mu
    std = np.maximum(isqrt((y * y).sum(axis=-1, keepdims=True)), 1)
    return (y * (INT32_MAX // std)) >> 1


def int_layernorm_scale(channels):
    """Float scale of int_layernorm's output for rows of ``channels``: sqrt(C) / 2^30."""
    check_int("channels", channels, 1, 2**31)
    return math.sqrt(channels) / 2**30


def ivit_newton_sqrt(var):
    """I-ViT's LayerNorm square root: 10 floor-Newton steps from 2^16 (reference only).

    k <- (k + var // k) // 2, element-wise on non-negative integers; int64.
    """
    var = check_int_array("var", var, 0, np.iinfo(np.int64).max)
    k = np.full_like(var, IVIT_NEWTON_START)
    for _ in range(IVIT_NEWTON_STEPS):
        k = (k + var // k) // 2
    return k
