"""The decoder's RMSNorm (LayerNorm in rms mode + gamma requantizer + sign):
construction checks and Verilator regressions against golden int_rmsnorm and
the norm output stage."""
import json

import numpy as np
import pytest

from trilut.hw.layernorm import LayerNorm
from trilut.hw.rmsnorm import RMSNorm
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CONFIG = dict(in_bits=16, max_len=64)


def simulate(params, *, seed=1, broken=None, testcase=None):
    dut = RMSNorm(**params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = "-".join(f"{k}{v}" for k, v in params.items()) + (f"-broken-{broken}" if broken else "")
    return run_cocotb(generate_verilog(dut, "rmsnorm"), "rmsnorm", "trilut.sim.tb_rmsnorm",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
def test_rmsnorm_matches_golden():
    assert simulate(CONFIG) == 4


@pytest.mark.sim
@pytest.mark.parametrize("broken", ["layernorm", "asym_clamp"])
def test_wrong_model_is_caught(broken):
    """A mean subtracted, or the int16 clamp at -32768, must be reported."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(CONFIG, broken=broken, testcase="extreme_rows")


@pytest.mark.parametrize("param,value,exc", [
    ("in_bits", 1, ValueError), ("in_bits", 17, ValueError), ("in_bits", 16.0, TypeError),
    ("max_len", 1, ValueError), ("max_len", 4097, ValueError), ("max_len", "64", TypeError),
    ("m_bits", 0, ValueError), ("m_bits", 35, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        RMSNorm(**{param: value})


def test_layernorm_rms_flag():
    with pytest.raises(TypeError, match="rms"):
        LayerNorm(rms=1)
    u = LayerNorm(in_bits=16, max_len=768, rms=True)
    assert u.rms and u.mean_cycles == 1 and u.var_bits == (768 << 30).bit_length() == 40
    assert not LayerNorm().rms


def test_param_beats_checked():
    u = RMSNorm(max_len=8)
    beats = u.param_beats([1, 2], [3, 4], [1, -1])
    assert beats == [{"m": 1, "e": 3, "sign": 0, "last": 0}, {"m": 2, "e": 4, "sign": 1, "last": 1}]
    with pytest.raises(ValueError, match="sign"):
        u.param_beats([1, 2], [3, 4], [1, 0])
    with pytest.raises(ValueError, match="e must be"):
        u.param_beats([1], [0], [1])
    with pytest.raises(ValueError, match="length"):
        u.param_beats(np.ones(9, int), np.ones(9, int), np.ones(9, int))


def test_analytic_timing():
    u = RMSNorm(in_bits=16, max_len=256)
    assert u.latency() == u.norm.latency() + u.tail_latency + 2
    assert u.min_full_rate_len == next(c for c in range(1, 257) if u.norm.row_interval(c) == c)
