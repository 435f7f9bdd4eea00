"""The LINEAR epilogue, ``lanes`` results per cycle.

An engine's ``out`` beat carries ``lanes`` accumulators; the accelerator's
epilogue today serializes them to one per cycle, so with a k-block count
below ``lanes`` the epilogue, not the engine, sets a pass's pace.
:class:`LinearEpilogue` takes the whole beat at once and applies, per lane in
parallel, what the top's serial chain applies per element (golden
:func:`~trilut.golden.dynquant.requantize_rows`)::

    y = clamp(((acc * absmax + bias) * m + (1 << (e - 1))) >> e, lo, hi)

with the row's ``absmax`` (1 for a statically quantized row), per-channel
``(m, e, bias)`` and ``[lo, hi]`` the ``out_bits`` range, or int8 while the
runtime input ``narrow`` is high (an int8 destination).

It is built from the existing pieces, not a copy of them: per lane the row
scale is :func:`~trilut.hw.dynquant.scaled_product` (as in
:class:`~trilut.hw.dynquant.RowScale`), then the requantizer's datapath and
per-channel table (:class:`~trilut.hw.requant._RequantPath` with ``lanes``
lanes, as inside :class:`~trilut.hw.int8mm.Int8Engine`), then the output
queue of the row units (:class:`~trilut.hw.queue.OutputQueue`).
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.quant import INT8_MAX, M_BITS_DEFAULT
from .arith import delay, valid_delay
from .queue import CREDIT_RETURN, OutputQueue
from .dynquant import scaled_latency, scaled_product
from .requant import _RequantPath, mult18_count

__all__ = ["LinearEpilogue"]


class LinearEpilogue(wiring.Component):
    """Row scale, per-channel dyadic requantization and clamp, ``lanes``
    elements per beat (see the module docstring).

    Parameters: ``lanes`` elements per beat (the engine's lanes); ``acc_bits``
    accumulator width (default 32); ``scale_bits`` width of the row absmax
    (default 16; ``acc_bits + scale_bits <= 48``); ``m_bits``, ``bias_bits``
    and ``out_bits`` (8 or 16) as :class:`~trilut.hw.requant.Requantizer`;
    ``channels`` per-channel table entries (a multiple of ``lanes``: the
    constants are always per output channel, as a LINEAR's are).

    Ports: ``inp`` stream ``{"data": signed(acc_bits) x lanes, "absmax":
    unsigned(scale_bits), "last": 1}`` (an engine's ``out`` beat plus its
    row's absmax, sampled on every beat); ``out`` stream ``{"data":
    signed(out_bits) x lanes, "last": 1}``; ``narrow`` (static while rows are
    in flight): clamp to int8 instead of the ``out_bits`` range; the
    constants as :class:`~trilut.hw.requant.Requantizer`'s table (the
    ``param`` stream and ``num_channels``; element l of a beat uses channel
    ``counter + l``, the counter wrapping at ``num_channels`` and restarting
    after ``last``); ``error`` sticky (param table overflow).

    Throughput one beat (``lanes`` results) per cycle. Latency
    :attr:`latency` cycles from ``inp`` accepted to the output queue, plus
    1-2 to ``out``. Honours backpressure: ``inp.ready`` depends only on a
    registered credit count, never combinationally on ``out.ready``.
    DSP: :attr:`mult18` MULT18X18D (4 per lane at the defaults).
    Tested against golden ``requantize_rows`` with lanes 4 (acc 24 bits,
    absmax 8, int8 out) and 16 (the defaults, tables of 64 channels), every
    table size a multiple of lanes, acc over its full range, absmax 0 to
    ``2**(scale_bits - 1)`` (a signed row's absmax), m 0 to its maximum, e in [1, 62], both clamps, random idle
    gaps and backpressure.
    """

    def __init__(self, *, lanes=16, acc_bits=32, scale_bits=16, m_bits=M_BITS_DEFAULT,
                 bias_bits=32, out_bits=16, channels=256):
        check_int("lanes", lanes, 1, 256)
        check_int("channels", channels, lanes, 4096)
        check_int("acc_bits", acc_bits, 2, 47)
        check_int("scale_bits", scale_bits, 1, 48 - acc_bits)
        self._scale_bits = scale_bits
        self._path = _RequantPath(lanes=lanes, acc_bits=acc_bits + scale_bits, m_bits=m_bits,
                                  out_bits=out_bits, bias_bits=bias_bits, channels=channels)
        self._acc_bits = acc_bits
        self._scale_latency = scaled_latency(acc_bits, scale_bits)
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(acc_bits), lanes),
                "absmax": unsigned(scale_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(out_bits), lanes), "last": 1}))),
            "narrow": In(1),
            **self._path.table.members(),
            "error": Out(1),
        })

    lanes = property(lambda self: self._path.lanes)
    acc_bits = property(lambda self: self._acc_bits)
    scale_bits = property(lambda self: self._scale_bits)
    m_bits = property(lambda self: self._path.m_bits)
    bias_bits = property(lambda self: self._path.bias_bits)
    out_bits = property(lambda self: self._path.out_bits)
    channels = property(lambda self: self._path.channels)
    latency = property(lambda self: self._scale_latency + self._path.latency,
                       doc="cycles from inp accepted to the output queue")
    mult18 = property(lambda self: self.lanes * mult18_count(self._acc_bits, self._scale_bits)
                      + self._path.mult18, doc="MULT18X18D blocks used")

    def bounds(self, narrow):
        """``(lo, hi)`` of the clamp for a ``narrow`` setting."""
        if narrow:
            return -(INT8_MAX + 1), INT8_MAX
        return self._path.lo, self._path.hi

    def param_beats(self, m, e, bias):
        """``param`` stream payloads for per-channel arrays (checked first)."""
        return self._path.param_beats(m, e, bias)

    def cycles(self, beats):
        """Analytic cycles for ``beats`` input beats at full rate (first
        accept to last output)."""
        return beats + self.latency + 2

    def elaborate(self, platform):
        m = Module()
        lat = self.latency
        oq = OutputQueue(m, self.out, depth=1 << (lat + CREDIT_RETURN).bit_length(), name="epi")
        accept = Signal(name="accept")
        m.d.comb += [self.inp.ready.eq(oq.room), accept.eq(self.inp.valid & oq.room),
                     oq.issue.eq(accept)]

        # Row scale per lane: acc * absmax (as RowScale).
        scaled = []
        for lane in range(self.lanes):
            prod, slat = scaled_product(m, self.inp.payload.data[lane], self.inp.payload.absmax,
                                        name=f"sc{lane}")
            assert slat == self._scale_latency
            scaled.append(prod)
        advance = valid_delay(m, accept, self._scale_latency, name="sc_valid")
        last = delay(m, self.inp.payload.last, self._scale_latency, name="sc_last")

        valid, ys, last_out, overflow = self._path.elaborate(m, self, advance, scaled, last)
        lo8, hi8 = self.bounds(True)
        clamped = []
        for lane, y in enumerate(ys):
            c = Signal(signed(self.out_bits), name=f"epi_y{lane}")
            m.d.comb += c.eq(Mux(self.narrow & (y > hi8), hi8,
                                 Mux(self.narrow & (y < lo8), lo8, y)))
            clamped.append(c)
        oq.push(valid, data=Cat(*clamped), last=last_out)

        error = Signal()
        with m.If(overflow):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        return m
