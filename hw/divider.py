"""Sequential unsigned integer divider, shared by the row units.

Shiftmax, ShiftGELU and LayerNorm each need one divide per row
(``(2**31 - 1) // S``); a radix-2 restoring divider does it with one
subtractor of ``den_bits + 1`` bits, one quotient bit per cycle.
"""
from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SeqDivider"]


class SeqDivider(wiring.Component):
    """``quo = num // den`` for unsigned operands, one quotient bit per cycle.

    Widths: ``num`` ``num_bits``, ``den`` ``den_bits``, ``quo`` ``num_bits``.
    Division by zero returns all ones (``2**num_bits - 1``); the row units
    never divide by zero (their divisors are clamped to >= 1).

    Handshake: ``inp`` is taken when the divider is idle; the result is held
    on ``out`` until taken (honours backpressure). Latency: ``num_bits + 1``
    cycles from ``inp`` accepted to ``out.valid``; throughput one divide per
    ``num_bits + 2`` cycles.
    """

    def __init__(self, num_bits=32, den_bits=32):
        for name, value in (("num_bits", num_bits), ("den_bits", den_bits)):
            if not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"{name} must be an integer in [1, 64], not {value!r}")
        self._num_bits, self._den_bits = num_bits, den_bits
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({
                "num": unsigned(num_bits), "den": unsigned(den_bits)}))),
            "out": Out(stream.Signature(unsigned(num_bits))),
        })

    num_bits = property(lambda self: self._num_bits)
    den_bits = property(lambda self: self._den_bits)
    latency = property(lambda self: self._num_bits + 1, doc="cycles from input to output")

    def elaborate(self, platform):
        m = Module()
        n = self._num_bits
        rem = Signal(self._den_bits + 1)
        quo = Signal(n)                     # shifts in quotient bits, shifts out numerator bits
        den = Signal(self._den_bits)
        count = Signal(range(n + 1))
        busy = Signal()

        shifted = Cat(quo[n - 1], rem)      # remainder * 2 + next numerator bit
        diff = Signal(self._den_bits + 2)
        m.d.comb += diff.eq(shifted - den)
        fits = ~diff[-1]

        m.d.comb += [self.inp.ready.eq(~busy & ~self.out.valid),
                     self.out.payload.eq(quo)]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [rem.eq(0), quo.eq(self.inp.payload.num), den.eq(self.inp.payload.den),
                         count.eq(n), busy.eq(1)]
        with m.If(busy):
            with m.If(fits):
                m.d.sync += rem.eq(diff)
            with m.Else():
                m.d.sync += rem.eq(shifted)
            m.d.sync += [quo.eq(Cat(fits, quo[:-1])), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.out.valid.eq(1)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        return m
