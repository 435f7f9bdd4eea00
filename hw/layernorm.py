"""Streaming integer LayerNorm (SPEC 4.4 steps 1-4), bit-exact with
:func:`trilut.golden.nonlinear.int_layernorm`, and its RMS form (``rms=True``),
bit-exact with :func:`trilut.golden.llm.int_rmsnorm`.

For a row ``x`` of C channels (C is the number of elements up to ``last``)::

    mu  = round(sum(x) / C), ties to even         (q, r = divmod(sum, C);
                                                   mu = q + (2r > C or (2r == C and q odd)))
    y   = x - mu;  var = sum(y^2)
    std = max(isqrt(var), 1)                       (exact floor square root)
    f   = (2^31 - 1) // std;  z = (y * f) >> 1

Architecture
============
Four stages work on four different rows at once; the rows live in a block
RAM of :attr:`buffers` (4) row buffers of ``2**ceil(log2(max_len))``
elements, claimed round robin when a row's first element arrives and
released when its last element has been read back out::

    inp --> FILL ------> [FIFO A] --> MEAN/VAR ---> [FIFO] --> STD ------> [FIFO B] --> OUT --> out
            | write row                 SeqDivider               SeqIsqrt               | read row
            | S1' = sum(x + 2^(n-1))    + shift-add MAC           + SeqDivider           | y = x - mu
            | S2 = sum(x^2)  (DSP)                                                       | z = (y*f)>>1 (2 DSP)
            +---------------------- row buffers (block RAM) ----------------------------+

* FILL takes one element per cycle, writes it to the row buffer and
  accumulates ``S1' = sum(x + 2^(n-1))`` (an offset sum, so that it is
  unsigned) and ``S2 = sum(x^2)`` (registered x*x on a MULT18X18D).
* MEAN/VAR: ``q' = S1' // C`` on the shared :class:`SeqDivider`; since
  ``S1' = S1 + C * 2^(n-1)``, ``q' = q + 2^(n-1)`` with the same remainder
  ``r = S1' - q' * C`` and the same parity (n >= 2), so the ties-to-even
  rule is golden's formula verbatim. ``q' * C`` comes from a shift-add
  multiplier (n + 1 cycles, LUTs only). The variance needs no second pass
  over the row: with ``d = S1 - C * mu`` (``d = r`` or ``r - C``) the exact
  integer identity::

      sum((x - mu)^2) = S2 - 2 mu S1 + C mu^2 = S2 - mu * (S1 + d)

  gives golden's ``var`` exactly; ``mu * (S1 + d)`` is the second use of
  the shift-add multiplier. Every step of this stage is computed modulo
  ``2**var_bits`` (and the remainder modulo ``2**c_bits``): each final value
  is known to lie in ``[0, 2**var_bits)`` (resp. ``[0, C)``), so the
  truncated arithmetic is exact and no wider adders are needed.
* STD: ``std = max(isqrt(var), 1)`` on :class:`SeqIsqrt`, then
  ``f = (2^31 - 1) // std`` on a second :class:`SeqDivider`. ``var = 0``
  (a constant row) gives ``f = 2^31 - 1`` and, as every ``y`` is 0, ``z = 0``.
* OUT reads the row back at one element per cycle: ``y = x - mu`` (registered),
  ``y * f`` as two registered MULT18X18D products (``f`` split at bit 17),
  their registered sum shifted right by one (floor), into a 9-entry
  output FIFO. Reads are issued only while the FIFO has room for every
  result in flight, so backpressure on ``out`` never loses data.

Widths (n = ``in_bits``, L = ``max_len``)
========================================
* ``|x - mu| <= 2^n - 1`` (both lie in the int-n range; in fact mu lies in
  ``[min x, max x]``), so ``var <= L * (2^n - 1)^2``: :attr:`var_bits` =
  ``bit_length(L * (2^n - 1)^2)``: 41 bits for int16 at L = 384 (SPEC 4.6),
  42 at L = 768, 26 for int8 at L = 768. (Popoviciu's inequality gives the
  tighter ``L * ((2^n - 1)^2 + 1) / 4``, two bits less; the simple bound is
  kept for margin at the cost of one isqrt cycle.)
* :attr:`std_bits` = ``ceil(var_bits / 2)`` (root width of :class:`SeqIsqrt`).
* ``S1' <= L * (2^n - 1)``, ``S2 <= L * 2^(2n-2)``, ``C <= L``: :attr:`c_bits` =
  ``bit_length(L)``.
* Output: since ``y_i^2 <= var``, ``|y_i| <= isqrt(var) = std`` and
  ``|y * f| <= std * ((2^31 - 1) // std) <= 2^31 - 1``, so
  ``z = (y * f) >> 1`` lies in ``[-2^30, 2^30 - 1]`` (31 bits). The port is
  :data:`OUT_BITS` = 32 bits signed: the int32 accumulator format the
  following requantizer (gamma/beta, SPEC 4.4 step 5) takes.

Streams and timing
==================
``inp``: ``{"data": signed(in_bits), "last": 1}``, one element per beat,
``last`` on the row's final element. ``out``: ``{"data": signed(32),
"last": 1}``, same row structure. ``error``: sticky (cleared by reset), set
when a row is longer than ``max_len``: its first ``max_len`` elements are
normalized as the row, the rest is dropped up to and including its
``last``, and the next row is unaffected (docs/conventions.md).

Handshake: honours backpressure on ``out``; ``inp.ready`` is a function of
registers only (never of ``out.ready`` or of the payload). ``inp`` ends in
an input register (one element), so nothing but that register depends on
``inp.valid`` or the payload. ``inp`` stalls only when all four row buffers
are held (a row is held from its first element in to its last element read
out) and the input register is full.

Throughput (no gaps, no backpressure; :meth:`row_interval` is the analytic
model, checked cycle for cycle by the testbench): FILL and OUT take C
cycles per row, MEAN/VAR :attr:`mean_cycles` (``s1_bits + 2 n + 11``: 45 for
int8 at L = 768, 69 for int16) and STD :attr:`std_cycles` (``std_bits + 34``:
47 and 55), one row at a time each; a row holds its buffer for
``2C + 4 + mean_cycles + std_cycles`` cycles and there are four buffers. So
rows of C >= 48 (int8, L = 768) or C >= 69 (int16, L = 768) stream at one
element per cycle: measured 1.000 elements/cycle sustained for C = 64 (int8),
384 and 768 (int16); shorter rows run at one row per
``max(mean_cycles, std_cycles)`` cycles. Latency: :meth:`latency` cycles from a
row's last element accepted to its first result valid (105 for int8 and
137 for int16 at L = 768; one of them the input register).

RMS mode (``rms=True``, the decoder's RMSNorm): ``mu = 0`` and ``var = S2 =
sum(x^2)``, so the MEAN/VAR stage is a pass-through (no mean divider, no
shift-add multiplier; :attr:`mean_cycles` = 1) and :attr:`var_bits` =
``bit_length(L * 2^(2n-2))`` (40 for int16 at L = 768). ``|x| <= isqrt(S2) =
std`` keeps ``z`` in the same 31 bits. The default (``rms=False``) elaborates
exactly the LayerNorm above.

Resources on ECP5 (LFE5U-85F, nextpnr, out of context): see
:attr:`resources` for the DSP/block-RAM estimate. Measured at L = 768:
int8 1,246 LUT4, 843 FF, 3 MULT18X18D, 2 DP16KD, 130.6 MHz; int16 1,683
LUT4, 1,124 FF, 3 MULT18X18D, 4 DP16KD, 130.7 MHz.

Tested (Verilator, cocotb, against golden): in_bits 8 with max_len 64 and
in_bits 16 with max_len 768; row lengths 1, 2, random, max_len and over-long;
random full-range rows, constant rows (zero variance), one-hot rows, all
minimum, all maximum, alternating extremes (the largest variance), ties in
the mean, int16 rows with outliers. The rms mode: inside
:class:`~trilut.hw.rmsnorm.RMSNorm` (sim/tb_rmsnorm.py), in_bits 16 at max_len 64.
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.nonlinear import INT32_MAX
from .arith import NO_COLLISION
from .divider import SeqDivider
from .isqrt import SeqIsqrt, isqrt_root_bits
from .queue import Queue

__all__ = ["LayerNorm", "OUT_BITS", "IN_BITS_RANGE", "MAX_LEN_LIMIT"]

OUT_BITS = 32                  # output port width (values fit 31 bits, see module docstring)
IN_BITS_RANGE = (2, 16)        # y = x - mu must fit a signed 18-bit DSP operand
MAX_LEN_LIMIT = 1 << 16        # largest supported max_len
BUFFERS = 4                    # row buffers: one filling, one draining, two in the per-row math
RECIP_BITS = INT32_MAX.bit_length()   # 31: width of (2^31 - 1) // std
F_SPLIT = 17                   # y * f = y * f[:17] + (y * f[17:]) << 17: two 18x18 products
_OUT_PIPE = 6                  # results in flight from read issue to FIFO write:
                               # read, RAM register, y, products, sum, write
OUT_FIFO_DEPTH = _OUT_PIPE + 3


class LayerNorm(wiring.Component):
    """Streaming integer LayerNorm, one element per cycle (see the module docstring).

    Parameters: ``in_bits`` input width (8 for int8 activations, 16 for the
    int16 residual stream; any value in [2, 16] is accepted); ``max_len``
    the largest row length C (1 .. 65536; C itself is set at run time by
    ``last``); ``rms``: RMSNorm instead (no mean, ``var = sum(x^2)``; module
    docstring). Ports: ``inp``, ``out`` (streams), ``error`` (sticky flag).
    """

    def __init__(self, in_bits=8, max_len=768, *, rms=False):
        check_int("in_bits", in_bits, *IN_BITS_RANGE)
        check_int("max_len", max_len, 1, MAX_LEN_LIMIT)
        if not isinstance(rms, bool):
            raise TypeError(f"rms must be a bool, got {rms!r}")
        n = in_bits
        self._in_bits, self._max_len, self._rms = in_bits, max_len, rms
        self._c_bits = max_len.bit_length()
        self._s1_bits = (max_len * ((1 << n) - 1)).bit_length()
        self._s2_bits = (max_len << (2 * n - 2)).bit_length()
        self._var_bits = self._s2_bits if rms else (max_len * ((1 << n) - 1) ** 2).bit_length()
        self._std_bits = isqrt_root_bits(self._var_bits)
        self._addr_bits = (max_len - 1).bit_length()
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({"data": signed(n), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({"data": signed(OUT_BITS),
                                                           "last": 1}))),
            "error": Out(1),
        })

    in_bits = property(lambda self: self._in_bits)
    rms = property(lambda self: self._rms, doc="RMSNorm (mu = 0, var = sum(x^2))")
    max_len = property(lambda self: self._max_len, doc="largest row length C")
    out_bits = property(lambda self: OUT_BITS)
    buffers = property(lambda self: BUFFERS, doc="row buffers in the block RAM")
    c_bits = property(lambda self: self._c_bits, doc="width of the row length C")
    s1_bits = property(lambda self: self._s1_bits, doc="width of the offset sum S1'")
    var_bits = property(lambda self: self._var_bits,
                        doc="variance width: bit_length(max_len * (2^in_bits - 1)^2), "
                            "or of max_len * 2^(2 in_bits - 2) with rms")
    std_bits = property(lambda self: self._std_bits, doc="isqrt result width")
    buffer_depth = property(lambda self: 1 << self._addr_bits,
                            doc="elements per row buffer (max_len rounded up to a power of 2)")

    @property
    def mean_cycles(self):
        """Cycles the MEAN/VAR stage spends per row (one row at a time): take
        (1), divide (s1_bits + 1), two shift-add multiplies (in_bits + 2 each,
        the second ending with the variance), rounding (4), push (1). With
        rms: 1 (S2 is the variance, passed through in the cycle it is read)."""
        if self._rms:
            return 1
        return 1 + (self._s1_bits + 1) + 2 * (self._in_bits + 2) + 4 + 1

    @property
    def std_cycles(self):
        """Cycles the STD stage spends per row (one row at a time): take (1),
        isqrt (std_bits + 1), divide (31 + 1), its result pushed as it appears."""
        return 1 + (self._std_bits + 1) + (RECIP_BITS + 1)

    @property
    def resources(self):
        """ECP5 estimate: ``mult18`` MULT18X18D (x*x, and y*f as two products),
        ``dp16kd`` block RAMs for the row buffers (the cheapest DP16KD
        geometry for ``buffers * buffer_depth`` words of ``in_bits``)."""
        depth, width = BUFFERS << self._addr_bits, self._in_bits
        geometries = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18))
        dp16kd = min(-(-depth // d) * -(-width // w) for d, w in geometries)
        return {"mult18": 3, "dp16kd": dp16kd}

    def latency(self):
        """Cycles from a row's last element accepted on ``inp`` to its first
        result valid on ``out``, with every stage idle: the input register
        (1), the fill pipeline and FIFO A (4), :attr:`mean_cycles`,
        :attr:`std_cycles`, then load (1), read-to-FIFO pipeline (5) and the
        output FIFO (2)."""
        return 1 + 4 + self.mean_cycles + self.std_cycles + 1 + (_OUT_PIPE - 1) + 2

    def row_interval(self, c):
        """Analytic steady-state cycles per row of ``c`` elements without gaps or
        backpressure: ``max(c, mean_cycles, std_cycles, lifetime / buffers)``,
        where a row holds its buffer for ``lifetime = 2c + 4 + mean_cycles +
        std_cycles`` cycles (first element in to last element read)."""
        check_int("c", c, 1, self._max_len)
        lifetime = 2 * c + 4 + self.mean_cycles + self.std_cycles
        return max(c, self.mean_cycles, self.std_cycles, -(-lifetime // BUFFERS))

    # ------------------------------------------------------------------

    def _layouts(self):
        n, c_bits = self._in_bits, self._c_bits
        sums = data.StructLayout({"c": unsigned(c_bits), "s2": unsigned(self._s2_bits)}
                                 if self._rms else
                                 {"c": unsigned(c_bits), "s1": unsigned(self._s1_bits),
                                  "s2": unsigned(self._s2_bits)})
        var = data.StructLayout({"c": unsigned(c_bits), "mu": signed(n),
                                 "var": unsigned(self._var_bits)})
        recip = data.StructLayout({"c": unsigned(c_bits), "mu": signed(n),
                                   "f": unsigned(RECIP_BITS)})
        return sums, var, recip

    def elaborate(self, platform):
        m = Module()
        n, L, W = self._in_bits, self._max_len, self._var_bits
        c_bits, ab = self._c_bits, self._addr_bits
        sums_l, var_l, recip_l = self._layouts()

        # A buffer is refilled only after its row has been read out.
        m.submodules.row_mem = mem = memory.Memory(shape=signed(n), depth=BUFFERS << ab,
                                                   init=[], attrs=NO_COLLISION)
        m.submodules.fifo_sums = fifo_a = fifo.SyncFIFO(width=sums_l.size, depth=BUFFERS)
        m.submodules.fifo_var = fifo_v = fifo.SyncFIFO(width=var_l.size, depth=2)
        m.submodules.fifo_recip = fifo_b = fifo.SyncFIFO(width=recip_l.size, depth=2)
        m.submodules.out_fifo = out_fifo = Queue(width=OUT_BITS + 1, depth=OUT_FIFO_DEPTH)
        if not self._rms:
            m.submodules.mean_div = mean_div = SeqDivider(self._s1_bits, c_bits)
        m.submodules.isqrt = isqrt = SeqIsqrt(W)
        m.submodules.recip_div = recip_div = SeqDivider(RECIP_BITS, self._std_bits)

        held = Signal(range(BUFFERS + 1))     # rows holding a buffer
        release = Signal()                    # OUT issued a row's last read
        claim = Signal()                      # FILL took a row's first element
        m.d.sync += held.eq(held + claim - release)

        # ---------------- FILL ----------------
        # Input register: the element waits in in_x until FILL takes it, so
        # FILL's logic sees registers only (inp.valid ends here).
        in_v, in_last = Signal(), Signal()
        in_x = Signal(signed(n), reset_less=True)
        widx = Signal(range(L), name="widx")
        wbuf = Signal(range(BUFFERS), name="wbuf")
        dropping = Signal()
        error = Signal(name="error_flag")
        m.d.comb += self.error.eq(error)
        first = widx == 0
        fill_ready = dropping | ~first | (held != BUFFERS)
        m.d.comb += self.inp.ready.eq(~in_v | fill_ready)
        with m.If(self.inp.ready):
            m.d.sync += [in_v.eq(self.inp.valid), in_x.eq(self.inp.payload.data),
                         in_last.eq(self.inp.payload.last)]
        accept = in_v & fill_ready
        store = Signal()
        at_max = widx == L - 1
        row_end = Signal()
        m.d.comb += [store.eq(accept & ~dropping),
                     row_end.eq(store & (in_last | at_max)),
                     claim.eq(store & first)]
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(Cat(widx, wbuf)), wp.data.eq(in_x), wp.en.eq(store)]
        with m.If(store):
            with m.If(row_end):
                m.d.sync += [widx.eq(0), wbuf.eq(wbuf + 1)]
                with m.If(~in_last):                    # over-long row: cut here
                    m.d.sync += [dropping.eq(1), error.eq(1)]
            with m.Else():
                m.d.sync += widx.eq(widx + 1)
        with m.If(accept & dropping & in_last):
            m.d.sync += dropping.eq(0)

        # x -> (x + 2^(n-1), x*x) -> accumulate -> FIFO A
        v1, f1, l1 = Signal(), Signal(), Signal()
        x1 = Signal(signed(n), reset_less=True)
        m.d.sync += [v1.eq(store), f1.eq(first), l1.eq(row_end), x1.eq(in_x)]
        v2, f2, l2 = Signal(), Signal(), Signal()
        ux2 = Signal(n, reset_less=True)
        sq2 = Signal(2 * n - 1, reset_less=True)
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1),
                     ux2.eq(Cat(x1[:n - 1], ~x1[n - 1])), sq2.eq(x1 * x1)]
        cnt = Signal(c_bits)
        s1 = Signal(self._s1_bits)
        s2 = Signal(self._s2_bits)
        sums = [s1.eq(Mux(f2, 0, s1) + ux2)] if not self._rms else []
        with m.If(v2):
            m.d.sync += [cnt.eq(Mux(f2, 1, cnt + 1)), *sums, s2.eq(Mux(f2, 0, s2) + sq2)]
        done3 = Signal()
        m.d.sync += done3.eq(v2 & l2)
        wa = Signal(sums_l)
        m.d.comb += [wa.c.eq(cnt), *([wa.s1.eq(s1)] if not self._rms else []), wa.s2.eq(s2),
                     fifo_a.w_data.eq(wa), fifo_a.w_en.eq(done3)]
        # FIFO A cannot overflow: each entry is a row holding a buffer.

        # ---------------- MEAN/VAR ----------------
        ra = data.View(sums_l, fifo_a.r_data)
        if self._rms:          # mu = 0, var = S2: passed through as it is read
            wv = Signal(var_l)
            m.d.comb += [wv.c.eq(ra.c), wv.mu.eq(0), wv.var.eq(ra.s2), fifo_v.w_data.eq(wv),
                         fifo_v.w_en.eq(fifo_a.r_rdy), fifo_a.r_en.eq(fifo_v.w_rdy)]
        else:
            self._mean_var(m, ra, fifo_a, fifo_v, mean_div)

        self._std_out(m, fifo_v, fifo_b, isqrt, recip_div, out_fifo, mem, release)
        return m

    def _mean_var(self, m, ra, fifo_a, fifo_v, mean_div):
        """MEAN/VAR stage of LayerNorm: mu (ties to even) and the one-pass variance."""
        n, W, c_bits = self._in_bits, self._var_bits, self._c_bits
        sums_l, var_l, recip_l = self._layouts()
        mc = Signal(c_bits)
        ms1 = Signal(self._s1_bits)
        ms2 = Signal(self._s2_bits)
        qp = Signal(n)                          # q' = S1' // C = q + 2^(n-1)
        rem = Signal(c_bits)                    # r = S1' - q' * C, in [0, C)
        up = Signal()
        mu = Signal(signed(n))
        dd = Signal(signed(c_bits + 1))         # d = S1 - C * mu
        s1s = Signal(W)                         # S1 mod 2^W
        var = Signal(W)

        # Shift-add multiplier modulo 2^W: P = a * b, b signed n + 1 bits.
        acc_p = Signal(W)
        acc_a = Signal(W)
        acc_b = Signal(n + 1)
        steps = Signal(range(n + 2))
        with m.If(steps != 0):
            with m.If(acc_b[0]):
                m.d.sync += acc_p.eq(Mux(steps == 1, acc_p - acc_a, acc_p + acc_a))
            m.d.sync += [acc_a.eq(acc_a << 1), acc_b.eq(acc_b >> 1), steps.eq(steps - 1)]

        def start_mul(a, b):
            return [acc_p.eq(0), acc_a.eq(a), acc_b.eq(b), steps.eq(n + 1)]

        wv = Signal(var_l)
        m.d.comb += [wv.c.eq(mc), wv.mu.eq(mu), wv.var.eq(var), fifo_v.w_data.eq(wv)]
        m.d.comb += [mean_div.inp.payload.num.eq(ra.s1), mean_div.inp.payload.den.eq(ra.c)]
        with m.FSM(name="mean_fsm"):
            with m.State("IDLE"):
                m.d.comb += [mean_div.inp.valid.eq(fifo_a.r_rdy),
                             fifo_a.r_en.eq(mean_div.inp.ready)]
                with m.If(fifo_a.r_rdy & mean_div.inp.ready):
                    m.d.sync += [mc.eq(ra.c), ms1.eq(ra.s1), ms2.eq(ra.s2)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += mean_div.out.ready.eq(1)
                with m.If(mean_div.out.valid):
                    m.d.sync += qp.eq(mean_div.out.payload)
                    m.d.sync += start_mul(mc, mean_div.out.payload[:n])   # q' >= 0
                    m.next = "MUL_QC"
            with m.State("MUL_QC"):
                with m.If(steps == 0):
                    m.next = "ROUND1"
            with m.State("ROUND1"):
                m.d.sync += [rem.eq(ms1 - acc_p), s1s.eq(ms1 - (mc << (n - 1)))]
                m.next = "ROUND2"
            with m.State("ROUND2"):
                twice = Cat(Const(0, 1), rem)
                m.d.sync += up.eq((twice > mc) | ((twice == mc) & qp[0]))
                m.next = "ROUND3"
            with m.State("ROUND3"):
                m.d.sync += [mu.eq(qp + up - (1 << (n - 1))),
                             dd.eq(Mux(up, rem - mc, rem))]
                m.next = "ROUND4"
            with m.State("ROUND4"):
                m.d.sync += start_mul(s1s + dd, mu)        # T = S1 + d = 2 S1 - C mu
                m.next = "MUL_MUT"
            with m.State("MUL_MUT"):
                with m.If(steps == 0):
                    m.d.sync += var.eq(ms2 - acc_p)        # S2 - mu * T = sum((x - mu)^2)
                    m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += fifo_v.w_en.eq(1)
                with m.If(fifo_v.w_rdy):
                    m.next = "IDLE"

    def _std_out(self, m, fifo_v, fifo_b, isqrt, recip_div, out_fifo, mem, release):
        """STD (isqrt, reciprocal) and OUT (z = (x - mu) * f >> 1) stages."""
        n, L = self._in_bits, self._max_len
        c_bits = self._c_bits
        sums_l, var_l, recip_l = self._layouts()

        # ---------------- STD ----------------
        rv = data.View(var_l, fifo_v.r_data)
        sc = Signal(c_bits)
        smu = Signal(signed(n))
        root = isqrt.out.payload
        m.d.comb += [isqrt.inp.payload.eq(rv.var),
                     recip_div.inp.payload.num.eq(INT32_MAX),
                     recip_div.inp.payload.den.eq(Mux(root == 0, 1, root))]
        wb = Signal(recip_l)
        m.d.comb += [wb.c.eq(sc), wb.mu.eq(smu), wb.f.eq(recip_div.out.payload),
                     fifo_b.w_data.eq(wb)]
        with m.FSM(name="std_fsm"):
            with m.State("IDLE"):
                m.d.comb += [isqrt.inp.valid.eq(fifo_v.r_rdy),
                             fifo_v.r_en.eq(isqrt.inp.ready)]
                with m.If(fifo_v.r_rdy & isqrt.inp.ready):
                    m.d.sync += [sc.eq(rv.c), smu.eq(rv.mu)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                m.d.comb += [recip_div.inp.valid.eq(isqrt.out.valid),
                             isqrt.out.ready.eq(recip_div.inp.ready)]
                with m.If(isqrt.out.valid & recip_div.inp.ready):
                    m.next = "RECIP"
            with m.State("RECIP"):
                m.d.comb += [fifo_b.w_en.eq(recip_div.out.valid),
                             recip_div.out.ready.eq(fifo_b.w_rdy)]
                with m.If(recip_div.out.valid & fifo_b.w_rdy):
                    m.next = "IDLE"

        # ---------------- OUT ----------------
        rb = data.View(recip_l, fifo_b.r_data)
        active = Signal()
        ridx = Signal(range(L), name="ridx")
        rlast = Signal(range(L), name="rlast")
        rbuf = Signal(range(BUFFERS), name="rbuf")
        row_mu = Signal(signed(n))
        row_f = Signal(RECIP_BITS)
        room = Signal()
        m.d.comb += room.eq(out_fifo.level <= OUT_FIFO_DEPTH - _OUT_PIPE)
        issue = Signal()
        issue_last = Signal()
        m.d.comb += [issue.eq(active & room),
                     issue_last.eq(issue & (ridx == rlast)),
                     release.eq(issue_last)]
        load = Signal()
        m.d.comb += [load.eq(fifo_b.r_rdy & (~active | issue_last)),
                     fifo_b.r_en.eq(load)]
        with m.If(issue):
            m.d.sync += ridx.eq(Mux(issue_last, 0, ridx + 1))
            with m.If(issue_last):
                m.d.sync += [rbuf.eq(rbuf + 1), active.eq(0)]
        with m.If(load):
            m.d.sync += [active.eq(1), rlast.eq(rb.c - 1), row_mu.eq(rb.mu), row_f.eq(rb.f)]

        rp = mem.read_port(domain="sync")
        m.d.comb += [rp.addr.eq(Cat(ridx, rbuf)), rp.en.eq(issue)]
        o1v, o1l = Signal(), Signal()
        o1mu = Signal(signed(n), reset_less=True)
        o1f = Signal(RECIP_BITS, reset_less=True)
        m.d.sync += [o1v.eq(issue), o1l.eq(issue_last), o1mu.eq(row_mu), o1f.eq(row_f)]
        o2v, o2l = Signal(), Signal()            # block RAM output registered (its
        x2 = Signal(signed(n), reset_less=True)  # clock-to-out alone is ~6 ns on ECP5)
        o2mu = Signal(signed(n), reset_less=True)
        o2f = Signal(RECIP_BITS, reset_less=True)
        m.d.sync += [o2v.eq(o1v), o2l.eq(o1l), x2.eq(rp.data), o2mu.eq(o1mu), o2f.eq(o1f)]
        o3v, o3l = Signal(), Signal()
        y3 = Signal(signed(n + 1), reset_less=True)
        o3f = Signal(RECIP_BITS, reset_less=True)
        m.d.sync += [o3v.eq(o2v), o3l.eq(o2l), y3.eq(x2 - o2mu), o3f.eq(o2f)]
        o4v, o4l = Signal(), Signal()
        plo = Signal(signed(n + 1 + F_SPLIT + 1), reset_less=True)
        phi = Signal(signed(n + 1 + RECIP_BITS - F_SPLIT + 1), reset_less=True)
        m.d.sync += [o4v.eq(o3v), o4l.eq(o3l),
                     plo.eq(y3 * o3f[:F_SPLIT]), phi.eq(y3 * o3f[F_SPLIT:])]
        o5v, o5l = Signal(), Signal()
        z5 = Signal(signed(OUT_BITS), reset_less=True)
        total = plo + (phi << F_SPLIT)               # y * f, |y * f| <= 2^31 - 1
        m.d.sync += [o5v.eq(o4v), o5l.eq(o4l), z5.eq(total[1:OUT_BITS + 1])]
        m.d.comb += [out_fifo.w_data.eq(Cat(z5, o5l)), out_fifo.w_en.eq(o5v)]
        m.d.comb += [self.out.valid.eq(out_fifo.r_rdy),
                     self.out.payload.eq(out_fifo.r_data),
                     out_fifo.r_en.eq(self.out.ready)]
