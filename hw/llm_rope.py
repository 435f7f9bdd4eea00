"""The decoder build's REQUANT_ROPE epilogue route (``Accelerator(llm=True)``;
docs/llm.md, "On the top"): the q and k projections' RoPE on chip.

A LINEAR with the REQUANT_ROPE epilogue runs as REQUANT into int16 (the
per-channel requantizer, ``rq_out``), then :class:`~trilut.hw.rope.RoPE`
(rotate_half with the build's loaded cos/sin table, its requantizer by the
per-tensor ``rm``, ``re`` of :data:`~trilut.hw.isa.ROPE_CONST`, int8 out)
into the pass's writer (an int8 bank: Q rows; the KV region: K rows). Row
``i`` of the pass is rotated at position ``kv_pos + i`` (the descriptor's
``kv_pos``; the row counter restarts with the pass), golden
:func:`~trilut.golden.llm.rope_requant` (``q_rope``, ``k_rope``; attn_scale
"static").

The table is written once through the ``rope`` register window
(:func:`~trilut.hw.isa.rope_words`, entry ``pos * head_dim / 2 + j``, in
order from entry 0: each write is one beat of RoPE's ``table`` stream, the
window's last entry rewinds it). Handshake and latency: RoPE's
(:meth:`~trilut.hw.rope.RoPE.latency` cycles from a head's last element to
its first result; one element per cycle; backpressure honoured). Its error
flag (a row that is not whole heads, a position beyond the table) shares the
epilogue's ``gelu`` bit with GateMul.
"""
from amaranth.hdl import Signal

from .rope import RoPE
from .rowio import join_fields

__all__ = ["rope_unit", "rope_route"]


def rope_unit(head_dim, max_pos):
    """The build's RoPE: ``head_dim`` (the decoder's), a table of ``max_pos``
    positions (the KV capacity), int8 out."""
    return RoPE(head_dim=head_dim, max_pos=max_pos, out_bits=8)


def rope_route(m, epi, rope, on, rq_out, table_w):
    """Wire REQUANT_ROPE into Epilogue ``epi`` (module docstring): ``rq_out``
    (int16) -> ``rope`` -> ``epi.out`` while ``on`` (the running LINEAR has
    the epilogue); ``table_w`` the window's write port (``rope.m``,
    ``rope.e``: the epilogue's per-tensor latches)."""
    m.submodules.rope = rope
    d = epi.cfg.desc
    row = Signal.like(d.rows, name="rope_row")
    inp = rope.inp
    m.d.comb += [inp.valid.eq(rq_out.valid & on), inp.payload.data.eq(rq_out.payload.data),
                 inp.payload.last.eq(rq_out.payload.last),
                 inp.payload.pos.eq(d.kv_pos + row)]
    with m.If(on):
        m.d.comb += rq_out.ready.eq(inp.ready)
    with m.If(inp.valid & inp.ready & inp.payload.last):
        m.d.sync += row.eq(row + 1)
    with m.If(epi.go):
        m.d.sync += row.eq(0)
    join_fields(m, rope.out, epi.out, on)
    tab = rope.table
    m.d.comb += [tab.valid.eq(table_w.en), tab.payload.cos.eq(table_w.data[:16]),
                 tab.payload.sin.eq(table_w.data[16:]),
                 tab.payload.last.eq(table_w.addr == rope.table_depth - 1)]
