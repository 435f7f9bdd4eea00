# amaranth: UnusedElaboratable=no
# (an Accelerator built from a parameter dict is a host-side helper here)
"""The compiler: integer encoder blocks -> an accelerator program.

:func:`compile_block` (one block) and :func:`compile_stack` (blocks in a
row, the residual stream staying on chip) turn golden
:class:`~trilut.golden.encoder.BlockParams` (from
:func:`trilut.host.quantize.quantize_encoder`) into a :class:`Program` for
one build of :class:`~trilut.hw.top.Accelerator`: the descriptors, the
constant sets, the ``s_axis`` frames (the LOAD rows), the ``s_axis_wgt``
frames (one per LINEAR, in program order) and the ``m_axis`` frames that
come back. Everything is checked before anything is sent
(:mod:`trilut.host.fit`): shapes against the build's ``max_rows`` /
``max_width`` / ``banks`` / ``prog_depth`` / ``const_sets`` and engine
blocks, weight kinds, GELU mode, multiplier widths, accumulator widths;
errors name the tensor (``blocks.0.fc1``).

Program of one block (sequence T, hidden C, FFN F, H heads of d = C / H;
``A``/``B`` the two int8 banks, ``R0``/``R1``/``R2`` regions of T rows of
the int16 bank (rows 0.., T.., 2T..), ``K``/``V`` the KV region; each
LINEAR on the TLMM engine (ternary weights) or the int8 engine (int8
weights); ``[STORE t]`` only with ``trace=True``). Pre-LN, static int8
activations (8-bit probabilities; 16-bit ones go to R1)::

    LOAD x -> R0                         (int16 rows from s_axis)
    NORM   R0 -> A         ln1           [STORE ln1]
    LINEAR A -> K          k (REQUANT)   \
    LINEAR A -> V          v (REQUANT)    } weights from s_axis_wgt, once per pass
    LINEAR A -> B          q (REQUANT)   /   [STORE q, k, v]
    ATTN_QK B -> A         probs (H heads, REQUANT_SOFTMAX)  [STORE probs]
    ATTN_AV A -> B         attn  (H heads, REQUANT)          [STORE attn]
    LINEAR B -> R0         o (RESIDUAL: res1, in place)      [STORE res1]
    NORM   R0 -> A         ln2                               [STORE ln2]
    LINEAR A -> B          fc1 (REQUANT_GELU: gelu)          [STORE gelu]
    LINEAR B -> R0         fc2 (RESIDUAL: res2, in place)
    STORE  R0              res2 (always; "out" of a stack)
    END

Per-token mode (``act_quant`` "token"): the tensors that feed a LINEAR are
int16 in the int16 bank, and a LINEAR reading the int16 bank row-quantizes
them on chip (DynQuant). Pre-LN: ln1, attn and ln2 in R1, the 16-bit
probabilities and gelu in R2. Post-LN (BERT; the LayerNorm outputs carry
gamma's sign, ``neg`` bits)::

    LOAD x -> R0;  LINEAR R0 -> K, V, B  k, v, q;  ATTN_QK B -> R1  probs
    ATTN_AV R1 -> R2  attn;  LINEAR R2 -> R0  o (RESIDUAL: res1)
    NORM R0 -> R1  ln1;  LINEAR R1 -> R2  fc1 (REQUANT_GELU: gelu)
    LINEAR R2 -> R1  fc2 (RESIDUAL: res2, on ln1);  NORM R1 -> R0  ln2
    STORE R0  ln2;  END

A block's input and output are R0, so blocks chain on chip.

A classifier (``compile_stack(..., embed=, head=)``) adds an int8 LINEAR
in front and the head behind (:mod:`trilut.host.classifier_compiler`).

Constant sets: one per pass with constants, except that a pass whose
entries are read as REQUANT_CONST (LINEAR REQUANT, NORM) and whose entry 0
equals, in those fields, the single entry of an attention pass's set (the
attention passes read entry 0 only) shares that set: entry 0 stays the
attention pass's, entries 1.. are the other pass's (the classifier's spare
channels are made for this: :mod:`trilut.host.classifier_compiler`).
On a decoder build (:mod:`trilut.host.llm_compiler`), a LINEAR whose
entries are all equal (BitNet: per-tensor scales) is ``uniform``
(:data:`~trilut.hw.isa.LLM_FIELDS`): its one entry goes into a set shared
by all such passes of the program, at the index its ``heads`` field names.

Stored tensors come back in the golden trace's layout: ``probs`` as
(H, T, T) (on chip it is T rows of H * T: head h in columns h*T ..), the
others as (T, width).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..golden.encoder import EncoderParams
from ..golden.quant import INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN, M_BITS_DEFAULT
from ..hw.isa import (FIELD_LIMITS, KEY_BANK, RESIDUAL_BANK, VALUE_BANK, EngineKind,
                      Epilogue, Head, Opcode, llm_fields, pack_descriptor, pack_gelu_const,
                      pack_requant_const, pack_residual_const, pack_softmax_const)
from .classifier_compiler import check_classifier, compile_embed, compile_head
from .fit import BANK_A, BANK_B, CompileError, check_block

__all__ = ["Output", "Program", "CompileError", "compile_block", "compile_stack",
           "CONST_SETS_PER_BLOCK"]

CONST_SETS_PER_BLOCK = 10

@dataclass(frozen=True)
class Output:
    """One STORE: ``rows`` frames of ``length`` elements (int16 if ``wide``).
    ``heads`` > 0: an attention-probability tensor stored as T rows of
    heads * T, decoded to (heads, T, T). ``columns`` > 0: only the first
    ``columns`` elements of a row are decoded (the rest is lane padding)."""
    name: str
    rows: int
    length: int
    wide: bool = False
    heads: int = 0
    columns: int = 0


class Program:
    """A compiled program for one Accelerator build.

    Attributes: ``accel_params`` (the Accelerator parameters it was compiled
    for), ``descriptors`` (128-bit ints, END last), ``consts`` (list of
    ``(set index, [128-bit entries])``), ``outputs`` (:class:`Output` per
    STORE, in order), ``passes`` (a short name per descriptor, for cycle
    reports). Methods: :meth:`input_frames` (``s_axis``), :meth:`weight_frames`
    (``s_axis_wgt``) and :meth:`decode`.
    """

    def __init__(self, accel, descriptors, consts, outputs, weights, seq, hidden, passes, *,
                 in_width=None, in_wide=True):
        self._accel = accel
        self.accel_params = accel.params
        self.descriptors = list(descriptors)
        self.consts = list(consts)
        self.outputs = list(outputs)
        self.passes = list(passes)
        self._weights = list(weights)
        self._weight_frames = None       # (name, weights (K, N), kind) in LINEAR order
        self.seq, self.hidden = seq, hidden
        self.in_width = hidden if in_width is None else in_width
        self.in_wide = in_wide

    def input_frames(self, x):
        """``s_axis`` frames: the rows of ``x`` for the LOAD: int16 (T, C),
        or for a classifier the int8 feature rows (T, K). ``x`` is checked
        first."""
        x = np.asarray(x)
        what, lo, hi = ("int16", INT16_MIN, INT16_MAX) if self.in_wide else \
            ("int8", INT8_MIN, INT8_MAX)
        if x.dtype.kind not in "iu":
            raise CompileError(f"x: expected an integer array, got dtype {x.dtype}")
        if x.shape != (self.seq, self.in_width):
            raise CompileError(f"x: expected shape ({self.seq}, {self.in_width}), got "
                               f"{x.shape}")
        if x.size and (x.min() < lo or x.max() > hi):
            raise CompileError(f"x: values must fit {what}")
        return self._accel.row_frames(x, wide=self.in_wide)

    def weight_frames(self):
        """``s_axis_wgt`` frames: one per LINEAR pass, in program order (the
        engine's beats of one row; the weight store replays them for every
        activation row). Independent of the input."""
        if self._weight_frames is None:        # packed once: the same for every input
            acc = self._accel
            self._weight_frames = [f for _, w, kind in self._weights
                                   for f in acc.weight_frames(w, kind)]
        return list(self._weight_frames)

    @property
    def output_frames(self):
        """Number of ``m_axis`` frames the program produces."""
        return sum(o.rows for o in self.outputs)

    def decode(self, frames):
        """``m_axis`` frames (bytes, in order) -> dict name -> int64 array."""
        frames = list(frames)
        if len(frames) != self.output_frames:
            raise CompileError(f"expected {self.output_frames} frames, got {len(frames)}")
        out, i = {}, 0
        for o in self.outputs:
            rows = self._accel.frames_to_rows(frames[i:i + o.rows], o.length, o.wide)
            i += o.rows
            if o.heads:
                t = o.rows
                rows = rows.reshape(t, o.heads, o.length // o.heads).transpose(1, 0, 2)
            out[o.name] = rows[:, :o.columns] if o.columns else rows
        return out


def _accelerator(accel):
    from ..hw.top import Accelerator
    if isinstance(accel, Accelerator):
        return accel
    if isinstance(accel, Mapping):
        return Accelerator(**accel)
    raise TypeError(f"accel must be an Accelerator or its parameter dict, not "
                    f"{type(accel).__name__}")


def _vec(value, n):
    return [int(v) for v in np.broadcast_to(np.asarray(value, dtype=np.int64), (n,))]


def _bias(lin, n):
    return _vec(0 if lin.bias is None else lin.bias, n)


#: The fields of a constant entry a REQUANT reader (LINEAR REQUANT, NORM) uses.
_REQUANT_FIELDS = pack_requant_const((1 << M_BITS_DEFAULT) - 1, 63, -1, 1)


def _pack_const_sets(sets):
    """Physical constant sets for the logical ``sets`` ``(entries, kind)``,
    kind "attn" (the reader uses entry 0 only), "requant" (entries read as
    REQUANT_CONST), "uniform" (one entry, read for every output channel by a
    decoder build's ``uniform`` LINEAR) or "other": returns ``(consts,
    index)``, ``consts`` the ``(set, entries)`` to write and ``index[i]``
    logical set i's ``(physical set, entry)``, entry None unless the set is
    "uniform". A "requant" set whose entry 0 equals an unused "attn" set's
    entry in the REQUANT fields shares it (the module docstring, "Constant
    sets"); every "uniform" entry goes into one shared set, after the
    others, equal entries at one index."""
    hosts = {i: e[0] & _REQUANT_FIELDS for i, (e, kind) in enumerate(sets) if kind == "attn"}
    share = {}                       # logical set -> the attention set it shares
    for i, (entries, kind) in enumerate(sets):
        if kind == "requant" and len(entries) > 1:
            h = next((h for h, v in hosts.items() if v == entries[0]), None)
            if h is not None:
                share[i] = h
                del hosts[h]
    guest = {h: i for i, h in share.items()}
    consts, index, uniform = [], {}, {}
    for i, (entries, kind) in enumerate(sets):
        if kind == "uniform":
            (e,) = entries
            index[i] = uniform.setdefault(e, len(uniform))      # the entry, for now
            continue
        if i in share:
            continue
        if i in guest:               # entry 0 the attention pass's, the rest the guest's
            entries = entries[:1] + sets[guest[i]][0][1:]
        index[i] = (len(consts), None)
        consts.append((len(consts), list(entries)))
    index.update({i: index[h] for i, h in share.items()})
    if uniform:
        shared = len(consts)
        consts.append((shared, list(uniform)))
        index.update({i: (shared, index[i]) for i, (_, kind) in enumerate(sets)
                      if kind == "uniform"})
    return consts, index


def _uniform_entries_max(acc):
    """How many entries a decoder build's shared set of ``uniform`` entries
    can hold: a set's ``max_width`` entries, and what the descriptor's
    ``heads`` field (which names a uniform LINEAR's entry) can index."""
    return min(acc.max_width, FIELD_LIMITS["heads"] + 1)


class _Builder:
    """Descriptors, constant sets, outputs and weights of one program.
    ``uniform``: a decoder build (``Accelerator(llm=True)``): a LINEAR whose
    constant entries are all equal gets the ``uniform`` bit and its one
    entry in the program's shared set (:func:`_pack_const_sets`)."""

    def __init__(self, acc, seq, trace, *, uniform=False):
        self.acc, self.seq, self.trace, self.uniform = acc, seq, trace, uniform
        self.descs, self.passes, self.sets, self.outputs, self.weights = [], [], [], [], []

    def emit(self, name, opcode, **fields):
        self.descs.append((opcode, fields))
        self.passes.append(name)

    def const_set(self, entries, kind="other"):
        self.sets.append((list(entries), kind))
        return len(self.sets) - 1

    def finish(self):
        """(descriptors, consts): the constant sets packed
        (:func:`_pack_const_sets`), the descriptors pointing at them."""
        consts, index = _pack_const_sets(self.sets)
        shared = {s for s, entry in index.values() if entry is not None}
        most = _uniform_entries_max(self.acc)
        for s in shared:                # the uniform entries' set (at most one)
            if len(consts[s][1]) > most:
                raise CompileError(f"constants: {len(consts[s][1])} distinct uniform entries "
                                   f"exceed {most} (max_width, and the heads field that "
                                   f"names a uniform LINEAR's entry)")
        descs = []
        for op, f in self.descs:
            if "const" in f:
                s, entry = index[f["const"]]
                f = dict(f, const=s)
                if entry is not None:       # heads: the entry (LINEAR has no heads)
                    f.update(heads=entry, reserved=f.get("reserved", 0) |
                             llm_fields(uniform=1))
            descs.append(pack_descriptor(op, **f))
        return descs, consts

    def store(self, name, place, length, *, heads=0, always=False, columns=0):
        bank, row = place
        if self.trace or always:
            self.emit(f"store_{name}", Opcode.STORE, src_bank=bank, src_row=row, rows=self.seq,
                      k=length)
            self.outputs.append(Output(name, self.seq, length, bank == RESIDUAL_BANK, heads,
                                       columns))

    def linear(self, name, lin, src, dst, epilogue, entries, prefix, n=None):
        """LINEAR ``lin``; ``n`` > out_features pads it with zero weight
        columns (``entries`` must cover all ``n``)."""
        n = lin.out_features if n is None else n
        kind = "requant" if epilogue == Epilogue.REQUANT else "other"
        if self.uniform and len(set(entries)) == 1:     # one per tensor: one entry
            kind, entries = "uniform", entries[:1]
        s = self.const_set(entries, kind)
        engine = EngineKind.INT8 if lin.kind == "int8" else EngineKind.TLMM
        self.emit(name, Opcode.LINEAR, engine=engine, epilogue=epilogue, src_bank=src[0],
                  src_row=src[1], dst_bank=dst[0], dst_row=dst[1], rows=self.seq,
                  k=lin.in_features, n=n, const=s)
        w = np.zeros((lin.in_features, n), dtype=np.int64)
        w[:, :lin.out_features] = lin.weights
        self.weights.append((prefix + name, w, lin.kind))

    def requant_linear(self, name, lin, src, dst, prefix, n=None):
        """LINEAR with the REQUANT epilogue (per-channel (m, e, bias));
        padding columns get (0, 1, 0)."""
        c = lin.out_features
        n = c if n is None else n
        entries = [pack_requant_const(m, e, bias) for m, e, bias in
                   zip(_vec(lin.requant.m, c), _vec(lin.requant.e, c), _bias(lin, c))]
        self.linear(name, lin, src, dst, Epilogue.REQUANT,
                    entries + [pack_requant_const(0, 1, 0)] * (n - c), prefix, n)

    def norm(self, name, norm, c, src, dst, head=Head.LAYERNORM):
        neg = _vec(np.asarray(norm.sign) < 0, c) if norm.signed_out else [0] * c
        s = self.const_set([pack_requant_const(m, e, bias, ng) for m, e, bias, ng in
                            zip(_vec(norm.requant.m, c), _vec(norm.requant.e, c),
                                _vec(norm.bias, c), neg)], "requant")
        self.emit(name, Opcode.NORM, head=head, epilogue=Epilogue.REQUANT,
                  src_bank=src[0], src_row=src[1], dst_bank=dst[0], dst_row=dst[1],
                  rows=self.seq, k=c, n=c, const=s)

    def block(self, b, prefix):
        """One block; its input and output are rows 0 .. seq-1 of the int16
        bank. Places (bank, first row) of the other tensors: int8 tensors
        in banks A and B (q in B; K and V in the KV region), int16 ones
        (per-token mode, 16-bit probabilities) in regions R1, R2 of the
        int16 bank (rows seq.., 2 seq..), reused once a tensor is dead."""
        c, f, h, d, t = b.hidden, b.ffn, b.heads, b.head_dim, self.seq
        A, B = (BANK_A, 0), (BANK_B, 0)
        R0, R1, R2 = ((RESIDUAL_BANK, i * t) for i in range(3))
        token, post = b.act_quant == "token", b.norm == "post"
        probs = (R1 if post or not token else R2) if b.probs_bits == 16 else A
        if post:            # token mode: x, res1 in R0; ln1, res2 in R1; ln2 -> R0
            ln1, attn, gelu, ffn_res = R1, R2, R2, R1
        elif token:
            ln1, attn, gelu, ffn_res = R1, R1, R2, R0
        else:
            ln1, attn, gelu, ffn_res = A, B, B, R0
        ln2 = R0 if post else ln1
        if not post:
            self.norm("ln1", b.ln1, c, R0, ln1)
            self.store(prefix + "ln1", ln1, c)
        qkv_src = R0 if post else ln1
        for name, dst in (("k", (KEY_BANK, 0)), ("v", (VALUE_BANK, 0)), ("q", B)):
            self.requant_linear(name, getattr(b, name), qkv_src, dst, prefix)
        for name, place in (("q", B), ("k", (KEY_BANK, 0)), ("v", (VALUE_BANK, 0))):
            self.store(prefix + name, place, c)
        s = self.const_set([pack_softmax_const(b.logits.m, b.logits.e, b.softmax_x0)], "attn")
        self.emit("qk", Opcode.ATTN_QK, engine=EngineKind.INT8,
                  epilogue=Epilogue.REQUANT_SOFTMAX, src_bank=B[0], dst_bank=probs[0],
                  dst_row=probs[1], rows=t, k=d, n=t, heads=h, const=s)
        self.store(prefix + "probs", probs, h * t, heads=h)
        s = self.const_set([pack_requant_const(b.attn.m, b.attn.e, 0)], "attn")
        self.emit("av", Opcode.ATTN_AV, engine=EngineKind.INT8, epilogue=Epilogue.REQUANT,
                  src_bank=probs[0], src_row=probs[1], dst_bank=attn[0], dst_row=attn[1],
                  rows=t, k=t, n=d, heads=h, const=s)
        self.store(prefix + "attn", attn, c)
        self.residual("o", b.o, b.res1_x, attn, R0, c, prefix)
        self.store(prefix + "res1", R0, c)
        if post:
            self.norm("ln1", b.ln1, c, R0, ln1)
            self.store(prefix + "ln1", ln1, c)
        else:
            self.norm("ln2", b.ln2, c, R0, ln2)
            self.store(prefix + "ln2", ln2, c)
        fc1, g = b.fc1, b.gelu_out
        self.linear("fc1", fc1, ln1 if post else ln2, gelu, Epilogue.REQUANT_GELU,
                    [pack_gelu_const(m, e, bias, g.m, g.e, b.gelu_x0) for m, e, bias in
                     zip(_vec(fc1.requant.m, f), _vec(fc1.requant.e, f), _bias(fc1, f))],
                    prefix)
        self.store(prefix + "gelu", gelu, f)
        self.residual("fc2", b.fc2, b.res2_x, gelu, ffn_res, c, prefix)
        if post:
            self.store(prefix + "res2", ffn_res, c)
            self.norm("ln2", b.ln2, c, ffn_res, R0)

    def residual(self, name, lin, res_x, src, dst, c, prefix):
        entries = [pack_residual_const(mx, ex, my, ey, bias) for mx, ex, my, ey, bias in
                   zip(_vec(lin.requant.m, c), _vec(lin.requant.e, c), _vec(res_x.m, c),
                       _vec(res_x.e, c), _bias(lin, c))]
        self.linear(name, lin, src, dst, Epilogue.RESIDUAL, entries, prefix)


def compile_stack(blocks, accel, seq, *, trace=False, embed=None, head=None):
    """Compile ``blocks`` (EncoderParams, or a sequence of BlockParams) for
    sequence length ``seq`` on ``accel`` (an Accelerator or its parameter
    dict). ``trace``: also STORE every on-chip tensor of the golden trace
    (names ``blocks.{i}.{name}``: ln1, q, k, v, probs, attn, res1, ln2,
    gelu); the final residual is always stored as ``out``.

    A classifier (:mod:`trilut.golden.classifier`): ``embed``
    (EmbedParams) makes the input the int8 feature rows (seq, K) and runs
    the embedding on chip (traced as ``x``); ``head`` (HeadParams) runs the
    head on chip (traced ``head_ln``) and stores ``logits`` (seq, N) instead
    of ``out``."""
    acc = _accelerator(accel)
    if isinstance(blocks, EncoderParams):
        blocks = blocks.blocks
    blocks = list(blocks)
    if not blocks:
        raise CompileError("blocks: nothing to compile")
    for i, b in enumerate(blocks):
        check_block(f"blocks.{i}", b, acc, seq)
        if b.hidden != blocks[0].hidden:
            raise CompileError(f"blocks.{i}: hidden {b.hidden} differs from blocks.0")
    p = acc.params
    c = blocks[0].hidden
    check_classifier(embed, head, acc, c)
    bld = _Builder(acc, seq, trace)
    if embed is None:
        bld.emit("load_x", Opcode.LOAD, dst_bank=RESIDUAL_BANK, rows=seq, k=c)
    else:
        compile_embed(bld, embed, c)
    for i, b in enumerate(blocks):
        bld.block(b, f"blocks.{i}.")
    if head is None:
        bld.store("out", (RESIDUAL_BANK, 0), c, always=True)
    else:
        compile_head(bld, head, c)
    bld.emit("end", Opcode.END)
    if len(bld.descs) > p["prog_depth"]:
        raise CompileError(f"program: {len(bld.descs)} descriptors exceed prog_depth = "
                           f"{p['prog_depth']}")
    descs, consts = bld.finish()
    if len(consts) > p["const_sets"]:
        raise CompileError(f"constants: the program needs {len(consts)} constant sets "
                           f"({len(blocks)} block(s) of {CONST_SETS_PER_BLOCK}"
                           f"{', the embedding and the head' if embed or head else ''}; "
                           f"shared: {len(bld.sets) - len(consts)}), the build has "
                           f"const_sets = {p['const_sets']}")
    return Program(acc, descs, consts, bld.outputs, bld.weights, seq, c, bld.passes,
                   in_width=c if embed is None else embed.in_features,
                   in_wide=embed is None)


def compile_block(block_params, accel, seq=None, *, trace=False):
    """One block (:func:`compile_stack` with one block); ``seq`` defaults to
    the build's max_rows. Output names drop the ``blocks.0.`` prefix and the
    block output is ``res2``, as in golden ``encoder_block(trace=True)``."""
    acc = _accelerator(accel)
    if seq is None:
        seq = acc.max_rows
    prog = compile_stack([block_params], acc, seq, trace=trace)
    last = "ln2" if block_params.norm == "post" else "res2"
    prog.outputs = [Output(last if o.name == "out" else o.name.removeprefix("blocks.0."),
                           o.rows, o.length, o.wide, o.heads, o.columns)
                    for o in prog.outputs]
    return prog
