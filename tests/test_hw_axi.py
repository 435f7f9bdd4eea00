# amaranth: UnusedElaboratable=no
"""AXI4 read and write masters: construction checks, and Verilator
regressions (sim/tb_axi.py) against cocotbext-axi's AXI4 slave with random
pauses on all five channels, error regions and a memory that stops answering."""
import pytest

from trilut.hw.axi import BurstPlanner
from trilut.hw.axi_read import AxiReadMaster
from trilut.hw.axi_write import AxiWriteMaster
from trilut.hw.isa import ErrorCode
from trilut.sim import tb_axi
from trilut.sim.runner import SimFailure, simulate_unit

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

TESTS = 7       # cocotb tests in sim/tb_axi.py

# One Verilator build per configuration (both masters in one DUT), each a
# few minutes to build from cold, so the suite takes three that between them
# cover every width and both ends of `outstanding`. The 64-bit,
# 4-outstanding build has the smallest buffer a burst allows, so the read
# master's credit limit is what holds it back under backpressure.
CONFIGS = [dict(data_bits=32, outstanding=1, timeout=300),
           dict(data_bits=64, outstanding=4, timeout=300, buffer_beats=256),
           dict(data_bits=128, outstanding=4, timeout=300)]


def simulate(params, *, seed=1, broken=False, testcase=None):
    return simulate_unit(tb_axi.build(params), "axi_pair", "trilut.sim.tb_axi", params,
                         seed=seed, broken=broken, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("params", CONFIGS,
                         ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_masters_against_cocotbext_axi(params):
    assert simulate(params, seed=params["data_bits"] + params["outstanding"]) == TESTS


@pytest.mark.sim
@pytest.mark.parametrize("testcase", ["random_reads", "random_writes"])
def test_wrong_model_is_caught(testcase):
    """The scoreboards are not vacuous: reference data with one byte off by
    one must be reported, on reads and on writes."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(CONFIGS[0], seed=5, broken=True, testcase=testcase)


# --- construction -------------------------------------------------------------

@pytest.mark.parametrize("cls", [AxiReadMaster, AxiWriteMaster])
@pytest.mark.parametrize("kw,exc,match", [
    (dict(data_bits=48), ValueError, "power of two"),
    (dict(data_bits=1024), ValueError, "data_bits"),
    (dict(data_bits=16), ValueError, "data_bits"),
    (dict(data_bits=128.0), TypeError, "data_bits"),
    (dict(addr_bits=8), ValueError, "addr_bits"),
    (dict(id_bits=0), ValueError, "id_bits"),
    (dict(len_bits=0), ValueError, "len_bits"),
    (dict(max_burst=257), ValueError, "max_burst"),
    (dict(max_burst=0), ValueError, "max_burst"),
    (dict(outstanding=0), ValueError, "outstanding"),
    (dict(outstanding=True), TypeError, "outstanding"),
    (dict(timeout=1), ValueError, "timeout"),
])
def test_bad_parameters_rejected(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kw)


def test_read_buffer_holds_a_burst():
    with pytest.raises(ValueError, match="buffer_beats"):
        AxiReadMaster(data_bits=128, buffer_beats=255)
    assert AxiReadMaster(data_bits=128).buffer_beats == 512
    # 512-bit words: a 4 KB page is 64 beats, so bursts (and the buffer) are short
    assert BurstPlanner(data_bits=512).max_len == 64
    assert AxiReadMaster(data_bits=512).buffer_beats == 128
    with pytest.raises(TypeError, match="buffer_beats"):
        AxiReadMaster(buffer_beats="big")


def test_parameters_are_properties():
    r = AxiReadMaster(addr_bits=40, data_bits=64, id_bits=6, len_bits=24, max_burst=128,
                      outstanding=8, timeout=1000)
    assert (r.addr_bits, r.data_bits, r.id_bits, r.len_bits, r.max_burst, r.outstanding,
            r.timeout, r.buffer_beats) == (40, 64, 6, 24, 128, 8, 1000, 256)
    with pytest.raises(AttributeError):
        r.outstanding = 2
    assert len(r.m_axi.araddr) == 40 and len(r.m_axi.arid) == 6 and len(r.m_axi.rdata) == 64
    w = AxiWriteMaster(data_bits=256)
    assert len(w.m_axi.wstrb) == 32 and w.signature.members["code"].shape is ErrorCode


def test_error_codes_keep_the_sequencer_numbers():
    """The memory codes were added after the sequencer's, none renumbered."""
    assert ErrorCode.PC == 9 and ErrorCode.MEM_SLVERR == 10 and ErrorCode.MEM_COMMAND == 13


def test_registered_units_are_the_kv260_port():
    """gen/units.py's axi_read / axi_write: 128 bits (the HP port), 4 bursts."""
    from trilut.gen.units import UNITS
    for name in ("axi_read", "axi_write"):
        master = UNITS[name].cls(**UNITS[name].defaults)
        assert (master.data_bits, master.outstanding, master.max_burst) == (128, 4, 256)
