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
@pytest.mark.parametrize("testcase", TESTCASES)
def test_uart_top(testcase):
    assert tb_bridge.run(PARAMS, testcase=testcase) == 1


@pytest.mark.sim
@pytest.mark.xdist_group("bridge-cocotb")
@pytest.mark.parametrize("testcase", TESTCASES)
def test_wrong_model_is_caught(testcase):
    with pytest.raises(SimFailure, match=testcase):
        tb_bridge.run(PARAMS, testcase=testcase, broken=True)


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
    assert stream_ports(acc) == ([("s_axis", acc.axis_bytes)], [("m_axis", acc.axis_bytes)])
    b = Bridge(acc)
    assert {"rx", "tx", "s_axil", "s_axis", "m_axis", "quiet"} <= set(b.signature.members)
    top = UartAccelerator(50_000_000, 115_200, **PARAMS)
    assert set(top.signature.members) == {"uart_rx", "uart_tx", "leds"}
    assert top.divisor == 434
    with pytest.raises(TypeError, match="accel"):
        Bridge(PARAMS)
    with pytest.raises(ValueError, match="timeout"):
        Bridge(acc, timeout=3)
