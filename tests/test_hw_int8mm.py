# amaranth: UnusedElaboratable=no
"""int8 x int8 engine: construction checks, host-side helpers and Verilator
regressions against the exact product (and golden requantize)."""
import json

import numpy as np
import pytest

from trilut.golden.quant import requantize
from trilut.hw.int8mm import Int8Engine
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

# Raw accumulators over several k-blocks with every lane skewed
# (act_fanout 1); per-channel requantizer with an odd lane count (fanout 2:
# two lane groups); one k-block per row (a result every cycle) with scalar
# constants and int16 output.
CONFIGS = [
    dict(lanes=4, k_per_cycle=4, max_k=16, act_fanout=1),
    dict(lanes=3, k_per_cycle=2, max_k=6, requant=True, channels=6),
    dict(lanes=2, k_per_cycle=8, max_k=8, requant=True, out_bits=16),
]


def _id(p):
    return "-".join(f"{k[:3]}{int(v) if isinstance(v, bool) else v}" for k, v in p.items())


def simulate(params, *, seed=1, broken=False, testcase=None):
    dut = Int8Engine(**params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = _id(params) + ("-broken" if broken else "")
    return run_cocotb(generate_verilog(dut, "int8mm"), "int8mm", "trilut.sim.tb_int8mm",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_engine_matches_golden(cfg):
    assert simulate(cfg) == 4


@pytest.mark.sim
@pytest.mark.parametrize("cfg,testcase", [(CONFIGS[0], "random_rows"),
                                          (CONFIGS[1], "extreme_values")],
                         ids=["drop-last-kblock", "ties-to-even"])
def test_wrong_model_is_caught(cfg, testcase):
    """The scoreboard is not vacuous: a reference dropping the last k-block
    (raw engine) or rounding ties to even (requantizing engine) fails."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(cfg, broken=True, testcase=testcase)


@pytest.mark.parametrize("param,value,exc", [
    ("lanes", 0, ValueError), ("k_per_cycle", 0, ValueError), ("max_k", 0, ValueError),
    ("act_bits", 1, ValueError), ("act_bits", 19, ValueError), ("wgt_bits", 19, ValueError),
    ("lanes", 2.5, TypeError), ("requant", 1, TypeError), ("channels", 4, ValueError),
    ("out_bits", 16, ValueError), ("act_fanout", 0, ValueError), ("act_fanout", 9, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        Int8Engine(**{param: value})


def test_bad_requant_parameters_rejected():
    with pytest.raises(ValueError, match="out_bits"):
        Int8Engine(requant=True, out_bits=12)
    with pytest.raises(ValueError, match="channels"):
        Int8Engine(lanes=4, requant=True, channels=6)
    with pytest.raises(ValueError, match="m_bits"):
        Int8Engine(requant=True, m_bits=40)


def test_derived_figures():
    e = Int8Engine(lanes=8, k_per_cycle=8, max_k=768)
    assert e.max_k == 768 and e.k_blocks == 96 and e.macs_per_cycle == 64
    assert e.acc_bits == 25            # 768 * 2**14 = 12,582,912 < 2**24
    assert e.mult18 == 64 and e.out_bits == 25
    r = Int8Engine(lanes=8, k_per_cycle=8, max_k=768, requant=True, channels=64)
    assert r.mult18 == 64 + 16 and r.out_bits == 8 and r.latency > e.latency
    assert Int8Engine(lanes=1, k_per_cycle=1).acc_bits == 16   # 2**14 fits signed 16
    assert e.cycles(2, 768, 16) == 2 * 2 * 96 + e.latency + 2


def test_host_side_helpers():
    e = Int8Engine(lanes=2, k_per_cycle=3, max_k=6)
    w = np.arange(12).reshape(6, 2) - 6
    beats = e.wgt_beats(w)
    assert [(b["last_k"], b["last_n"]) for b in beats] == [(0, 0), (1, 1)]
    assert beats[0]["data"] == [-6, -4, -2, -5, -3, -1]        # lane-major
    assert e.act_beats([1, 2, 3, 4]) == [{"data": [1, 2, 3], "last": 0},
                                         {"data": [4, 0, 0], "last": 1}]
    with pytest.raises(ValueError, match="max_k"):
        e.wgt_beats(np.zeros((7, 2), dtype=int))
    with pytest.raises(ValueError, match="lanes"):
        e.wgt_beats(np.zeros((6, 3), dtype=int))
    with pytest.raises(ValueError, match="weights"):
        e.wgt_beats(np.full((6, 2), 128))
    with pytest.raises(ValueError, match="activations"):
        e.act_beats([-129])
    with pytest.raises(ValueError, match="requant"):
        e.param_beats([1], [1], [0])
    r = Int8Engine(lanes=2, k_per_cycle=2, requant=True, channels=4)
    a, w = np.array([[3, -7]]), np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    m, ex, bias = np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4]), np.array([0, 1, -1, 5])
    assert (r.model(a, w, m, ex, bias) == requantize(a @ w, m, ex, bias=bias)).all()
    assert len(r.param_beats(m, ex, bias)) == 4
