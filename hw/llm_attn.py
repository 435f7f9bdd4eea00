"""The decoder build's causal ATTN_QK epilogue route (``Accelerator(llm=True)``;
docs/llm.md, "On the top").

ATTN_QK's int16 logits (``rq_out``) arrive row by row (``rows`` query
tokens, ``heads`` heads each, ``n`` keys per head, ``last`` on each head's
final key). With the descriptor's ``causal`` bit
(:data:`~trilut.hw.isa.LLM_FIELDS`), query row ``i`` sees keys
``0 .. kv_pos + i`` (golden :func:`~trilut.golden.llm.prefill`: a token
attends to the cache and to the chunk's tokens up to itself):

* input side: a head's keys ``j <= kv_pos + i`` go to Shiftmax, ``last``
  on key ``kv_pos + i`` (or the head's last key); the masked keys are
  consumed and dropped (golden never lets a masked logit into Shiftmax);
* output side: after Shiftmax's last probability of a head row,
  ``n - kv_pos - i - 1`` zeros (golden's probabilities of the masked keys),
  so the writer's row of ``heads * n`` is complete and ATTN_AV multiplies
  zeros there.

Without ``causal`` every key goes through (the encoder's attention).
Handshake: backpressure passes through both sides; the zeros are issued
one per cycle while the destination is ready. Latency: Shiftmax's, plus
nothing on the input side (combinational) and none on the output side.
"""
from amaranth.hdl import Cat, Mux, Signal, signed
from amaranth.lib import data

from .isa import LLM_FIELDS

__all__ = ["causal_route"]


def causal_route(m, cfg, go, rq_out, smax, out, when):
    """Wire ``rq_out`` -> Shiftmax ``smax`` -> ``out`` while ``when`` (the
    running ATTN_QK), masking by the descriptor of ``cfg`` (module docstring)."""
    d = cfg.desc
    causal = data.View(LLM_FIELDS, d.reserved).causal
    wide = len(d.kv_pos) + 2
    # Input side: key index j within the head row, head h, the last visible
    # key lim = kv_pos + i of query row i.
    j, h = Signal.like(d.n, name="cz_j"), Signal.like(d.heads, name="cz_h")
    lim = Signal(wide, name="cz_lim")
    keep = ~causal | (j <= lim)
    inp = smax.inp
    m.d.comb += [inp.payload.data.eq(rq_out.payload.data),
                 inp.payload.last.eq(rq_out.payload.last | causal & (j == lim))]
    with m.If(when):
        m.d.comb += [inp.valid.eq(rq_out.valid & keep),
                     rq_out.ready.eq(Mux(keep, inp.ready, 1))]
    with m.If(when & rq_out.valid & rq_out.ready):
        m.d.sync += j.eq(Mux(rq_out.payload.last, 0, j + 1))
        with m.If(rq_out.payload.last):
            m.d.sync += h.eq(Mux(h + 1 == d.heads, 0, h + 1))
            with m.If(h + 1 == d.heads):
                m.d.sync += lim.eq(lim + 1)
    # Output side: zeros after each head row, zeros = n - 1 - lim of its row.
    ho = Signal.like(d.heads, name="cz_ho")
    zrow = Signal(signed(wide + 1), name="cz_row")     # n - 1 - lim of the output row
    left = Signal(signed(wide + 1), name="cz_left")    # zeros still to write
    zeroing = left > 0
    so = smax.out
    with m.If(when):
        m.d.comb += [out.valid.eq(Mux(zeroing, 1, so.valid)),
                     out.payload.data.eq(Mux(zeroing, 0, so.payload.data)),
                     out.payload.last.eq(Mux(zeroing, left == 1, so.payload.last & (zrow <= 0))),
                     so.ready.eq(~zeroing & out.ready)]
    with m.If(when & out.ready & zeroing):
        m.d.sync += left.eq(left - 1)
    with m.If(when & so.valid & so.ready & so.payload.last):
        m.d.sync += [left.eq(Mux(causal, zrow, 0)), ho.eq(Mux(ho + 1 == d.heads, 0, ho + 1))]
        with m.If(ho + 1 == d.heads):
            m.d.sync += zrow.eq(zrow - 1)
    with m.If(go):
        m.d.sync += [j.eq(0), h.eq(0), lim.eq(d.kv_pos), ho.eq(0), left.eq(0),
                     zrow.eq(Cat(d.n, 0).as_signed() - 1 - Cat(d.kv_pos, 0).as_signed())]
