# amaranth: UnusedElaboratable=no
# (the inner Requantizer of RowScaleRequantizer is created in __init__, for
# its signature; it is elaborated as our submodule, and if we are never
# elaborated Amaranth warns about the outer component already)
"""Per-token dynamic quantization in hardware (SPEC 4.5), bit-exact with
:func:`trilut.golden.dynquant.row_quantize` and
:func:`trilut.golden.dynquant.requantize_rows`.

:class:`DynQuant` turns rows of int16 (or up to int32) values into int8 rows
with a per-row scale, one integer divide per row (F = ``frac_bits``)::

    a = max |x| over the row
    r = (127 << F) // a                         # SeqDivider, once per row
    q = (x * r + (1 << (F - 1))) >> F           # in [-127, 127], no clamp needed

and sends the row's absmax ``a`` along with every output beat. The next
linear layer's requantizer multiplies its accumulator by ``a`` before its
static dyadic multiplier (:class:`RowScaleRequantizer`):
``y = requantize(acc * a, m, e, bias)``.

Architecture of :class:`DynQuant` (two passes over a buffered row):

* pass 1 (:class:`~trilut.hw.iexp.RowCapture`) writes the row into one of
  four row slots of one RAM (``4 * 2^ceil(log2 max_len)`` x ``in_bits``, one
  write and one read port) while tracking ``max |x|``; at the row's end the
  absmax goes through a 4-deep FIFO to the :class:`~trilut.hw.divider.SeqDivider`
  (``F + 7``-bit quotient, ``den`` = a; a = 0 divides by zero and gives all
  ones, harmless: the row is all zeros, and q = (0 * r + 2^(F-1)) >> F = 0);
* pass 2 (:class:`~trilut.hw.iexp.RowReader`) starts when the row's r is
  ready, reads the row back one element per cycle and computes q with
  :func:`~trilut.hw.requant.dyadic_floor` (``floor(x * r / 2^(F-1))``, then
  ``(. + 1) >> 1``: the requantizer's round-half-up datapath; x * r on
  ``ceil((F + 7) / 17)`` MULT18X18D per 18-bit chunk of x: 2 at int16, F = 24).
  r and a are taken from the divider when pass 2 starts a row and switch at
  the multiplier with the row's first element, so rows follow each other
  without a gap.

A row keeps its slot from pass 1 to the end of pass 2: up to four rows are
in flight (one arriving, one or two waiting for their divide, one leaving),
which is what lets the divide of one row overlap the output of the previous.

Throughput (no stalls): one element per cycle for rows of at least
``F + 9`` elements (the divider's interval: 33 at int16, F = 24); shorter
rows are bound by one divide per ``F + 9`` cycles. Latency (no stalls,
divider idle): the first output of a row leaves :attr:`DynQuant.latency`
cycles after its last input beat (``F + 20`` = 44 at int16, F = 24;
checked in simulation).

Handshake: ``inp`` enters through a register stage (``inp.ready`` depends
only on internal state: that register empty or a free row slot);
``out`` comes from a FIFO and honours backpressure (elements are issued into
the pipeline only against free FIFO entries). ``error`` (sticky, cleared by
reset): a row longer than ``max_len`` (cut at ``max_len`` elements, the rest
up to its ``last`` dropped; the next row is unaffected).

Out payload: ``{"data": signed(8), "absmax": unsigned(in_bits), "last": 1}``;
``absmax`` is the row's a on every beat of the row (constant within a row),
so a consumer may sample it on any beat, e.g. with ``last``.

Tested (Verilator, cocotb, against the golden model, random idle gaps and
backpressure): DynQuant at in_bits = 16 (F = 24, max_len = 40) and
in_bits = 32 (F = 40, max_len = 5): rows of 1, 2, random and max_len
elements, every absmax magnitude from 1 (rounding ties) to 2^(in_bits-1),
all-zero, all -2^(in_bits-1), one-hot, one-cold and all-equal rows,
over-long rows, zero-stall throughput and latency; RowScaleRequantizer with
a 4-entry table (1, 2 and 4 channels used), acc over all of int32, absmax
0..2^15, m over 16 bits, e in [1, 62], bias over int32. Details in
docs/dynquant.md.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.dynquant import FRAC_BITS_MAX, IN_BITS_MAX, QMAX, default_frac_bits
from ..golden.quant import M_BITS_DEFAULT
from .arith import NO_COLLISION, delay, valid_delay
from .divider import SeqDivider
from .iexp import RowCapture, RowReader
from .queue import CREDIT_RETURN, OutputQueue
from .requant import Requantizer, dyadic_floor, dyadic_latency, mult18_count
from .rowio import stage

__all__ = ["DynQuant", "RowScale", "RowScaleRequantizer", "scaled_latency", "scaled_product"]

_SLOTS = 4          # row slots: capture, wait for the divide (x2), output
_READ = 2           # issue -> x registered (sync read port + one register)


class DynQuant(wiring.Component):
    """Streaming per-token dynamic quantizer (see the module docstring).

    Parameters: ``in_bits`` (input width, 2..32, default 16), ``frac_bits``
    (F, in_bits..55, default in_bits + 8), ``max_len`` (longest row, 1..2^16,
    default 4096: BERT-base FFN rows of 3072 fit).

    Ports: ``inp`` In stream {data: signed(in_bits), last}; ``out`` Out
    stream {data: signed(8), absmax: unsigned(in_bits), last}; ``error`` Out(1).
    """

    def __init__(self, *, in_bits=16, frac_bits=None, max_len=4096):
        check_int("in_bits", in_bits, 2, IN_BITS_MAX)
        frac_bits = (default_frac_bits(in_bits) if frac_bits is None
                     else check_int("frac_bits", frac_bits, in_bits, FRAC_BITS_MAX))
        check_int("max_len", max_len, 1, 1 << 16)
        self._in_bits, self._frac_bits, self._max_len = in_bits, frac_bits, max_len
        self._idx_bits = max(1, (max_len - 1).bit_length())
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "data": signed(in_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": signed(8), "absmax": unsigned(in_bits), "last": 1}))),
            "error": Out(1),
        })

    in_bits = property(lambda self: self._in_bits)
    frac_bits = property(lambda self: self._frac_bits)
    max_len = property(lambda self: self._max_len)
    r_bits = property(lambda self: self._frac_bits + 7, doc="width of r = (127 << F) // a")
    mult18 = property(lambda self: mult18_count(self._in_bits, self.r_bits),
                      doc="MULT18X18D blocks of the x * r multiplier")

    @property
    def _mul_latency(self):
        return dyadic_latency(self._in_bits, self.r_bits)

    @property
    def _pass2_latency(self):
        """Cycles from a pass-2 issue to the result entering the output FIFO."""
        return _READ + 1 + self._mul_latency + 1

    @property
    def divide_interval(self):
        """Cycles per divide (SeqDivider: quotient bits + 2)."""
        return self.r_bits + 2

    @property
    def latency(self):
        """Cycles from a row's last input beat to its first output beat (no
        stalls, divider idle): input register (1), FIFO (1), divide
        (r_bits + 1), pass 2, output FIFO (2)."""
        return 1 + 1 + self.r_bits + 1 + self._pass2_latency + 2

    def elaborate(self, platform):
        m = Module()
        ib, idx_bits = self._in_bits, self._idx_bits

        # A slot is written only after its row has been read out (``used``).
        xmem = memory.Memory(shape=signed(ib), depth=_SLOTS << idx_bits, init=[],
                             attrs=NO_COLLISION)
        m.submodules.rows = xmem
        wp = xmem.write_port()
        rp = xmem.read_port(domain="sync")

        error = Signal(name="error_flag")
        m.d.comb += self.error.eq(error)
        used = Signal(range(_SLOTS + 1), name="used")        # captured, not yet output
        # Input register: the element and its |x| (<= 2^(ib-1), fits), so
        # that the source select in front of us and the abs end in
        # flip-flops before the absmax compare.
        inp = stage(m, self.inp, self.inp.payload.data, "dq_in", ib)
        ax = Signal(unsigned(ib), name="ax")
        x_src = self.inp.payload.data
        with m.If(self.inp.ready):
            m.d.sync += ax.eq(Mux(x_src < 0, -x_src, x_src))
        cap = RowCapture(m, inp, wp, slots=_SLOTS, idx_bits=idx_bits,
                         max_len=self._max_len, slot_free=used < _SLOTS)

        # ---- pass 1: absmax of the elements written (wp.en) ---------------
        cur = Signal(unsigned(ib), name="amax_cur")
        amax_new = Signal(unsigned(ib), name="amax_new")
        m.d.comb += amax_new.eq(Mux((cap.idx == 0) | (ax > cur), ax, cur))
        with m.If(wp.en):
            m.d.sync += cur.eq(amax_new)

        m.submodules.amax_q = amax_q = fifo.SyncFIFO(width=ib, depth=_SLOTS)
        m.d.comb += [amax_q.w_data.eq(amax_new), amax_q.w_en.eq(cap.done)]
        m.submodules.div = div = SeqDivider(num_bits=self.r_bits, den_bits=ib)
        m.d.comb += [div.inp.valid.eq(amax_q.r_rdy),
                     div.inp.payload.num.eq(QMAX << self._frac_bits),
                     div.inp.payload.den.eq(amax_q.r_data),
                     amax_q.r_en.eq(div.inp.ready)]
        # The absmax also waits for its quotient, in order, beside the divider.
        m.submodules.amax_r = amax_r = fifo.SyncFIFO(width=ib, depth=_SLOTS)
        m.d.comb += [amax_r.w_data.eq(amax_q.r_data),
                     amax_r.w_en.eq(amax_q.r_rdy & div.inp.ready)]

        # ---- pass 2: q = (x * r + 2^(F-1)) >> F ----------------------------
        oq = OutputQueue(m, self.out,
                         depth=1 << (self._pass2_latency + CREDIT_RETURN).bit_length())
        p2 = RowReader(m, rp, cap, can_start=div.out.valid, can_issue=oq.room, name="p2")
        m.d.comb += [oq.issue.eq(p2.issue), div.out.ready.eq(p2.start),
                     amax_r.r_en.eq(p2.start)]
        # r and a are taken when the row starts and switch at the multiplier
        # with the row's first element (_READ cycles later). The next start
        # needs the next divide, at least r_bits + 2 cycles away: one holding
        # register suffices.
        assert _READ < self.divide_interval
        r_next = Signal(self.r_bits, name="r_next")
        a_next = Signal(unsigned(ib), name="a_next")
        with m.If(p2.start):
            m.d.sync += [r_next.eq(div.out.payload), a_next.eq(amax_r.r_data)]
        x = Signal(signed(ib), name="p2_x")
        m.d.sync += x.eq(rp.data)
        vx = valid_delay(m, p2.issue, _READ, name="p2_vx")
        tags = delay(m, Cat(p2.first, p2.last), _READ, name="p2_tags")
        first_x = vx & tags[0]
        r_reg = Signal(self.r_bits, name="r_reg")
        a_reg = Signal(unsigned(ib), name="a_reg")
        r_use = Signal(self.r_bits, name="r_use")
        a_use = Signal(unsigned(ib), name="a_use")
        m.d.comb += [r_use.eq(Mux(first_x, r_next, r_reg)),
                     a_use.eq(Mux(first_x, a_next, a_reg))]
        with m.If(first_x):
            m.d.sync += [r_reg.eq(r_next), a_reg.eq(a_next)]
        shift = Signal(6, name="p2_shift")
        m.d.comb += shift.eq(self._frac_bits - 1)
        # Operands registered after the r select (the MULT18X18D inputs are
        # not registered inside the block: without this the select limits Fmax).
        x_op = Signal(signed(ib), name="p2_x_op")
        r_op = Signal(self.r_bits, name="p2_r_op")
        m.d.sync += [x_op.eq(x), r_op.eq(r_use)]
        fl, lat = dyadic_floor(m, x_op, r_op, shift, name="xr")
        assert lat == self._mul_latency
        y = Signal(signed(8), name="p2_y")
        m.d.sync += y.eq((fl + 1) >> 1)          # |q| <= 127: proved in golden.dynquant
        lat += 2
        vy = valid_delay(m, vx, lat, name="p2_vy")
        ly = delay(m, tags[1], lat, name="p2_ly")
        ay = delay(m, a_use, lat, name="p2_ay")
        assert _READ + lat == self._pass2_latency
        oq.push(vy, data=y, absmax=ay, last=ly)

        # ---- slot accounting and errors ------------------------------------
        m.d.sync += used.eq(used + cap.done - p2.release)
        with m.If(cap.overflow):
            m.d.sync += error.eq(1)
        return m


def scaled_latency(acc_bits, scale_bits):
    """Latency of :func:`scaled_product` for these operand widths."""
    return 1 + dyadic_latency(acc_bits, scale_bits)


def scaled_product(m, value, scale, *, name):
    """``value * scale`` (signed x unsigned, exact), pipelined; returns
    ``(product, latency)``. The operands are registered before the
    multipliers (they arrive from a source select and a queue), then
    :func:`~trilut.hw.requant.dyadic_floor` without a shift."""
    v, s = Signal.like(value, name=f"{name}_x"), Signal.like(scale, name=f"{name}_s")
    m.d.sync += [v.eq(value), s.eq(scale)]
    prod, lat = dyadic_floor(m, v, s, Signal(6, name=f"{name}_no_shift"), name=name)
    assert 1 + lat == scaled_latency(len(value), len(scale))
    return prod, 1 + lat


class RowScale(wiring.Component):
    """``acc * absmax``: a row-quantized linear layer's accumulator brought
    to its static scale (golden :func:`~trilut.golden.dynquant.scale_rows`),
    pipelined on :attr:`mult18` MULT18X18D (:func:`scaled_product`: the
    operands registered, then :func:`~trilut.hw.requant.dyadic_floor` with
    no shift).

    Parameters: ``acc_bits`` (2..47, default 32) and ``scale_bits`` (the
    DynQuant's ``in_bits``, default 16; acc_bits + scale_bits <= 48).

    Ports: ``inp`` In stream {data: signed(acc_bits), absmax:
    unsigned(scale_bits), last} (absmax sampled on every beat); ``out`` Out
    stream {data: signed(acc_bits + scale_bits), last}.

    Throughput one beat per cycle; honours backpressure through a credit
    FIFO (``inp.ready`` depends only on the credit count, ``out`` comes from
    the FIFO). Latency :attr:`latency` cycles from ``inp`` accepted to the
    FIFO write (+1-2 to ``out``).
    """

    def __init__(self, *, acc_bits=32, scale_bits=16):
        check_int("acc_bits", acc_bits, 2, 47)
        check_int("scale_bits", scale_bits, 1, 48 - acc_bits)
        self._acc_bits, self._scale_bits = acc_bits, scale_bits
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "data": signed(acc_bits), "absmax": unsigned(scale_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": signed(acc_bits + scale_bits), "last": 1}))),
        })

    acc_bits = property(lambda self: self._acc_bits)
    scale_bits = property(lambda self: self._scale_bits)
    latency = property(lambda self: scaled_latency(self._acc_bits, self._scale_bits),
                       doc="cycles from inp accepted to the FIFO write")
    mult18 = property(lambda self: mult18_count(self._acc_bits, self._scale_bits))

    def elaborate(self, platform):
        m = Module()
        lat = self.latency
        oq = OutputQueue(m, self.out, depth=1 << (lat + CREDIT_RETURN).bit_length(), name="scaled")
        accept = Signal(name="accept")
        m.d.comb += [self.inp.ready.eq(oq.room), accept.eq(self.inp.valid & oq.room),
                     oq.issue.eq(accept)]
        prod, plat = scaled_product(m, self.inp.payload.data, self.inp.payload.absmax,
                                    name="scale")
        assert plat == lat
        valid = valid_delay(m, accept, lat, name="scale_v")
        last = delay(m, self.inp.payload.last, lat, name="scale_last")
        oq.push(valid, data=prod, last=last)
        return m


class RowScaleRequantizer(wiring.Component):
    """The requantizer after a row-quantized linear layer:
    ``y = clamp(((acc * absmax + bias) * m + (1 << (e-1))) >> e, lo, hi)``,
    bit-exact with :func:`trilut.golden.dynquant.requantize_rows`.

    :class:`RowScale` (``acc * absmax``) feeds an unmodified
    :class:`~trilut.hw.requant.Requantizer` with ``acc_bits + scale_bits``-bit
    input. Every member other than ``inp`` (``out``, ``error``, the
    constants ``m``/``e``/``bias`` or the per-channel ``param`` stream and
    ``num_channels``) is the inner Requantizer's, with the same meaning.

    Parameters: ``acc_bits`` (default 32), ``scale_bits`` (the DynQuant's
    ``in_bits``, default 16; acc_bits + scale_bits <= 48), and the
    Requantizer's ``m_bits``, ``out_bits``, ``channels``, ``bias_bits``.

    Ports: ``inp`` In stream {data: signed(acc_bits), absmax:
    unsigned(scale_bits), last}; absmax is sampled on every beat.

    Throughput one beat per cycle; honours backpressure (``inp.ready``
    depends only on the credit count). Latency :attr:`latency` cycles from
    ``inp`` accepted to the inner Requantizer's FIFO write.
    """

    def __init__(self, *, acc_bits=32, scale_bits=16, m_bits=M_BITS_DEFAULT, out_bits=8,
                 channels=1, bias_bits=32):
        self._scale = RowScale(acc_bits=acc_bits, scale_bits=scale_bits)
        self._rq = Requantizer(acc_bits=acc_bits + scale_bits, m_bits=m_bits,
                               out_bits=out_bits, channels=channels, bias_bits=bias_bits)
        members = dict(self._rq.signature.members)
        members["inp"] = self._scale.signature.members["inp"]
        super().__init__(members)

    acc_bits = property(lambda self: self._scale.acc_bits)
    scale_bits = property(lambda self: self._scale.scale_bits)
    m_bits = property(lambda self: self._rq.m_bits)
    out_bits = property(lambda self: self._rq.out_bits)
    bias_bits = property(lambda self: self._rq.bias_bits)
    channels = property(lambda self: self._rq.channels)

    @property
    def latency(self):
        """Cycles from inp accepted to the inner Requantizer's FIFO write:
        the acc * absmax pipeline, the credit FIFO (2), the Requantizer."""
        return self._scale.latency + 2 + self._rq.latency

    @property
    def mult18(self):
        """MULT18X18D blocks: the scale product plus the inner Requantizer's."""
        return self._scale.mult18 + self._rq.mult18

    def param_beats(self, m, e, bias):
        """``param`` stream payloads for per-channel arrays (the Requantizer's)."""
        return self._rq.param_beats(m, e, bias)

    def elaborate(self, platform):
        m = Module()
        rq = m.submodules.requant = self._rq
        sc = m.submodules.scale = self._scale
        wiring.connect(m, wiring.flipped(self.inp), sc.inp)
        m.d.comb += [rq.inp.valid.eq(sc.out.valid), sc.out.ready.eq(rq.inp.ready),
                     rq.inp.payload.eq(sc.out.payload)]
        for name, member in rq.signature.members.items():
            if name == "inp":
                continue
            ours, theirs = getattr(self, name), getattr(rq, name)
            if member.is_signature:
                if member.flow == In:
                    wiring.connect(m, wiring.flipped(ours), theirs)
                else:
                    wiring.connect(m, theirs, wiring.flipped(ours))
            elif member.flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        return m
