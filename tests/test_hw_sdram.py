# amaranth: UnusedElaboratable=no
"""The ULX3S SDRAM subsystem: generation, construction checks, and Verilator
regressions (sim/tb_sdram.py) through the real LiteDRAM controller and its
SDRAM model."""
import json

import pytest

from trilut.gen.litedram import core_params, generate, verilog_with_core
from trilut.hw.sdram import SDRAM
from trilut.sim import tb_sdram
from trilut.sim.runner import SimFailure, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# One Verilator build (the --sim core at 50 MHz, the wrapper's defaults but a
# 64-cycle power-up wait: the SDRAM model needs none).
SIM = dict(init_wait=64, max_burst=256, fifo_depth=32)


def simulate(*, seed=1, broken=False, testcase=None, results=None, **params):
    params = {**SIM, **params, "core": core_params(generate(sim=True))}
    top = tb_sdram.build(params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken,
                                    "results": str(results) if results else None})}
    name = "sdram" + ("-broken" if broken else "") + (f"-{testcase}" if testcase else "")
    return run_cocotb(verilog_with_core(top, "sdram"), "sdram", "trilut.sim.tb_sdram",
                      name=name, env=env, testcase=testcase, seed=seed)


@pytest.mark.sim
@pytest.mark.xdist_group("sdram")
def test_sdram_through_litedram():
    assert simulate() == 3


@pytest.mark.sim
@pytest.mark.xdist_group("sdram")
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a model expecting each read one
    address further on must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(broken=True, testcase="random_traffic")
