"""Golden quantization and dyadic requantization against Python-int references."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trilut.golden.quant import (
    E_MAX, INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN, M_BITS_DEFAULT, dequantize,
    quantize_int8, quantize_ternary, requant_params, requantize, residual_add,
)

INT32 = st.integers(-(2**31), 2**31 - 1)


def half_up(x):
    """Reference rounding on exact rationals: floor(x + 1/2)."""
    return math.floor(Fraction(x) + Fraction(1, 2))


def ref_requant(v, m, e, lo, hi):
    """Reference requantization of one value, in exact rational arithmetic."""
    return min(max(half_up(Fraction(v * m, 2**e)), lo), hi)


def test_constants():
    assert (INT8_MIN, INT8_MAX, INT16_MIN, INT16_MAX) == (-128, 127, -32768, 32767)
    assert M_BITS_DEFAULT == 16 and 2**M_BITS_DEFAULT - 1 < 2**17  # 18x18 signed DSP operand
    assert 1 << (E_MAX - 1) < 2**63


# requant_params


@pytest.mark.parametrize("m_bits", [8, 16, 24])
@settings(max_examples=200, deadline=None)
@given(ratio=st.floats(2.0**-50, 2.0**6, allow_nan=False, allow_infinity=False))
def test_requant_params_largest_e(m_bits, ratio):
    m, e = requant_params(ratio, m_bits)
    assert isinstance(m, int) and isinstance(e, int)
    assert 1 <= e <= E_MAX and 0 < m < 2**m_bits
    assert m == half_up(Fraction(ratio) * 2**e)
    assert e == E_MAX or half_up(Fraction(ratio) * 2 ** (e + 1)) >= 2**m_bits
    if e < E_MAX:
        assert abs(Fraction(m, 2**e) - Fraction(ratio)) / Fraction(ratio) <= Fraction(
            1, 2**m_bits - 1)


def test_requant_params_known_values():
    assert requant_params(1.0) == (2**15, 15)
    assert requant_params(0.75) == (49152, 16)
    # 65535.5 rounds half up to 2**16, so e drops by one: m = round(32767.75).
    assert requant_params((2**16 - 0.5) / 2**16) == (2**15, 15)
    assert requant_params((2**16 - 1) / 2**16) == (2**16 - 1, 16)


def test_requant_params_capped_at_e_max():
    ratio = 3 * 2.0**-60
    m, e = requant_params(ratio)
    assert (m, e) == (12, E_MAX)


def test_requant_params_per_channel():
    ratios = np.array([0.5, 1e-3, 7.25, 3 * 2.0**-60])
    m, e = requant_params(ratios)
    assert m.shape == e.shape == (4,) and m.dtype.kind == e.dtype.kind == "i"
    assert [(int(a), int(b)) for a, b in zip(m, e)] == [requant_params(float(r)) for r in ratios]


@pytest.mark.parametrize("ratio,match", [
    (0.0, "finite and > 0, got 0.0"), (-1.5, "got -1.5"), (float("nan"), "got nan"),
    (float("inf"), "got inf"), (32767.75, "too large for m_bits=16"),
    (1e-30, "too small"), ([0.5, -2.0], "got -2.0"),
])
def test_requant_params_errors(ratio, match):
    with pytest.raises(ValueError, match=match):
        requant_params(ratio)


def test_requant_params_largest_ratio():
    assert requant_params(32767.74) == (65535, 1)
    with pytest.raises(TypeError, match="m_bits"):
        requant_params(1.0, 16.0)
    with pytest.raises(ValueError, match="m_bits"):
        requant_params(1.0, 53)


# requantize


@settings(max_examples=300, deadline=None)
@given(
    acc=hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 5)), elements=INT32),
    m=st.integers(0, 2**16 - 1), e=st.integers(1, 40), bias=INT32,
    bounds=st.sampled_from([(INT8_MIN, INT8_MAX), (INT16_MIN, INT16_MAX), (-(2**31), 2**31 - 1)]),
)
def test_requantize_matches_reference(acc, m, e, bias, bounds):
    lo, hi = bounds
    got = requantize(acc, m, e, bias=bias, lo=lo, hi=hi)
    assert got.dtype == np.int64 and got.shape == acc.shape
    expected = [[ref_requant(int(v) + bias, m, e, lo, hi) for v in row] for row in acc]
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(acc=hnp.arrays(np.int32, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=INT32),
       data=st.data())
def test_requantize_per_channel(acc, data):
    n = acc.shape[1]
    m = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2**16 - 1)))
    e = data.draw(hnp.arrays(np.int64, n, elements=st.integers(1, 40)))
    bias = data.draw(hnp.arrays(np.int32, n, elements=INT32))
    got = requantize(acc, m, e, bias=bias)
    for j in range(n):
        np.testing.assert_array_equal(got[:, j], requantize(acc[:, j], m[j], e[j], bias=bias[j]))
        expected = [ref_requant(int(v) + int(bias[j]), int(m[j]), int(e[j]), -128, 127)
                    for v in acc[:, j]]
        np.testing.assert_array_equal(got[:, j], expected)


def test_requantize_per_token():
    acc = np.array([[10, -10], [10, -10]])
    got = requantize(acc, np.array([[1], [3]]), np.array([[1], [2]]))
    np.testing.assert_array_equal(got, [[5, -5], [8, -7]])


def test_requantize_ties_round_half_up():
    acc = np.array([-5, -3, -1, 1, 3, 5])  # /2 -> -2.5, -1.5, -0.5, 0.5, 1.5, 2.5
    np.testing.assert_array_equal(requantize(acc, 1, 1), [-2, -1, 0, 1, 2, 3])
    # The same ties through a 16-bit multiplier: +-5 * 2**15 / 2**16 = +-2.5.
    np.testing.assert_array_equal(requantize(np.array([-5, 5]), 2**15, 16), [-2, 3])
    np.testing.assert_array_equal(requantize(np.array([-7, 7]), 3, 3), [-3, 3])  # -2.625, 2.625


def test_requantize_ties_even_model_is_detected():
    """A ties-to-even requantizer (I-ViT's torch.round) must fail the reference check."""
    acc = np.arange(-8, 9)
    ties_even = np.clip(np.round(acc * 3 / 2**1), -128, 127).astype(np.int64)
    expected = [ref_requant(int(v), 3, 1, -128, 127) for v in acc]
    np.testing.assert_array_equal(requantize(acc, 3, 1), expected)
    assert not np.array_equal(ties_even, expected)


def test_requantize_clamps():
    acc = np.array([-(2**31), -1000, 1000, 2**31 - 1])
    np.testing.assert_array_equal(requantize(acc, 1, 1), [-128, -128, 127, 127])
    np.testing.assert_array_equal(requantize(acc, 1, 1, lo=-300, hi=300), [-300, -300, 300, 300])
    np.testing.assert_array_equal(requantize(acc, 1, 1, lo=0, hi=0), [0, 0, 0, 0])


def test_requantize_wide_inputs():
    acc = np.array([2**47 - 1, -(2**47)])
    got = requantize(acc, 2**15 - 1, 62, lo=-(2**40), hi=2**40)
    np.testing.assert_array_equal(got, [ref_requant(int(v), 2**15 - 1, 62, -(2**40), 2**40)
                                        for v in acc])


def test_requantize_errors():
    acc = np.arange(6).reshape(2, 3)
    with pytest.raises(ValueError, match=r"m must be in \[0, 2\*\*16\), got 65536"):
        requantize(acc, 2**16, 4)
    with pytest.raises(ValueError, match=r"m must be in \[0, 2\*\*8\), got 256"):
        requantize(acc, 256, 4, m_bits=8)
    with pytest.raises(ValueError, match=r"m must be .* got -1"):
        requantize(acc, -1, 4)
    with pytest.raises(ValueError, match=r"e must be in \[1, 62\], got 0"):
        requantize(acc, 1, np.array([1, 0, 1]))
    with pytest.raises(ValueError, match=r"e must be in \[1, 62\], got 63"):
        requantize(acc, 1, 63)
    with pytest.raises(ValueError, match=r"lo must not exceed hi, got lo=5, hi=4"):
        requantize(acc, 1, 1, lo=5, hi=4)
    with pytest.raises(TypeError, match=r"acc must have an integer dtype, got float64"):
        requantize(acc.astype(float), 1, 1)
    with pytest.raises(TypeError, match=r"m must have an integer dtype"):
        requantize(acc, 0.5, 1)
    with pytest.raises(TypeError, match=r"bias must have an integer dtype"):
        requantize(acc, 1, 1, bias=np.zeros(3))
    with pytest.raises(TypeError, match=r"lo must be an integer"):
        requantize(acc, 1, 1, lo=-1.5)
    with pytest.raises(ValueError, match=r"m of shape \(4,\) does not broadcast over acc"):
        requantize(acc, np.ones(4, np.int64), 1)
    with pytest.raises(ValueError, match=r"bias of shape \(2,\) does not broadcast"):
        requantize(acc, 1, 1, bias=np.ones(2, np.int64))
    with pytest.raises(ValueError, match=r"overflow int64: \|acc\| up to 1125899906842624"):
        requantize(np.array([2**50]), 2**15, 16)
    with pytest.raises(ValueError, match=r"\(acc \+ bias\) \* m could overflow int64"):
        requantize(np.array([2**62], np.uint64), 1, 1, bias=2**62)  # sum leaves int64


# residual_add


def ref_residual(x, mx, ex, y, my, ey, lo, hi):
    total = half_up(Fraction(x * mx, 2**ex)) + half_up(Fraction(y * my, 2**ey))
    return min(max(total, lo), hi)


@settings(max_examples=300, deadline=None)
@given(
    xy=st.integers(1, 6).flatmap(lambda n: st.tuples(
        hnp.arrays(np.int32, n, elements=INT32),
        hnp.arrays(np.int16, n, elements=st.integers(-(2**15), 2**15 - 1)))),
    mx=st.integers(0, 2**16 - 1), ex=st.integers(1, 40),
    my=st.integers(0, 2**16 - 1), ey=st.integers(1, 40),
)
def test_residual_add_matches_reference(xy, mx, ex, my, ey):
    x, y = xy
    got = residual_add(x, mx, ex, y, my, ey)
    expected = [ref_residual(int(a), mx, ex, int(b), my, ey, INT16_MIN, INT16_MAX)
                for a, b in zip(x, y)]
    np.testing.assert_array_equal(got, expected)


def test_residual_add_clamps_once():
    # Alone, x maps to 40000 (outside int16); summed with y's -20000 it is in range.
    got = residual_add(np.array([80000, 80000]), 1, 1, np.array([-40000, 40000]), 1, 1)
    np.testing.assert_array_equal(got, [20000, INT16_MAX])
    # Each term rounds half up on its own: 0.5 + 0.5 = 2, not round(1.0) = 1.
    np.testing.assert_array_equal(residual_add(np.array([1]), 1, 1, np.array([1]), 1, 1), [2])
    np.testing.assert_array_equal(residual_add(np.array([-1]), 1, 1, np.array([-1]), 1, 1), [0])
    np.testing.assert_array_equal(
        residual_add(np.array([100]), 1, 1, np.array([100]), 1, 1, lo=-8, hi=8), [8])


def test_residual_add_errors():
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        residual_add(np.zeros(2, np.int32), 1, 1, np.zeros(3, np.int32), 1, 1)
    with pytest.raises(ValueError, match=r"e must be in"):
        residual_add(np.zeros(2, np.int32), 1, 1, np.zeros(2, np.int32), 1, 0)
    with pytest.raises(TypeError, match=r"y must have an integer dtype"):
        residual_add(np.zeros(2, np.int32), 1, 1, np.zeros(2), 1, 1)


# quantize_ternary / quantize_int8


def test_quantize_ternary_known():
    w = np.array([[0.5, -1.0], [0.05, 2.0]])
    w_t, scale = quantize_ternary(w)
    assert w_t.dtype == np.int8 and scale == pytest.approx(0.8875)
    np.testing.assert_array_equal(w_t, [[1, -1], [0, 1]])
    # gamma = 1 and eps = 0 keep the ties at +-0.5 exact: they round half up.
    w_t, scale = quantize_ternary(np.array([0.5, -0.5, 1.0, -2.0]), eps=0.0)
    assert scale == 1.0
    np.testing.assert_array_equal(w_t, [1, 0, 1, -1])


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.floats(-10, 10, allow_nan=False)))
def test_quantize_ternary_properties(w):
    w_t, scale = quantize_ternary(w)
    assert w_t.dtype == np.int8 and set(np.unique(w_t)) <= {-1, 0, 1}
    gamma = np.mean(np.abs(w))
    assert scale == (gamma if gamma > 0 else 1.0)
    np.testing.assert_array_equal(np.sign(w_t[w_t != 0]), np.sign(w[w_t != 0]))


def test_quantize_ternary_edge_cases():
    w_t, scale = quantize_ternary(np.zeros((2, 3)))
    assert scale == 1.0 and not w_t.any()
    with pytest.raises(ValueError, match="empty"):
        quantize_ternary(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_ternary([1.0, np.nan])


def test_quantize_int8_per_tensor():
    x = np.array([[127.0, -2.5], [0.5, -0.5]])  # absmax 127 -> scale 1.0, exact ties
    q, scale = quantize_int8(x)
    assert scale == 1.0 and q.dtype == np.int8
    np.testing.assert_array_equal(q, [[127, -2], [1, 0]])
    q, scale = quantize_int8(np.zeros(4))
    assert scale == 1.0 and not q.any()


def test_quantize_int8_per_token():
    x = np.array([[254.0, -127.0, 1.0], [0.0, 0.0, 0.0], [-63.5, 0.25, 31.75]])
    q, scale = quantize_int8(x, per_token=True)
    assert scale.shape == (3, 1)
    np.testing.assert_array_equal(scale[:, 0], [2.0, 1.0, 0.5])  # all-zero row: 1.0
    np.testing.assert_array_equal(q, [[127, -63, 1], [0, 0, 0], [-127, 1, 64]])
    np.testing.assert_array_equal(dequantize(q, scale)[2], [-63.5, 0.5, 32.0])


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 8)),
                  elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.booleans())
def test_quantize_int8_properties(x, per_token):
    q, scale = quantize_int8(x, per_token=per_token)
    assert q.dtype == np.int8 and q.shape == x.shape and np.abs(q).max() <= 127
    assert np.shape(scale) == (x.shape[:-1] + (1,) if per_token else ())
    err = np.abs(dequantize(q, scale) - x)
    assert (err <= np.asarray(scale) * (0.5 + 1e-9)).all()


def test_quantize_int8_errors():
    with pytest.raises(ValueError, match="empty"):
        quantize_int8(np.zeros(0))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_int8(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="at least one axis"):
        quantize_int8(np.float64(3.0), per_token=True)
