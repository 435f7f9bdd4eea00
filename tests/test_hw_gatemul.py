"""The gated MLP's elementwise unit (act = SiLU via ShiftGELU "accurate", or
ReLU^2; act * up; two requantizers): construction checks and Verilator
regressions against golden gate_product."""
import json

import pytest

from trilut.hw.gatemul import GateMul
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CONFIGS = [dict(act="relu2", max_len=64), dict(act="silu", max_len=64)]


def _id(params):
    return "-".join(f"{k}{v}" for k, v in params.items())


def simulate(params, *, seed=1, broken=None, testcase=None):
    dut = GateMul(**params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = _id(params) + (f"-broken-{broken}" if broken else "")
    return run_cocotb(generate_verilog(dut, "gatemul"), "gatemul", "trilut.sim.tb_gatemul",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_gatemul_matches_golden(params):
    assert simulate(params) == 4


@pytest.mark.sim
@pytest.mark.parametrize("params,broken", [(CONFIGS[0], "relu"), (CONFIGS[1], "relu"),
                                           (CONFIGS[0], "swap")])
def test_wrong_model_is_caught(params, broken):
    """ReLU instead of ReLU^2 or SiLU, or the two requantizers' constants
    crossed, must be reported."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(params, broken=broken, testcase="random_rows")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(act="gelu"), ValueError, "act"), (dict(act="silu", max_len=0), ValueError, "max_len"),
    (dict(act="relu2", max_len=(1 << 16) + 1), ValueError, "max_len"),
    (dict(m_bits=35), ValueError, "m_bits"), (dict(m_bits=16.0), TypeError, "m_bits"),
])
def test_bad_parameters_rejected(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GateMul(**kwargs)


def test_ports_per_mode():
    assert "x0" in GateMul(act="silu").signature.members
    assert "x0" not in GateMul(act="relu2").signature.members
