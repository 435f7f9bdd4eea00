# amaranth: UnusedElaboratable=no
"""DynQuant and RowScaleRequantizer: construction checks and Verilator
regressions against golden.dynquant (sim/tb_dynquant.py)."""
import json

import pytest

from trilut.hw.dynquant import DynQuant, RowScaleRequantizer
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb
from trilut.sim.tb_dynquant import DYNQUANT_TESTS, ROWSCALE_TESTS

# Verilator builds (cached per Verilog hash): int16 rows up to 40 elements
# (longer than the 33-cycle divide interval, so the throughput test runs at
# full rate; not a power of two); int32 rows up to 5 (F = 40: a 47-bit r, a
# 6-DSP multiplier); the row-scale requantizer with a 4-entry table.
DQ16 = dict(max_len=40)
DQ32 = dict(in_bits=32, max_len=5)
RS = dict(channels=4)
UNITS = {"dynquant": DynQuant, "rowscale": RowScaleRequantizer}


def simulate(unit, params, *, seed=1, broken=False, testcase=None):
    dut = UNITS[unit](**params)
    env = {"TRILUT_TB": json.dumps({"unit": unit, "params": params, "seed": seed,
                                    "break": broken})}
    name = unit + "".join(f"-{k}{v}" for k, v in params.items()) + ("-broken" if broken else "")
    testcase = testcase or (DYNQUANT_TESTS if unit == "dynquant" else ROWSCALE_TESTS)
    return run_cocotb(generate_verilog(dut, unit), unit, "trilut.sim.tb_dynquant",
                      name=name + "-" + "+".join(testcase), env=env, testcase=testcase,
                      seed=seed)


@pytest.mark.sim
@pytest.mark.xdist_group("dynquant-16")
def test_dynquant_matches_golden():
    assert simulate("dynquant", DQ16) == len(DYNQUANT_TESTS)


@pytest.mark.sim
@pytest.mark.xdist_group("dynquant-16")
def test_dynquant_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference that truncates x * r >> F
    instead of rounding half up must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate("dynquant", DQ16, broken=True, testcase=["dq_random_rows"])


@pytest.mark.sim
@pytest.mark.xdist_group("dynquant-32")
def test_dynquant_int32_matches_golden():
    assert simulate("dynquant", DQ32,
                    testcase=["dq_random_rows", "dq_extreme_rows", "dq_overlong_row"]) == 3


@pytest.mark.sim
@pytest.mark.xdist_group("rowscale")
def test_rowscale_requantizer_matches_golden():
    assert simulate("rowscale", RS) == len(ROWSCALE_TESTS)


@pytest.mark.sim
@pytest.mark.xdist_group("rowscale")
def test_rowscale_wrong_model_is_caught():
    """A reference that forgets the row's absmax must be reported."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate("rowscale", RS, broken=True, testcase=["rs_random_rows"])


# --- construction ----------------------------------------------------------------

@pytest.mark.parametrize("param,value,exc", [
    ("in_bits", 1, ValueError), ("in_bits", 33, ValueError), ("in_bits", 16.0, TypeError),
    ("frac_bits", 15, ValueError), ("frac_bits", 56, ValueError), ("max_len", 0, ValueError),
    ("max_len", "8", TypeError), ("max_len", (1 << 16) + 1, ValueError),
])
def test_dynquant_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        DynQuant(**{param: value})


@pytest.mark.parametrize("param,value,exc", [
    ("acc_bits", 1, ValueError), ("acc_bits", 48, ValueError), ("scale_bits", 0, ValueError),
    ("scale_bits", 17, ValueError), ("m_bits", 35, ValueError), ("out_bits", 12, ValueError),
    ("channels", 0, ValueError),
])
def test_rowscale_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        RowScaleRequantizer(**{param: value})


def test_properties():
    u = DynQuant()
    assert (u.in_bits, u.frac_bits, u.max_len, u.r_bits, u.mult18) == (16, 24, 4096, 31, 2)
    assert u.divide_interval == 33
    assert DynQuant(in_bits=32).mult18 == 6
    with pytest.raises(AttributeError):
        u.in_bits = 8
    r = RowScaleRequantizer()
    assert (r.acc_bits, r.scale_bits, r.m_bits, r.out_bits, r.channels) == (32, 16, 16, 8, 1)
    assert set(r.signature.members) == {"inp", "out", "m", "e", "bias", "error"}
    assert set(RowScaleRequantizer(channels=4).signature.members) == {
        "inp", "out", "param", "num_channels", "error"}
