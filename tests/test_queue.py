"""hw/queue.Queue against Amaranth's SyncFIFOBuffered: the same handshakes,
data and level at every clock edge under random writes and reads, so it can
stand in for that FIFO without changing a unit's cycle counts."""
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.sim import Simulator

from trilut.hw.queue import Queue

PORTS = ("w_rdy", "r_rdy", "r_data", "level")


def compare(depth, *, cycles=600, seed=1, broken=False, guarded=False):
    """Drives both FIFOs with the same random ``w_en``/``r_en``/``w_data``
    (``w_en`` also while full, ``r_en`` while empty; the write rate swept
    from sparse to saturating) and returns the number of cycles compared.
    ``guarded``: a guarded Queue, written only while the reference has room
    (its writer's credit count), compared on ``r_rdy`` and ``r_data``."""
    m = Module()
    m.submodules.ref = ref = SyncFIFOBuffered(width=8, depth=depth)
    m.submodules.dut = dut = Queue(width=8, depth=depth, guarded=guarded)
    ports = PORTS[1:3] if guarded else PORTS
    rng = random.Random(seed)
    checked = []

    async def bench(ctx):
        for cyc in range(cycles):
            p_w = (cyc // 100 + 1) / 6
            w_en, r_en, data = rng.random() < p_w, rng.random() < 0.5, rng.randrange(256)
            w_en = w_en and (not guarded or ctx.get(ref.w_rdy))
            for f in (ref, dut):
                ctx.set(f.w_en, w_en)
                ctx.set(f.r_en, r_en)
                ctx.set(f.w_data, data ^ (broken and f is dut and cyc == cycles // 2))
            want = {p: ctx.get(getattr(ref, p)) for p in ports}
            got = {p: ctx.get(getattr(dut, p)) for p in ports}
            if not want["r_rdy"]:       # r_data is undefined while r_rdy is low
                del want["r_data"], got["r_data"]
            assert got == want, f"cycle {cyc}: Queue {got} != SyncFIFOBuffered {want}"
            checked.append(cyc)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return len(checked)


@pytest.mark.parametrize("depth", [2, 3, 5, 8, 9, 16, 17, 32])
@pytest.mark.parametrize("guarded", [False, True], ids=["level", "guarded"])
def test_matches_syncfifobuffered(depth, guarded):
    assert compare(depth, seed=depth, guarded=guarded) == 600


@pytest.mark.parametrize("guarded", [False, True], ids=["level", "guarded"])
def test_comparison_can_fail(guarded):
    with pytest.raises(AssertionError, match="Queue"):
        compare(8, broken=True, guarded=guarded)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_rejects_depth_below_two():
    with pytest.raises(ValueError, match="at least 2"):
        Queue(width=8, depth=1)
