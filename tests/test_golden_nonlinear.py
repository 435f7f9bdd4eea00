"""Golden model of the integer nonlinearities (golden/nonlinear.py, SPEC 4).

The I-ViT equivalence tests compare against a float64 transcription of
I-ViT's IntSoftmax / IntGELU forward passes (zkkli/I-ViT,
models/quantization_utils/quant_modules.py), evaluated at power-of-two
scales where every float64 operation is exact.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from trilut.golden import nonlinear as nl

SCALES = [2.0**-k for k in range(2, 6)]
LENGTHS = [1, 2, 3, 7, 16, 64, 100, 197]


# --- float64 transcription of I-ViT (the naive reference) -------------------

def ivit_int_exp_shift(x_int, s, n):
    """I-ViT int_exp_shift: float tensors, floor and max as the PyTorch code does."""
    x_int = x_int + np.floor(x_int / 2) - np.floor(x_int / 2**4)
    x0 = np.floor(-1.0 / s)
    x_int = np.maximum(x_int, n * x0)
    q = np.floor(x_int / x0)
    r = x_int - x0 * q
    e = r / 2 - x0
    return np.maximum(np.floor(e * 2.0 ** (n - q)), 0)


def ivit_softmax(x, s, output_bit=8):
    """I-ViT IntSoftmax.forward on float x = x_int * s; returns the float output."""
    x_int = x / s
    x_int = x_int - x_int.max(axis=-1, keepdims=True)
    e = ivit_int_exp_shift(x_int, s, 15)
    total = np.minimum(e.sum(axis=-1, keepdims=True), 2**31 - 1)
    factor = np.floor((2**31 - 1) / total)
    e = np.floor(e * factor / 2 ** (31 - output_bit + 1))
    return e * (1 / 2 ** (output_bit - 1))


def ivit_gelu(x, s, output_bit=8):
    """I-ViT IntGELU.forward on float x = x_int * s; returns the float output."""
    pre_x_int = x / s
    s_sig = s * 1.702
    x_max = pre_x_int.max(axis=-1, keepdims=True)
    e = ivit_int_exp_shift(pre_x_int - x_max, s_sig, 23)
    e_max = ivit_int_exp_shift(-x_max, s_sig, 23)
    total = np.minimum(e + e_max, 2**31 - 1)
    factor = np.floor((2**31 - 1) / total)
    sig = np.floor(e * factor / 2 ** (31 - output_bit + 1))
    return pre_x_int * sig * (s * (1 / 2 ** (output_bit - 1)))


def int8_rows(seed=0):
    """Random int8 rows of several lengths plus the extreme patterns."""
    rng = np.random.default_rng(seed)
    for length in LENGTHS:
        yield rng.integers(-128, 128, (8, length))
        yield rng.integers(-20, 21, (4, length))
        yield np.full((1, length), 5)
        yield np.full((1, length), -128)
        yield np.full((1, length), 127)
        yield np.where(np.arange(length) % 2 == 0, -128, 127)[None, :]
        yield np.where(np.arange(length) == length // 2, 127, -128)[None, :]
        yield np.where(np.arange(length) == 0, 1, 0)[None, :]


def softmax_mismatches(model):
    """Count elements where model(x_int, s) * 2^-7 differs from I-ViT's IntSoftmax."""
    return sum(int(np.count_nonzero(model(x, s) / 2**7 != ivit_softmax(x * s, s)))
               for s in SCALES for x in int8_rows())


def gelu_mismatches(model):
    """Count elements where model(x_int, s) * scale differs from I-ViT's IntGELU."""
    return sum(int(np.count_nonzero(model(x, s) * nl.shiftgelu_scale(s, 8) != ivit_gelu(x * s, s)))
               for s in SCALES for x in int8_rows(1))


# --- I-ViT equivalence -------------------------------------------------------

def test_shiftmax_matches_ivit():
    assert softmax_mismatches(nl.shiftmax) == 0


def test_shiftgelu_matches_ivit():
    assert gelu_mismatches(nl.shiftgelu) == 0


def test_equivalence_check_detects_perturbations(monkeypatch):
    # round half up at the output shift instead of floor
    assert softmax_mismatches(lambda x, s: (nl.shiftmax(x, s, out_bits=9) + 1) >> 1) > 0
    # one exponential shift fewer
    assert softmax_mismatches(lambda x, s: nl.shiftmax(x, s, n=14)) > 0
    # IEXP without the -(x >> 4) term of x * log2(e)
    monkeypatch.setattr(nl, "_iexp", iexp_without_x4)
    assert softmax_mismatches(nl.shiftmax) > 0
    assert gelu_mismatches(nl.shiftgelu) > 0


def iexp_without_x4(x, x0, n):
    """A wrong IEXP whose first step is x + (x >> 1), missing - (x >> 4)."""
    p = np.maximum(x + (x >> 1), n * x0)
    q = p // x0
    t = p - q * x0 - 2 * x0
    return np.where(q < n, t << np.clip(n - q - 1, 0, 32), t >> 1)


# --- shiftmax / shiftgelu ranges and modes -----------------------------------

@pytest.mark.parametrize("out_bits", [8, 16])
def test_shiftmax_range(out_bits):
    for s in SCALES:
        for x in int8_rows(2):
            y = nl.shiftmax(x, s, out_bits=out_bits)
            assert y.min() >= 0 and y.max() <= 2 ** (out_bits - 1) - 1
            assert y.shape == x.shape


def test_shiftmax_saturated_sum_stays_in_range():
    # |x0| * 2^15 = 2^30: two equal maxima already saturate the row sum
    x = np.zeros((1, 197), dtype=np.int16)
    y = nl.shiftmax(x, 2.0**-15)
    assert np.all(y == 2**30 >> 24)


def test_shiftgelu_accurate_mode_is_elementwise():
    rng = np.random.default_rng(3)
    x = rng.integers(-2**15, 2**15, (4, 384))
    y = nl.shiftgelu(x, 2.0**-12, mode="accurate")
    per_element = nl.shiftgelu(x.reshape(-1, 1), 2.0**-12, mode="accurate").reshape(x.shape)
    assert np.array_equal(y, per_element)
    # sig in 0 .. 2^15 - 1 (x * sig), GELU sign: y >= 0 for x >= 0, y <= 0 for x < 0
    assert np.all(np.abs(y) <= np.abs(x) * (2**15 - 1))
    assert np.all(y[x >= 0] >= 0) and np.all(y[x < 0] <= 0)


def test_shiftgelu_ivit_negative_row_max_saturates():
    # m = -128 at s = 2^-2: the exact e2 is 4 << 84, far beyond int64
    x = np.full((1, 16), -128)
    assert np.array_equal(nl.shiftgelu(x, 0.25) * nl.shiftgelu_scale(0.25, 8),
                          ivit_gelu(x * 0.25, 0.25))


# --- IEXP --------------------------------------------------------------------

@pytest.mark.parametrize("n", [15, 16, 23])
@pytest.mark.parametrize("scale", SCALES + [1 / 9.4, 1.0, 3.0])
def test_iexp_properties(n, scale):
    x = np.arange(-4000, 1)
    e = nl.iexp(x, scale, n)
    x0 = nl.iexp_x0(scale)
    assert np.all(np.diff(e) >= 0)
    assert e[-1] == -x0 << n
    assert e.min() == -x0            # floor: p clamped to n * x0 gives t >> 1 = |x0|
    assert x0 == math.floor(-1 / scale)


# --- isqrt and I-ViT's Newton ------------------------------------------------

def test_isqrt_exact():
    rng = np.random.default_rng(4)
    k = rng.integers(0, 2**31, 2000)
    v = np.concatenate([
        np.arange(0, 300), k * k, k * k - 1 + (k == 0), k * k + 1,
        rng.integers(0, 2**44, 2000), rng.integers(0, 2**63 - 1, 2000, dtype=np.int64),
        [2**44 - 1, 2**44, 2**62, 2**63 - 1]]).astype(np.int64)
    assert nl.isqrt(v).tolist() == [math.isqrt(int(a)) for a in v]
    assert nl.isqrt(np.array([2**64 - 1], dtype=np.uint64))[0] == 2**32 - 1
    assert nl.isqrt(np.zeros((2, 3), dtype=np.int8)).shape == (2, 3)


def test_newton_differs_only_where_documented():
    rng = np.random.default_rng(5)
    k = rng.integers(379, 2**22, 3000)
    squares_minus_one = k * k - 1
    others = np.concatenate([rng.integers(142_883, 2**44, 20000),
                             np.arange(142_883, 150_000), [2**44 - 2, 2**44 - 1]])
    others = others[nl.isqrt(others + 1) ** 2 != others + 1]
    assert np.array_equal(nl.ivit_newton_sqrt(others), nl.isqrt(others))
    diff = nl.ivit_newton_sqrt(squares_minus_one) - nl.isqrt(squares_minus_one)
    assert set(diff.tolist()) == {0, 1}
    # the lower bound is tight: 142,882 + 1 is not a square, yet Newton is off
    assert nl.ivit_newton_sqrt(np.array([142_882]))[0] != math.isqrt(142_882)


# --- LayerNorm -----------------------------------------------------------------

def layernorm_reference(row):
    """Python-int LayerNorm steps 1-4: Fraction rounding, math.isqrt."""
    c = len(row)
    mu = round(Fraction(sum(row), c))           # round() on a Fraction: ties to even
    y = [v - mu for v in row]
    std = math.isqrt(sum(v * v for v in y)) or 1
    return [(v * ((2**31 - 1) // std)) >> 1 for v in y]


def test_int_layernorm_matches_python_reference():
    rng = np.random.default_rng(6)
    rows = [rng.integers(-128, 128, (6, 384)), rng.integers(-2**15, 2**15, (6, 768)),
            rng.integers(-3, 4, (50, 4)), np.array([[1, 2, 3, 4], [0, 1, 2, 3], [-3, -2, 0, 1]]),
            np.array([[-2**15] * 383 + [2**15 - 1]])]
    for x in rows:
        z = nl.int_layernorm(x)
        assert z.tolist() == [layernorm_reference(r) for r in x.tolist()]
        assert np.abs(z).max() <= 2**30


def test_int_layernorm_mean_rounds_half_to_even():
    # sums 10 and 6 over 4 channels: means 2.5 -> 2 and 1.5 -> 2
    z = nl.int_layernorm(np.array([[1, 2, 3, 4], [0, 1, 2, 3]]))
    assert z[0, 1] == 0 and z[1, 2] == 0


def test_int_layernorm_constant_row_is_zero():
    for v in (-128, 0, 7, 2**15 - 1):
        assert np.array_equal(nl.int_layernorm(np.full((2, 768), v)), np.zeros((2, 768)))


def test_int_layernorm_scale():
    x = np.array([[-2, -2, 2, 2]])             # var = 16: isqrt exact
    normalized = (x - x.mean()) / x.std()
    z = nl.int_layernorm(x) * nl.int_layernorm_scale(4)
    assert np.allclose(z, normalized, atol=1e-8)


# --- validation ----------------------------------------------------------------

def test_errors():
    with pytest.raises(ValueError, match="x <= 0"):
        nl.iexp(np.array([0, 1]), 0.1, 15)
    with pytest.raises(TypeError, match="x must have an integer dtype, got float64"):
        nl.shiftmax(np.array([0.5, 1.0]), 0.1)
    with pytest.raises(TypeError, match="integer array"):
        nl.isqrt(np.array([True]))
    with pytest.raises(ValueError, match="does not fit a signed 16-bit"):
        nl.iexp_x0(1e-6)
    with pytest.raises(ValueError, match="does not fit a signed 8-bit"):
        nl.iexp_x0(1 / 200, bits=8)
    with pytest.raises(ValueError, match="finite and > 0"):
        nl.iexp_x0(0.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        nl.iexp_x0(float("nan"))
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        nl.shiftmax(np.zeros((2, 17), dtype=np.int8), 0.1, max_len=16)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        nl.shiftgelu(np.zeros(17, dtype=np.int8), 0.1, max_len=16)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        nl.int_layernorm(np.zeros(17, dtype=np.int8), max_len=16)
    with pytest.raises(ValueError, match=r"n must be in \[1, 31\], got 32"):
        nl.shiftmax(np.zeros(4, dtype=np.int8), 0.1, n=32)
    with pytest.raises(ValueError, match=r"out_bits must be in \[2, 32\], got 1"):
        nl.shiftmax(np.zeros(4, dtype=np.int8), 0.1, out_bits=1)
    with pytest.raises(ValueError, match=r"sig_bits must be in \[2, 32\], got 33"):
        nl.shiftgelu(np.zeros(4, dtype=np.int8), 0.1, sig_bits=33)
    with pytest.raises(ValueError, match="exceeds 2\\^31 - 1"):
        nl.shiftgelu(np.zeros(4, dtype=np.int16), 2.0**-10)       # |x0| = 602, n = 23
    with pytest.raises(ValueError, match="mode must be one of"):
        nl.shiftgelu(np.zeros(4, dtype=np.int8), 0.1, mode="tanh")
    with pytest.raises(ValueError, match=r"x must be in \[-2147483648, 2147483647\], "
                                         r"got \[1099511627776"):
        nl.shiftmax(np.array([2**40]), 0.1)
    with pytest.raises(ValueError, match="rows along the last axis"):
        nl.int_layernorm(np.zeros((3, 0), dtype=np.int8))
    with pytest.raises(ValueError, match="values >= 0"):
        nl.isqrt(np.array([-1]))


# --- accuracy report (gen/accuracy.py) -------------------------------------------

def test_accuracy_report(tmp_path):
    from trilut.gen import accuracy

    results = accuracy.run(tmp_path)
    worst = {(r["unit"], r["setting"]): r["max_abs_err"] for r in results["rows"]}
    assert (tmp_path / "accuracy.json").exists()
    assert all((tmp_path / "img" / name).exists() for name in results["plots"])
    assert max(v for (u, _), v in worst.items() if u == "shiftmax") < 0.06
    assert worst["shiftgelu ivit", "int8, s=1/16, x in [-8, 8), sweep as one row (row max 7.94)"] < 0.32
    assert max(v for (u, _), v in worst.items() if u == "int_layernorm") < 0.025
    assert max(v for (u, _), v in worst.items() if u == "requantize") <= 0.75
