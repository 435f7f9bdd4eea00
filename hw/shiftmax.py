"""Streaming Shiftmax (I-ViT IntSoftmax, SPEC 4.2), bit-exact with
:func:`trilut.golden.nonlinear.shiftmax`.

For every row (one element per ``inp`` beat, ``last`` on the final one)::

    e = IEXP(x - max(row); s, n)                      # x0 = floor(-1/s) on port x0
    S = min(sum(e), 2^31 - 1);  f = (2^31 - 1) // S   # one divide per row
    y = (e * f) >> (32 - out_bits)                    # 0 .. 2^(out_bits-1) - 1

Architecture (three passes over a buffered row, overlapped across rows):

* pass 1 (:class:`~trilut.hw.iexp.RowCapture`, behind an input register)
  writes the row into one of
  four row slots of one RAM (``4 * 2^ceil(log2 max_len)`` x ``in_bits``; two
  read ports, so Yosys gives it two block RAMs) and tracks the max;
* pass 2 reads it back, computes ``e`` (:class:`~trilut.hw.iexp.IExp`) and
  the saturating sum; the sum goes through a 4-deep FIFO to the shared
  :class:`~trilut.hw.divider.SeqDivider` (31-bit, 33 cycles per divide);
* pass 3 reads the row a second time and recomputes ``e`` with a second
  IExp instead of storing 21-bit ``(t, shift)`` per element in three more
  row buffers (one DP16KD more at max_len = 256; the second IExp costs at
  most 315 LUT4 and 186 FF, measured alone without its unused shifter),
  multiplies ``t * f`` (``e = t << shift``: a 17 x 16-bit product, one
  MULT18X18D at the defaults) and shifts the window ``>> (32 - out_bits)``.
  ``f`` is taken from the divider when pass 3 starts the row (the next
  divide begins at once) and reaches the multiplier with the row's first
  element, so rows of any length follow each other without a gap.

A row keeps its slot from pass 1 to the end of pass 3, so up to four rows are
in flight: one arriving, one summing, one waiting for its divide, one leaving.

Throughput (no stalls): rows of ``L >= 33`` elements stream at one element
per cycle (pass 2 of a row overlaps the divide of the previous one and pass 3
of the one before); measured 1.000 elements/cycle sustained (first to last
output) over 8 rows of 256, and 0.78 end to end including the fill of the
first row (two passes plus the divide). Short rows are limited by the single
divider: one row per 33 cycles (the ``SeqDivider`` interval; measured 33.0
cycles per row for L = 1 and 8, 34.0 for L = 32), i.e. ``L / 33`` elements
per cycle for ``L < 33``.

Latency (no stalls): the first output of a row appears
:meth:`Shiftmax.latency` ``(L) = L + 65`` cycles (defaults, the input
register included) after its last input beat.

Handshake: ``inp.ready`` depends only on internal state (a free row slot);
``out`` comes from a FIFO and honours backpressure (results are issued into
the pipeline only against free FIFO entries). ``x0`` must be stable from
two cycles before a row's first beat until its last output.

``error`` (sticky, cleared by reset): a row longer than ``max_len`` (it is
cut at ``max_len`` elements, the rest up to its ``last`` dropped; the next row
is unaffected), or a row processed with an invalid ``x0`` (``x0 >= 0`` or
``|x0| * 2^n > 2^31 - 1``; its outputs are then undefined).

Tested (Verilator, cocotb, against the golden model): in_bits = 8, n = 15,
out_bits = 8 at max_len = 20 and 256; rows of 1, 2, random lengths and
max_len; rows longer than max_len; scales 2^-2..2^-5, 1/12.7, 1 and 2^-15
(x0 = -4, -8, -16, -32, -13, -1, -32768); all-equal, one-hot, one-cold, all
-128, all +127 and alternating rows; random idle gaps and backpressure.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.nonlinear import INT32_MAX, X0_BITS
from .arith import NO_COLLISION, delay, valid_delay
from .divider import SeqDivider
from .iexp import (E_BITS, READ_LATENCY, IExp, RowCapture, RowReader, chunked_mul,
                   iexp_latency, read_minus_max, shift_window)
from .queue import CREDIT_RETURN, OutputQueue
from .rowio import stage

from ..golden.checks import check_int

__all__ = ["Shiftmax"]

_SLOTS = 4          # row slots: capture, sum, wait for the divide, output


class Shiftmax(wiring.Component):
    """Streaming Shiftmax row unit (see the module docstring).

    Parameters: ``in_bits`` (logit width, 2..16), ``n`` (IEXP shift, 1..30),
    ``out_bits`` (2..32), ``max_len`` (longest row, >= 1), ``x0_bits``
    (signed width of the ``x0`` port, default ``X0_BITS`` = 16).

    Ports: ``inp`` In stream {data: signed(in_bits), last}; ``out`` Out
    stream {data: signed(out_bits), last}; ``x0`` In signed(x0_bits);
    ``error`` Out(1).
    """

    def __init__(self, *, in_bits=8, n=15, out_bits=8, max_len=256, x0_bits=X0_BITS):
        check_int("in_bits", in_bits, 2, 16)
        check_int("n", n, 1, 30)
        check_int("out_bits", out_bits, 2, 32)
        check_int("max_len", max_len, 1, 1 << 16)
        check_int("x0_bits", x0_bits, 2, 32)
        self._in_bits, self._n, self._out_bits = in_bits, n, out_bits
        self._max_len, self._x0_bits = max_len, x0_bits
        self._idx_bits = max(1, (max_len - 1).bit_length())
        self._f_bits = 31 - n            # S >= IEXP(0) >= 2^n, so f < 2^(31 - n)
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "data": signed(in_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": signed(out_bits), "last": 1}))),
            "x0": In(signed(x0_bits)),
            "error": Out(1),
        })

    in_bits = property(lambda self: self._in_bits)
    n = property(lambda self: self._n)
    out_bits = property(lambda self: self._out_bits)
    max_len = property(lambda self: self._max_len)
    x0_bits = property(lambda self: self._x0_bits)

    def _iexp(self):
        return IExp(n=self._n, d_bits=self._in_bits + 1, x0_bits=self._x0_bits)

    @property
    def _out_shift_levels(self):
        return -(-max(1, (self._n - 1).bit_length()) // 3)

    @property
    def _pass3_latency(self):
        """Cycles from a pass-3 issue to the result entering the output FIFO."""
        return READ_LATENCY + iexp_latency(self._n) + 1 + 2 + self._out_shift_levels

    def latency(self, length):
        """Cycles from the last input beat of a row of ``length`` elements to
        its first output beat (no stalls, divider idle); checked in simulation.
        The input register (1), pass 2 reads the row (``length``), the sum is
        complete 3 + IEXP later, sum FIFO (1), divide (32), pass 3 (from f to
        the output FIFO), output FIFO (2)."""
        return (1 + length + READ_LATENCY + iexp_latency(self._n) + 1 + 32
                + self._pass3_latency + 2)

    def elaborate(self, platform):
        m = Module()
        ib, idx_bits = self._in_bits, self._idx_bits

        # A slot is written only after its row has been read out (``used``).
        xmem = memory.Memory(shape=signed(ib), depth=_SLOTS << idx_bits, init=[],
                             attrs=NO_COLLISION)
        m.submodules.rows = xmem
        wp = xmem.write_port()
        rp2 = xmem.read_port(domain="sync")
        rp3 = xmem.read_port(domain="sync")

        error = Signal(name="error_flag")
        m.d.comb += self.error.eq(error)

        used = Signal(range(_SLOTS + 1), name="used")        # captured, not yet output
        waiting = Signal(range(_SLOTS + 1), name="waiting")  # captured, pass 2 not started
        # Input register: the requantizer in front of us may be placed far
        # away; the row max compare then starts from flip-flops.
        inp = stage(m, self.inp, self.inp.payload.data, "smax_in", ib)
        cap = RowCapture(m, inp, wp, slots=_SLOTS, idx_bits=idx_bits,
                         max_len=self._max_len, slot_free=used < _SLOTS)

        # ---- pass 2: e and the row sum ----------------------------------
        m.submodules.iexp2 = iexp2 = self._iexp()
        p2 = RowReader(m, rp2, cap, can_start=waiting != 0, can_issue=1, name="p2")
        _, d2, _ = read_minus_max(m, rp2, p2.start, p2.rowmax, name="p2")
        m.d.comb += [iexp2.d.eq(d2), iexp2.x0.eq(self.x0)]
        ve = valid_delay(m, p2.issue, READ_LATENCY + iexp2.latency, name="p2_ve")
        le = delay(m, p2.last, READ_LATENCY + iexp2.latency, name="p2_le")

        acc = Signal(E_BITS, name="acc")
        total = Signal(E_BITS + 1, name="acc_total")
        s_sat = Signal(E_BITS, name="acc_sat")
        m.d.comb += [total.eq(acc + iexp2.e),
                     s_sat.eq(total | total[E_BITS].replicate(E_BITS))]
        m.submodules.sums = sums = fifo.SyncFIFO(width=E_BITS, depth=_SLOTS)
        m.d.comb += [sums.w_data.eq(s_sat), sums.w_en.eq(ve & le)]
        with m.If(ve):
            m.d.sync += acc.eq(Mux(le, 0, s_sat))

        m.submodules.div = div = SeqDivider(num_bits=31, den_bits=E_BITS)
        m.d.comb += [div.inp.valid.eq(sums.r_rdy), div.inp.payload.num.eq(INT32_MAX),
                     div.inp.payload.den.eq(sums.r_data), sums.r_en.eq(div.inp.ready)]

        # ---- pass 3: recompute e, multiply by f, shift --------------------
        m.submodules.iexp3 = iexp3 = self._iexp()
        oq = OutputQueue(m, self.out,
                         depth=1 << (self._pass3_latency + CREDIT_RETURN).bit_length())
        p3 = RowReader(m, rp3, cap, can_start=div.out.valid, can_issue=oq.room, name="p3")
        m.d.comb += oq.issue.eq(p3.issue)
        # f is taken from the divider when the row starts (so that the next
        # divide begins at once) and handed to the multiplier by the row's
        # first element. The next row cannot start before the next divide is
        # done (SeqDivider interval 33 cycles), by which time the first
        # element has long reached the multiplier: one register suffices.
        assert READ_LATENCY + iexp_latency(self._n) < 31 + 2
        f_next = Signal(self._f_bits, name="f_next")
        m.d.comb += div.out.ready.eq(p3.start)
        with m.If(p3.start):
            m.d.sync += f_next.eq(div.out.payload)
        _, d3, _ = read_minus_max(m, rp3, p3.start, p3.rowmax, name="p3")
        m.d.comb += [iexp3.d.eq(d3), iexp3.x0.eq(self.x0)]
        vt = valid_delay(m, p3.issue, READ_LATENCY + iexp3.latency, name="p3_vt")
        tt = delay(m, Cat(p3.first, p3.last), READ_LATENCY + iexp3.latency, name="p3_tt")
        first_t = vt & tt[0]
        f_reg = Signal(self._f_bits, name="f_reg")
        f_use = Signal(self._f_bits, name="f_use")
        m.d.comb += f_use.eq(Mux(first_t, f_next, f_reg))
        with m.If(first_t):
            m.d.sync += f_reg.eq(f_next)
        op_t = Signal.like(iexp3.t, name="op_t")
        op_f = Signal(self._f_bits, name="op_f")
        op_sh = Signal.like(iexp3.shift, name="op_sh")
        m.d.sync += [op_t.eq(iexp3.t), op_f.eq(f_use), op_sh.eq(iexp3.shift)]
        prod, lat_mul = chunked_mul(m, op_t, op_f, name="ef")
        sh = delay(m, op_sh, lat_mul, name="ef_sh")
        y, lat_sh = shift_window(m, prod, sh, lo=32 - self._out_bits,
                                 width=self._out_bits - 1, name="ywin")
        assert lat_sh == self._out_shift_levels
        lat = 1 + lat_mul + lat_sh
        vy = valid_delay(m, vt, lat, name="p3_vy")
        ly = delay(m, tt[1], lat, name="p3_ly")
        assert READ_LATENCY + iexp3.latency + lat == self._pass3_latency
        oq.push(vy, data=y, last=ly)

        # ---- slot accounting and errors ------------------------------------
        m.d.sync += [used.eq(used + cap.done - p3.release),
                     waiting.eq(waiting + cap.done - p2.start)]
        with m.If(cap.overflow | (p2.start & ~iexp2.x0_ok)):
            m.d.sync += error.eq(1)
        return m
