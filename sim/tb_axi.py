"""cocotb testbench for the AXI4 read and write masters (hw/axi_read.py,
hw/axi_write.py) against cocotbext-axi's AXI4 slave model.

The DUT (``sim/tb_axi_env.py``'s ``AxiPair``) puts both masters on one AXI4
port ``m_axi``; ``TbMemory`` answers it with cocotbext-axi's ``AxiSlave`` (the
model ``AxiRam`` is built on) over a bytearray, with random pauses on all five
channels, a pipelined response latency, and regions that answer SLVERR or
DECERR. Read words are compared byte for byte with the memory, written bytes
are read back from it, and every byte outside the commands is checked
untouched.

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (the masters'
parameters), ``seed``, ``break`` (the reference data off by one in one
byte, so that the suite shows this testbench fails when the model is wrong)
and, for the ``throughput`` test, ``bench`` (``{"beats", "latency"}``); what
was measured goes to the JSON file ``TRILUT_TB_REPORT``.
"""
import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiResp

from trilut.hw.isa import ErrorCode
from trilut.sim.streams import (StreamSink, StreamSource, payload_layout, record_handshakes,
                                reset, start_clock, unpack)
from trilut.sim.tb_axi_env import TbMemory, build

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
REPORT = os.environ.get("TRILUT_TB_REPORT")
MEM_BYTES = 1 << 16


def _record(**kw):
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump(kw, f)


class AxiBench:
    """Owns clock, reset, the memory, the two command sources, the write data
    source and the read data sink (random idle gaps and backpressure)."""

    def __init__(self, dut, *, latency=0, regions=(), pause=0.3, idle=0.3, stall=0.3,
                 size=MEM_BYTES):
        self.dut, self.params = dut, CONFIG["params"]
        self.nb = self.params["data_bits"] // 8
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.mem = TbMemory(dut, size, latency=latency, regions=regions)
        self.mem.mem[:] = self.rng.randbytes(size)
        if pause:
            self.mem.pause(self.rng, p=pause)
        pair = build(self.params)
        self.rd_cmd, self.wr_cmd = (StreamSource(dut, n, dut.clk, payload_layout(pair, n),
                                                 rng=self.rng, idle=idle)
                                    for n in ("rd_cmd", "wr_cmd"))
        self.wr_data = StreamSource(dut, "wr_data", dut.clk, payload_layout(pair, "wr_data"),
                                    rng=self.rng, idle=idle)
        self.rd_data = StreamSink(dut, "rd_data", dut.clk, payload_layout(pair, "rd_data"),
                                  rng=self.rng, stall=stall)
        start_clock(dut)

    async def reset(self):
        await reset(self.dut)

    def commands(self, count, max_beats):
        """(addr, beats): lengths 1, 255, 256, 257 and ``count`` random ones up
        to ``max_beats``, in random order, each starting anywhere on a page or
        a few beats before its end (4 KB crossings)."""
        lengths = [1, 255, 256, 257] + [self.rng.randint(1, max_beats) for _ in range(count)]
        self.rng.shuffle(lengths)
        out = []
        for n in lengths:
            span = n * self.nb
            page = self.rng.randrange((MEM_BYTES - span) // 4096)
            offset = self.rng.choice([self.rng.randrange(4096 // self.nb) * self.nb,
                                      4096 - self.nb * self.rng.randint(1, 4)])
            out.append((min(page * 4096 + offset, MEM_BYTES - span) // self.nb * self.nb, n))
        return out

    def words(self, addr, beats, mem=None):
        """The words ``beats`` words from ``addr`` hold, as ints (the reference)."""
        mem = self.mem.mem if mem is None else mem
        return [int.from_bytes(mem[a:a + self.nb], "little")
                for a in range(addr, addr + beats * self.nb, self.nb)]

    def expected_reads(self, cmds):
        want = [(w, int(i == n - 1)) for a, n in cmds for i, w in enumerate(self.words(a, n))]
        if CONFIG.get("break"):     # wrong on purpose: one byte off by one
            want[len(want) // 2] = (want[len(want) // 2][0] ^ 1, want[len(want) // 2][1])
        return want

    async def read(self, cmds):
        """Read ``cmds`` and compare every word and every ``last``."""
        cocotb.start_soon(self.rd_cmd.send([{"addr": a, "beats": n} for a, n in cmds]))
        beats = await self.rd_data.receive(sum(n for _, n in cmds))
        got = [(int(b.data), int(b.last)) for b in beats]
        _compare(got, self.expected_reads(cmds))
        assert int(self.dut.rd_code.value) == 0, f"read error {_code(self.dut.rd_code)!r}"

    async def write(self, cmds):
        """Write random words for ``cmds``; the whole memory must then equal
        the reference (written bytes, and every other byte untouched)."""
        ref = bytearray(self.mem.mem)
        beats = []
        for a, n in cmds:
            payload = self.rng.randbytes(n * self.nb)
            ref[a:a + len(payload)] = payload
            beats += self.words(0, n, payload)
        if CONFIG.get("break"):
            ref[cmds[0][0]] ^= 1
        cocotb.start_soon(self.wr_cmd.send([{"addr": a, "beats": n} for a, n in cmds]))
        await self.wr_data.send([{"data": w} for w in beats])
        await self.wait_for(lambda: not int(self.dut.wr_busy.value), "write responses")
        assert int(self.dut.wr_code.value) == 0, f"write error {_code(self.dut.wr_code)!r}"
        bad = [i for i in range(len(ref)) if self.mem.mem[i] != ref[i]]
        assert not bad, (f"{len(bad)} memory byte mismatches; first at {bad[0]:#x}: "
                         f"memory {self.mem.mem[bad[0]]:#04x}, reference {ref[bad[0]]:#04x}")

    async def wait_for(self, cond, what, limit=20_000):
        for _ in range(limit):
            if cond():
                return self.mem.cycle
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"{what}: not within {limit} cycles")

    async def collect(self, beats, cycles):
        """Take ``rd_data`` words (random backpressure) for ``cycles`` cycles."""
        dut = self.dut
        for _ in range(cycles):
            ready = int(self.rng.random() >= 0.3)
            dut.rd_data__ready.value = ready
            await RisingEdge(dut.clk)
            if ready and dut.rd_data__valid.value:
                b = unpack(self.rd_data.layout, dut.rd_data__payload.value.to_unsigned())
                beats.append((int(b.data), int(b.last)))
        dut.rd_data__ready.value = 0

    def watch_valid_rises(self, name):
        """Count rising edges of ``m_axi__<name>valid`` (new bursts) from now on."""
        sig, count = getattr(self.dut, f"m_axi__{name}valid"), [0]

        async def watch():
            prev = int(sig.value)
            while True:
                await RisingEdge(self.dut.clk)
                now = int(sig.value)
                count[0] += now and not prev
                prev = now
        cocotb.start_soon(watch())
        return count


def _code(signal):
    return ErrorCode(int(signal.value))


def _compare(got, want):
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert len(got) == len(want), f"{len(got)} words read, {len(want)} expected"
    assert not bad, (f"{len(bad)} word mismatches; first at word {bad[0]}: hardware "
                     f"{got[bad[0]][0]:#x} last={got[bad[0]][1]}, memory {want[bad[0]][0]:#x} "
                     f"last={want[bad[0]][1]}")


@cocotb.test()
async def random_reads(dut):
    """Random commands (1..600 beats, 4 KB crossings) with pauses on AR and R
    and backpressure on rd_data; every word and every last compared."""
    tb = AxiBench(dut)
    await tb.reset()
    cmds = tb.commands(6, 600)
    await tb.read(cmds)
    await tb.read(tb.commands(2, 8))         # a second batch, back to back
    _record(read_words=sum(n for _, n in cmds))


@cocotb.test()
async def random_writes(dut):
    """Random commands with pauses on AW, W and B and idle gaps on wr_data;
    the memory is then compared byte for byte with the reference."""
    tb = AxiBench(dut)
    await tb.reset()
    await tb.write(tb.commands(6, 600))
    await tb.write(tb.commands(2, 8))


@cocotb.test()
async def write_then_read(dut):
    """Both masters at once on one port: write a block, read it back."""
    tb = AxiBench(dut)
    await tb.reset()
    cmds = tb.commands(2, 300)
    await tb.write(cmds)
    await tb.read(cmds)


@cocotb.test()
async def bad_commands(dut):
    """Zero beats, an unaligned address, or words past the top of the address
    space: MEM_COMMAND, and the master stops."""
    tb = AxiBench(dut)
    top = 1 << CONFIG["params"].get("addr_bits", 32)
    for port in ("rd", "wr"):
        for addr, beats in ((0, 0), (tb.nb // 2, 4), (top - tb.nb, 2)):
            await tb.reset()
            source = tb.rd_cmd if port == "rd" else tb.wr_cmd
            await source.send([{"addr": addr, "beats": beats}])
            code = getattr(dut, f"{port}_code")
            await tb.wait_for(lambda: int(code.value) != 0, "MEM_COMMAND", 10)
            assert int(code.value) == ErrorCode.MEM_COMMAND, repr(_code(code))
            await RisingEdge(dut.clk)
            assert int(getattr(dut, f"{port}_cmd__ready").value) == 0, "takes commands after error"
            assert not int(getattr(dut, f"{port}_busy").value), "issued a burst for a bad command"


async def _error_case(tb, port, resp):
    """Commands A (fine), B (through an error region), C (after it): the
    error code, a clean stop (bursts in flight drained, no new burst, no
    command taken, nothing past the error delivered or written), then a
    reset and the same commands without the region."""
    dut, nb = tb.dut, tb.nb
    region = (0x3000, 0x3000 + 4 * nb, resp)
    tb.mem.regions[:] = [region]
    await tb.reset()
    cmds = [(0x1000, 64), (0x3000 - 40 * nb, 80), (0x8000, 100)]
    code, busy = getattr(dut, f"{port}_code"), getattr(dut, f"{port}_busy")
    want_code = ErrorCode.MEM_SLVERR if resp == AxiResp.SLVERR else ErrorCode.MEM_DECERR
    ref = bytearray(tb.mem.mem)
    new_words = [tb.rng.getrandbits(8 * nb) for _ in range(sum(n for _, n in cmds))]
    source = tb.rd_cmd if port == "rd" else tb.wr_cmd
    tasks = [cocotb.start_soon(source.send([{"addr": a, "beats": n} for a, n in cmds],
                                           timeout=10**9))]
    got = []
    if port == "rd":
        reader = cocotb.start_soon(tb.collect(got, 4000))
    else:
        tasks.append(cocotb.start_soon(tb.wr_data.send([{"data": w} for w in new_words],
                                                       timeout=10**9)))
    await tb.wait_for(lambda: int(code.value) != 0, "error code")
    assert int(code.value) == want_code, f"{_code(code)!r}, want {want_code!r}"
    rises = tb.watch_valid_rises("ar" if port == "rd" else "aw")
    await tb.wait_for(lambda: not int(busy.value), "drain after the error", 3000)
    if port == "rd":
        await reader
        assert len(got) <= cmds[0][1] + 40, f"{len(got)} words delivered past the error"
        _compare(got, tb.expected_reads(cmds)[:len(got)])
    else:
        _check_partial_writes(tb, ref, cmds, new_words, region)
    assert rises[0] == 0, f"{rises[0]} new bursts issued after the error"
    assert int(getattr(dut, f"{port}_cmd__ready").value) == 0, "takes commands after error"
    assert int(code.value) == want_code, "error code changed"
    for task in tasks:
        task.cancel()
    for name in ("rd_cmd", "wr_cmd", "wr_data"):
        getattr(dut, f"{name}__valid").value = 0
    tb.mem.regions.clear()
    await tb.reset()
    assert int(code.value) == 0, "reset did not clear the error"
    if port == "rd":
        await tb.read(cmds)
    else:
        await tb.write(cmds)


def _check_partial_writes(tb, ref, cmds, words, region):
    """After a write error: the first command written in full, the region
    untouched, every other byte of the commands either old or new, every byte
    outside them untouched."""
    new = bytearray(ref)
    offset = 0
    for a, n in cmds:
        new[a:a + n * tb.nb] = b"".join(w.to_bytes(tb.nb, "little")
                                        for w in words[offset:offset + n])
        offset += n
    first = range(cmds[0][0], cmds[0][0] + cmds[0][1] * tb.nb)
    mem = tb.mem.mem
    for i in range(MEM_BYTES):
        allowed = ({new[i]} if i in first else {ref[i]} if region[0] <= i < region[1]
                   else {ref[i], new[i]})
        assert mem[i] in allowed, (f"memory byte {i:#x} = {mem[i]:#04x}, expected one of "
                                   f"{sorted(allowed)}")


@cocotb.test()
async def error_responses(dut):
    """SLVERR and DECERR regions, on reads and on writes."""
    tb = AxiBench(dut)
    for port in ("rd", "wr"):
        for resp in (AxiResp.SLVERR, AxiResp.DECERR):
            await _error_case(tb, port, resp)


@cocotb.test()
async def memory_never_answers(dut):
    """A channel that never moves again (AR, R; AW, W, B): MEM_TIMEOUT after
    ``timeout`` cycles without progress, nothing hangs, a reset recovers."""
    tb = AxiBench(dut, pause=0)
    timeout = CONFIG["params"]["timeout"]
    for port, channel in (("rd", "ar"), ("rd", "r"), ("wr", "aw"), ("wr", "w"), ("wr", "b")):
        await tb.reset()
        tb.mem.stop(channel)
        code = getattr(dut, f"{port}_code")
        cmd = {"addr": 0x2000, "beats": 20}
        if port == "rd":
            await tb.rd_cmd.send([cmd])
            task = None
        else:
            await tb.wr_cmd.send([cmd])
            task = cocotb.start_soon(tb.wr_data.send([{"data": i} for i in range(20)],
                                                     timeout=10**9))
        start = tb.mem.cycle
        end = await tb.wait_for(lambda: int(code.value) != 0, f"timeout on {channel}",
                                timeout + 200)
        assert int(code.value) == ErrorCode.MEM_TIMEOUT, repr(_code(code))
        assert end - start >= timeout, f"timed out after {end - start} < {timeout} cycles"
        if task:
            task.cancel()
            dut.wr_data__valid.value = 0
        tb.mem.channels[channel].set_pause_generator(None)
        tb.mem.channels[channel].pause = False
    await tb.reset()
    await tb.read([(0x2000, 20)])


@cocotb.test()
async def throughput(dut):
    """One long sequential read, no pauses, rd_data always ready, memory
    latency ``bench.latency``: words delivered per cycle (recorded)."""
    bench = CONFIG.get("bench") or {"beats": 2048, "latency": 30}
    beats, nb = bench["beats"], CONFIG["params"]["data_bits"] // 8
    tb = AxiBench(dut, latency=bench["latency"], pause=0, idle=0, stall=0,
                  size=max(MEM_BYTES, beats * nb))
    await tb.reset()
    times = record_handshakes(dut, ["rd_cmd", "rd_data"], 10)
    await tb.read([(0, beats)])
    cycles = times["rd_data"][-1] - times["rd_cmd"][0]
    util = beats / cycles
    # first word: from the command's handshake; the memory's share: AR to R handshakes
    first, memory = times["rd_data"][0] - times["rd_cmd"][0], tb.mem.first["r"] - tb.mem.first["ar"]
    dut._log.info(f"{beats} words in {cycles} cycles: {util:.3f} words/cycle "
                  f"(latency {bench['latency']}, outstanding {CONFIG['params']['outstanding']}); "
                  f"first word after {first} cycles, {memory} of them in the memory")
    _record(beats=beats, cycles=cycles, utilisation=util, latency=bench["latency"],
            first_word=first, memory_latency=memory)


def run(params, *, seed=1, testcase=None, report=None, bench=None):
    """Host side: build (cached) and run this testbench on Verilator with the
    masters' ``params``; ``bench`` (``{"beats", "latency"}``) sets the
    ``throughput`` test's read, ``report`` a JSON file for what it measured.
    Raises ``SimFailure`` on any failure; returns the tests passed."""
    from ..gen.verilog import generate_verilog
    from .runner import run_cocotb
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "bench": bench})}
    if report:
        env["TRILUT_TB_REPORT"] = str(Path(report).resolve())   # the simulator runs elsewhere
    name = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    if bench:
        name += "-bench" + "-".join(f"{k}{v}" for k, v in sorted(bench.items()))
    return run_cocotb(generate_verilog(build(params), "axi_pair"), "axi_pair", __name__,
                      name=name, env=env, testcase=testcase, seed=seed)
