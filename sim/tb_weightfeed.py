# amaranth: UnusedElaboratable=no
"""cocotb testbench for the weight feeder (hw/weightfeed.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (the
:class:`~trilut.hw.weightfeed.WeightFeeder` arguments), ``seed`` and
``break`` (a deliberately wrong reference that expects the words inside
each transfer in reverse order, so that the suite can show this testbench
fails when the model is wrong).

The memory is a Python model behind ``read_cmd`` / ``read_data``: random
words at every address, commands answered in order, each checked to be at
most ``max_burst`` words. The reference for a frame ``{addr, len}`` is
independent of the feeder: ``len + 1`` transfers, transfer ``t`` made of
the words at ``addr + t * ratio + j`` (``j`` = 0 .. ratio - 1, word 0 in
the low bits; addresses wrap at the top of memory), ``tlast`` on the last.
Random idle gaps on ``cmd`` and ``read_data``, random backpressure on
``read_cmd`` and ``out``, in every test.
"""
import json
import os
import random
from collections import deque

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from trilut.hw.weightfeed import WeightFeeder
from trilut.sim.streams import (StreamSource, StreamTimeout, pack, payload_layout, reset,
                                start_clock, unpack)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
TIMEOUT = 5_000         # cycles without a transfer before a test gives up


class FeedBench:
    """Clock, reset, the ``cmd`` source, the memory model and the ``out`` sink."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.unit = WeightFeeder(**CONFIG["params"])
        self.p = CONFIG["params"]
        self.words = 1 << self.p["addr_bits"]
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.mem = [self.rng.randrange(1 << self.p.get("word_bits", 16))
                    for _ in range(self.words)]
        self.mem[:4] = [0, (1 << self.p.get("word_bits", 16)) - 1, 0, 1]   # extremes
        self.idle, self.stall = idle, stall
        self.broken = CONFIG.get("break") or None
        self.cmd = StreamSource(dut, "cmd", dut.clk, payload_layout(self.unit, "cmd"),
                                rng=self.rng, idle=idle)
        self.rc_layout = payload_layout(self.unit, "read_cmd")
        self.rd_layout = payload_layout(self.unit, "read_data")
        self.pending = deque()      # words the memory still owes, in order
        self.commands = []          # (addr, words) of every read command taken
        self.outs = []              # (tdata, tlast) of every accepted transfer
        dut.abort.value = 0
        dut.out__tready.value = 0

    async def start(self):
        start_clock(self.dut)
        await reset(self.dut)
        cocotb.start_soon(self._memory())
        cocotb.start_soon(self._sink())

    async def _memory(self):
        dut, valid = self.dut, False
        while True:
            cmd_ready = self.rng.random() >= self.stall
            dut.read_cmd__ready.value = int(cmd_ready)
            if not valid and self.pending and self.rng.random() >= self.idle:
                valid = True
                word, last = self.pending[0]
                dut.read_data__payload.value = pack(self.rd_layout, {"data": word, "last": last})
            dut.read_data__valid.value = int(valid)
            await RisingEdge(dut.clk)
            if valid and dut.read_data__ready.value:
                self.pending.popleft()
                valid = False
            if cmd_ready and dut.read_cmd__valid.value:
                c = unpack(self.rc_layout, dut.read_cmd__payload.value.to_unsigned())
                addr, n = int(c.addr), int(c.len) + 1
                assert n <= self.p.get("max_burst", 256), f"burst of {n} words"
                self.commands.append((addr, n))
                self.pending.extend((self.mem[(addr + i) % self.words], int(i == n - 1))
                                    for i in range(n))

    async def _sink(self):
        dut = self.dut
        while True:
            ready = self.rng.random() >= self.stall
            dut.out__tready.value = int(ready)
            await RisingEdge(dut.clk)
            if ready and dut.out__tvalid.value:
                self.outs.append((dut.out__tdata.value.to_unsigned(), int(dut.out__tlast.value)))

    def expected(self, frames):
        """The reference transfers of ``frames`` ((addr, transfers) pairs)."""
        r, wb = self.unit.ratio, self.p.get("word_bits", 16)
        out = []
        for addr, n in frames:
            for t in range(n):
                words = [self.mem[(addr + t * r + j) % self.words] for j in range(r)]
                if self.broken == "swap":       # wrong on purpose: words reversed
                    words = words[::-1]
                out.append((sum(w << (wb * j) for j, w in enumerate(words)), int(t == n - 1)))
        return out

    async def wait_for(self, count):
        seen, idle = len(self.outs), 0
        while len(self.outs) < count:
            await RisingEdge(self.dut.clk)
            idle = 0 if len(self.outs) != seen else idle + 1
            seen = len(self.outs)
            if idle > TIMEOUT:
                raise StreamTimeout(f"out: {len(self.outs)} of {count} transfers, then "
                                    f"nothing for {TIMEOUT} cycles")

    async def wait_idle(self):
        for _ in range(TIMEOUT):
            await RisingEdge(self.dut.clk)
            if not self.dut.busy.value and not self.pending:
                return
        raise StreamTimeout("busy did not fall")

    def check(self, want):
        diff = [i for i, (g, w) in enumerate(zip(self.outs, want)) if g != w]
        bad = len(diff) + abs(len(self.outs) - len(want))
        assert bad == 0, (f"{bad} mismatches in {len(want)} transfers (first at "
                          f"{diff[0] if diff else len(want)})")


def random_frames(bench, count):
    """(addr, transfers): short and long frames (several bursts), addresses
    anywhere, one that wraps past the top of memory."""
    r, burst = bench.unit.ratio, bench.p.get("max_burst", 256)
    sizes = [1, 2, burst // r or 1, burst // r + 1, 3 * burst // r] + [
        bench.rng.randrange(1, 4 * burst // r + 2) for _ in range(count - 5)]
    frames = [(bench.rng.randrange(bench.words), n) for n in sizes]
    frames[2] = (bench.words - r, frames[2][1])          # wraps
    return frames


async def send_frames(bench, frames):
    await bench.cmd.send([{"addr": a, "len": n - 1} for a, n in frames], timeout=TIMEOUT)


@cocotb.test()
async def random_traffic(dut):
    """Frames of every length with gaps and backpressure on every stream:
    every transfer equal to the reference, busy falls, the queue is free."""
    bench = FeedBench(dut)
    await bench.start()
    frames = random_frames(bench, 24)
    cocotb.start_soon(send_frames(bench, frames))
    want = bench.expected(frames)
    await bench.wait_for(len(want))
    await bench.wait_idle()
    await ClockCycles(dut.clk, 20)
    bench.check(want)
    assert int(dut.free.value) == bench.p.get("queue", 32)
    r = bench.unit.ratio
    assert sum(n for _, n in bench.commands) == r * sum(n for _, n in frames)


@cocotb.test()
async def full_rate(dut):
    """No gaps, no backpressure: one word per cycle once the first arrives."""
    bench = FeedBench(dut, idle=0, stall=0)
    await bench.start()
    frames = [(0, 64)]
    await send_frames(bench, frames)
    await bench.wait_for(1)
    t0 = cocotb.utils.get_sim_time("ns")
    want = bench.expected(frames)
    await bench.wait_for(len(want))
    cycles = (cocotb.utils.get_sim_time("ns") - t0) / 10
    bench.check(want)
    assert cycles <= bench.unit.ratio * (len(want) - 1) + 8, cycles


@cocotb.test()
async def abort_drops_everything(dut):
    """An abort in the middle of a frame drops the queue and the words in
    flight: nothing more comes out, busy falls, and the next frame is exact
    (no stale word of the aborted reads)."""
    bench = FeedBench(dut)
    await bench.start()
    frames = random_frames(bench, 6)
    await send_frames(bench, frames)
    await bench.wait_for(3)
    dut.abort.value = 1
    await RisingEdge(dut.clk)
    dut.abort.value = 0
    await bench.wait_idle()
    assert not dut.out__tvalid.value
    bench.outs.clear()
    await ClockCycles(dut.clk, 50)
    assert bench.outs == [], "transfers after the abort"
    more = [(5, 7), (bench.words - 3, 2)]
    await send_frames(bench, more)
    want = bench.expected(more)
    await bench.wait_for(len(want))
    await bench.wait_idle()
    bench.check(want)
