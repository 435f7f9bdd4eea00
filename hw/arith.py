"""Small arithmetic building blocks shared by every engine.

Both matmul engines build their sums with :func:`adder_tree` so that the
area comparison between them is fair: every adder is its own signal (Yosys
then maps it to a two-input carry chain instead of merging a long chain of
additions into a carry-save structure, which costs more on ECP5), and a
pipeline register is placed every ``levels_per_stage`` levels.
"""
from amaranth.hdl import Signal, Value, signed, unsigned

__all__ = ["adder_tree", "delay", "signed_term"]


def adder_tree(m, values, *, levels_per_stage=2, name="tree"):
    """Sum ``values`` with a balanced tree of two-input adders.

    Returns ``(total, latency)``: ``total`` is a signed signal wide enough for
    any sum of the inputs, valid ``latency`` cycles after the inputs (a
    register is inserted after every ``levels_per_stage`` levels, so latency
    is ``floor(levels / levels_per_stage)``; zero for a single input).
    """
    level, latency, depth = list(values), 0, 0
    if not level:
        raise ValueError("adder_tree needs at least one value")
    while len(level) > 1:
        depth += 1
        registered = depth % levels_per_stage == 0
        nxt = []
        for i in range(0, len(level) - 1, 2):
            a, b = level[i], level[i + 1]
            s = Signal(_sum_shape(a, b), name=f"{name}_l{depth}_{i // 2}")
            (m.d.sync if registered else m.d.comb).__iadd__(s.eq(a + b))
            nxt.append(s)
        if len(level) % 2:
            odd = level[-1]
            if registered:
                odd = delay(m, odd, 1, name=f"{name}_l{depth}_pass")
            nxt.append(odd)
        level = nxt
        latency += registered
    return level[0], latency


def _sum_shape(a, b):
    sa, sb = a.shape(), b.shape()
    width = max(sa.width + (not sa.signed), sb.width + (not sb.signed)) + 1
    return signed(width)


def delay(m, value, cycles, *, name="dly"):
    """``value`` delayed by ``cycles`` clock cycles (no reset)."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_{i}", reset_less=True)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def signed_term(m, value, neg, nz=None, *, name="term"):
    """Form ``+value``, ``-value`` or 0 (``nz`` low) without a multiplexer.

    Returns ``(term, correction)`` with ``term = (value XOR neg) AND nz`` and
    ``correction = neg AND nz``: the caller adds every correction bit into its
    sum, which completes the two's-complement negation (``-v = ~v + 1``).
    ``nz=None`` means the term is never zero.
    """
    width = len(value)
    term = Signal(signed(width), name=name)
    corr = Signal(unsigned(1), name=f"{name}_c")
    flipped = Value.cast(value) ^ neg.replicate(width)
    if nz is None:
        m.d.comb += [term.eq(flipped), corr.eq(neg)]
    else:
        m.d.comb += [term.eq(flipped & nz.replicate(width)), corr.eq(neg & nz)]
    return term, corr

