"""A synchronous FIFO whose output register is loaded by pointers.

:class:`Queue` behaves exactly like Amaranth's
:class:`~amaranth.lib.fifo.SyncFIFOBuffered` of the same ``depth``, cycle for
cycle (``w_rdy``, ``r_rdy``, ``r_data`` and ``level`` are equal at every
clock edge for any ``w_en`` / ``r_en``; ``tests/test_queue.py`` checks it), so
it replaces that FIFO without changing any unit's timing in cycles.

What differs is the logic behind the read side. ``SyncFIFOBuffered``
decides whether to move a word to its output register from its fill
counter, which ``r_en`` steps: the consumer's ``ready`` (often a chain of
joins and muxes away) runs through that decision into the counter. Here
the output register is loaded from a read pointer compared with the write
pointer (both registers), so ``r_en`` only enables the read pointer, the
output register and ``r_rdy`` (one LUT). A fill counter, stepped by
both sides as in ``SyncFIFOBuffered``, remains for ``w_rdy`` and
``level``, except in a ``guarded`` queue, whose writer keeps its own
count (:class:`~trilut.hw.iexp.OutputQueue`).

Latency: a word written in cycle t is at ``r_data`` with ``r_rdy`` high in
cycle t + 2 (the memory's synchronous read port is the output register);
``r_en`` in cycle t shows the next word in cycle t + 1.
"""

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

__all__ = ["Queue"]


class Queue(Elaboratable):
    """FIFO of ``depth`` (>= 2) words of ``width`` bits: the interface and
    behaviour of :class:`~amaranth.lib.fifo.SyncFIFOBuffered` (``w_en``,
    ``w_data``, ``w_rdy``; ``r_en``, ``r_data``, ``r_rdy``; ``level``), one
    word in and one out per cycle.

    ``guarded``: the writer never has more than ``depth`` words written and
    not read (it keeps its own credit count, as
    :class:`~trilut.hw.iexp.OutputQueue` does); then ``w_en`` writes
    unconditionally and there is no fill counter, ``w_rdy`` or ``level``."""

    def __init__(self, *, width, depth, guarded=False):
        if depth < 2:
            raise ValueError(f"Queue depth must be at least 2, not {depth}")
        self.width, self.depth, self.guarded = width, depth, guarded
        self.w_en, self.w_data = Signal(), Signal(width)
        self.r_en, self.r_data, self.r_rdy = Signal(), Signal(width), Signal()
        if not guarded:
            self.w_rdy, self.level = Signal(), Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        inner = self.depth - 1                  # words before the output register
        abits = ceil_log2(inner) if inner > 1 else 1
        # Pointers one bit wider than the memory's address: equal when empty.
        produce, consume = Signal(abits + 1), Signal(abits + 1)
        m.submodules.storage = storage = Memory(shape=self.width, depth=1 << abits, init=[])
        w_port = storage.write_port()
        r_port = storage.read_port(domain="sync")
        do_write, do_read = Signal(), Signal()
        m.d.comb += [
            do_write.eq(self.w_en if self.guarded else self.w_en & self.w_rdy),
            do_read.eq((produce != consume) & (~self.r_rdy | self.r_en)),
            w_port.addr.eq(produce[:abits]), w_port.data.eq(self.w_data),
            w_port.en.eq(do_write),
            r_port.addr.eq(consume[:abits]), r_port.en.eq(do_read),
            self.r_data.eq(r_port.data),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(do_read):
            m.d.sync += [consume.eq(consume + 1), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        if not self.guarded:
            fill = Signal(range(inner + 1))     # words before the output register
            m.d.comb += [self.w_rdy.eq(fill != inner), self.level.eq(fill + self.r_rdy)]
            with m.If(do_write & ~do_read):
                m.d.sync += fill.eq(fill + 1)
            with m.If(do_read & ~do_write):
                m.d.sync += fill.eq(fill - 1)
        return m
