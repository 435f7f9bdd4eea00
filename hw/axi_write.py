"""AXI4 (full) write master: KV-cache rows and memory fills."""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import (MAX_BURST, MasterParams, add_planner, address_stage, command_layout,
                  latch_error, stall_timer, write_signature)
from .isa import ErrorCode

__all__ = ["AxiWriteMaster"]


class AxiWriteMaster(MasterParams, wiring.Component):
    """Writes a stream of words to an AXI4 slave, command by command.

    Ports:

    * ``cmd`` (in stream, :func:`~trilut.hw.axi.command_layout`): write
      ``beats`` words (``data_bits`` each) from byte address ``addr``, a
      multiple of ``data_bits / 8``.
    * ``data`` (in stream): ``{data: unsigned(data_bits)}``, the words of the
      commands in order, all bytes written (``wstrb`` all ones); the command
      says where one ends.
    * ``m_axi``: AW, W and B channels (:func:`~trilut.hw.axi.write_signature`);
      ``awid`` 0, INCR bursts of at most ``max_burst`` beats that never cross
      a 4 KB boundary, full-width beats, ``awcache`` :data:`~trilut.hw.axi.CACHE`.
    * ``error`` / ``code``: sticky until reset (:class:`~trilut.hw.isa.ErrorCode`,
      the first error wins).
    * ``busy``: bursts are in flight (issued, their B not yet received).

    Parameters: those of :class:`~trilut.hw.axi.MasterParams`.

    Flow control: a burst's address goes out as soon as it is planned (at most
    ``outstanding`` bursts between AW and B); its words follow on W, in burst
    order, as ``data`` delivers them (W may run ahead of AW's handshake, as
    AXI4 allows). ``bready`` is always high. AW and W come from registers,
    so ``valid`` is never withdrawn and ``data.ready`` is high when the W
    register is free or being taken.

    Errors: a BRESP of SLVERR or DECERR (``MEM_SLVERR`` / ``MEM_DECERR``), no
    progress on AW, W or B for ``timeout`` consecutive cycles while the memory
    is waited for (an AW or W not taken, or a burst's B not received;
    ``data`` running dry is not the memory's fault and does not count), or a
    bad command (zero beats, unaligned, or past the top of the address space:
    ``MEM_COMMAND``). Then the master issues no new burst, takes
    neither ``cmd`` nor ``data`` any more, completes the bursts whose address
    was issued with beats of ``wstrb = 0`` (which write nothing), and takes
    their responses.

    Latency: a command's first address is on AW 3 cycles after the command is
    accepted; a word on W 1 cycle after ``data`` delivered it.
    Throughput: one word per cycle while ``data`` and the memory keep up.
    """

    def __init__(self, *, addr_bits=32, data_bits=128, id_bits=1, len_bits=20,
                 max_burst=MAX_BURST, outstanding=4, timeout=4096):
        self._set_params(addr_bits=addr_bits, data_bits=data_bits, id_bits=id_bits,
                         len_bits=len_bits, max_burst=max_burst, outstanding=outstanding,
                         timeout=timeout)
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_bits, len_bits))),
            "data": In(stream.Signature(data.StructLayout({"data": unsigned(data_bits)}))),
            "m_axi": Out(write_signature(addr_bits, data_bits, id_bits)),
            "error": Out(1), "code": Out(ErrorCode), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._params
        axi = self.m_axi
        planner = add_planner(m, p, self.cmd)
        burst = planner.burst
        # AxLEN of each burst whose words are not all on W yet, oldest first
        m.submodules.wq = wq = fifo.SyncFIFO(width=8, depth=p["outstanding"])
        inflight = Signal(range(p["outstanding"] + 1))      # AW issued, B not received
        awaiting_b = Signal(range(p["outstanding"] + 1))    # all of W sent, B not received
        stopped = Signal()
        m.d.comb += [self.error.eq(self.code != ErrorCode.NONE), stopped.eq(self.error),
                     planner.halt.eq(stopped), self.busy.eq(inflight != 0)]

        # AW: one register stage, loaded from the planner.
        issue = Signal()
        m.d.comb += [
            issue.eq(burst.valid & ~stopped & (~axi.awvalid | axi.awready)
                     & (inflight != p["outstanding"])),
            burst.ready.eq(issue),
            wq.w_en.eq(issue), wq.w_data.eq(burst.payload.len),
        ]
        address_stage(m, p, axi, "aw", burst, issue)

        # W: one register stage; words from data, or strobe-less ones when stopped.
        beat = Signal(8)
        load = Signal()
        w_free = ~axi.wvalid | axi.wready
        m.d.comb += [self.data.ready.eq(wq.r_rdy & w_free & ~stopped),
                     load.eq(wq.r_rdy & w_free & (self.data.valid | stopped))]
        w_end = load & (beat == wq.r_data)
        m.d.comb += wq.r_en.eq(w_end)
        with m.If(axi.wready):
            m.d.sync += axi.wvalid.eq(0)
        with m.If(load):
            m.d.sync += [axi.wvalid.eq(1), axi.wdata.eq(self.data.payload.data),
                         axi.wstrb.eq(Mux(stopped, 0, (1 << len(axi.wstrb)) - 1)),
                         axi.wlast.eq(w_end), beat.eq(beat + 1)]
            with m.If(w_end):
                m.d.sync += beat.eq(0)

        # B: always ready.
        took_b = axi.bvalid & axi.bready
        last_w = axi.wvalid & axi.wready & axi.wlast
        m.d.comb += axi.bready.eq(1)
        m.d.sync += [inflight.eq(inflight + issue - took_b),
                     awaiting_b.eq(awaiting_b + last_w - took_b)]

        # Errors (first wins).
        waiting = axi.awvalid | axi.wvalid | (awaiting_b != 0)
        progress = (axi.awvalid & axi.awready) | (axi.wvalid & axi.wready) | took_b
        expired = stall_timer(m, waiting, progress, p["timeout"])
        latch_error(m, self.code, planner, took_b, axi.bresp, expired)
        return m
