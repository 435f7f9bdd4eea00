"""Output queues: a synchronous FIFO whose output register is loaded by
pointers, and the credit-counted queue of the units' pipelines.

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
count (:class:`OutputQueue`).

Latency: a word written in cycle t is at ``r_data`` with ``r_rdy`` high in
cycle t + 2 (the memory's synchronous read port is the output register);
``r_en`` in cycle t shows the next word in cycle t + 1.

:class:`OutputQueue` puts a guarded :class:`Queue` behind a fixed-latency
pipeline that never stalls: the unit issues an element only while the
queue has a free entry for it, counted from issue to take.
"""

from amaranth.hdl import Elaboratable, Module, Mux, Shape, Signal
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

__all__ = ["Queue", "OutputQueue", "CREDIT_RETURN"]

# Cycles a credit of an OutputQueue takes to come back after the pipeline's
# latency (the queue's two, the take seen, the count): a full-rate unit's
# queue needs depth >= latency + CREDIT_RETURN.
CREDIT_RETURN = 4


class Queue(Elaboratable):
    """FIFO of ``depth`` (>= 2) words of ``width`` bits: the interface and
    behaviour of :class:`~amaranth.lib.fifo.SyncFIFOBuffered` (``w_en``,
    ``w_data``, ``w_rdy``; ``r_en``, ``r_data``, ``r_rdy``; ``level``), one
    word in and one out per cycle.

    ``guarded``: the writer never has more than ``depth`` words written and
    not read (it keeps its own credit count, as
    :class:`OutputQueue` does); then ``w_en`` writes
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


class OutputQueue:
    """The output FIFO of a unit's pipeline with credit-based issue: every
    element issued into the pipeline reserves a FIFO entry (``room`` is low
    while ``depth`` results are issued but not yet taken), so the pipeline
    never stalls and ``out`` honours backpressure; ``out.valid`` comes from the
    FIFO, never from ``out.ready``. The unit drives :attr:`issue` (comb) and,
    ``latency`` cycles later, writes the result with :meth:`push`.

    Timing: the credit count sees a take one cycle late (``out.ready`` ends
    in a register), and ``room`` is a register set one step ahead (from the
    count's next value), so neither a comparator nor ``out.ready`` sits
    before the unit's issue logic. The count then overstates the results in
    flight by at most the one take not yet seen, so at most ``depth`` are
    ever issued and not taken. A credit comes back ``latency`` + 4 cycles
    after its issue (the FIFO's two cycles, the take seen, the count), one
    more than with a combinational count, so a full-rate unit needs
    ``depth`` >= ``latency`` + :data:`CREDIT_RETURN` (the requantizers,
    RoPE, RMSNorm and GateMul use exactly that; the row units round it up
    to a power of two)."""

    def __init__(self, m, out, *, depth, name="oq"):
        layout = out.payload.shape()
        self.fifo = Queue(width=Shape.cast(layout).width, depth=depth, guarded=True)
        m.submodules[name] = self.fifo
        self.issue = Signal(name=f"{name}_issue")
        self.room = Signal(name=f"{name}_room", init=1)
        outstanding = Signal(range(depth + 1), name=f"{name}_outstanding")
        popped = Signal(name=f"{name}_popped")
        # room's next value (the count's next value < depth) selected by
        # issue and popped from compares of the count alone: the issue
        # logic reaches the register through a select, not a carry chain.
        m.d.sync += [popped.eq(out.valid & out.ready),
                     outstanding.eq(outstanding + self.issue - popped),
                     self.room.eq(Mux(self.issue == popped, outstanding < depth,
                                      Mux(popped, 1, outstanding < depth - 1)))]
        m.d.comb += [out.valid.eq(self.fifo.r_rdy),
                     out.payload.eq(self.fifo.r_data),
                     self.fifo.r_en.eq(out.ready)]
        self._layout = layout
        self._m = m

    def push(self, valid, **fields):
        view = data.View(self._layout, self.fifo.w_data)
        self._m.d.comb += [self.fifo.w_en.eq(valid)]
        self._m.d.comb += [getattr(view, k).eq(v) for k, v in fields.items()]
