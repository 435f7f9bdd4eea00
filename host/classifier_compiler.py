"""The classifier's part of a program: the embedding in front of the
encoder blocks and the head behind them (:mod:`trilut.golden.classifier`),
for :func:`trilut.host.compiler.compile_stack` ``(..., embed=, head=)``.

The host sends int8 feature rows and reads int16 logits::

    LOAD f -> A;  LINEAR A -> R0  embed (int8 engine, REQUANT to int16)  [STORE x]
    ... the blocks ...
    NORM R0 -> A  head_ln  [STORE head_ln];  LINEAR A -> R0  head (int8 engine, REQUANT
    to int16; N padded with zero columns to the engine's lanes);  STORE R0  logits;  END

The quantizer makes channel 0 of the embedding, the head NORM and the head
LINEAR spare channels whose constants share an attention pass's constant
set (:func:`trilut.host.quantize.quantize_classifier`; ``compiler``,
"Constant sets"), so the whole digits classifier fits the 20 sets of the
default build.
"""
from __future__ import annotations

from ..golden.classifier import EmbedParams, HeadParams
from ..hw.isa import RESIDUAL_BANK, Opcode
from .fit import BANK_A, linear_problems, refuse

__all__ = ["check_classifier", "head_width", "compile_embed", "compile_head"]

_A, _R0 = (BANK_A, 0), (RESIDUAL_BANK, 0)


def head_width(head, acc):
    """The head LINEAR's N on chip: its columns padded to the int8 engine's lanes."""
    lanes = acc.int8_engine.lanes
    return -(-head.columns // lanes) * lanes


def _part_problems(name, part, side, acc, c, n=None):
    """What keeps the embedding or the head (``part``) off this build next
    to blocks of hidden ``c``: its LINEAR (N = ``n``) within max_width and
    the engine, its ``side`` ("input"/"output") width ``c``."""
    lp, w = part.linear, acc.params["max_width"]
    problems = []
    if max(lp.in_features, lp.out_features) > w:
        problems.append(f"{name}: weights {lp.in_features} x {lp.out_features} exceed "
                        f"max_width = {w}")
    if part.hidden != c:
        problems.append(f"{name}: {side} width {part.hidden} differs from the blocks' "
                        f"hidden {c}")
    return problems + linear_problems(name, lp, acc, n)


def check_classifier(embed, head, acc, c):
    """Everything the build must hold for ``embed`` (EmbedParams or None)
    and ``head`` (HeadParams or None) around blocks of hidden ``c``: one
    CompileError listing every problem (TypeError for a wrong type)."""
    for name, part, cls in (("embed", embed, EmbedParams), ("head", head, HeadParams)):
        if part is not None and not isinstance(part, cls):
            raise TypeError(f"{name}: expected {cls.__name__}, got {type(part).__name__}")
    problems = []
    if embed is not None:
        problems += _part_problems("embed", embed, "output", acc, c)
    if head is not None:
        problems += _part_problems("head", head, "input", acc, c, head_width(head, acc))
    refuse("the classifier", problems)


def compile_embed(bld, embed, c):
    """The program's front (``bld`` a compiler ``_Builder``): LOAD the int8
    feature rows into bank A, the embedding LINEAR into the residual stream
    (traced as ``x``)."""
    bld.emit("load_f", Opcode.LOAD, dst_bank=BANK_A, rows=bld.seq, k=embed.in_features)
    bld.requant_linear("embed", embed.linear, _A, _R0, "")
    bld.store("x", _R0, c)


def compile_head(bld, head, c):
    """The program's back: the head NORM (traced ``head_ln``), the head
    LINEAR padded to the int8 lanes, STORE ``logits`` (only the real columns
    decoded)."""
    bld.norm("head_ln", head.norm, c, _R0, _A)
    bld.store("head_ln", _A, c)
    n = head_width(head, bld.acc)
    bld.requant_linear("head", head.linear, _A, _R0, "", n)
    bld.store("logits", _R0, n, always=True, columns=head.columns)
