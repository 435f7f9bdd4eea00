"""Does a model fit an Accelerator build? The checks the compilers
(:mod:`trilut.host.compiler`, :mod:`trilut.host.classifier_compiler`) run
before anything is sent: shapes against the build's ``max_rows`` /
``max_width`` / ``banks``, engine lanes, weight kinds, GELU mode, multiplier
and accumulator widths. Every problem is a message naming the tensor
(``blocks.0.fc1``); :func:`refuse` raises them all at once as one
:class:`CompileError`."""
from __future__ import annotations

import numpy as np

from ..golden.encoder import BlockParams
from ..golden.quant import M_BITS_DEFAULT

__all__ = ["CompileError", "refuse", "linear_problems", "check_block", "BANK_A", "BANK_B"]

BANK_A, BANK_B = 0, 1            # the two int8 banks a block uses


class CompileError(ValueError):
    """A model that does not fit this build (the message names the tensor)."""


def refuse(what, problems):
    """Raise one CompileError listing ``problems`` (messages) of ``what``
    (``blocks.0``, ``the classifier``); nothing if there are none."""
    if problems:
        raise CompileError(f"{what} does not fit this build "
                           f"({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
                           + "\n  ".join(problems))


def token_rows(b):
    """Regions of ``seq`` rows of the int16 bank a block uses: 1 (the
    residual stream), plus the int16 tensors of per-token mode and 16-bit
    probabilities (see :meth:`trilut.host.compiler._Builder.block`)."""
    if b.act_quant == "token":
        return 3
    return 2 if b.probs_bits == 16 else 1


def linear_problems(name, lp, acc, n=None):
    """What keeps LINEAR ``lp`` (N = ``n``, default its out_features) off
    this build: a list of messages naming ``name``."""
    e, i8 = acc.engine, acc.int8_engine
    k, n = lp.in_features, lp.out_features if n is None else n
    problems = []
    if lp.kind == "ternary":
        if n % e.lanes:
            problems.append(f"{name}: N = {n} must be a multiple of the TLMM lanes = "
                            f"{e.lanes}")
        if (k * 128).bit_length() + 1 > e.acc_bits:
            problems.append(f"{name}: K = {k} overflows the TLMM accumulator "
                            f"({e.acc_bits} bits)")
    elif n % i8.lanes:
        problems.append(f"{name}: N = {n} must be a multiple of attn_lanes = {i8.lanes} "
                        f"(int8 weights run on the int8 engine)")
    beats = acc.weight_beats(k, n, lp.kind)
    if beats > acc.wstore_depth:
        problems.append(f"{name}: {lp.kind} weights ({k} x {n}) are {beats} weight-store "
                        f"beats; a buffer holds wstore_depth = {acc.wstore_depth}")
    if lp.bias is not None:
        bias = np.asarray(lp.bias, dtype=np.int64)
        if bias.size and (bias.min() < -(1 << 31) or bias.max() >= 1 << 31):
            problems.append(f"{name}.bias: {int(np.abs(bias).max())} does not fit the "
                            f"constant entry's 32-bit bias")
    return problems


def check_block(name, b, acc, seq):
    """Everything the build must hold for block ``b`` at sequence ``seq``:
    one CompileError listing every problem (each naming the tensor)."""
    p = acc.params
    c, f, h, d = b.hidden, b.ffn, b.heads, b.head_dim
    i8 = acc.int8_engine
    if not isinstance(b, BlockParams):
        raise TypeError(f"{name}: expected BlockParams, got {type(b).__name__}")
    problems = []
    regions = token_rows(b)
    if not 1 <= seq * regions <= p["max_rows"]:
        need = f" ({regions} regions of seq rows in the int16 bank)" if regions > 1 else ""
        problems.append(f"{name}.x: sequence length {seq}{need} needs {seq * regions} rows; "
                        f"max_rows = {p['max_rows']}")
    if seq > b.max_seq:
        problems.append(f"{name}.x: sequence length {seq} exceeds the constants' max_seq "
                        f"= {b.max_seq}")
    for what, width in (("hidden", c), ("ffn", f), (f"probs row (heads x seq = {h} x {seq})",
                                                     h * seq)):
        if width > p["max_width"]:
            problems.append(f"{name}: {what} = {width} exceeds max_width = "
                            f"{p['max_width']} (the row width of every bank)")
    if d % i8.k_per_cycle or d % i8.lanes:
        problems.append(f"{name}: head dim {d} must be a multiple of attn_kpc = "
                        f"{i8.k_per_cycle} and attn_lanes = {i8.lanes}")
    if p["banks"] <= max(BANK_A, BANK_B):
        problems.append(f"{name}: a block needs 2 int8 banks, the build has {p['banks']}")
    if b.gelu_mode != p["gelu_mode"]:
        problems.append(f"{name}.fc1: gelu_mode {b.gelu_mode!r}; this build's ShiftGELU "
                        f"runs mode {p['gelu_mode']!r} (Accelerator gelu_mode)")
    if b.probs_bits != p["probs_bits"]:
        problems.append(f"{name}.probs: probs_bits {b.probs_bits}; this build's Shiftmax "
                        f"gives {p['probs_bits']}-bit probabilities (Accelerator probs_bits)")
    if b.m_bits != M_BITS_DEFAULT:
        problems.append(f"{name}: m_bits = {b.m_bits}; the constant entries hold "
                        f"{M_BITS_DEFAULT}-bit multipliers")
    for lin in ("q", "k", "v", "o", "fc1", "fc2"):
        problems += linear_problems(f"{name}.{lin}", getattr(b, lin), acc)
    if (max(d, seq) << 14).bit_length() + 1 > i8.acc_bits:
        problems.append(f"{name}.qk_acc: dot products of {max(d, seq)} int8 pairs "
                        f"overflow the int8 engine's {i8.acc_bits}-bit accumulator")
    refuse(name, problems)
