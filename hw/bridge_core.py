# amaranth: UnusedElaboratable=no
"""The host link bridge: frames of :mod:`trilut.hw.link` in, AXI out.

:class:`Bridge` holds the request and reply buffers, the per-stream FIFOs
and the registers of one frame FSM; its states are built by three modules,
one job each:

* :mod:`~trilut.hw.bridge_frame`: idle (SYNC hunt, STATUS polling), frame
  reception, the CRC / retry / per-type length check (one table,
  :data:`~trilut.hw.bridge_frame.REQUESTS`), REG_WRITE / REG_READ, the
  reply;
* :mod:`~trilut.hw.bridge_stream`: STREAM_WRITE / STREAM_READ;
* :mod:`~trilut.hw.bridge_mem`: MEM_WRITE / MEM_READ and FEED (only with
  an external memory).

The tops that put a bridge in front of the accelerator are in
:mod:`trilut.hw.bridge`.
"""
from contextlib import contextmanager
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Shape, Signal
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from . import isa, link
from .bridge_frame import QUIET_WAIT, idle_states, receive_states, register_states, reply_states
from .bridge_mem import feed_states, memory_states
from .bridge_stream import stream_states
from .link import MAX_PAYLOAD
from .sdram import SDRAM
from .top import Accelerator
from .weightfeed import WeightFeeder

__all__ = ["stream_ports", "Bridge", "LEDS", "QUIET_WAIT", "MEMORY_PORTS", "FEED_QUEUE"]

#: ``leds`` bits of both tops, lowest first.
LEDS = ("busy", "done", "error", "activity", "link_error", "quiet")
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
    polled since the last request; ``host_turn``: the bridge waits between
    frames with ``STATUS`` polled since the last one (the host's move: a
    host waits for each reply, so nothing it sends is in flight).

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
    waiting for output). A REG_WRITE of ``CTRL.soft_reset`` empties every
    stream FIFO when the accelerator's reset is over (its write response):
    input the accelerator had not taken and output the host had not read
    belong to the stopped run, and would otherwise go to the next one.
    When idle, the bridge
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
                   "activity": Out(1), "quiet": Out(1), "host_turn": Out(1)}
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
        flush = Signal()                  # a soft reset went through: empty the FIFOs
        in_fifos, out_fifos = [], []
        waiting = []
        feeder = self._feeder
        if feeder is not None:
            m.submodules.feeder = feeder
        for i, (name, nb) in enumerate(self._inputs):
            q = fifo.SyncFIFOBuffered(width=8 * nb + 1, depth=link.max_record_beats(nb))
            m.submodules[f"in{i}"] = ResetInserter(flush)(q)
            port = getattr(self, name)
            if feeder is not None and name == "s_axis_wgt":
                _merge_frames(m, port, feeder.out, q, nb, feeder.abort | flush)
                waiting.append(feeder.out.tvalid & ~feeder.out.tready)
            else:
                m.d.comb += [port.tvalid.eq(q.r_rdy), port.tdata.eq(q.r_data[:8 * nb]),
                             port.tlast.eq(q.r_data[8 * nb]), q.r_en.eq(port.tready)]
            waiting.append(port.tready & ~port.tvalid)
            in_fifos.append((q, nb))
        for j, (name, nb) in enumerate(self._outputs):
            q = fifo.SyncFIFOBuffered(width=8 * nb + 1, depth=link.max_record_beats(nb))
            m.submodules[f"out{j}"] = ResetInserter(flush)(q)
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

        @contextmanager
        def collect(state, reg, n):
            """State ``state`` takes ``n`` request bytes, one a cycle, into
            ``reg`` (shifted in from the top: little-endian), counting in
            ``cnt``; the body runs in the cycle of the last byte, given the
            whole field (``reg`` holds it from the next cycle)."""
            with m.State(state):
                take()
                m.d.sync += [reg.eq(Cat(reg[8:], byte)), cnt.eq(cnt + 1)]
                with m.If(cnt == n - 1):
                    yield Cat(reg[8:], byte)

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


        # The state builders see every buffer, FIFO list, register and helper
        # above by name (c.<name>), and the bridge as c.bridge.
        c = SimpleNamespace(bridge=self, **{k: v for k, v in locals().items() if k != "self"})
        with m.FSM():
            idle_states(c)
            receive_states(c)
            register_states(c)
            stream_states(c)
            reply_states(c)
            if self._memory is not None:
                memory_states(c)
                feed_states(c)
        return m


def _merge_frames(m, port, feed, q, nb, abort):
    """``port`` (an accelerator's AXI4-Stream input) takes whole frames from
    the feeder's ``feed`` or the link FIFO ``q`` (``nb``-byte transfers plus
    tlast): the feeder's when both have a frame waiting; a frame in progress
    keeps its source until ``tlast`` (or ``abort``: the feeder's abort, or a
    soft reset, which empties ``q``)."""
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
