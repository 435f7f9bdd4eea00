"""The shift exponential IEXP (SPEC 4.1) as a pipeline, and the plumbing the
row units built on it (Shiftmax, ShiftGELU) share.

:class:`IExp` computes, for one element per cycle with a fixed latency and no
handshake (the caller carries its own valid/last tags alongside)::

    p = d + (d >> 1) - (d >> 4);  p = max(p, n * x0)
    q = p // x0;  r = p - q * x0;  t = r - 2 * x0
    e = t << (n - q - 1) if q < n else t >> 1

exactly as :func:`trilut.golden.nonlinear.iexp` does. ``x0`` is a runtime
input (the layer's constant, held stable while rows are in flight).

How the division is done: with ``A = -x0 > 0`` and ``a = -p`` the clamp is
``a = min(a, n * A)`` and ``q = a // A`` lies in ``0..n``, so a restoring
division with ``quotient_bits = bit_length(n)`` compare-subtract stages (one
per cycle, comparing against ``A << j``) gives ``q`` and the remainder
``rem = a mod A``; then ``t = 2A - rem``. The multiples ``n * A`` and ``A << j``
are recomputed from the ``x0`` port by registers, ``x0_settle`` = 3 cycles
after ``x0`` changes. Every compare is only as wide as ``|a|`` (about
``d_bits + 1`` bits): the constants are saturated to that width once per x0.

Outputs (all aligned, ``latency`` cycles after ``d``):

* ``t`` and ``shift``: ``e = t << shift`` with ``t`` in ``[1, 2A]`` and
  ``shift`` in ``[0, n - 1]`` (``t = A``, ``shift = 0`` in the floor case
  ``q = n``). Multiplying ``t`` instead of ``e`` keeps the row units'
  multipliers to ``(a_bits + 1)``-bit operands.
* ``e``: 31 bits. Exact when ``x0`` is valid, i.e. ``x0 < 0`` and
  ``|x0| * 2^n <= 2^31 - 1`` (the golden model's peak rule; ``x0_ok`` says
  so, registered); otherwise undefined (the row units raise ``error``).

``signed_input=True`` (ShiftGELU's ``e2 = IEXP(-m)`` with a negative row
max) also accepts ``d > 0``: then ``q < 0`` and the shift ``n - q - 1``
exceeds ``n``; ``e`` is saturated at ``2^31 - 1`` exactly as the golden
model saturates it (``t``/``shift`` are then meaningless). The division
uses ``floor(a / A) = ~(~a // A)`` for ``a < 0`` and clamps ``~a`` at
``31 * A`` (any larger quotient saturates anyway), so ``quotient_bits`` is 5.

Latency: ``1 (p) + 1 (clamp) + quotient_bits + 1 (t, shift) +
ceil(shift_bits / 3) (barrel shifter)`` cycles, e.g. 9 for n = 15 and 10 for
n = 23 (see :attr:`IExp.latency`). Throughput one element per cycle.
Tested in Amaranth's simulator against the golden model for every 9-bit
``d <= 0`` at n = 15, 16, 23 and x0 in {-1, -3, -4, -13, -19, -32, -a_max},
and (``signed_input``) every 9-bit ``d`` at n = 4, 16, 23 and x0 in
{-1, -2, -3, -19, -32, -a_max}; 16-bit inputs through the "accurate"
ShiftGELU testbench.
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.nonlinear import INT32_MAX, X0_BITS
from .arith import NO_COLLISION, delay

__all__ = ["E_BITS", "IExp", "iexp_latency", "const_mul", "delay_mem", "chunked_mul",
           "shift_window",
           "RowCapture", "RowReader", "check_int", "read_minus_max",
           "READ_LATENCY"]

E_BITS = 31                     # IEXP results and row sums saturate at 2^31 - 1
_SHIFT_LEVELS = 3               # barrel-shifter levels per pipeline stage


def const_mul(value, k):
    """``value * k`` for a constant ``k >= 0`` as a sum of shifted copies in
    canonical signed-digit form (15 A = (A << 4) - A), so that Yosys spends
    neither a DSP block nor more than a few adders on a constant multiple."""
    digits, i = [], 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)          # +1 or -1 (non-adjacent form)
            digits.append((digit, i))
            k -= digit
        k >>= 1
        i += 1
    total = None
    for digit, shift in sorted(digits, key=lambda d: -d[0]):   # positive terms first
        term = value << shift
        total = term if total is None else (total + term if digit > 0 else total - term)
    return Const(0, 1) if total is None else total


def iexp_latency(n, *, signed_input=False, quotient_bits=None):
    """:attr:`IExp.latency` of an instance with these parameters."""
    q_bits = quotient_bits or (5 if signed_input else n.bit_length())
    shift_bits = ((n + (1 << q_bits) - 1).bit_length() if signed_input
                  else max(1, (n - 1).bit_length()))
    return 3 + q_bits + -(-shift_bits // _SHIFT_LEVELS)


def _p_of(d):
    """The golden model's p = d + (d >> 1) - (d >> 4) on a Python int."""
    return d + (d >> 1) - (d >> 4)


class IExp(wiring.Component):
    """Pipelined IEXP (see the module docstring).

    Parameters: ``n`` (1..30), ``d_bits`` signed width of ``d`` (2..24),
    ``x0_bits`` signed width of ``x0`` (default the golden ``X0_BITS``),
    ``signed_input`` (accept ``d > 0``, saturating ``e``), ``quotient_bits``
    (division stages; at least ``bit_length(n)``, 5 with ``signed_input``;
    a larger value only adds latency, used to match two instances).

    Ports: ``d`` In signed(d_bits) (``d <= 0`` unless ``signed_input``),
    ``x0`` In signed(x0_bits); ``t`` Out unsigned(a_bits + 1), ``shift`` Out
    unsigned(shift_bits), ``e`` Out unsigned(31), ``x0_ok`` Out(1).
    No handshake: a new ``d`` every cycle, results ``latency`` cycles later.
    """

    def __init__(self, *, n, d_bits, x0_bits=X0_BITS, signed_input=False, quotient_bits=None):
        check_int("n", n, 1, 30)
        check_int("d_bits", d_bits, 2, 24)
        check_int("x0_bits", x0_bits, 2, 32)
        if not isinstance(signed_input, bool):
            raise TypeError(f"signed_input must be a bool, not {signed_input!r}")
        min_q = 5 if signed_input else n.bit_length()
        if quotient_bits is None:
            quotient_bits = min_q
        check_int("quotient_bits", quotient_bits, min_q, 8)
        self._n, self._d_bits, self._x0_bits = n, d_bits, x0_bits
        self._signed, self._q_bits = signed_input, quotient_bits
        # Largest valid |x0|: fits the register and keeps IEXP(0) = |x0| 2^n <= 2^31 - 1.
        self._a_max = min(1 << (x0_bits - 1), INT32_MAX >> n)
        self._a_bits = self._a_max.bit_length()
        lo = -(1 << (d_bits - 1))
        hi = (1 << (d_bits - 1)) - 1 if signed_input else 0
        # |a| = |-p| over the input range (p is monotone in d); for a < 0 the
        # division sees ~a = p - 1.
        self._w = max(1, (-_p_of(lo)).bit_length(), max(_p_of(hi) - 1, 0).bit_length())
        self._shift_bits = ((n + (1 << quotient_bits) - 1).bit_length() if signed_input
                            else max(1, (n - 1).bit_length()))
        super().__init__({
            "d": In(signed(d_bits)),
            "x0": In(signed(x0_bits)),
            "t": Out(unsigned(self._a_bits + 1)),
            "shift": Out(unsigned(self._shift_bits)),
            "e": Out(unsigned(E_BITS)),
            "x0_ok": Out(1),
        })

    n = property(lambda self: self._n)
    d_bits = property(lambda self: self._d_bits)
    x0_bits = property(lambda self: self._x0_bits)
    signed_input = property(lambda self: self._signed)
    quotient_bits = property(lambda self: self._q_bits)
    a_max = property(lambda self: self._a_max, doc="largest valid |x0|")
    a_bits = property(lambda self: self._a_bits, doc="width of |x0| inside")
    shift_bits = property(lambda self: self._shift_bits)
    x0_settle = property(lambda self: 3, doc="cycles from an x0 change to valid constants")

    @property
    def latency(self):
        """Cycles from ``d`` to ``t``/``shift``/``e``."""
        return iexp_latency(self._n, signed_input=self._signed, quotient_bits=self._q_bits)

    def elaborate(self, platform):
        m = Module()
        n, w, Q, ab = self._n, self._w, self._q_bits, self._a_bits
        cap = (1 << w) - 1

        # --- per-x0 constants (registered up to three times: x0_settle = 3) -
        neg_x0 = Signal(signed(self._x0_bits + 1))
        m.d.comb += neg_x0.eq(-self.x0)
        A = Signal(ab, name="A")
        ok = Signal(name="x0_ok_r")
        m.d.sync += [A.eq(neg_x0[:ab]),
                     ok.eq((self.x0 < 0) & (self.x0 >= -self._a_max))]   # no negation
        m.d.comb += self.x0_ok.eq(ok)

        def saturated(value, limit, name):
            reg = Signal(range(limit + 1), name=name)
            m.d.sync += reg.eq(Mux(value > limit, limit, value))
            return reg

        def multiple(value, name):
            """A constant multiple of A registered before it is saturated
            (the adders and the compare are a register stage each)."""
            reg = Signal(value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        lim_pos = saturated(multiple(const_mul(A, n), "nA"), cap, "lim_pos")  # min(n A, 2^w - 1)
        lim_neg = (saturated(multiple((A << 5) - A, "a31"), cap, "lim_neg") if self._signed
                   else None)
        dsat = [saturated(A << j, cap + 1, f"dsat{j}") for j in range(Q)]  # min(A << j, 2^w)

        # --- stage 1: a = -p -------------------------------------------------
        d = self.d
        a = Signal(signed(w + 1), name="a")
        m.d.sync += a.eq((d >> 4) - d - (d >> 1))

        # --- stage 2: sign split and clamp ----------------------------------
        u = Signal(w, name="u")
        neg = Signal(name="neg")
        if self._signed:
            u0 = Signal(w, name="u0")
            lim = Signal(w, name="lim")
            m.d.comb += [u0.eq(Mux(a < 0, ~a, a)), lim.eq(Mux(a < 0, lim_neg, lim_pos))]
            m.d.sync += [u.eq(Mux(u0 > lim, lim, u0)), neg.eq(a < 0)]
        else:
            u0 = a[:w]
            m.d.sync += u.eq(Mux(u0 > lim_pos, lim_pos, u0))

        # --- restoring division u // A, u mod A: one quotient bit per stage --
        rem, q = u, Const(0, 0)
        for j in reversed(range(Q)):
            fits = rem >= dsat[j]
            nrem = Signal(w, name=f"rem{j}")
            nq = Signal(Q - j, name=f"q{j}")
            m.d.sync += [nrem.eq(Mux(fits, rem - dsat[j][:w], rem)), nq.eq(Cat(fits, q))]
            rem, q = nrem, nq
        neg = delay(m, neg, Q, name="neg_d")

        # --- t and the shift --------------------------------------------------
        t = Signal(ab + 1, name="t_r")
        sh = Signal(self._shift_bits, name="sh_r")
        floor = q == n
        t_pos = Mux(floor, A, (A << 1) - rem)
        sh_pos = Mux(floor, 0, (n - 1) - q)
        if self._signed:
            m.d.sync += [t.eq(Mux(neg, A + 1 + rem, t_pos)), sh.eq(Mux(neg, n + q, sh_pos))]
        else:
            m.d.sync += [t.eq(t_pos), sh.eq(sh_pos)]

        # --- barrel shifter e = t << sh, 31 bits (saturating if signed) -----
        v, s_left, ovf = t, sh, Const(0, 1)
        stages = 0
        for j in range(self._shift_bits):
            step = 1 << j
            bit = s_left[j]
            nv = Mux(bit, (v << step)[:E_BITS], v)
            if self._signed:
                lost = v[E_BITS - step:] if step < E_BITS else v
                ovf = ovf | (bit & (lost != 0))
            v = nv
            if (j + 1) % _SHIFT_LEVELS == 0 or j == self._shift_bits - 1:
                rv = Signal(E_BITS, name=f"sv{j}")
                rs = Signal(self._shift_bits, name=f"ss{j}")
                m.d.sync += [rv.eq(v), rs.eq(s_left)]
                if self._signed:
                    ro = Signal(name=f"so{j}")
                    m.d.sync += ro.eq(ovf)
                    ovf = ro
                v, s_left = rv, rs
                stages += 1
        e = Mux(ovf, INT32_MAX, v) if self._signed else v
        m.d.comb += [self.e.eq(e),
                     self.t.eq(delay(m, t, stages, name="t_d")),
                     self.shift.eq(delay(m, sh, stages, name="sh_d"))]
        assert self.latency == 3 + Q + stages
        return m


# --------------------------------------------------------------------------
# Pipeline helpers
# --------------------------------------------------------------------------

def delay_mem(m, value, cycles, *, name="dmem"):
    """``value`` delayed by ``cycles`` (>= 2) through a small RAM used as a
    circular buffer (LUT RAM or block RAM instead of ``cycles`` registers).
    The pipeline around it must never stall: the buffer advances every cycle."""
    check_int("cycles", cycles, 2)
    width = len(value)
    depth = 1 << (cycles - 1).bit_length()
    # the read address trails the write address by cycles - 1 >= 1
    mem = memory.Memory(shape=unsigned(width), depth=depth, init=[], attrs=NO_COLLISION)
    m.submodules[name] = mem
    wp = mem.write_port()
    rp = mem.read_port(domain="sync")
    ptr = Signal(range(depth), name=f"{name}_ptr")
    m.d.sync += ptr.eq(ptr + 1)
    m.d.comb += [wp.addr.eq(ptr), wp.data.eq(value), wp.en.eq(1),
                 rp.addr.eq(ptr - (cycles - 1)), rp.en.eq(1)]
    out = Signal.like(value, name=f"{name}_out")
    m.d.comb += out.eq(rp.data)
    return out


def chunked_mul(m, a, b, *, chunk=17, name="mul"):
    """Unsigned ``a * b`` from registered ``a``, ``b``: ``chunk``-bit partial
    products (each fits one ECP5 MULT18X18D) are registered, then summed and
    registered. Returns ``(product, latency=2)``."""
    terms = []
    for i in range(0, len(a), chunk):
        for j in range(0, len(b), chunk):
            ai, bj = a[i:i + chunk], b[j:j + chunk]
            p = Signal(len(ai) + len(bj), name=f"{name}_p{i}_{j}")
            m.d.sync += p.eq(ai * bj)
            terms.append(p << (i + j))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    prod = Signal(len(a) + len(b), name=f"{name}_prod")
    m.d.sync += prod.eq(total)
    return prod, 2


def shift_window(m, value, shift, *, lo, width, levels_per_stage=_SHIFT_LEVELS, name="sw"):
    """``((value << shift) >> lo)`` truncated to ``width`` bits, for unsigned
    ``value`` and ``shift``, as a pipelined barrel shifter that only keeps the
    bits that can still reach the window. Returns ``(result, latency)``."""
    top = lo + width
    nbits = len(shift)
    remaining = (1 << nbits) - 1
    v, off, s_left, lat = value, 0, shift, 0
    for j in range(nbits):
        step = 1 << j
        remaining -= step
        shifted = Mux(s_left[j], v << step, v)
        new_off = max(off, lo - remaining)
        v = shifted[new_off - off:top - off]
        off = new_off
        if (j + 1) % levels_per_stage == 0 or j == nbits - 1:
            rv = Signal(len(v), name=f"{name}_v{j}")
            rs = Signal(len(shift), name=f"{name}_s{j}")
            m.d.sync += [rv.eq(v), rs.eq(s_left)]
            v, s_left = rv, rs
            lat += 1
    if nbits == 0:
        v, off = value[lo:top], lo
    result = Signal(width, name=f"{name}_out")
    m.d.comb += result.eq(v)
    return result, lat


class RowCapture:
    """Pass 1 of a row unit: writes rows from stream ``inp`` into a ring of
    ``slots`` (a power of two) row buffers of ``1 << idx_bits`` elements in the
    RAM behind write port ``wp`` (address ``{slot, index}``), tracking each
    row's max and length. ``slot_free`` (driven by the unit) says slot
    :attr:`slot` may be written; ``inp.ready`` is ``slot_free`` (or 1 while
    dropping), so it never depends on the output side combinationally.

    A row longer than ``max_len`` is cut at ``max_len`` elements; the rest, up
    to and including its ``last``, is accepted and dropped (:attr:`overflow`
    pulses once). After :attr:`done` pulses, ``lenm1[s]``/``rowmax[s]`` hold
    the length - 1 and the max of the row in slot ``s``.
    """

    def __init__(self, m, inp, wp, *, slots, idx_bits, max_len, slot_free):
        shape = inp.payload.data.shape()
        self.slot = Signal(range(slots), name="cap_slot")
        self.idx = Signal(idx_bits, name="cap_idx")
        self.done = Signal(name="cap_done")
        self.overflow = Signal(name="cap_overflow")
        self.lenm1 = [Signal(idx_bits, name=f"lenm1_{s}") for s in range(slots)]
        self.rowmax = [Signal(shape, name=f"rowmax_{s}") for s in range(slots)]
        dropping = Signal(name="cap_dropping")
        cur_max = Signal(shape, name="cap_max")
        x, last = inp.payload.data, inp.payload.last
        m.d.comb += inp.ready.eq(dropping | slot_free)
        accept = inp.valid & inp.ready
        new_max = Mux((self.idx == 0) | (x > cur_max), x, cur_max)
        end = last | (self.idx == max_len - 1)
        m.d.comb += [wp.addr.eq(Cat(self.idx, self.slot)), wp.data.eq(x),
                     wp.en.eq(accept & ~dropping)]
        with m.If(accept):
            with m.If(dropping):
                with m.If(last):
                    m.d.sync += dropping.eq(0)
            with m.Elif(end):
                m.d.comb += self.done.eq(1)
                m.d.sync += [self.idx.eq(0), self.slot.eq(self.slot + 1)]
                for s in range(slots):
                    with m.If(self.slot == s):
                        m.d.sync += [self.lenm1[s].eq(self.idx), self.rowmax[s].eq(new_max)]
                with m.If(~last):
                    m.d.sync += dropping.eq(1)
                    m.d.comb += self.overflow.eq(1)
            with m.Else():
                m.d.sync += [self.idx.eq(self.idx + 1), cur_max.eq(new_max)]


def _mux_by(cases, sel):
    """Multiplex ``cases`` [(index, value)] by ``sel`` (a small chain of Mux)."""
    value = cases[0][1]
    for s, v in cases[1:]:
        value = Mux(sel == s, v, value)
    return value


class RowReader:
    """Streams stored rows out of a :class:`RowCapture` ring through read port
    ``rp``, one element per cycle, with no idle cycle between rows.

    ``can_start`` (a row is waiting and the unit may begin it) and
    ``can_issue`` (room downstream) are driven by the unit. Per cycle:
    :attr:`issue` (an element's address is on ``rp``; its data arrives next
    cycle), :attr:`first`/:attr:`last` (it starts/ends its row),
    :attr:`start` (= issue & first); :attr:`rowmax` is the row's max, valid
    while :attr:`start` is high. The slot is released after the row's last
    issue (:attr:`release`).
    """

    def __init__(self, m, rp, cap, *, can_start, can_issue, name):
        idx_bits = len(cap.idx)
        self.slot = Signal.like(cap.slot, name=f"{name}_slot")
        busy = Signal(name=f"{name}_busy")
        idx = Signal(idx_bits, name=f"{name}_idx")
        lenm1 = Signal(idx_bits, name=f"{name}_lenm1")
        self.start, self.issue = Signal(name=f"{name}_start"), Signal(name=f"{name}_issue")
        self.first, self.last = Signal(name=f"{name}_first"), Signal(name=f"{name}_last")
        self.release = Signal(name=f"{name}_release")
        cases = list(enumerate(cap.lenm1))
        cur_len = Mux(busy, lenm1, _mux_by(cases, self.slot))
        cur_idx = Mux(busy, idx, 0)
        self.rowmax = _mux_by(list(enumerate(cap.rowmax)), self.slot)
        m.d.comb += [
            self.start.eq(~busy & can_start & can_issue),
            self.issue.eq((busy & can_issue) | self.start),
            self.first.eq(~busy),
            self.last.eq(cur_idx == cur_len),
            self.release.eq(self.issue & self.last),
            rp.addr.eq(Cat(cur_idx, self.slot)),
            rp.en.eq(1),
        ]
        with m.If(self.issue):
            with m.If(self.last):
                m.d.sync += [busy.eq(0), self.slot.eq(self.slot + 1)]
            with m.Else():
                m.d.sync += [busy.eq(1), idx.eq(cur_idx + 1)]
        with m.If(self.start):
            m.d.sync += lenm1.eq(cur_len)


def read_minus_max(m, rp, start, rowmax, *, name):
    """For an element read through ``rp`` (issued at cycle c): ``x`` (the RAM
    output registered, valid at c + 2, so no logic follows the block RAM's
    slow clock-to-output) and ``d = x - max(row)`` (registered, valid at
    c + 3). The row max is latched at the row's ``start`` and delayed to
    match, so rows may follow each other without a gap. Returns
    ``(x, d, row_max)`` with ``row_max`` the max of the row whose ``d`` is
    being computed (valid from its start + 2)."""
    mrow = Signal.like(rowmax, name=f"{name}_max")
    with m.If(start):
        m.d.sync += mrow.eq(rowmax)
    mrow_d = delay(m, mrow, 1, name=f"{name}_max_d")
    x = Signal(rp.data.shape(), name=f"{name}_x")
    d = Signal(signed(len(rp.data) + 1), name=f"{name}_d")
    m.d.sync += [x.eq(rp.data), d.eq(x - mrow_d)]
    return x, d, mrow_d


READ_LATENCY = 3                # issue -> d of read_minus_max
