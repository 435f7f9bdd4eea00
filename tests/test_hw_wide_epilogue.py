# amaranth: UnusedElaboratable=no
"""The lanes-wide LINEAR epilogue: construction checks and Verilator
regressions against golden requantize_rows."""
import pytest

from trilut.hw.dynquant import RowScale
from trilut.hw.wide_epilogue import LinearEpilogue
from trilut.hw.requant import Requantizer
from trilut.sim import tb_wide_epilogue
from trilut.sim.runner import SimFailure

# lanes 4 with narrow widths and int8 output; the top's engine width (16
# lanes) with its widths (32-bit accumulators, 16-bit absmax, int16 out).
CONFIGS = [
    dict(lanes=4, channels=16, acc_bits=24, scale_bits=8, out_bits=8, m_bits=17, bias_bits=20),
    dict(lanes=16, channels=64),
]


def _id(p):
    return "-".join(f"{k}{v}" for k, v in p.items())


@pytest.mark.sim
@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_epilogue_matches_golden(params):
    assert tb_wide_epilogue.run(params) == 4


@pytest.mark.sim
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference that takes each result's
    constants by lane instead of by channel must be reported."""
    with pytest.raises(SimFailure, match="mismatches"):
        tb_wide_epilogue.run(CONFIGS[0], broken=True, testcase="random_rows")


@pytest.mark.parametrize("param,value,exc", [
    ("lanes", 0, ValueError), ("channels", 8, ValueError), ("channels", 2.0, TypeError),
    ("acc_bits", 48, ValueError), ("scale_bits", 17, ValueError), ("out_bits", 12, ValueError),
    ("m_bits", 0, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        LinearEpilogue(**{"lanes": 16, "channels": 64, param: value})


def test_channels_multiple_of_lanes():
    with pytest.raises(ValueError, match="multiple of lanes"):
        LinearEpilogue(lanes=16, channels=40)


def test_derived():
    """Latency and DSP count are those of a RowScale followed by a
    lanes-wide Requantizer (the pieces it is built from)."""
    e = LinearEpilogue(lanes=16, channels=256)
    scale = RowScale(acc_bits=32, scale_bits=16)
    rq = Requantizer(acc_bits=48, out_bits=16, channels=256, lanes=16)
    assert e.latency == scale.latency + rq.latency == 17
    assert e.cycles(10) == 10 + e.latency + 2
    assert e.mult18 == 16 * scale.mult18 + rq.mult18 == 80
    assert e.bounds(True) == (-128, 127) and e.bounds(False) == (-32768, 32767)
    with pytest.raises(ValueError, match="m must be"):
        e.param_beats([1 << 16], [1], [0])
