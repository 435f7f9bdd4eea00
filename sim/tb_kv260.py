"""cocotb testbench for the KV260 top (:class:`trilut.hw.kv260.Kv260Top`),
driven by the real host code: :class:`~trilut.host.pynq.PynqDevice` and
:class:`~trilut.host.driver.Driver` run in a cocotb ``bridge`` thread on a
stand-in for the ``pynq`` module (:class:`SimPynq`) whose

* ``MMIO`` reads and writes through a cocotbext-axi ``AxiLiteMaster`` on
  ``s_axil``;
* ``allocate`` gives NumPy arrays that are views of the simulated DDR (so
  ``flush`` / ``invalidate`` have nothing to do) at a physical address;
* ``Overlay`` has the ``ip_dict`` entry of the top and an AXI DMA whose MM2S
  channel feeds an ``AxiStreamSource`` on ``s_axis`` and whose S2MM channel
  takes one frame (to ``tlast``) from an ``AxiStreamSink`` on ``m_axis``;

and the DDR is cocotbext-axi's AXI4 read slave (``AxiSlaveRead``, what
``AxiRamRead`` is built on) over a bytearray at :data:`PHYS_BASE` (above
4 GB, as the KV260's upper DDR), with regions answering SLVERR and an AR
channel that can stop for good. Random pauses on AR, R, the AXI4-Lite
channels and both streams.

``TRILUT_TB`` (JSON): ``params`` (the accelerator's), ``seed``, ``pause``,
``break`` (compare with a wrong golden: q loses its last weight row).
"""
import dataclasses
import functools
import json
import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiReadBus, AxiSlaveRead, AxiStreamBus,
                           AxiStreamFrame, AxiStreamSink, AxiStreamSource)

from trilut.golden.encoder import encoder_block
from trilut.host.compiler import compile_block
from trilut.host.driver import Driver
from trilut.host.pynq import (DEFAULT_DMA, DEFAULT_IP, S2MM_LENGTH, MemoryPortError,
                               PynqDevice)
from trilut.hw.isa import ErrorCode
from trilut.hw.kv260 import Kv260Top
from trilut.hw.top import Accelerator
from trilut.sim.streams import pauses
from trilut.sim.tb_top import SMALL, random_block

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
REPORT = os.environ.get("TRILUT_TB_REPORT")   # optional JSON file of what was measured
CLOCK_NS = 5
#: Where the simulated DDR starts (the KV260's DDR above 4 GB) and its size.
PHYS_BASE = 0x8_0000_0000
DDR_BYTES = 4 << 20
#: The weight buffer PynqDevice allocates (bytes).
WEIGHT_BYTES = 1 << 20
#: Where the block design puts the top's registers (the ip_dict entry).
REG_BASE = 0xA000_0000
#: Cycles a poll of the DMA's ``idle`` lets the simulation run.
POLL_CYCLES = 16


class Ddr:
    """The simulated DDR: an AXI4 read slave over ``DDR_BYTES`` from
    :data:`PHYS_BASE`; ``regions`` [(lo, hi)] answer SLVERR."""

    def __init__(self, dut, rng, pause):
        self.mem = bytearray(DDR_BYTES)
        self.regions = []
        self.slave = AxiSlaveRead(AxiReadBus.from_prefix(dut, "m_axi_hp0"), dut.clk, dut.rst,
                                  target=self)
        for ch in (self.slave.ar_channel, self.slave.r_channel):
            ch.set_pause_generator(pauses(rng, pause))

    async def read(self, address, length):
        off = address - PHYS_BASE
        if any(address < hi and lo < address + length for lo, hi in self.regions) or \
                off < 0 or off + length > len(self.mem):
            raise IndexError(f"read at {address:#x}")         # -> SLVERR
        return bytes(self.mem[off:off + length])

    def stop(self):
        """AR never moves again (a memory that does not answer)."""
        self.slave.ar_channel.set_pause_generator(pauses(random.Random(0), 1.0))


class SimBuffer(np.ndarray):
    """``pynq.allocate``'s buffer: a view of the simulated DDR."""

    def flush(self):
        pass

    def invalidate(self):
        pass


class _Channel:
    def __init__(self, bench):
        self.bench, self.task = bench, None

    @property
    def idle(self):
        resume(self.bench.cycles)(POLL_CYCLES)
        return self.task is None or self.task.done()


class _SendChannel(_Channel):
    def transfer(self, buf, start=0, nbytes=0):
        data = bytes(buf[start:start + (nbytes or len(buf) - start)])
        self.task = resume(self.bench.spawn)(self.bench.source.send(AxiStreamFrame(data)),
                                             self.bench.source.wait())


class _RecvChannel(_Channel):
    transferred = 0         # bytes of the last frame (the DMA's S2MM_LENGTH)

    def transfer(self, buf, start=0, nbytes=0):
        limit = nbytes or len(buf) - start

        async def receive():
            frame = await self.bench.sink.recv()
            data = bytes(frame.tdata)
            assert len(data) <= limit, f"S2MM frame of {len(data)} bytes > buffer {limit}"
            buf[start:start + len(data)] = np.frombuffer(data, dtype=np.uint8)
            self.transferred = len(data)
        self.task = resume(self.bench.spawn)(receive())


class _Dma:
    """``pynq.lib.dma.DMA`` (simple mode): two channels and the S2MM_LENGTH
    register."""

    def __init__(self, bench):
        self.sendchannel, self.recvchannel = _SendChannel(bench), _RecvChannel(bench)
        self.mmio = self

    def read(self, offset):
        assert offset == S2MM_LENGTH, f"DMA register {offset:#x} is not modelled"
        return self.recvchannel.transferred


class SimPynq:
    """The stand-in for the ``pynq`` module (module docstring)."""

    def __init__(self, bench):
        self.bench, self._next = bench, 0
        bench_ = bench

        class Overlay:
            def __init__(self, bitfile):
                self.ip_dict = {DEFAULT_IP: {"phys_addr": REG_BASE,
                                             "addr_range": 1 << bench_.top.map.addr_bits}}
                setattr(self, DEFAULT_DMA, _Dma(bench_))

        class MMIO:
            def __init__(self, base, length):
                self.base, self.length = base, length

            def read(self, offset):
                return resume(bench_.axil.read_dword)(self.base - REG_BASE + offset)

            def write(self, offset, value):
                resume(bench_.axil.write_dword)(self.base - REG_BASE + offset, value)

        self.Overlay, self.MMIO = Overlay, MMIO

    def allocate(self, shape, dtype=np.uint8):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        off = -(-self._next // 4096) * 4096
        if off + n > DDR_BYTES:
            raise MemoryError(f"simulated DDR full ({n} bytes asked)")
        self._next = off + n
        arr = np.frombuffer(self.bench.ddr.mem, dtype=dtype, count=n // np.dtype(dtype).itemsize,
                            offset=off).reshape(shape).view(SimBuffer)
        arr.physical_address = PHYS_BASE + off
        return arr


class Kv260Bench:
    """Clock, reset, the AXI4-Lite master, the streams and the DDR."""

    def __init__(self, dut):
        self.dut = dut
        self.acc = Accelerator(**CONFIG["params"])
        self.top = Kv260Top(accel=self.acc, timeout=CONFIG.get("mem_timeout", 4096))
        rng = random.Random(CONFIG.get("seed", 1))
        pause = CONFIG.get("pause", 0.3)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.ddr = Ddr(dut, rng, pause)
        for bus in ("s_axil", "s_axis", "m_axis", "m_axi_hp0"):     # else a line per transfer
            logging.getLogger(f"cocotb.{dut._name}.{bus}").setLevel(logging.WARNING)
        for ch in (self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                   self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                   self.axil.read_if.r_channel, self.source, self.sink):
            ch.set_pause_generator(pauses(rng, pause))
        self.pynq = SimPynq(self)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 5)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 5)

    async def cycles(self, n):
        await ClockCycles(self.dut.clk, n)

    async def spawn(self, *coros):
        async def chain():
            for c in coros:
                await c
        return cocotb.start_soon(chain())

    def load(self, block, seq, *, verify=False):
        """Host side (in a ``bridge`` thread): a Driver on a PynqDevice,
        ``block`` compiled for ``seq`` tokens with every tensor traced, its
        weights loaded into the DDR: ``(driver, program, weight layout)``."""
        dev = PynqDevice("trilut_kv260.bit", memory_bytes=WEIGHT_BYTES, pynq=self.pynq)
        drv = Driver(dev, self.acc, timeout=120.0, link_timeout=3.0)
        prog = compile_block(block, self.acc, seq, trace=True)
        return drv, prog, drv.load_weights(prog, verify=verify)


async def _start(dut):
    """Every testcase's start: a reset bench, the small random block and
    its input (``seed`` of the configuration): ``(bench, block, x)``."""
    tb = Kv260Bench(dut)
    await tb.reset()
    block, x = random_block(CONFIG.get("seed", 1), **SMALL)
    return tb, block, x


def _golden(block, x):
    if CONFIG.get("break"):
        w = block.q.weights.copy()
        w[-1:] = 0
        block = dataclasses.replace(block, q=dataclasses.replace(block.q, weights=w))
    return encoder_block(x, block, trace=True)


def _check(got, trace, label):
    bad = [name for name, v in got.items()
           if not np.array_equal(v, trace[name].astype(np.int64))]
    assert not bad, f"{label}: mismatches in {bad}"


@cocotb.test()
async def resident_block(dut):
    """A small encoder block (4 heads, hidden 32, FFN 64, 7 tokens, random
    weights) through PynqDevice + Driver: weights loaded once into DDR,
    two runs on two inputs, every traced tensor equal to golden."""
    tb, block, x = await _start(dut)

    def host():
        drv, prog, layout = tb.load(block, len(x), verify=True)
        outs = [drv.run(prog, x, weights=layout)]
        x2 = np.clip(x[::-1] * 2, -32768, 32767)
        outs.append(drv.run(prog, x2, weights=layout))
        return outs, x2, drv.counters(), sum(n for _, n in layout.values())
    (got1, got2), x2, cnt, wbytes = await bridge(host)()
    _check(got1, _golden(block, x), "run 1")
    _check(got2, _golden(block, x2), "run 2")
    dut._log.info("counters of run 2: %s", cnt)
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump({"counters": cnt, "weight_bytes": wbytes,
                       "hp0_beats": wbytes // tb.top.beat_bytes}, f)


async def _memory_error(dut, fault):
    tb, block, x = await _start(dut)

    def host():
        drv, prog, layout = tb.load(block, len(x))
        link = drv.link
        phys = link.device.weights.physical_address
        addr, n = layout["linear2"]
        if fault == "slverr":
            _refused_frame(link, phys)
            tb.ddr.regions.append((phys + addr + n // 2, phys + addr + n))
        else:
            tb.ddr.stop()
        try:
            drv.run(prog, x, weights=layout)
        except MemoryPortError as exc:
            code = exc.code
        else:
            raise AssertionError(f"{fault}: the run did not fail")
        if fault == "slverr":       # recovers: region gone, soft reset, the run again
            tb.ddr.regions.clear()
            drv.soft_reset()
            return code, drv.run(prog, x, weights=layout)
        return code, None
    code, got = await bridge(host)()
    return code, got, block, x


def _refused_frame(link, phys):
    """A frame at an address off the beat, written to the registers directly
    (the host's own check refuses it first): MEM_COMMAND; an abort clears it."""
    try:
        link.feed([(8, 16)])
    except ValueError:
        pass
    else:
        raise AssertionError("PynqLink.feed took a misaligned frame")
    for name, word in (("feed_addr_lo", (phys + 8) & 0xFFFFFFFF), ("feed_addr_hi", phys >> 32),
                       ("feed_len", 16)):
        link.reg_write(link.map.offset(name), [word])
    st = link.mem_status()
    assert st["error"] and st["code"] == ErrorCode.MEM_COMMAND, st
    link.feed([], abort=True)
    st = link.mem_status()
    assert not st["error"] and not st["feeding"], st


@cocotb.test()
async def slverr_region(dut):
    """A misaligned feed frame gives MEM_COMMAND (cleared by an abort); then
    half of a LINEAR's weights answer SLVERR: the run raises
    MemoryPortError(MEM_SLVERR); after an abort (which clears the port) and
    a soft reset the same run is exact."""
    code, got, block, x = await _memory_error(dut, "slverr")
    assert code == ErrorCode.MEM_SLVERR, code
    trace = encoder_block(x, block, trace=True)
    _check(got, {k: trace[k] for k in got}, "after SLVERR")


@cocotb.test()
async def memory_never_answers(dut):
    """AR stops for good: MemoryPortError(MEM_TIMEOUT), no hang."""
    code, _, _, _ = await _memory_error(dut, "timeout")
    assert code == ErrorCode.MEM_TIMEOUT, code


@functools.lru_cache(maxsize=4)
def _verilog(params_json, mem_timeout):
    from ..hw.regfront import generate_verilog
    return generate_verilog(Kv260Top(accel=json.loads(params_json), timeout=mem_timeout), "kv260")


def run(params, *, seed=1, pause=0.3, broken=False, testcase=None, mem_timeout=4096,
        report=None):
    """Host side: build (cached) and run this testbench for a Kv260Top around
    an Accelerator with ``params``; ``report``: a JSON file for what
    resident_block measured. Raises ``SimFailure`` on any failure; returns
    the number of tests passed."""
    from .runner import run_cocotb
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "pause": pause,
                                    "break": broken, "mem_timeout": mem_timeout})}
    if report:
        env["TRILUT_TB_REPORT"] = str(os.path.abspath(report))
    name = "kv260-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    name += f"-t{mem_timeout}-p{pause}-{testcase or 'all'}" + ("-broken" if broken else "")
    return run_cocotb(_verilog(json.dumps(params, sort_keys=True), mem_timeout), "kv260",
                      __name__, name=name, env=env, testcase=testcase, seed=seed)
