# amaranth: UnusedElaboratable=no
"""cocotb testbench for the SDRAM subsystem (hw/sdram.py) on the ``--sim``
LiteDRAM core: the real controller in front of LiteDRAM's own SDRAM model.

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (``core``,
the :class:`LiteDRAMCore` fields of the generated core; ``init_wait``,
``max_burst``, ``fifo_depth``: the wrapper's parameters), ``seed``,
``break`` (a deliberately wrong model that expects each read to return the
words one address further on, so that the suite can show this testbench
fails when the model is wrong) and ``results`` (where the throughput test
writes its figures as JSON, for ``trilut.gen.sdrambench``).

The reference is a plain dict, word address -> value, updated by every
write in command order; a read expects the dict's words and ``last`` on a
command's final word. Random idle gaps on the command and write-data
streams and random backpressure on ``read_data``, except in the
throughput test.
"""
import json
import os
import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from trilut.hw.sdram import SDRAM, LiteDRAMCore
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
PERIOD_NS = 20          # 50 MHz, the clock the controller was generated for
TIMEOUT = 2_000         # cycles without progress before a stream gives up


def build(params):
    """The wrapper for a testbench configuration."""
    return SDRAM(LiteDRAMCore(**params["core"]), init_wait_cycles=params["init_wait"],
                 max_burst=params["max_burst"], fifo_depth=params["fifo_depth"])


def cycle():
    return int(get_sim_time("ns")) // PERIOD_NS


class SDRAMBench:
    """Owns clock, reset, the command and write-data sources, the
    read-data sink and the reference memory."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.sdram = build(CONFIG["params"])
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.broken = bool(CONFIG.get("break"))
        self.model = {}
        src = {n: StreamSource(dut, n, dut.clk, payload_layout(self.sdram, n), rng=self.rng,
                               idle=idle) for n in ("read_cmd", "write_cmd", "write_data")}
        self.read_cmd, self.write_cmd, self.write_data = (
            src["read_cmd"], src["write_cmd"], src["write_data"])
        self.read_data = StreamSink(dut, "read_data", dut.clk,
                                    payload_layout(self.sdram, "read_data"), rng=self.rng,
                                    stall=stall)
        start_clock(dut, PERIOD_NS)

    async def start(self):
        """Reset, then wait for ``init_done``; returns the cycles it took."""
        await reset(self.dut)
        t0 = cycle()
        limit = self.sdram.init_wait_cycles + 1_000
        while not self.dut.init_done.value:
            assert not self.dut.init_error.value, "init_error during initialisation"
            assert not self.dut.read_cmd__ready.value, "read_cmd accepted before init_done"
            assert cycle() - t0 < limit, f"init_done not set within {limit} cycles"
            await RisingEdge(self.dut.clk)
        assert not self.dut.init_error.value, "init_error set with init_done"
        return cycle() - t0

    # --- operations ----------------------------------------------------------

    def write_op(self, addr, values):
        """Apply a write to the model; returns its (command, data beats)."""
        for i, v in enumerate(values):
            self.model[addr + i] = v
        return self.sdram.command(addr, len(values)), [{"data": v} for v in values]

    def read_op(self, addr, words):
        """The expected beats of a read, from the model (one address too far
        on with ``break``)."""
        off = 1 if self.broken else 0
        expected = [{"data": self.model.get(addr + i + off, None), "last": int(i == words - 1)}
                    for i in range(words)]
        return self.sdram.command(addr, words), expected

    async def run(self, ops, *, what="traffic"):
        """Send ``ops`` (``("w", command, beats)`` / ``("r", command, expected)``)
        in order from one coroutine while a sink collects every read word;
        compare all of them. Returns the collected beats."""
        expected = [b for kind, _, beats in ops if kind == "r" for b in beats]
        sink = cocotb.start_soon(self.read_data.receive(len(expected), timeout=TIMEOUT))
        for kind, command, beats in ops:
            if kind == "w":
                data = cocotb.start_soon(self.write_data.send(beats, timeout=TIMEOUT))
                await self.write_cmd.send([command], timeout=TIMEOUT)
                await data
            else:
                await self.read_cmd.send([command], timeout=TIMEOUT)
        got = await sink
        bad = [(i, int(g.data), int(g.last), w) for i, (g, w) in enumerate(zip(got, expected))
               if (int(g.data), int(g.last)) != (w["data"], w["last"])]
        if bad:
            i, data, last, want = bad[0]
            raise AssertionError(
                f"{what}: {len(bad)} mismatches of {len(expected)} read words; first at word "
                f"{i}: hardware data {data:#06x} last {last}, model data {want['data']} "
                f"last {want['last']}")
        return got


def random_words(rng, n, bits=16):
    """Random words with the extremes mixed in."""
    return [rng.choice((0, (1 << bits) - 1, 1 << (bits - 1), rng.getrandbits(bits)))
            for _ in range(n)]


@cocotb.test()
async def init_completes(dut):
    """init_done within the programmed wait plus the command writes; no
    command accepted before it."""
    tb = SDRAMBench(dut)
    cycles = await tb.start()
    assert cycles >= tb.sdram.init_wait_cycles, f"init_done after {cycles} cycles only"
    dut._log.info("init_done after %d cycles (wait %d)", cycles, tb.sdram.init_wait_cycles)


@cocotb.test()
async def random_traffic(dut):
    """Random-length writes and reads at random addresses (rows, banks and
    both ends of the memory), idle gaps and backpressure; every word
    compared with the model, overwritten words included."""
    tb = SDRAMBench(dut)
    await tb.start()
    rng, words, burst = tb.rng, tb.sdram.core.words, tb.sdram.max_burst
    regions = []
    ops = []
    for addr in (0, words - burst):                       # both ends, a full burst each
        ops.append(("w",) + tb.write_op(addr, random_words(rng, burst)))
        regions.append((addr, burst))
    for _ in range(60):
        if rng.random() < 0.4 or not regions:
            n = rng.randint(1, burst)
            base, size = rng.choice(regions) if regions and rng.random() < 0.5 else (None, 0)
            addr = (rng.randint(base, base + size - 1) if base is not None
                    else rng.randrange(0, words - n))
            addr = min(addr, words - n)
            ops.append(("w",) + tb.write_op(addr, random_words(rng, n)))
            regions.append((addr, n))
        else:
            base, size = rng.choice(regions)
            start = rng.randint(base, base + size - 1)
            n = rng.randint(1, base + size - start)
            ops.append(("r",) + tb.read_op(start, n))
    reads = sum(len(b) for k, _, b in ops if k == "r")
    await tb.run(ops)
    dut._log.info("%d operations, %d words read and compared", len(ops), reads)


@cocotb.test()
async def throughput(dut):
    """Zero-stall figures: sequential write and read (back-to-back bursts),
    the latency of a lone read, and single-word reads at random addresses.
    Every word compared."""
    tb = SDRAMBench(dut, idle=0.0, stall=0.0)
    await tb.start()
    rng, burst = tb.rng, tb.sdram.max_burst
    n = CONFIG["params"].get("seq_words", 8192)
    base = 3 << 20                                       # not word 0: any base works
    values = random_words(rng, n)
    writes = [("w",) + tb.write_op(base + i, values[i:i + burst]) for i in range(0, n, burst)]
    w_cmd = [c for _, c, _ in writes]
    w_data = [b for _, _, beats in writes for b in beats]
    t0 = cycle()
    data = cocotb.start_soon(tb.write_data.send(w_data, timeout=TIMEOUT))
    await tb.write_cmd.send(w_cmd, timeout=TIMEOUT)
    await data
    write_cycles = cycle() - t0

    await ClockCycles(dut.clk, 200)                      # drain the controller
    reads = [("r",) + tb.read_op(base + i, burst) for i in range(0, n, burst)]
    t0 = cycle()
    await tb.run(reads, what="sequential read")
    read_cycles = cycle() - t0

    await ClockCycles(dut.clk, 50)
    t0 = cycle()
    await tb.run([("r",) + tb.read_op(base + 5, 1)], what="latency")
    latency = cycle() - t0

    singles = [("r",) + tb.read_op(base + rng.randrange(n), 1) for _ in range(512)]
    t0 = cycle()
    await tb.run(singles, what="random single-word reads")
    random_cycles = cycle() - t0

    figures = {"clock_mhz": 1e3 / PERIOD_NS, "word_bytes": tb.sdram.core.data_bits // 8,
               "seq_words": n, "burst_words": burst,
               "seq_write_cycles": write_cycles, "seq_write_words_per_cycle": n / write_cycles,
               "seq_read_cycles": read_cycles, "seq_read_words_per_cycle": n / read_cycles,
               "read_latency_cycles": latency, "random_reads": len(singles),
               "random_read_cycles": random_cycles,
               "random_read_words_per_cycle": len(singles) / random_cycles}
    dut._log.info("throughput: %s", json.dumps(figures))
    if CONFIG.get("results"):
        with open(CONFIG["results"], "w") as f:
            json.dump(figures, f, indent=2)
    assert figures["seq_read_words_per_cycle"] > 0.9, figures
    assert figures["seq_write_words_per_cycle"] > 0.9, figures
