"""AXI4 (full) read master: weights and KV rows from external memory."""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .axi import (MAX_BURST, MasterParams, add_planner, address_stage, burst_limit,
                  command_layout, latch_error, read_signature, resp_code, stall_timer)
from .isa import ErrorCode

__all__ = ["AxiReadMaster"]


class AxiReadMaster(MasterParams, wiring.Component):
    """Reads commands' words from an AXI4 slave into a stream.

    Ports:

    * ``cmd`` (in stream, :func:`~trilut.hw.axi.command_layout`): read
      ``beats`` words (``data_bits`` each) from byte address ``addr``, a
      multiple of ``data_bits / 8``.
    * ``data`` (out stream): ``{data: unsigned(data_bits), last}``, the words
      in address order, ``last`` on each command's final word (byte ``i`` of a
      word is bits ``8i..8i+7``: AXI's little-endian lanes).
    * ``m_axi``: AR and R channels (:func:`~trilut.hw.axi.read_signature`);
      ``arid`` 0 (so responses return in order), INCR bursts of at most
      ``max_burst`` beats that never cross a 4 KB boundary, full-width beats
      (``arsize = log2(data_bits / 8)``), ``arcache`` :data:`~trilut.hw.axi.CACHE`.
    * ``error`` / ``code``: sticky until reset; ``code`` is an
      :class:`~trilut.hw.isa.ErrorCode` (the first error wins).
    * ``busy``: bursts are in flight (issued and not fully returned).

    Parameters: those of :class:`~trilut.hw.axi.MasterParams`, and
    ``buffer_beats``, the words of output buffer (at least the longest burst;
    default two of them).

    Flow control: ``rready`` is always high. A burst is issued only when the
    output buffer (``buffer_beats`` words, block RAM) has room for all of it
    beyond what earlier bursts will bring (a credit counter), and at most
    ``outstanding`` bursts are in flight. ``data`` may be stalled for any
    time: the master then stops issuing, and no word is lost or duplicated.

    Errors: an RRESP of SLVERR or DECERR (``MEM_SLVERR`` / ``MEM_DECERR``), no
    progress on AR or R for ``timeout`` consecutive cycles while a read is
    waited for (``MEM_TIMEOUT``), or a command of zero beats, an unaligned
    address or words past the top of the address space (``MEM_COMMAND``). Then the master issues nothing new (a pending
    ``arvalid`` stays up until taken, as AXI requires), takes ``cmd`` no more,
    drains the bursts in flight and drops their words (from the failing beat
    on); words that arrived before the error are still delivered on ``data``.

    Latency: the first word is on ``data`` 5 cycles plus the memory's latency
    (AR handshake to the first R handshake) after its command is accepted
    (``arvalid`` rises 3 cycles after it; an R beat is on ``data`` 2 cycles
    after its handshake), measured by ``python -m trilut.gen.axibench``.
    Throughput: one word per cycle when the memory keeps up; commands are
    planned one burst per cycle, so back-to-back commands do not leave gaps
    when bursts overlap (``outstanding`` > 1 and ``buffer_beats`` >= two bursts).
    """

    def __init__(self, *, addr_bits=32, data_bits=128, id_bits=1, len_bits=20,
                 max_burst=MAX_BURST, outstanding=4, buffer_beats=None, timeout=4096):
        self._set_params(addr_bits=addr_bits, data_bits=data_bits, id_bits=id_bits,
                         len_bits=len_bits, max_burst=max_burst, outstanding=outstanding,
                         timeout=timeout)
        max_len = burst_limit(data_bits, max_burst)
        if buffer_beats is None:
            buffer_beats = 2 * max_len
        check_int("buffer_beats", buffer_beats, max_len, 1 << 16)
        self._params["buffer_beats"] = buffer_beats
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_bits, len_bits))),
            "data": Out(stream.Signature(data.StructLayout({"data": unsigned(data_bits),
                                                            "last": 1}))),
            "m_axi": Out(read_signature(addr_bits, data_bits, id_bits)),
            "error": Out(1), "code": Out(ErrorCode), "busy": Out(1),
        })

    @property
    def buffer_beats(self):
        """Words of output buffer (bounds the beats in flight)."""
        return self._params["buffer_beats"]

    def elaborate(self, platform):
        m = Module()
        p = self._params
        axi = self.m_axi
        planner = add_planner(m, p, self.cmd)
        burst = planner.burst
        # (len, last) of each burst in flight, oldest first
        info_layout = data.StructLayout({"len": 8, "last": 1})
        m.submodules.info = info = fifo.SyncFIFO(width=info_layout.size, depth=p["outstanding"])
        m.submodules.buf = buf = fifo.SyncFIFOBuffered(width=p["data_bits"] + 1,
                                                       depth=p["buffer_beats"])
        credits = Signal(range(p["buffer_beats"] + 1), init=p["buffer_beats"])
        inflight = Signal(range(p["outstanding"] + 1))
        stopped = Signal()
        m.d.comb += [self.error.eq(self.code != ErrorCode.NONE), stopped.eq(self.error),
                     planner.halt.eq(stopped), self.busy.eq(inflight != 0)]

        # AR: one register stage, loaded from the planner.
        # credits left if this burst is issued (negative: no room for it yet)
        after = Signal(signed(len(credits) + 1))
        issue = Signal()
        m.d.comb += [
            after.eq(credits - burst.payload.beats),
            issue.eq(burst.valid & ~stopped & (~axi.arvalid | axi.arready) & (after >= 0)
                     & (inflight != p["outstanding"])),
            burst.ready.eq(issue),
            info.w_en.eq(issue),
        ]
        pushed = data.View(info_layout, info.w_data)
        m.d.comb += [pushed.len.eq(burst.payload.len), pushed.last.eq(burst.payload.last)]
        address_stage(m, p, axi, "ar", burst, issue)

        # R: always ready; count each burst's beats against its AxLEN.
        head = data.View(info_layout, info.r_data)
        beat = Signal(8)
        took = axi.rvalid & axi.rready
        end = Signal()
        m.d.comb += [axi.rready.eq(1), end.eq(took & (beat == head.len)), info.r_en.eq(end)]
        with m.If(took):
            m.d.sync += beat.eq(beat + 1)
            with m.If(end):
                m.d.sync += beat.eq(0)
        m.d.comb += [buf.w_en.eq(took & ~stopped & (resp_code(axi.rresp) == ErrorCode.NONE)),
                     buf.w_data.eq(axi.rdata), buf.w_data[-1].eq(end & head.last)]

        # data out of the buffer; a word taken returns its credit.
        out = self.data
        m.d.comb += [out.valid.eq(buf.r_rdy), out.payload.data.eq(buf.r_data[:-1]),
                     out.payload.last.eq(buf.r_data[-1]), buf.r_en.eq(out.ready)]
        m.d.sync += [credits.eq(Mux(issue, after, credits) + (out.valid & out.ready)),
                     inflight.eq(inflight + issue - end)]

        # Errors (first wins).
        expired = stall_timer(m, axi.arvalid | (inflight != 0),
                              (axi.arvalid & axi.arready) | took, p["timeout"])
        latch_error(m, self.code, planner, took, axi.rresp, expired)
        return m

