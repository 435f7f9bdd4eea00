"""Golden per-token dynamic quantization against exact rationals and the float quantizer."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trilut.golden.dynquant import (
    FRAC_BITS_MAX, QMAX, default_frac_bits, requantize_rows, row_absmax, row_bias,
    row_multiplier, row_quantize, row_requant_params, row_scale, scale_rows,
)
from trilut.golden.quant import quantize_int8, requantize

IN_BITS = [8, 16, 24, 32]


def rows_strategy(in_bits, max_rows=4, max_len=40):
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    return hnp.arrays(np.int64, st.tuples(st.integers(1, max_rows), st.integers(1, max_len)),
                      elements=st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1, -1])))


def ref_row(row, frac_bits):
    """Python-int reference of one row (module docstring rule, no NumPy)."""
    a = max(abs(int(v)) for v in row)
    r = (QMAX << frac_bits) // a if a else 0
    return [(int(v) * r + (1 << (frac_bits - 1))) >> frac_bits for v in row], a


@pytest.mark.parametrize("in_bits", IN_BITS)
@pytest.mark.parametrize("extra", [0, 1, 8, None])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_python_int_reference_and_error_bound(in_bits, extra, data):
    x = data.draw(rows_strategy(in_bits))
    frac_bits = None if extra is None else in_bits + extra
    q, a = row_quantize(x, in_bits, frac_bits)
    f = default_frac_bits(in_bits) if frac_bits is None else frac_bits
    assert q.dtype == np.int8 and a.shape == x.shape[:-1] + (1,)
    eps = Fraction(1, 2) + Fraction(2 ** (in_bits - 1), 2**f)
    for row, qrow, arow in zip(x, q, a):
        want, amax = ref_row(row, f)
        assert list(qrow) == want and int(arow[0]) == amax
        for v, qv in zip(row, qrow):
            if amax:
                assert abs(qv - Fraction(QMAX * int(v), amax)) <= eps
        if amax:  # the row's extreme maps exactly to +-127
            i = int(np.argmax(np.abs(row)))
            assert qrow[i] == (QMAX if row[i] > 0 else -QMAX)
    assert np.abs(q.astype(int)).max() <= QMAX


@pytest.mark.parametrize("in_bits", [16, 32])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_close_to_float_per_token_quantization(in_bits, data):
    x = data.draw(rows_strategy(in_bits, max_len=64))
    q, a = row_quantize(x, in_bits)
    qf, scale = quantize_int8(x.astype(np.float64), per_token=True)
    assert np.abs(q.astype(int) - qf.astype(int)).max() <= 1
    # same scale: float scale = absmax / 127 (all-zero rows: q = 0 either way)
    nz = a[..., 0] > 0
    np.testing.assert_allclose(row_scale(a, 1.0)[nz], scale[nz])


def test_float_mismatches_are_rare():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**15), 2**15, size=(200, 384))
    q, _ = row_quantize(x, 16)
    qf, _ = quantize_int8(x.astype(np.float64), per_token=True)
    diff = q.astype(int) != qf.astype(int)
    assert diff.mean() < 1e-3   # only within 2**-9 of a rounding tie


@pytest.mark.parametrize("in_bits", [16, 32])
def test_extremes(in_bits):
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    n = 17
    cases = {
        "zeros": (np.zeros(n, np.int64), np.zeros(n), 0),
        "all_min": (np.full(n, lo), np.full(n, -QMAX), -lo),
        "all_max": (np.full(n, hi), np.full(n, QMAX), hi),
        "all_equal_neg": (np.full(n, -3), np.full(n, -QMAX), 3),
        "one_hot": (np.eye(1, n, 5, dtype=np.int64)[0] * lo,
                    np.eye(1, n, 5)[0] * -QMAX, -lo),
        "one_hot_one": (np.eye(1, n, 0, dtype=np.int64)[0], np.eye(1, n, 0)[0] * QMAX, 1),
        "min_and_max": (np.array([lo, hi, 0]), np.array([-QMAX, QMAX, 0]), -lo),
    }
    for name, (x, want, amax) in cases.items():
        q, a = row_quantize(x[None, :], in_bits)
        assert list(q[0]) == list(want), name
        assert int(a[0, 0]) == amax, name


def test_shapes_and_multiplier():
    x = np.arange(-12, 12).reshape(2, 3, 4)
    q, a = row_quantize(x, 16)
    assert q.shape == x.shape and a.shape == (2, 3, 1)
    np.testing.assert_array_equal(row_absmax(x, 16), a)
    assert list(row_multiplier(np.array([0, 1, 127, 2**15]), 24)) == [
        0, 127 << 24, 1 << 24, 127 << 9]


def test_bad_arguments():
    x = np.zeros((2, 4), np.int64)
    with pytest.raises(TypeError, match="x must have an integer dtype"):
        row_quantize(x.astype(float))
    with pytest.raises(ValueError, match=r"x must lie in \[-32768, 32767\]"):
        row_quantize(np.array([[40000]]), 16)
    with pytest.raises(ValueError, match="rows along its last axis"):
        row_quantize(np.zeros((3, 0), np.int64))
    with pytest.raises(ValueError, match="rows along its last axis"):
        row_quantize(np.int64(3))
    with pytest.raises(ValueError, match="frac_bits must be in"):
        row_quantize(x, 16, 15)
    with pytest.raises(ValueError, match="frac_bits must be in"):
        row_quantize(x, 16, FRAC_BITS_MAX + 1)
    with pytest.raises(ValueError, match="in_bits must be in"):
        row_quantize(x, 33)
    with pytest.raises(TypeError, match="in_bits must be an integer"):
        row_quantize(x, 16.0)
    with pytest.raises(ValueError, match="absmax must be >= 0"):
        row_multiplier(np.array([-1]), 24)


def test_widest_configuration_stays_in_int64():
    x = np.array([[-(2**31), 2**31 - 1, 1, -1]])
    q, a = row_quantize(x, 32, FRAC_BITS_MAX)
    assert list(q[0]) == [-127, 127, 0, 0] and int(a[0, 0]) == 2**31


# requantization of the next layer


def test_requantize_rows_is_requantize_of_scaled_acc():
    rng = np.random.default_rng(2)
    acc = rng.integers(-(2**20), 2**20, size=(5, 7))
    a = rng.integers(0, 2**15 + 1, size=(5, 1))
    bias = rng.integers(-(2**30), 2**30, size=7)
    got = requantize_rows(acc, a, 40000, 40, bias)
    np.testing.assert_array_equal(got, requantize(acc * a, 40000, 40, bias))
    np.testing.assert_array_equal(scale_rows(acc, a), acc * a)


def test_scale_rows_errors():
    with pytest.raises(ValueError, match="could overflow int64"):
        scale_rows(np.array([[2**40]]), np.array([[2**31]]))
    with pytest.raises(ValueError, match="does not broadcast"):
        scale_rows(np.zeros((2, 3), np.int64), np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match="absmax must be >= 0"):
        scale_rows(np.zeros((2, 3), np.int64), -np.ones((2, 1), np.int64))


@pytest.mark.parametrize("per_channel", [False, True])
def test_linear_layer_after_row_quantization_tracks_float(per_channel):
    """x (int16 at s_x) -> row_quantize -> int8 @ ternary -> requantize_rows
    against the float product: within one output step plus int8 input error."""
    rng = np.random.default_rng(3)
    s_x, s_out = 2.0**-10, 0.05
    x = rng.normal(0, 3000, size=(16, 64)).clip(-(2**15), 2**15 - 1).astype(np.int64)
    x[0] = 0
    x[1, 3] = 2**15 - 1                       # an outlier channel
    w = rng.integers(-1, 2, size=(64, 8))
    s_w = rng.uniform(0.01, 0.03, size=8) if per_channel else 0.02
    b = rng.normal(0, 0.5, size=8)
    q, a = row_quantize(x, 16)
    m, e = row_requant_params(s_x, s_w, s_out)
    y = requantize_rows(q.astype(np.int64) @ w, a, m, e, row_bias(b, s_x, s_w),
                        lo=-(2**15), hi=2**15 - 1)
    ref = ((x * s_x) @ (w * s_w) + b) / s_out
    # each input is off by <= 1/2 + 2**-9 steps of S_x * a / 127; the output
    # rounds once (1/2), m / 2**e is within 2e-5 of the ratio, the bias rounds
    err_in = (0.5 + 2.0**-9) * a * s_x / QMAX
    bound = 0.5 + err_in * np.abs(w * s_w).sum(axis=0) / s_out + 2e-5 * np.abs(ref) + 1e-3
    assert (np.abs(y - ref) <= bound).all()
    np.testing.assert_array_equal(y[0], requantize(np.zeros(8, np.int64),
                                                   m, e, row_bias(b, s_x, s_w), -(2**15), 2**15 - 1))


def test_row_params_and_bias():
    m, e = row_requant_params(0.01, 0.02, 0.05)
    assert abs(m / 2**e - 0.01 * 0.02 / (127 * 0.05)) / (0.01 * 0.02 / (127 * 0.05)) < 2e-5
    m2, e2 = row_requant_params(0.01, np.array([0.02, 0.04]), 0.05)
    assert m2.shape == (2,) and e2[0] == e
    assert list(row_bias(np.array([0.1, -0.2, 0.0]), 0.01, 0.02)) == [63500, -127000, 0]
    assert list(row_bias(np.array([2.5, -2.5]) * 0.01 * 0.02 / 127, 0.01, 0.02)) == [3, -2]
    with pytest.raises(ValueError, match="not finite"):
        row_bias(np.array([np.inf]), 0.01, 0.02)
    assert math.isclose(float(row_scale(np.array([127]), 0.5)[0]), 0.5)
