# amaranth: UnusedElaboratable=no
"""Double-buffered weight store: construction and host-side checks, and
Verilator regressions (sim/tb_wstore.py) against the engines' own wgt beats."""
import numpy as np
import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring

from trilut.hw.matmul import DirectEngine, TLMMEngine
from trilut.hw.wstore import WeightStore
from trilut.sim import tb_wstore
from trilut.sim.runner import SimFailure, simulate_unit

# Engines are built for their codes layout and wgt_beats only.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# Two Verilator builds (~10 s each, cached per Verilog hash): TLMM codes
# (40 bits) with a depth that is not a power of two (24 = 6 k-blocks x 4
# output blocks: both buffers in one memory), and the direct engine's codes
# (16 bits) at depth 264 (4 k-blocks x 66 output blocks: one memory per
# buffer, WeightStore.shared false).
TLMM = dict(engine="tlmm", group=3, tables=2, lanes=4, max_k=36, max_n=16, max_rows=64)
DIRECT = dict(engine="direct", group=2, tables=2, lanes=2, max_k=16, max_n=132, max_rows=5)


def simulate(params, *, seed=1, broken=False, testcase=None):
    store = tb_wstore.build(params)[1]
    return simulate_unit(store, "wstore", "trilut.sim.tb_wstore", params, seed=seed,
                         broken=broken, testcase=testcase)


@pytest.mark.sim
@pytest.mark.xdist_group("wstore-tlmm")
def test_store_tlmm_codes():
    assert simulate(TLMM) == 6


@pytest.mark.sim
@pytest.mark.xdist_group("wstore-direct")
def test_store_direct_codes():
    assert simulate(DIRECT, seed=2) == 6


@pytest.mark.sim
@pytest.mark.xdist_group("wstore-tlmm")          # same build as test_store_tlmm_codes
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference expecting each output
    block's k-blocks in reverse order must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(TLMM, broken=True, testcase="passes_back_to_back")


# --- construction and host side ----------------------------------------------

def test_codes_from_engine_layout_or_width():
    e = TLMMEngine(group=3, tables=4, lanes=16, max_k=256, encoding="full")
    depth = WeightStore.depth_for(e, 256, 256)
    assert depth == 22 * 16
    s = WeightStore(e, depth=depth)
    assert s.code_bits == 16 * 4 * 5 and s.resources() == {"dp16kd": 18}
    # 704 words would be two rows of blocks: one memory per buffer (2 x 9);
    # at max_width 128 both buffers share one row of 9 blocks
    assert not s.shared and WeightStore(e, depth=88).shared
    assert WeightStore(e, depth=88).resources() == {"dp16kd": 9}
    layout = e.wgt.payload.shape()["codes"].shape
    assert WeightStore(layout, depth=4).code_bits == 320
    assert WeightStore(320, depth=4).signature.members["load"].signature.members[
        "payload"].shape["codes"].shape == unsigned(320)
    assert WeightStore(data.ArrayLayout(unsigned(2), 8), depth=1).code_bits == 16


@pytest.mark.parametrize("engine", [TLMMEngine(group=3, tables=2, lanes=4, max_k=24),
                                    DirectEngine(group=2, tables=2, lanes=2, max_k=8)])
def test_connects_to_engine(engine):
    """The store's wgt port has the engine's wgt signature."""
    store = WeightStore(engine, depth=8)
    m = Module()
    wiring.connect(m, store.wgt, engine.wgt)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(codes=8, depth=0), ValueError, "depth"),
    (dict(codes=8, depth=(1 << 16) + 1), ValueError, "depth"),
    (dict(codes=8, depth=4.0), TypeError, "depth"),
    (dict(codes=8, depth=4, max_rows=0), ValueError, "max_rows"),
    (dict(codes=8, depth=4, max_rows=True), TypeError, "max_rows"),
    (dict(codes=0, depth=4), ValueError, "codes"),
    (dict(codes="wide", depth=4), TypeError, "codes"),
    (dict(codes=True, depth=4), TypeError, "codes"),
])
def test_bad_parameters_rejected(kw, exc, match):
    with pytest.raises(exc, match=match):
        WeightStore(kw.pop("codes"), **kw)


def test_play_command_and_load_beats():
    s = WeightStore(8, depth=12, max_rows=100)      # rows field: 7 bits
    assert s.play_command(3, 4, 127) == {"k_blocks": 3, "n_blocks": 4, "rows": 127, "cont": 0}
    assert s.play_command(12, 1, 1, cont=True)["cont"] == 1
    for args, match in [((0, 1, 1), "k_blocks"), ((1, 13, 1), "n_blocks"),
                        ((4, 4, 1), "exceeds depth"), ((1, 1, 0), "rows"),
                        ((1, 1, 128), "rows")]:
        with pytest.raises(ValueError, match=match):
            s.play_command(*args)
    assert [b["last"] for b in s.load_beats([{"codes": 1}, {"codes": 2}])] == [0, 1]
    with pytest.raises(ValueError, match="at least one"):
        s.load_beats([])
    with pytest.raises(ValueError, match="max_n"):
        WeightStore.depth_for(TLMMEngine(), 12, 0)


def test_decode_passes_cover_the_row():
    e = TLMMEngine(group=3, tables=2, lanes=4, max_k=24)
    s = WeightStore(e, depth=7)             # at most 3 output blocks of 2 k-blocks
    w = np.random.default_rng(0).integers(-1, 2, size=(12, 4 * 10))
    beats = e.wgt_beats(w)
    chunks = s.decode_passes(beats, 2)
    assert [c[1]["n_blocks"] for c in chunks] == [3, 3, 2, 2]
    assert [c[1]["cont"] for c in chunks] == [1, 1, 1, 0]
    assert [b["codes"] for c in chunks for b in c[0]] == [b["codes"] for b in beats]
    with pytest.raises(ValueError, match="whole output blocks"):
        s.decode_passes(beats[:-1], 2)


def test_registered_unit_is_sized_for_the_default_engine():
    """gen/units.py's "wstore" entry holds the default tlmm engine's codes
    and the depth of a max_width = 256 pass."""
    from trilut.gen.units import UNITS
    engine = UNITS["tlmm"].cls(**UNITS["tlmm"].defaults)
    store = UNITS["wstore"].cls(**UNITS["wstore"].defaults)
    assert store.code_bits == WeightStore(engine, depth=1).code_bits
    assert store.depth == WeightStore.depth_for(engine, 256, 256)
