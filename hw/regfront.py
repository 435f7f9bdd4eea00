"""The accelerator's AXI4-Lite register front and its cycle counters.

* :func:`axi_lite_signature`, :func:`axi_stream_signature`: the external
  bus signatures; :func:`flat_ports` / :func:`generate_verilog`: the Verilog
  port names AXI verification IP expects (``s_axil_awaddr``, ...).
* :class:`RegFront`: the AXI4-Lite slave of :class:`~trilut.hw.isa.RegisterMap`
  (CTRL, STATUS, BUILD, counters, the program and constant windows) and the
  soft-reset timer. It is outside the soft-reset domain.
* :class:`Counters`: the 32-bit counters of :data:`~trilut.hw.isa.COUNTERS`,
  inside the soft-reset domain.
"""
from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .isa import CONST_BITS, DESCRIPTOR_BITS
from .rowio import bits_for

__all__ = ["Counters", "RegFront", "axi_lite_signature", "axi_stream_signature", "flat_ports",
           "generate_verilog"]

#: Counters incremented by events (``pass_cycles`` is loaded instead).
EVENTS = tuple(name for name, _ in isa.COUNTERS if name != "pass_cycles")


def axi_lite_signature(addr_bits, data_bits=isa.AXIL_DATA_BITS):
    """AXI4-Lite, as seen from the master (use ``In(...)`` on a slave)."""
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def axi_stream_signature(data_bits):
    """AXI4-Stream (tdata, tvalid, tready, tlast), as seen from the source."""
    return wiring.Signature({"tdata": Out(data_bits), "tvalid": Out(1), "tready": In(1),
                             "tlast": Out(1)})


def flat_ports(component):
    """``{verilog_name: (value, direction)}`` with the signature path joined by
    ``_`` (``s_axil.awaddr`` -> ``s_axil_awaddr``), the names AXI verification
    IP expects (Amaranth's default joins with ``__``)."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = value.as_value() if hasattr(value, "as_value") else value
        # Direction None: inferred (inputs are the ports nothing drives).
        ports["_".join(map(str, path))] = (value, None)
    return ports


def generate_verilog(component, name):
    """Verilog of ``component`` with :func:`flat_ports` names."""
    return verilog.convert(component, name=name, ports=flat_ports(component), emit_src=False)


def window_port(depth, bits):
    """Write-port signature of a window memory of ``depth`` ``bits``-bit
    entries written 32 bits at a time (program, constants)."""
    return memory.WritePort.Signature(addr_width=bits_for(depth), shape=bits,
                                      granularity=isa.AXIL_DATA_BITS)


class RegFront(wiring.Component):
    """AXI4-Lite slave of the register map ``regs``.

    One outstanding write and one outstanding read: ``awready``/``wready``
    rise together once both ``awvalid`` and ``wvalid`` are high, the read
    data comes one cycle after ``arvalid``; responses OKAY; ``wstrb`` is
    ignored (full-word writes). Writes: CTRL (``start``, a register, pulses
    one cycle, the cycle the write's response is given; ``soft_reset``
    raises ``in_reset``), and the program / constant windows
    (``prog_w`` / ``const_w``, one 32-bit lane per write; the ports are
    registered, so a word is written at the end of the cycle its response
    is given), and on decoder builds the RoPE window (``rope_w``, likewise)
    and the ``kv_pos`` register (held here, outside the soft-reset domain).
    Reads: STATUS (``status``), BUILD (``build``, a constant), ``counters``
    and ``kv_pos``; everything else reads 0.

    Soft reset: ``in_reset`` (registered) is high for ``hold_cycles`` cycles
    from the cycle after the CTRL write, whose response is given only when
    ``in_reset`` falls, so the host's next access finds the core idle.
    """

    def __init__(self, regs, *, build, hold_cycles):
        if hold_cycles < 1:
            raise ValueError(f"hold_cycles must be >= 1, not {hold_cycles}")
        self._regs, self._build, self._hold = regs, build, hold_cycles
        super().__init__({
            "s_axil": In(axi_lite_signature(regs.addr_bits)),
            "start": Out(1), "in_reset": Out(1),
            "status": In(isa.STATUS),
            "counters": In(data.ArrayLayout(32, len(isa.COUNTERS))),
            "prog_w": In(window_port(regs.prog_depth, DESCRIPTOR_BITS)),
            "const_w": In(window_port(regs.const_entries, CONST_BITS)),
            # decoder builds: the RoPE table window, one 32-bit entry a write
            **({"rope_w": In(window_port(regs.rope_entries, 32))} if regs.rope_entries else {}),
            # decoder builds: the kv_pos register (isa.KV_POS_DOC)
            **({"kv_pos": Out(isa.ROW_BITS)} if "kv_pos" in regs.registers else {}),
        })

    def elaborate(self, platform):
        m = Module()
        axil, regs = self.s_axil, self._regs
        soft = Signal()
        bvalid, rvalid, b_pend = Signal(), Signal(), Signal()
        rdata = Signal(32)
        wr = Signal()
        left = Signal(range(self._hold))
        m.d.comb += [
            wr.eq(axil.awvalid & axil.wvalid & ~bvalid & ~b_pend),
            axil.awready.eq(wr), axil.wready.eq(wr),
            axil.bvalid.eq(bvalid), axil.bresp.eq(0),
            axil.arready.eq(~rvalid), axil.rvalid.eq(rvalid), axil.rdata.eq(rdata),
            axil.rresp.eq(0),
        ]
        with m.If(wr & ~soft):
            m.d.sync += bvalid.eq(1)
        with m.Elif(self.in_reset & (left == 0)):
            m.d.sync += [bvalid.eq(1), b_pend.eq(0)]
        with m.Elif(axil.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(soft):
            m.d.sync += [self.in_reset.eq(1), left.eq(self._hold - 1), b_pend.eq(1)]
        with m.Elif(self.in_reset):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 0):
                m.d.sync += self.in_reset.eq(0)

        ctrl = data.View(isa.CTRL, axil.wdata)
        ctrl_wr = wr & (axil.awaddr[2:] == regs.offset("ctrl") >> 2)
        # start is a register: the write handshake ends here, not in the sequencer
        m.d.comb += soft.eq(ctrl_wr & ctrl.soft_reset)
        m.d.sync += self.start.eq(ctrl_wr & ctrl.start)
        for port, name in ((self.prog_w, "prog"), (self.const_w, "const")):
            reg = regs[name]
            size_bits = bits_for(4 * reg.words)
            hit = (axil.awaddr >> size_bits) == (reg.offset >> size_bits)
            word = axil.awaddr[2:size_bits]
            m.d.sync += [port.addr.eq(word[2:]), port.data.eq(axil.wdata.replicate(4)),
                         port.en.eq(Mux(wr & hit, 1 << word[:2], 0))]
        if regs.rope_entries:           # decoder builds: the RoPE table window
            reg = regs["rope"]
            size_bits = bits_for(4 * reg.words)
            m.d.sync += [self.rope_w.addr.eq(axil.awaddr[2:size_bits]),
                         self.rope_w.data.eq(axil.wdata),
                         self.rope_w.en.eq(wr & ((axil.awaddr >> size_bits)
                                                 == (reg.offset >> size_bits)))]

        if "kv_pos" in regs.registers:
            with m.If(wr & (axil.awaddr[2:] == regs.offset("kv_pos") >> 2)):
                m.d.sync += self.kv_pos.eq(axil.wdata)

        with m.If(axil.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0)]
            with m.Switch(axil.araddr[2:]):
                with m.Case(regs.offset("status") >> 2):
                    m.d.sync += rdata.eq(self.status)
                with m.Case(regs.offset("build") >> 2):
                    m.d.sync += rdata.eq(self._build)
                for i, (name, _) in enumerate(isa.COUNTERS):
                    with m.Case(regs.offset(name) >> 2):
                        m.d.sync += rdata.eq(self.counters[i])
                if "kv_pos" in regs.registers:
                    with m.Case(regs.offset("kv_pos") >> 2):
                        m.d.sync += rdata.eq(self.kv_pos)
        with m.Elif(rvalid & axil.rready):
            m.d.sync += rvalid.eq(0)
        return m


class Counters(wiring.Component):
    """The 32-bit counters of :data:`~trilut.hw.isa.COUNTERS`, in that order
    (``values``): each counter of :data:`EVENTS` counts the cycles in which
    its ``events`` bit is high; ``pass_cycles`` takes ``pass_cycles`` when
    ``pass_end`` pulses. ``clear`` (a program start) zeroes all of them.
    The inputs are registered first (they come from all over the core): a
    value is visible two cycles after its event."""

    def __init__(self):
        super().__init__({
            "clear": In(1),
            "events": In(data.StructLayout({name: 1 for name in EVENTS})),
            "pass_end": In(1), "pass_cycles": In(32),
            "values": Out(data.ArrayLayout(32, len(isa.COUNTERS))),
        })

    def elaborate(self, platform):
        m = Module()
        clear, events = Signal(name="clear_r"), Signal.like(self.events, name="events_r")
        pass_end, pass_cycles = Signal(name="pass_end_r"), Signal(32, name="pass_cycles_r")
        m.d.sync += [clear.eq(self.clear), events.eq(self.events),
                     pass_end.eq(self.pass_end), pass_cycles.eq(self.pass_cycles)]
        for i, (name, _) in enumerate(isa.COUNTERS):
            cnt = self.values[i]
            if name == "pass_cycles":
                with m.If(pass_end):
                    m.d.sync += cnt.eq(pass_cycles)
            else:
                with m.If(events[name]):
                    m.d.sync += cnt.eq(cnt + 1)
            with m.If(clear):
                m.d.sync += cnt.eq(0)
        return m
