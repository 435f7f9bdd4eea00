"""ShiftGELU row unit: construction checks, its pipelined reciprocal and the
saturating IEXP in Amaranth's simulator, and Verilator regressions of the
whole unit (sim/tb_shiftgelu.py)."""
import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from trilut.golden import nonlinear as nl
from trilut.hw.iexp import IExp
from trilut.hw.shiftgelu import ShiftGELU, reciprocal_latency, reciprocal_pipeline
from trilut.sim.pysim import run_iexp
from trilut.sim.runner import SimFailure, simulate_unit

# Two Verilator builds (~30 s each, cached per Verilog hash): the "ivit"
# defaults (every test, throughput included) and the "accurate" mode.
DEFAULT = dict()                # in_bits=8, n=23, sig_bits=8, max_len=256, "ivit"
ACCURATE = dict(mode="accurate", max_len=20)   # in_bits=16, n=16, sig_bits=16


def simulate(params, *, seed=1, broken=False, testcase=None):
    return simulate_unit(ShiftGELU(**params), "shiftgelu", "trilut.sim.tb_shiftgelu", params,
                         seed=seed, broken=broken, testcase=testcase)


@pytest.mark.sim
@pytest.mark.xdist_group("shiftgelu-default")
def test_shiftgelu_matches_golden():
    """Every test at the defaults, including zero-stall throughput over 8
    rows of 256 (>= 0.9 elements/cycle)."""
    assert simulate(DEFAULT) == 6


@pytest.mark.sim
@pytest.mark.xdist_group("shiftgelu-accurate")
def test_shiftgelu_accurate_matches_golden():
    assert simulate(ACCURATE) == 6


@pytest.mark.sim
@pytest.mark.xdist_group("shiftgelu-default")
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference whose sigmoid rounds half
    up instead of truncating must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(DEFAULT, broken=True, testcase="random_rows")


@pytest.mark.sim
@pytest.mark.xdist_group("shiftgelu-accurate")
def test_wrong_model_is_caught_accurate():
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(ACCURATE, broken=True, testcase="random_rows")


# --- building blocks in Amaranth's simulator ---------------------------------

def test_reciprocal_pipeline():
    """(2^31 - 1) // S for S in [2, 2^31 - 1], one S per cycle."""
    rng = random.Random(3)
    dens = [2, 3, 4, 5, 7, 255, 256, 257, 2**16 - 1, 2**16, 2**30 - 1, 2**30, 2**30 + 1,
            2**31 - 2, 2**31 - 1]
    dens += [rng.randrange(2, 2**31) for _ in range(100)]
    dens += [rng.randrange(2, 2**12) for _ in range(50)]
    m = Module()
    den = Signal(31)
    quo, lat = reciprocal_pipeline(m, den)
    assert lat == reciprocal_latency() == 30
    got = []

    async def bench(ctx):
        for i, d in enumerate(dens + [2] * lat):
            ctx.set(den, d)
            await ctx.tick()
            if i >= lat - 1 and len(got) < len(dens):
                got.append(ctx.get(quo))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [nl.INT32_MAX // d for d in dens]


@pytest.mark.parametrize("n", [23, 16, 4])
def test_iexp_signed_saturates_like_golden(n):
    """IEXP(d) for every 9-bit d, positive ones included (e2 = IEXP(-m) with
    a negative row max): e equals the golden min(IEXP, 2^31 - 1)."""
    dut = IExp(n=n, d_bits=9, signed_input=True)
    ds = np.arange(-256, 256)
    for x0 in [-1, -2, -3, -19, -32, -dut.a_max]:
        want = np.minimum(nl._iexp(ds.astype(np.int64), x0, n), nl.INT32_MAX)
        assert [e for e, _, _ in run_iexp(dut, x0, ds)] == want.tolist(), f"x0 = {x0}"


@pytest.mark.parametrize("param,value,exc", [
    ("in_bits", 1, ValueError), ("n", 0, ValueError), ("n", 31, ValueError),
    ("sig_bits", 1, ValueError), ("sig_bits", 25, ValueError), ("max_len", 0, ValueError),
    ("max_len", "8", TypeError), ("mode", "fast", ValueError), ("x0_bits", 1, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        ShiftGELU(**{param: value})


def test_properties():
    u = ShiftGELU()
    assert ((u.in_bits, u.n, u.sig_bits, u.max_len, u.mode, u.out_bits)
            == (8, 23, 8, 256, "ivit", 15))
    u = ShiftGELU(mode="accurate")
    assert (u.in_bits, u.n, u.sig_bits, u.out_bits) == (16, 16, 16, 31)
    with pytest.raises(AttributeError):
        u.n = 3
