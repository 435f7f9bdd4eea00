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

The stream control, host-side beat builders and output FIFO are
:class:`~trilut.hw.rowengine.RowEngine`'s, shared with the int8 engine.
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

from amaranth.hdl import Signal, signed, unsigned
from amaranth.lib import data, memory

from ..golden import tlmm as gt
from ..golden.checks import check_int
from .arith import adder_tree, delay, signed_term
from .rowengine import NO_COLLISION, Results, RowEngine, accumulate

__all__ = ["TLMMEngine", "DirectEngine", "ENGINES", "make_engine"]

TABLE_RAM_STYLES = ("distributed", "block")


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
        """Estimated block RAMs (DP16KD: 1,024 x 18 bits each)."""
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
        v = delay(m, accept, lat, name="v")
        vk = delay(m, accept & last_k, lat, name="vk")
        vn = delay(m, accept & last_k & last_n, lat, name="vn")
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
        self._wgt_per_lane = tables
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

    def _row_store(self, m):
        """One table memory per lane and table slot, ``mems[lane][t]``."""
        depth = 2 << (self._kb_bits + self._index_bits)
        mems = [[memory.Memory(shape=signed(self._entry_bits), depth=depth, init=[],
                               attrs={"ram_style": self._table_ram, **NO_COLLISION})
                 for _ in range(self._tables)] for _ in range(self._lanes)]
        for lane, row in enumerate(mems):
            for t, mem in enumerate(row):
                m.submodules[f"table_l{lane}_t{t}"] = mem
        return mems

    def _fill(self, m, mems, wbuf, wkb, wbuf_full):
        """The table builders: ``table_entries + 1`` cycles per ``act`` beat
        (take the beat, then one entry of every table slot per cycle)."""
        G, T, E = self._group, self._tables, self._entries
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

    def _lane_sums(self, m, mems, rbuf, rkb):
        T = self._tables
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
