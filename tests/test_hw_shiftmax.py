"""Shiftmax row unit and the IEXP pipeline it is built on: construction
checks, IEXP against the golden model in Amaranth's simulator, and Verilator
regressions of the whole unit (sim/tb_shiftmax.py)."""

import numpy as np
import pytest

from trilut.golden import nonlinear as nl
from trilut.hw.iexp import IExp
from trilut.hw.shiftmax import Shiftmax
from trilut.sim.pysim import run_iexp
from trilut.sim.runner import SimFailure, simulate_unit

# Two Verilator builds (~30 s each, cached per Verilog hash): a small row
# buffer whose length is not a power of two, and the defaults.
SMALL = dict(max_len=20)        # every test
DEFAULT = dict()                # in_bits=8, n=15, out_bits=8, max_len=256: throughput
OUT16 = dict(out_bits=16, max_len=64)   # 16-bit output (issue #7, imported models)


def simulate(params, *, seed=1, broken=False, testcase=None):
    return simulate_unit(Shiftmax(**params), "shiftmax", "trilut.sim.tb_shiftmax", params,
                         seed=seed, broken=broken, testcase=testcase)


@pytest.mark.sim
@pytest.mark.xdist_group("shiftmax-small")
def test_shiftmax_matches_golden():
    assert simulate(SMALL) == 5


@pytest.mark.sim
@pytest.mark.xdist_group("shiftmax-default")
def test_shiftmax_default_config():
    """The default configuration: random rows and the zero-stall throughput
    test over 8 rows of 256 (>= 0.9 elements/cycle)."""
    assert simulate(DEFAULT, testcase=["random_rows", "full_rate"]) == 2


@pytest.mark.sim
@pytest.mark.xdist_group("shiftmax-out16")
def test_shiftmax_out16_matches_golden():
    """out_bits = 16 (SPEC 4.2; the default for imported models): every test,
    bit-exact with golden, including zero-stall throughput over rows of 64."""
    assert simulate(OUT16) == 5


@pytest.mark.sim
@pytest.mark.xdist_group("shiftmax-small")          # same build as test_shiftmax_matches_golden
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference whose row sum misses the
    last term must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(SMALL, broken=True, testcase="random_rows")


# --- IEXP pipeline in Amaranth's simulator ----------------------------------

@pytest.mark.parametrize("n", [15, 23, 16])
def test_iexp_exhaustive(n):
    """Every 9-bit d <= 0 (Shiftmax's x - max range) at the extreme and
    typical x0: e and t << shift equal the golden IEXP."""
    dut = IExp(n=n, d_bits=9)
    ds = np.arange(-256, 1)
    for x0 in [-1, -3, -4, -13, -19, -32, -dut.a_max]:
        got = run_iexp(dut, x0, ds)
        want = nl._iexp(ds.astype(np.int64), x0, n)
        assert [g[0] for g in got] == want.tolist(), f"e differs at x0 = {x0}"
        assert [g[1] for g in got] == want.tolist(), f"t << shift differs at x0 = {x0}"
        assert all(g[2] == 1 for g in got)


def test_iexp_x0_ok():
    dut = IExp(n=23, d_bits=9)
    assert dut.a_max == 255                    # |x0| 2^23 <= 2^31 - 1
    for x0, ok in [(0, 0), (5, 0), (-1, 1), (-255, 1), (-256, 0), (-32768, 0)]:
        assert run_iexp(dut, x0, [0])[0][2] == ok, x0


def test_iexp_latency():
    assert IExp(n=15, d_bits=9).latency == 9
    assert IExp(n=23, d_bits=9).latency == 10
    assert IExp(n=23, d_bits=9, signed_input=True).latency == 10


# --- parameter checks ---------------------------------------------------------

@pytest.mark.parametrize("param,value,exc", [
    ("in_bits", 1, ValueError), ("in_bits", 17, ValueError), ("n", 0, ValueError),
    ("n", 31, ValueError), ("out_bits", 1, ValueError), ("out_bits", 33, ValueError),
    ("max_len", 0, ValueError), ("max_len", 2.0, TypeError), ("x0_bits", 1, ValueError),
    ("n", True, TypeError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        Shiftmax(**{param: value})


@pytest.mark.parametrize("param,value,exc", [
    ("n", 31, ValueError), ("d_bits", 1, ValueError), ("x0_bits", 40, ValueError),
    ("quotient_bits", 3, ValueError), ("signed_input", 1, TypeError),
])
def test_iexp_bad_parameters_rejected(param, value, exc):
    args = dict(n=15, d_bits=9)
    args[param] = value
    with pytest.raises(exc, match=param):
        IExp(**args)


def test_properties():
    u = Shiftmax()
    assert (u.in_bits, u.n, u.out_bits, u.max_len, u.x0_bits) == (8, 15, 8, 256, 16)
    with pytest.raises(AttributeError):
        u.n = 3
