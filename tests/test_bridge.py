# amaranth: UnusedElaboratable=no
"""The UART top at its pins (cocotb on Verilator: register access, streams,
damaged and repeated frames), the PHY's parameter checks and the bridge's
stream discovery."""
import pytest

from trilut.hw.bridge import Bridge, UartAccelerator, stream_ports
from trilut.hw.top import Accelerator
from trilut.hw.uart import MIN_DIVISOR, UartRx, uart_divisor
from trilut.sim import tb_bridge
from trilut.sim.runner import SimFailure

# A small accelerator: the bridge is under test, not the datapath.
PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=4,
              max_width=8, prog_depth=4, const_sets=1)
TESTCASES = ["registers", "streams", "damage"]


@pytest.mark.sim
@pytest.mark.xdist_group("bridge-cocotb")
def test_uart_top():
    """registers, streams and damage in one simulation run."""
    assert tb_bridge.run(PARAMS) == len(TESTCASES)


@pytest.mark.sim
@pytest.mark.xdist_group("bridge-cocotb")
def test_wrong_model_is_caught():
    """With the wrong reference model every testcase must fail."""
    with pytest.raises(SimFailure) as err:
        tb_bridge.run(PARAMS, broken=True)
    for testcase in TESTCASES:
        assert f"{testcase}:" in str(err.value), f"{testcase} did not fail: {err.value}"


@pytest.mark.parametrize("clk_hz,baud,exc,match", [
    (1_000_000, 500_000, ValueError, "divisor 2"),
    (1_000_000, 0, ValueError, "baud"),
    (1_000_000.0, 9600, TypeError, "clk_hz"),
    (1_000_000, 185_000, ValueError, "2%"),
])
def test_uart_parameters_checked(clk_hz, baud, exc, match):
    with pytest.raises(exc, match=match):
        UartRx(clk_hz, baud)


def test_uart_divisor():
    assert uart_divisor(25_000_000, 115_200) == 217
    assert uart_divisor(1_000_000, 250_000) == MIN_DIVISOR


def test_stream_ports_and_tops():
    acc = Accelerator(**PARAMS)
    assert stream_ports(acc) == ([("s_axis", acc.axis_bytes), ("s_axis_wgt", acc.axis_bytes)],
                                 [("m_axis", acc.axis_bytes)])
    b = Bridge(acc)
    assert {"rx", "tx", "s_axil", "s_axis", "s_axis_wgt", "m_axis",
            "quiet"} <= set(b.signature.members)
    top = UartAccelerator(50_000_000, 115_200, **PARAMS)
    assert set(top.signature.members) == {"uart_rx", "uart_tx", "leds"}
    assert top.divisor == 434
    with pytest.raises(TypeError, match="accel"):
        Bridge(PARAMS)
    with pytest.raises(ValueError, match="timeout"):
        Bridge(acc, timeout=3)
