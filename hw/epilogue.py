"""The accelerator's epilogue: accumulators -> the values written back.

Every engine result and LayerNorm output (``acc``, int32, with its row's
absmax: 1 unless the LINEAR's source rows were row-quantized) is first
multiplied by the absmax (:class:`~trilut.hw.dynquant.RowScale`, 48 bits).
Then, by pass (the sequencer's ``cfg`` flags):

* LINEAR REQUANT, NORM, ATTN_AV: the per-channel Requantizer (per tensor
  for ATTN), clamped to the destination (int8, or int16 into the int16
  bank; symmetric +-32767 for NORM) [NORM: negated per channel by the
  entry's ``neg`` bit] = ``rq_out``;
* ATTN_QK: ``rq_out`` (int8 logits) -> Shiftmax (``probs_bits``);
* LINEAR REQUANT_GELU: ``rq_out`` (the GELU input width) -> ShiftGELU ->
  per-tensor Requantizer -> clamp;
* LINEAR RESIDUAL: + bias[channel] -> ResidualAdd with the residual row
  (``res``: the destination rows read back), int16;
* LINEAR REQUANT_GATEMUL (decoder builds, ``gatemul``): ``rq_out`` (int16
  up) -> :class:`~trilut.hw.gatemul.GateMul` with the gate row (``res``:
  the destination rows read back) -> int16 h;
* decoder builds (``rope``): LINEAR REQUANT_ROPE ``rq_out`` (int16) -> RoPE
  -> int8 (:mod:`~trilut.hw.llm_rope`), and ATTN_QK's int16 logits through
  the causal mask around Shiftmax (:mod:`~trilut.hw.llm_attn`).

The constants arrive in the PARAM phase as the sequencer's ``param``
entries: the requantizer's and the residual adder's per-channel tables
(written through their ``param`` streams), the biases and ``neg`` bits into
small distributed RAMs (the constant memory is block RAM, slow to read
from), and the per-tensor GELU / Shiftmax constants from entry 0.

Handshake: ``acc``, ``res`` and ``out`` are streams that honour
backpressure; only the units of the running pass move. ``run`` is the
sequencer's: the streams move from the cycle after it (each route's
condition is a flip-flop, :func:`~trilut.hw.rowio.gated`); ``go`` the
datapath's (registered). Latency: an input
register, then the units' own (RowScale, Requantizer, two register
stages, and ShiftGELU's or Shiftmax's row capture when used; RESIDUAL:
RowScale, two register stages (the scaled value with its bias read
asynchronously from the bias table, then their sum), ResidualAdd). Unit error flags: ``error``.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.encoder import GELU_IN_BITS, SOFTMAX_N, WIDE_BITS
from ..golden.quant import INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN
from .dynquant import RowScale
from .gatemul import GateMul
from .isa import GATEMUL_CONST, GELU_CONST, REQUANT_CONST, RESIDUAL_CONST
from .isa import Epilogue as EpilogueKind
from .llm_attn import causal_route
from .llm_rope import rope_route, rope_unit
from .regfront import window_port
from .requant import Requantizer, ResidualAdd
from .rowio import elem_stream, gated, join, join_fields, register, stage
from .sequencer import PARAM
from .shiftgelu import ShiftGELU
from .shiftmax import Shiftmax

__all__ = ["ACC_BITS", "ERRORS", "Epilogue"]

#: Width of the accumulators entering the epilogue (engine results and
#: LayerNorm's z): int32, as golden checks every accumulator to fit.
ACC_BITS = 32
#: The epilogue's units with an error flag (names of isa.UNIT_FLAGS).
ERRORS = ("requant", "resadd", "gelu", "gelu_rq", "smax")


def clamp(v, wide, sym=0):
    """``v`` (signed) clamped to int16 (``wide``; ``sym``: +-32767) or int8.
    Range tests by sign extension (the bits from the target's sign bit up
    all equal), not by compares: logic, no carry chain."""
    def fits(bits):
        top = v[bits - 1:]
        return top.all() | ~top.any() if len(v) > bits else 1

    v8 = Mux(fits(8), v, Mux(v[-1], INT8_MIN, INT8_MAX))
    v16 = Mux(fits(16) & ~(sym & (v == INT16_MIN)), v,
              Mux(v[-1], Mux(sym, -INT16_MAX, INT16_MIN), INT16_MAX))
    return Mux(wide, v16, v8)


class Epilogue(wiring.Component):
    """See the module docstring. ``cfg_shape``: the sequencer's ``cfg``
    layout; ``max_width`` channels; ``max_rows`` (Shiftmax row length);
    ``gelu_mode``, ``probs_bits``: the build's; ``gatemul``: None, or the
    decoder build's gate activation ("silu", "relu2"): a GateMul unit and the
    REQUANT_GATEMUL route (its error flag shares the ``gelu`` bit); ``rope``:
    None, or the decoder build's (head_dim, positions): the REQUANT_ROPE
    route with its ``rope_w`` table port, int16 logits into Shiftmax and the
    causal ATTN_QK rows (their error flags share the ``gelu`` bit)."""

    def __init__(self, *, cfg_shape, max_width, max_rows, gelu_mode, probs_bits, gatemul=None,
                 rope=None):
        self._w = max_width
        self.gmul = None if gatemul is None else GateMul(act=gatemul, max_len=max_width)
        # decoder builds: (head_dim, positions) of the REQUANT_ROPE route (hw/llm_rope.py)
        self.rope = None if rope is None else rope_unit(*rope)
        self._gelu_wide = int(GELU_IN_BITS[gelu_mode] == 16)
        self.rscale = RowScale(acc_bits=ACC_BITS, scale_bits=WIDE_BITS)
        self.requant = Requantizer(acc_bits=ACC_BITS + WIDE_BITS, out_bits=16,
                                   channels=max_width, bias_bits=32)
        self.gelu = ShiftGELU(mode=gelu_mode, max_len=max_width)
        self.gelu_rq = Requantizer(acc_bits=self.gelu.out_bits, out_bits=16, channels=1,
                                   bias_bits=2)
        self.resadd = ResidualAdd(x_bits=ACC_BITS + WIDE_BITS, y_bits=16, out_bits=16,
                                  channels=max_width)
        # decoder builds: int16 logits (golden logit_bits 16), causal rows (hw/llm_attn.py)
        self.smax = Shiftmax(in_bits=16 if rope else 8, n=SOFTMAX_N, out_bits=probs_bits,
                             max_len=max_rows)
        super().__init__({
            "cfg": In(cfg_shape), "run": In(1), "go": In(1), "param": In(PARAM),
            "acc": In(stream.Signature(self.rscale.inp.payload.shape())), "res": In(elem_stream()),
            "out": Out(elem_stream()),
            "error": Out(data.StructLayout({name: 1 for name in ERRORS})),
            # the RoPE table window's write port (written by the register front)
            **({"rope_w": Out(window_port(self.rope.table_depth, 32))} if rope else {}),
        })

    def reads_dst(self, cfg):
        """The running LINEAR reads its destination rows into ``res``
        (RESIDUAL; REQUANT_GATEMUL: the gate rows)."""
        f = cfg.flags
        if self.gmul is None:
            return f.epi_res
        return f.epi_res | (cfg.desc.epilogue == EpilogueKind.REQUANT_GATEMUL)

    def elaborate(self, platform):
        m = Module()
        rscale, requant, resadd = self.rscale, self.requant, self.resadd
        gelu, gelu_rq, smax = self.gelu, self.gelu_rq, self.smax
        for name in ("rscale", "requant", "resadd", "gelu", "gelu_rq", "smax"):
            m.submodules[name] = getattr(self, name)
        m.d.comb += [self.error[name].eq(getattr(self, name).error) for name in ERRORS]
        d, f = self.cfg.desc, self.cfg.flags
        go, par = self.go, self.param

        def when(cond, name):   # a route's condition, one flip-flop (rowio.gated)
            return gated(m, self.run, cond, name)

        # The LINEAR routes by epilogue kind (decoder builds: two more).
        gm_kind = f.is_linear & (d.epilogue == EpilogueKind.REQUANT_GATEMUL)
        rope_kind = f.is_linear & (d.epilogue == EpilogueKind.REQUANT_ROPE)
        direct = f.is_linear & ~f.epi_res & ~f.epi_gelu
        if self.gmul is not None:
            direct = direct & ~gm_kind
        if self.rope is not None:
            direct = direct & ~rope_kind
        qk, to_gelu = when(f.is_attn_qk, "qk"), when(f.is_linear & f.epi_gelu, "to_gelu")
        to_res = when(f.is_linear & f.epi_res, "to_res")
        # The accumulators come from the engines' and LayerNorm's select:
        # registered before RowScale's multiplier.
        wiring.connect(m, register(m, wiring.flipped(self.acc), "acc_q"), rscale.inp)
        m.d.comb += [requant.num_channels.eq(Mux(f.is_attn, 1, d.n)),
                     resadd.num_channels.eq(d.n)]
        # The requantizer's output range: int16 into the int16 bank (QK: int8
        # logits; REQUANT_GELU: the GELU input width). Registered: the flags
        # are stable long before the pass starts.
        rq_wide = Signal()
        wide = f.dst_res & ~f.is_attn_qk
        if self.rope is not None:       # REQUANT_ROPE: int16 into RoPE; int16 logits
            wide = wide | (d.epilogue == EpilogueKind.REQUANT_ROPE) | f.is_attn_qk
        m.d.sync += rq_wide.eq(Mux(f.epi_gelu, self._gelu_wide, wide))

        # rscale -> requant -> clamp [-> negate] = rq_out.
        join_fields(m, rscale.out, requant.inp,
                    when(f.is_linear & ~f.epi_res | f.is_attn | f.is_norm, "to_rq"),
                    only_source=True)
        nch = Signal(range(self._w))
        neg_mem = memory.Memory(shape=1, depth=self._w, init=[])
        m.submodules.neg_mem = neg_mem
        neg_rp = neg_mem.read_port(domain="comb")
        neg_wp = neg_mem.write_port()
        rq_v = Signal(signed(17))
        m.d.comb += [neg_rp.addr.eq(nch),
                     rq_v.eq(clamp(requant.out.payload.data, rq_wide, f.is_norm))]
        # Clamp, then (NORM) negate, a register stage each: the clamped
        # int16 with the negate bit above it, then rq_out.
        rq_c = stage(m, requant.out, Cat(rq_v[:16], f.is_norm & neg_rp.data).as_signed(),
                     "rq_c", 17)
        c_v, c_neg = rq_c.payload.data[:16].as_signed(), rq_c.payload.data[16]
        rq_out = stage(m, rq_c, Mux(c_neg, -c_v, c_v), "rq_out")
        with m.If(requant.out.valid & requant.out.ready):
            m.d.sync += nch.eq(Mux(requant.out.payload.last, 0, nch + 1))
        with m.If(go):
            m.d.sync += nch.eq(0)
        g_out = stage(m, gelu_rq.out, clamp(gelu_rq.out.payload.data, f.dst_res), "g_out")
        if self.rope is None:
            join_fields(m, rq_out, smax.inp, qk, only_source=True)
        else:                           # decoder builds: causal rows
            causal_route(m, self.cfg, go, rq_out, smax, self.out, qk)
        join_fields(m, rq_out, gelu.inp, to_gelu, only_source=True)
        join_fields(m, gelu.out, gelu_rq.inp, to_gelu, only_source=True)
        if self.gmul is not None:
            self._gatemul(m, when(gm_kind, "to_gatemul"), rq_out)
        if self.rope is not None:
            rope_route(m, self, self.rope, when(rope_kind, "to_rope"), rq_out, self.rope_w)
        join_fields(m, rq_out, self.out,
                    when(direct | f.is_norm | f.is_attn & ~f.is_attn_qk, "rq_direct"))
        if self.rope is None:
            join_fields(m, smax.out, self.out, qk)
        join_fields(m, g_out, self.out, to_gelu)
        join_fields(m, resadd.out, self.out, to_res)

        # RESIDUAL: acc * absmax + bias[channel], then ResidualAdd. The bias
        # table is distributed RAM read asynchronously at the channel count;
        # the scaled value and its bias are registered, then their sum.
        res_in = elem_stream(ACC_BITS + WIDE_BITS).create(path=("res_in",))
        join_fields(m, rscale.out, res_in, to_res, only_source=True)
        bch = Signal(range(self._w))
        # Distributed RAM forced: Yosys would merge the register after the
        # asynchronous read into a block RAM's read port (clock-to-out ~5.6
        # ns, then the add).
        bias_mem = memory.Memory(shape=signed(32), depth=self._w, init=[],
                                 attrs={"ram_style": "distributed"})
        m.submodules.bias_mem = bias_mem
        bias_rp = bias_mem.read_port(domain="comb")
        bias_wp = bias_mem.write_port()
        m.d.comb += bias_rp.addr.eq(bch)
        with m.If(res_in.valid & res_in.ready):
            m.d.sync += bch.eq(Mux(bch + 1 == d.n, 0, bch + 1))
        with m.If(go):
            m.d.sync += bch.eq(0)
        bias_in = stage(m, res_in, Cat(res_in.payload.data, bias_rp.data), "bias_in",
                        ACC_BITS + WIDE_BITS + 32)
        bias_sum = stage(m, bias_in, bias_in.payload.data[:ACC_BITS + WIDE_BITS].as_signed()
                         + bias_in.payload.data[ACC_BITS + WIDE_BITS:].as_signed(), "bias_sum",
                         ACC_BITS + WIDE_BITS)
        join_fields(m, bias_sum, resadd.x, to_res, only_source=True)
        join(m, self.res, resadd.y, to_res)

        # PARAM: the pass's constant entries into the tables.
        rq_c = data.View(REQUANT_CONST, par.data)
        rs_c = data.View(RESIDUAL_CONST, par.data)
        g_c = data.View(GELU_CONST, par.data)
        m.d.comb += [
            requant.param.payload.m.eq(rq_c.m), requant.param.payload.e.eq(rq_c.e),
            requant.param.payload.bias.eq(rq_c.bias), requant.param.payload.last.eq(par.last),
            requant.param.valid.eq(par.valid & ~f.epi_res),
            resadd.param.payload.mx.eq(rs_c.mx), resadd.param.payload.ex.eq(rs_c.ex),
            resadd.param.payload.my.eq(rs_c.my), resadd.param.payload.ey.eq(rs_c.ey),
            resadd.param.payload.last.eq(par.last),
            resadd.param.valid.eq(par.valid & f.epi_res),
            bias_wp.addr.eq(par.index), bias_wp.data.eq(rs_c.bias),
            bias_wp.en.eq(par.valid & f.epi_res),
            neg_wp.addr.eq(par.index), neg_wp.data.eq(rq_c.neg),
            neg_wp.en.eq(par.valid & ~f.epi_res),
        ]
        # Per-tensor GELU / Shiftmax constants: entry 0 of the set, held.
        gm, ge, gx0 = Signal.like(g_c.gm), Signal.like(g_c.ge), Signal(signed(16))
        with m.If(par.first):
            m.d.sync += [gm.eq(g_c.gm), ge.eq(g_c.ge), gx0.eq(g_c.x0)]
        m.d.comb += [gelu_rq.m.eq(gm), gelu_rq.e.eq(ge), gelu_rq.bias.eq(0), gelu.x0.eq(gx0),
                     smax.x0.eq(gx0)]
        if self.rope is not None:     # rm, re share GELU's gm, ge latches
            m.d.comb += [self.rope.m.eq(gm), self.rope.e.eq(ge)]
        if self.gmul is not None:     # act_m, act_e, x0 share GELU's latches
            gmul, gc = self.gmul, data.View(GATEMUL_CONST, par.data)
            hm, he = Signal.like(gc.hm), Signal.like(gc.he)
            with m.If(par.first):
                m.d.sync += [hm.eq(gc.hm), he.eq(gc.he)]
            m.d.comb += [gmul.act_m.eq(gm), gmul.act_e.eq(ge), gmul.hid_m.eq(hm),
                         gmul.hid_e.eq(he)]
            if gmul.act == "silu":
                m.d.comb += gmul.x0.eq(gx0)
        return m

    def _gatemul(self, m, on, rq_out):
        """REQUANT_GATEMUL (while ``on``): int16 up (``rq_out``) and the gate
        row (``res``) into GateMul, its h out."""
        gmul = self.gmul
        m.submodules.gatemul = gmul
        join_fields(m, rq_out, gmul.up, on)
        join_fields(m, self.res, gmul.gate, on)
        join_fields(m, gmul.out, self.out, on)
        rope_err = self.rope.error if self.rope is not None else 0
        m.d.comb += self.error.gelu.eq(self.gelu.error | gmul.error | rope_err)
