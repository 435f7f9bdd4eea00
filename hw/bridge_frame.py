"""The frame side of :class:`~trilut.hw.bridge_core.Bridge`'s FSM: idle,
reception and checking of a request frame, the register requests
(REG_WRITE / REG_READ) and the reply.

Each function adds its states to the bridge's FSM (``c``: the bridge's
buffers, registers and helpers by name, see ``Bridge.elaborate``).

Handshake: ``rx`` is taken one byte per cycle while a frame is being
received (HUNT, HEADER, PAYLOAD, CRC) and is held off while a frame is
executed or answered; ``tx`` (the reply) waits on its ``ready``. The
accelerator's AXI4-Lite slave sees one transaction at a time.

Latency: CHECK takes one cycle after the last CRC byte; REG_WRITE then
about 7 cycles per word (WDATA, AXI_W, AXI_B against the accelerator's
slave), REG_READ about 7 (AXI_AR, AXI_R, four RDATA bytes); the reply is
REPLY_STATUS and TX (2 cycles), 5 header bytes, the payload and 2 CRC bytes,
one per cycle while ``tx`` is ready.
"""
from amaranth.hdl import Cat, Mux, Signal

from . import isa, link
from .link import MAX_PAYLOAD, REPLY, SYNC, FrameType, Status, crc16_byte

__all__ = ["QUIET_WAIT", "REQUESTS", "idle_states", "receive_states", "register_states", "reply_states"]

#: Cycles the accelerator must wait on a stream (input empty or output full)
#: before ``quiet`` says that only the host can make it progress.
QUIET_WAIT = 256
#: Per request type: (its length is bad: a function of the 16-bit payload
#: length, the state that executes it, whether it needs the external
#: memory). CHECK answers a bad length BAD_LENGTH, an unknown type (or a
#: memory type without memory) BAD_TYPE.
REQUESTS = {
    FrameType.REG_WRITE: (lambda n: (n < 8) | (n[:2] != 0), "ADDR", False),   # addr + words
    FrameType.REG_READ: (lambda n: n != 6, "ADDR", False),                    # addr, count
    FrameType.STREAM_WRITE: (lambda n: n < 3, "STREAM_HDR", False),           # + records
    FrameType.STREAM_READ: (lambda n: n != 3, "STREAM_HDR", False),           # stream, beats
    FrameType.MEM_WRITE: (lambda n: n < 4 + link.MEM_ALIGN, "MEM_ADDR", True),
    FrameType.MEM_READ: (lambda n: n != 6, "MEM_ADDR", True),                 # addr, bytes
    FrameType.FEED: (lambda n: n[:3] != 1, "FEED_FLAGS", True),               # 1 + 8n bytes
}


def idle_states(c):
    """HUNT (wait for SYNC; poll STATUS after every frame and every
    ``poll_interval`` cycles; ``quiet``), POLL, POLL_R (one AXI4-Lite read
    of STATUS)."""
    br, m, axil, cnt, crc, feeding = c.bridge, c.m, c.axil, c.cnt, c.crc, c.feeding
    poll_timer, polled, rptr_next, rx_byte = c.poll_timer, c.polled, c.rptr_next, c.rx_byte
    rx_take, st, wait_cnt = c.rx_take, c.st, c.wait_cnt
    with m.State("HUNT"):
        m.d.comb += [br.rx.ready.eq(1), rptr_next.eq(0)]
        with m.If(rx_take):
            with m.If(rx_byte == SYNC):
                m.d.sync += [crc.eq(link.CRC_INIT), cnt.eq(0)]
                m.next = "HEADER"
        with m.Elif(~polled | (poll_timer == br._poll)):
            m.next = "POLL"
        with m.Else():
            m.d.sync += poll_timer.eq(poll_timer + 1)
        m.d.comb += [br.host_turn.eq(polled & ~br.rx.valid),
                     br.quiet.eq(br.host_turn & (~(st.busy | feeding) | (wait_cnt == QUIET_WAIT)))]

    with m.State("POLL"):
        m.d.comb += [axil.araddr.eq(br._regs.offset("status")), axil.arvalid.eq(1)]
        with m.If(axil.arready):
            m.next = "POLL_R"
    with m.State("POLL_R"):
        m.d.comb += axil.rready.eq(1)
        with m.If(axil.rvalid):
            m.d.sync += [st.eq(axil.rdata), polled.eq(1), poll_timer.eq(0)]
            m.next = "HUNT"


def receive_states(c):
    """HEADER, PAYLOAD (into the request buffer), CRC, then CHECK: a
    bad CRC is NAKed, a retry (same type, seq and CRC as the last answered
    request) resends the stored reply, otherwise the frame's length is
    checked against :data:`REQUESTS` (one cycle) and its first state
    follows. A byte gap longer than the timeout NAKs TRUNCATED."""
    br, m, cnt, crc, fail, fcrc, ftype = c.bridge, c.m, c.cnt, c.crc, c.fail, c.fcrc, c.ftype
    in_frame, last_crc, last_ok, last_seq = c.in_frame, c.last_crc, c.last_ok, c.last_seq
    last_type, length, nak, poll_timer = c.last_type, c.length, c.nak, c.poll_timer
    polled, req_w, rptr_next, rx_byte = c.polled, c.req_w, c.rptr_next, c.rx_byte
    rx_take, seq, status, timed_out, tx_nak = c.rx_take, c.seq, c.status, c.timed_out, c.tx_nak
    with m.State("HEADER"):           # type, seq, len_lo, len_hi
        m.d.comb += [br.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0)]
        with m.If(rx_take):
            m.d.sync += [crc.eq(crc16_byte(crc, rx_byte)), cnt.eq(cnt + 1)]
            with m.Switch(cnt):
                with m.Case(0):
                    m.d.sync += ftype.eq(rx_byte)
                with m.Case(1):
                    m.d.sync += seq.eq(rx_byte)
                with m.Case(2):
                    m.d.sync += length[:8].eq(rx_byte)
                with m.Case(3):
                    m.d.sync += [length[8:].eq(rx_byte), cnt.eq(0)]
                    with m.If(Cat(length[:8], rx_byte) > MAX_PAYLOAD):
                        nak(Status.BAD_LENGTH)
                    with m.Elif(Cat(length[:8], rx_byte) == 0):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
        with m.Elif(timed_out):
            nak(Status.TRUNCATED)
    with m.State("PAYLOAD"):
        m.d.comb += [br.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0),
                     req_w.addr.eq(cnt), req_w.data.eq(rx_byte), req_w.en.eq(rx_take)]
        with m.If(rx_take):
            m.d.sync += [crc.eq(crc16_byte(crc, rx_byte)), cnt.eq(cnt + 1)]
            with m.If(cnt + 1 == length):
                m.d.sync += cnt.eq(0)
                m.next = "CRC"
        with m.Elif(timed_out):
            nak(Status.TRUNCATED)
    with m.State("CRC"):
        m.d.comb += [br.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0)]
        with m.If(rx_take):
            m.d.sync += [crc.eq(crc16_byte(crc, rx_byte)), cnt.eq(1),
                         fcrc.eq(Cat(rx_byte, fcrc[:8]))]
            with m.If(cnt == 1):
                m.next = "CHECK"
        with m.Elif(timed_out):
            nak(Status.TRUNCATED)
    with m.State("CHECK"):
        m.d.sync += [cnt.eq(0), polled.eq(0), poll_timer.eq(0)]
        with m.If(crc != 0):
            nak(Status.BAD_CRC)
        with m.Else():
            m.d.sync += [tx_nak.eq(0), br.link_error.eq(0)]
            with m.If(last_ok & (seq == last_seq) & (ftype == last_type) &
                      (fcrc == last_crc)):
                m.next = "TX"          # a retry: send the stored reply again
            with m.Else():
                m.d.sync += [last_ok.eq(0), status.eq(Status.OK)]
                with m.Switch(ftype):
                    for kind, (bad_length, first, needs_memory) in REQUESTS.items():
                        if needs_memory and br.memory is None:
                            continue
                        with m.Case(kind):
                            with m.If(bad_length(length)):
                                fail(Status.BAD_LENGTH)
                            with m.Else():
                                m.next = first
                    with m.Default():
                        fail(Status.BAD_TYPE)


def register_states(c):
    """REG_WRITE (ADDR, then per word WDATA, AXI_W, AXI_B; a word that sets
    ``CTRL.soft_reset`` raises ``c.flush`` with its response) and
    REG_READ (ADDR, COUNT, then per word AXI_AR, AXI_R, RDATA: its four
    bytes into the reply)."""
    m, addr, aw_done, axil, bidx, collect = c.m, c.addr, c.aw_done, c.axil, c.bidx, c.collect
    cnt, fail, field, ftype, length = c.cnt, c.fail, c.field, c.ftype, c.length
    reply_byte, rptr, w_done, words = c.reply_byte, c.rptr, c.w_done, c.words
    with collect("ADDR", field, 4) as value:       # addr u32 (REG_READ: then count u16)
        m.d.sync += [addr.eq(value), cnt.eq(0)]
        with m.If(ftype == FrameType.REG_WRITE):
            m.next = "WDATA"
        with m.Else():
            m.next = "COUNT"
    with collect("WDATA", field, 4):
        m.d.sync += [cnt.eq(0), aw_done.eq(0), w_done.eq(0)]
        m.next = "AXI_W"
    with m.State("AXI_W"):
        m.d.comb += [axil.awaddr.eq(addr), axil.awvalid.eq(~aw_done),
                     axil.wdata.eq(field), axil.wstrb.eq(0xF), axil.wvalid.eq(~w_done)]
        aw = aw_done | axil.awready
        w = w_done | axil.wready
        m.d.sync += [aw_done.eq(aw), w_done.eq(w)]
        with m.If(aw & w):
            m.next = "AXI_B"
    with m.State("AXI_B"):
        m.d.comb += axil.bready.eq(1)
        with m.If(axil.bvalid):
            m.d.sync += addr.eq(addr + 4)
            m.d.comb += c.flush.eq((addr == c.bridge._regs.offset("ctrl")) &
                                   isa.CTRL(field).soft_reset)
            with m.If(rptr == length):
                m.next = "REPLY_STATUS"
            with m.Else():
                m.next = "WDATA"
    with collect("COUNT", words, 2) as count:
        m.d.sync += cnt.eq(1)              # reply bytes written (after status)
        with m.If((count == 0) | (count > link.max_read_words())):
            fail(Status.BAD_LENGTH)
        with m.Else():
            m.next = "AXI_AR"
    with m.State("AXI_AR"):
        m.d.comb += [axil.araddr.eq(addr), axil.arvalid.eq(1)]
        with m.If(axil.arready):
            m.next = "AXI_R"
    with m.State("AXI_R"):
        m.d.comb += axil.rready.eq(1)
        with m.If(axil.rvalid):
            m.d.sync += [field.eq(axil.rdata), addr.eq(addr + 4), bidx.eq(0),
                         words.eq(words - 1)]
            m.next = "RDATA"
    with m.State("RDATA"):
        reply_byte(cnt, field.word_select(bidx[:2], 8))
        m.d.sync += [cnt.eq(cnt + 1), bidx.eq(bidx + 1)]
        with m.If(bidx == 3):
            with m.If(words == 0):
                m.next = "REPLY_STATUS"
            with m.Else():
                m.next = "AXI_AR"


def reply_states(c):
    """REPLY_STATUS (the status byte, the reply remembered for a
    retry), TX (header, then payload from the reply buffer or the NAK code,
    then the CRC)."""
    br, m, cnt, fcrc, ftype, last_crc = c.bridge, c.m, c.cnt, c.fcrc, c.ftype, c.last_crc
    last_ok, last_seq, last_type, nak_code = c.last_ok, c.last_seq, c.last_type, c.nak_code
    nak_seq, rep_len, rep_r, reply_byte = c.nak_seq, c.rep_len, c.rep_r, c.reply_byte
    seq, status, tcrc, tptr, tptr_next = c.seq, c.status, c.tcrc, c.tptr, c.tptr_next
    tx_nak = c.tx_nak
    with m.State("REPLY_STATUS"):
        reply_byte(0, status)
        m.d.sync += [rep_len.eq(Mux(cnt == 0, 1, cnt)),
                     last_ok.eq(1), last_type.eq(ftype), last_seq.eq(seq),
                     last_crc.eq(fcrc)]
        m.next = "TX"
    with m.State("TX"):                 # header, payload, CRC
        m.d.comb += tptr_next.eq(0)
        m.d.sync += [cnt.eq(0), tcrc.eq(link.CRC_INIT)]
        m.next = "TX_HEADER"
    with m.State("TX_HEADER"):
        hdr = Signal(8)
        tx_len = Mux(tx_nak, 1, rep_len)
        with m.Switch(cnt):
            with m.Case(0):
                m.d.comb += hdr.eq(SYNC)
            with m.Case(1):
                m.d.comb += hdr.eq(Mux(tx_nak, FrameType.NAK, last_type | REPLY))
            with m.Case(2):
                m.d.comb += hdr.eq(Mux(tx_nak, nak_seq, last_seq))
            with m.Case(3):
                m.d.comb += hdr.eq(tx_len[:8])
            with m.Case(4):
                m.d.comb += hdr.eq(tx_len[8:])
        m.d.comb += [br.tx.valid.eq(1), br.tx.payload.eq(hdr)]
        with m.If(br.tx.ready):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(cnt != 0):
                m.d.sync += tcrc.eq(crc16_byte(tcrc, hdr))
            with m.If(cnt == 4):
                m.d.sync += cnt.eq(0)
                m.next = "TX_PAYLOAD"
    with m.State("TX_PAYLOAD"):
        pay = Mux(tx_nak, nak_code, rep_r.data)
        m.d.comb += [br.tx.valid.eq(1), br.tx.payload.eq(pay)]
        with m.If(br.tx.ready):
            m.d.comb += tptr_next.eq(tptr + 1)
            m.d.sync += tcrc.eq(crc16_byte(tcrc, pay))
            with m.If(tptr + 1 == Mux(tx_nak, 1, rep_len)):
                m.next = "TX_CRC"
    with m.State("TX_CRC"):
        m.d.comb += [br.tx.valid.eq(1),
                     br.tx.payload.eq(Mux(cnt == 0, tcrc[8:], tcrc[:8]))]
        with m.If(br.tx.ready):
            m.d.sync += cnt.eq(1)
            with m.If(cnt == 1):
                m.next = "POLL"
