"""cocotb testbench for :class:`trilut.hw.bridge.UartAccelerator` at its pins.

The testbench is the host: it bit-banges 8N1 bytes onto ``uart_rx`` (with
random idle gaps between bytes) and a monitor samples ``uart_tx`` in the
middle of every bit; frames are built and parsed with
:mod:`trilut.host.protocol` (so the frame format comes from
:mod:`trilut.hw.link`, not from copies here). Configuration in
``TRILUT_TB`` (JSON): ``params`` (accelerator), ``clk_hz``, ``baud``,
``seed`` and ``break`` (a deliberately wrong reference model: the expected
STORE data has one byte changed, the expected BUILD register one field off;
the suite shows the testbench then fails).
"""
import json
import os
import random
import struct

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.triggers import ClockCycles, FallingEdge, Timer, with_timeout

from trilut.host.protocol import FrameParser, encode
from trilut.hw import isa
from trilut.hw.bridge import LEDS, UartAccelerator
from trilut.hw.isa import Opcode, descriptor_words, pack_descriptor
from trilut.hw.link import REPLY, FrameType, Status

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
PERIOD_NS = 10


class UartBench:
    """Clock, reset, a bit-banging UART transmitter on ``uart_rx`` and a
    sampling receiver on ``uart_tx`` feeding a frame parser."""

    def __init__(self, dut):
        self.dut = dut
        self.top = UartAccelerator(CONFIG["clk_hz"], CONFIG["baud"], **CONFIG["params"])
        self.acc, self.regs, self.div = self.top.accel, self.top.accel.regs, self.top.divisor
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.frames = Queue()
        self.parser = FrameParser(any_type=True)
        self.seq = 0
        dut.uart_rx.value = 1
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        cocotb.start_soon(self._monitor())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def _monitor(self):
        # Timers, not per-cycle triggers: Python wakes once per bit.
        bit, line = self.div * PERIOD_NS, self.dut.uart_tx
        while True:
            await FallingEdge(line)
            await Timer(bit // 2, "ns")
            if line.value:
                continue                     # a glitch
            byte = 0
            for i in range(8):
                await Timer(bit, "ns")
                byte |= int(line.value) << i
            await Timer(bit, "ns")
            assert line.value == 1, "framing error on uart_tx"
            for f in self.parser.feed(bytes([byte])):
                self.frames.put_nowait(f)

    async def send_bytes(self, raw, gaps=True):
        """8N1 on uart_rx, with random idle gaps (up to 3 bit periods)."""
        for b in raw:
            if gaps and self.rng.random() < 0.3:
                await Timer(self.rng.randrange(1, 3 * self.div) * PERIOD_NS, "ns")
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                self.dut.uart_rx.value = bit
                await Timer(self.div * PERIOD_NS, "ns")

    async def reply(self, timeout_cycles=None):
        """The next frame from the device (fails after a timeout)."""
        timeout = timeout_cycles or 40 * self.div * 1100
        return await with_timeout(self.frames.get(), timeout * PERIOD_NS, "ns")

    async def request(self, ftype, payload, *, seq=None, raw=None):
        """Send one frame (or ``raw`` bytes) and return the device's reply."""
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        await self.send_bytes(raw if raw is not None else encode(ftype, seq, payload))
        return await self.reply()

    async def ok(self, ftype, payload):
        f = await self.request(ftype, payload)
        assert f.type == ftype | REPLY and f.seq == self.seq, f"unexpected reply {f}"
        assert f.payload[0] == Status.OK, f"{FrameType(ftype).name}: status {f.payload[0]}"
        return f.payload[1:]

    async def write(self, name, words, word=0):
        await self.ok(FrameType.REG_WRITE,
                      struct.pack(f"<I{len(words)}I", self.regs.offset(name) + 4 * word, *words))

    async def read(self, name, count=1):
        body = await self.ok(FrameType.REG_READ, struct.pack("<IH", self.regs.offset(name), count))
        assert len(body) == 4 * count
        return list(struct.unpack(f"<{count}I", body))

    async def stream_write(self, records, stream=0):
        """``records``: list of (bytes, last). Returns the reply (status, free)."""
        body = b"".join(d + bytes([int(last)]) for d, last in records)
        f = await self.request(FrameType.STREAM_WRITE,
                               struct.pack("<BH", stream, len(records)) + body)
        assert f.type == FrameType.STREAM_WRITE | REPLY and len(f.payload) == 3, f
        return f.payload[0], struct.unpack_from("<H", f.payload, 1)[0]

    async def stream_read(self, max_beats, stream=0):
        body = await self.ok(FrameType.STREAM_READ, struct.pack("<BH", stream, max_beats))
        nb = self.acc.axis_bytes
        return [(body[k:k + nb], bool(body[k + nb])) for k in range(0, len(body), nb + 1)]

    async def status(self):
        return data.Const(isa.STATUS, (await self.read("status"))[0])


def _records(acc, rows):
    recs = []
    for frame in acc.row_frames(rows):
        n = len(frame) // acc.axis_bytes
        recs += [(frame[i * acc.axis_bytes:(i + 1) * acc.axis_bytes], i == n - 1)
                 for i in range(n)]
    return recs


@cocotb.test()
async def registers(dut):
    """REG_READ of BUILD and STATUS against the build's parameters; REG_WRITE
    of a program (LOAD then END), CTRL start, STATUS busy (and the busy LED)
    then soft reset."""
    tb = UartBench(dut)
    await tb.reset()
    acc = tb.acc
    want = {"max_rows": acc.max_rows, "max_width": acc.max_width, "banks": acc.banks}
    if CONFIG.get("break"):
        want["max_rows"] += 1
    build = data.Const(isa.BUILD, (await tb.read("build"))[0])
    got = {k: int(build[k]) for k in want}
    assert got == want, f"BUILD {got}, expected {want}"
    st = await tb.status()
    assert not (st.busy or st.error or st.done), f"after reset: {st}"
    prog = [pack_descriptor(Opcode.LOAD, rows=1, k=acc.max_width), pack_descriptor(Opcode.END)]
    await tb.write("prog", [w for d in prog for w in descriptor_words(d)])
    await tb.write("ctrl", [isa.CTRL.const({"start": 1}).as_value().value])
    st = await tb.status()
    assert st.busy and int(st.pc) == 0, f"LOAD without data should be busy: {st}"
    await ClockCycles(dut.clk, 300)          # the bridge's STATUS poll drives the LEDs
    assert int(dut.leds.value) & 1 << LEDS.index("busy"), f"busy LED off: {dut.leds.value}"
    counters = await tb.read("cycles", 2)
    assert counters[0] > 0, counters
    await tb.write("ctrl", [isa.CTRL.const({"soft_reset": 1}).as_value().value])
    st = await tb.status()
    assert not st.busy, f"after soft reset: {st}"
    await ClockCycles(dut.clk, 300)
    assert not int(dut.leds.value) & 1 << LEDS.index("busy"), f"busy LED on: {dut.leds.value}"


@cocotb.test()
async def streams(dut):
    """STREAM_WRITE rows (LOAD), STORE them back, STREAM_READ with a
    max_beats smaller than what is waiting (twice), then an empty read; the
    data and the tlast positions must equal the rows sent."""
    tb = UartBench(dut)
    await tb.reset()
    acc = tb.acc
    rows, k = acc.max_rows, acc.max_width
    x = np.random.default_rng(CONFIG.get("seed", 1)).integers(-128, 128, size=(rows, k))
    x[0, :] = -128
    x[-1, 0] = 127
    prog = [pack_descriptor(Opcode.LOAD, dst_bank=0, rows=rows, k=k),
            pack_descriptor(Opcode.STORE, src_bank=0, rows=rows, k=k),
            pack_descriptor(Opcode.END)]
    await tb.write("prog", [w for d in prog for w in descriptor_words(d)])
    await tb.write("ctrl", [isa.CTRL.const({"start": 1}).as_value().value])
    recs = _records(acc, x)
    status, free = await tb.stream_write(recs)
    assert status == Status.OK, status
    await ClockCycles(dut.clk, 200)
    got = []
    per = max(1, len(recs) // 2)
    for _ in range(4):
        got += await tb.stream_read(per)
    assert len(got) == len(recs), f"{len(got)} transfers back, sent {len(recs)}"
    assert await tb.stream_read(per) == []
    want = recs
    if CONFIG.get("break"):
        want = [(bytes([want[0][0][0] ^ 1]) + want[0][0][1:], want[0][1])] + want[1:]
    assert [last for _, last in got] == [last for _, last in want], "tlast positions differ"
    bad = [i for i, ((d, _), (e, _)) in enumerate(zip(got, want)) if d != e]
    assert not bad, f"{len(bad)} transfers differ; first {bad[0]}: {got[bad[0]]} vs {want[bad[0]]}"
    st = await tb.status()
    assert st.done and not st.error, st


@cocotb.test()
async def damage(dut):
    """A bad CRC and a truncated frame are NAKed and not executed; a repeated
    seq gets the stored reply without a second execution (the stream buffer
    is filled once); an unknown type and a bad length are refused."""
    tb = UartBench(dut)
    await tb.reset()
    acc = tb.acc
    recs = _records(acc, np.arange(acc.max_width).reshape(1, -1) - 5)
    _, free0 = await tb.stream_write([])
    # Bad CRC: a bit flipped in the payload of a STREAM_WRITE.
    tb.seq += 1
    frame = bytearray(encode(FrameType.STREAM_WRITE, tb.seq,
                             struct.pack("<BH", 0, len(recs)) +
                             b"".join(d + bytes([int(last)]) for d, last in recs)))
    frame[8] ^= 0x04
    f = await tb.request(None, None, raw=bytes(frame))
    assert f.type == FrameType.NAK and f.payload == bytes([Status.BAD_CRC]), f
    _, free = await tb.stream_write([])
    assert free == free0, f"a frame with a bad CRC was executed (free {free0} -> {free})"
    # Truncated: half a frame, then silence beyond the bridge's timeout.
    tb.seq += 1
    frame = encode(FrameType.STREAM_WRITE, tb.seq, struct.pack("<BH", 0, len(recs)) +
                   b"".join(d + bytes([int(last)]) for d, last in recs))
    await tb.send_bytes(frame[:len(frame) // 2])
    f = await tb.reply()
    assert f.type == FrameType.NAK and f.payload == bytes([Status.TRUNCATED]), f
    _, free = await tb.stream_write([])
    assert free == free0, f"a truncated frame was executed (free {free0} -> {free})"
    # The same frame twice with the same seq: one execution, the same reply.
    status, free1 = await tb.stream_write(recs)
    assert status == Status.OK and free1 == free0 - len(recs), (status, free0, free1)
    seq = tb.seq
    frame = encode(FrameType.STREAM_WRITE, seq, struct.pack("<BH", 0, len(recs)) +
                   b"".join(d + bytes([int(last)]) for d, last in recs))
    f = await tb.request(None, None, raw=frame)
    assert f.type == FrameType.STREAM_WRITE | REPLY and f.seq == seq, f
    assert struct.unpack_from("<H", f.payload, 1)[0] == free1, "retry reply differs"
    _, free2 = await tb.stream_write([])
    want = free1 if not CONFIG.get("break") else free1 - len(recs)
    assert free2 == want, f"a repeated seq was executed again (free {free1} -> {free2})"
    # Refusals.
    f = await tb.request(0x33, b"")
    assert f.payload == bytes([Status.BAD_TYPE]), f
    f = await tb.request(FrameType.REG_READ, b"\x00" * 5)
    assert f.payload == bytes([Status.BAD_LENGTH]), f
    f = await tb.request(FrameType.STREAM_WRITE, struct.pack("<BH", 0, 2) + bytes(3))
    assert f.payload[0] == Status.BAD_LENGTH, f
    f = await tb.request(FrameType.STREAM_READ, struct.pack("<BH", 1, 1))
    assert f.payload == bytes([Status.BAD_STREAM]), f


def run(params, *, clk_hz=1_000_000, baud=250_000, seed=1, broken=False, testcase=None):
    """Host side: build (cached) and run this testbench on Verilator."""
    from ..gen.verilog import generate_verilog
    from .runner import run_cocotb
    top = UartAccelerator(clk_hz, baud, **params)
    env = {"TRILUT_TB": json.dumps({"params": params, "clk_hz": clk_hz, "baud": baud,
                                    "seed": seed, "break": broken})}
    name = "uart-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    name += f"-{testcase or 'all'}" + ("-broken" if broken else "")
    return run_cocotb(generate_verilog(top, "uart_accel"), "uart_accel", __name__, name=name,
                      env=env, testcase=testcase, seed=seed)
