"""Small arithmetic building blocks shared by every engine.

Both matmul engines build their sums with :func:`adder_tree` so that the
area comparison between them is fair: every adder is its own signal (Yosys
then maps it to a two-input carry chain instead of merging a long chain of
additions into a carry-save structure, which costs more on ECP5), and a
pipeline register is placed every ``levels_per_stage`` levels.
"""
from amaranth.hdl import Signal, Value, signed, unsigned

__all__ = ["NO_COLLISION", "adder_tree", "const_div", "const_mul", "delay", "signed_term",
           "valid_delay"]

#: Memory attributes for a RAM whose reads never meet a write to the same
#: address in the same cycle (each user says why): Yosys then adds no
#: bypass logic (a compare and a multiplexer per read bit), so a block RAM's
#: read data goes straight to the register after it, which the ECP5 flow
#: then moves into the block (gen/bram_outreg.py).
NO_COLLISION = {"no_rw_check": 1}


def adder_tree(m, values, *, levels_per_stage=2, name="tree"):
    """Sum ``values`` with a balanced tree of two-input adders.

    Returns ``(total, latency)``: ``total`` is a signed signal wide enough for
    any sum of the inputs, valid ``latency`` cycles after the inputs (a
    register is inserted after every ``levels_per_stage`` levels, so latency
    is ``floor(levels / levels_per_stage)``; zero for a single input). Its
    registers have no reset (data: a unit's valid bits say when it counts).
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
            s = Signal(_sum_shape(a, b), name=f"{name}_l{depth}_{i // 2}", reset_less=True)
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


def delay(m, value, cycles, *, name="dly", reset=False):
    """``value`` delayed by ``cycles`` clock cycles. Data needs no reset
    (the default, so Yosys keeps the flip-flops free of reset logic); valid
    bits do (:func:`valid_delay`), so that a reset empties the line at once."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_{i}", reset_less=not reset)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def valid_delay(m, value, cycles, *, name="vld"):
    """Valid bits delayed by ``cycles`` through registers with a reset (a
    soft reset of the enclosing domain drops whatever is in flight)."""
    return delay(m, value, cycles, name=name, reset=True)


def const_div(value, divisor, max_value):
    """``floor(value / divisor)`` for an unsigned ``value`` in ``[0, max_value]``
    and a constant ``divisor``: a shift for a power of two, else one multiply
    by a constant and a shift (m = ceil(2**s / divisor), checked here for
    every value in range), so no chain of comparisons."""
    if divisor < 1 or max_value < 0:
        raise ValueError(f"const_div needs divisor >= 1 and max_value >= 0, not "
                         f"{divisor}, {max_value}")
    if divisor & (divisor - 1) == 0:
        return value >> (divisor.bit_length() - 1)
    s = max_value.bit_length() + divisor.bit_length()
    mult = -(-(1 << s) // divisor)
    assert all((x * mult) >> s == x // divisor for x in range(max_value + 1))
    return (value * mult) >> s


def const_mul(value, factor):
    """``value * factor`` for an unsigned ``value`` and a constant ``factor``
    >= 1 as shifted copies of ``value`` added (one per set bit of
    ``factor``): carry chains, where Yosys would map ``*`` to a
    MULT18X18D (~4 ns on ECP5 before the adds)."""
    if factor < 1:
        raise ValueError(f"const_mul needs factor >= 1, not {factor}")
    terms = [value << i for i in range(factor.bit_length()) if factor >> i & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


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

