# amaranth: UnusedElaboratable=no
# (the engines built in Accelerator.__init__ double as host-side helpers:
# an Accelerator used only by the compiler or host never elaborates them)
"""The accelerator top: AXI4-Lite control, AXI4-Stream data, a descriptor
sequencer and the pass types LOAD, NORM, LINEAR, ATTN_QK, ATTN_AV, STORE,
END: a whole integer encoder block (``trilut.host.compiler`` writes the
program).

See ``docs/accelerator.md`` for the architecture,
and :mod:`trilut.hw.isa` for the descriptor, constant entries, error codes
and register map (defined there once; this module elaborates from them).

Ports (Verilog names, so that cocotbext-axi binds with
``AxiLiteBus.from_prefix(dut, "s_axil")`` and
``AxiStreamBus.from_prefix(dut, "s_axis" / "m_axis")``; generate Verilog
with :func:`generate_verilog`, which names the ports through
:func:`flat_ports`):

* ``s_axil_*``: AXI4-Lite slave, 32-bit data, :attr:`Accelerator.regs`.
  One outstanding write and one outstanding read; ``awready``/``wready`` rise
  together once both ``awvalid`` and ``wvalid`` are high; responses OKAY;
  ``wstrb`` is ignored (full-word writes).
* ``s_axis_*``: AXI4-Stream slave (``tdata``, ``tvalid``, ``tready``,
  ``tlast``), :attr:`Accelerator.axis_bytes` bytes wide. ``tlast`` is not
  checked: the sequencer counts beats from the descriptor.
* ``m_axis_*``: AXI4-Stream master, same width, ``tlast`` on the final
  transfer of every row.

Stream formats (byte 0 = ``tdata[7:0]``, little-endian):

* LOAD into an int8 bank: each row of K elements as ``ceil(K / axis_bytes)``
  transfers, one int8 per byte, the last transfer zero-padded. Into the
  residual bank: int16 little-endian, ``axis_bytes // 2`` per transfer.
* STORE: the same format out of ``m_axis`` (padding bytes are 0).
* LINEAR weights: for every one of the M activation rows, the engine's
  ``wgt`` beats for that row (``TLMMEngine.wgt_beats``: output block outer,
  k-block inner), one transfer each, the beat's ``codes`` field in the low
  bits of ``tdata`` (``last_k``/``last_n`` are generated from K and N). The
  weights are sent once per activation row: there is no weight store yet.

Passes run one at a time. LINEAR: the per-channel constants of the pass (N
entries of constant set ``const``) are first copied into the epilogue's
table (N cycles), then the source rows are read from their bank (zero-padded
to whole k-blocks), built into tables by the TLMM engine against the
streamed weights, serialized one output per cycle into the epilogue
(Requantizer to int8 into an int8 bank, or bias add + ResidualAdd into the
residual bank, read-modify-write; or REQUANT_GELU: Requantizer to the int8
GELU input -> ShiftGELU ("ivit", x0 from the constants) -> per-tensor
Requantizer to int8, :data:`~trilut.hw.isa.GELU_CONST`) and written to the
destination rows. NORM: its C constant entries are copied the same way, then
int16 rows of the residual bank stream through LayerNorm and the per-channel
Requantizer (gamma, beta and the gamma sign folded into m, e, bias, as golden
``NormParams``) into an int8 bank.

KV region (banks :data:`~trilut.hw.isa.KEY_BANK` / ``VALUE_BANK``): int8 K
and V rows stored as the int8 engine's weight beats, one ``attn_lanes x
attn_kpc``-byte memory word per beat (:func:`kv_address`: K words are key
block x channel block, V words channel block x token block; every element
write is one byte-enable write). LINEAR (REQUANT) and LOAD write it through
the act writer's row/column, STORE reads it back row by row.
ATTN_QK / ATTN_AV (``engine`` INT8, ``heads`` H, ``k``/``n`` per head): for
each source row t and head h, segment h of row t (``k`` elements) is the int8
engine's activation row and the KV fetcher streams head h's K (QK: ``n``
keys) or V (AV: ``k`` keys, ``n`` = head dim) words as its weights at one
beat per cycle; the ``n`` results go through the serializer and the
per-tensor Requantizer (one constant entry) and, for QK, Shiftmax (x0 from
the entry, :data:`~trilut.hw.isa.SOFTMAX_CONST`), into columns ``h*n ..`` of
destination row t (rows of ``heads * n``). Heads are looped inside the pass,
row-major (t outer, h inner), so the destination is written in order.

Sequencer: FETCH -> LATCH (descriptor register) -> CHECK (row-range sums
and decoded flags, registered) -> CHECK2 (error code, registered) ->
DISPATCH (stop with the error code, END, or start the pass) -> [PARAM] ->
RUN, so a descriptor costs five cycles before its pass starts.

Handshakes: every internal stage honours backpressure; ``m_axis`` may be
stalled indefinitely; ``s_axis.tready`` never depends on ``tvalid``.
Soft reset (``CTRL.soft_reset``) holds the sequencer and every datapath
unit in reset for :data:`SOFT_RESET_CYCLES` cycles (so that valid bits in
the units' reset-less delay lines drain) and gives the CTRL write's response
only after that, so the host's next access finds the core idle; the
AXI4-Lite slave and the memories' contents are not reset.
"""
from amaranth.back import verilog
from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.checks import check_int
from ..golden.encoder import PROBS_BITS, SOFTMAX_N
from . import isa
from .isa import (CONST_BITS, DESCRIPTOR, DESCRIPTOR_BITS, GELU_CONST, KEY_BANK, RESIDUAL_BANK,
                  VALUE_BANK,
                  RESIDUAL_CONST, REQUANT_CONST, EngineKind, Epilogue, ErrorCode, Head, Opcode,
                  RegisterMap)
from .layernorm import OUT_BITS as LN_OUT_BITS
from .layernorm import LayerNorm
from .matmul import TLMMEngine
from .requant import Requantizer, ResidualAdd
from .int8mm import Int8Engine
from .shiftgelu import ShiftGELU
from .shiftmax import Shiftmax

#: Cycles a soft reset holds the sequencer and datapath in reset: longer than
#: any reset-less pipeline of the units (``arith.delay`` chains carry valid
#: bits; the longest single chain in the test build is 47 cycles), so that
#: nothing in flight when the reset came survives it.
SOFT_RESET_CYCLES = 256

__all__ = ["Accelerator", "SOFT_RESET_CYCLES", "axi_lite_signature", "axi_stream_signature",
           "flat_ports", "generate_verilog", "kv_address"]


def _bits(n):
    """Address bits for n entries (0 for n == 1)."""
    return (n - 1).bit_length()


# --- AXI signatures and flat port names ---------------------------------------

def axi_lite_signature(addr_bits, data_bits=isa.AXIL_DATA_BITS):
    """AXI4-Lite, as seen from the master (use ``In(...)`` on a slave)."""
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def axi_stream_signature(data_bits):
    """AXI4-Stream (tdata, tvalid, tready, tlast), as seen from the source."""
    return wiring.Signature({"tdata": Out(data_bits), "tvalid": Out(1), "tready": In(1),
                             "tlast": Out(1)})


def flat_ports(component):
    """``{verilog_name: (value, direction)}`` with the signature path joined by
    ``_`` (``s_axil.awaddr`` -> ``s_axil_awaddr``), the names AXI verification
    IP expects (Amaranth's default joins with ``__``)."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = value.as_value() if hasattr(value, "as_value") else value
        # Direction None: inferred (inputs are the ports nothing drives).
        ports["_".join(map(str, path))] = (value, None)
    return ports


def generate_verilog(component, name):
    """Verilog of ``component`` with :func:`flat_ports` names."""
    return verilog.convert(component, name=name, ports=flat_ports(component), emit_src=False)


def _elem_stream(bits=16):
    return stream.Signature(data.StructLayout({"data": signed(bits), "last": 1}))


# --- datapath helpers (private) ------------------------------------------------

class _Reader(wiring.Component):
    """Reads ``rows`` rows from a memory with a one-cycle synchronous read
    port into a small FIFO. A row is ``segs`` segments of ``length`` elements
    (consecutive columns; ``segs`` = 1 except for the attention passes, whose
    segments are heads); with ``pad``, each segment is extended with zeros to
    a multiple of ``blk_last + 1`` (<= ``block``) elements. ``out.last`` marks
    each segment's final element. Starts on ``go``; config held while
    running."""

    def __init__(self, *, elem_bits, row_bits, col_bits, block=1, depth=4):
        self._elem_bits, self._block, self._depth = elem_bits, block, depth
        self._col_bits = col_bits
        super().__init__({
            "go": In(1), "base": In(row_bits), "rows": In(row_bits + 1),
            "length": In(col_bits + 1), "segs": In(8), "pad": In(1),
            "blk_last": In(range(block)),
            "row_addr": Out(row_bits + 1), "col_addr": Out(col_bits + 1),
            "rdata": In(signed(elem_bits)),
            "out": Out(_elem_stream()),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        q = fifo.SyncFIFOBuffered(width=17, depth=depth)
        m.submodules.fifo = q
        active = Signal()
        r = Signal.like(self.rows)
        col = Signal(self._col_bits + _bits(self._block) + 2)
        sbase = Signal(self._col_bits + 1)
        s = Signal.like(self.segs)
        j = Signal(range(self._block))
        row_end = Signal()
        issue = Signal()
        m.d.comb += [
            issue.eq(active & (q.level < depth - 1)),
            row_end.eq((col + 1 >= self.length) & (~self.pad | (j == self.blk_last))),
            self.row_addr.eq(self.base + r),
            self.col_addr.eq(sbase + col),
        ]
        with m.If(issue):
            m.d.sync += j.eq(Mux(j == self.blk_last, 0, j + 1))
            with m.If(row_end):
                m.d.sync += [col.eq(0), j.eq(0)]
                with m.If(s + 1 >= self.segs):
                    m.d.sync += [s.eq(0), sbase.eq(0), r.eq(r + 1)]
                    with m.If(r + 1 == self.rows):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [s.eq(s + 1), sbase.eq(sbase + self.length)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.If(self.go):
            m.d.sync += [active.eq(1), r.eq(0), col.eq(0), j.eq(0), s.eq(0), sbase.eq(0)]
        v_d, pad_d, last_d = Signal(), Signal(), Signal()
        m.d.sync += [v_d.eq(issue), pad_d.eq(col >= self.length), last_d.eq(row_end)]
        value = Signal(signed(16))
        m.d.comb += [
            value.eq(Mux(pad_d, 0, self.rdata)),
            q.w_en.eq(v_d), q.w_data.eq(Cat(value, last_d)),
            self.out.valid.eq(q.r_rdy), self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
        ]
        return m


def kv_address(is_v, row, col, *, lanes, kpc, row_bits, col_bits):
    """(word, byte) of KV-region element (``row``, ``col``): key/token row,
    channel column. K rows are stored as the int8 engine's QK^T weight beats
    (word = key block x channel block, byte = key % lanes, channel % kpc),
    V rows as its AV beats (word = channel block x token block, byte =
    channel % lanes, token % kpc), each half of the region in one memory
    word per beat (lane-major bytes, as ``Int8Engine.wgt``). ``is_v`` selects
    the V half (top address bit)."""
    lb, kb = _bits(lanes), _bits(kpc)
    r, c = row[:row_bits], col[:col_bits]
    k_word = Cat(c[kb:], r[lb:])
    v_word = Cat(r[kb:], c[lb:])
    word = Cat(Mux(is_v, v_word, k_word), is_v)
    byte = Mux(is_v, Cat(r[:kb], c[:lb]), Cat(c[:kb], r[:lb]))
    return word, byte


class _KVFetcher(wiring.Component):
    """Weight beats of an attention pass from the KV region, one memory word
    per beat, into a small FIFO (one beat per cycle at full rate).

    Loop: ``rows`` activation rows, ``heads`` heads, ``nbs`` output blocks,
    ``kbs`` k-blocks (innermost), with ``last_k`` / ``last_n`` as the int8
    engine wants them. ATTN_QK (``qk``): word = key block ``nb`` x channel
    block ``h * hstep + kb`` of the K half; ATTN_AV: word = channel block
    ``h * hstep + nb`` x token block ``kb`` of the V half (see
    :func:`kv_address`)."""

    def __init__(self, *, beat_bits, addr_bits, lanes, kpc, row_bits, col_bits, depth=4):
        self._depth, self._lanes, self._kpc = depth, lanes, kpc
        self._row_bits, self._col_bits = row_bits, col_bits
        cnt = isa.ROW_BITS + 1
        super().__init__({
            "go": In(1), "qk": In(1), "rows": In(cnt), "heads": In(8),
            "nbs": In(cnt), "kbs": In(cnt), "hstep": In(cnt),
            "addr": Out(addr_bits), "rdata": In(beat_bits),
            "out": Out(stream.Signature(data.StructLayout({
                "data": unsigned(beat_bits), "last_k": 1, "last_n": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        bits = len(self.rdata)
        q = fifo.SyncFIFOBuffered(width=bits + 2, depth=depth)
        m.submodules.fifo = q
        lb, kb = _bits(self._lanes), _bits(self._kpc)
        rb, cb = self._row_bits, self._col_bits
        active = Signal()
        t = Signal.like(self.rows)
        h = Signal(8)
        hb, nb, kbi = (Signal.like(self.nbs, name=n) for n in ("hb", "nb", "kbi"))
        issue = Signal()
        last_k, last_n = Signal(), Signal()
        m.d.comb += [
            issue.eq(active & (q.level < depth - 1)),
            last_k.eq(kbi + 1 == self.kbs),
            last_n.eq(last_k & (nb + 1 == self.nbs)),
        ]
        k_word = Cat((hb + kbi)[:cb - kb], nb[:rb - lb])
        v_word = Cat(kbi[:rb - kb], (hb + nb)[:cb - lb])
        m.d.comb += self.addr.eq(Cat(Mux(self.qk, k_word, v_word), ~self.qk))
        with m.If(issue):
            with m.If(last_k):
                m.d.sync += kbi.eq(0)
                with m.If(last_n):
                    m.d.sync += nb.eq(0)
                    with m.If(h + 1 >= self.heads):
                        m.d.sync += [h.eq(0), hb.eq(0), t.eq(t + 1)]
                        with m.If(t + 1 == self.rows):
                            m.d.sync += active.eq(0)
                    with m.Else():
                        m.d.sync += [h.eq(h + 1), hb.eq(hb + self.hstep)]
                with m.Else():
                    m.d.sync += nb.eq(nb + 1)
            with m.Else():
                m.d.sync += kbi.eq(kbi + 1)
        with m.If(self.go):
            m.d.sync += [active.eq(1), t.eq(0), h.eq(0), hb.eq(0), nb.eq(0), kbi.eq(0)]
        v_d, flags_d = Signal(), Signal(2)
        m.d.sync += [v_d.eq(issue), flags_d.eq(Cat(last_k, last_n))]
        m.d.comb += [
            q.w_en.eq(v_d), q.w_data.eq(Cat(self.rdata, flags_d)),
            self.out.valid.eq(q.r_rdy), self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
        ]
        return m


class _Writer(wiring.Component):
    """Writes ``rows`` rows of ``length`` elements from ``inp`` (always ready
    while running) at rows ``base``...; ``done`` rises after the last write
    and stays until the next ``go``."""

    def __init__(self, *, elem_bits, row_bits, col_bits):
        self._elem_bits = elem_bits
        super().__init__({
            "go": In(1), "base": In(row_bits), "rows": In(row_bits + 1),
            "length": In(col_bits + 1),
            "inp": In(_elem_stream()),
            "row_addr": Out(row_bits + 1), "col_addr": Out(col_bits + 1),
            "wdata": Out(signed(elem_bits)), "we": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        active = Signal()
        done = Signal()
        r = Signal.like(self.rows)
        col = Signal.like(self.length)
        accept = Signal()
        m.d.comb += [
            self.inp.ready.eq(active), accept.eq(self.inp.valid & active),
            self.row_addr.eq(self.base + r), self.col_addr.eq(col),
            self.wdata.eq(self.inp.payload.data), self.we.eq(accept), self.done.eq(done),
        ]
        with m.If(accept):
            with m.If(col + 1 == self.length):
                m.d.sync += [col.eq(0), r.eq(r + 1)]
                with m.If(r + 1 == self.rows):
                    m.d.sync += [active.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
        with m.If(self.go):
            m.d.sync += [active.eq(1), done.eq(0), r.eq(0), col.eq(0)]
        return m


class _Packer(wiring.Component):
    """Element stream -> words of ``per_word`` elements (zero-filled), a word
    sent when full or at ``last`` (which it carries)."""

    def __init__(self, elem_shape, per_word):
        self._elem_shape, self._per_word = elem_shape, per_word
        super().__init__({
            "inp": In(_elem_stream()),
            "out": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(elem_shape, per_word), "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        P = self._per_word
        buf = Signal(data.ArrayLayout(self._elem_shape, P))
        idx = Signal(range(P))
        full, last = Signal(), Signal()
        m.d.comb += [self.inp.ready.eq(~full), self.out.valid.eq(full),
                     self.out.payload.data.eq(buf), self.out.payload.last.eq(last)]
        with m.If(self.inp.valid & ~full):
            m.d.sync += buf[idx].eq(self.inp.payload.data)
            with m.If((idx == P - 1) | self.inp.payload.last):
                m.d.sync += [full.eq(1), idx.eq(0), last.eq(self.inp.payload.last)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [full.eq(0), buf.eq(0)]
        return m


class _Unpacker(wiring.Component):
    """Words of ``per_word`` elements -> element stream, ``rows`` rows of
    ``length`` elements, each row starting on a new word (the rest of a row's
    last word is dropped); ``last`` on each row's final element. Takes words
    only between ``go`` and the end of the last row."""

    def __init__(self, elem_shape, per_word, *, col_bits):
        self._elem_shape, self._per_word = elem_shape, per_word
        super().__init__({
            "go": In(1), "rows": In(isa.ROW_BITS), "length": In(col_bits + 1),
            "inp": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(elem_shape, per_word)}))),
            "out": Out(_elem_stream()),
        })

    def elaborate(self, platform):
        m = Module()
        P = self._per_word
        word = Signal(data.ArrayLayout(self._elem_shape, P))
        idx = Signal(range(P))
        col = Signal.like(self.length)
        hold = Signal()
        active = Signal()
        r = Signal.like(self.rows)
        row_end = Signal()
        m.d.comb += [
            self.inp.ready.eq(~hold & active),
            self.out.valid.eq(hold), self.out.payload.data.eq(word[idx]),
            row_end.eq(col + 1 == self.length), self.out.payload.last.eq(row_end),
        ]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [word.eq(self.inp.payload.data), hold.eq(1), idx.eq(0)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += idx.eq(idx + 1)
            with m.If(row_end):
                m.d.sync += [col.eq(0), hold.eq(0), r.eq(r + 1)]
                with m.If(r + 1 == self.rows):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + 1)
                with m.If(idx == P - 1):
                    m.d.sync += hold.eq(0)
        with m.If(self.go):
            m.d.sync += [col.eq(0), hold.eq(0), r.eq(0), active.eq(1)]
        return m


class _Serializer(wiring.Component):
    """Engine ``out`` beats (``lanes`` results) -> one result per cycle;
    ``last`` on the final result of a row. The last beat of a row gives only
    its first ``keep`` results (1..lanes; the rest are padding lanes of an
    N that is not a multiple of lanes). No bubble between beats."""

    def __init__(self, in_layout, lanes, acc_bits):
        self._lanes = lanes
        super().__init__({
            "inp": In(stream.Signature(in_layout)),
            "out": Out(_elem_stream(acc_bits)),
            "keep": In(range(1, lanes + 1), init=lanes),
        })

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        beat = Signal(self.inp.payload.shape())
        idx = Signal(range(L))
        hold = Signal()
        end = Signal()
        final = Signal()
        m.d.comb += [
            final.eq(idx == Mux(beat.last, self.keep - 1, L - 1)),
            end.eq(self.out.ready & final),
            self.inp.ready.eq(~hold | end),
            self.out.valid.eq(hold),
            self.out.payload.data.eq(beat.data[idx]),
            self.out.payload.last.eq(beat.last & final),
        ]
        with m.If(hold & self.out.ready):
            m.d.sync += idx.eq(Mux(final, 0, idx + 1))
            with m.If(end):
                m.d.sync += hold.eq(0)
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [beat.eq(self.inp.payload), hold.eq(1), idx.eq(0)]
        return m


# --- the accelerator -----------------------------------------------------------

class Accelerator(wiring.Component):
    """Accelerator top (see the module docstring).

    Parameters (all checked here): TLMM engine ``group``, ``tables``,
    ``lanes``, ``encoding``, ``table_ram``; ``banks`` int8 activation banks
    (1..14) of ``max_rows`` rows x ``max_width`` elements, plus one int16
    residual bank of the same size (bank :data:`~trilut.hw.isa.RESIDUAL_BANK`);
    ``prog_depth`` descriptors; ``const_sets`` constant sets of ``max_width``
    128-bit entries (one per output channel; at most 256); ``axis_bytes``
    AXI4-Stream width in bytes (a power of two, >= 2 and wide enough for
    one weight beat; default: the smallest such, at least 4).

    ``attn_lanes`` / ``attn_kpc``: the int8 engine's lanes and products per
    lane per cycle (powers of two; peak ``attn_lanes * attn_kpc`` MACs per
    cycle on MULT18X18D; the KV word is ``attn_lanes * attn_kpc`` bytes).

    Limits checked per descriptor: rows >= 1 and base + rows <= max_rows,
    1 <= K <= max_width, lanes <= N <= max_width with N a multiple of lanes,
    const < const_sets. ATTN: heads >= 1, heads x K and heads x N <= max_width,
    1 <= keys (QK: N, AV: K) <= max_rows, the head dim
    (QK: K, AV: N) a multiple of attn_kpc / attn_lanes, source and
    destination rows disjoint within one bank. Memories are addressed {bank,
    row, column} with each dimension rounded up to a power of two.

    Cycle cost (no stalls): LOAD/STORE one element per cycle plus a cycle per
    transfer; LINEAR ``N`` cycles of constant copy, then the engine's
    row-stationary schedule with the source row read and packed at ``k_block
    + 1`` cycles per k-block (hidden behind the table build) and the epilogue
    at one result per cycle (the bottleneck when ``ceil(K / k_block) <
    lanes``); REQUANT_GELU adds ShiftGELU's row capture and latency per pass.
    NORM: ``C`` cycles of constant copy, then LayerNorm's row interval per
    row (its MEAN/VAR stage bounds rows shorter than ~70 at int16) plus its
    latency. ATTN: one constant copy cycle, then ``rows * heads * (N /
    attn_lanes) * ceil(K / attn_kpc)`` weight beats at one per cycle, except
    that ATTN_QK is bounded by Shiftmax's single divider for rows shorter
    than 33 keys (33 cycles per row). Each descriptor costs five sequencer
    cycles before its pass.
    """

    def __init__(self, *, group=3, tables=2, lanes=4, encoding="folded",
                 table_ram="distributed", banks=2, max_rows=16, max_width=24,
                 prog_depth=16, const_sets=4, axis_bytes=None, attn_lanes=4, attn_kpc=4):
        check_int("banks", banks, 1, isa.MAX_BANKS)
        check_int("max_rows", max_rows, 1, (1 << isa.ROW_BITS) - 1)
        check_int("max_width", max_width, 1, (1 << isa.ROW_BITS) - 1)
        check_int("prog_depth", prog_depth, 1, 1 << isa.ROW_BITS)
        check_int("const_sets", const_sets, 1, 256)
        self._engine = TLMMEngine(group=group, tables=tables, lanes=lanes, max_k=max_width,
                                  act_bits=8, encoding=encoding, table_ram=table_ram)
        if max_width < lanes:
            raise ValueError(f"max_width must be >= lanes = {lanes}, not {max_width}")
        for name, v in (("attn_lanes", attn_lanes), ("attn_kpc", attn_kpc)):
            check_int(name, v, 1, 64)
            if v & (v - 1):
                raise ValueError(f"{name} must be a power of two, not {v}")
        a_max = max(attn_lanes, attn_kpc)
        for name, v in (("max_rows", max(2, max_rows)), ("max_width", max_width)):
            if 1 << _bits(v) < a_max:
                raise ValueError(f"{name} = {v}: rounded up to a power of two it must be >= "
                                 f"attn_lanes and attn_kpc (KV words are key/channel blocks)")
        self._int8 = Int8Engine(lanes=attn_lanes, k_per_cycle=attn_kpc,
                                max_k=max(max_width, max_rows))
        wgt_bits = self._codes_shape().size
        need = max(4, -(-wgt_bits // 8))
        if axis_bytes is None:
            axis_bytes = 1 << _bits(need)
        check_int("axis_bytes", axis_bytes, 2)
        if axis_bytes & (axis_bytes - 1) or axis_bytes * 8 < wgt_bits:
            raise ValueError(f"axis_bytes must be a power of two >= {-(-wgt_bits // 8)} "
                             f"(one weight beat is {wgt_bits} bits), not {axis_bytes}")
        self._params = dict(group=group, tables=tables, lanes=lanes, encoding=encoding,
                            table_ram=table_ram, banks=banks, max_rows=max_rows,
                            max_width=max_width, prog_depth=prog_depth,
                            const_sets=const_sets, axis_bytes=axis_bytes,
                            attn_lanes=attn_lanes, attn_kpc=attn_kpc)
        self._col_bits = _bits(max_width)
        self._row_bits = max(1, _bits(max_rows))
        self._set_bits = _bits(const_sets)
        self._regs = RegisterMap(prog_depth=prog_depth,
                                 const_entries=const_sets << self._col_bits)
        super().__init__({
            "s_axil": In(axi_lite_signature(self._regs.addr_bits)),
            "s_axis": In(axi_stream_signature(8 * axis_bytes)),
            "m_axis": Out(axi_stream_signature(8 * axis_bytes)),
        })

    def _codes_shape(self):
        return self._engine.wgt.payload.shape()["codes"].shape

    params = property(lambda self: dict(self._params), doc="construction parameters")
    engine = property(lambda self: self._engine, doc="the TLMM engine (host helpers, cycles())")
    int8_engine = property(lambda self: self._int8,
                           doc="the int8 engine of the attention passes (cycles())")
    regs = property(lambda self: self._regs, doc="the AXI4-Lite register map")
    axis_bytes = property(lambda self: self._params["axis_bytes"])
    banks = property(lambda self: self._params["banks"])
    max_rows = property(lambda self: self._params["max_rows"])
    max_width = property(lambda self: self._params["max_width"])
    prog_depth = property(lambda self: self._params["prog_depth"])
    const_sets = property(lambda self: self._params["const_sets"])
    lanes = property(lambda self: self._params["lanes"])
    const_stride = property(lambda self: 1 << self._col_bits,
                            doc="constant entries per set (address stride)")

    # --- host-side helpers ---------------------------------------------------

    def row_frames(self, rows, wide=False):
        """LOAD payload: one ``bytes`` frame per row of ``rows`` (int8, or int16
        with ``wide``), each padded to whole transfers."""
        import numpy as np
        nb = 2 if wide else 1
        frames = []
        for row in np.asarray(rows):
            raw = np.asarray(row, dtype="<i2" if wide else "i1").tobytes()
            pad = -len(raw) % self.axis_bytes
            frames.append(raw + bytes(pad))
            assert len(raw) == nb * len(row)
        return frames

    def frames_to_rows(self, frames, length, wide=False):
        """STORE payload (one frame per row) -> int64 array (rows, length)."""
        import numpy as np
        dt = "<i2" if wide else "i1"
        return np.array([np.frombuffer(bytes(f), dtype=dt)[:length] for f in frames],
                        dtype=np.int64)

    def weight_frames(self, w, rows):
        """LINEAR weight payload for ternary ``w`` (K, N) and ``rows``
        activation rows: one frame per row, one transfer per engine beat."""
        layout = self._codes_shape()
        frame = b"".join(layout.const(b["codes"]).as_value().value.to_bytes(self.axis_bytes,
                                                                            "little")
                         for b in self._engine.wgt_beats(w))
        return [frame] * rows

    # --- gateware ------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        p = self._params
        e = self._engine
        regs = self._regs
        cb, rb = self._col_bits, self._row_bits
        bank_bits = _bits(p["banks"])
        width_max = p["max_width"]
        ab = self.axis_bytes

        # Memories: act (int8 banks), res (int16), program, constants.
        act_mem = memory.Memory(shape=signed(8), depth=p["banks"] << (rb + cb), init=[])
        res_mem = memory.Memory(shape=signed(16), depth=1 << (rb + cb), init=[])
        prog_mem = memory.Memory(shape=unsigned(DESCRIPTOR_BITS), depth=p["prog_depth"],
                                 init=[])
        const_mem = memory.Memory(shape=unsigned(CONST_BITS),
                                  depth=p["const_sets"] << cb, init=[])
        m.submodules.act_mem = act_mem
        m.submodules.res_mem = res_mem
        m.submodules.prog_mem = prog_mem
        m.submodules.const_mem = const_mem
        # KV region: K half and V half, one int8 engine weight beat per word.
        i8 = self._int8
        aL, aK = i8.lanes, i8.k_per_cycle
        kv_word_bits = rb + cb - _bits(aL) - _bits(aK)
        kv_mem = memory.Memory(shape=unsigned(8 * aL * aK), depth=2 << kv_word_bits, init=[])
        m.submodules.kv_mem = kv_mem

        # ---------------- AXI4-Lite slave (not reset by soft reset) ----------
        axil = self.s_axil
        soft = Signal()
        start = Signal()
        status = Signal(isa.STATUS)
        counters = {name: Signal(32, name=f"cnt_{name}") for name, _ in isa.COUNTERS}
        bvalid, rvalid = Signal(), Signal()
        rdata = Signal(32)
        wr = Signal()
        # Soft reset holds the core in reset for SOFT_RESET_CYCLES (the
        # units' reset-less delay lines carry valid bits: they must drain)
        # and answers the CTRL write only when the core is out of reset.
        soft_hold = Signal(range(SOFT_RESET_CYCLES + 1))
        b_pend = Signal()
        m.d.comb += [
            wr.eq(axil.awvalid & axil.wvalid & ~bvalid & ~b_pend),
            axil.awready.eq(wr), axil.wready.eq(wr),
            axil.bvalid.eq(bvalid), axil.bresp.eq(0),
            axil.arready.eq(~rvalid), axil.rvalid.eq(rvalid), axil.rdata.eq(rdata),
            axil.rresp.eq(0),
        ]
        with m.If(wr & ~soft):
            m.d.sync += bvalid.eq(1)
        with m.Elif(b_pend & (soft_hold == 1)):
            m.d.sync += [bvalid.eq(1), b_pend.eq(0)]
        with m.Elif(axil.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(soft):
            m.d.sync += [soft_hold.eq(SOFT_RESET_CYCLES), b_pend.eq(1)]
        with m.Elif(soft_hold != 0):
            m.d.sync += soft_hold.eq(soft_hold - 1)

        def window(name):
            reg = regs[name]
            size_bits = _bits(4 * reg.words)
            return (axil.awaddr >> size_bits) == (reg.offset >> size_bits), \
                axil.awaddr[2:size_bits]

        ctrl = data.View(isa.CTRL, axil.wdata)
        with m.If(wr & (axil.awaddr[2:] == regs.offset("ctrl") >> 2)):
            m.d.comb += [start.eq(ctrl.start), soft.eq(ctrl.soft_reset)]
        for mem, name in ((prog_mem, "prog"), (const_mem, "const")):
            hit, word = window(name)
            wp = mem.write_port(granularity=32)
            m.d.comb += [wp.addr.eq(word[2:]), wp.data.eq(axil.wdata.replicate(4)),
                         wp.en.eq(Mux(wr & hit, 1 << word[:2], 0))]

        with m.If(axil.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(0)]
            build = isa.BUILD.const({"max_rows": p["max_rows"], "max_width": width_max,
                                     "banks": p["banks"]})
            with m.Switch(axil.araddr[2:]):
                with m.Case(regs.offset("status") >> 2):
                    m.d.sync += rdata.eq(status)
                with m.Case(regs.offset("build") >> 2):
                    m.d.sync += rdata.eq(build)
                for name, sig in counters.items():
                    with m.Case(regs.offset(name) >> 2):
                        m.d.sync += rdata.eq(sig)
        with m.Elif(rvalid & axil.rready):
            m.d.sync += rvalid.eq(0)

        # ---------------- core: sequencer and datapath (soft-resettable) ------
        c = Module()
        m.submodules.core = ResetInserter(soft | (soft_hold != 0))(c)

        # One per-channel requantizer serves LINEAR (REQUANT, and the first
        # step of REQUANT_GELU) and NORM (LayerNorm z is 32 bits).
        requant = Requantizer(acc_bits=max(e.acc_bits, LN_OUT_BITS), out_bits=8,
                              channels=width_max, bias_bits=32)
        lnorm = LayerNorm(in_bits=16, max_len=width_max)
        gelu = ShiftGELU(mode="ivit", max_len=width_max)
        gelu_rq = Requantizer(acc_bits=gelu.out_bits, out_bits=8, channels=1, bias_bits=2)
        resadd = ResidualAdd(x_bits=32, y_bits=16, out_bits=16, channels=width_max)
        act_rd = _Reader(elem_bits=8, row_bits=rb, col_bits=cb, block=max(e.k_block, aK))
        res_rd = _Reader(elem_bits=16, row_bits=rb, col_bits=cb)
        act_wr = _Writer(elem_bits=8, row_bits=rb, col_bits=cb)
        res_wr = _Writer(elem_bits=16, row_bits=rb, col_bits=cb)
        act_pk = _Packer(signed(8), e.k_block)
        st_pk8 = _Packer(signed(8), ab)
        st_pk16 = _Packer(signed(16), ab // 2)
        ld_up8 = _Unpacker(signed(8), ab, col_bits=cb)
        ld_up16 = _Unpacker(signed(16), ab // 2, col_bits=cb)
        ser = _Serializer(e.out.payload.shape(), e.lanes, e.acc_bits)
        # Attention: act reader -> i8_pk -> int8 engine <- KV fetcher;
        # engine -> i8_ser -> requant (per tensor) [-> Shiftmax] -> act writer.
        i8_pk = _Packer(signed(8), aK)
        i8_ser = _Serializer(i8.out.payload.shape(), aL, i8.acc_bits)
        smax = Shiftmax(in_bits=8, n=SOFTMAX_N, out_bits=PROBS_BITS, max_len=p["max_rows"])
        kvf = _KVFetcher(beat_bits=8 * aL * aK, addr_bits=kv_word_bits + 1, lanes=aL, kpc=aK,
                         row_bits=rb, col_bits=cb)
        for name, unit in (("engine", e), ("requant", requant), ("resadd", resadd),
                           ("lnorm", lnorm), ("gelu", gelu), ("gelu_rq", gelu_rq),
                           ("act_rd", act_rd), ("res_rd", res_rd), ("act_wr", act_wr),
                           ("res_wr", res_wr), ("act_pk", act_pk), ("st_pk8", st_pk8),
                           ("st_pk16", st_pk16), ("ld_up8", ld_up8), ("ld_up16", ld_up16),
                           ("ser", ser), ("int8", i8), ("i8_pk", i8_pk), ("i8_ser", i8_ser),
                           ("smax", smax), ("kvf", kvf)):
            c.submodules[name] = unit

        # Memory ports (addresses {bank, row, col}).
        act_rp = act_mem.read_port(domain="sync")
        act_wp = act_mem.write_port()
        res_rp = res_mem.read_port(domain="sync")
        res_wp = res_mem.write_port()
        prog_rp = prog_mem.read_port(domain="sync")
        const_rp = const_mem.read_port(domain="sync")
        kv_rp = kv_mem.read_port(domain="sync")
        kv_wp = kv_mem.write_port(granularity=8)

        d = Signal(DESCRIPTOR, name="desc")
        busy, done, error = Signal(), Signal(), Signal()
        code = Signal(ErrorCode)
        pc = Signal(range(p["prog_depth"]))
        m.d.comb += [status.busy.eq(busy), status.done.eq(done), status.error.eq(error),
                     status.code.eq(code), status.pc.eq(pc)]
        unit_flags = Signal(len(status.unit))

        src_bank = d.src_bank[:bank_bits] if bank_bits else Const(0, 1)
        dst_bank = d.dst_bank[:bank_bits] if bank_bits else Const(0, 1)

        def addr(bank, row, col, with_bank=True):
            parts = [col[:cb]] if cb else []
            parts.append(row[:rb])
            if with_bank and bank_bits:
                parts.append(bank)
            return Cat(*parts)

        c.d.comb += [
            act_rp.addr.eq(addr(src_bank, act_rd.row_addr, act_rd.col_addr)),
            res_rp.addr.eq(addr(None, res_rd.row_addr, res_rd.col_addr, False)),
            res_rd.rdata.eq(res_rp.data),
            act_wp.addr.eq(addr(dst_bank, act_wr.row_addr, act_wr.col_addr)),
            act_wp.data.eq(act_wr.wdata), 
            res_wp.addr.eq(addr(None, res_wr.row_addr, res_wr.col_addr, False)),
            res_wp.data.eq(res_wr.wdata), res_wp.en.eq(res_wr.we),
            prog_rp.addr.eq(pc),
        ]

        op = d.opcode
        # Decoded descriptor flags, registered in CHECK (the descriptor is
        # stable from LATCH to the end of the pass) so that the datapath's
        # routing multiplexers start from flip-flops, not from a decode.
        dec = {
            "is_end": op == Opcode.END, "is_load": op == Opcode.LOAD,
            "is_store": op == Opcode.STORE, "is_linear": op == Opcode.LINEAR,
            "is_norm": op == Opcode.NORM,
            "is_attn": (op == Opcode.ATTN_QK) | (op == Opcode.ATTN_AV),
            "is_qk": op == Opcode.ATTN_QK,
            "epi_res": d.epilogue == Epilogue.RESIDUAL,
            "epi_gelu": d.epilogue == Epilogue.REQUANT_GELU,
            "src_res": d.src_bank == RESIDUAL_BANK, "dst_res": d.dst_bank == RESIDUAL_BANK,
            "src_kv": (d.src_bank == KEY_BANK) | (d.src_bank == VALUE_BANK),
            "src_v": d.src_bank == VALUE_BANK,
            "dst_kv": (d.dst_bank == KEY_BANK) | (d.dst_bank == VALUE_BANK),
            "dst_v": d.dst_bank == VALUE_BANK,
        }
        flags = {name: Signal(name=f"dec_{name}") for name in dec}
        (is_end, is_load, is_store, is_linear, is_norm, is_attn, is_qk, epi_res, epi_gelu,
         src_res, dst_res, src_kv, src_v, dst_kv, dst_v) = flags.values()
        # KV region: written through the act writer's (row, col) when the
        # destination is KEY_BANK / VALUE_BANK, read by the KV fetcher during
        # ATTN passes and through the act reader's (row, col) by STORE.
        kv_byte_bits = _bits(aL) + _bits(aK)
        wr_word, wr_byte = kv_address(dst_v, act_wr.row_addr, act_wr.col_addr, lanes=aL,
                                      kpc=aK, row_bits=rb, col_bits=cb)
        rd_word, rd_byte = kv_address(src_v, act_rd.row_addr, act_rd.col_addr, lanes=aL,
                                      kpc=aK, row_bits=rb, col_bits=cb)
        rd_byte_d = Signal(max(1, kv_byte_bits))
        c.d.sync += rd_byte_d.eq(rd_byte)
        c.d.comb += [
            kv_wp.addr.eq(wr_word), kv_wp.data.eq(act_wr.wdata.as_unsigned().replicate(aL * aK)),
            kv_wp.en.eq(Mux(act_wr.we & dst_kv, 1 << wr_byte, 0)),
            kv_rp.addr.eq(Mux(is_attn, kvf.addr, rd_word)),
            kvf.rdata.eq(kv_rp.data), act_wp.en.eq(act_wr.we & ~dst_kv),
            act_rd.rdata.eq(Mux(src_kv, kv_rp.data.word_select(rd_byte_d, 8), act_rp.data)),
        ]
        run = Signal()           # a pass's data phase is under way
        go = Signal()            # one-cycle start of a pass's data phase

        # Per-pass values computed in CHECK (registered): attention row
        # lengths (heads x per-head K / N), the int8 engine's loop bounds and
        # the number of constant entries to copy.
        cnt_w = isa.ROW_BITS + 8
        hk, hn = Signal(cnt_w), Signal(cnt_w)
        i8_nbs, i8_kbs, i8_hstep = (Signal(isa.ROW_BITS + 1, name=n)
                                    for n in ("i8_nbs", "i8_kbs", "i8_hstep"))
        pcount = Signal(isa.ROW_BITS + 1)
        lbits, kbits = _bits(aL), _bits(aK)

        # Unit configuration from the descriptor.
        # Only the units a pass uses start (a reader left running would fill
        # its FIFO with rows nobody takes).
        c.d.comb += [
            act_rd.go.eq(go & (is_linear | is_store & ~src_res | is_attn)),
            res_rd.go.eq(go & (is_linear & epi_res | is_store & src_res | is_norm)),
            act_wr.go.eq(go & (is_linear & ~epi_res | is_load & ~dst_res | is_norm | is_attn)),
            kvf.go.eq(go & is_attn),
            res_wr.go.eq(go & (is_linear & epi_res | is_load & dst_res)),
            ld_up8.go.eq(go & is_load & ~dst_res), ld_up16.go.eq(go & is_load & dst_res),
        ]
        c.d.comb += [
            act_rd.base.eq(d.src_row), act_rd.rows.eq(d.rows), act_rd.length.eq(d.k),
            act_rd.pad.eq(is_linear | is_attn), act_rd.segs.eq(Mux(is_attn, d.heads, 1)),
            act_rd.blk_last.eq(Mux(is_attn, aK - 1, e.k_block - 1)),
            res_rd.base.eq(Mux(is_linear, d.dst_row, d.src_row)), res_rd.rows.eq(d.rows),
            res_rd.length.eq(Mux(is_linear, d.n, d.k)),
            act_wr.base.eq(d.dst_row), act_wr.rows.eq(d.rows),
            act_wr.length.eq(Mux(is_attn, hn, Mux(is_linear, d.n, d.k))),
            res_wr.base.eq(d.dst_row), res_wr.rows.eq(d.rows),
            res_wr.length.eq(Mux(is_linear, d.n, d.k)),
            ld_up8.length.eq(d.k), ld_up16.length.eq(d.k),
            ld_up8.rows.eq(d.rows), ld_up16.rows.eq(d.rows),
            requant.num_channels.eq(Mux(is_attn, 1, d.n)), resadd.num_channels.eq(d.n),
            kvf.qk.eq(is_qk), kvf.rows.eq(d.rows), kvf.heads.eq(d.heads),
            kvf.nbs.eq(i8_nbs), kvf.kbs.eq(i8_kbs), kvf.hstep.eq(i8_hstep),
            i8_ser.keep.eq(Mux(d.n[:lbits] == 0, aL, d.n[:lbits]) if lbits else 1),
        ]

        def join(src, dst, when):
            """Route stream ``src`` into ``dst`` while ``when`` (else idle)."""
            with c.If(when):
                c.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                             dst.payload.eq(src.payload)]

        # LOAD: s_axis -> unpacker -> writer.
        axis_in, axis_out = self.s_axis, self.m_axis
        ld = run & is_load
        for up, wide in ((ld_up8, False), (ld_up16, True)):
            sel = ld & (dst_res if wide else ~dst_res)
            with c.If(sel):
                c.d.comb += [up.inp.valid.eq(axis_in.tvalid), axis_in.tready.eq(up.inp.ready)]
            c.d.comb += up.inp.payload.data.eq(axis_in.tdata)
        join(ld_up8.out, act_wr.inp, ld & ~dst_res)
        join(ld_up16.out, res_wr.inp, ld & dst_res)

        # STORE: reader -> packer -> m_axis.
        st = run & is_store
        join(act_rd.out, st_pk8.inp, st & ~src_res)
        join(res_rd.out, st_pk16.inp, st & src_res)
        stored = Signal.like(d.rows)
        for pk, wide in ((st_pk8, False), (st_pk16, True)):
            with c.If(st & (src_res if wide else ~src_res)):
                c.d.comb += [axis_out.tvalid.eq(pk.out.valid), pk.out.ready.eq(axis_out.tready),
                             axis_out.tdata.eq(pk.out.payload.data),
                             axis_out.tlast.eq(pk.out.payload.last)]
        with c.If(axis_out.tvalid & axis_out.tready & axis_out.tlast):
            c.d.sync += stored.eq(stored + 1)
        with c.If(go):
            c.d.sync += stored.eq(0)

        # LINEAR: reader -> k-block packer -> engine.act; s_axis -> engine.wgt;
        # engine.out -> serializer -> requant -> act writer, or
        #                           -> bias add -> resadd (+ res reader) -> res writer.
        li = run & is_linear
        join(act_rd.out, act_pk.inp, li)
        c.d.comb += [e.act.valid.eq(act_pk.out.valid), act_pk.out.ready.eq(e.act.ready),
                     e.act.payload.data.eq(act_pk.out.payload.data),
                     e.act.payload.last.eq(act_pk.out.payload.last)]

        kb_count = Signal(range(e.k_blocks + 1))
        w_active = Signal()
        wkb = Signal.like(kb_count)
        wcol = Signal(range(width_max + e.lanes + 1))
        wrow = Signal.like(d.rows)
        last_k = Signal()
        last_n = Signal()
        wgt_take = Signal()
        c.d.comb += [
            last_k.eq(wkb + 1 == kb_count),
            last_n.eq(last_k & (wcol + e.lanes >= d.n)),
            e.wgt.payload.codes.eq(axis_in.tdata[:len(e.wgt.payload.codes.as_value())]),
            e.wgt.payload.last_k.eq(last_k), e.wgt.payload.last_n.eq(last_n),
            wgt_take.eq(e.wgt.valid & e.wgt.ready),
        ]
        with c.If(li & w_active):
            c.d.comb += [e.wgt.valid.eq(axis_in.tvalid), axis_in.tready.eq(e.wgt.ready)]
        with c.If(wgt_take):
            with c.If(last_k):
                c.d.sync += wkb.eq(0)
                with c.If(last_n):
                    c.d.sync += [wcol.eq(0), wrow.eq(wrow + 1)]
                    with c.If(wrow + 1 == d.rows):
                        c.d.sync += w_active.eq(0)
                with c.Else():
                    c.d.sync += wcol.eq(wcol + e.lanes)
            with c.Else():
                c.d.sync += wkb.eq(wkb + 1)
        with c.If(go):
            c.d.sync += [w_active.eq(is_linear), wkb.eq(0), wcol.eq(0), wrow.eq(0)]

        c.d.comb += [ser.inp.valid.eq(e.out.valid), e.out.ready.eq(ser.inp.ready),
                     ser.inp.payload.eq(e.out.payload)]
        def join_fields(src, dst, when):
            """``join`` for element streams of different widths (data
            sign-extended or truncated field by field)."""
            with c.If(when):
                c.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready),
                             dst.payload.data.eq(src.payload.data),
                             dst.payload.last.eq(src.payload.last)]

        # REQUANT: ser -> requant -> act writer. REQUANT_GELU: ser -> requant
        # -> ShiftGELU -> gelu_rq -> act writer. NORM: res reader -> LayerNorm
        # -> requant -> act writer.
        nm = run & is_norm
        join_fields(ser.out, requant.inp, li & ~epi_res)
        join_fields(res_rd.out, lnorm.inp, nm)
        join_fields(lnorm.out, requant.inp, nm)
        join_fields(requant.out, act_wr.inp, li & ~epi_res & ~epi_gelu | nm)
        join_fields(requant.out, gelu.inp, li & epi_gelu)
        join_fields(gelu.out, gelu_rq.inp, li & epi_gelu)
        join_fields(gelu_rq.out, act_wr.inp, li & epi_gelu)

        # ATTN_QK / ATTN_AV: act reader (heads as row segments) -> packer ->
        # int8 engine <- KV fetcher; engine -> serializer -> requant (one
        # per-tensor entry) -> [Shiftmax (QK)] -> act writer.
        at = run & is_attn
        join(act_rd.out, i8_pk.inp, at)
        join(i8_pk.out, i8.act, at)
        join(kvf.out, i8.wgt, at)       # same bits: data (lane-major bytes), last_k, last_n
        join(i8.out, i8_ser.inp, at)
        join_fields(i8_ser.out, requant.inp, at)
        join_fields(requant.out, smax.inp, at & is_qk)
        join_fields(smax.out, act_wr.inp, at & is_qk)
        join_fields(requant.out, act_wr.inp, at & ~is_qk)

        # Bias add in front of the residual adder: acc + bias[channel]. The
        # biases are copied into a distributed-RAM table during the constant
        # copy (the constant memory is block RAM, ~5.6 ns clock-to-out on
        # ECP5 and placed far away), read asynchronously by channel here.
        bias_v, bias_last = Signal(), Signal()
        bias_sum = Signal(signed(32))
        bch = Signal(range(width_max))
        bias_take = Signal()
        bias_mem = memory.Memory(shape=signed(32), depth=width_max, init=[])
        c.submodules.bias_mem = bias_mem
        bias_rp = bias_mem.read_port(domain="comb")
        bias_wp = bias_mem.write_port()
        c.d.comb += bias_rp.addr.eq(bch)
        with c.If(li & epi_res):
            c.d.comb += [ser.out.ready.eq(~bias_v | resadd.x.ready),
                         resadd.x.valid.eq(bias_v)]
        c.d.comb += [bias_take.eq(ser.out.valid & ser.out.ready & li & epi_res),
                     resadd.x.payload.data.eq(bias_sum),
                     resadd.x.payload.last.eq(bias_last)]
        with c.If(bias_take):
            c.d.sync += [bias_sum.eq(ser.out.payload.data + bias_rp.data), bias_v.eq(1),
                         bias_last.eq(ser.out.payload.last),
                         bch.eq(Mux(bch + 1 == d.n, 0, bch + 1))]
        with c.Elif(resadd.x.ready):
            c.d.sync += bias_v.eq(0)
        with c.If(go):
            c.d.sync += [bch.eq(0), bias_v.eq(0)]
        join(res_rd.out, resadd.y, li & epi_res)
        with c.If(li & epi_res):
            c.d.comb += [res_wr.inp.valid.eq(resadd.out.valid),
                         resadd.out.ready.eq(res_wr.inp.ready),
                         res_wr.inp.payload.data.eq(resadd.out.payload.data),
                         res_wr.inp.payload.last.eq(resadd.out.payload.last)]

        # Constant copy (PARAM phase) into the epilogue's per-channel table.
        pch = Signal(range(width_max + 1))
        p_issue = Signal()
        pv, plast = Signal(), Signal()
        c.d.sync += [pv.eq(p_issue), plast.eq(p_issue & (pch + 1 == pcount))]
        rq_c = data.View(REQUANT_CONST, const_rp.data)
        rs_c = data.View(RESIDUAL_CONST, const_rp.data)
        c.d.comb += [
            requant.param.payload.m.eq(rq_c.m), requant.param.payload.e.eq(rq_c.e),
            requant.param.payload.bias.eq(rq_c.bias), requant.param.payload.last.eq(plast),
            requant.param.valid.eq(pv & ~epi_res),
            resadd.param.payload.mx.eq(rs_c.mx), resadd.param.payload.ex.eq(rs_c.ex),
            resadd.param.payload.my.eq(rs_c.my), resadd.param.payload.ey.eq(rs_c.ey),
            resadd.param.payload.last.eq(plast),
            resadd.param.valid.eq(pv & epi_res),
        ]
        set_part = [d.const[:self._set_bits]] if self._set_bits else []
        # Per-tensor GELU constants: latched from entry 0 of the set (held for the pass).
        pfirst = Signal()
        g_c = data.View(GELU_CONST, const_rp.data)
        gm, ge, gx0 = Signal.like(g_c.gm), Signal.like(g_c.ge), Signal(signed(16))
        c.d.sync += pfirst.eq(p_issue & (pch == 0))
        pch_d = Signal.like(pch)
        c.d.sync += pch_d.eq(pch)
        c.d.comb += [bias_wp.addr.eq(pch_d), bias_wp.data.eq(rs_c.bias),
                     bias_wp.en.eq(pv & epi_res)]
        with c.If(pfirst):
            c.d.sync += [gm.eq(g_c.gm), ge.eq(g_c.ge), gx0.eq(g_c.x0)]
        c.d.comb += [gelu_rq.m.eq(gm), gelu_rq.e.eq(ge), gelu_rq.bias.eq(0), gelu.x0.eq(gx0),
                     smax.x0.eq(gx0)]

        # ---------------- descriptor checks --------------------------------
        err = Signal(ErrorCode)
        err_r = Signal(ErrorCode)
        k_ok = (d.k >= 1) & (d.k <= width_max)
        lanes = e.lanes
        if lanes & (lanes - 1) == 0:
            n_mult = d.n[:_bits(lanes)] == 0 if lanes > 1 else Const(1)
        else:
            n_mult = Const(0)
            for j in range(1, width_max // lanes + 1):
                n_mult = n_mult | (d.n == j * lanes)
        n_ok = (d.n >= lanes) & (d.n <= width_max) & n_mult

        def bank_ok(bank, int8=True, res=True, kv=False):
            ok = Const(0)
            if int8:
                ok = ok | (bank < p["banks"])
            if res:
                ok = ok | (bank == RESIDUAL_BANK)
            if kv is not False:     # True, or a condition
                ok = ok | (kv & ((bank == KEY_BANK) | (bank == VALUE_BANK)))
            return ok

        # base + rows, registered in CHECK (the adders are half of the check's
        # path); the error code itself is registered one state later.
        src_end = Signal(isa.ROW_BITS + 1)
        dst_end = Signal(isa.ROW_BITS + 1)

        def rows_ok(which):
            end = {"src": src_end, "dst": dst_end}[which]
            return (d.rows >= 1) & (end <= p["max_rows"])

        with c.Switch(op):
            with c.Case(Opcode.END):
                c.d.comb += err.eq(ErrorCode.NONE)
            with c.Case(Opcode.LOAD):
                with c.If(~bank_ok(d.dst_bank, kv=True)):
                    c.d.comb += err.eq(ErrorCode.BANK)
                with c.Elif(~rows_ok("dst")):
                    c.d.comb += err.eq(ErrorCode.ROWS)
                with c.Elif(~k_ok):
                    c.d.comb += err.eq(ErrorCode.SHAPE)
            with c.Case(Opcode.STORE):
                with c.If(~bank_ok(d.src_bank, kv=True)):
                    c.d.comb += err.eq(ErrorCode.BANK)
                with c.Elif(~rows_ok("src")):
                    c.d.comb += err.eq(ErrorCode.ROWS)
                with c.Elif(~k_ok):
                    c.d.comb += err.eq(ErrorCode.SHAPE)
            with c.Case(Opcode.LINEAR):
                with c.If((d.head != Head.NONE) | (d.engine != EngineKind.TLMM) |
                          ((d.epilogue != Epilogue.REQUANT) & ~dec["epi_res"] & ~dec["epi_gelu"])):
                    c.d.comb += err.eq(ErrorCode.UNSUPPORTED)
                with c.Elif(~bank_ok(d.src_bank, res=False) |
                            Mux(dec["epi_res"], ~dec["dst_res"],
                                ~bank_ok(d.dst_bank, res=False,
                                         kv=d.epilogue == Epilogue.REQUANT))):
                    c.d.comb += err.eq(ErrorCode.BANK)
                with c.Elif(~rows_ok("src") | ~rows_ok("dst")):
                    c.d.comb += err.eq(ErrorCode.ROWS)
                with c.Elif(~k_ok | ~n_ok):
                    c.d.comb += err.eq(ErrorCode.SHAPE)
                with c.Elif(d.const >= p["const_sets"]):
                    c.d.comb += err.eq(ErrorCode.CONST)
                with c.Elif(~dec["epi_res"] & (d.src_bank == d.dst_bank) & (d.dst_row > d.src_row) &
                            (d.dst_row < src_end)):
                    c.d.comb += err.eq(ErrorCode.OVERLAP)
            with c.Case(Opcode.NORM):
                with c.If((d.head != Head.LAYERNORM) | (d.epilogue != Epilogue.REQUANT)):
                    c.d.comb += err.eq(ErrorCode.UNSUPPORTED)
                with c.Elif(~dec["src_res"] | ~bank_ok(d.dst_bank, res=False)):
                    c.d.comb += err.eq(ErrorCode.BANK)
                with c.Elif(~rows_ok("src") | ~rows_ok("dst")):
                    c.d.comb += err.eq(ErrorCode.ROWS)
                with c.Elif(~k_ok | (d.n != d.k)):
                    c.d.comb += err.eq(ErrorCode.SHAPE)
                with c.Elif(d.const >= p["const_sets"]):
                    c.d.comb += err.eq(ErrorCode.CONST)
            with c.Case(Opcode.ATTN_QK, Opcode.ATTN_AV):
                qk = dec["is_qk"]
                keys = Mux(qk, d.n, d.k)        # key rows read from the KV region
                hdim = Mux(qk, d.k, d.n)        # head dim: whole k-blocks / lane blocks
                hdim_ok = Mux(qk, d.k[:kbits] == 0 if kbits else Const(1),
                              d.n[:lbits] == 0 if lbits else Const(1))
                # QK: any number of keys (the last lane block is cut by the
                # serializer); AV: N is the head dim, whole lane blocks.
                n_lanes = (qk | (d.n[:lbits] == 0)) if lbits else Const(1)
                with c.If((d.head != Head.NONE) | (d.engine != EngineKind.INT8) |
                          (d.epilogue != Mux(qk, Epilogue.REQUANT_SOFTMAX, Epilogue.REQUANT))):
                    c.d.comb += err.eq(ErrorCode.UNSUPPORTED)
                with c.Elif(~bank_ok(d.src_bank, res=False) | ~bank_ok(d.dst_bank, res=False)):
                    c.d.comb += err.eq(ErrorCode.BANK)
                with c.Elif(~rows_ok("src") | ~rows_ok("dst")):
                    c.d.comb += err.eq(ErrorCode.ROWS)
                with c.Elif((d.heads == 0) | (d.k == 0) | (d.n == 0) | ~n_lanes | ~hdim_ok |
                            (hdim == 0) | (keys > p["max_rows"]) | (hk > width_max) |
                            (hn > width_max)):
                    c.d.comb += err.eq(ErrorCode.SHAPE)
                with c.Elif(d.const >= p["const_sets"]):
                    c.d.comb += err.eq(ErrorCode.CONST)
                with c.Elif((d.src_bank == d.dst_bank) & (d.src_row < dst_end) &
                            (d.dst_row < src_end)):
                    c.d.comb += err.eq(ErrorCode.OVERLAP)
            with c.Default():
                c.d.comb += err.eq(ErrorCode.OPCODE)
        kb_comb = sum((d.k > j * e.k_block) for j in range(e.k_blocks))

        # ---------------- sequencer ----------------------------------------
        unit_err = Signal()
        c.d.comb += [unit_flags.eq(Cat(e.error, requant.error, resadd.error, lnorm.error,
                                       gelu.error, gelu_rq.error, i8.error, smax.error)),
                     unit_err.eq(unit_flags.any())]
        m.d.comb += status.unit.eq(unit_flags)
        pass_done = Signal()
        c.d.comb += pass_done.eq(
            (is_load & Mux(dst_res, res_wr.done, act_wr.done)) |
            (is_store & (stored == d.rows)) |
            (is_linear & Mux(epi_res, res_wr.done, act_wr.done)) |
            ((is_norm | is_attn) & act_wr.done))
        pass_timer = Signal(32)

        def stop(with_code):
            c.d.sync += [error.eq(1), code.eq(with_code), busy.eq(0)]

        with c.FSM(name="seq") as fsm:
            with c.State("IDLE"):
                with c.If(start):
                    c.d.sync += [pc.eq(0), busy.eq(1), done.eq(0), error.eq(0),
                                 code.eq(ErrorCode.NONE)]
                    c.d.sync += [cnt.eq(0) for cnt in counters.values()]
                    c.next = "FETCH"
            with c.State("FETCH"):
                c.next = "LATCH"
            with c.State("LATCH"):
                c.d.sync += d.eq(prog_rp.data)
                c.next = "CHECK"
            with c.State("CHECK"):
                # The check takes two registered steps (two cycles per
                # descriptor): row sums and decoded flags, then the error code.
                c.d.sync += [src_end.eq(d.src_row + d.rows), dst_end.eq(d.dst_row + d.rows),
                             kb_count.eq(kb_comb), pch.eq(0),
                             hk.eq(d.heads * d.k), hn.eq(d.heads * d.n),
                             i8_nbs.eq((d.n + aL - 1) >> lbits),
                             i8_kbs.eq((d.k + aK - 1) >> kbits),
                             i8_hstep.eq(Mux(op == Opcode.ATTN_QK, d.k >> kbits, d.n >> lbits)),
                             pcount.eq(Mux(dec["is_attn"], 1, d.n))]
                c.d.sync += [flags[name].eq(v) for name, v in dec.items()]
                c.next = "CHECK2"
            with c.State("CHECK2"):
                c.d.sync += err_r.eq(err)
                c.next = "DISPATCH"
            with c.State("DISPATCH"):
                c.d.sync += pass_timer.eq(1)
                with c.If(err_r != ErrorCode.NONE):
                    stop(err_r)
                    c.next = "IDLE"
                with c.Elif(is_end):
                    c.d.sync += [done.eq(1), busy.eq(0)]
                    c.next = "IDLE"
                with c.Elif(is_linear | is_norm | is_attn):
                    c.next = "PARAM"
                with c.Else():
                    c.d.comb += go.eq(1)
                    c.next = "RUN"
            with c.State("PARAM"):
                c.d.sync += pass_timer.eq(pass_timer + 1)
                c.d.comb += [p_issue.eq(pch < pcount),
                             const_rp.addr.eq(Cat(pch[:cb], *set_part) if cb else
                                              Cat(*set_part))]
                with c.If(p_issue):
                    c.d.sync += pch.eq(pch + 1)
                with c.If(pv & plast):
                    c.d.comb += go.eq(1)
                    c.next = "RUN"
            with c.State("RUN"):
                c.d.comb += run.eq(1)
                c.d.sync += pass_timer.eq(pass_timer + 1)
                with c.If(unit_err):
                    stop(ErrorCode.UNIT)
                    c.next = "IDLE"
                with c.Elif(pass_done):
                    c.d.sync += counters["pass_cycles"].eq(pass_timer)
                    with c.If(pc == p["prog_depth"] - 1):
                        stop(ErrorCode.PC)
                        c.next = "IDLE"
                    with c.Else():
                        c.d.sync += pc.eq(pc + 1)
                        c.next = "FETCH"
        in_param = fsm.ongoing("PARAM")
        c.d.comb += const_rp.en.eq(in_param)

        # ---------------- counters -------------------------------------------
        def count(name, cond):
            with c.If(cond):
                c.d.sync += counters[name].eq(counters[name] + 1)

        ax_in = axis_in.tvalid & axis_in.tready
        ax_out = axis_out.tvalid & axis_out.tready
        epi_w = Mux(epi_res, res_wr.we, act_wr.we)
        count("cycles", busy)
        count("load_busy", ld & ax_in)
        count("load_stall", ld & ~ax_in)
        count("engine_busy", li & wgt_take)
        count("engine_stall", li & ~wgt_take)
        count("epilogue_busy", li & epi_w)
        count("epilogue_stall", li & ~epi_w)
        i8_take = i8.wgt.valid & i8.wgt.ready
        count("int8_busy", at & i8_take)
        count("int8_stall", at & ~i8_take)
        count("store_busy", st & ax_out)
        count("store_stall", st & ~ax_out)
        return m
