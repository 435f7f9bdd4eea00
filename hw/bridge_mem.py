"""The external memory's requests of :class:`~trilut.hw.bridge_core.Bridge`'s
FSM (only with ``memory``): MEM_WRITE / MEM_READ (:func:`memory_states`)
and FEED (:func:`feed_states`).

Handshake: the SDRAM's burst command and data streams are honoured both
ways (MEM_CMD waits for the command's ``ready``, MEM_WDATA for the write
buffer's, MEM_RDATA for read data); the read port is the weight feeder's
except in the MEM_READ states (``bridge_reads``). A command waits for the
SDRAM's initialisation; one that fails is answered MEM_ERROR; MEM_* are
answered BUSY while the feeder is busy. FEED checks every frame before it
queues any (8 cycles per frame for each pass), so a bad request changes
nothing; CTRL.start (FEED_START) goes through the REG_WRITE states.

Latency: MEM_WRITE 2 cycles per 16-bit word after the command (the reply
does not wait for the controller, whose ordering makes a later read see the
data); MEM_READ 3 cycles per word after the first word arrives.
"""
from amaranth.hdl import Cat, Mux, Signal

from . import isa, link
from .link import FrameType, Status

__all__ = ["memory_states", "feed_states"]


def memory_states(c):
    """MEM_WRITE / MEM_READ: MEM_ADDR (and MEM_COUNT), MEM_CHECK
    (initialisation error, a busy feeder, length and alignment, the
    address range), MEM_CMD (one burst command, once the SDRAM takes it),
    then MEM_WDATA (2 cycles per word from the request buffer into the
    SDRAM's write buffer) or MEM_RDATA / MEM_RBYTES (3 cycles per word into
    the reply)."""
    br, m, addr, bidx, bridge_reads = c.bridge, c.m, c.addr, c.bidx, c.bridge_reads
    byte, cnt, fail, feeder, field, ftype = c.byte, c.cnt, c.fail, c.feeder, c.field, c.ftype
    collect, length, reply_byte, rptr, take = c.collect, c.length, c.reply_byte, c.rptr, c.take
    mem_len = Signal(16)          # data bytes of the request
    mem_word = Signal(8 * link.MEM_ALIGN)
    mem_last = Signal()
    wcmd, wdata = br.mem_write_cmd, br.mem_write_data
    rcmd, rdata = br.mem_read_cmd, br.mem_read_data
    with collect("MEM_ADDR", field, 4) as value:   # addr u32 (MEM_READ: then count u16)
        m.d.sync += [addr.eq(value), cnt.eq(0), mem_len.eq(length - 4)]
        with m.If(ftype == FrameType.MEM_READ):
            m.next = "MEM_COUNT"
        with m.Else():
            m.next = "MEM_CHECK"
    with collect("MEM_COUNT", mem_len, 2):
        m.d.sync += cnt.eq(0)
        m.next = "MEM_CHECK"
    with m.State("MEM_CHECK"):
        align = (link.MEM_ALIGN - 1).bit_length()
        with m.If(br.mem_init_error):
            fail(Status.MEM_ERROR)
        with m.Elif(feeder.busy):
            fail(Status.BUSY)
        with m.Elif((ftype == FrameType.MEM_READ) &
                    ((mem_len == 0) | (mem_len > link.max_mem_read_bytes()))):
            fail(Status.BAD_LENGTH)
        with m.Elif((addr[:align] != 0) | (mem_len[:align] != 0) |
                    (addr + mem_len > br.memory_bytes)):
            fail(Status.BAD_ADDRESS)
        with m.Else():
            m.next = "MEM_CMD"
    with m.State("MEM_CMD"):       # one burst command (waits for init_done)
        m.d.comb += bridge_reads.eq(1)
        n_words = (mem_len >> align) - 1
        with m.If(ftype == FrameType.MEM_WRITE):
            m.d.comb += [wcmd.valid.eq(1), wcmd.payload.addr.eq(addr >> align),
                         wcmd.payload.len.eq(n_words)]
        with m.Else():
            m.d.comb += [rcmd.valid.eq(1), rcmd.payload.addr.eq(addr >> align),
                         rcmd.payload.len.eq(n_words)]
        go = Mux(ftype == FrameType.MEM_WRITE, wcmd.ready, rcmd.ready)
        m.d.sync += [bidx.eq(0), cnt.eq(1)]        # reply bytes after status
        with m.If(br.mem_init_error):
            fail(Status.MEM_ERROR)
        with m.Elif(go):
            with m.If(ftype == FrameType.MEM_WRITE):
                m.next = "MEM_WDATA"
            with m.Else():
                m.next = "MEM_RDATA"
    with m.State("MEM_WDATA"):     # bytes of a word, then hand it over
        last_byte = bidx == link.MEM_ALIGN - 1
        m.d.comb += [wdata.valid.eq(last_byte),
                     wdata.payload.data.eq(Cat(mem_word[8:], byte))]
        with m.If(~last_byte | wdata.ready):
            take()
            m.d.sync += [mem_word.eq(Cat(mem_word[8:], byte)), bidx.eq(bidx + 1)]
            with m.If(last_byte):
                m.d.sync += [bidx.eq(0), cnt.eq(0)]
                with m.If(rptr + 1 == length):
                    m.next = "REPLY_STATUS"
    with m.State("MEM_RDATA"):     # take a word
        m.d.comb += [rdata.ready.eq(1), bridge_reads.eq(1)]
        with m.If(rdata.valid):
            m.d.sync += [mem_word.eq(rdata.payload.data),
                         mem_last.eq(rdata.payload.last), bidx.eq(0)]
            m.next = "MEM_RBYTES"
    with m.State("MEM_RBYTES"):    # its bytes into the reply, low first
        m.d.comb += bridge_reads.eq(1)
        reply_byte(cnt, mem_word.word_select(bidx[:max(1, align)], 8))
        m.d.sync += [cnt.eq(cnt + 1), bidx.eq(bidx + 1)]
        with m.If(bidx == link.MEM_ALIGN - 1):
            with m.If(mem_last):
                m.next = "REPLY_STATUS"
            with m.Else():
                m.next = "MEM_RDATA"


def feed_states(c):
    """FEED (inside the bridge's FSM): flags, an optional abort, then the
    frame descriptors read twice, checked and then queued; CTRL.start
    through the register-write states."""
    br, m, feeder, take, fail, byte = c.bridge, c.m, c.feeder, c.take, c.fail, c.byte
    collect = c.collect
    length, rptr_next, cnt, frames, addr = c.length, c.rptr_next, c.cnt, c.words, c.addr
    field, aw_done, w_done, status = c.field, c.aw_done, c.w_done, c.status
    nb = dict(br._inputs)["s_axis_wgt"]
    align = (link.MEM_ALIGN - 1).bit_length()
    flags, desc, pushing = Signal(8), Signal(8 * link.FEED_FRAME_BYTES), Signal()
    n_frames = (length - 1) >> (link.FEED_FRAME_BYTES - 1).bit_length()
    with m.State("FEED_FLAGS"):
        take()
        m.d.sync += [flags.eq(byte), cnt.eq(0), pushing.eq(0), frames.eq(n_frames)]
        with m.If(br.mem_init_error):
            fail(Status.MEM_ERROR)
        with m.Elif(byte & link.FEED_ABORT):
            m.d.comb += feeder.abort.eq(1)
            m.next = "FEED_DRAIN"
        with m.Else():
            m.next = "FEED_ROOM"
    with m.State("FEED_DRAIN"):            # the abort's words in flight
        with m.If(~feeder.busy):
            m.next = "FEED_ROOM"
    with m.State("FEED_ROOM"):
        with m.If(frames > feeder.free):
            m.d.sync += status.eq(Status.FULL)
            m.next = "REPLY_STATUS"
        with m.Elif(frames == 0):
            m.next = "FEED_GO"
        with m.Else():
            m.next = "FEED_READ"
    with collect("FEED_READ", desc, link.FEED_FRAME_BYTES):     # one descriptor
        m.d.sync += cnt.eq(0)
        m.next = "FEED_TEST"
    with m.State("FEED_TEST"):             # first pass: check; second: queue
        f_addr, f_len = desc[:32], desc[32:]
        with m.If(~pushing):
            with m.If((f_len == 0) | (f_len[:(nb - 1).bit_length()] != 0)):
                fail(Status.BAD_LENGTH)
            with m.Elif((f_addr[:align] != 0) | (f_addr + f_len > br.memory_bytes)):
                fail(Status.BAD_ADDRESS)
            with m.Elif(frames == 1):      # all good: read them again and queue them
                m.d.comb += rptr_next.eq(1)
                m.d.sync += [pushing.eq(1), frames.eq(n_frames)]
                m.next = "FEED_READ"
            with m.Else():
                m.d.sync += frames.eq(frames - 1)
                m.next = "FEED_READ"
        with m.Else():
            m.d.comb += [feeder.cmd.valid.eq(1),
                         feeder.cmd.payload.addr.eq(f_addr >> align),
                         feeder.cmd.payload.len.eq((f_len >> (nb - 1).bit_length()) - 1)]
            with m.If(feeder.cmd.ready):
                m.d.sync += frames.eq(frames - 1)
                with m.If(frames == 1):
                    m.next = "FEED_GO"
                with m.Else():
                    m.next = "FEED_READ"
    with m.State("FEED_GO"):
        m.d.sync += cnt.eq(0)
        with m.If(flags & link.FEED_START):
            m.d.sync += [addr.eq(br._regs.offset("ctrl")), aw_done.eq(0), w_done.eq(0),
                         field.eq(isa.CTRL.const({"start": 1}).as_value().value)]
            m.next = "AXI_W"
        with m.Else():
            m.next = "REPLY_STATUS"

