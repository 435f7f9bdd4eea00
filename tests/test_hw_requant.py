# amaranth: UnusedElaboratable=no
"""Requantizer and ResidualAdd: construction checks, the compiler-side
constant check, and Verilator regressions against golden."""
import json

import numpy as np
import pytest

from trilut.golden.quant import E_MAX, requant_params
from trilut.hw.requant import (Requantizer, ResidualAdd, check_requant_params, dyadic_latency,
                               mult18_count)
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

# (unit, parameters): scalar constants, int8 output, defaults; per-channel
# table with int16 output, a 17-bit m (one DSP column at its limit) and
# narrower accumulator and bias; residual adds, scalar and per channel.
# Several lanes per beat are covered through Int8Engine (tests/test_hw_int8mm.py),
# which runs the same datapath with lanes = 2 and 3.
CONFIGS = [
    ("requant", dict(channels=1)),
    ("requant", dict(channels=8, out_bits=16, acc_bits=24, m_bits=17, bias_bits=20)),
    ("residual", dict(channels=1)),
    ("residual", dict(channels=4, x_bits=24)),
]
UNITS = {"requant": Requantizer, "residual": ResidualAdd}


def _id(cfg):
    unit, p = cfg
    return unit + "".join(f"-{k}{v}" for k, v in p.items())


def simulate(unit, params, *, seed=1, broken=False, testcase=None):
    dut = UNITS[unit](**params)
    env = {"TRILUT_TB": json.dumps({"unit": unit, "params": params, "seed": seed,
                                    "break": broken})}
    name = _id((unit, params)) + ("-broken" if broken else "")
    return run_cocotb(generate_verilog(dut, unit), unit, "trilut.sim.tb_requant",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_unit_matches_golden(cfg):
    assert simulate(*cfg) == 4


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2]], ids=_id)
def test_ties_to_even_model_is_caught(cfg):
    """The scoreboard is not vacuous: a reference rounding ties to even
    (I-ViT's PyTorch rule) must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(*cfg, broken=True, testcase="extreme_values")


# --- construction and host-side checks ------------------------------------

@pytest.mark.parametrize("param,value,exc", [
    ("acc_bits", 1, ValueError), ("acc_bits", 49, ValueError), ("m_bits", 0, ValueError),
    ("m_bits", 35, ValueError), ("out_bits", 12, ValueError), ("channels", 0, ValueError),
    ("bias_bits", 0, ValueError), ("lanes", 0, ValueError), ("acc_bits", 32.0, TypeError),
    ("channels", True, TypeError),
])
def test_requantizer_rejects_bad_parameters(param, value, exc):
    with pytest.raises(exc, match=param):
        Requantizer(**{param: value})


def test_channels_must_be_a_multiple_of_lanes():
    with pytest.raises(ValueError, match="channels"):
        Requantizer(channels=6, lanes=4)


@pytest.mark.parametrize("param,value,exc", [
    ("x_bits", 1, ValueError), ("y_bits", 49, ValueError), ("m_bits", 0, ValueError),
    ("out_bits", 32, ValueError), ("channels", 0, ValueError), ("x_bits", "32", TypeError),
])
def test_residual_rejects_bad_parameters(param, value, exc):
    with pytest.raises(exc, match=param):
        ResidualAdd(**{param: value})


def test_check_requant_params():
    check_requant_params(2**16 - 1, 1)
    check_requant_params(0, E_MAX)
    check_requant_params(np.array([1, 2**16 - 1]), np.array([1, 62]))
    check_requant_params(*requant_params(np.array([0.5, 1e-3, 3.0])))
    for m, e, match in [(2**16, 5, "m must"), (-1, 5, "m must"), (5, 0, "e must"),
                        (5, E_MAX + 1, "e must"), (np.array([1, 2**16]), 3, "got 65536")]:
        with pytest.raises(ValueError, match=match):
            check_requant_params(m, e)
    with pytest.raises(ValueError, match="m must"):
        check_requant_params(2**8, 3, m_bits=8)
    with pytest.raises(ValueError, match="e must"):
        check_requant_params(5, 20, e_max=16)
    for m, e in [(1.5, 3), (3, 2.0), (True, 3), (np.array([1.0]), 2)]:
        with pytest.raises(TypeError):
            check_requant_params(m, e)
    with pytest.raises(ValueError, match="m_bits"):
        check_requant_params(1, 1, m_bits=35)


def test_param_beats():
    rq = Requantizer(channels=4)
    beats = rq.param_beats(np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([-1, 0, 1]))
    assert [b["last"] for b in beats] == [0, 0, 1] and beats[0]["bias"] == -1
    with pytest.raises(ValueError, match="m must"):
        rq.param_beats([2**16], [1], [0])
    with pytest.raises(ValueError, match="bias"):
        rq.param_beats([1], [1], [2**31])
    with pytest.raises(ValueError, match="length"):
        rq.param_beats([1] * 5, [1] * 5, [0] * 5)
    with pytest.raises(ValueError, match="plain ports"):
        Requantizer().param_beats(1, 1, 0)
    with pytest.raises(ValueError, match="e must"):
        ResidualAdd(channels=2).param_beats([1], [0], [1], [1])


def test_derived_figures():
    rq = Requantizer()
    assert rq.lo == -128 and rq.hi == 127 and rq.mult18 == 2
    assert Requantizer(out_bits=16).hi == 32767
    assert Requantizer(acc_bits=16, bias_bits=16, lanes=4).mult18 == 4
    assert ResidualAdd().mult18 == 3 and ResidualAdd().hi == 32767
    assert mult18_count(33, 16) == 2 and mult18_count(18, 17) == 1 and mult18_count(36, 34) == 6
    assert dyadic_latency(18, 16) == 4 and dyadic_latency(33, 16) == 5
    assert dyadic_latency(36, 34) == 6
    assert rq.cycles(100) == 100 + rq.latency + 2


@pytest.mark.pnr
def test_resource_estimate_matches_synthesis(tmp_path):
    """The MULT18X18D count the unit reports is what Yosys maps (and the
    per-channel table lands in block RAM), measured on ECP5-85F."""
    from trilut.gen.synth import synthesize
    rq = Requantizer(channels=64)
    report = synthesize(generate_verilog(rq, "rq"), "rq", "ecp5-85f", work_dir=tmp_path)
    print(f"Requantizer(channels=64): {report['lut4']} LUT4, {report['ff']} FF, "
          f"{report['mult18']} MULT18X18D, {report['dp16kd']} DP16KD, "
          f"{report['fmax_mhz']} MHz")
    assert report["mult18"] == rq.mult18 == 2
    assert report["dp16kd"] <= 2 and report["fmax_mhz"] is not None
