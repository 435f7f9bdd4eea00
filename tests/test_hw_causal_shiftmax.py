"""Causal attention on the existing Shiftmax unit: the visible prefix of every
score row of a golden prefill + decode run (random checkpoint through the host
importer) gives golden's probabilities integer for integer."""
import json

import pytest

from trilut.hw.shiftmax import Shiftmax
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

PARAMS = dict(in_bits=16, n=15, out_bits=16, max_len=64)   # logit_bits = probs_bits = 16
RUN = dict(model=dict(hidden=64, heads=4, kv_heads=2, layers=2, max_pos=64, seed=5),
           prefill=12, decode=3)


def simulate(*, seed=1, broken=None):
    dut = Shiftmax(**PARAMS)
    env = {"TRILUT_TB": json.dumps({"params": PARAMS, **RUN, "seed": seed, "break": broken})}
    name = "causal" + (f"-broken-{broken}" if broken else "")
    return run_cocotb(generate_verilog(dut, "shiftmax"), "shiftmax",
                      "trilut.sim.tb_causal_shiftmax", name=name, env=env)


@pytest.mark.sim
def test_causal_rows_match_golden():
    assert simulate() == 1


@pytest.mark.sim
def test_masked_positions_in_shiftmax_are_caught():
    """Running Shiftmax over the whole cache row (masked logits as 0) is wrong."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(broken="masked")
