# amaranth: UnusedElaboratable=no
"""Host link bridge: frames of :mod:`trilut.hw.link` in, AXI out.

:class:`Bridge` turns a byte stream into accesses to an accelerator's
AXI4-Lite slave and AXI4-Stream ports and answers each request frame with a
reply frame. Two tops put it in front of :class:`~trilut.hw.top.Accelerator`:

* :class:`UartAccelerator` (``uart_rx``, ``uart_tx``, ``leds``): for boards,
  through the 8N1 PHY of :mod:`trilut.hw.uart`;
* :class:`ByteAccelerator` (``rx``, ``tx`` byte streams, ``quiet``): the
  same bridge without the PHY, for fast simulation (the Verilator harness of
  :mod:`trilut.host.device` feeds it a byte per cycle).
"""
from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from . import isa, link
from .link import MAX_PAYLOAD, REPLY, SYNC, FrameType, Status, crc16_byte
from .sdram import SDRAM, SDRAM_PINS, SIM_INIT_WAIT, LiteDRAMCore
from .top import Accelerator
from .uart import UartRx, UartTx
from .weightfeed import WeightFeeder

__all__ = ["stream_ports", "Bridge", "ByteAccelerator", "UartAccelerator", "LEDS",
           "QUIET_WAIT", "MEMORY_PORTS", "FEED_QUEUE"]

#: ``leds`` bits of both tops, lowest first.
LEDS = ("busy", "done", "error", "activity", "link_error", "quiet")
#: Cycles the accelerator must wait on a stream (input empty or output full)
#: before ``quiet`` says that only the host can make it progress.
QUIET_WAIT = 256
#: The :class:`~trilut.hw.sdram.SDRAM` members a bridge with memory drives
#: (as ``mem_<name>``, flipped).
MEMORY_PORTS = ("read_cmd", "read_data", "write_cmd", "write_data", "init_error")
#: Frames the weight feeder of a bridge with memory queues (FEED).
FEED_QUEUE = 32


def stream_ports(accel):
    """``(inputs, outputs)``: the accelerator's AXI4-Stream slaves (``s_axis*``)
    and masters (``m_axis*``) as lists of ``(name, bytes per transfer)`` in
    signature order; list positions are the link's stream numbers."""
    inputs, outputs = [], []
    for name, member in accel.signature.members.items():
        if not name.startswith(("s_axis", "m_axis")):
            continue
        width = Shape.cast(member.signature.members["tdata"].shape).width
        (inputs if name.startswith("s_axis") else outputs).append((name, width // 8))
    return inputs, outputs


class Bridge(wiring.Component):
    """Frame decoder, executor and encoder in front of ``accel``'s ports.

    Members: ``rx`` (In, 8-bit stream) and ``tx`` (Out, 8-bit stream): the
    link's bytes; ``s_axil`` and every ``s_axis*`` / ``m_axis*`` member of
    ``accel``'s signature, flipped (connect them with ``wiring.connect``);
    ``busy``/``done``/``error``: ``STATUS`` of the accelerator as last
    polled; ``link_error``: the last frame was NAKed; ``activity``: a link
    byte moved in the last 2**16 cycles; ``quiet``: nothing in flight and
    only the host can cause progress (the accelerator is idle, or has been
    waiting on a stream for :data:`QUIET_WAIT` cycles) with ``STATUS``
    polled since the last request.

    Operation (one frame at a time, the host waits for each reply):
    receive a frame into a ``MAX_PAYLOAD``-byte request buffer at one byte
    per cycle (``rx.ready`` is low while a frame is executed or its reply
    sent; a gap of more than ``timeout`` cycles inside a frame discards it);
    check CRC and length; execute it (or, for a retry, skip execution); send
    the reply from the reply buffer at one byte per cycle when ``tx`` is
    ready. Execution: REG_WRITE / REG_READ one AXI4-Lite transaction per
    word (one outstanding; about 7 cycles per word against
    :class:`~trilut.hw.top.Accelerator`'s slave); STREAM_WRITE
    ``bytes + 1`` cycles per record into a per-stream FIFO of
    :func:`~trilut.hw.link.max_record_beats` transfers that feeds the
    accelerator (so a write never waits on the accelerator);
    STREAM_READ ``bytes + 2`` cycles per record from a FIFO of the same
    depth filled from the accelerator's ``m_axis*`` (buffered: the
    accelerator is stalled only when it is full; with
    :data:`~trilut.hw.link.STREAM_WAIT`, first up to ``read_wait`` cycles
    waiting for output). When idle, the bridge
    reads ``STATUS`` every ``poll_interval`` cycles and after every frame.
    Reply latency after the last CRC byte: execution + 5 header cycles.

    With ``memory`` (an :class:`~trilut.hw.sdram.SDRAM`, instantiated by
    the top) the bridge also has ``mem_read_cmd``, ``mem_read_data``,
    ``mem_write_cmd``, ``mem_write_data`` and ``mem_init_error`` (the
    SDRAM's members, flipped) and serves MEM_WRITE
    (one burst command, then 2 cycles per 16-bit word from the request
    buffer into the SDRAM's write buffer; the reply does not wait for the
    controller, whose ordering makes a later read see the data) and
    MEM_READ (one burst command, then 3 cycles per word into the reply
    buffer). A command waits for the SDRAM's initialisation; a failed one
    is answered MEM_ERROR. Without ``memory`` the bridge is unchanged
    (MEM_* are unknown types).

    With ``memory`` the bridge also holds a
    :class:`~trilut.hw.weightfeed.WeightFeeder` (queue of
    :data:`FEED_QUEUE` frames) on the memory's read port, serving FEED:
    the request is parsed twice from the request buffer (8 cycles per frame
    to check all of them, 8 more to queue them), then with
    :data:`~trilut.hw.link.FEED_START` ``CTRL.start`` is written as a
    REG_WRITE would. The accelerator's ``s_axis_wgt`` takes whole frames
    from either the feeder or the link's STREAM_WRITE buffer (the feeder
    first when both have one waiting; a frame is never interleaved).
    MEM_WRITE / MEM_READ are answered BUSY while the feeder is busy.
    """

    def __init__(self, accel, *, memory=None, timeout=1 << 16, poll_interval=256,
                 read_wait=1 << 17):
        if not isinstance(accel, Accelerator):
            raise TypeError(f"accel must be an Accelerator, not {accel!r}")
        if memory is not None and not isinstance(memory, SDRAM):
            raise TypeError(f"memory must be an SDRAM or None, not {memory!r}")
        if memory is not None and memory.core.data_bits != 8 * link.MEM_ALIGN:
            raise ValueError(f"the memory's words must be {8 * link.MEM_ALIGN} bits "
                             f"(link.MEM_ALIGN), not {memory.core.data_bits}")
        burst = link.max_mem_read_bytes() // link.MEM_ALIGN
        if memory is not None and memory.max_burst < burst:
            raise ValueError(f"the memory's max_burst must be >= {burst} words (a whole "
                             f"MEM_READ), not {memory.max_burst}")
        self._timeout = check_int("timeout", timeout, 16)
        self._poll = check_int("poll_interval", poll_interval, 4)
        self._read_wait = check_int("read_wait", read_wait, 1)
        self._regs = accel.regs
        self._inputs, self._outputs = stream_ports(accel)
        self._memory = memory
        self._feeder = None
        if memory is not None:
            wgt = dict(self._inputs).get("s_axis_wgt")
            if wgt is None:
                raise ValueError("a bridge with memory feeds s_axis_wgt; the accelerator has none")
            self._feeder = WeightFeeder(addr_bits=memory.core.addr_bits, out_bytes=wgt,
                                        word_bits=memory.core.data_bits,
                                        max_burst=memory.max_burst, queue=FEED_QUEUE)
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                   "busy": Out(1), "done": Out(1), "error": Out(1), "link_error": Out(1),
                   "activity": Out(1), "quiet": Out(1)}
        for name, member in accel.signature.members.items():
            if name == "s_axil" or name.startswith(("s_axis", "m_axis")):
                members[name] = member.flip()
        if memory is not None:
            for name in MEMORY_PORTS:
                members[f"mem_{name}"] = memory.signature.members[name].flip()
        super().__init__(members)

    inputs = property(lambda self: list(self._inputs), doc="input streams (name, bytes)")
    outputs = property(lambda self: list(self._outputs), doc="output streams (name, bytes)")
    timeout = property(lambda self: self._timeout, doc="inter-byte timeout in cycles")
    memory = property(lambda self: self._memory, doc="the SDRAM served by MEM_* (or None)")
    feeder = property(lambda self: self._feeder, doc="the weight feeder (with memory) or None")

    @property
    def memory_bytes(self):
        """Bytes MEM_WRITE / MEM_READ can reach (0: no memory)."""
        m = self._memory
        return 0 if m is None else m.core.words * m.core.data_bits // 8

    def elaborate(self, platform):
        m = Module()
        axil = self.s_axil
        ptr_shape = range(MAX_PAYLOAD + 1)

        # --- buffers ------------------------------------------------------------
        m.submodules.req = req = memory.Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        m.submodules.rep = rep = memory.Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        req_w, req_r = req.write_port(), req.read_port()
        rep_w, rep_r = rep.write_port(), rep.read_port()
        # Read-ahead: the port's address is the pointer's next value, so its
        # data is always the byte at the pointer.
        rptr, rptr_next = Signal(ptr_shape), Signal(ptr_shape)
        tptr, tptr_next = Signal(ptr_shape), Signal(ptr_shape)
        m.d.comb += [rptr_next.eq(rptr), tptr_next.eq(tptr),
                     req_r.addr.eq(rptr_next), rep_r.addr.eq(tptr_next)]
        m.d.sync += [rptr.eq(rptr_next), tptr.eq(tptr_next)]
        byte = req_r.data

        # --- stream FIFOs -----------------------------------------------------------
        max_bytes = max(b for _, b in self._inputs + self._outputs)
        in_fifos, out_fifos = [], []
        waiting = []
        feeder = self._feeder
        if feeder is not None:
            m.submodules.feeder = feeder
        for i, (name, nb) in enumerate(self._inputs):
            q = fifo.SyncFIFOBuffered(width=8 * nb + 1, depth=link.max_record_beats(nb))
            m.submodules[f"in{i}"] = q
            port = getattr(self, name)
            if feeder is not None and name == "s_axis_wgt":
                _merge_frames(m, port, feeder.out, q, nb, feeder.abort)
                waiting.append(feeder.out.tvalid & ~feeder.out.tready)
            else:
                m.d.comb += [port.tvalid.eq(q.r_rdy), port.tdata.eq(q.r_data[:8 * nb]),
                             port.tlast.eq(q.r_data[8 * nb]), q.r_en.eq(port.tready)]
            waiting.append(port.tready & ~port.tvalid)
            in_fifos.append((q, nb))
        for j, (name, nb) in enumerate(self._outputs):
            q = fifo.SyncFIFOBuffered(width=8 * nb + 1, depth=link.max_record_beats(nb))
            m.submodules[f"out{j}"] = q
            port = getattr(self, name)
            m.d.comb += [q.w_en.eq(port.tvalid), q.w_data.eq(Cat(port.tdata, port.tlast)),
                         port.tready.eq(q.w_rdy)]
            waiting.append(port.tvalid & ~port.tready)
            out_fifos.append((q, nb))

        # --- registers ------------------------------------------------------------
        crc = Signal(16)                  # receive CRC
        tcrc = Signal(16)                 # transmit CRC
        ftype, seq = Signal(8), Signal(8)
        length = Signal(16)
        fcrc = Signal(16)                 # the request's CRC bytes (retry detection)
        cnt = Signal(ptr_shape)
        gap = Signal(range(self._timeout + 1))
        last_ok, last_type, last_seq, last_crc = Signal(), Signal(8), Signal(8), Signal(16)
        rep_len = Signal(ptr_shape)
        tx_nak, nak_code, nak_seq = Signal(), Signal(8), Signal(8)
        field = Signal(32)                # little-endian field assembly
        addr = Signal(32)
        words = Signal(16)
        sel = Signal(8)                   # stream number (STREAM_WAIT stripped)
        read_wait = Signal()
        waited = Signal(range(self._read_wait + 1))
        gap_cnt = Signal(range(link.READ_GAP + 1))
        beat = Signal(8 * max_bytes)
        beat_last = Signal()
        bidx = Signal(range(max_bytes + 1))
        status = Signal(8)
        free = Signal(16)
        aw_done, w_done = Signal(), Signal()
        polled = Signal()                 # STATUS read since the last request
        poll_timer = Signal(range(self._poll + 1))
        st = Signal(isa.STATUS)
        act = Signal(16)
        wait_cnt = Signal(range(QUIET_WAIT + 1))

        m.d.comb += [self.busy.eq(st.busy), self.done.eq(st.done), self.error.eq(st.error),
                     self.activity.eq(act != 0)]
        with m.If((self.rx.valid & self.rx.ready) | (self.tx.valid & self.tx.ready)):
            m.d.sync += act.eq(-1)
        with m.Elif(act != 0):
            m.d.sync += act.eq(act - 1)
        any_wait = Signal()
        m.d.comb += any_wait.eq(Cat(*waiting).any() if waiting else 0)
        feeding = Signal()                # the feeder is busy / moved a word this cycle
        feed_moved = Signal()
        if feeder is not None:
            m.d.comb += [feeding.eq(feeder.busy),
                         feed_moved.eq(feeder.read_data.valid & feeder.read_data.ready)]
        with m.If(~any_wait | feed_moved):
            m.d.sync += wait_cnt.eq(0)
        with m.Elif(wait_cnt != QUIET_WAIT):
            m.d.sync += wait_cnt.eq(wait_cnt + 1)

        rx_byte = self.rx.payload
        rx_take = Signal()
        m.d.comb += rx_take.eq(self.rx.valid & self.rx.ready)

        def reply_byte(index, value):
            m.d.comb += [rep_w.addr.eq(index), rep_w.data.eq(value), rep_w.en.eq(1)]

        def take():
            m.d.comb += rptr_next.eq(rptr + 1)

        def fail(code):
            m.d.sync += status.eq(code)
            m.next = "REPLY_STATUS"

        def nak(code):
            m.d.sync += [tx_nak.eq(1), nak_code.eq(code), nak_seq.eq(seq),
                         self.link_error.eq(1)]
            m.next = "TX"

        in_frame = Signal()
        with m.If(rx_take):
            m.d.sync += gap.eq(0)
        with m.Elif(in_frame & (gap != self._timeout)):
            m.d.sync += gap.eq(gap + 1)
        timed_out = in_frame & (gap == self._timeout)

        # The memory's read port: the feeder's, but in the MEM_READ states.
        bridge_reads = Signal()
        if feeder is not None:
            m.d.comb += [self.mem_read_cmd.valid.eq(feeder.read_cmd.valid),
                         self.mem_read_cmd.payload.eq(feeder.read_cmd.payload),
                         feeder.read_cmd.ready.eq(self.mem_read_cmd.ready & ~bridge_reads),
                         feeder.read_data.valid.eq(self.mem_read_data.valid & ~bridge_reads),
                         feeder.read_data.payload.eq(self.mem_read_data.payload),
                         self.mem_read_data.ready.eq(feeder.read_data.ready & ~bridge_reads)]

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.rx.ready.eq(1), rptr_next.eq(0)]
                with m.If(rx_take):
                    with m.If(rx_byte == SYNC):
                        m.d.sync += [crc.eq(link.CRC_INIT), cnt.eq(0)]
                        m.next = "HEADER"
                with m.Elif(~polled | (poll_timer == self._poll)):
                    m.next = "POLL"
                with m.Else():
                    m.d.sync += poll_timer.eq(poll_timer + 1)
                m.d.comb += self.quiet.eq(polled & ~self.rx.valid &
                                          (~(st.busy | feeding) | (wait_cnt == QUIET_WAIT)))

            with m.State("POLL"):
                m.d.comb += [axil.araddr.eq(self._regs.offset("status")), axil.arvalid.eq(1)]
                with m.If(axil.arready):
                    m.next = "POLL_R"
            with m.State("POLL_R"):
                m.d.comb += axil.rready.eq(1)
                with m.If(axil.rvalid):
                    m.d.sync += [st.eq(axil.rdata), polled.eq(1), poll_timer.eq(0)]
                    m.next = "HUNT"

            # --- receive ---------------------------------------------------------------
            with m.State("HEADER"):           # type, seq, len_lo, len_hi
                m.d.comb += [self.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0)]
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
                m.d.comb += [self.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0),
                             req_w.addr.eq(cnt), req_w.data.eq(rx_byte), req_w.en.eq(rx_take)]
                with m.If(rx_take):
                    m.d.sync += [crc.eq(crc16_byte(crc, rx_byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt + 1 == length):
                        m.d.sync += cnt.eq(0)
                        m.next = "CRC"
                with m.Elif(timed_out):
                    nak(Status.TRUNCATED)
            with m.State("CRC"):
                m.d.comb += [self.rx.ready.eq(1), in_frame.eq(1), rptr_next.eq(0)]
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
                    m.d.sync += [tx_nak.eq(0), self.link_error.eq(0)]
                    with m.If(last_ok & (seq == last_seq) & (ftype == last_type) &
                              (fcrc == last_crc)):
                        m.next = "TX"          # a retry: send the stored reply again
                    with m.Else():
                        m.d.sync += [last_ok.eq(0), status.eq(Status.OK)]
                        with m.Switch(ftype):
                            with m.Case(FrameType.REG_WRITE):
                                with m.If((length < 8) | (length[:2] != 0)):
                                    fail(Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "ADDR"
                            with m.Case(FrameType.REG_READ):
                                with m.If(length != 6):
                                    fail(Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "ADDR"
                            with m.Case(FrameType.STREAM_WRITE):
                                with m.If(length < 3):
                                    fail(Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "STREAM_HDR"
                            with m.Case(FrameType.STREAM_READ):
                                with m.If(length != 3):
                                    fail(Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "STREAM_HDR"
                            if self._memory is not None:
                                with m.Case(FrameType.MEM_WRITE):
                                    with m.If(length < 4 + link.MEM_ALIGN):
                                        fail(Status.BAD_LENGTH)
                                    with m.Else():
                                        m.next = "MEM_ADDR"
                                with m.Case(FrameType.MEM_READ):
                                    with m.If(length != 6):
                                        fail(Status.BAD_LENGTH)
                                    with m.Else():
                                        m.next = "MEM_ADDR"
                                with m.Case(FrameType.FEED):
                                    with m.If(length[:3] != 1):     # 1 + 8n bytes
                                        fail(Status.BAD_LENGTH)
                                    with m.Else():
                                        m.next = "FEED_FLAGS"
                            with m.Default():
                                fail(Status.BAD_TYPE)

            # --- register access -------------------------------------------------------
            with m.State("ADDR"):              # addr u32 (REG_READ: then count u16)
                take()
                m.d.sync += [field.eq(Cat(field[8:], byte)), cnt.eq(cnt + 1)]
                with m.If(cnt == 3):
                    m.d.sync += [addr.eq(Cat(field[8:], byte)), cnt.eq(0)]
                    with m.If(ftype == FrameType.REG_WRITE):
                        m.next = "WDATA"
                    with m.Else():
                        m.next = "COUNT"
            with m.State("WDATA"):
                take()
                m.d.sync += [field.eq(Cat(field[8:], byte)), cnt.eq(cnt + 1)]
                with m.If(cnt == 3):
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
                    with m.If(rptr == length):
                        m.next = "REPLY_STATUS"
                    with m.Else():
                        m.next = "WDATA"
            with m.State("COUNT"):
                take()
                m.d.sync += [words.eq(Cat(words[8:], byte)), cnt.eq(cnt + 1)]
                with m.If(cnt == 1):
                    m.d.sync += cnt.eq(1)          # reply bytes written (after status)
                    count = Cat(words[8:], byte)
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

            # --- streams ------------------------------------------------------------------
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
                        m.next = "STREAM_CHECK"
            with m.State("STREAM_CHECK"):
                ok_len, room = Signal(), Signal()
                with m.If(ftype == FrameType.STREAM_WRITE):
                    with m.Switch(sel):
                        for i, (q, nb) in enumerate(in_fifos):
                            with m.Case(i):
                                m.d.comb += [
                                    ok_len.eq(length == 3 + words * link.record_bytes(nb)),
                                    room.eq(words <= q.depth - q.level)]
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
                m.d.sync += [waited.eq(waited + (waited != self._read_wait)),
                             gap_cnt.eq(Mux(arrived, 0, gap_cnt + (gap_cnt != link.READ_GAP)))]
                with m.If((level >= words) | ((level != 0) & (gap_cnt == link.READ_GAP)) |
                          ((level == 0) & (waited == self._read_wait))):
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

            # --- reply ------------------------------------------------------------------
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
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(hdr)]
                with m.If(self.tx.ready):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt != 0):
                        m.d.sync += tcrc.eq(crc16_byte(tcrc, hdr))
                    with m.If(cnt == 4):
                        m.d.sync += cnt.eq(0)
                        m.next = "TX_PAYLOAD"
            with m.State("TX_PAYLOAD"):
                pay = Mux(tx_nak, nak_code, rep_r.data)
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(pay)]
                with m.If(self.tx.ready):
                    m.d.comb += tptr_next.eq(tptr + 1)
                    m.d.sync += tcrc.eq(crc16_byte(tcrc, pay))
                    with m.If(tptr + 1 == Mux(tx_nak, 1, rep_len)):
                        m.next = "TX_CRC"
            with m.State("TX_CRC"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(Mux(cnt == 0, tcrc[8:], tcrc[:8]))]
                with m.If(self.tx.ready):
                    m.d.sync += cnt.eq(1)
                    with m.If(cnt == 1):
                        m.next = "POLL"

            # --- external memory (only with memory) --------------------------------------
            if self._memory is not None:
                mem_len = Signal(16)          # data bytes of the request
                mem_word = Signal(8 * link.MEM_ALIGN)
                mem_last = Signal()
                wcmd, wdata = self.mem_write_cmd, self.mem_write_data
                rcmd, rdata = self.mem_read_cmd, self.mem_read_data
                with m.State("MEM_ADDR"):      # addr u32 (MEM_READ: then count u16)
                    take()
                    m.d.sync += [field.eq(Cat(field[8:], byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt == 3):
                        m.d.sync += [addr.eq(Cat(field[8:], byte)), cnt.eq(0),
                                     mem_len.eq(length - 4)]
                        with m.If(ftype == FrameType.MEM_READ):
                            m.next = "MEM_COUNT"
                        with m.Else():
                            m.next = "MEM_CHECK"
                with m.State("MEM_COUNT"):
                    take()
                    m.d.sync += [mem_len.eq(Cat(mem_len[8:], byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt == 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "MEM_CHECK"
                with m.State("MEM_CHECK"):
                    align = (link.MEM_ALIGN - 1).bit_length()
                    with m.If(self.mem_init_error):
                        fail(Status.MEM_ERROR)
                    with m.Elif(feeder.busy):
                        fail(Status.BUSY)
                    with m.Elif((ftype == FrameType.MEM_READ) &
                                ((mem_len == 0) | (mem_len > link.max_mem_read_bytes()))):
                        fail(Status.BAD_LENGTH)
                    with m.Elif((addr[:align] != 0) | (mem_len[:align] != 0) |
                                (addr + mem_len > self.memory_bytes)):
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
                    with m.If(self.mem_init_error):
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
                self._feed_states(m, feeder, take, fail, byte, length, rptr_next, cnt, words,
                                  addr, field, aw_done, w_done, status)
        return m

    def _feed_states(self, m, feeder, take, fail, byte, length, rptr_next, cnt, frames, addr,
                     field, aw_done, w_done, status):
        """FEED (inside the bridge's FSM): flags, an optional abort, then the
        frame descriptors read twice, checked and then queued; CTRL.start
        through the register-write states."""
        nb = dict(self._inputs)["s_axis_wgt"]
        align = (link.MEM_ALIGN - 1).bit_length()
        flags, desc, pushing = Signal(8), Signal(8 * link.FEED_FRAME_BYTES), Signal()
        n_frames = (length - 1) >> (link.FEED_FRAME_BYTES - 1).bit_length()
        with m.State("FEED_FLAGS"):
            take()
            m.d.sync += [flags.eq(byte), cnt.eq(0), pushing.eq(0), frames.eq(n_frames)]
            with m.If(self.mem_init_error):
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
        with m.State("FEED_READ"):             # one descriptor, byte by byte
            take()
            m.d.sync += [desc.eq(Cat(desc[8:], byte)), cnt.eq(cnt + 1)]
            with m.If(cnt == link.FEED_FRAME_BYTES - 1):
                m.d.sync += cnt.eq(0)
                m.next = "FEED_TEST"
        with m.State("FEED_TEST"):             # first pass: check; second: queue
            f_addr, f_len = desc[:32], desc[32:]
            with m.If(~pushing):
                with m.If((f_len == 0) | (f_len[:(nb - 1).bit_length()] != 0)):
                    fail(Status.BAD_LENGTH)
                with m.Elif((f_addr[:align] != 0) | (f_addr + f_len > self.memory_bytes)):
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
                m.d.sync += [addr.eq(self._regs.offset("ctrl")), aw_done.eq(0), w_done.eq(0),
                             field.eq(isa.CTRL.const({"start": 1}).as_value().value)]
                m.next = "AXI_W"
            with m.Else():
                m.next = "REPLY_STATUS"


class ByteAccelerator(wiring.Component):
    """:class:`~trilut.hw.top.Accelerator` (built from ``accel_params``)
    behind a :class:`Bridge`, without a PHY: ``rx`` / ``tx`` are the link's
    byte streams (one byte per cycle at most), ``quiet`` is the bridge's
    (the Verilator harness stops clocking while it is high and no byte is
    pending), ``leds`` as :data:`LEDS`. ``timeout``: the bridge's
    inter-byte timeout in cycles.

    ``sdram``: False (default: no external memory, MEM_* refused as unknown
    types), True (the ULX3S SDRAM's ``--sim`` LiteDRAM core at the board
    clock, generated by :func:`trilut.gen.litedram.generate`: LiteDRAM's
    SDRAM model inside, no extra ports), or a
    :class:`~trilut.hw.sdram.LiteDRAMCore` (a board core adds the SDRAM
    pins ``sdram_a`` ... ``sdram_dq`` of :data:`~trilut.hw.sdram.SDRAM_PINS`).
    The SDRAM (burst streams of up to 512 words) sits behind the bridge,
    which serves MEM_WRITE / MEM_READ from it; the accelerator is
    unchanged."""

    def __init__(self, *, timeout=4096, sdram=False, **accel_params):
        self._accel = Accelerator(**accel_params)
        self._timeout = timeout
        self._sdram = _bridge_sdram(sdram)
        self._bridge = Bridge(self._accel, memory=self._sdram, timeout=timeout)
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                   "quiet": Out(1), "leds": Out(8)}
        if self._sdram is not None and not self._sdram.core.sim:
            members.update({f"sdram_{name}": (Out if d == "o" else In)(width)
                            for name, (width, d) in SDRAM_PINS.items()})
        super().__init__(members)

    accel = property(lambda self: self._accel, doc="the accelerator (params, regs, host helpers)")
    bridge = property(lambda self: self._bridge)
    sdram = property(lambda self: self._sdram, doc="the SDRAM behind the bridge (or None)")

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = self._accel
        m.submodules.bridge = bridge = self._bridge
        _connect_accel(m, bridge, accel)
        if self._sdram is not None:
            m.submodules.sdram = sdram = self._sdram
            _connect_memory(m, bridge, sdram)
            if not sdram.core.sim:
                for name, (_, d) in SDRAM_PINS.items():
                    outer, inner = getattr(self, f"sdram_{name}"), getattr(sdram, f"sdram_{name}")
                    m.d.comb += outer.eq(inner) if d == "o" else inner.eq(outer)
        wiring.connect(m, wiring.flipped(self.rx), bridge.rx)
        wiring.connect(m, bridge.tx, wiring.flipped(self.tx))
        m.d.comb += [self.quiet.eq(bridge.quiet), self.leds.eq(_leds(bridge, bridge.quiet))]
        return m


class UartAccelerator(wiring.Component):
    """:class:`~trilut.hw.top.Accelerator` behind a :class:`Bridge` and the
    8N1 UART PHY (:mod:`trilut.hw.uart`) at ``baud`` from a ``clk_hz``
    clock. Ports: ``uart_rx`` (In 1, idle high), ``uart_tx`` (Out 1),
    ``leds`` (Out 8, :data:`LEDS`; ``quiet`` also requires both PHYs idle).

    A 16-byte FIFO sits between the receiver and the bridge (the UART has
    no flow control; a byte arriving while the FIFO is full is lost, which
    the link's CRC detects). The bridge's inter-byte timeout is
    ``timeout`` cycles (default: 10 ms of ``clk_hz``, at least 40 bit
    periods). Throughput: one byte per 10 bit periods each way.

    ``sdram``: as :class:`ByteAccelerator`'s (False, True or a
    :class:`~trilut.hw.sdram.LiteDRAMCore`); a board core's SDRAM pins are
    not ports of this component (its contract stays the board top's UART
    one): the board top hands its requested ``sdram`` resource to
    :meth:`attach_sdram` before elaboration.
    """

    def __init__(self, clk_hz, baud, *, timeout=None, sdram=False, **accel_params):
        self._rx = UartRx(clk_hz, baud)
        self._tx = UartTx(clk_hz, baud)
        if timeout is None:
            timeout = max(clk_hz // 100, 40 * self._rx.divisor)
        self._accel = Accelerator(**accel_params)
        self._sdram = _bridge_sdram(sdram)
        self._bridge = Bridge(self._accel, memory=self._sdram, timeout=timeout)
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
                          "leds": Out(8)})

    accel = property(lambda self: self._accel)
    bridge = property(lambda self: self._bridge)
    sdram = property(lambda self: self._sdram, doc="the SDRAM behind the bridge (or None)")

    def attach_sdram(self, pins):
        """Connect the board core's SDRAM to ``pins`` (an amaranth-boards
        ``sdram`` resource requested with ``dir="-"``)."""
        if self._sdram is None or self._sdram.core.sim:
            raise ValueError("this UartAccelerator has no board SDRAM core to attach")
        self._sdram.pins = pins
    divisor = property(lambda self: self._rx.divisor, doc="clock cycles per UART bit")

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = self._accel
        m.submodules.bridge = bridge = self._bridge
        m.submodules.uart_rx = rx = self._rx
        m.submodules.uart_tx = tx = self._tx
        m.submodules.rx_fifo = q = fifo.SyncFIFOBuffered(width=8, depth=16)
        _connect_accel(m, bridge, accel)
        if self._sdram is not None:
            m.submodules.sdram = sdram = self._sdram
            _connect_memory(m, bridge, sdram)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx),
                     q.w_data.eq(rx.out.payload), q.w_en.eq(rx.out.valid),
                     rx.out.ready.eq(1),
                     bridge.rx.valid.eq(q.r_rdy), bridge.rx.payload.eq(q.r_data),
                     q.r_en.eq(bridge.rx.ready)]
        wiring.connect(m, bridge.tx, tx.inp)
        quiet = bridge.quiet & ~rx.busy & ~q.r_rdy & ~tx.busy & ~rx.out.valid
        m.d.comb += self.leds.eq(_leds(bridge, quiet))
        return m


def _bridge_sdram(sdram):
    """The SDRAM behind a bridge for a top's ``sdram`` argument (see
    :class:`ByteAccelerator`), or None."""
    if sdram is True:
        from ..gen.litedram import generate       # gen imports hw: import at use
        sdram = generate(sim=True)
    if sdram is False:
        return None
    if not isinstance(sdram, LiteDRAMCore):
        raise TypeError(f"sdram must be False, True or a LiteDRAMCore, not {sdram!r}")
    return SDRAM(sdram, init_wait_cycles=SIM_INIT_WAIT if sdram.sim else None,
                 max_burst=1 << (link.max_mem_read_bytes() // link.MEM_ALIGN - 1).bit_length())


def _connect_memory(m, bridge, sdram):
    for name in MEMORY_PORTS:
        ours, theirs = getattr(bridge, f"mem_{name}"), getattr(sdram, name)
        if isinstance(ours, Signal):          # init_error
            m.d.comb += ours.eq(theirs)
        else:
            wiring.connect(m, ours, theirs)


def _merge_frames(m, port, feed, q, nb, abort):
    """``port`` (an accelerator's AXI4-Stream input) takes whole frames from
    the feeder's ``feed`` or the link FIFO ``q`` (``nb``-byte transfers plus
    tlast): the feeder's when both have a frame waiting; a frame in progress
    keeps its source until ``tlast`` (or the feeder's abort)."""
    locked, from_feed = Signal(), Signal()
    use_feed = Signal()
    m.d.comb += use_feed.eq(Mux(locked, from_feed, feed.tvalid))
    m.d.comb += [port.tvalid.eq(Mux(use_feed, feed.tvalid, q.r_rdy)),
                 port.tdata.eq(Mux(use_feed, feed.tdata, q.r_data[:8 * nb])),
                 port.tlast.eq(Mux(use_feed, feed.tlast, q.r_data[8 * nb])),
                 feed.tready.eq(port.tready & use_feed), q.r_en.eq(port.tready & ~use_feed)]
    with m.If(port.tvalid & port.tready):
        m.d.sync += [locked.eq(~port.tlast), from_feed.eq(use_feed)]
    with m.If(abort):
        m.d.sync += locked.eq(0)


def _connect_accel(m, bridge, accel):
    for name in ["s_axil"] + [n for n, _ in bridge.inputs + bridge.outputs]:
        wiring.connect(m, getattr(bridge, name), getattr(accel, name))


def _leds(bridge, quiet):
    bits = {"busy": bridge.busy, "done": bridge.done, "error": bridge.error,
            "activity": bridge.activity, "link_error": bridge.link_error, "quiet": quiet}
    return Cat(*(bits[name] for name in LEDS))
