"""Row movers of the accelerator's pass datapath: the small components
between the memories and the units.

* :class:`Reader` / :class:`Writer`: rows of a bank memory <-> an element
  stream (``{data, last}``, :func:`elem_stream`).
* :class:`Packer` / :class:`Unpacker`: element stream <-> words of several
  elements (engine activation blocks, AXI4-Stream transfers).
* :class:`Serializer`: an engine's result beats (``lanes`` results) -> one
  result per cycle.
* :class:`KVFetcher`: the int8 engine's weight beats out of the KV region
  (:func:`kv_address` is the region's one address map).

Every component here is started by a one-cycle ``go`` with its
configuration inputs held stable until it is done, honours backpressure on
its output stream and never waits for ``ready`` before asserting ``valid``.
"""
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from . import isa
from .arith import delay, valid_delay
from .queue import Queue

__all__ = ["KVFetcher", "Packer", "Reader", "Serializer", "Unpacker", "Writer", "bits_for",
           "elem_stream", "gated", "held_config", "join", "join_fields", "kv_address",
           "register", "stage"]


def bits_for(n):
    """Address bits for n entries (0 for n == 1)."""
    return (n - 1).bit_length()


def elem_stream(bits=16):
    """One element per beat: ``{data: signed(bits), last}`` (``last``: a
    row's final element)."""
    return stream.Signature(data.StructLayout({"data": signed(bits), "last": 1}))


def gated(m, run, cond, name):
    """``cond`` while the units run, as one flip-flop: ``run`` is the
    sequencer's (the units move from the cycle after it), ``cond`` a function
    of the pass's ``cfg``, which is stable while ``run`` is high and the cycle
    after. So the flip-flop equals ``run_r & cond`` (``run_r``: ``run``
    registered), without that AND and ``run_r``'s fan-out in front of every
    handshake it gates."""
    s = Signal(name=name)
    m.d.sync += s.eq(run & cond)
    return s


def join(m, src, dst, when):
    """Route stream ``src`` into ``dst`` while ``when`` (else both idle)."""
    with m.If(when):
        m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                     dst.payload.eq(src.payload)]


def join_fields(m, src, dst, when, *, only_source=False):
    """:func:`join` for element streams of different widths (data
    sign-extended or truncated, ``last`` passed). ``only_source``: ``src``
    is the only stream ever joined into ``dst``, so its payload is passed
    unconditionally (``when`` then gates only the handshake and stays off
    the data path)."""
    payload = [dst.payload.data.eq(src.payload.data), dst.payload.last.eq(src.payload.last)]
    if only_source:
        m.d.comb += payload
    with m.If(when):
        m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
        if not only_source:
            m.d.comb += payload


def stage(m, src, value, name, bits=16):
    """A register stage: ``src`` with its data replaced by ``value`` (a
    function of src's payload), one element per cycle, ready passed
    through, so that what computes ``value`` ends in flip-flops."""
    dst = elem_stream(bits).create(path=(name,))
    _registered(m, src, dst, [dst.payload.data.eq(value),
                              dst.payload.last.eq(src.payload.last)])
    return dst


def register(m, src, name):
    """Stream ``src`` (any payload) through one register stage, as
    :func:`stage`: a long route or a select in front of a unit then ends in
    flip-flops."""
    dst = stream.Signature(src.payload.shape()).create(path=(name,))
    _registered(m, src, dst, [dst.payload.eq(src.payload)])
    return dst


def _registered(m, src, dst, payload):
    m.d.comb += src.ready.eq(dst.ready | ~dst.valid)
    with m.If(src.ready):
        m.d.sync += [dst.valid.eq(src.valid), *payload]


def held_config(m, owner, go, *names):
    """Registers holding ``owner``'s config inputs ``names``, loaded on
    ``go`` (the config is held while a unit runs): the loop logic reads
    these, so whatever decodes the config stays off its paths. Returns a
    dict name -> register."""
    held = {name: Signal.like(getattr(owner, name), name=f"held_{name}") for name in names}
    with m.If(go):
        m.d.sync += [reg.eq(getattr(owner, name)) for name, reg in held.items()]
    return held


class Reader(wiring.Component):
    """Reads ``rows`` rows from a memory whose data arrives ``latency``
    cycles after the address (a synchronous read port, plus an output
    register when 2) into a small FIFO. A row is ``segs`` segments of ``length`` elements
    (consecutive columns; ``segs`` = 1 except for the attention passes, whose
    segments are heads); with ``pad``, each segment is extended with zeros to
    a multiple of ``blk_last + 1`` (<= ``block``) elements. ``out.last`` marks
    each segment's final element. Starts on ``go``; config held while
    running. One element per cycle; the first leaves ``latency + 1`` cycles
    after ``go``; ``row_addr`` / ``col_addr``: the element being read;
    backpressure on ``out`` pauses the reads (the FIFO keeps room for the
    elements in flight)."""

    def __init__(self, *, elem_bits, row_bits, col_bits, block=1, latency=2):
        # room for the elements in flight, and enough to stream one per cycle
        self._elem_bits, self._block, self._depth = elem_bits, block, 3 + latency
        self._latency = latency
        self._col_bits = col_bits
        super().__init__({
            "go": In(1), "base": In(row_bits), "rows": In(row_bits + 1),
            "length": In(col_bits + 1), "segs": In(8), "pad": In(1),
            "blk_last": In(range(block)),
            "row_addr": Out(row_bits + 1), "col_addr": Out(col_bits + 1),
            "rdata": In(signed(elem_bits)),
            "out": Out(elem_stream()),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        q = Queue(width=17, depth=depth)
        m.submodules.fifo = q
        active = Signal()
        r = Signal.like(self.rows)
        col = Signal(self._col_bits + bits_for(self._block) + 2)
        sbase = Signal(self._col_bits + 1)
        s = Signal.like(self.segs)
        j = Signal(range(self._block))
        row_end = Signal()
        issue = Signal()
        # col + 1 >= length, s + 1 >= segs and r + 1 == rows, kept in
        # registers (no compare's carry chain runs on into the issue logic):
        # set for the next column, segment and row.
        col_end, s_end, r_end = Signal(), Signal(), Signal()
        c = held_config(m, self, self.go, "rows", "length", "segs", "pad", "blk_last")
        length = c["length"]
        # The addresses (base + r, sbase + col) are registers of their own,
        # stepped with r and col: no adder between them and the memory.
        row_addr, col_addr = Signal.like(self.row_addr), Signal.like(self.col_addr)
        m.d.comb += [
            issue.eq(active & (q.level < depth - self._latency)),
            row_end.eq(col_end & (~c["pad"] | (j == c["blk_last"]))),
            self.row_addr.eq(row_addr),
            self.col_addr.eq(col_addr),
        ]
        with m.If(issue):
            m.d.sync += j.eq(Mux(j == c["blk_last"], 0, j + 1))
            with m.If(row_end):
                m.d.sync += [col.eq(0), j.eq(0), col_end.eq(length <= 1)]
                with m.If(s_end):
                    m.d.sync += [s.eq(0), sbase.eq(0), r.eq(r + 1), row_addr.eq(row_addr + 1),
                                 col_addr.eq(0), s_end.eq(c["segs"] <= 1),
                                 r_end.eq(r + 2 == c["rows"])]
                    with m.If(r_end):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [s.eq(s + 1), sbase.eq(sbase + length),
                                 col_addr.eq(sbase + length), s_end.eq(s + 2 >= c["segs"])]
            with m.Else():
                m.d.sync += [col.eq(col + 1), col_end.eq(col + 2 >= length),
                             col_addr.eq(col_addr + 1)]
        with m.If(self.go):
            m.d.sync += [active.eq(1), r.eq(0), col.eq(0), j.eq(0), s.eq(0), sbase.eq(0),
                         col_end.eq(self.length <= 1), s_end.eq(self.segs <= 1),
                         r_end.eq(self.rows == 1), row_addr.eq(self.base), col_addr.eq(0)]
        lat = self._latency
        v_d = issue
        for i in range(lat):            # valid bits with reset (soft reset drops them)
            v_d, prev = Signal(name=f"v_{i}"), v_d
            m.d.sync += v_d.eq(prev)
        pad_d = delay(m, col >= length, lat, name="pad")
        last_d = delay(m, row_end, lat, name="last")
        value = Signal(signed(16))
        m.d.comb += [
            value.eq(Mux(pad_d, 0, self.rdata)),
            q.w_en.eq(v_d), q.w_data.eq(Cat(value, last_d)),
            self.out.valid.eq(q.r_rdy), self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
        ]
        return m


def kv_address(is_v, row, col, *, lanes, kpc, row_bits, col_bits):
    """(word, byte) of KV-region element (``row``, ``col``): key/token row,
    channel column. K rows are stored as the int8 engine's QK^T weight beats
    (word = key block x channel block, byte = key % lanes, channel % kpc),
    V rows as its AV beats (word = channel block x token block, byte =
    channel % lanes, token % kpc), each half of the region in one memory
    word per beat (lane-major bytes, as ``Int8Engine.wgt``). ``is_v`` selects
    the V half (top address bit)."""
    lb, kb = bits_for(lanes), bits_for(kpc)
    r, c = row[:row_bits], col[:col_bits]
    k_word = Cat(c[kb:], r[lb:])
    v_word = Cat(r[kb:], c[lb:])
    word = Cat(Mux(is_v, v_word, k_word), is_v)
    byte = Mux(is_v, Cat(r[:kb], c[:lb]), Cat(c[:kb], r[:lb]))
    return word, byte


class KVFetcher(wiring.Component):
    """Weight beats of an attention pass from the KV region, one memory word
    per beat, into a small FIFO (one beat per cycle at full rate).

    Loop: ``rows`` activation rows, ``heads`` heads, ``nbs`` output blocks,
    ``kbs`` k-blocks (innermost), with ``last_k`` / ``last_n`` as the int8
    engine wants them. ATTN_QK (``qk``): word = key block ``nb`` x channel
    block ``h * hstep + kb`` of the K half; ATTN_AV: word = channel block
    ``h * hstep + nb`` x token block ``kb`` of the V half (see
    :func:`kv_address`). ``llm`` (decoder builds): inputs ``group``, query
    heads per KV head (0 or 1: one each): head ``h`` reads KV head
    ``h // group`` (``h`` above becomes that), and ``base``, the KV row of
    key / token 0 (a layer's part of the region; a multiple of ``lanes``
    and ``kpc``): key block ``nb`` and token block ``kb`` count from it.

    ``rdata`` is the word at ``addr`` ``read_latency`` cycles later; the FIFO
    holds ``depth - 1`` beats beyond the reads in flight."""

    def __init__(self, *, beat_bits, addr_bits, lanes, kpc, row_bits, col_bits, depth=4,
                 llm=False, read_latency=1):
        check_int("read_latency", read_latency, 1, 4)
        self._depth, self._lanes, self._kpc, self._llm = depth, lanes, kpc, llm
        self._read_latency = read_latency
        self._row_bits, self._col_bits = row_bits, col_bits
        cnt = isa.ROW_BITS + 1
        super().__init__({
            "go": In(1), "qk": In(1), "rows": In(cnt), "heads": In(8),
            "nbs": In(cnt), "kbs": In(cnt), "hstep": In(cnt),
            "addr": Out(addr_bits), "rdata": In(beat_bits),
            "out": Out(stream.Signature(data.StructLayout({
                "data": unsigned(beat_bits), "last_k": 1, "last_n": 1}))),
            **({"group": In(8), "base": In(isa.ROW_BITS)} if llm else {}),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth + self._read_latency - 1
        bits = len(self.rdata)
        q = Queue(width=bits + 2, depth=depth)
        m.submodules.fifo = q
        lb, kb = bits_for(self._lanes), bits_for(self._kpc)
        rb, cb = self._row_bits, self._col_bits
        active = Signal()
        t = Signal.like(self.rows)
        h = Signal(8)
        hb, nb, kbi = (Signal.like(self.nbs, name=n) for n in ("hb", "nb", "kbi"))
        issue = Signal()
        last_k, last_n = Signal(), Signal()
        # kbi + 1 == kbs, nb + 1 == nbs, h + 1 >= heads and t + 1 == rows,
        # kept in registers (set for the next kbi / nb / h / t) so that no
        # carry chain runs into the loop's enables.
        k_end, n_end, h_end, t_end = Signal(), Signal(), Signal(), Signal()
        c = held_config(m, self, self.go, "qk", "rows", "heads", "nbs", "kbs", "hstep",
                        *(("group", "base") if self._llm else ()))
        if self._llm:                   # g: head within its group; g_end: g + 1 >= group
            grp = c["group"]
            g, g_end = Signal(8, name="g"), Signal(name="g_end")
        k_first, n_first = c["kbs"] == 1, c["nbs"] == 1
        m.d.comb += [
            issue.eq(active & (q.level < depth - self._read_latency)),
            last_k.eq(k_end),
            last_n.eq(last_k & n_end),
        ]
        # hb + kbi and hb + nb are registers too, stepped with the loop.
        hk, hn = (Signal(max(len(hb) + 1, cb), name=n) for n in ("hk", "hn"))
        k_blk, v_blk = nb, kbi
        if self._llm:                   # key / token blocks from the layer's base row
            k_blk, v_blk = nb + (c["base"] >> lb), kbi + (c["base"] >> kb)
        k_word = Cat(hk[:cb - kb], k_blk[:rb - lb])
        v_word = Cat(v_blk[:rb - kb], hn[:cb - lb])
        m.d.comb += self.addr.eq(Cat(Mux(c["qk"], k_word, v_word), ~c["qk"]))
        with m.If(issue):
            with m.If(last_k):
                m.d.sync += [kbi.eq(0), k_end.eq(k_first), hk.eq(hb)]
                with m.If(last_n):
                    m.d.sync += [nb.eq(0), n_end.eq(n_first)]
                    with m.If(h_end):
                        m.d.sync += [h.eq(0), hb.eq(0), t.eq(t + 1), hk.eq(0), hn.eq(0),
                                     h_end.eq(c["heads"] <= 1), t_end.eq(t + 2 == c["rows"])]
                        if self._llm:
                            m.d.sync += [g.eq(0), g_end.eq(grp <= 1)]
                        with m.If(t_end):
                            m.d.sync += active.eq(0)
                    with m.Else():
                        m.d.sync += [h.eq(h + 1), h_end.eq(h + 2 >= c["heads"])]
                        nhb = hb + c["hstep"]
                        if self._llm:       # the next KV head after ``group`` heads
                            nhb = Mux(g_end, nhb, hb)
                            m.d.sync += [g.eq(Mux(g_end, 0, g + 1)),
                                         g_end.eq(Mux(g_end, grp <= 1, g + 2 >= grp))]
                        m.d.sync += [hb.eq(nhb), hk.eq(nhb), hn.eq(nhb)]
                with m.Else():
                    m.d.sync += [nb.eq(nb + 1), n_end.eq(nb + 2 == c["nbs"]), hn.eq(hn + 1)]
            with m.Else():
                m.d.sync += [kbi.eq(kbi + 1), k_end.eq(kbi + 2 == c["kbs"]), hk.eq(hk + 1)]
        with m.If(self.go):
            m.d.sync += [active.eq(1), t.eq(0), h.eq(0), hb.eq(0), nb.eq(0), kbi.eq(0),
                         k_end.eq(self.kbs == 1), n_end.eq(self.nbs == 1),
                         h_end.eq(self.heads <= 1), t_end.eq(self.rows == 1), hk.eq(0), hn.eq(0)]
            if self._llm:
                m.d.sync += [g.eq(0), g_end.eq(self.group <= 1)]
        v_d = valid_delay(m, issue, self._read_latency, name="kvf_v")
        flags_d = delay(m, Cat(last_k, last_n), self._read_latency, name="kvf_flags")
        m.d.comb += [
            q.w_en.eq(v_d), q.w_data.eq(Cat(self.rdata, flags_d)),
            self.out.valid.eq(q.r_rdy), self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
        ]
        return m


class Writer(wiring.Component):
    """Writes ``rows`` rows of ``length`` elements from ``inp`` (always ready
    while running) at rows ``base``...; ``done`` rises after the last write
    and stays until the next ``go``. Zero latency: ``we`` / ``wdata`` /
    the addresses are combinational from the accepted beat."""

    def __init__(self, *, elem_bits, row_bits, col_bits):
        self._elem_bits = elem_bits
        super().__init__({
            "go": In(1), "base": In(row_bits), "rows": In(row_bits + 1),
            "length": In(col_bits + 1),
            "inp": In(elem_stream()),
            "row_addr": Out(row_bits + 1), "col_addr": Out(col_bits + 1),
            "wdata": Out(signed(elem_bits)), "we": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        active = Signal()
        done = Signal()
        r = Signal.like(self.rows)
        col = Signal.like(self.length)
        accept = Signal()
        # As in the Reader: base + r and col + 1 == length kept in registers.
        row_addr, col_end = Signal.like(self.row_addr), Signal()
        c = held_config(m, self, self.go, "rows", "length")
        m.d.comb += [
            self.inp.ready.eq(active), accept.eq(self.inp.valid & active),
            self.row_addr.eq(row_addr), self.col_addr.eq(col),
            self.wdata.eq(self.inp.payload.data), self.we.eq(accept), self.done.eq(done),
        ]
        with m.If(accept):
            with m.If(col_end):
                m.d.sync += [col.eq(0), r.eq(r + 1), row_addr.eq(row_addr + 1),
                             col_end.eq(c["length"] == 1)]
                with m.If(r + 1 == c["rows"]):
                    m.d.sync += [active.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), col_end.eq(col + 2 == c["length"])]
        with m.If(self.go):
            m.d.sync += [active.eq(1), done.eq(0), r.eq(0), col.eq(0), row_addr.eq(self.base),
                         col_end.eq(self.length == 1)]
        return m


class Packer(wiring.Component):
    """Element stream -> words of ``per_word`` elements (zero-filled), a word
    sent when full or at ``last`` (which it carries). A word leaves the
    cycle after its last element; ``inp.ready`` is low while a word waits
    on ``out`` (one element per cycle otherwise)."""

    def __init__(self, elem_shape, per_word):
        self._elem_shape, self._per_word = elem_shape, per_word
        super().__init__({
            "inp": In(elem_stream()),
            "out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(elem_shape, per_word), "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        P = self._per_word
        buf = Signal(data.ArrayLayout(self._elem_shape, P))
        idx = Signal(range(P))
        full, last = Signal(), Signal()
        m.d.comb += [self.inp.ready.eq(~full), self.out.valid.eq(full),
                     self.out.payload.data.eq(buf), self.out.payload.last.eq(last)]
        with m.If(self.inp.valid & ~full):
            m.d.sync += buf[idx].eq(self.inp.payload.data)
            with m.If((idx == P - 1) | self.inp.payload.last):
                m.d.sync += [full.eq(1), idx.eq(0), last.eq(self.inp.payload.last)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [full.eq(0), buf.eq(0)]
        return m


class Unpacker(wiring.Component):
    """Words of ``per_word`` elements -> element stream, ``rows`` rows of
    ``length`` elements, each row starting on a new word (the rest of a row's
    last word is dropped); ``last`` on each row's final element. Takes words
    only between ``go`` and the end of the last row. An element leaves the
    cycle after its word arrives, then one per cycle; a word is taken when
    the previous one is done (one idle cycle per word). The word is held in
    a shift register, so the element out is a register, not a select."""

    def __init__(self, elem_shape, per_word, *, col_bits):
        self._elem_shape, self._per_word = elem_shape, per_word
        super().__init__({
            "go": In(1), "rows": In(isa.ROW_BITS), "length": In(col_bits + 1),
            "inp": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(elem_shape, per_word)}))),
            "out": Out(elem_stream()),
        })

    def elaborate(self, platform):
        m = Module()
        P = self._per_word
        shape = Shape.cast(self._elem_shape)
        word = Signal(P * shape.width)
        elem = word[:shape.width]
        idx = Signal(range(P))
        col = Signal.like(self.length)
        hold = Signal()
        active = Signal()
        r = Signal.like(self.rows)
        # col + 1 == length and r + 1 == rows kept in registers, as in the
        # Writer: no adder and compare in front of hold and active.
        row_end, last_row = Signal(), Signal()
        m.d.comb += [
            self.inp.ready.eq(~hold & active),
            self.out.valid.eq(hold),
            self.out.payload.data.eq(elem.as_signed() if shape.signed else elem),
            self.out.payload.last.eq(row_end),
        ]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [word.eq(self.inp.payload.data), hold.eq(1), idx.eq(0)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [idx.eq(idx + 1), word.eq(word >> shape.width)]
            with m.If(row_end):
                m.d.sync += [col.eq(0), hold.eq(0), r.eq(r + 1), row_end.eq(self.length == 1),
                             last_row.eq(r + 2 == self.rows)]
                with m.If(last_row):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += [col.eq(col + 1), row_end.eq(col + 2 == self.length)]
                with m.If(idx == P - 1):
                    m.d.sync += hold.eq(0)
        with m.If(self.go):
            m.d.sync += [col.eq(0), hold.eq(0), r.eq(0), active.eq(1),
                         row_end.eq(self.length == 1), last_row.eq(self.rows == 1)]
        return m


class Serializer(wiring.Component):
    """Engine ``out`` beats (``lanes`` results) -> one result per cycle;
    ``last`` on the final result of a row. The last beat of a row gives only
    its first ``keep`` results (1..lanes; the rest are padding lanes of an
    N that is not a multiple of lanes). No bubble between beats; results
    leave from the cycle after their beat arrives, honouring ``out.ready``."""

    def __init__(self, in_layout, lanes, acc_bits):
        self._lanes = lanes
        super().__init__({
            "inp": In(stream.Signature(in_layout)),
            "out": Out(elem_stream(acc_bits)),
            "keep": In(range(1, lanes + 1), init=lanes),
        })

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        beat = Signal(self.inp.payload.shape())
        idx = Signal(range(L))
        hold = Signal()
        end = Signal()
        # idx at the beat's final result, kept in a register (set one step
        # ahead), so no compare sits before inp.ready.
        final = Signal()
        m.d.comb += [
            end.eq(self.out.ready & final),
            self.inp.ready.eq(~hold | end),
            self.out.valid.eq(hold),
            self.out.payload.data.eq(beat.data[idx]),
            self.out.payload.last.eq(beat.last & final),
        ]
        with m.If(hold & self.out.ready):
            m.d.sync += [idx.eq(Mux(final, 0, idx + 1)),
                         final.eq(idx + 1 == Mux(beat.last, self.keep - 1, L - 1))]
            with m.If(end):
                m.d.sync += hold.eq(0)
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [beat.eq(self.inp.payload), hold.eq(1), idx.eq(0),
                         final.eq(Mux(self.inp.payload.last, self.keep == 1, L == 1))]
        return m
