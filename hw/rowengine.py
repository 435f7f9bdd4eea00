"""Row-stationary stream control shared by the matrix-vector engines.

:class:`~trilut.hw.matmul.TLMMEngine`, :class:`~trilut.hw.matmul.DirectEngine`
and :class:`~trilut.hw.int8mm.Int8Engine` all hold one activation row while
the weight stream runs against it, and differ only in what they store per
row and in their lanes' datapath. :class:`RowEngine` is that common part:

* the streams: ``act`` (one k-block of activations per beat, ``last`` on
  the row's final beat), ``wgt`` (NB * KB beats, output block outer, k-block
  inner, ``last_k`` on every block's final k-block, ``last_n`` also on the
  row's final beat), ``out`` (one beat of ``lanes`` results per output
  block, ``last`` on the row's final one) and the sticky ``error`` flag;
* the host-side beat builders (:meth:`RowEngine.act_beats`,
  :meth:`RowEngine.wgt_beats`) and shape checks;
* the double-buffered row store control: the fill counters of the ``act``
  side, the k-block counter and per-block k-block count check of the
  ``wgt`` side, the full flags that hand a buffer from one side to the other;
* the output FIFO, with ``wgt`` stalled while a result in flight could find
  it full (credit from the FIFO level, registered, so ``wgt.ready`` never
  depends combinationally on ``out.ready``).

A subclass supplies the row store (:meth:`RowEngine._row_store`, default one
memory of raw ``act`` beats), how an ``act`` beat is written into it
(:meth:`RowEngine._fill`, default one write per beat) and the datapath from
an accepted ``wgt`` beat to the FIFO write (:meth:`RowEngine._datapath`).
"""
from typing import NamedTuple

import numpy as np
from amaranth.hdl import Cat, Module, Shape, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from .arith import NO_COLLISION, delay, valid_delay
from .queue import Queue

__all__ = ["RowEngine", "Results", "accumulate"]

# Output FIFO: room for every result in flight plus this much slack.
_FIFO_SLACK = 6


class Results(NamedTuple):
    """What :meth:`RowEngine._datapath` hands back: ``valid`` writes
    ``data`` (one value per lane, ``out`` element width) and ``last`` into
    the output FIFO, :attr:`RowEngine._write_latency` cycles after the
    ``wgt`` beat that completed the block was accepted; any of ``faults``
    high sets ``error``."""
    valid: Value
    data: list
    last: Value
    faults: tuple = ()


class RowEngine(wiring.Component):
    """Base of the row-stationary matrix-vector engines (see the module
    docstring). Not used on its own.

    A subclass calls :meth:`_set_rows` first (it checks ``max_k`` and rounds
    it up to whole k-blocks), then ``RowEngine.__init__`` with its
    accumulator width and the ``wgt`` element (field name, shape, elements
    per lane per beat) and ``out`` element width.
    """

    def _set_rows(self, *, lanes, k_block, max_k, act_bits):
        """Row geometry: ``k_block`` activations per ``act`` beat, rows of
        up to ``max_k`` (default one k-block) rounded up to whole k-blocks."""
        if max_k is None:
            max_k = k_block
        check_int("max_k", max_k, 1)
        self._lanes, self._k_block, self._act_bits = lanes, k_block, act_bits
        self._k_blocks = -(-max_k // k_block)
        self._max_k = self._k_blocks * k_block

    def __init__(self, *, acc_bits, wgt_field, wgt_shape, wgt_per_lane, out_bits,
                 members=None):
        self._acc_bits = acc_bits
        self._wgt_field, self._wgt_per_lane = wgt_field, wgt_per_lane
        super().__init__({
            "act": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(self._act_bits), self._k_block),
                "last": 1}))),
            "wgt": In(stream.Signature(data.StructLayout({
                wgt_field: data.ArrayLayout(wgt_shape, self._lanes * wgt_per_lane),
                "last_k": 1, "last_n": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(out_bits), self._lanes),
                "last": 1}))),
            **(members or {}),
            "error": Out(1),
        })

    lanes = property(lambda self: self._lanes, doc="outputs computed in parallel (L)")
    act_bits = property(lambda self: self._act_bits)
    acc_bits = property(lambda self: self._acc_bits, doc="accumulator width, from max_k")
    max_k = property(lambda self: self._max_k, doc="largest K (rounded up to whole k-blocks)")
    k_blocks = property(lambda self: self._k_blocks, doc="k-blocks per row at max_k")
    k_block = property(lambda self: self._k_block, doc="activations per act beat")

    # --- host-side helpers: the beat sequence for one row -----------------

    def check_shapes(self, k, n):
        if k > self._max_k:
            raise ValueError(f"K = {k} exceeds this engine's max_k = {self._max_k}")
        if n % self._lanes:
            raise ValueError(f"N = {n} must be a multiple of lanes = {self._lanes}")

    @staticmethod
    def _check_range(name, x, bits):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}]")

    def act_beats(self, a):
        """Payload dicts of the ``act`` beats for one row ``a`` (K,)."""
        a = np.asarray(a, dtype=np.int64)
        self._check_range("activations", a, self._act_bits)
        kpad = -(-len(a) // self._k_block) * self._k_block
        padded = np.zeros(kpad, dtype=np.int64)
        padded[:len(a)] = a
        blocks = padded.reshape(-1, self._k_block)
        return [{"data": [int(v) for v in blk], "last": int(i == len(blocks) - 1)}
                for i, blk in enumerate(blocks)]

    def _weight_words(self, w):
        """The ``wgt`` elements of weights ``w`` (K, N): an array (positions,
        N), ``wgt_per_lane`` positions per k-block; raises on bad weights."""
        raise NotImplementedError

    def wgt_beats(self, w):
        """Payload dicts of the ``wgt`` beats for one row against ``w`` (K, N)."""
        w = np.asarray(w)
        k, n = w.shape
        self.check_shapes(k, n)
        words = self._weight_words(w)
        per = self._wgt_per_lane
        kb_count = -(-k // self._k_block)
        pos = np.zeros((kb_count * per, n), dtype=np.int64)
        pos[:words.shape[0]] = words
        nb_count = n // self._lanes
        beats = []
        for nb in range(nb_count):
            for kb in range(kb_count):
                tile = pos[kb * per:(kb + 1) * per, nb * self._lanes:(nb + 1) * self._lanes]
                beats.append({self._wgt_field: [int(c) for c in tile.T.reshape(-1)],
                              "last_k": int(kb == kb_count - 1),
                              "last_n": int(kb == kb_count - 1 and nb == nb_count - 1)})
        return beats

    # --- gateware ----------------------------------------------------------

    @property
    def _kb_bits(self):
        return (self._k_blocks - 1).bit_length()

    def _addr(self, buf, kb, low=None):
        """Store address: {buffer, k-block, low}; the store holds
        ``2 << (kb_bits + low bits)`` words."""
        parts = ([] if low is None else [low]) + ([kb[:self._kb_bits]] if self._kb_bits else [])
        return Cat(*parts, buf)

    def _row_store(self, m):
        """The row store (default: one memory of ``act`` beats, two buffers
        of ``2**kb_bits`` beats), handed to :meth:`_fill` and
        :meth:`_datapath`. One buffer is read while the other is written
        (the full flags guarantee it): no read meets a write."""
        store = memory.Memory(shape=self.act.payload.data.shape(), depth=2 << self._kb_bits,
                              init=[], attrs=NO_COLLISION)
        m.submodules.act_store = store
        return store

    def _fill(self, m, store, wbuf, wkb, wbuf_full):
        """Drive ``act.ready`` (never while ``wbuf_full``) and write the row
        store at buffer ``wbuf``, k-block ``wkb``. Returns ``(issue,
        issue_last, overflow, latency)``: ``issue`` pulses when a beat's
        writes have all been issued, ``latency`` cycles before they land;
        ``issue_last`` marks the row's final beat (``last``, or the
        ``max_k``-th k-block, which also raises ``overflow`` if not ``last``).

        Default: each beat written as it is accepted, one per cycle."""
        wp = store.write_port()
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

    def _read_row(self, m, store, rbuf, rkb, *, name):
        """The default store's beat at buffer ``rbuf``, k-block ``rkb``, two
        cycles later (read plus an output register), as a flat value."""
        rp = store.read_port(domain="sync")
        m.d.comb += rp.addr.eq(self._addr(rbuf, rkb))
        return delay(m, rp.data.as_value(), 1, name=name)

    @property
    def _write_latency(self):
        """Cycles from a ``wgt`` beat's acceptance to the output FIFO write
        of the result it completes (sizes the FIFO and its credit)."""
        raise NotImplementedError

    def _datapath(self, m, store, rbuf, rkb, accept):
        """The lanes, from the ``wgt`` beat accepted (``accept``) against
        buffer ``rbuf``, k-block ``rkb`` of the store, to the output FIFO.
        Returns :class:`Results`."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        kb_bits = max(1, self._kb_bits)

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
        store = self._row_store(m)
        issue, issue_last, overflow, lat_fill = self._fill(m, store, wbuf, wkb, wbuf_full)
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
        done = valid_delay(m, issue & issue_last, lat_fill, name="fill_done")
        done_buf = delay(m, wbuf, lat_fill, name="fill_buf")

        # Compute side: one wgt beat per cycle while the row is stored and
        # the output FIFO has room for every result in flight.
        lat = self._write_latency
        depth = lat + _FIFO_SLACK
        out_fifo = Queue(width=Shape.cast(self.out.payload.shape()).width, depth=depth)
        m.submodules.out_fifo = out_fifo
        room = Signal()     # registered: one more result may be in flight
        m.d.sync += room.eq(out_fifo.level <= depth - lat - 4)
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

        res = self._datapath(m, store, rbuf, rkb, accept)
        out_shape = self.out.payload.data.shape()
        assert len(res.data) == self._lanes
        assert all(len(v) == Shape.cast(out_shape.elem_shape).width for v in res.data)
        for fault in res.faults:
            with m.If(fault):
                m.d.sync += error.eq(1)
        m.d.comb += [
            out_fifo.w_data.eq(Cat(*res.data, res.last)),
            out_fifo.w_en.eq(res.valid),
            self.out.valid.eq(out_fifo.r_rdy),
            self.out.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.out.ready),
        ]
        return m


def accumulate(m, value, valid, last, *, bits, name):
    """Per-lane accumulator of ``bits`` bits: returns ``acc + value``
    (combinational); the register takes that sum on ``valid`` and restarts
    from 0 on ``last`` (the block's final k-block, whose total is the sum)."""
    acc = Signal(signed(bits), name=f"acc{name}")
    total = Signal(signed(bits), name=f"total{name}")
    m.d.comb += total.eq(acc + value)
    with m.If(last):
        m.d.sync += acc.eq(0)
    with m.Elif(valid):
        m.d.sync += acc.eq(total)
    return total
