# amaranth: UnusedElaboratable=no
# (Kv260Top doubles as the host's description of the register map: a host
# that only reads its map never elaborates the read master and the feeder)
"""The KV260 top: the accelerator, its weights read from DDR through the
Zynq MPSoC's ``S_AXI_HP0_FPD`` port, one AXI4-Lite register map.

* :data:`MEMCTRL`, :data:`MEMSTATUS`, :class:`Kv260Map`: the memory port's
  registers and where they sit beside the accelerator's (defined here once;
  the host, :mod:`trilut.host.pynq`, packs with the same objects).
* :class:`Kv260Top`: the component (``trilut build --board kv260`` packages it).

Inputs and outputs stay AXI4-Stream (``s_axis`` / ``m_axis``) for a Xilinx
AXI DMA in the block design: PYNQ drives that DMA with its own driver
(``pynq.lib.dma.DMA``: ``sendchannel.transfer(buffer)``), so a PYNQ user needs
no driver of ours for it, and the rows are small next to the weights (a
transformer block's activations are kilobytes, its weights hundreds of
kilobytes to megabytes: the weights are what must not cross a slow path).
"""
from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .axi import read_signature
from .axi_read import AxiReadMaster
from .isa import AXIL_DATA_BITS, ErrorCode, Register
from .regfront import axi_lite_signature, axi_stream_signature
from .rowio import bits_for
from .top import Accelerator
from .weightfeed import WeightFeeder

__all__ = ["HP0_DATA_BITS", "MEMCTRL", "MEMSTATUS", "Kv260Map", "Kv260Top"]

#: The default width of the HP port (bits; PYNQ's KV260 images set 128).
HP0_DATA_BITS = 128

#: MEMCTRL (write-only): ``abort`` drops every queued feed frame and the words
#: in flight (the feeder's abort); ``reset`` resets the feeder and the read
#: master, clearing a memory error: ignored while bursts are in flight
#: (``MEMSTATUS.busy``), which after MEM_TIMEOUT is for good (reload the PL).
MEMCTRL = data.StructLayout({"abort": 1, "reset": 1, "_r": 30})
#: MEMSTATUS (read-only): ``busy`` (bursts in flight), ``feeding`` (the feeder
#: holds or moves frames), ``error`` / ``code`` (the first memory error, an
#: :class:`~trilut.hw.isa.ErrorCode` ``MEM_*``; MEM_COMMAND also for a feed
#: frame refused: misaligned, empty, or with the queue full), ``free`` (frames
#: the queue can take).
MEMSTATUS = data.StructLayout({"busy": 1, "feeding": 1, "error": 1, "_r0": 1,
                               "code": ErrorCode, "free": 16, "_r1": 8})
assert MEMCTRL.size == MEMSTATUS.size == AXIL_DATA_BITS


class Kv260Map:
    """The KV260 top's AXI4-Lite map: the accelerator's
    :class:`~trilut.hw.isa.RegisterMap` in the lower half, the memory port's
    registers from :attr:`mem_base` (the upper half):

    ``+0x00`` FEED_ADDR_LO, ``+0x04`` FEED_ADDR_HI (w): the next feed frame's
    DDR byte address (a multiple of the port's beat); ``+0x08`` FEED_LEN (w):
    its length in bytes (a positive multiple of the weight stream's transfer),
    and writing it queues the frame; ``+0x0C`` MEMCTRL (w); ``+0x10``
    MEMSTATUS (r). Other addresses of the window read 0."""

    def __init__(self, accel_regs):
        self.accel = accel_regs
        self.mem_base = 1 << accel_regs.addr_bits
        self.addr_bits = accel_regs.addr_bits + 1
        self.registers = {r.name: r for r in (
            Register("feed_addr_lo", 0x00, "w", "FEED_ADDR_LO"),
            Register("feed_addr_hi", 0x04, "w", "FEED_ADDR_HI"),
            Register("feed_len", 0x08, "w", "FEED_LEN (queues the frame)"),
            Register("memctrl", 0x0C, "w", "MEMCTRL"),
            Register("memstatus", 0x10, "r", "MEMSTATUS"))}

    def offset(self, name):
        """Byte offset of a memory-port register or of an accelerator one."""
        if name in self.registers:
            return self.mem_base + self.registers[name].offset
        return self.accel.offset(name)


class Kv260Top(wiring.Component):
    """The accelerator with its weights fed from DDR (module docstring).

    Parameters: ``accel`` (an :class:`~trilut.hw.top.Accelerator` or its
    parameter dict; its ``axis_bytes`` must be a power-of-two multiple of the
    port's beat), ``data_bits`` (the HP port's width: 32, 64 or 128, default
    128), ``addr_bits`` (DDR byte address, default 40: the KV260's 4 GB at
    0x0 and 0x8_0000_0000), ``outstanding`` (bursts in flight, default 4),
    ``timeout`` (cycles without progress before MEM_TIMEOUT, default 4096)
    and ``queue`` (feed frames the queue holds, default 32).

    Ports (Verilog names through :func:`~trilut.hw.regfront.flat_ports`):

    * ``s_axil_*``: AXI4-Lite slave of :attr:`map` (``addr_bits`` =
      accelerator's + 1). One outstanding write and one outstanding read in
      all: a request for the other half waits for the pending response.
      The accelerator's half behaves as :class:`~trilut.hw.top.Accelerator`;
      the memory port answers a write the cycle after its AW and W, a read
      one cycle after AR. Responses OKAY.
    * ``s_axis_*`` / ``m_axis_*``: the accelerator's rows (an AXI DMA).
    * ``m_axi_hp0_*``: AXI4 read channels (AR, R) for ``S_AXI_HP0_FPD``:
      :class:`~trilut.hw.axi_read.AxiReadMaster` (INCR bursts within 4 KB,
      ID 0, ``arcache`` 0011). No write channels: weights are only read.

    Data path: a FEED_LEN write queues ``{addr, len}`` into a
    :class:`~trilut.hw.weightfeed.WeightFeeder` (128-bit words), whose read
    commands the read master turns into bursts; the feeder re-packs the
    words into ``s_axis_wgt`` transfers (``tlast`` per frame). Latency: the
    read master's (5 cycles plus the memory's to the first word) plus the
    feeder's (2 cycles from the queue, 1 from a word to its transfer);
    throughput one beat per cycle when the memory keeps up; backpressure
    from the weight store stops the reads (no word lost).

    Errors: an RRESP of SLVERR / DECERR, no progress for ``timeout`` cycles,
    or a refused frame set ``MEMSTATUS.code`` (sticky) and stop the port;
    the accelerator then waits for weights that will not come until the host
    aborts (the host sees the code: nothing hangs unseen). MEMCTRL.reset
    clears it once no burst is in flight.
    """

    def __init__(self, *, accel, data_bits=HP0_DATA_BITS, addr_bits=40, outstanding=4, timeout=4096,
                 queue=32):
        if isinstance(accel, dict):
            accel = Accelerator(**accel)
        if not isinstance(accel, Accelerator):
            raise TypeError(f"accel must be an Accelerator or its parameter dict, not {accel!r}")
        if data_bits not in (32, 64, 128):
            raise ValueError(f"data_bits must be 32, 64 or 128 (S_AXI_HP0_FPD), not {data_bits}")
        check_int("addr_bits", addr_bits, 32, 49)
        ratio, rest = divmod(8 * accel.axis_bytes, data_bits)
        if rest or not ratio or ratio & (ratio - 1):
            raise ValueError(f"the accelerator's axis_bytes ({accel.axis_bytes}) must be a "
                             f"power-of-two multiple of the port's {data_bits // 8}-byte beat "
                             f"(set axis_bytes={data_bits // 8} or a narrower data_bits)")
        self._accel, self._map = accel, Kv260Map(accel.regs)
        self._shift = bits_for(data_bits // 8)
        self._master = AxiReadMaster(addr_bits=addr_bits, data_bits=data_bits, len_bits=9,
                                     outstanding=outstanding, timeout=timeout)
        self._feeder = WeightFeeder(addr_bits=addr_bits - self._shift,
                                    out_bytes=accel.axis_bytes, word_bits=data_bits,
                                    max_burst=256, queue=queue)
        self._params = dict(data_bits=data_bits, addr_bits=addr_bits, outstanding=outstanding,
                            timeout=timeout, queue=queue)
        nb = 8 * accel.axis_bytes
        super().__init__({
            "s_axil": In(axi_lite_signature(self._map.addr_bits)),
            "s_axis": In(axi_stream_signature(nb)),
            "m_axis": Out(axi_stream_signature(nb)),
            "m_axi_hp0": Out(read_signature(addr_bits, data_bits, 1)),
        })

    accel = property(lambda self: self._accel, doc="the Accelerator inside")
    map = property(lambda self: self._map, doc="the AXI4-Lite map (:class:`Kv260Map`)")
    params = property(lambda self: dict(self._params), doc="the memory port's parameters")
    beat_bytes = property(lambda self: 1 << self._shift, doc="bytes per HP0 beat")

    def elaborate(self, platform):
        m = Module()
        acc, feeder, master = self._accel, self._feeder, self._master
        m.submodules.accel = acc
        port = Module()
        port.submodules.feeder, port.submodules.master = feeder, master
        port_reset = Signal()
        m.submodules.port = ResetInserter(port_reset)(port)

        wiring.connect(m, wiring.flipped(self.s_axis), acc.s_axis)
        wiring.connect(m, acc.m_axis, wiring.flipped(self.m_axis))
        wiring.connect(m, master.m_axi, wiring.flipped(self.m_axi_hp0))
        wiring.connect(m, feeder.out, acc.s_axis_wgt)
        rc, rd = feeder.read_cmd, feeder.read_data
        m.d.comb += [master.cmd.valid.eq(rc.valid), rc.ready.eq(master.cmd.ready),
                     master.cmd.payload.addr.eq(rc.payload.addr << self._shift),
                     master.cmd.payload.beats.eq(rc.payload.len + 1),
                     rd.valid.eq(master.data.valid), master.data.ready.eq(rd.ready),
                     rd.payload.data.eq(master.data.payload.data),
                     rd.payload.last.eq(master.data.payload.last)]

        # The AXI4-Lite split: the top address bit picks the memory port.
        mem_axil = axi_lite_signature(self._map.addr_bits).create(path=("mem_axil",))
        _split(m, self.s_axil, acc.s_axil, mem_axil, self._map.addr_bits - 1)
        self._mem_regs(m, mem_axil, feeder, master, port_reset)
        return m

    def _mem_regs(self, m, axil, feeder, master, port_reset):
        """The memory port's registers (:class:`Kv260Map`) on ``axil``."""
        regs = self._map.registers
        bvalid, rvalid = Signal(), Signal()
        rdata = Signal(32)
        wr = Signal()
        m.d.comb += [wr.eq(axil.awvalid & axil.wvalid & ~bvalid),
                     axil.awready.eq(wr), axil.wready.eq(wr), axil.bvalid.eq(bvalid),
                     axil.bresp.eq(0), axil.arready.eq(~rvalid), axil.rvalid.eq(rvalid),
                     axil.rdata.eq(rdata), axil.rresp.eq(0)]
        with m.If(wr):
            m.d.sync += bvalid.eq(1)
        with m.Elif(axil.bready):
            m.d.sync += bvalid.eq(0)

        addr = Signal(self._params["addr_bits"])
        own = Signal(ErrorCode)             # refused frames (sticky, cleared by reset)
        word = axil.awaddr[2:bits_for(0x20)]
        ctrl = data.View(MEMCTRL, axil.wdata)
        length = axil.wdata
        tb = self._accel.axis_bytes
        bad = ((length == 0) | (length[:bits_for(tb)] != 0) | (addr[:self._shift] != 0)
               | ~feeder.cmd.ready)
        with m.If(wr):
            with m.Switch(word):
                with m.Case(regs["feed_addr_lo"].offset >> 2):
                    m.d.sync += addr[:32].eq(axil.wdata)
                with m.Case(regs["feed_addr_hi"].offset >> 2):
                    m.d.sync += addr[32:].eq(axil.wdata)
                with m.Case(regs["feed_len"].offset >> 2):
                    with m.If(bad):
                        with m.If(own == ErrorCode.NONE):
                            m.d.sync += own.eq(ErrorCode.MEM_COMMAND)
                    with m.Else():
                        m.d.comb += feeder.cmd.valid.eq(1)
                with m.Case(regs["memctrl"].offset >> 2):
                    m.d.comb += [feeder.abort.eq(ctrl.abort),
                                 port_reset.eq(ctrl.reset & ~master.busy)]
                    with m.If(ctrl.reset & ~master.busy):
                        m.d.sync += own.eq(ErrorCode.NONE)
        m.d.comb += [feeder.cmd.payload.addr.eq(addr[self._shift:]),
                     feeder.cmd.payload.len.eq((length >> bits_for(tb)) - 1)]

        code = Signal(ErrorCode)
        m.d.comb += code.eq(Mux(own != ErrorCode.NONE, own, master.code))
        st = Signal(MEMSTATUS)
        m.d.comb += [st.busy.eq(master.busy), st.feeding.eq(feeder.busy),
                     st.error.eq(code != ErrorCode.NONE), st.code.eq(code),
                     st.free.eq(feeder.free)]
        with m.If(axil.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0)]
            with m.If(axil.araddr[2:bits_for(0x20)] == regs["memstatus"].offset >> 2):
                m.d.sync += rdata.eq(st.as_value())
        with m.Elif(rvalid & axil.rready):
            m.d.sync += rvalid.eq(0)


def _split(m, bus, low, high, bit):
    """Route AXI4-Lite ``bus`` (slave side) to ``low`` / ``high`` by address
    bit ``bit``; one write and one read outstanding in all, each response
    from the slave that took the request."""
    g = getattr
    for addr, chans, fwd, (valid, ready, *back) in (
            ("awaddr", ("aw", "w"), ("awaddr", "awprot", "wdata", "wstrb"),
             ("bvalid", "bready", "bresp")),
            ("araddr", ("ar",), ("araddr", "arprot"), ("rvalid", "rready", "rresp", "rdata"))):
        pend, sel = Signal(name=f"{chans[0]}_pend"), Signal(name=f"{chans[0]}_sel")
        pick = g(bus, addr)[bit]
        target = Mux(pend, sel, pick)
        for i, dst in enumerate((low, high)):
            m.d.comb += [g(dst, f"{ch}valid").eq(g(bus, f"{ch}valid") & (target == i) & ~pend)
                         for ch in chans]
            m.d.comb += [g(dst, ready).eq(g(bus, ready) & pend & (sel == i)),
                         *(g(dst, name).eq(g(bus, name)) for name in fwd)]
        m.d.comb += [g(bus, f"{ch}ready").eq(Mux(target, g(high, f"{ch}ready"),
                                                 g(low, f"{ch}ready")) & ~pend) for ch in chans]
        m.d.comb += [g(bus, name).eq(Mux(sel, g(high, name), g(low, name))) for name in back]
        m.d.comb += g(bus, valid).eq(Mux(sel, g(high, valid), g(low, valid)) & pend)
        with m.If(g(bus, f"{chans[0]}valid") & g(bus, f"{chans[0]}ready")):
            m.d.sync += [pend.eq(1), sel.eq(pick)]
        with m.Elif(g(bus, valid) & g(bus, ready)):
            m.d.sync += pend.eq(0)
