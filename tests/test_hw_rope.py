"""Streaming RoPE + requantizer: construction checks and Verilator regressions
against golden rope_requant (q_rope / k_rope int8, k_rope16 int16)."""
import json

import numpy as np
import pytest

from trilut.golden.llm import rope_tables
from trilut.hw.rope import RoPE
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# int8 output (q/k rope) with a table that is not a power of two long; int16 (k_rope16).
CONFIGS = [dict(head_dim=8, max_pos=12, out_bits=8), dict(head_dim=16, max_pos=8, out_bits=16)]


def _id(params):
    return "-".join(f"{k}{v}" for k, v in params.items())


def simulate(params, *, seed=1, broken=None, testcase=None):
    dut = RoPE(**params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = _id(params) + (f"-broken-{broken}" if broken else "")
    return run_cocotb(generate_verilog(dut, "rope"), "rope", "trilut.sim.tb_rope",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_rope_matches_golden(params):
    assert simulate(params) == 4


@pytest.mark.sim
@pytest.mark.parametrize("broken", ["interleaved", "plus"])
def test_wrong_model_is_caught(broken):
    """GPT-J's interleaved pairs, or a lost minus sign, must be reported."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(CONFIGS[0], broken=broken, testcase="random_rows")


@pytest.mark.parametrize("param,value,exc", [
    ("head_dim", 7, ValueError), ("head_dim", 0, ValueError), ("head_dim", 514, ValueError),
    ("head_dim", 8.0, TypeError), ("max_pos", 0, ValueError), ("max_pos", 4097, ValueError),
    ("out_bits", 12, ValueError), ("out_bits", 32, ValueError), ("m_bits", 0, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        RoPE(**{param: value})


def test_table_beats_checked():
    u = RoPE(head_dim=4, max_pos=3)
    cos, sin = rope_tables(4, 10000.0, 3)
    beats = u.table_beats(cos, sin)
    assert len(beats) == u.table_depth == 6 and beats[-1]["last"] == 1
    assert [b["cos"] for b in beats] == cos.reshape(-1).tolist()
    with pytest.raises(ValueError, match="cos"):
        u.table_beats(cos[:2], sin)
    with pytest.raises(ValueError, match="sin"):
        u.table_beats(cos, np.full((3, 2), 1 << 15))
