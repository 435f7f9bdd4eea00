"""The AXI masters' testbench environment (used by sim/tb_axi.py).

* :class:`AxiPair`: the DUT, both masters on one AXI4 port ``m_axi``.
* :class:`TbMemory`: cocotbext-axi's AXI4 slave model (``AxiSlave``, the model
  ``AxiRam`` is built on) over a bytearray, with random pauses on all five
  channels, a pipelined response latency, regions that answer SLVERR or
  DECERR, and channels that can be stopped for good.
"""
import random
from collections import deque

import cocotb
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiResp, AxiSlave

from trilut.hw.axi import read_signature, write_signature
from trilut.hw.axi_read import AxiReadMaster
from trilut.hw.axi_write import AxiWriteMaster
from trilut.sim.streams import pauses

__all__ = ["AxiPair", "TbMemory", "build"]


class AxiPair(wiring.Component):
    """The DUT: a read and a write master sharing one AXI4 port ``m_axi``.
    Streams ``rd_cmd``, ``rd_data``, ``wr_cmd``, ``wr_data``; ``rd_code`` /
    ``wr_code`` and ``rd_busy`` / ``wr_busy`` are the masters' outputs."""

    def __init__(self, **params):
        write_params = {k: v for k, v in params.items() if k != "buffer_beats"}
        self.rd, self.wr = AxiReadMaster(**params), AxiWriteMaster(**write_params)
        axi = {**read_signature(self.rd.addr_bits, self.rd.data_bits, self.rd.id_bits).members,
               **write_signature(self.rd.addr_bits, self.rd.data_bits, self.rd.id_bits).members}
        members = {"m_axi": Out(wiring.Signature(dict(axi)))}
        for name, master in (("rd", self.rd), ("wr", self.wr)):
            for port in ("cmd", "data", "code", "busy"):
                members[f"{name}_{port}"] = master.signature.members[port]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd, m.submodules.wr = self.rd, self.wr
        for name, master in (("rd", self.rd), ("wr", self.wr)):
            for port in ("cmd", "data"):
                outer = getattr(self, f"{name}_{port}")
                inner = getattr(master, port)
                if master.signature.members[port].flow == Out:
                    wiring.connect(m, inner, wiring.flipped(outer))
                else:
                    wiring.connect(m, wiring.flipped(outer), inner)
            m.d.comb += [getattr(self, f"{name}_code").eq(master.code),
                         getattr(self, f"{name}_busy").eq(master.busy)]
            for sig_name, member in master.signature.members["m_axi"].signature.members.items():
                mine, theirs = getattr(self.m_axi, sig_name), getattr(master.m_axi, sig_name)
                m.d.comb += (mine.eq(theirs) if member.flow == Out else theirs.eq(mine))
        return m


def build(params):
    return AxiPair(**params)


class TbMemory:
    """cocotbext-axi's AXI4 slave over a bytearray of ``size`` bytes.

    ``latency``: cycles from an AR handshake until the slave starts on that
    burst (pipelined: later bursts overlap). ``regions``: ``[(lo, hi, resp)]``
    byte ranges that answer ``resp`` (SLVERR or DECERR) on reads and writes."""

    def __init__(self, dut, size, *, latency=0, regions=()):
        self.dut, self.mem, self.latency = dut, bytearray(size), latency
        self.regions = list(regions)
        self.slave = AxiSlave(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, target=self)
        self.failed = {"read": AxiResp.OKAY, "write": AxiResp.OKAY}
        rd, wr = self.slave.read_if, self.slave.write_if
        self.channels = {"ar": rd.ar_channel, "r": rd.r_channel, "aw": wr.aw_channel,
                         "w": wr.w_channel, "b": wr.b_channel}
        self._remap(rd.r_channel, "rresp", "read")
        self._remap(wr.b_channel, "bresp", "write")
        self.cycle, self.ar_times = 0, deque()
        self.first = {}        # channel -> cycle of its first handshake ("ar", "r")
        cocotb.start_soon(self._count())
        if latency:
            self._delay(rd.ar_channel)

    def _region(self, address, length):
        for lo, hi, resp in self.regions:
            if address < hi and lo < address + length:
                return resp
        return AxiResp.OKAY

    async def read(self, address, length):
        self.failed["read"] = self._region(address, length)
        if self.failed["read"] != AxiResp.OKAY or address + length > len(self.mem):
            raise IndexError(f"read at {address:#x}")
        return bytes(self.mem[address:address + length])

    async def write(self, address, data):
        resp = self._region(address, len(data))
        if resp != AxiResp.OKAY or address + len(data) > len(self.mem):
            self.failed["write"] = resp
            raise IndexError(f"write at {address:#x}")
        self.mem[address:address + len(data)] = data

    def _remap(self, channel, field, kind):
        """The slave answers SLVERR when ``read``/``write`` raises; turn it
        into the failing region's response (DECERR where that is the one)."""
        send = channel.send

        async def send_remapped(tr):
            if getattr(tr, field) == AxiResp.SLVERR and self.failed[kind] != AxiResp.OKAY:
                setattr(tr, field, self.failed[kind])
            self.failed[kind] = AxiResp.OKAY
            await send(tr)
        channel.send = send_remapped

    async def _count(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            if dut.m_axi__arvalid.value == 1 and dut.m_axi__arready.value == 1:
                self.ar_times.append(self.cycle)
                self.first.setdefault("ar", self.cycle)
            if dut.m_axi__rvalid.value == 1 and dut.m_axi__rready.value == 1:
                self.first.setdefault("r", self.cycle)

    def _delay(self, channel):
        recv = channel.recv

        async def recv_delayed():
            tr = await recv()
            await ReadOnly()
            due = self.ar_times.popleft() + self.latency
            while self.cycle < due:
                await RisingEdge(self.dut.clk)
            return tr
        channel.recv = recv_delayed

    def pause(self, rng, channels="ar r aw w b", p=0.3):
        for name in channels.split():
            self.channels[name].set_pause_generator(pauses(rng, p))

    def stop(self, name):
        """Channel ``name`` never moves again (a memory that does not answer)."""
        self.channels[name].set_pause_generator(pauses(random.Random(0), 1.0))
