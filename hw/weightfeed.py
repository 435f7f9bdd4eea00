"""Weight feeder: LINEAR weights from external memory into ``s_axis_wgt``."""
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .regfront import axi_stream_signature

__all__ = ["WeightFeeder"]


class WeightFeeder(wiring.Component):
    """Reads frames of weights from a memory port and re-packs its words
    into AXI4-Stream transfers for the accelerator's ``s_axis_wgt``.

    Parameters: ``addr_bits`` (the memory's word address width),
    ``word_bits`` (its word, default 16: the ULX3S SDRAM), ``out_bytes``
    (the transfer width: ``8 * out_bytes`` must be a multiple of
    ``word_bits``; ``ratio`` = words per transfer), ``max_burst`` (longest
    read command in words, a power of two; default 256) and ``queue``
    (frames the command queue holds; default 32).

    Ports (all ``sync``):

    * ``cmd`` (in stream) ``{addr, len}``: one frame of ``len + 1``
      transfers, read from word address ``addr`` up (``len + 1`` times
      ``ratio`` words); every encoding is a valid frame. Taken into a queue
      of ``queue`` frames.
    * ``read_cmd`` (out stream) ``{addr, len}``: read ``len + 1`` words
      from ``addr`` (the :class:`~trilut.hw.sdram.SDRAM`'s ``read_cmd``;
      an AXI read master's command carries the same two numbers);
      ``read_data`` (in stream) ``{data, last}``: the words in command order
      (``last`` is not used: the feeder counts words itself).
    * ``out`` (:func:`~trilut.hw.regfront.axi_stream_signature`): the
      transfers, word ``i`` of a transfer in bits ``i * word_bits`` up (the
      memory's bytes in address order, as a host's ``s_axis_wgt`` record
      sends them); ``tlast`` on each frame's last transfer.
    * ``abort`` (in): drop every queued frame, stop reading and throw away
      the words still to come from reads already issued; held by the user
      ``out.tvalid`` falls at once (only for use when
      the accelerator is being reset or stopped). A one-cycle pulse
      suffices: the feeder keeps dropping until ``busy`` falls, and takes
      no command meanwhile.
    * ``free`` (out): frames ``cmd`` can still take.
    * ``busy`` (out): a frame is queued or in progress, or words are still
      to come or to be delivered.

    Handshake and latency: a frame's first read command is presented 2
    cycles after ``cmd`` is accepted (1 through the queue, 1 to load it);
    a frame is split into commands of at most ``max_burst`` words,
    presented back to back; a transfer is on ``out`` the cycle after the
    word completing it is accepted. Reads are requested ahead of what
    ``out`` takes: the memory port's own backpressure (the SDRAM issues a
    read only with room in its buffer) holds them, so no word is lost or
    duplicated however ``out`` is stalled. Throughput: one word per cycle
    (one transfer per ``ratio`` cycles) when the memory keeps up.
    """

    def __init__(self, *, addr_bits, out_bytes, word_bits=16, max_burst=256, queue=32):
        self._addr_bits = check_int("addr_bits", addr_bits, 1, 40)
        self._word_bits = check_int("word_bits", word_bits, 8)
        self._out_bytes = check_int("out_bytes", out_bytes, 1)
        if (8 * out_bytes) % word_bits:
            raise ValueError(f"a transfer of {out_bytes} bytes is not a whole number of "
                             f"{word_bits}-bit memory words")
        self._max_burst = check_int("max_burst", max_burst, 1, 4096)
        if max_burst & (max_burst - 1):
            raise ValueError(f"max_burst must be a power of two, not {max_burst}")
        self._queue = check_int("queue", queue, 1, 4096)
        self._ratio = 8 * out_bytes // word_bits
        if self._ratio & (self._ratio - 1):
            raise ValueError(f"a transfer must be a power-of-two number of memory words, "
                             f"not {self._ratio}")
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"addr": addr_bits,
                                                          "len": addr_bits}))),
            "read_cmd": Out(stream.Signature(data.StructLayout(
                {"addr": addr_bits, "len": (max_burst - 1).bit_length()}))),
            "read_data": In(stream.Signature(data.StructLayout({"data": word_bits,
                                                                "last": 1}))),
            "out": Out(axi_stream_signature(8 * out_bytes)),
            "abort": In(1), "free": Out(range(queue + 1)), "busy": Out(1)})

    ratio = property(lambda self: self._ratio, doc="memory words per transfer")
    queue = property(lambda self: self._queue, doc="frames the command queue holds")

    def elaborate(self, platform):
        m = Module()
        ab, wb, ratio = self._addr_bits, self._word_bits, self._ratio
        shift = (ratio - 1).bit_length()          # ratio is a power of two
        m.submodules.queue = q = fifo.SyncFIFO(width=2 * ab, depth=self._queue)
        m.submodules.frames = frames = fifo.SyncFIFO(width=ab, depth=self._queue)
        dropping = Signal()
        words_bits = ab + shift + 1

        # Issuer: one frame at a time, in bursts of at most max_burst words.
        raddr, rleft = Signal(ab), Signal(words_bits)
        outstanding = Signal(words_bits + 1)      # words requested, not yet received
        head = data.View(self.cmd.payload.shape(), q.r_data)
        burst = Signal(range(self._max_burst + 1))
        m.d.comb += [q.w_data.eq(self.cmd.payload.as_value()),
                     q.w_en.eq(self.cmd.valid & ~dropping),
                     self.cmd.ready.eq(q.w_rdy & ~dropping)]
        with m.If(rleft < self._max_burst):
            m.d.comb += burst.eq(rleft)
        with m.Else():
            m.d.comb += burst.eq(self._max_burst)
        m.d.comb += [self.read_cmd.valid.eq((rleft != 0) & ~dropping),
                     self.read_cmd.payload.addr.eq(raddr),
                     self.read_cmd.payload.len.eq(burst - 1)]
        issued = self.read_cmd.valid & self.read_cmd.ready
        with m.If(issued):
            m.d.sync += [raddr.eq(raddr + burst), rleft.eq(rleft - burst)]
        load = (rleft == 0) & q.r_rdy & frames.w_rdy & ~dropping
        m.d.comb += [q.r_en.eq(load | dropping), frames.w_en.eq(load),
                     frames.w_data.eq(head.len)]
        with m.If(load):
            m.d.sync += [raddr.eq(head.addr), rleft.eq((head.len + 1) << shift)]

        # Packer: gather `ratio` words into a transfer, count the frame's transfers.
        rd, out = self.read_data, self.out
        n = Signal(range(ratio))
        beat = Signal(ab)
        buf = Signal((ratio - 1) * wb)
        can_load = ~out.tvalid | out.tready
        completes = n == ratio - 1
        m.d.comb += rd.ready.eq(dropping | ~completes | can_load)
        got = rd.valid & rd.ready
        m.d.sync += outstanding.eq(outstanding + (issued * burst) - got)
        with m.If(out.tvalid & out.tready):
            m.d.sync += out.tvalid.eq(0)
        with m.If(got & ~dropping):
            with m.If(completes):
                last = beat == frames.r_data
                m.d.sync += [out.tdata.eq(Cat(buf, rd.payload.data)), out.tvalid.eq(1),
                             out.tlast.eq(last), beat.eq(beat + 1), n.eq(0)]
                m.d.comb += frames.r_en.eq(last)
                with m.If(last):
                    m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += n.eq(n + 1)
                if ratio > 1:
                    m.d.sync += buf.eq(Cat(buf[wb:], rd.payload.data))

        # Abort: drain both queues, forget the frame, drop the words in flight.
        with m.If(self.abort):
            m.d.sync += [dropping.eq(1), rleft.eq(0), out.tvalid.eq(0), n.eq(0), beat.eq(0)]
        with m.Elif(dropping & (outstanding == 0) & ~q.r_rdy & ~frames.r_rdy):
            m.d.sync += dropping.eq(0)
        with m.If(dropping):
            m.d.comb += frames.r_en.eq(1)
        m.d.comb += self.free.eq(self._queue - q.level)
        m.d.comb += self.busy.eq(dropping | q.r_rdy | (rleft != 0) | frames.r_rdy |
                                 out.tvalid | (outstanding != 0))
        return m
