"""Integer-only ternary LLM decoder (BitNet b1.58 / Llama layout, SPEC 7) and its float reference.

Built from the golden rules that already exist: per-token quantization
(:func:`~.dynquant.row_quantize`), ternary/int8 linear layers
(:class:`~.encoder.LinearParams`, TLMM for ternary), dyadic requantization
and residual adds (:mod:`.quant`), Shiftmax and the accurate ShiftGELU
sigmoid (:mod:`.nonlinear`). New here: the integer RMSNorm, RoPE on int16
cos/sin tables, causal attention over an integer KV cache with grouped-query
heads, the gated MLP (SiLU or ReLU^2) and the int8 LM head. docs/llm.md
explains every choice and gives the measured fidelity.

Dataflow of layer i (rows are tokens; "@ s" is the float scale; the
``float_weight_names`` of each step in brackets)::

    x        int16 @ s_x          residual stream (token embedding: an int16 table)
    attn_norm int16               int_rmsnorm(x) -> per-channel requantizer (gamma), sign applied
    *_q8, *_amax                  row_quantize: int8 rows + each row's absmax (BitNet per-token)
    q, k     int16 @ s_q, s_k     ternary linears [q, k], acc * absmax requantized
    v        int8  @ s_v          ternary linear [v]
    q_rope   int8  @ s_qr         RoPE (rotate_half, cos/sin int16 at 2^-14) then requantized
    k_rope   int8  @ s_kr         "static": one scale per layer; "token": int16 -> row_quantize
                                  per (token, kv head): int8 + absmax (k_amax), cached with k
    qk_acc   int                  q_rope . k_rope (query head h reads kv head h // (H / H_kv));
                                  "token": times each column's k_amax
    logits   int16 @ 1/k_l        requantize (1/sqrt(d) folded in); x0 = -k_l exact;
                                  int8 with cfg.logit_bits = 8
    probs    0..2^(pb-1)-1        shiftmax over the visible row 0 .. kv_pos + i (causal)
    attn     int16 @ s_a          probs @ v, requantized, heads concatenated
    [attn_sub]                    optional sub-norm (BitNet), same RMSNorm unit
    o_acc    int48                ternary linear [o] on the row-quantized attn, acc * absmax
    res1     int16 @ s_r1         residual_add(x, o_acc)
    mlp_norm int16                RMSNorm, row_quantize
    gate, up int16 @ s_g, s_u     ternary linears [gate, up]
    act_prod int32                "silu": gate * sigmoid(gate) via shiftgelu "accurate" (slope 1,
                                  16-bit sigmoid); "relu2": max(gate, 0)^2 (exact)
    act      int16 @ s_act        requantize
    h        int16 @ s_h          requantize(act * up) (int16 x int16 < 2^31)
    [ffn_sub]                     optional sub-norm
    down_acc int48                ternary linear [down] on row-quantized h
    res2     int16 @ s_r2         residual_add(res1, down_acc)

After the last layer: ``norm`` (RMSNorm, int16), row_quantize, the int8 LM
head (per-output-channel weights) and a per-channel requantizer to one
logit scale: ``logits`` int32 in +-(2^23 - 1) at ``params.logit_scale``, so
argmax over the integers is argmax over the dequantized values.

Integer RMSNorm (SPEC 4.4 without the mean): ``std = max(isqrt(sum x^2), 1)``,
``z = (x * ((2^31 - 1) // std)) >> 1``; |z| <= 2^30 at scale sqrt(C) / 2^30
(no epsilon; an all-zero row gives 0). gamma is a per-channel dyadic
multiplier with the sign applied after the requantizer (``signed_out``).

RoPE (``rotate_half``: element j pairs with j + d/2)::

    r_j       = q_j cos - q_{j+d/2} sin       (int16 x int16, |r| < 2^30)
    r_{j+d/2} = q_{j+d/2} cos + q_j sin

Attention is computed on the visible part of each row only: a masked
position never enters Shiftmax (its IEXP floor is not 0). Prefill of P
tokens and decode steps run the same code (a row of the score matrix
depends only on its query token and the cache), so prefill then decode
equals prefill of the whole sequence, integer for integer.

Float weight names (in, out) layout, the one place the convention is
defined (:func:`float_weight_shapes`): ``embed`` (V, C), ``layers.{i}.``
``attn_norm`` (C,), ``q`` (C, H d), ``k``/``v`` (C, H_kv d), ``attn_sub_norm``
(H d,), ``o`` (H d, C), ``mlp_norm`` (C,), ``gate``/``up`` (C, F),
``ffn_sub_norm`` (F,), ``down`` (F, C); ``norm`` (C,), ``head`` (C, V).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from collections.abc import Mapping

import numpy as np

from .checks import check_int
from .dynquant import row_quantize
from .encoder import (Dyadic, LinearParams, NormParams, _exact_matmul, _narrow, _norm,
                      _round_int, _scale_for_x0, _softmax, int8_matmul)
from .nonlinear import GELU_SLOPE, INT32_MAX, isqrt, shiftgelu, shiftmax
from .quant import INT8_MAX, INT16_MAX, M_BITS_DEFAULT, _round_half_up, requantize, residual_add

__all__ = [
    "ACTS", "ATTN_SCALES", "ROPE_FRAC", "LOGIT_BITS", "SOFTMAX_N", "EMULATE_STEPS",
    "LlamaConfig", "LayerParams", "LlamaParams", "KVCache", "float_weight_shapes",
    "int_rmsnorm", "rope_tables", "rope_requant", "gate_product", "kv_head_of", "attend", "prefill",
    "decode_step", "float_forward",
]

ACTS = ("silu", "relu2")
ATTN_SCALES = ("static", "token")   # k: one scale per layer, or per token + column rescale
ROPE_FRAC = 14                      # cos/sin are int16 at scale 2^-14
LOGIT_BITS = 24                     # integer logits lie in +-(2^23 - 1)
SOFTMAX_N = 15
WIDE = 16                           # int16 tensors in front of the row quantizer
EMULATE_STEPS = ("act_quant", "qkv", "rope", "softmax", "act", "norm", "residual")
_LIN = ("q", "k", "v", "o", "gate", "up", "down")
_NEEDS_SCALES = frozenset({"qkv", "softmax", "act", "residual"})


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a decoder. ``act``: "silu" or "relu2"; ``sub_norm``:
    BitNet's RMSNorm before o and down; ``probs_bits``: Shiftmax output (8/16);
    ``logit_bits``: Shiftmax input (8/16, attention logits at 1/k_l);
    ``attn_scale``: see ATTN_SCALES; ``max_pos``: longest sequence (KV rows)."""
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    head_dim: int = None
    act: str = "silu"
    sub_norm: bool = False
    rope_theta: float = 10000.0
    max_pos: int = 512
    rms_eps: float = 1e-6
    probs_bits: int = 16
    logit_bits: int = 16
    attn_scale: str = "static"
    m_bits: int = M_BITS_DEFAULT

    def __post_init__(self):
        for n in ("vocab", "hidden", "layers", "heads", "kv_heads", "ffn", "max_pos"):
            check_int(f"cfg.{n}", getattr(self, n), 1)
        if self.head_dim is None:
            if self.hidden % self.heads:
                raise ValueError(f"cfg.heads={self.heads} does not divide hidden={self.hidden}")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        check_int("cfg.head_dim", self.head_dim, 2)
        if self.head_dim % 2:
            raise ValueError(f"cfg.head_dim={self.head_dim} must be even (RoPE pairs j, j+d/2)")
        if self.heads % self.kv_heads:
            raise ValueError(f"cfg.kv_heads={self.kv_heads} must divide heads={self.heads}")
        for name, choices in (("act", ACTS), ("attn_scale", ATTN_SCALES),
                              ("probs_bits", (8, 16)), ("logit_bits", (8, 16))):
            if getattr(self, name) not in choices:
                raise ValueError(f"cfg.{name} must be one of {choices}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("rope_theta", "rms_eps"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
                raise ValueError(f"cfg.{name} must be finite and >= 0, got {v!r}")
        check_int("cfg.m_bits", self.m_bits, 1, 52)

    @property
    def group(self):
        """Query heads per kv head: head h reads kv head h // group."""
        return self.heads // self.kv_heads

    @classmethod
    def coerce(cls, cfg):
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, Mapping):
            unknown = set(cfg) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"cfg: unknown keys {sorted(unknown)}")
            return cls(**cfg)
        raise TypeError(f"cfg must be a LlamaConfig or a mapping, got {type(cfg).__name__}")


def float_weight_shapes(cfg):
    """Name -> shape of every float weight (the naming convention, module docstring)."""
    cfg = LlamaConfig.coerce(cfg)
    c, f, v, qd, kd = cfg.hidden, cfg.ffn, cfg.vocab, cfg.heads * cfg.head_dim, \
        cfg.kv_heads * cfg.head_dim
    shapes = {"embed": (v, c), "norm": (c,), "head": (c, v)}
    for i in range(cfg.layers):
        p = f"layers.{i}."
        shapes.update({p + "attn_norm": (c,), p + "q": (c, qd), p + "k": (c, kd),
                       p + "v": (c, kd), p + "o": (qd, c), p + "mlp_norm": (c,),
                       p + "gate": (c, f), p + "up": (c, f), p + "down": (f, c)})
        if cfg.sub_norm:
            shapes.update({p + "attn_sub_norm": (qd,), p + "ffn_sub_norm": (f,)})
    return shapes


def rope_tables(head_dim, theta, max_pos):
    """int16 (max_pos, d/2) cos and sin of pos * theta^(-2j/d), float64 rounded half up at 2^-14."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(max_pos, dtype=np.float64)[:, None] * inv
    return tuple(_round_half_up(f(ang) * 2.0**ROPE_FRAC).astype(np.int16) for f in (np.cos, np.sin))


def kv_head_of(cfg):
    """Grouped-query attention: query head h reads kv head h // (H / H_kv) (int array (H,))."""
    return np.arange(cfg.heads) // cfg.group


def int_rmsnorm(x):
    """Integer RMSNorm over the last axis: z = (x * ((2^31-1) // max(isqrt(sum x^2), 1))) >> 1.

    int64 z, |z| <= 2^30, at scale sqrt(C) / 2^30 before gamma (module docstring).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"int_rmsnorm needs integers, got dtype {x.dtype}")
    x = x.astype(np.int64)
    if x.size and x.shape[-1] * int(np.abs(x).max()) ** 2 >= 2**63:
        raise ValueError("int_rmsnorm: sum(x^2) could exceed 63 bits")
    std = np.maximum(isqrt((x * x).sum(axis=-1, keepdims=True)), 1)
    return (x * (INT32_MAX // std)) >> 1


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True, eq=False)
class LayerParams:
    """Integer constants of one decoder layer (module docstring dataflow).

    Norms: NormParams with out_bits 16, signed_out, bias 0. Linears:
    row-scaled LinearParams whose ``requant`` goes to the next tensor's scale
    (q, k, gate, up: int16; v: int8; o, down: the residual scale).
    Dyadics: ``q_rope``/``k_rope`` (RoPE output), ``logits``, ``attn``,
    ``res1_x``/``res2_x`` (residual input to the new residual scale),
    ``act_out`` (act_prod -> act), ``hid`` (act * up -> h). ``softmax_x0`` = -k_l,
    ``act_x0`` (SiLU IEXP constant, None for relu2). ``scales``: float scales
    of the traced tensors (documentation, :meth:`LlamaParams.trace_scales`).
    """
    attn_norm: NormParams
    q: LinearParams
    k: LinearParams
    v: LinearParams
    q_rope: Dyadic
    k_rope: Dyadic
    logits: Dyadic
    softmax_x0: int
    attn: Dyadic
    attn_sub_norm: object
    o: LinearParams
    res1_x: Dyadic
    mlp_norm: NormParams
    gate: LinearParams
    up: LinearParams
    act_x0: object
    act_out: Dyadic
    hid: Dyadic
    ffn_sub_norm: object
    down: LinearParams
    res2_x: Dyadic
    scales: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class LlamaParams:
    """Every integer constant of a decoder: config, int16 embedding table at
    ``in_scale``, layers, final norm, int8 head (per-channel requantizer to
    ``logit_scale``), RoPE tables."""
    cfg: LlamaConfig
    embed: np.ndarray
    in_scale: float
    layers: tuple
    norm: NormParams
    head: LinearParams
    logit_scale: float
    rope_cos: np.ndarray
    rope_sin: np.ndarray

    def __post_init__(self):
        cfg = self.cfg
        if not isinstance(cfg, LlamaConfig):
            raise TypeError(f"cfg must be a LlamaConfig, got {type(cfg).__name__}")
        e = np.asarray(self.embed)
        if e.dtype != np.int16 or e.shape != (cfg.vocab, cfg.hidden):
            raise ValueError(f"embed: expected int16 ({cfg.vocab}, {cfg.hidden}), "
                             f"got {e.dtype} {e.shape}")
        if len(self.layers) != cfg.layers:
            raise ValueError(f"layers: expected {cfg.layers}, got {len(self.layers)}")
        shapes = float_weight_shapes(cfg)
        for i, lp in enumerate(self.layers):
            if not isinstance(lp, LayerParams):
                raise TypeError(f"layers[{i}] must be LayerParams, got {type(lp).__name__}")
            for n in _LIN:
                lin = getattr(lp, n)
                lin.check(shapes[f"layers.{i}.{n}"], cfg.m_bits)
                if not lin.row_scaled:
                    raise ValueError(f"layers.{i}.{n}: must be row_scaled (per-token input)")
            if (lp.attn_sub_norm is None) == cfg.sub_norm:
                raise ValueError(f"layers.{i}: sub-norms must be given iff cfg.sub_norm")
            if (lp.act_x0 is None) != (cfg.act == "relu2"):
                raise ValueError(f"layers.{i}.act_x0: needed for silu only")
        self.head.check(shapes["head"], cfg.m_bits)
        tab = (cfg.max_pos, cfg.head_dim // 2)
        for n in ("rope_cos", "rope_sin"):
            a = np.asarray(getattr(self, n))
            if a.dtype != np.int16 or a.shape != tab:
                raise ValueError(f"{n}: expected int16 {tab}, got {a.dtype} {a.shape}")

    def trace_scales(self):
        """Float scale of each scalar-scaled traced tensor ("layers.{i}.name" keys)."""
        out = {"x": self.in_scale, "logits": self.logit_scale}
        for i, lp in enumerate(self.layers):
            out.update({f"layers.{i}.{k}": v for k, v in lp.scales.items()})
        return out

    def dequantize_logits(self, logits):
        return np.asarray(logits, dtype=np.float64) * self.logit_scale


class KVCache:
    """Integer KV cache of a decoder: ``k``/``v`` int8 (layers, kv_heads, capacity, d),
    K after RoPE; ``k_amax`` (layers, kv_heads, capacity) the per-token k absmax
    (attn_scale "token"); ``kv_pos`` = tokens held. ``capacity`` defaults to cfg.max_pos."""

    def __init__(self, params, capacity=None):
        cfg = params.cfg
        cap = cfg.max_pos if capacity is None else check_int("capacity", capacity, 1, cfg.max_pos)
        shape = (cfg.layers, cfg.kv_heads, cap, cfg.head_dim)
        self.cfg, self.capacity, self.kv_pos = cfg, cap, 0
        self.k, self.v = np.zeros(shape, np.int8), np.zeros(shape, np.int8)
        self.k_amax = np.zeros(shape[:3], np.int64)


# --------------------------------------------------------------------------- integer model

def _rope(x, cos, sin):
    """rotate_half RoPE on int64 (P, heads, d) with (P, d/2) int64 cos/sin."""
    h = x.shape[-1] // 2
    x1, x2, c, s = x[..., :h], x[..., h:], cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def _linear(lin, src, t):
    """Row-quantize trace tensor ``src`` (int16) and run LinearParams ``lin`` on it."""
    q, amax = row_quantize(t[src], in_bits=WIDE)
    t[src + "_q8"], t[src + "_amax"] = q, amax
    return lin.accumulate(q, amax)


def _requant(name, acc, d, t, mb, bits=WIDE):
    """Trace tensor ``name`` = requantize(acc) by Dyadic d to a signed ``bits`` (16 or 8) int."""
    lim = (1 << (bits - 1)) - 1
    t[name] = _narrow(name, requantize(acc, d.m, d.e, lo=-lim - 1, hi=lim, m_bits=mb),
                      np.int16 if bits == 16 else np.int8)
    return t[name]


def _sub_norm(norm, src, name, t, mb):
    if norm is None:
        return src
    t[name + "_z"] = _narrow(name + "_z", int_rmsnorm(t[src]), np.int32)
    _norm(name, t[name + "_z"], norm, mb, t)
    return name


def rope_requant(x, cos, sin, d, bits, m_bits=M_BITS_DEFAULT, name="rope", t=None):
    """RoPE then the dyadic requantizer (q_rope, k_rope: ``bits`` 8; k_rope16: 16).

    ``x`` int (P, heads, head_dim), ``cos``/``sin`` int16 rows (P, head_dim / 2)
    of the tokens' positions, Dyadic ``d``; returns (P, heads, head_dim) int8
    or int16, traced as ``name`` in ``t``.
    """
    r = _rope(np.asarray(x, dtype=np.int64), np.asarray(cos, dtype=np.int64),
              np.asarray(sin, dtype=np.int64))
    return _requant(name, r, d, {} if t is None else t, m_bits, bits=bits)


def _attention(p, lp, li, cache, pos0, t):
    cfg, mb = p.cfg, p.cfg.m_bits
    n_new, d, hk = t["q"].shape[0], cfg.head_dim, cfg.kv_heads
    end = pos0 + n_new
    cos, sin = p.rope_cos[pos0:end], p.rope_sin[pos0:end]
    q, k = t["q"].reshape(n_new, cfg.heads, d), t["k"].reshape(n_new, hk, d)
    rope_requant(q, cos, sin, lp.q_rope, 8, mb, "q_rope", t)
    if cfg.attn_scale == "static":
        rope_requant(k, cos, sin, lp.k_rope, 8, mb, "k_rope", t)
        kamax = np.ones((n_new, hk), np.int64)
    else:
        k16 = rope_requant(k, cos, sin, lp.k_rope, WIDE, mb, "k_rope16", t)
        t["k_rope"], kamax = row_quantize(k16, in_bits=WIDE)
        kamax = kamax[..., 0]
    return attend(p, lp, li, cache, pos0, t, kamax)


def attend(p, lp, li, cache, pos0, t, k_amax=None):
    """The attention after RoPE: trace tensors ``q_rope`` (int8, P x heads x
    head_dim), ``k_rope`` (int8, P x kv_heads x head_dim) and ``v`` of P
    tokens at positions ``pos0 ..`` into the cache (``k_amax``: (P,
    kv_heads), attn_scale "token"; None: 1), then causal GQA attention and
    the o projection's accumulator. Used by the decoder whose RoPE ran
    elsewhere (the accelerator's REQUANT_ROPE)."""
    cfg, mb = p.cfg, p.cfg.m_bits
    n_new, d, hk = t["q_rope"].shape[0], cfg.head_dim, cfg.kv_heads
    end = pos0 + n_new
    kq = np.asarray(t["k_rope"]).reshape(n_new, hk, d)
    kamax = np.ones((n_new, hk), np.int64) if k_amax is None else k_amax
    cache.k[li, :, pos0:end] = np.swapaxes(kq, 0, 1)
    cache.k_amax[li, :, pos0:end] = kamax.T
    cache.v[li, :, pos0:end] = np.swapaxes(t["v"].reshape(n_new, hk, d), 0, 1)
    kv = kv_head_of(cfg)
    keys, vals = cache.k[li, kv, :end], cache.v[li, kv, :end]  # (H, end, d)
    qh = np.swapaxes(np.asarray(t["q_rope"]).reshape(n_new, cfg.heads, d), 0, 1)  # (H, P, d)
    acc = int8_matmul(qh, np.swapaxes(keys, -1, -2), name="qk_acc")
    if cfg.attn_scale == "token":
        acc = acc * cache.k_amax[li, kv, :end][:, None, :]
    visible = np.arange(end)[None, :] <= pos0 + np.arange(n_new)[:, None]   # (P, end)
    t["qk_acc"] = _narrow("qk_acc", np.where(visible, acc, 0),
                          np.int32 if cfg.attn_scale == "static" else np.int64)
    lim = (1 << (cfg.logit_bits - 1)) - 1
    t["logits"] = _narrow("logits", np.where(visible, requantize(
        acc, lp.logits.m, lp.logits.e, lo=-lim - 1, hi=lim, m_bits=mb), 0),
        np.int8 if cfg.logit_bits == 8 else np.int16)
    pb, x0 = cfg.probs_bits, _scale_for_x0(lp.softmax_x0)
    probs = np.zeros(acc.shape, np.int64)
    for i in range(n_new):
        row = pos0 + i + 1
        probs[:, i, :row] = shiftmax(t["logits"][:, i, :row], x0, n=SOFTMAX_N, out_bits=pb)
    t["probs"] = _narrow("probs", probs, np.int16)
    t["av_acc"] = _narrow("av_acc", _exact_matmul(probs, vals.astype(np.int64)), np.int32)
    av = np.swapaxes(t["av_acc"], 0, 1).reshape(n_new, cfg.heads * d)
    _requant("attn", av, lp.attn, t, mb)
    return _linear(lp.o, _sub_norm(lp.attn_sub_norm, "attn", "attn_sub", t, mb), t)


def gate_product(act, gate, up, act_x0, act_out, hid, m_bits=M_BITS_DEFAULT, t=None):
    """The gated MLP's elementwise part (module docstring): int16 ``gate`` and
    ``up`` -> int16 ``h``; trace tensors act_prod, act, h_prod, h go into ``t``.

    ``act`` "silu": act_prod = shiftgelu(gate) "accurate" with the constant
    ``act_x0``; "relu2": max(gate, 0)^2. ``act_out``/``hid``: Dyadics of
    act_prod -> act and act * up -> h.
    """
    t = {} if t is None else t
    if act == "silu":
        prod = shiftgelu(gate, _scale_for_x0(act_x0, GELU_SLOPE), mode="accurate")
    elif act == "relu2":
        prod = np.maximum(np.asarray(gate, dtype=np.int64), 0) ** 2
    else:
        raise ValueError(f"act must be one of {ACTS}, got {act!r}")
    t["act_prod"] = _narrow("act_prod", prod, np.int32)
    a = _requant("act", prod, act_out, t, m_bits)
    t["h_prod"] = _narrow("h_prod", a.astype(np.int64) * up, np.int32)
    return _requant("h", t["h_prod"], hid, t, m_bits)


def _mlp(p, lp, t):
    cfg, mb = p.cfg, p.cfg.m_bits
    t["gate_acc"] = _linear(lp.gate, "mlp_norm", t)
    t["up_acc"] = lp.up.accumulate(t["mlp_norm_q8"], t["mlp_norm_amax"])
    gate = _requant("gate", t["gate_acc"], lp.gate.requant, t, mb)
    up = _requant("up", t["up_acc"], lp.up.requant, t, mb)
    gate_product(cfg.act, gate, up, lp.act_x0, lp.act_out, lp.hid, mb, t)
    return _linear(lp.down, _sub_norm(lp.ffn_sub_norm, "h", "ffn_sub", t, mb), t)


def _check_ids(ids, cfg, cache):
    a = np.asarray(ids)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ids: expected integer token ids, got dtype {a.dtype}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"ids: expected a non-empty 1-D sequence, got shape {a.shape}")
    if a.min() < 0 or a.max() >= cfg.vocab:
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise ValueError(f"ids: token id {bad} outside the vocabulary [0, {cfg.vocab})")
    if not isinstance(cache, KVCache) or cache.cfg != cfg:
        raise TypeError("cache: expected a KVCache made for these params")
    if cache.kv_pos + a.size > cache.capacity:
        raise ValueError(f"ids: {a.size} tokens at kv_pos {cache.kv_pos} exceed the KV cache "
                         f"capacity of {cache.capacity} positions")
    return a.astype(np.int64)


def prefill(params, ids, cache, trace=False):
    """Run tokens ``ids`` (1-D) at positions cache.kv_pos.. and append their K/V.

    Returns int32 logits (P, vocab) at params.logit_scale (row i: after token
    i); with ``trace=True`` a dict of every intermediate ("x", "layers.{i}.*",
    "norm", "logits", ...). cache.kv_pos advances by P.
    """
    if not isinstance(params, LlamaParams):
        raise TypeError(f"params must be LlamaParams, got {type(params).__name__}")
    cfg, mb = params.cfg, params.cfg.m_bits
    ids = _check_ids(ids, cfg, cache)
    pos0, out = cache.kv_pos, {}
    x = params.embed[ids]
    out["x"] = x
    for li, lp in enumerate(params.layers):
        t = {"x": x}
        t["attn_norm_z"] = _narrow("attn_norm_z", int_rmsnorm(x), np.int32)
        _norm("attn_norm", t["attn_norm_z"], lp.attn_norm, mb, t)
        for n in ("q", "k", "v"):
            lin = getattr(lp, n)
            acc = (_linear(lin, "attn_norm", t) if n == "q" else
                   lin.accumulate(t["attn_norm_q8"], t["attn_norm_amax"]))
            t[n + "_acc"] = acc
            _requant(n, acc, lin.requant, t, mb, bits=8 if n == "v" else WIDE)
        t["o_acc"] = _attention(params, lp, li, cache, pos0, t)
        t["res1"] = _narrow("res1", residual_add(x, lp.res1_x.m, lp.res1_x.e, t["o_acc"],
                                                 lp.o.requant.m, lp.o.requant.e, m_bits=mb),
                            np.int16)
        t["mlp_norm_z"] = _narrow("mlp_norm_z", int_rmsnorm(t["res1"]), np.int32)
        _norm("mlp_norm", t["mlp_norm_z"], lp.mlp_norm, mb, t)
        t["down_acc"] = _mlp(params, lp, t)
        x = _narrow("res2", residual_add(t["res1"], lp.res2_x.m, lp.res2_x.e, t["down_acc"],
                                         lp.down.requant.m, lp.down.requant.e, m_bits=mb),
                    np.int16)
        t["res2"] = x
        out.update({f"layers.{li}.{k}": v for k, v in t.items() if k != "x"})
    cache.kv_pos += ids.size
    out["norm_z"] = _narrow("norm_z", int_rmsnorm(x), np.int32)
    _norm("norm", out["norm_z"], params.norm, mb, out)
    out["head_acc"] = _linear(params.head, "norm", out)
    lim = (1 << (LOGIT_BITS - 1)) - 1
    out["logits"] = _narrow("logits", requantize(out["head_acc"], params.head.requant.m,
                                                 params.head.requant.e, lo=-lim, hi=lim,
                                                 m_bits=mb), np.int32)
    return out if trace else out["logits"]


def decode_step(params, token, cache, trace=False):
    """One decode step: the logits (vocab,) after ``token`` at position cache.kv_pos."""
    check_int("token", token)
    r = prefill(params, np.array([token], np.int64), cache, trace)
    return r if trace else r[0]


# --------------------------------------------------------------------------- float reference

def _fq(x, scale, bits):
    """Fake quantization (round half up, clamp) at ``scale`` to a signed ``bits`` integer."""
    lim = (1 << (bits - 1)) - 1
    return np.clip(_round_half_up(x / scale), -lim - 1, lim) * scale


def _fq_rows(x):
    """Per-token absmax int8 fake quantization (BitNet's activation quantizer)."""
    a = np.abs(x).max(axis=-1, keepdims=True)
    s = np.where(a > 0, a / INT8_MAX, 1.0)
    return np.clip(_round_half_up(x / s), -INT8_MAX, INT8_MAX) * s


def _rope_hf(x, cos, sin):
    """Hugging Face's form, kept separate from the integer _rope: x cos + rotate_half(x) sin."""
    h = x.shape[-1] // 2
    c, s = np.concatenate([cos, cos], -1)[:, None], np.concatenate([sin, sin], -1)[:, None]
    return x * c + np.concatenate([-x[..., h:], x[..., :h]], -1) * s


def _rmsnorm_f(x, gamma, eps, emulate):
    if emulate:
        s = np.abs(x).max(axis=-1, keepdims=True) / INT16_MAX
        xi = _round_int(x / np.where(s > 0, s, 1.0))
        return int_rmsnorm(xi) * math.sqrt(x.shape[-1]) / 2**30 * gamma
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * gamma


def float_forward(weights, cfg, ids, trace=False, emulate=(), params=None):
    """Float reference: causal decoder on ids (T,) with float activations; logits (T, vocab).

    ``weights``: float weights by :func:`float_weight_shapes` name (pass the
    dequantized ternary/int8 weights to isolate the activation numerics).
    ``emulate`` (subset of EMULATE_STEPS; qkv, softmax, act and residual need
    ``params`` for the scales):
    steps of the integer model reproduced inside the float model, for the
    ablation ("float everything except this step"): act_quant (per-token int8
    in front of every linear), qkv (q/k after RoPE and v at their integer
    scales), rope (int16 cos/sin), softmax (int8 logits + Shiftmax), act
    (integer SiLU), norm (integer RMSNorm), residual (int16 residual stream).
    With ``trace=True`` returns a dict of float tensors named like prefill's.
    """
    cfg = LlamaConfig.coerce(cfg)
    em = frozenset(emulate)
    if em - set(EMULATE_STEPS):
        raise ValueError(f"emulate: unknown steps {sorted(em - set(EMULATE_STEPS))}")
    if em & _NEEDS_SCALES and params is None:
        raise ValueError(f"emulate needs params (the integer model's scales) for "
                         f"{sorted(em & _NEEDS_SCALES)}")
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    n, d, hq, hk = ids.size, cfg.head_dim, cfg.heads, cfg.kv_heads
    lin = (lambda x, name: _fq_rows(x) @ w[name]) if "act_quant" in em else \
        (lambda x, name: x @ w[name])                                    # noqa: E731
    res = (lambda x, s: _fq(x, s, WIDE)) if "residual" in em else (lambda x, s: x)  # noqa: E731
    norm = lambda x, name: _rmsnorm_f(x, w[name], cfg.rms_eps, "norm" in em)   # noqa: E731
    if "rope" in em:
        cos, sin = (a[:n].astype(np.float64) / 2**ROPE_FRAC for a in rope_tables(
            d, cfg.rope_theta, n))
    else:
        ang = np.arange(n)[:, None] * cfg.rope_theta ** (-np.arange(0, d, 2) / d)
        cos, sin = np.cos(ang), np.sin(ang)
    x = res(w["embed"][ids], params.in_scale if params else None)
    t = {"x": x}
    for i in range(cfg.layers):
        p, sc = f"layers.{i}.", (params.layers[i].scales if params else {})
        lt = {"attn_norm": norm(x, p + "attn_norm")}
        for nm in ("q", "k", "v"):
            lt[nm] = lin(lt["attn_norm"], p + nm)
        q = _rope_hf(lt["q"].reshape(n, hq, d), cos, sin)
        k = _rope_hf(lt["k"].reshape(n, hk, d), cos, sin)
        v = lt["v"].reshape(n, hk, d)
        if "qkv" in em:
            q, v = _fq(q, sc["q_rope"], 8), _fq(v, sc["v"], 8)
            k = _fq(k, sc["k_rope"], 8) if cfg.attn_scale == "static" else _fq_rows(k)
        lt["q_rope"], lt["k_rope"] = q.reshape(n, -1), k.reshape(n, -1)
        kv = np.arange(hq) // cfg.group
        s = np.swapaxes(q, 0, 1) @ np.swapaxes(k[:, kv], 0, 1).swapaxes(-1, -2) / math.sqrt(d)
        mask = np.tril(np.ones((n, n), bool))
        lt["logits"] = np.where(mask, s, 0.0)
        if "softmax" in em:
            lim = (1 << (cfg.logit_bits - 1)) - 1
            li = np.clip(_round_int(s * -params.layers[i].softmax_x0), -lim - 1, lim)
            pr = np.zeros_like(s)
            for r in range(n):
                pr[:, r, :r + 1] = shiftmax(li[:, r, :r + 1], _scale_for_x0(
                    params.layers[i].softmax_x0), n=SOFTMAX_N, out_bits=cfg.probs_bits)
            pr = pr / 2.0 ** (cfg.probs_bits - 1)
        else:
            pr = _softmax(np.where(mask, s, -np.inf))
        lt["attn"] = np.swapaxes(pr @ np.swapaxes(v[:, kv], 0, 1), 0, 1).reshape(n, -1)
        a = norm(lt["attn"], p + "attn_sub_norm") if cfg.sub_norm else lt["attn"]
        lt["attn_sub"] = a
        lt["res1"] = res(x + lin(a, p + "o"), sc.get("res1"))
        lt["mlp_norm"] = norm(lt["res1"], p + "mlp_norm")
        g, u = lin(lt["mlp_norm"], p + "gate"), lin(lt["mlp_norm"], p + "up")
        lt["gate"], lt["up"] = g, u
        if cfg.act == "relu2":
            lt["act"] = np.maximum(g, 0) ** 2
        elif "act" in em:
            gi = np.clip(_round_int(g / sc["gate"]), -INT16_MAX - 1, INT16_MAX)
            lt["act"] = shiftgelu(gi, _scale_for_x0(params.layers[i].act_x0, GELU_SLOPE),
                                  mode="accurate") * sc["gate"] / 2.0**15
        else:
            lt["act"] = g / (1.0 + np.exp(-g))
        lt["h"] = lt["act"] * u
        h = norm(lt["h"], p + "ffn_sub_norm") if cfg.sub_norm else lt["h"]
        lt["ffn_sub"] = h
        x = lt["res2"] = res(lt["res1"] + lin(h, p + "down"), sc.get("res2"))
        t.update({p + k: v for k, v in lt.items()})
    t["norm"] = norm(x, "norm")
    t["logits"] = lin(t["norm"], "head")
    return t if trace else t["logits"]
