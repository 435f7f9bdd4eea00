"""Sequential exact integer square root (floor), one result bit per cycle.

LayerNorm needs ``std = isqrt(var)`` once per row (SPEC 4.4 step 3). The
digit recurrence below is the restoring "pencil and paper" square root: it
brings down the radicand two bits at a time and decides one root bit per
step, with a subtractor only ``root_bits + 4`` bits wide (the partial
remainder never exceeds twice the partial root), so a 42-bit radicand costs
a 25-bit subtractor, not a 42-bit one.

It computes exactly ``math.isqrt`` (and ``trilut.golden.nonlinear.isqrt``,
which runs the same recurrence in its radix-4 "bit" form on 64-bit words).
"""
from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SeqIsqrt", "isqrt_root_bits"]

MAX_WIDTH = 128


def isqrt_root_bits(width):
    """Width of ``isqrt(v)`` for ``v < 2**width``: ``ceil(width / 2)``."""
    return (width + 1) // 2


class SeqIsqrt(wiring.Component):
    """``out = isqrt(inp)`` (floor square root) for an unsigned ``width``-bit radicand.

    Ports: ``inp`` stream of ``unsigned(width)``; ``out`` stream of
    ``unsigned(root_bits)`` with ``root_bits = ceil(width / 2)`` (the root of
    ``2**width - 1`` needs exactly that many bits).

    Algorithm (per step k = 1 .. root_bits, radicand zero-extended to
    ``2 * root_bits`` bits and consumed two bits at a time, MSBs first)::

        rem' = 4 * rem + next two radicand bits
        trial = 4 * root + 1
        if rem' >= trial: rem = rem' - trial; root = 2 * root + 1
        else:             rem = rem';         root = 2 * root

    Invariant: after k steps ``root = isqrt(N_k)`` and ``rem = N_k - root**2
    <= 2 * root`` for the radicand's top 2k bits ``N_k``; so ``rem`` fits
    ``root_bits + 1`` bits and the subtractor ``root_bits + 4``.

    Handshake: ``inp`` is taken only when idle (``inp.ready`` is a register
    output and never depends on ``out.ready``); the result is held on ``out``
    until taken (honours backpressure). Latency: ``root_bits + 1`` cycles from
    ``inp`` accepted to ``out.valid``; throughput one root per ``root_bits + 2``
    cycles. Tested against ``math.isqrt`` on 0, 1, perfect squares, squares
    minus one, ``2**width - 1`` and random values for widths 1..64.
    """

    def __init__(self, width=42):
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"width must be an integer, not {width!r}")
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"width must be in [1, {MAX_WIDTH}], not {width}")
        self._width = width
        self._root_bits = isqrt_root_bits(width)
        super().__init__({
            "inp": In(stream.Signature(unsigned(width))),
            "out": Out(stream.Signature(unsigned(self._root_bits))),
        })

    width = property(lambda self: self._width, doc="radicand width in bits")
    root_bits = property(lambda self: self._root_bits, doc="result width: ceil(width / 2)")
    latency = property(lambda self: self._root_bits + 1, doc="cycles from input to output")

    def elaborate(self, platform):
        m = Module()
        rb = self._root_bits
        rad = Signal(2 * rb)                  # radicand, shifted left two bits per step
        rem = Signal(rb + 1)                  # partial remainder, <= 2 * root
        root = Signal(rb)
        count = Signal(range(rb + 1))
        busy = Signal()

        brought = Signal(rb + 3)              # 4 * rem + next two bits
        trial = Signal(rb + 2)                # 4 * root + 1
        diff = Signal(rb + 4)
        m.d.comb += [
            brought.eq(Cat(rad[-2:], rem)),
            trial.eq(Cat(Const(1, 2), root)),
            diff.eq(brought - trial),
        ]
        fits = ~diff[-1]

        m.d.comb += [self.inp.ready.eq(~busy & ~self.out.valid),
                     self.out.payload.eq(root)]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [rad.eq(self.inp.payload), rem.eq(0), root.eq(0),
                         count.eq(rb), busy.eq(1)]
        with m.If(busy):
            with m.If(fits):
                m.d.sync += rem.eq(diff)
            with m.Else():
                m.d.sync += rem.eq(brought)
            m.d.sync += [root.eq(Cat(fits, root[:-1])), rad.eq(rad << 2),
                         count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.out.valid.eq(1)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        return m
