# amaranth: UnusedElaboratable=no
# (an Accelerator built from a parameter dict is a host-side helper here)
"""The decoder compiler: the programs that run golden
:class:`~trilut.golden.llm.LlamaParams` on a decoder build of the
accelerator (``Accelerator(llm=True)``), prefill and decode steps integer
for integer with :func:`trilut.golden.llm.prefill`
(:mod:`~trilut.host.llm_run` runs them, :mod:`~trilut.host.llm_consts`
places the model's constants).

What runs where (issue 13, wiring steps; docs/llm.md "On the top"):
every RMSNorm, every ternary linear with its row quantization,
requantizers and residual adds, the gated MLP's gate product, RoPE and
causal GQA attention over the on-chip KV cache run on the accelerator
(:func:`attn_on_chip`: attn_scale "static", logit_bits and probs_bits 16);
the host does the embedding and the LM head. A layer is one segment,
the residual stream staying on chip (int16 bank rows ``R0``) between
layers, and consecutive layers' segments are merged into one program
while it fits the program memory (:func:`compile_chunk`: a decode step of
the built-in LM on ``top-llm`` is one program)::

       [LOAD x -> R0]  (layer 0 of a chunk: the int16 embeddings)
       NORM RMSNORM R0 -> R1 attn_norm               [STORE attn_norm]
       LINEAR R1 -> Q   q (REQUANT_ROPE, int8 at kv_pos + row)   [STORE q_rope]
       LINEAR R1 -> K   k (REQUANT_ROPE, int8; KV rows base + kv_pos ..)  [STORE k_rope]
       LINEAR R1 -> V   v (REQUANT, int8; KV rows base + kv_pos ..)   [STORE v]
       ATTN_QK Q, K -> R2  probs (causal, GQA; keys 0 .. kv_pos + M - 1)
       ATTN_AV R2, V -> R1  attn (int16)                [STORE attn]
       then as B below, without its LOAD

Otherwise two segments with the host's RoPE and attention between them:
A as above up to V, but q and k LINEAR REQUANT (int16) into ``R2``, STORE
q, k, v; the host runs golden RoPE, the K/V append and attention::

    B  LOAD attn -> R1;  [NORM RMSNORM R1 -> R2 attn_sub]
       LINEAR (R1|R2) -> R0  o (RESIDUAL: res1)      [STORE res1]
       NORM RMSNORM R0 -> R1 mlp_norm                [STORE mlp_norm]
       LINEAR R1 -> R2  gate (REQUANT, int16)        [STORE gate]
       LINEAR R1 -> R2  up (REQUANT_GATEMUL: h = gate product, in place)  [STORE h]
       [NORM RMSNORM R2 -> R1 ffn_sub]
       LINEAR (R2|R1) -> R0  down (RESIDUAL: res2)   [STORE res2]
       last layer: NORM RMSNORM R0 -> R1 norm        STORE norm
    host: int8 LM head on norm -> int32 logits

``Q``: rows 0.. of int8 bank 0; ``K``, ``V``: the KV region, layer ``i``
from row ``base = i *`` :func:`kv_capacity`. RoPE's cos/sin table is
written once per device (:func:`rope_table`, the build's ``rope`` register
window); with attention on the host and attn_scale "token" (K quantized
per token after RoPE) q and k are int16 and RoPE runs on the host too.
``R0``, ``R1``, ``R2``: rows 0.., M.., 2M.. of the int16 bank for a chunk
of M tokens, so a chunk holds at most ``max_rows // 3`` tokens; a longer
prompt is prefilled in chunks (prefill of a sequence equals prefill of its
pieces, golden). The KV capacity (:func:`kv_capacity`) is checked before
anything runs.
Square brackets: only with ``trace=True`` (or a sub-norm checkpoint).

Positions: every program is compiled at KV position 0 (the KV rows of
layer ``i`` from ``base``, RoPE from position 0, ``rows`` keys); the decoder
build's ``kv_pos`` register, which the host writes before a run
(:meth:`~trilut.host.driver.Driver.set_kv_pos`), moves the KV rows, the
RoPE positions and the key counts (:data:`~trilut.hw.isa.KV_POS_DOC`). So
a chunk size compiles to one set of programs, and a decode step sends
one register write, not its program.

Constants: a LINEAR whose entries are all equal (BitNet's per-tensor weight
scale and RowScale's per-token activation scale: every linear of an
imported checkpoint) is ``uniform`` (:data:`~trilut.hw.isa.LLM_FIELDS`):
its one entry sits in the segment's shared set at the index its ``heads``
field names (:func:`trilut.host.compiler._pack_const_sets`), so a segment
writes the RMSNorm gammas (one entry per channel), the attention's two
one-entry sets and one shared set. :func:`~trilut.host.llm_consts.const_plan`
places every segment's constants once for the whole model (the ``plan=``
of :func:`compile_layer` and :func:`compile_chunk`), so that a decode step
finds them where the step before left them and the driver sends none
again (docs/llm.md, "Constants on decoder builds").
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
from amaranth.lib import data

from ..golden.llm import LlamaParams
from ..golden.quant import INT16_MAX, INT16_MIN, M_BITS_DEFAULT
from ..hw.isa import (KEY_BANK, RESIDUAL_BANK, VALUE_BANK, EngineKind, Epilogue, Head,
                      Opcode, llm_fields, pack_gatemul_const, pack_requant_const,
                      pack_rope_const, pack_softmax_const, rope_words)
from .compiler import CompileError, Program, _accelerator, _bias, _Builder, _vec

__all__ = ["SegmentProgram", "compile_layer", "compile_chunk", "weight_image", "rope_table",
           "rope_on_chip", "attn_on_chip", "kv_capacity", "REGIONS"]

#: Regions of M rows of the int16 bank a chunk of M tokens uses (R0, R1, R2).
REGIONS = 3
_LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


class SegmentProgram(Program):
    """A :class:`~trilut.host.compiler.Program` whose LOADs take named int16
    tensors: ``loads`` is ``[(name, width)]`` in program order and
    :meth:`input_frames` takes a dict ``{name: (rows, width) ints}``.
    ``linears``: the golden names of its LINEAR passes' weights
    (``layers.{i}.q`` ...), in program order. ``image``: a
    :func:`weight_image` of the model, whose packed frames are used instead
    of packing the weights again (they do not depend on rows or kv_pos).

    Its descriptors are compiled at KV position 0; ``kv_pos`` is the value
    the decoder build's ``kv_pos`` register must hold when it runs
    (:data:`~trilut.hw.isa.KV_POS_DOC`: the sequencer moves the KV rows,
    the RoPE positions and the key counts by it), set by :meth:`at_kv_pos`;
    ``kv_cap``: the KV positions the build holds per layer."""

    def __init__(self, *args, loads=(), image=None, kv_cap=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loads = list(loads)
        self.kv_cap, self.kv_pos = kv_cap, 0
        self.segments = 1               # compile_layer's segments it runs (merged)
        self.linears = [name for name, _, _ in self._weights]
        if image is not None:
            self._weight_frames = [image[name] for name in self.linears]

    def feed_layout(self, layout):
        """This program's part of ``layout`` (:meth:`Driver.load_weights
        <trilut.host.driver.Driver.load_weights>` of a :func:`weight_image`),
        named as :func:`~trilut.host.driver.weight_blobs` names the program's
        blobs: the ``weights=`` of :meth:`Driver.run
        <trilut.host.driver.Driver.run>`."""
        missing = [n for n in self.linears if n not in layout]
        if missing:
            raise CompileError(f"the weight layout holds no {', '.join(missing)}: load the "
                               f"model's weight_image first")
        return {f"linear{i}": layout[n] for i, n in enumerate(self.linears)}

    def at_kv_pos(self, kv_pos):
        """This program at KV position ``kv_pos`` (its ``kv_pos`` attribute,
        the register's value; the descriptors are the same list): a decode
        step reuses the program compiled for the first one, and the driver
        sends none of it again."""
        if self.seq + kv_pos > self.kv_cap:
            raise CompileError(f"KV positions {kv_pos} .. {kv_pos + self.seq - 1} beyond the "
                               f"build's KV capacity of {self.kv_cap} positions")
        out = copy.copy(self)
        out.kv_pos = kv_pos
        return out

    def merged(self, other):
        """One program running this one, then ``other`` (same build and
        chunk): descriptors (this one's END dropped), constants, LOADs,
        STOREs and weights in that order. The caller checks that it fits
        (:func:`compile_chunk`)."""
        out = SegmentProgram(self._accel, self.descriptors[:-1] + other.descriptors,
                             sorted((dict(self.consts) | dict(other.consts)).items()),
                             self.outputs + other.outputs, self._weights + other._weights,
                             self.seq, self.hidden, self.passes[:-1] + other.passes,
                             loads=self.loads + other.loads, kv_cap=self.kv_cap)
        if self._weight_frames is not None and other._weight_frames is not None:
            out._weight_frames = self._weight_frames + other._weight_frames
        out.segments = self.segments + other.segments
        return out

    def input_frames(self, inputs):
        frames = []
        for name, width in self.loads:
            if name not in inputs:
                raise CompileError(f"{name}: this segment LOADs it; inputs give "
                                   f"{sorted(inputs)}")
            a = np.asarray(inputs[name])
            if a.dtype.kind not in "iu" or a.shape != (self.seq, width):
                raise CompileError(f"{name}: expected integers of shape ({self.seq}, {width}), "
                                   f"got {a.dtype} {a.shape}")
            if a.size and (a.min() < INT16_MIN or a.max() > INT16_MAX):
                raise CompileError(f"{name}: values must fit int16")
            frames += self._accel.row_frames(a, wide=True)
        return frames


def _check(params, acc, rows):
    """Everything the build must hold for ``params`` at chunks of ``rows``
    tokens: one CompileError listing every problem."""
    if not isinstance(params, LlamaParams):
        raise TypeError(f"params must be LlamaParams, got {type(params).__name__}")
    p, cfg, e = acc.params, params.cfg, acc.engine
    problems = []
    if not p["llm"]:
        problems.append("the build has no RMSNorm: a decoder needs Accelerator(llm=True)")
    elif cfg.act != p["llm_act"]:
        problems.append(f"act {cfg.act!r}: this build's GateMul runs {p['llm_act']!r} "
                        f"(Accelerator llm_act)")
    if not 1 <= rows * REGIONS <= p["max_rows"]:
        problems.append(f"{rows} tokens per chunk need {REGIONS} x {rows} rows of the int16 "
                        f"bank; max_rows = {p['max_rows']}")
    widths = {"hidden": cfg.hidden, "q (heads x head_dim)": cfg.heads * cfg.head_dim,
              "ffn": cfg.ffn}
    for what, w in widths.items():
        if w > p["max_width"]:
            problems.append(f"{what} = {w} exceeds max_width = {p['max_width']}")
    if rope_on_chip(cfg) and p["llm"] and cfg.head_dim != p["llm_head_dim"]:
        problems.append(f"head_dim = {cfg.head_dim}: this build's RoPE rotates heads of "
                        f"llm_head_dim = {p['llm_head_dim']}")
    cap = kv_capacity(params, acc)
    if p["llm"] and attn_on_chip(cfg, p) and cfg.heads * cap > p["max_width"]:
        problems.append(f"{cfg.heads} heads x {cap} KV positions exceed max_width = "
                        f"{p['max_width']} (the attention's probability rows)")
    if p["llm"] and attn_on_chip(cfg, p) and cap < 1:
        problems.append(f"max_rows = {p['max_rows']} holds no KV position for each of "
                        f"{cfg.layers} layers")
    if cfg.m_bits != M_BITS_DEFAULT:
        problems.append(f"m_bits = {cfg.m_bits}; constant entries hold {M_BITS_DEFAULT}-bit "
                        f"multipliers")
    for i, lp in enumerate(params.layers):
        for n in _LINEARS:
            lin = getattr(lp, n)
            k, nn = lin.in_features, lin.out_features
            where = f"layers.{i}.{n}"
            if lin.kind != "ternary":
                problems.append(f"{where}: {lin.kind} weights; the decoder runs ternary "
                                f"linears on the TLMM engine")
                continue
            if nn % e.lanes:
                problems.append(f"{where}: N = {nn} must be a multiple of the TLMM lanes = "
                                f"{e.lanes}")
            if acc.weight_beats(k, nn) > acc.wstore_depth:
                problems.append(f"{where}: {k} x {nn} weights exceed wstore_depth = "
                                f"{acc.wstore_depth}")
    if problems:
        raise CompileError(f"the decoder does not fit this build ({len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems))


def rope_on_chip(cfg):
    """Whether q and k take the accelerator's REQUANT_ROPE route (attn_scale
    "static": K is int8 straight out of RoPE's requantizer); "token" keeps
    RoPE on the host (K is quantized per token after it)."""
    return cfg.attn_scale == "static"


def attn_on_chip(cfg, accel_params):
    """Whether causal GQA attention runs on the accelerator (one segment per
    layer): RoPE on chip, int16 logits and probabilities (golden's
    logit_bits and probs_bits 16, the decoder build's Shiftmax and
    ``probs_bits``: Accelerator parameters ``accel_params``)."""
    return (rope_on_chip(cfg) and cfg.logit_bits == 16 and cfg.probs_bits == 16
            and accel_params.get("probs_bits") == 16)


def kv_capacity(params, accel):
    """KV positions the build ``accel`` holds for ``params``: with attention
    on chip every layer keeps its keys and values, so the KV region's
    ``max_rows`` rows are split between the layers (layer ``i`` from row
    ``i * capacity``, a multiple of the int8 engine's blocks); otherwise
    (the host keeps the cache) ``max_rows``."""
    acc = _accelerator(accel)
    p = acc.params
    if not attn_on_chip(params.cfg, p):
        return acc.max_rows
    blk = max(p["attn_lanes"], p["attn_kpc"])
    return acc.max_rows // params.cfg.layers // blk * blk


def rope_table(params, accel):
    """The ``rope`` register window's words for ``params`` on the build
    ``accel``: golden's cos/sin rows of the build's ``max_rows`` positions
    (zeros beyond the model's), written once per device
    (``Driver.write("rope", words)``) before any segment runs."""
    acc = _accelerator(accel)
    _check(params, acc, 1)
    n, h = acc.max_rows, params.cfg.head_dim // 2
    cos, sin = np.zeros((n, h), np.int64), np.zeros((n, h), np.int64)
    k = min(n, params.cfg.max_pos)
    cos[:k], sin[:k] = params.rope_cos[:k], params.rope_sin[:k]
    return rope_words(cos, sin)


def _requant_entries(lin):
    n = lin.out_features
    return [pack_requant_const(m, e, b) for m, e, b in
            zip(_vec(lin.requant.m, n), _vec(lin.requant.e, n), _bias(lin, n))]


def compile_layer(params, layer, accel, rows, kv_pos, *, load_x=False, final=False,
                  trace=False, image=None, plan=None):
    """The segments (:class:`SegmentProgram`, module docstring: one with
    attention on chip, else two) of layer ``layer`` for a chunk of ``rows``
    tokens at positions ``kv_pos ..``: compiled at position 0, their
    ``kv_pos`` the register's value (:meth:`SegmentProgram.at_kv_pos`).
    Their STOREs are named ``layers.{layer}.<tensor>`` (the final ``norm``
    as it is).
    ``load_x``: segment A LOADs the chunk's embeddings; ``final``: segment B
    ends with the final RMSNorm. ``trace``: also STORE attn_norm, res1,
    mlp_norm, gate, h, res2 (and the sub-norms). ``image``: the model's
    :func:`weight_image` (packed weights reused). ``plan``: a
    :class:`ConstPlan` of the model (:func:`const_plan`) placing the
    constants; None: the segment's own sets."""
    acc = _accelerator(accel)
    _check(params, acc, rows)
    cfg, lp = params.cfg, params.layers[layer]
    on_chip = attn_on_chip(cfg, acc.params)
    cap = kv_capacity(params, acc)      # kv_pos + rows is checked by at_kv_pos below
    base = layer * cap if on_chip else 0      # this layer's KV rows (+ kv_pos: the register)
    prefix = f"layers.{layer}."
    c, kvw = cfg.hidden, cfg.kv_heads * cfg.head_dim
    R0, R1, R2 = ((RESIDUAL_BANK, i * rows) for i in range(REGIONS))
    rms = Head.RMSNORM
    segs = []

    def segment(build, loads):
        bld = _Builder(acc, rows, trace, uniform=True)   # _check: a decoder build
        for name, width, dst in loads:
            bld.emit(f"load_{name}", Opcode.LOAD, dst_bank=dst[0], dst_row=dst[1], rows=rows,
                     k=width)
        build(bld)
        bld.emit("end", Opcode.END)
        descs, consts = bld.finish()
        outputs = [o if o.name == "norm" else dataclasses.replace(o, name=prefix + o.name)
                   for o in bld.outputs]
        if len(descs) > acc.prog_depth:
            raise CompileError(f"layers.{layer}: {len(descs)} descriptors exceed "
                               f"prog_depth = {acc.prog_depth}")
        if len(consts) > acc.const_sets:
            raise CompileError(f"layers.{layer}: {len(consts)} constant sets exceed "
                               f"const_sets = {acc.const_sets}")
        segs.append(SegmentProgram(acc, descs, consts, outputs, bld.weights, rows,
                                   c, bld.passes, loads=[(n, w) for n, w, _ in loads],
                                   image=image, kv_cap=cap))

    def sub_norm(bld, norm, name, width, src, dst):
        if norm is None:
            return src
        bld.norm(name, norm, width, src, dst, head=rms)
        bld.store(name, dst, width)
        return dst

    def seg_a(bld):
        bld.norm("attn_norm", lp.attn_norm, c, R0, R1, head=rms)
        bld.store("attn_norm", R1, c)
        qk = (("q", (0, 0), cfg.heads * cfg.head_dim, lp.q_rope), ("k", (KEY_BANK, base), kvw,
                                                                    lp.k_rope))
        for n, dst, width, rq in qk:
            lin = getattr(lp, n)
            if rope_on_chip(cfg):       # rows kv_pos + i: the register
                bld.linear(n, lin, R1, dst, Epilogue.REQUANT_ROPE,
                           [pack_rope_const(m, e, b, rq.m, rq.e) for m, e, b in
                            zip(_vec(lin.requant.m, width), _vec(lin.requant.e, width),
                                _bias(lin, width))], f"layers.{layer}.")
                bld.store(n + "_rope", dst, width, always=not on_chip)
            else:
                bld.linear(n, lin, R1, R2, Epilogue.REQUANT, _requant_entries(lin),
                           f"layers.{layer}.")
                bld.store(n, R2, width, always=True)
        bld.linear("v", lp.v, R1, (VALUE_BANK, base), Epilogue.REQUANT,
                   _requant_entries(lp.v), f"layers.{layer}.")
        bld.store("v", (VALUE_BANK, base), kvw, always=not on_chip)

    def attention(bld):
        """Causal GQA attention on chip: Q, K -> probabilities (R2) -> attn (R1)."""
        h, d = cfg.heads, cfg.head_dim
        g = cfg.heads // cfg.kv_heads
        s = bld.const_set([pack_softmax_const(lp.logits.m, lp.logits.e, lp.softmax_x0)], "attn")
        bld.emit("qk", Opcode.ATTN_QK, engine=EngineKind.INT8,
                 epilogue=Epilogue.REQUANT_SOFTMAX, src_bank=0, src_row=0, dst_bank=R2[0],
                 dst_row=R2[1], rows=rows, k=d, n=rows, heads=h, const=s,
                 reserved=llm_fields(causal=1, kv_group=g, kv_base=base))
        s = bld.const_set([pack_requant_const(lp.attn.m, lp.attn.e, 0)], "attn")
        bld.emit("av", Opcode.ATTN_AV, engine=EngineKind.INT8, epilogue=Epilogue.REQUANT,
                 src_bank=R2[0], src_row=R2[1], dst_bank=R1[0], dst_row=R1[1], rows=rows,
                 k=rows, n=d, heads=h, const=s,
                 reserved=llm_fields(kv_group=g, kv_base=base))
        bld.store("attn", R1, h * d)

    def seg_b(bld):
        src = sub_norm(bld, lp.attn_sub_norm, "attn_sub", cfg.heads * cfg.head_dim, R1, R2)
        bld.residual("o", lp.o, lp.res1_x, src, R0, c, f"layers.{layer}.")
        bld.store("res1", R0, c)
        bld.norm("mlp_norm", lp.mlp_norm, c, R0, R1, head=rms)
        bld.store("mlp_norm", R1, c)
        bld.linear("gate", lp.gate, R1, R2, Epilogue.REQUANT, _requant_entries(lp.gate),
                   f"layers.{layer}.")
        bld.store("gate", R2, cfg.ffn)
        up, a, hid = lp.up, lp.act_out, lp.hid
        bld.linear("up", up, R1, R2, Epilogue.REQUANT_GATEMUL,
                   [pack_gatemul_const(m, e, b, a.m, a.e, hid.m, hid.e, lp.act_x0 or 0)
                    for m, e, b in zip(_vec(up.requant.m, cfg.ffn), _vec(up.requant.e, cfg.ffn),
                                       _bias(up, cfg.ffn))],
                   f"layers.{layer}.")
        bld.store("h", R2, cfg.ffn)
        src = sub_norm(bld, lp.ffn_sub_norm, "ffn_sub", cfg.ffn, R2, R1)
        bld.residual("down", lp.down, lp.res2_x, src, R0, c, f"layers.{layer}.")
        bld.store("res2", R0, c)
        if final:
            bld.norm("norm", params.norm, c, R0, R1, head=rms)
            bld.store("norm", R1, c, always=True)

    if on_chip:                         # one segment: nothing on the host in between
        segment(lambda bld: (seg_a(bld), attention(bld), seg_b(bld)),
                [("x", c, R0)] if load_x else [])
    else:
        segment(seg_a, [("x", c, R0)] if load_x else [])
        segment(seg_b, [("attn", cfg.heads * cfg.head_dim, R1)])
    if plan is not None:
        segs = [plan.place(seg) for seg in segs]
    return [seg.at_kv_pos(kv_pos) for seg in segs]


def weight_image(params, accel):
    """``{name: bytes}``: every ternary linear's ``s_axis_wgt`` frame
    (``layers.{i}.q`` ... ``layers.{i}.down``, layer by layer in program
    order), what :meth:`Driver.load_weights
    <trilut.host.driver.Driver.load_weights>` puts into the external memory
    once for a whole generation (the weights do not depend on the chunk or
    kv_pos); the LM head runs on the host and is not in it."""
    acc = _accelerator(accel)
    _check(params, acc, 1)
    return {f"layers.{i}.{n}": acc.weight_frames(np.asarray(getattr(lp, n).weights, np.int64))[0]
            for i, lp in enumerate(params.layers) for n in _LINEARS}


def compile_chunk(params, accel, rows, *, trace=False, image=None, plan=None):
    """The programs that run a chunk of ``rows`` tokens through every layer:
    the layers' segments (:func:`compile_layer`, at position 0: the
    ``kv_pos`` register moves them), consecutive ones merged into one
    program (:meth:`SegmentProgram.merged`) while it fits ``prog_depth``,
    their constants agree (:func:`const_plan` places a resident model's
    constants once, so all of them do) and no host step lies between them.
    Returns ``[(host_attn, program)]``: ``host_attn`` the layer whose RoPE
    and attention the host runs before the program (attention off chip),
    else None. On the built-in LM and ``top-llm`` a decode step is one
    program."""
    acc = _accelerator(accel)
    last = params.cfg.layers - 1
    out = []
    for li in range(last + 1):
        segs = compile_layer(params, li, acc, rows, 0, load_x=li == 0, final=li == last,
                             trace=trace, image=image, plan=plan)
        for si, seg in enumerate(segs):
            host_attn = li if si == 1 else None
            if out and host_attn is None and _mergeable(out[-1][1], seg):
                out[-1] = (out[-1][0], out[-1][1].merged(seg))
            else:
                out.append((host_attn, seg))
    return out


def _mergeable(a, b):
    """Whether :meth:`SegmentProgram.merged` of ``a`` and ``b`` fits the
    program memory and writes no constant set two ways."""
    sets = dict(a.consts)
    return (len(a.descriptors) + len(b.descriptors) - 1 <= a._accel.prog_depth
            and all(sets.get(s, e) == e for s, e in b.consts)
            and not {n for n, _ in a.loads} & {n for n, _ in b.loads})
