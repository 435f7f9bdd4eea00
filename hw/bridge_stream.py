"""The stream requests of :class:`~trilut.hw.bridge_core.Bridge`'s FSM:
STREAM_WRITE and STREAM_READ (see :func:`stream_states`).

Handshake: a STREAM_WRITE only writes into the stream's FIFO of
:func:`~trilut.hw.link.max_record_beats` transfers after checking it has
room for the whole request (else the reply says FULL), so it never waits on
the accelerator; a STREAM_READ takes what the output FIFO holds (filled
from the accelerator's ``m_axis*`` whenever it has room) and never waits
either, except for STREAM_WAIT's bounded wait.

Latency: STREAM_HDR 3 cycles, STREAM_SIZE 1, STREAM_CHECK 1, then ``bytes
+ 1`` cycles per record either way (+1 per record read for RBEAT).
"""
from amaranth.hdl import Cat, Mux, Signal

from . import link
from .arith import const_mul
from .link import FrameType, Status

__all__ = ["stream_states"]


def stream_states(c):
    """STREAM_WRITE: STREAM_HDR (stream, beats), STREAM_SIZE (the
    request's expected length and the room in the stream's FIFO into
    registers: a multiply and compares that would not fit in STREAM_CHECK's
    cycle at 100 MHz), STREAM_CHECK (stream number, length against the
    records, room), then per transfer its bytes and the flags byte (WBEAT, ``bytes +
    1`` cycles, pushed into the FIFO), WRITE_DONE / WRITE_FREE (the free
    places into the reply). STREAM_READ: STREAM_HDR, STREAM_CHECK, with
    STREAM_WAIT first READ_WAIT (until enough output, a pause of
    ``link.READ_GAP`` cycles, or ``read_wait`` cycles without any), then per
    transfer RBEAT (pop one) and RRECORD (its bytes and flags into the
    reply, ``bytes + 1`` cycles) until ``beats`` or the FIFO is empty."""
    br, m, beat, beat_last, bidx, byte = c.bridge, c.m, c.beat, c.beat_last, c.bidx, c.byte
    cnt, fail, free, ftype, gap_cnt = c.cnt, c.fail, c.free, c.ftype, c.gap_cnt
    in_fifos, length, max_bytes, out_fifos = c.in_fifos, c.length, c.max_bytes, c.out_fifos
    read_wait, reply_byte, sel, status = c.read_wait, c.reply_byte, c.sel, c.status
    take, waited, words = c.take, c.waited, c.words
    with m.State("STREAM_HDR"):        # stream u8, beats u16
        take()
        m.d.sync += cnt.eq(cnt + 1)
        with m.Switch(cnt):
            with m.Case(0):
                is_read = ftype == FrameType.STREAM_READ
                m.d.sync += [sel.eq(Mux(is_read, byte & ~link.STREAM_WAIT, byte)),
                             read_wait.eq(is_read & (byte & link.STREAM_WAIT).any()),
                             waited.eq(0)]
            with m.Case(1):
                m.d.sync += words[:8].eq(byte)
            with m.Case(2):
                m.d.sync += [words[8:].eq(byte), cnt.eq(1), bidx.eq(0)]
                m.next = "STREAM_SIZE"
    # A write's expected frame length and whether its stream's FIFO has room,
    # registered (the FIFO only drains until the writes start: room stays).
    expect = Signal(len(words) + 8, name="stream_expect")
    has_room = Signal(name="stream_room")
    with m.State("STREAM_SIZE"):
        for i, (q, nb) in enumerate(in_fifos):
            with m.If(sel == i):
                m.d.sync += [expect.eq(3 + const_mul(words, link.record_bytes(nb))),
                             has_room.eq(words <= q.depth - q.level)]
        m.next = "STREAM_CHECK"
    with m.State("STREAM_CHECK"):
        ok_len, room = Signal(), Signal()
        with m.If(ftype == FrameType.STREAM_WRITE):
            with m.Switch(sel):
                for i, (q, nb) in enumerate(in_fifos):
                    with m.Case(i):
                        m.d.comb += [ok_len.eq(length == expect), room.eq(has_room)]
                        m.d.sync += free.eq(q.depth - q.level)
                with m.Default():
                    fail(Status.BAD_STREAM)
            with m.If(sel < len(in_fifos)):
                with m.If(~ok_len):
                    fail(Status.BAD_LENGTH)
                with m.Elif(~room):
                    m.d.sync += status.eq(Status.FULL)
                    m.next = "WRITE_DONE"
                with m.Elif(words == 0):
                    m.next = "WRITE_DONE"
                with m.Else():
                    m.next = "WBEAT"
        with m.Else():
            with m.Switch(sel):
                for j, (q, nb) in enumerate(out_fifos):
                    with m.Case(j):
                        m.d.comb += ok_len.eq(words <= link.max_record_beats(nb))
                with m.Default():
                    fail(Status.BAD_STREAM)
            with m.If(sel < len(out_fifos)):
                with m.If(~ok_len):
                    fail(Status.BAD_LENGTH)
                with m.Elif(read_wait):
                    m.d.sync += gap_cnt.eq(0)
                    m.next = "READ_WAIT"
                with m.Else():
                    m.next = "RBEAT"
    with m.State("WBEAT"):
        take()
        bytes_of = Signal(range(max_bytes + 1))
        with m.Switch(sel):
            for i, (q, nb) in enumerate(in_fifos):
                with m.Case(i):
                    m.d.comb += bytes_of.eq(nb)
        with m.If(bidx == bytes_of):        # the flags byte: push the transfer
            m.d.sync += [bidx.eq(0), words.eq(words - 1)]
            for i, (q, nb) in enumerate(in_fifos):
                m.d.comb += [q.w_data.eq(Cat(beat[:8 * nb], byte[0])),
                             q.w_en.eq(sel == i)]
            with m.If(words == 1):
                m.next = "WRITE_DONE"
        with m.Else():
            m.d.sync += [beat.word_select(bidx[:max(1, (max_bytes - 1).bit_length())],
                                          8).eq(byte),
                         bidx.eq(bidx + 1)]
    with m.State("WRITE_DONE"):         # free places after the write
        with m.Switch(sel):
            for i, (q, nb) in enumerate(in_fifos):
                with m.Case(i):
                    m.d.sync += free.eq(q.depth - q.level)
        m.next = "WRITE_FREE"
    with m.State("WRITE_FREE"):
        reply_byte(cnt, Mux(cnt == 1, free[:8], free[8:]))
        m.d.sync += cnt.eq(cnt + 1)
        with m.If(cnt == 2):
            m.next = "REPLY_STATUS"
    with m.State("READ_WAIT"):          # STREAM_WAIT: until the output pauses
        level, arrived = Signal(16), Signal()
        with m.Switch(sel):
            for j, (q, nb) in enumerate(out_fifos):
                with m.Case(j):
                    m.d.comb += [level.eq(q.level), arrived.eq(q.w_en & q.w_rdy)]
        m.d.sync += [waited.eq(waited + (waited != br._read_wait)),
                     gap_cnt.eq(Mux(arrived, 0, gap_cnt + (gap_cnt != link.READ_GAP)))]
        with m.If((level >= words) | ((level != 0) & (gap_cnt == link.READ_GAP)) |
                  ((level == 0) & (waited == br._read_wait))):
            m.next = "RBEAT"
    with m.State("RBEAT"):              # take one transfer, if any is left
        rdy = Signal()
        with m.Switch(sel):
            for j, (q, nb) in enumerate(out_fifos):
                with m.Case(j):
                    m.d.comb += [rdy.eq(q.r_rdy), q.r_en.eq(words != 0)]
                    m.d.sync += [beat.eq(q.r_data[:8 * nb]),
                                 beat_last.eq(q.r_data[8 * nb])]
        with m.If((words == 0) | ~rdy):
            m.next = "REPLY_STATUS"
        with m.Else():
            m.d.sync += [words.eq(words - 1), bidx.eq(0)]
            m.next = "RRECORD"
    with m.State("RRECORD"):
        bytes_of = Signal(range(max_bytes + 1))
        with m.Switch(sel):
            for j, (q, nb) in enumerate(out_fifos):
                with m.Case(j):
                    m.d.comb += bytes_of.eq(nb)
        m.d.sync += [cnt.eq(cnt + 1), bidx.eq(bidx + 1)]
        with m.If(bidx == bytes_of):
            reply_byte(cnt, beat_last)
            m.next = "RBEAT"
        with m.Else():
            reply_byte(cnt, beat.word_select(
                bidx[:max(1, (max_bytes - 1).bit_length())], 8))
