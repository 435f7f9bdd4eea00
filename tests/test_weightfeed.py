# amaranth: UnusedElaboratable=no
"""The weight feeder: construction checks and Verilator regressions
(sim/tb_weightfeed.py) against a Python memory model with random gaps and
backpressure on every stream."""
import pytest

from trilut.hw.weightfeed import WeightFeeder
from trilut.sim.runner import SimFailure, simulate_unit

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# Small memories and queues so that bursts split, the queue fills and
# addresses wrap. 8-byte transfers: 4 words each; 2-byte ones: 1 word.
WIDE = dict(addr_bits=10, out_bytes=8, word_bits=16, max_burst=8, queue=4)
NARROW = dict(addr_bits=9, out_bytes=2, word_bits=16, max_burst=4, queue=2)


def simulate(params, *, seed=1, broken=False, testcase=None):
    return simulate_unit(WeightFeeder(**params), "weightfeed", "trilut.sim.tb_weightfeed",
                         params, seed=seed, broken=broken, testcase=testcase)


@pytest.mark.sim
@pytest.mark.xdist_group("weightfeed-wide")
def test_feeder_four_words_per_transfer():
    assert simulate(WIDE) == 3


@pytest.mark.sim
@pytest.mark.xdist_group("weightfeed-narrow")
def test_feeder_one_word_per_transfer():
    assert simulate(NARROW, seed=2) == 3


@pytest.mark.sim
@pytest.mark.xdist_group("weightfeed-wide")
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference with the words of each
    transfer reversed must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(WIDE, broken="swap", testcase="random_traffic")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(addr_bits=0, out_bytes=8), ValueError, "addr_bits"),
    (dict(addr_bits=10, out_bytes=3), ValueError, "not a whole number of 16-bit"),
    (dict(addr_bits=10, out_bytes=6), ValueError, "power-of-two number of memory words"),
    (dict(addr_bits=10, out_bytes=8, max_burst=12), ValueError, "power of two"),
    (dict(addr_bits=10, out_bytes=8, queue=0), ValueError, "queue"),
    (dict(addr_bits=10, out_bytes=8.0), TypeError, "out_bytes"),
])
def test_construction_checks(kwargs, err, match):
    with pytest.raises(err, match=match):
        WeightFeeder(**kwargs)


def test_ports_match_the_sdram():
    """The memory side has the SDRAM wrapper's stream shapes, so the two
    connect with wiring.connect; out has the accelerator's AXI4-Stream shape."""
    from trilut.gen.litedram import generate
    from trilut.hw.sdram import SDRAM
    sdram = SDRAM(generate(sim=True), max_burst=64)
    f = WeightFeeder(addr_bits=sdram.core.addr_bits, out_bytes=32, max_burst=64)
    for name in ("read_cmd", "read_data"):
        assert f.signature.members[name].flip() == sdram.signature.members[name], name
    assert f.ratio == 16 and f.queue == 32
    assert set(f.signature.members["out"].signature.members) == {"tdata", "tvalid", "tready",
                                                                 "tlast"}
