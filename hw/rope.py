"""Streaming RoPE (rotate_half) with the dyadic requantizer, bit-exact with
:func:`trilut.golden.llm.rope_requant` (q_rope, k_rope and k_rope16 of the
decoder, docs/llm.md).

A row is one token's q (or k) vector: ``heads`` heads of ``head_dim`` = d
int16 elements, head after head, ``last`` on the final element, and the
token's position ``pos`` (sampled with the row's first element). With
h = d / 2, c = cos[pos, j], s = sin[pos, j] (int16 at 2^-14)::

    r_j     = x_j c - x_{j+h} s          (j < h)
    r_{j+h} = x_{j+h} c + x_j s
    y       = clamp((r * m + 2^(e-1)) >> e)    to int8 (q_rope, k_rope) or int16 (k_rope16)

Architecture::

    inp --> head buffers (3 x d, block RAM) --> x_j, x_partner  --+
                                                                  +--> 2 MULT18X18D --> r
    table --> cos/sin memory (max_pos x h) ----> c, s  -----------+     --> requantizer --> out

A head is written into one of three head buffers; once it is complete it is
read back one element per cycle, each read fetching ``x_j``, its partner
``x_{j +- h}`` (a second read port) and the table entry ``(pos, j mod h)``.
Three buffers let the next head fill while one drains, with no bubble.

The cos/sin tables are a *loaded* memory, written once through the ``table``
stream (``{"cos", "sin", "last"}``, position-major: entry ``pos * h + j``,
``last`` on the final entry), not a ROM built from ``rope_theta``: the
accelerator stays model independent (an imported checkpoint brings its own
theta, head dim and length, e.g. 5e5 for Llama 3), the compiler already has
the exact integers (golden ``LlamaParams.rope_cos/rope_sin``), and one load
of ``max_pos * h`` beats at boot is negligible (8,192 beats for the
built-in LM). :meth:`table_beats` packs golden's tables. The memory is
``max_pos * h`` x 32 bits (the built-in LM, d = 64:
8,192 words at max_pos = 256, 16 DP16KD; the memory scales with ``max_pos``).

Ports: ``inp`` ``{"data": signed(16), "pos": unsigned, "last": 1}``;
``out`` ``{"data": signed(out_bits), "last": 1}``, elements in input order;
``table`` (above); ``m``, ``e`` the requantizer's constants (held stable
while rows are in flight); ``error`` sticky, cleared by reset: a row whose
length is not a multiple of d (its last head is output with unspecified
values), a ``pos >= max_pos`` (unspecified values), or a table longer than
``max_pos * h`` entries (the extra entries dropped).

Handshake: ``inp.ready`` and ``table.ready`` depend on registers only;
honours backpressure on ``out`` (reads are issued only against free output
FIFO entries). Throughput: one element per cycle with rows back to back
(measured in the testbench). Latency: :meth:`latency` cycles from a head's
last element accepted to its first result valid. DSP: 2 (rotation) + 2
(requantizer) MULT18X18D.

Tested (Verilator, against golden): d = 8 and 16 with 1..4 heads per row,
golden tables (theta 10000) and full-range random int16 tables, positions
0 and max_pos - 1, x in {-32768, 32767}, all-equal and one-hot rows, out_bits
8 and 16, m over [0, 2^16), e over [1, 62].
"""
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.quant import M_BITS_DEFAULT
from .queue import CREDIT_RETURN, OutputQueue
from .requant import E_FIELD, M_BITS_MAX, _RequantPath

__all__ = ["RoPE", "MAX_TABLE"]

IN_BITS = 16                  # q, k are int16 (golden WIDE)
TAB_BITS = 16                 # cos, sin int16 at 2^-14
ACC_BITS = 2 * IN_BITS + 1    # |x c| + |x' s| <= 2^31 for any int16 operands
MAX_TABLE = 1 << 16           # max_pos * head_dim / 2 entries
BUFFERS = 3
_ROT_PIPE = 4                 # issue, read data registered, products, sum


class RoPE(wiring.Component):
    """Streaming RoPE + requantizer (module docstring).

    Parameters: ``head_dim`` d (even, 2..512); ``max_pos`` positions in the
    table (>= 1, ``max_pos * d / 2 <= 65536``); ``out_bits`` 8 (q_rope,
    k_rope) or 16 (k_rope16); ``m_bits`` width of m (default 16).
    """

    def __init__(self, head_dim=64, max_pos=512, out_bits=8, m_bits=M_BITS_DEFAULT):
        check_int("head_dim", head_dim, 2, 512)
        if head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE pairs j, j + d/2), got {head_dim}")
        check_int("max_pos", max_pos, 1)
        if max_pos * head_dim // 2 > MAX_TABLE:
            raise ValueError(f"max_pos * head_dim / 2 = {max_pos * head_dim // 2} exceeds the "
                             f"table limit {MAX_TABLE}")
        check_int("out_bits", out_bits, 8, 16)
        if out_bits not in (8, 16):
            raise ValueError(f"out_bits must be 8 or 16, got {out_bits}")
        check_int("m_bits", m_bits, 1, M_BITS_MAX)
        self._d, self._max_pos, self._out_bits, self._m_bits = head_dim, max_pos, out_bits, m_bits
        self._path = _RequantPath(lanes=1, acc_bits=ACC_BITS, m_bits=m_bits, out_bits=out_bits,
                                  bias_bits=1, channels=1)
        self._pos_bits = max(1, (max_pos - 1).bit_length())
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout(
                {"data": signed(IN_BITS), "pos": unsigned(self._pos_bits), "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({"data": signed(out_bits),
                                                           "last": 1}))),
            "table": In(stream.Signature(data.StructLayout(
                {"cos": signed(TAB_BITS), "sin": signed(TAB_BITS), "last": 1}))),
            "m": In(unsigned(m_bits)),
            "e": In(E_FIELD),
            "error": Out(1),
        })

    head_dim = property(lambda self: self._d)
    max_pos = property(lambda self: self._max_pos)
    out_bits = property(lambda self: self._out_bits)
    m_bits = property(lambda self: self._m_bits)
    table_depth = property(lambda self: self._max_pos * self._d // 2,
                           doc="cos/sin entries: max_pos * head_dim / 2")
    pipe_latency = property(lambda self: _ROT_PIPE + self._path.latency,
                            doc="cycles from a read issued to its result entering the FIFO")

    def latency(self):
        """Cycles from a head's last element accepted to its first result
        valid: buffer full (1), :attr:`pipe_latency` from the read issue, and
        the buffered output FIFO (2: write, then its output register)."""
        return 1 + self.pipe_latency + 2

    def table_beats(self, cos, sin):
        """``table`` payloads for int16 (max_pos, d/2) arrays (golden rope_tables)."""
        shape = (self._max_pos, self._d // 2)
        cos, sin = np.asarray(cos), np.asarray(sin)
        for name, a in (("cos", cos), ("sin", sin)):
            if a.shape != shape or a.dtype.kind not in "iu":
                raise ValueError(f"{name}: expected integer {shape}, got {a.dtype} {a.shape}")
            if a.min() < -(1 << 15) or a.max() >= 1 << 15:
                raise ValueError(f"{name}: values must fit int16")
        c, s = cos.reshape(-1), sin.reshape(-1)
        return [{"cos": int(a), "sin": int(b), "last": int(i == len(c) - 1)}
                for i, (a, b) in enumerate(zip(c, s))]

    def elaborate(self, platform):
        m = Module()
        d, h = self._d, self._d // 2
        jb = (d - 1).bit_length()
        depth = self.table_depth
        error = Signal()
        m.d.comb += self.error.eq(error)

        # ---------------- cos/sin table ----------------
        tab_l = data.StructLayout({"cos": signed(TAB_BITS), "sin": signed(TAB_BITS)})
        m.submodules.table_mem = tab = memory.Memory(shape=tab_l, depth=depth, init=[])
        waddr = Signal(range(depth + 1))
        tfull = waddr == depth
        twp = tab.write_port()
        m.d.comb += [self.table.ready.eq(1), twp.addr.eq(waddr),
                     twp.data.cos.eq(self.table.payload.cos),
                     twp.data.sin.eq(self.table.payload.sin),
                     twp.en.eq(self.table.valid & ~tfull)]
        with m.If(self.table.valid):
            with m.If(tfull):
                m.d.sync += error.eq(1)
            with m.If(self.table.payload.last):
                m.d.sync += waddr.eq(0)
            with m.Elif(~tfull):
                m.d.sync += waddr.eq(waddr + 1)

        # ---------------- input: heads into buffers ----------------
        m.submodules.heads = buf = memory.Memory(shape=signed(IN_BITS), depth=BUFFERS << jb,
                                                 init=[])
        full = Signal(BUFFERS)
        set_full, clr_full = Signal(BUFFERS), Signal(BUFFERS)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        desc_l = data.StructLayout({"base": Shape.cast(range(depth)), "n": unsigned(jb + 1),
                                    "last": 1})
        desc = [Signal(desc_l, name=f"desc{i}") for i in range(BUFFERS)]

        wj = Signal(range(d))
        wbank = Signal(range(BUFFERS))
        row_first = Signal(init=1)
        row_base = Signal(range(depth))
        pl = self.inp.payload
        m.d.comb += self.inp.ready.eq(~full.bit_select(wbank, 1))
        accept = self.inp.valid & self.inp.ready
        wp = buf.write_port()
        m.d.comb += [wp.addr.eq(Cat(wj, wbank)), wp.data.eq(pl.data), wp.en.eq(accept)]
        base = Signal(range(depth))
        m.d.comb += base.eq(Mux(row_first, (pl.pos * h)[:len(base)], row_base))
        head_end = accept & ((wj == d - 1) | pl.last)
        with m.If(accept):
            m.d.sync += [row_first.eq(pl.last), row_base.eq(base)]
            with m.If(row_first & (pl.pos >= self._max_pos)):
                m.d.sync += error.eq(1)
            with m.If(pl.last & (wj != d - 1)):
                m.d.sync += error.eq(1)          # row length not a multiple of d
            with m.If(head_end):
                m.d.sync += [wj.eq(0), wbank.eq(Mux(wbank == BUFFERS - 1, 0, wbank + 1))]
                with m.Switch(wbank):
                    for i in range(BUFFERS):
                        with m.Case(i):
                            m.d.sync += [desc[i].base.eq(base), desc[i].n.eq(wj + 1),
                                         desc[i].last.eq(pl.last)]
            with m.Else():
                m.d.sync += wj.eq(wj + 1)
        for i in range(BUFFERS):
            m.d.comb += set_full[i].eq(head_end & (wbank == i))

        # ---------------- output: rotate and requantize ----------------
        p = self._path
        oq = OutputQueue(m, self.out, depth=self.pipe_latency + CREDIT_RETURN)
        rj = Signal(range(d))
        rbank = Signal(range(BUFFERS))
        cur = Signal(desc_l)
        with m.Switch(rbank):
            for i in range(BUFFERS):
                with m.Case(i):
                    m.d.comb += cur.eq(desc[i])
        issue = oq.issue
        m.d.comb += issue.eq(full.bit_select(rbank, 1) & oq.room)
        at_end = rj == cur.n - 1
        with m.If(issue):
            with m.If(at_end):
                m.d.sync += [rj.eq(0), rbank.eq(Mux(rbank == BUFFERS - 1, 0, rbank + 1))]
            with m.Else():
                m.d.sync += rj.eq(rj + 1)
        for i in range(BUFFERS):
            m.d.comb += clr_full[i].eq(issue & at_end & (rbank == i))

        first_half = rj < h
        jm = Mux(first_half, rj, rj - h)
        partner = Mux(first_half, rj + h, rj - h)
        rp_x, rp_p = buf.read_port(), buf.read_port()
        rp_t = tab.read_port()
        m.d.comb += [rp_x.addr.eq(Cat(rj, rbank)), rp_p.addr.eq(Cat(partner[:jb], rbank)),
                     rp_t.addr.eq(cur.base + jm), rp_x.en.eq(issue), rp_p.en.eq(issue),
                     rp_t.en.eq(issue)]
        v1, l1, n1 = Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(issue), l1.eq(issue & at_end & cur.last), n1.eq(first_half)]
        v2, l2, n2 = Signal(), Signal(), Signal()
        x2, xp2 = Signal(signed(IN_BITS)), Signal(signed(IN_BITS))
        c2, s2 = Signal(signed(TAB_BITS)), Signal(signed(TAB_BITS))
        m.d.sync += [v2.eq(v1), l2.eq(l1), n2.eq(n1), x2.eq(rp_x.data), xp2.eq(rp_p.data),
                     c2.eq(rp_t.data.cos), s2.eq(rp_t.data.sin)]
        v3, l3, n3 = Signal(), Signal(), Signal()
        pc, ps = Signal(signed(2 * IN_BITS)), Signal(signed(2 * IN_BITS))
        m.d.sync += [v3.eq(v2), l3.eq(l2), n3.eq(n2), pc.eq(x2 * c2), ps.eq(xp2 * s2)]
        v4, l4 = Signal(), Signal()
        r4 = Signal(signed(ACC_BITS))
        m.d.sync += [v4.eq(v3), l4.eq(l3), r4.eq(Mux(n3, pc - ps, pc + ps))]

        owner = SimpleNamespace(m=self.m, e=self.e, bias=Const(0, signed(1)))
        valid, (y,), last, _ = p.elaborate(m, owner, v4, [r4], l4)
        oq.push(valid, data=y, last=last)
        return m
