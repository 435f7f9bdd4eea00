"""Ternary matrix-vector engines: table lookup (TLMM) and the direct adder tree.

Both engines compute ``y[n] = sum_k a[k] * w[k, n]`` for int8 activations and
ternary weights, behind one interface, at the same peak rate of
``lanes * tables * group`` ternary MACs per cycle, so that they can be
compared in one run. They differ only in what they keep per activation row
and in each lane's datapath:

* :class:`TLMMEngine` builds, for every group of ``group`` activations, the
  table of all signed sums of the group (SPEC section 3, encodings as in
  :mod:`trilut.golden.tlmm`). One builder per table slot computes one entry per
  cycle and writes it to every lane's copy of that table; each lane then
  reads ``tables`` entries per cycle, addressed by the weight codes, and adds
  them up.
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

Rows follow back to back. The row store is double-buffered: the next row's
``act`` beats are taken while the current row computes, so the weight stream
runs at one beat per cycle as long as the next row's store is ready in time
(TLMM: ``table_entries + 1`` cycles per k-block; direct: one).

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

import numpy as np
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden import tlmm as gt
from ..golden.checks import check_int
from .arith import adder_tree, delay, signed_term

__all__ = ["TLMMEngine", "DirectEngine", "ENGINES", "make_engine"]

TABLE_RAM_STYLES = ("distributed", "block")
# Row stores are read in one buffer while the other is written (the full
# flags guarantee it), so a read never meets a write to the same address:
# telling Yosys so saves the bypass logic it would otherwise add per RAM.
NO_COLLISION = {"no_rw_check": 1}


class _TernaryEngine(wiring.Component):
    """Everything the two engines share: streams, double-buffered row store
    control, the accumulate stage and the output FIFO."""

    _code_bits = None      # bits per weight code
    _codes_per_lane = None  # weight codes per lane per beat

    def __init__(self, *, group=3, tables=4, lanes=16, max_k=None, act_bits=8):
        check_int("group", group, 2, 4)
        check_int("tables", tables, 1, 256)
        check_int("lanes", lanes, 1, 256)
        check_int("act_bits", act_bits, 2, 16)
        k_block = tables * group
        if max_k is None:
            max_k = k_block
        check_int("max_k", max_k, 1)
        self._group, self._tables, self._lanes = group, tables, lanes
        self._act_bits = act_bits
        self._k_blocks = -(-max_k // k_block)
        self._max_k = self._k_blocks * k_block
        self._acc_bits = gt.acc_bits_for(self._max_k, act_bits)
        super().__init__({
            "act": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(act_bits), k_block),
                "last": 1}))),
            "wgt": In(stream.Signature(data.StructLayout({
                "codes": data.ArrayLayout(unsigned(self._code_bits),
                                          lanes * self._codes_per_lane),
                "last_k": 1, "last_n": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(self._acc_bits), lanes),
                "last": 1}))),
            "error": Out(1),
        })

    group = property(lambda self: self._group, doc="activations per table (group size G)")
    tables = property(lambda self: self._tables, doc="groups consumed per cycle (T)")
    lanes = property(lambda self: self._lanes, doc="outputs computed in parallel (L)")
    act_bits = property(lambda self: self._act_bits)
    acc_bits = property(lambda self: self._acc_bits, doc="accumulator width, from max_k")
    max_k = property(lambda self: self._max_k, doc="largest K (rounded up to whole k-blocks)")
    k_blocks = property(lambda self: self._k_blocks, doc="k-blocks per row at max_k")
    k_block = property(lambda self: self._tables * self._group, doc="activations per act beat")
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
        """Estimated block RAMs (DP16KD: 1,024 x 18 bits each)."""
        return {"dp16kd": 0}

    # --- host-side helpers: the beat sequence for one row -----------------

    def encode_weights(self, w):
        """Codes of ternary weights ``w`` (K, N), one row per code position."""
        raise NotImplementedError

    def check_shapes(self, k, n):
        if k > self._max_k:
            raise ValueError(f"K = {k} exceeds this engine's max_k = {self._max_k}")
        if n % self._lanes:
            raise ValueError(f"N = {n} must be a multiple of lanes = {self._lanes}")

    def act_beats(self, a):
        """Payload dicts of the ``act`` beats for one int8 row ``a`` (K,)."""
        a = np.asarray(a)
        kpad = -(-len(a) // self.k_block) * self.k_block
        padded = np.zeros(kpad, dtype=np.int64)
        padded[:len(a)] = a
        blocks = padded.reshape(-1, self.k_block)
        return [{"data": [int(v) for v in blk], "last": int(i == len(blocks) - 1)}
                for i, blk in enumerate(blocks)]

    def wgt_beats(self, w):
        """Payload dicts of the ``wgt`` beats for one row against ``w`` (K, N)."""
        k, n = w.shape
        self.check_shapes(k, n)
        codes = self.encode_weights(w)          # (positions, N)
        per = self._codes_per_lane
        kb_count = -(-k // self.k_block)
        pos = np.zeros((kb_count * per, n), dtype=np.int64)
        pos[:codes.shape[0]] = codes
        nb_count = n // self._lanes
        beats = []
        for nb in range(nb_count):
            for kb in range(kb_count):
                tile = pos[kb * per:(kb + 1) * per, nb * self._lanes:(nb + 1) * self._lanes]
                beats.append({"codes": [int(c) for c in tile.T.reshape(-1)],
                              "last_k": int(kb == kb_count - 1),
                              "last_n": int(kb == kb_count - 1 and nb == nb_count - 1)})
        return beats

    # --- gateware ----------------------------------------------------------

    def _fill(self, m, wbuf, wkb, wbuf_full):
        """Drive ``act.ready`` (never while ``wbuf_full``) and write the row
        store at buffer ``wbuf``, k-block ``wkb``. Returns ``(issue,
        issue_last, overflow, latency)``: ``issue`` pulses when a beat's writes
        have all been issued, ``latency`` cycles before they land."""
        raise NotImplementedError

    def _lane_sums(self, m, rbuf, rkb):
        """Per-lane sums of one ``wgt`` beat. Returns ``(sums, latency)``."""
        raise NotImplementedError

    @property
    def _kb_bits(self):
        return (self._k_blocks - 1).bit_length()

    def _addr(self, buf, kb, low=None):
        """Store address: {buffer, k-block, low}; the store holds
        ``2 << (kb_bits + low bits)`` words."""
        parts = ([] if low is None else [low]) + ([kb[:self._kb_bits]] if self._kb_bits else [])
        return Cat(*parts, buf)

    def elaborate(self, platform):
        m = Module()
        kb_bits = max(1, (self._k_blocks - 1).bit_length())

        wbuf = Signal(name="wbuf")
        wkb = Signal(kb_bits, name="wkb")
        rbuf = Signal(name="rbuf")
        rkb = Signal(kb_bits, name="rkb")
        full = [Signal(name=f"full{i}") for i in range(2)]
        row_last = [Signal(kb_bits, name=f"row_last{i}") for i in range(2)]
        error = Signal(name="error_flag")
        m.d.comb += self.error.eq(error)

        # Fill side: the subclass writes the store; we keep the counters.
        wbuf_full = Signal()
        m.d.comb += wbuf_full.eq(Cat(*full).bit_select(wbuf, 1))
        issue, issue_last, overflow, lat_fill = self._fill(m, wbuf, wkb, wbuf_full)
        with m.If(issue):
            with m.If(issue_last):
                m.d.sync += [wkb.eq(0), wbuf.eq(~wbuf)]
                for i in range(2):
                    with m.If(wbuf == i):
                        m.d.sync += row_last[i].eq(wkb)
            with m.Else():
                m.d.sync += wkb.eq(wkb + 1)
        with m.If(overflow):
            m.d.sync += error.eq(1)
        done = delay(m, issue & issue_last, lat_fill, name="fill_done")
        done_buf = delay(m, wbuf, lat_fill, name="fill_buf")

        # Compute side.
        lane_lat = self._lane_latency
        depth_fifo = lane_lat + 6   # room for every result in flight, plus slack
        out_fifo = fifo.SyncFIFOBuffered(width=self._lanes * self._acc_bits + 1,
                                         depth=depth_fifo)
        m.submodules.out_fifo = out_fifo
        room = Signal()     # registered: one more result may be in flight
        m.d.sync += room.eq(out_fifo.level <= depth_fifo - lane_lat - 4)
        cur_full = Signal()
        m.d.comb += cur_full.eq(Cat(*full).bit_select(rbuf, 1))
        m.d.comb += self.wgt.ready.eq(cur_full & room)
        accept = Signal()
        m.d.comb += accept.eq(self.wgt.valid & self.wgt.ready)
        last_k, last_n = self.wgt.payload.last_k, self.wgt.payload.last_n

        release = Signal()
        m.d.comb += release.eq(accept & last_k & last_n)
        with m.If(accept):
            with m.If(last_k):
                m.d.sync += rkb.eq(0)
                with m.If(rkb != Cat(*row_last).word_select(rbuf, kb_bits)):
                    m.d.sync += error.eq(1)
            with m.Else():
                m.d.sync += rkb.eq(rkb + 1)
            with m.If(release):
                m.d.sync += rbuf.eq(~rbuf)
        for i in range(2):
            with m.If(done & (done_buf == i)):
                m.d.sync += full[i].eq(1)
            with m.If(release & (rbuf == i)):
                m.d.sync += full[i].eq(0)

        sums, lat = self._lane_sums(m, rbuf, rkb)
        assert lat == lane_lat
        v = delay(m, accept, lat, name="v")
        vk = delay(m, accept & last_k, lat, name="vk")
        vn = delay(m, accept & last_k & last_n, lat, name="vn")

        # Accumulate, and push a block's result into the FIFO on its last beat.
        totals = []
        for lane, s in enumerate(sums):
            acc = Signal(signed(self._acc_bits), name=f"acc{lane}")
            total = Signal(signed(self._acc_bits), name=f"total{lane}")
            m.d.comb += total.eq(acc + s)
            with m.If(vk):
                m.d.sync += acc.eq(0)
            with m.Elif(v):
                m.d.sync += acc.eq(total)
            totals.append(total)
        m.d.comb += [
            out_fifo.w_data.eq(Cat(*totals, vn)),
            out_fifo.w_en.eq(vk),
            self.out.valid.eq(out_fifo.r_rdy),
            self.out.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.out.ready),
        ]
        return m


class TLMMEngine(_TernaryEngine):
    """Table-lookup ternary matmul engine (see the module docstring).

    Parameters: ``group`` G in {2, 3, 4}; ``tables`` T groups per cycle;
    ``lanes`` L outputs per cycle; ``max_k`` largest row length (sets the
    table store depth and the accumulator width); ``act_bits`` activation
    width; ``encoding`` "full" (3**G entries, no sign logic) or "folded"
    ((3**G-1)/2+1 entries plus a sign bit); ``table_ram`` "distributed" or
    "block" (a Yosys ``ram_style`` hint for the per-lane table copies).

    Store per lane and table slot: ``2 * 2**ceil(log2(k_blocks)) *
    2**ceil(log2(entries))`` entries of ``act_bits + ceil(log2(G)) + 1`` bits (two row buffers).
    """

    def __init__(self, *, group=3, tables=4, lanes=16, max_k=None, act_bits=8,
                 encoding="folded", table_ram="distributed"):
        if encoding not in gt.ENCODINGS:
            raise ValueError(f"encoding must be one of {gt.ENCODINGS}, not {encoding!r}")
        if table_ram not in TABLE_RAM_STYLES:
            raise ValueError(f"table_ram must be one of {TABLE_RAM_STYLES}, not {table_ram!r}")
        check_int("group", group, 2, 4)
        self._encoding, self._table_ram = encoding, table_ram
        self._code_bits = gt.code_bits(group, encoding)
        self._codes_per_lane = tables
        self._digits = gt.entry_digits(group, encoding)
        self._entries = len(self._digits)
        self._index_bits = max(1, (self._entries - 1).bit_length())
        self._entry_bits = act_bits + (group - 1).bit_length() + 1
        self._build_lat = adder_tree_latency(group + 1)
        # Folded lookups add one correction input (the sign count) per lane.
        self._lane_latency = 2 + adder_tree_latency(tables + (encoding == "folded"), 1)
        super().__init__(group=group, tables=tables, lanes=lanes, max_k=max_k,
                         act_bits=act_bits)

    encoding = property(lambda self: self._encoding)
    table_ram = property(lambda self: self._table_ram)
    entries = property(lambda self: self._entries, doc="table entries per group")

    def fill_cycles(self, k_blocks):
        return (self._entries + 1) * k_blocks

    def resources(self):
        if self._table_ram != "block":
            return {"dp16kd": 0}
        depth = 2 << (self._kb_bits + self._index_bits)
        return {"dp16kd": self._lanes * self._tables * -(-depth // 1024)}

    def encode_weights(self, w):
        return gt.ternary_codes(w, self._group, self._encoding)

    def _table_memories(self, m):
        if not hasattr(self, "_mems"):
            depth = 2 << (self._kb_bits + self._index_bits)
            self._mems = [[memory.Memory(shape=signed(self._entry_bits), depth=depth, init=[],
                                         attrs={"ram_style": self._table_ram, **NO_COLLISION})
                           for _ in range(self._tables)] for _ in range(self._lanes)]
            for lane, row in enumerate(self._mems):
                for t, mem in enumerate(row):
                    m.submodules[f"table_l{lane}_t{t}"] = mem
        return self._mems

    def _fill(self, m, wbuf, wkb, wbuf_full):
        G, T, E = self._group, self._tables, self._entries
        mems = self._table_memories(m)
        busy = Signal(name="build_busy")
        j = Signal(range(E), name="build_j")
        act = Signal(self.act.payload.data.shape(), name="act_reg")
        last_reg = Signal(name="act_last")
        m.d.comb += self.act.ready.eq(~busy & ~wbuf_full)
        overflow = Signal()
        at_max = wkb == self._k_blocks - 1
        with m.If(self.act.valid & self.act.ready):
            m.d.sync += [act.eq(self.act.payload.data), busy.eq(1), j.eq(0),
                         last_reg.eq(self.act.payload.last | at_max)]
            m.d.comb += overflow.eq(~self.act.payload.last & at_max)
        issue = Signal()
        m.d.comb += issue.eq(busy & (j == E - 1))
        with m.If(busy):
            m.d.sync += j.eq(j + 1)
            with m.If(issue):
                m.d.sync += busy.eq(0)

        # Digit ROM: the sign pattern of entry j, shared by every table slot.
        neg = Signal(G, name="digit_neg")
        nz = Signal(G, name="digit_nz")
        with m.Switch(j):
            for idx, digits in enumerate(self._digits):
                with m.Case(idx):
                    m.d.comb += [neg.eq(sum(1 << i for i, d in enumerate(digits) if d < 0)),
                                 nz.eq(sum(1 << i for i, d in enumerate(digits) if d != 0))]
        addr = delay(m, self._addr(wbuf, wkb, j), self._build_lat, name="build_addr")
        we = delay(m, busy, self._build_lat, name="build_we")
        for t in range(T):
            terms, corrs = [], []
            for i in range(G):
                term, corr = signed_term(m, act[t * G + i], neg[i], nz[i], name=f"bt{t}_{i}")
                terms.append(term)
                corrs.append(corr)
            corr_sum, _ = adder_tree(m, corrs, levels_per_stage=99, name=f"bc{t}")
            entry, lat = adder_tree(m, terms + [corr_sum], name=f"bsum{t}")
            assert lat == self._build_lat
            for lane in range(self._lanes):
                wp = mems[lane][t].write_port()
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(entry), wp.en.eq(we)]
        return issue, last_reg, overflow, self._build_lat

    def _lane_sums(self, m, rbuf, rkb):
        T = self._tables
        mems = self._table_memories(m)
        codes = self.wgt.payload.codes
        sums = []
        for lane in range(self._lanes):
            terms, corrs = [], []
            for t in range(T):
                code = codes[lane * T + t]
                rp = mems[lane][t].read_port(domain="sync")
                if self._encoding == "folded":
                    index = code[:self._index_bits]
                    sign = delay(m, code[self._index_bits], 2, name=f"sg{lane}_{t}")
                else:
                    index, sign = code, None
                m.d.comb += rp.addr.eq(self._addr(rbuf, rkb, index))
                entry = delay(m, rp.data, 1, name=f"rd{lane}_{t}")  # RAM output register
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
        return sums, 2 + lat


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
        self._codes_per_lane = tables * group
        self._lane_latency = 2 + adder_tree_latency(tables * group + 1, 1)
        super().__init__(group=group, tables=tables, lanes=lanes, max_k=max_k,
                         act_bits=act_bits)

    def fill_cycles(self, k_blocks):
        return k_blocks

    def encode_weights(self, w):
        return gt._ternary(w) & 3

    def _store(self, m):
        if not hasattr(self, "_mem"):
            self._mem = memory.Memory(shape=self.act.payload.data.shape(),
                                      depth=2 << self._kb_bits, init=[], attrs=NO_COLLISION)
            m.submodules.act_store = self._mem
        return self._mem

    def _fill(self, m, wbuf, wkb, wbuf_full):
        mem = self._store(m)
        wp = mem.write_port()
        accept = Signal()
        m.d.comb += [self.act.ready.eq(~wbuf_full),
                     accept.eq(self.act.valid & self.act.ready)]
        at_max = wkb == self._k_blocks - 1
        last = Signal()
        overflow = Signal()
        m.d.comb += [last.eq(self.act.payload.last | at_max),
                     overflow.eq(accept & ~self.act.payload.last & at_max),
                     wp.addr.eq(self._addr(wbuf, wkb)), wp.data.eq(self.act.payload.data),
                     wp.en.eq(accept)]
        return accept, last, overflow, 0

    def _lane_sums(self, m, rbuf, rkb):
        n = self._codes_per_lane
        rp = self._store(m).read_port(domain="sync")
        m.d.comb += rp.addr.eq(self._addr(rbuf, rkb))
        acts = data.View(rp.data.shape(), delay(m, rp.data.as_value(), 1, name="act_d"))
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
