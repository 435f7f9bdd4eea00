"""Streaming ShiftGELU (I-ViT IntGELU, SPEC 4.3), bit-exact with
:func:`trilut.golden.nonlinear.shiftgelu` in both of its modes.

For every row (one element per ``inp`` beat, ``last`` on the final one), with
``x0 = floor(-1 / (1.702 s))`` on the ``x0`` port::

    m = max(row)                      # mode "ivit" (I-ViT IntGELU)
    m = max(x, 0) per element         # mode "accurate" (SPEC 4.3 second mode)
    e1 = IEXP(x - m; n);  e2 = min(IEXP(-m; n), 2^31 - 1)
    S = min(e1 + e2, 2^31 - 1);  f = (2^31 - 1) // S        # per ELEMENT
    sig = (e1 * f) >> (32 - sig_bits);  y = x * sig

Front end, mode "ivit": pass 1 (:class:`~trilut.hw.iexp.RowCapture`) writes
the row into one of two row slots (``2 * 2^ceil(log2 max_len)`` x
``in_bits``, one block RAM at the defaults) and tracks the max; pass 2 reads
it back one element per cycle (rows back to back, no idle cycle between
them) into ``e1 = IEXP(x - m)`` (:class:`~trilut.hw.iexp.IExp`) and
``e2 = IEXP(-m)`` from a second, saturating IExp (``-m > 0`` when the row
max is negative) fed with the row's ``-m`` so that both arrive together.
Mode "accurate": no row buffer; each input beat goes straight into
``e1 = IEXP(min(x, 0))`` and ``e2 = IEXP(-max(x, 0))`` (rows are still
counted, to cut over-long ones like every row unit).

Back end (both modes), one element per cycle:

* ``S`` saturated, then ``f`` from a fully pipelined restoring divider
  (:func:`reciprocal_pipeline`: one quotient bit per stage, 30 stages since
  ``S >= 2|x0| >= 2``). Cost (synthesized alone for ECP5): 1,319 LUT4 (30
  compare-subtracts of 2..31 bits and their multiplexers) and 1,827
  flip-flops (remainders, divisors and quotient bits in flight), about half
  of the unit. Thirty :class:`~trilut.hw.divider.SeqDivider` round-robin
  would need as many 31-bit subtractors and ~100 flip-flops each, plus
  control and result multiplexers;
* ``e1 * f`` as ``t * f`` (``e1 = t << shift``; ``t`` has ``a_bits + 1``
  bits: 9 at n = 23, 16 at n = 16) on two MULT18X18D, then the shifted
  window ``>> (32 - sig_bits)`` and ``y = x * sig`` (one more MULT18X18D).
  Side data (``x``, ``last``, ``t``, ``shift``) waits in small RAM delay
  lines (:func:`~trilut.hw.iexp.delay_mem`) instead of ~1,000 flip-flops.

Widths: ``y`` is ``signed(in_bits + sig_bits - 1)`` (``|y| <= 2^(in_bits-1) *
(2^(sig_bits-1) - 1)``: 15 bits for "ivit" defaults, 31 for "accurate"), at
scale ``s * 2^-(sig_bits-1)`` (golden ``shiftgelu_scale``), before
requantization.

Throughput (no stalls): one element per cycle for rows of any length,
including rows of one element (pass 1 of the next row overlaps pass 2 of the
current one); measured 1.000 elements/cycle sustained over 8 rows of 256.
Latency: :meth:`ShiftGELU.latency` (defaults: "ivit" 54 cycles from a row's
last input to its first output; "accurate" 50 cycles from an element in to
its result out).

Handshake: ``inp.ready`` depends only on internal state (a free row slot, or
in "accurate" mode a free output-FIFO credit); ``out`` comes from a FIFO and
honours backpressure (elements are issued only against free FIFO entries,
the pipeline never stalls). ``x0`` must be stable from two cycles before a
row's first beat until its last output.

``error`` (sticky, cleared by reset): a row longer than ``max_len`` (cut at
``max_len`` elements, the rest up to its ``last`` dropped; the next row is
unaffected), or a row processed with an invalid ``x0`` (``x0 >= 0`` or
``|x0| * 2^n > 2^31 - 1``: ``|x0| > 255`` at n = 23, ``> 32767`` at n = 16;
its outputs are then undefined).

Tested (Verilator, cocotb, against the golden model): "ivit" with in_bits = 8,
n = 23, sig_bits = 8, max_len = 256, and "accurate" with in_bits = 16, n = 16,
sig_bits = 16, max_len = 20; rows of 1, 2, random lengths, max_len and
longer; scales 2^-2..2^-5 and 1/12.7 (x0 = -3, -5, -10, -19, -8; plus 2^-10,
2^-14 for int16), s = 1 (x0 = -1) and the largest valid |x0|; all-equal,
one-hot, one-cold, all-min, all-max and alternating min/max rows; rows with a
negative max (the saturating e2); random idle gaps and backpressure.
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.nonlinear import GELU_DEFAULTS, X0_BITS
from .arith import NO_COLLISION, delay, valid_delay
from .iexp import (E_BITS, READ_LATENCY, IExp, RowCapture, RowReader, chunked_mul,
                   delay_mem, iexp_latency, read_minus_max, shift_window)
from .queue import CREDIT_RETURN, OutputQueue
from .rowio import stage

from ..golden.checks import check_int

__all__ = ["ShiftGELU", "reciprocal_pipeline", "reciprocal_latency", "MODES"]

MODES = ("ivit", "accurate")
IN_BITS_DEFAULT = {"ivit": 8, "accurate": 16}
_SLOTS = 2
_Q_BITS = 5                     # both IEXPs use 5 division stages, so they line up


def reciprocal_latency(num_bits=31, min_den=2):
    """Stages of :func:`reciprocal_pipeline`."""
    return sum(1 for i in range(num_bits) if (1 << (num_bits - i)) - 1 >= min_den)


def reciprocal_pipeline(m, den, *, num_bits=31, min_den=2, name="rdiv"):
    """``(2^num_bits - 1) // den`` for ``min_den <= den < 2^num_bits``, fully
    pipelined: a restoring division with one quotient bit per stage (a
    ``w``-bit compare-subtract at the stage producing quotient bit
    ``num_bits - w``; the leading bits that ``den >= min_den`` forces to 0 have
    no stage). Returns ``(quotient, latency)``; a new ``den`` every cycle."""
    first = next(i for i in reversed(range(num_bits))
                 if (1 << (num_bits - i)) - 1 >= min_den)
    rem = Const((1 << (num_bits - first - 1)) - 1, max(1, num_bits - first - 1))
    q = Const(0, 0)
    d = den
    lat = 0
    for i in range(first, -1, -1):
        w = num_bits - i
        rem2 = Cat(Const(1, 1), rem[:w - 1])          # 2 rem + 1 (every numerator bit is 1)
        hi_zero = (d[w:] == 0) if w < len(d) else Const(1, 1)
        diff = Signal(w + 1, name=f"{name}_diff{i}")
        m.d.comb += diff.eq(rem2 - d[:w])
        fits = hi_zero & ~diff[w]
        nrem = Signal(w, name=f"{name}_rem{i}")
        nq = Signal(len(q) + 1, name=f"{name}_q{i}")
        m.d.sync += [nrem.eq(Mux(fits, diff[:w], rem2)), nq.eq(Cat(fits, q))]
        if i:
            nd = Signal(len(den), name=f"{name}_den{i}")
            m.d.sync += nd.eq(d)
            d = nd
        rem, q = nrem, nq
        lat += 1
    assert lat == reciprocal_latency(num_bits, min_den)
    return q, lat


class ShiftGELU(wiring.Component):
    """Streaming ShiftGELU row unit (see the module docstring).

    Parameters: ``mode`` ("ivit" or "accurate"), ``in_bits`` (2..16; default
    8 for "ivit", 16 for "accurate"), ``n`` and ``sig_bits`` (default per
    mode from golden ``GELU_DEFAULTS``: 23 and 8 for "ivit", 16 and 16 for
    "accurate"; n in 1..30, sig_bits in 2..24), ``max_len`` (>= 1),
    ``x0_bits`` (default ``X0_BITS`` = 16).

    Ports: ``inp`` In stream {data: signed(in_bits), last}; ``out`` Out
    stream {data: signed(in_bits + sig_bits - 1), last}; ``x0`` In
    signed(x0_bits) (the constant for the scale 1.702 s); ``error`` Out(1).
    """

    def __init__(self, *, in_bits=None, n=None, sig_bits=None, max_len=256, mode="ivit",
                 x0_bits=X0_BITS):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        in_bits = IN_BITS_DEFAULT[mode] if in_bits is None else in_bits
        n = GELU_DEFAULTS[mode][0] if n is None else n
        sig_bits = GELU_DEFAULTS[mode][1] if sig_bits is None else sig_bits
        check_int("in_bits", in_bits, 2, 16)
        check_int("n", n, 1, 30)
        check_int("sig_bits", sig_bits, 2, 24)
        check_int("max_len", max_len, 1, 1 << 16)
        check_int("x0_bits", x0_bits, 2, 32)
        self._in_bits, self._n, self._sig_bits = in_bits, n, sig_bits
        self._max_len, self._mode, self._x0_bits = max_len, mode, x0_bits
        self._idx_bits = max(1, (max_len - 1).bit_length())
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "data": signed(in_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": signed(self.out_bits), "last": 1}))),
            "x0": In(signed(x0_bits)),
            "error": Out(1),
        })

    in_bits = property(lambda self: self._in_bits)
    n = property(lambda self: self._n)
    sig_bits = property(lambda self: self._sig_bits)
    max_len = property(lambda self: self._max_len)
    mode = property(lambda self: self._mode)
    x0_bits = property(lambda self: self._x0_bits)
    out_bits = property(lambda self: self._in_bits + self._sig_bits - 1,
                        doc="width of y = x * sig")

    @property
    def _iexp_latency(self):
        return iexp_latency(self._n, quotient_bits=_Q_BITS)

    @property
    def _shift_levels(self):
        return -(-max(1, (self._n - 1).bit_length()) // 3)

    @property
    def _front_latency(self):
        """"ivit": pass-2 issue -> IEXP inputs; "accurate": input beat -> IEXP inputs."""
        return READ_LATENCY if self._mode == "ivit" else 1

    @property
    def _back_latency(self):
        """IEXP inputs -> result into the output FIFO: IEXP, S (1), divider,
        operands (1), multiply (2), window, x * sig (1)."""
        return (self._iexp_latency + 1 + reciprocal_latency() + 1 + 2
                + self._shift_levels + 1)

    def latency(self, length):
        """Cycles from a row's last input beat to its first output beat, no
        stalls (input beats back to back); checked in simulation. "ivit":
        pass 2 starts two cycles after the last beat (the input register,
        the capture), then the pipeline and the output FIFO (2): independent
        of ``length`` (54 at the defaults).
        "accurate": element-wise, so the first output follows the first input
        by a constant: ``1 + back + 2 - (length - 1)``."""
        if self._mode == "ivit":
            return 2 + self._front_latency + self._back_latency + 2
        return self._front_latency + self._back_latency + 2 - (length - 1)

    def elaborate(self, platform):
        m = Module()
        ib, n = self._in_bits, self._n
        error = Signal(name="error_flag")
        m.d.comb += self.error.eq(error)
        oq = OutputQueue(m, self.out,
                         depth=1 << (self._front_latency + self._back_latency
                                     + CREDIT_RETURN).bit_length())
        # d = x - max(row) needs in_bits + 1 bits; min(x, 0) and -max(x, 0) fit in_bits.
        d_bits = ib + 1 if self._mode == "ivit" else ib
        m.submodules.iexp1 = iexp1 = IExp(n=n, d_bits=d_bits, x0_bits=self._x0_bits,
                                          quotient_bits=_Q_BITS)
        m.submodules.iexp2 = iexp2 = IExp(n=n, d_bits=d_bits, x0_bits=self._x0_bits,
                                          signed_input=self._mode == "ivit",
                                          quotient_bits=_Q_BITS)
        assert iexp1.latency == iexp2.latency == self._iexp_latency
        m.d.comb += [iexp1.x0.eq(self.x0), iexp2.x0.eq(self.x0)]
        front = self._row_front if self._mode == "ivit" else self._element_front
        x_b, v_b, l_b = front(m, oq, iexp1, iexp2, error)

        # ---- S = min(e1 + e2, 2^31 - 1) -> f = (2^31 - 1) // S ---------------
        total = Signal(E_BITS + 1, name="s_total")
        s_sat = Signal(E_BITS, name="s_sat")
        m.d.comb += total.eq(iexp1.e + iexp2.e)
        m.d.sync += s_sat.eq(total | total[E_BITS].replicate(E_BITS))
        f, lat_div = reciprocal_pipeline(m, s_sat, name="rdiv")

        # ---- sig = (t * f << shift) >> (32 - sig_bits) -------------------------
        ts = delay_mem(m, Cat(iexp1.t, iexp1.shift), 1 + lat_div, name="ts_dly")
        op_t = Signal.like(iexp1.t, name="op_t")
        op_sh = Signal.like(iexp1.shift, name="op_sh")
        op_f = Signal(len(f), name="op_f")
        m.d.sync += [op_t.eq(ts[:len(op_t)]), op_sh.eq(ts[len(op_t):]), op_f.eq(f)]
        prod, lat_mul = chunked_mul(m, op_t, op_f, name="ef")
        sh = delay(m, op_sh, lat_mul, name="ef_sh")
        sig, lat_sh = shift_window(m, prod, sh, lo=32 - self._sig_bits,
                                   width=self._sig_bits - 1, name="sig")
        assert lat_sh == self._shift_levels

        # ---- y = x * sig -------------------------------------------------------
        wait = self._iexp_latency + 1 + lat_div + 1 + lat_mul + lat_sh
        xl = delay_mem(m, Cat(x_b, l_b), wait, name="x_dly")
        y = Signal(signed(self.out_bits), name="y")
        m.d.sync += y.eq(xl[:ib].as_signed() * sig)
        vy = valid_delay(m, v_b, wait + 1, name="vy")
        ly = Signal(name="ly")
        m.d.sync += ly.eq(xl[ib])
        assert wait + 1 == self._back_latency
        oq.push(vy, data=y, last=ly)
        return m

    def _row_front(self, m, oq, iexp1, iexp2, error):
        """Mode "ivit": row buffer, row max, e1 = IEXP(x - m), e2 = IEXP(-m)."""
        ib, idx_bits = self._in_bits, self._idx_bits
        # A slot is written only after its row has been read out (``used``).
        xmem = memory.Memory(shape=signed(ib), depth=_SLOTS << idx_bits, init=[],
                             attrs=NO_COLLISION)
        m.submodules.rows = xmem
        wp = xmem.write_port()
        rp = xmem.read_port(domain="sync")
        used = Signal(range(_SLOTS + 1), name="used")      # captured, not yet read back
        # Input register (as Shiftmax's): the unit in front may be placed far
        # away; the row max compare and the capture's enables then start
        # from flip-flops.
        inp = stage(m, self.inp, self.inp.payload.data, "gelu_in", ib)
        cap = RowCapture(m, inp, wp, slots=_SLOTS, idx_bits=idx_bits,
                         max_len=self._max_len, slot_free=used < _SLOTS)
        rd = RowReader(m, rp, cap, can_start=used != 0, can_issue=oq.room, name="p2")
        m.d.comb += oq.issue.eq(rd.issue)
        m.d.sync += used.eq(used + cap.done - rd.release)
        with m.If(cap.overflow | (rd.start & ~iexp1.x0_ok)):
            m.d.sync += error.eq(1)

        x_rd, d1, m_row = read_minus_max(m, rp, rd.start, rd.rowmax, name="p2")
        x_b = Signal(signed(ib), name="x_b")
        m.d.sync += x_b.eq(x_rd)                           # aligned with d1
        # -m of the row whose d1 is entering iexp1 (m_row is that row's max from
        # two cycles after its start, d1 from three): both IEXPs line up.
        neg_m = Signal(signed(ib + 1), name="neg_m")
        m.d.sync += neg_m.eq(-m_row)
        m.d.comb += [iexp1.d.eq(d1), iexp2.d.eq(neg_m)]
        v_b = valid_delay(m, rd.issue, READ_LATENCY, name="v_b")
        l_b = delay(m, rd.last, READ_LATENCY, name="l_b")
        return x_b, v_b, l_b

    def _element_front(self, m, oq, iexp1, iexp2, error):
        """Mode "accurate": no row buffer; per element m = max(x, 0),
        e1 = IEXP(x - m) = IEXP(min(x, 0)), e2 = IEXP(-max(x, 0)). Rows are
        only counted, to cut rows longer than max_len like the other units."""
        ib = self._in_bits
        idx = Signal(self._idx_bits, name="idx")
        dropping = Signal(name="dropping")
        x, last = self.inp.payload.data, self.inp.payload.last
        m.d.comb += self.inp.ready.eq(dropping | oq.room)
        accept = self.inp.valid & self.inp.ready
        issue = Signal(name="issue")
        m.d.comb += [issue.eq(accept & ~dropping), oq.issue.eq(issue)]
        end = last | (idx == self._max_len - 1)
        with m.If(accept):
            with m.If(dropping):
                with m.If(last):
                    m.d.sync += dropping.eq(0)
            with m.Elif(end):
                m.d.sync += idx.eq(0)
                with m.If(~last):
                    m.d.sync += [dropping.eq(1), error.eq(1)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        with m.If(issue & (idx == 0) & ~iexp1.x0_ok):
            m.d.sync += error.eq(1)
        x_b = Signal(signed(ib), name="x_b")
        v_b, l_b = Signal(name="v_b"), Signal(name="l_b")
        d1 = Signal(signed(ib), name="d1")
        d2 = Signal(signed(ib), name="d2")
        m.d.sync += [x_b.eq(x), v_b.eq(issue), l_b.eq(end),
                     d1.eq(Mux(x < 0, x, 0)), d2.eq(Mux(x > 0, -x, 0))]
        m.d.comb += [iexp1.d.eq(d1), iexp2.d.eq(d2)]
        return x_b, v_b, l_b
