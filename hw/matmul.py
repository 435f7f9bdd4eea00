"""Ternary matrix-vector engines: table lookup (TLMM) and the direct adder tree.

Both engines compute ``y[n] = sum_k a[k] * w[k, n]`` for int8 activations and
ternary weights, behind one interface, at the same peak rate of
``lanes * tables * group`` ternary MACs per cycle, so that they can be
compared in one run. They differ only in what they keep per activation row
and in each lane's datapath:

* :class:`TLMMEngine` builds, for every group of ``group`` activations, the
  table of all signed sums of the group (SPEC section 3, encodings as in
  :mod:`trilut.golden.tlmm`). One builder per table slot computes
  ``build_rate`` entries per cycle and writes them, as one memory word, to
  every lane's copy of that table; each lane then reads ``tables`` entries
  per cycle, addressed by the weight codes (word, then entry within the
  word), and adds them up.
* :class:`DirectEngine` keeps the activations themselves and forms each of
  the ``tables * group`` products per lane as ``+a``, ``-a`` or 0 (XOR with
  the sign plus a correction count, no multiplexer), then adds them up.

Streams (Amaranth ``lib.stream``, valid/ready, payloads are struct layouts)
for one activation row of K <= ``max_k`` elements, with ``KB =
ceil(K / (tables * group))`` k-blocks and ``NB`` output blocks of ``lanes``
outputs each:

* ``act``: KB beats, ``data`` holds ``tables * group`` activations of k-block
  kb (zero-padded past K), ``last`` set on the final beat.
* ``wgt``: NB * KB beats, output block outer, k-block inner; ``codes`` holds
  the codes of weights ``w[kb*TG:(kb+1)*TG, nb*L:(nb+1)*L]`` (lane-major:
  lane l's codes first), ``last_k`` set on kb == KB-1, ``last_n`` also set on
  the row's final beat.
* ``out``: NB beats, ``data[l] = y[nb*lanes + l]``, ``last`` on the final.

The stream control, host-side beat builders and output FIFO are
:class:`~trilut.hw.rowengine.RowEngine`'s, shared with the int8 engine.
Rows follow back to back. The row store is double-buffered: the next row's
``act`` beats are taken while the current row computes, so the weight stream
runs at one beat per cycle as long as the next row's store is ready in time
(TLMM: ``build_words = ceil(entries / build_rate)`` cycles per k-block, so
rows with at least ``build_words`` output blocks are bound by the weight
reads; direct: one cycle per k-block).

``error`` is a sticky flag (cleared by reset) raised when an ``act`` row is
longer than ``max_k`` (the row is cut at ``max_k``) or when an output block
of the weight stream does not have the row's number of k-blocks.

Handshake: honours backpressure on ``out`` (results wait in a small FIFO and
``wgt`` stalls while it could overflow); ``act.ready`` and ``wgt.ready`` never
depend combinationally on ``out.ready``.
Latency: see :attr:`latency` (cycles from the final ``wgt`` beat of a block to
its result entering the output FIFO; the FIFO adds one or two more).
"""
import math

from amaranth.hdl import Cat, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory

from ..golden import tlmm as gt
from ..golden.checks import check_int
from .arith import NO_COLLISION, adder_tree, delay, signed_term, valid_delay
from .rowengine import Results, RowEngine, accumulate

__all__ = ["TLMMEngine", "DirectEngine", "ENGINES", "make_engine"]

TABLE_RAM_STYLES = ("distributed", "block")

# ECP5 DP16KD aspect ratios (depth, width); 512 x 36 is the pseudo-dual-port
# mode (one write, one read port), which is how the table memories use it.
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

# Largest build rate default_build_rate() picks: the lane's select and its
# input register grow with it: on the default accelerator's engine a rate of
# 9 took 3.5x the LUT4 and 3.9x the FF of a rate of 1 (docs/tlmm.md).
MAX_DEFAULT_BUILD_RATE = 4


class _TernaryEngine(RowEngine):
    """Everything the two ternary engines share beyond :class:`RowEngine`:
    parameters, the accumulate stage and the cycle model."""

    _code_bits = None      # bits per weight code
    _wgt_per_lane = None   # weight codes per lane per beat

    def __init__(self, *, group=3, tables=4, lanes=16, max_k=None, act_bits=8):
        check_int("group", group, 2, 4)
        check_int("tables", tables, 1, 256)
        check_int("lanes", lanes, 1, 256)
        check_int("act_bits", act_bits, 2, 16)
        self._group, self._tables = group, tables
        self._set_rows(lanes=lanes, k_block=tables * group, max_k=max_k, act_bits=act_bits)
        acc_bits = gt.acc_bits_for(self._max_k, act_bits)
        super().__init__(acc_bits=acc_bits, wgt_field="codes",
                         wgt_shape=unsigned(self._code_bits),
                         wgt_per_lane=self._wgt_per_lane, out_bits=acc_bits)

    group = property(lambda self: self._group, doc="activations per table (group size G)")
    tables = property(lambda self: self._tables, doc="groups consumed per cycle (T)")
    macs_per_cycle = property(lambda self: self._lanes * self._tables * self._group,
                              doc="peak ternary MACs per cycle")
    latency = property(lambda self: self._lane_latency + 3,
                       doc="cycles from a block's last wgt beat to its out beat (no stalls)")

    def fill_cycles(self, k_blocks):
        """Cycles to write one row of ``k_blocks`` into the row store."""
        raise NotImplementedError

    def cycles(self, rows, k, n):
        """Analytic cycle count for ``rows`` rows of length ``k`` against
        ``n`` outputs, with no stalls: the first row's store is filled, then
        each row takes the longer of its NB * KB weight beats and the next
        row's fill, and the last result drains through the pipeline."""
        kb = -(-k // self.k_block)
        compute = (n // self._lanes) * kb
        fill = self.fill_cycles(kb)
        return fill + (rows - 1) * max(compute, fill) + compute + self.latency

    def resources(self):
        """Estimated block RAMs (ECP5 DP16KD, 18 Kbit each)."""
        return {"dp16kd": 0}

    def encode_weights(self, w):
        """Codes of ternary weights ``w`` (K, N), one row per code position."""
        raise NotImplementedError

    def _weight_words(self, w):
        return self.encode_weights(w)

    # --- gateware ----------------------------------------------------------

    def _lane_sums(self, m, store, rbuf, rkb):
        """Per-lane sums of one ``wgt`` beat. Returns ``(sums, latency)``."""
        raise NotImplementedError

    _write_latency = property(lambda self: self._lane_latency)

    def _datapath(self, m, store, rbuf, rkb, accept):
        sums, lat = self._lane_sums(m, store, rbuf, rkb)
        assert lat == self._lane_latency
        last_k, last_n = self.wgt.payload.last_k, self.wgt.payload.last_n
        v = valid_delay(m, accept, lat, name="v")
        vk = valid_delay(m, accept & last_k, lat, name="vk")
        vn = valid_delay(m, accept & last_k & last_n, lat, name="vn")
        # Accumulate; a block's result enters the FIFO on its last beat.
        totals = [accumulate(m, s, v, vk, bits=self._acc_bits, name=lane)
                  for lane, s in enumerate(sums)]
        return Results(vk, totals, vn)


class TLMMEngine(_TernaryEngine):
    """Table-lookup ternary matmul engine (see the module docstring).

    Parameters: ``group`` G in {2, 3, 4}; ``tables`` T groups per cycle;
    ``lanes`` L outputs per cycle; ``max_k`` largest row length (sets the
    table store depth and the accumulator width); ``act_bits`` activation
    width; ``encoding`` "full" (3**G entries, no sign logic) or "folded"
    ((3**G-1)/2+1 entries plus a sign bit); ``table_ram`` "distributed" or
    "block" (a Yosys ``ram_style`` hint for the per-lane table copies);
    ``build_rate`` P, table entries built and written per cycle (1 to
    ``entries``; default :meth:`default_build_rate`).

    Each table memory word holds P entries, so a k-block's tables take
    ``words = ceil(entries / P)`` build cycles; a lane reads a word at
    ``index // P`` and selects entry ``index % P`` (a P:1 multiplexer per
    lane and table slot, plus one register).

    Store per lane and table slot: ``words * 2 * 2**ceil(log2(k_blocks))``
    words of ``P * (act_bits + ceil(log2(G)) + 1)`` bits (two row buffers;
    the word index is the top address field, so no depth is lost to
    rounding ``words`` up to a power of two).
    """

    def __init__(self, *, group=3, tables=4, lanes=16, max_k=None, act_bits=8,
                 encoding="folded", table_ram="distributed", build_rate=None):
        if encoding not in gt.ENCODINGS:
            raise ValueError(f"encoding must be one of {gt.ENCODINGS}, not {encoding!r}")
        if table_ram not in TABLE_RAM_STYLES:
            raise ValueError(f"table_ram must be one of {TABLE_RAM_STYLES}, not {table_ram!r}")
        check_int("group", group, 2, 4)
        self._encoding, self._table_ram = encoding, table_ram
        self._code_bits = gt.code_bits(group, encoding)
        self._wgt_per_lane = tables
        self._digits = gt.entry_digits(group, encoding)
        self._entries = len(self._digits)
        self._index_bits = max(1, (self._entries - 1).bit_length())
        self._entry_bits = act_bits + (group - 1).bit_length() + 1
        self._build_lat = adder_tree_latency(group + 1)
        if build_rate is not None:
            check_int("build_rate", build_rate, 1, self._entries)
        super().__init__(group=group, tables=tables, lanes=lanes, max_k=max_k,
                         act_bits=act_bits)
        self._build_rate = build_rate or self.default_build_rate()
        self._words = -(-self._entries // self._build_rate)
        # Lookup: RAM read, RAM output register, then (P > 1) the select
        # register; folded lookups add one correction input (the sign count).
        self._lane_latency = (2 + (self._build_rate > 1)
                              + adder_tree_latency(tables + (encoding == "folded"), 1))

    encoding = property(lambda self: self._encoding)
    table_ram = property(lambda self: self._table_ram)
    entries = property(lambda self: self._entries, doc="table entries per group")
    build_rate = property(lambda self: self._build_rate,
                          doc="table entries built per cycle (P)")
    build_words = property(lambda self: self._words,
                           doc="build cycles per k-block: ceil(entries / build_rate)")

    def default_build_rate(self):
        """Distributed RAM: 1. Block RAM: the power of two up to
        :data:`MAX_DEFAULT_BUILD_RATE` with the fewest build cycles per
        k-block that needs no more DP16KD than a rate of 1. Powers of two
        split a code into word and entry by bit fields (no ROM per lane);
        the cap bounds the lane's select (4:1, two LUT4 per entry bit). The
        top's default engine (G = 3, full, ``max_k`` 256) gets 4 (7 cycles
        per k-block, 3 DP16KD per lane and slot either way); one k-block
        deep, 2 (14 cycles, 1 DP16KD)."""
        if self._table_ram != "block":
            return 1
        base = self._dp16kd(1)
        rates = [1 << i for i in range(min(MAX_DEFAULT_BUILD_RATE, self._entries).bit_length())]
        return max(r for r in rates if self._dp16kd(r) <= base)

    def _depth(self, rate):
        return -(-self._entries // rate) << (self._kb_bits + 1)

    def _dp16kd(self, rate):
        """DP16KD per table memory at build rate ``rate``: the cheapest of
        the block RAM's aspect ratios (512 x 36 needs one write and one read
        port, which is how the tables use it)."""
        depth, width = self._depth(rate), rate * self._entry_bits
        return min(-(-depth // d) * -(-width // w) for d, w in DP16KD_SHAPES)

    def fill_cycles(self, k_blocks):
        """``build_words`` cycles per k-block, plus one at the row's start."""
        return self._words * k_blocks + 1

    def resources(self):
        if self._table_ram != "block":
            return {"dp16kd": 0}
        return {"dp16kd": self._lanes * self._tables * self._dp16kd(self._build_rate)}

    def encode_weights(self, w):
        return gt.ternary_codes(w, self._group, self._encoding)

    def _table_addr(self, buf, kb, word):
        """Table address {word, buffer, k-block}: the word index on top."""
        low = [kb[:self._kb_bits]] if self._kb_bits else []
        high = [word] if self._words > 1 else []
        return Cat(*low, buf, *high)

    def _row_store(self, m):
        """One table memory per lane and table slot, ``mems[lane][t]``;
        ``build_rate`` entries per word."""
        shape = data.ArrayLayout(signed(self._entry_bits), self._build_rate)
        mems = [[memory.Memory(shape=shape, depth=self._depth(self._build_rate), init=[],
                               attrs={"ram_style": self._table_ram, **NO_COLLISION})
                 for _ in range(self._tables)] for _ in range(self._lanes)]
        for lane, row in enumerate(mems):
            for t, mem in enumerate(row):
                m.submodules[f"table_l{lane}_t{t}"] = mem
        return mems

    def _fill(self, m, mems, wbuf, wkb, wbuf_full):
        """The table builders: ``build_words`` cycles per ``act`` beat, each
        writing ``build_rate`` entries of every table slot. The next beat of
        a row is taken during its predecessor's last build cycle; a row's
        first beat waits one cycle (its buffer's full flag)."""
        G, T, P, W = self._group, self._tables, self._build_rate, self._words
        busy = Signal(name="build_busy")
        j = Signal(range(W), name="build_j")
        act = Signal(self.act.payload.data.shape(), name="act_reg")
        last_reg = Signal(name="act_last")
        issue = Signal()
        m.d.comb += issue.eq(busy & (j == W - 1))
        # Within a row, the next beat's k-block is wkb + 1 while busy.
        m.d.comb += self.act.ready.eq(~wbuf_full & (~busy | (issue & ~last_reg)))
        overflow = Signal()
        at_max = Mux(busy, wkb == self._k_blocks - 2, wkb == self._k_blocks - 1)
        j_next = Signal.like(j, name="build_j_next")
        m.d.comb += j_next.eq(j)
        m.d.sync += j.eq(j_next)
        with m.If(busy):
            m.d.comb += j_next.eq(Mux(issue, 0, j + 1))
            with m.If(issue):
                m.d.sync += busy.eq(0)
        with m.If(self.act.valid & self.act.ready):
            m.d.comb += j_next.eq(0)
            m.d.sync += [act.eq(self.act.payload.data), busy.eq(1),
                         last_reg.eq(self.act.payload.last | at_max)]
            m.d.comb += overflow.eq(~self.act.payload.last & at_max)

        # Digit ROMs: the sign patterns of word j's entries, shared by every
        # table slot (entries past the table's end are never read: zero).
        # Registered: looked up with j's next value, the cycle before.
        neg = [Signal(G, name=f"digit_neg{i}") for i in range(P)]
        nz = [Signal(G, name=f"digit_nz{i}") for i in range(P)]
        # The entry's negative digits: the sum of its terms' two's-complement
        # corrections (signed_term), so no adder tree forms it from them.
        ncount = [Signal(range(G + 1), name=f"digit_ncount{i}") for i in range(P)]
        with m.Switch(j_next):
            for word in range(W):
                with m.Case(word):
                    for i in range(P):
                        e = word * P + i
                        digits = self._digits[e] if e < self._entries else ()
                        m.d.sync += [
                            neg[i].eq(sum(1 << g for g, d in enumerate(digits) if d < 0)),
                            nz[i].eq(sum(1 << g for g, d in enumerate(digits) if d != 0)),
                            ncount[i].eq(sum(1 for d in digits if d < 0))]
        addr = delay(m, self._table_addr(wbuf, wkb, j), self._build_lat, name="build_addr")
        we = valid_delay(m, busy, self._build_lat, name="build_we")
        for t in range(T):
            word = []
            for i in range(P):
                terms = [signed_term(m, act[t * G + g], neg[i][g], nz[i][g],
                                     name=f"bt{t}_{i}_{g}")[0] for g in range(G)]
                entry, lat = adder_tree(m, terms + [ncount[i]], name=f"bsum{t}_{i}")
                assert lat == self._build_lat
                stored = Signal(signed(self._entry_bits), name=f"bent{t}_{i}")
                m.d.comb += stored.eq(entry)     # sign-extended (or truncated) to the entry
                word.append(stored)
            for lane in range(self._lanes):
                wp = mems[lane][t].write_port()
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(Cat(*word)), wp.en.eq(we)]
        return issue, last_reg, overflow, self._build_lat

    def _split_index(self, m, index, name):
        """``(index // P, index % P)`` of a table index: bit fields when P is
        a power of two, else a small ROM."""
        P, W = self._build_rate, self._words
        if P & (P - 1) == 0:
            p = P.bit_length() - 1
            return index[p:p + (W - 1).bit_length()], index[:p]
        word = Signal(range(W), name=f"{name}_w")
        slot = Signal(range(P), name=f"{name}_s")
        with m.Switch(index):
            for e in range(self._entries):
                with m.Case(e):
                    m.d.comb += [word.eq(e // P), slot.eq(e % P)]
        return word, slot

    def _lane_sums(self, m, mems, rbuf, rkb):
        T, P = self._tables, self._build_rate
        select = P > 1
        codes = self.wgt.payload.codes
        sums = []
        for lane in range(self._lanes):
            terms, corrs = [], []
            for t in range(T):
                code = codes[lane * T + t]
                rp = mems[lane][t].read_port(domain="sync")
                if self._encoding == "folded":
                    index = code[:self._index_bits]
                    sign = delay(m, code[self._index_bits], 2 + select, name=f"sg{lane}_{t}")
                else:
                    index, sign = code, None
                word, slot = self._split_index(m, index, name=f"ix{lane}_{t}")
                m.d.comb += rp.addr.eq(self._table_addr(rbuf, rkb, word))
                entry = delay(m, rp.data.as_value(), 1, name=f"rd{lane}_{t}")  # RAM output register
                if select:
                    entries = data.View(rp.data.shape(), entry)
                    slot = delay(m, slot, 2, name=f"sl{lane}_{t}")
                    entry = delay(m, entries[slot], 1, name=f"se{lane}_{t}")
                else:
                    entry = data.View(rp.data.shape(), entry)[0]
                if sign is None:
                    terms.append(entry)
                else:
                    term, corr = signed_term(m, entry, sign, name=f"lt{lane}_{t}")
                    terms.append(term)
                    corrs.append(corr)
            if corrs:
                corr_sum, _ = adder_tree(m, corrs, levels_per_stage=99, name=f"lc{lane}")
                terms.append(corr_sum)
            total, lat = adder_tree(m, terms, levels_per_stage=1, name=f"lsum{lane}")
            sums.append(total)
        return sums, 2 + select + lat


class DirectEngine(_TernaryEngine):
    """Direct ternary adder-tree engine, the baseline for :class:`TLMMEngine`.

    Same interface and peak rate: ``group`` and ``tables`` only set the beat
    width (``tables * group`` activations and, per lane, as many 2-bit weight
    codes: 0 -> 0, 1 -> +1, 3 -> -1, i.e. the weight's two's complement).
    The row store is one memory of ``2 * 2**ceil(log2(k_blocks))`` beats
    shared by all lanes.
    """

    _code_bits = 2

    def __init__(self, *, group=3, tables=4, lanes=16, max_k=None, act_bits=8):
        check_int("group", group, 2, 4)
        check_int("tables", tables, 1, 256)
        self._wgt_per_lane = tables * group
        self._lane_latency = 2 + adder_tree_latency(tables * group + 1, 1)
        super().__init__(group=group, tables=tables, lanes=lanes, max_k=max_k,
                         act_bits=act_bits)

    def fill_cycles(self, k_blocks):
        return k_blocks

    def encode_weights(self, w):
        return gt._ternary(w) & 3

    def _lane_sums(self, m, store, rbuf, rkb):
        n = self._wgt_per_lane
        acts = data.View(self.act.payload.data.shape(),
                         self._read_row(m, store, rbuf, rkb, name="act_d"))
        codes = data.View(self.wgt.payload.codes.shape(),
                          delay(m, self.wgt.payload.codes.as_value(), 2, name="codes_d"))
        sums = []
        for lane in range(self._lanes):
            terms, corrs = [], []
            for k in range(n):
                code = codes[lane * n + k]
                term, corr = signed_term(m, acts[k], code[1], code[0], name=f"dt{lane}_{k}")
                terms.append(term)
                corrs.append(corr)
            corr_sum, _ = adder_tree(m, corrs, levels_per_stage=99, name=f"dc{lane}")
            total, lat = adder_tree(m, terms + [corr_sum], levels_per_stage=1,
                                    name=f"dsum{lane}")
            sums.append(total)
        return sums, 2 + lat


def adder_tree_latency(inputs, levels_per_stage=2):
    """Latency of :func:`adder_tree` for ``inputs`` values."""
    levels = math.ceil(math.log2(inputs)) if inputs > 1 else 0
    return levels // levels_per_stage


ENGINES = {"tlmm": TLMMEngine, "direct": DirectEngine}


def make_engine(engine, **params):
    """Build an engine by name ("tlmm" or "direct") with keyword parameters."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {tuple(ENGINES)}, not {engine!r}")
    return ENGINES[engine](**params)
