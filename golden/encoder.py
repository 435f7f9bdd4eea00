"""Integer-only transformer encoder block (golden), pre-LN or post-LN, and its float reference.

The block is built only from the golden rules of :mod:`.quant`,
:mod:`.tlmm` and :mod:`.nonlinear`; the one rule they lack, an exact int8 x
int8 matmul, is :func:`int8_matmul` here. Every float scale lives offline
(``trilut.host.quantize`` derives the constants); the block itself sees only
integers: weights, int32 biases, dyadic multipliers ``(m, e)`` and the IEXP
constants ``x0``.

Dataflow of one block (x: ``(..., T, C)``, rows on the last axis; "acc"
tensors are int32 with the int32 bias already added)::

    x        int16  s_x                     residual stream in
    ln1_z    int32  sqrt(C)/2^30            int_layernorm(x), |z| <= 2^30
    ln1      int8   sign1 * s_ln1           requantize(ln1_z, m_c, e_c, bias_c)  (gamma/beta folded)
    q/k/v_acc int32 s_ln1 * s_w             ternary: tlmm_matmul; int8: int8_matmul; + bias
    q, k, v  int8   s_q, s_k, s_v           requantize (per channel for int8 weights)
    qk_acc   int32  s_q s_k / sqrt(d)       per head, int8_matmul(q_h, k_h^T): (..., H, T, T)
    logits   int8   s_l = 1 / k_l           requantize; 1/s_l integer so x0 = -k_l exactly
    probs    int8   2^-7                    shiftmax(n=15, out_bits=8): 0..127
    av_acc   int32  2^-7 s_v                int8_matmul(probs, v_h): (..., H, T, d)
    attn     int8   s_a                     requantize, heads concatenated: (..., T, C)
    proj_acc int32  s_a * s_wo              o projection + bias (NOT requantized)
    res1     int16  s_r1                    residual_add(x, res1_x, proj_acc, o.requant)
    ln2_z, ln2                              as ln1, on res1
    fc1_acc  int32  s_ln2 * s_w1
    fc1      int8 ("ivit") / int16 ("accurate")  s_g   requantize to the GELU input scale
    gelu_prod int32 s_g * 2^-(sig_bits-1)   shiftgelu(fc1; x0 = gelu_x0)
    gelu     int8   s_h                     requantize
    fc2_acc  int32  s_h * s_w2              fc2 + bias (NOT requantized)
    res2     int16  s_r2                    residual_add(res1, res2_x, fc2_acc, fc2.requant)

``sign1``/``sign2``: LayerNorm gammas may be negative but a dyadic multiplier
is unsigned, so channel c of the LayerNorm output is stored as
``sign(gamma_c) * LN(x)_c`` and the sign is folded into row c of the
consuming layers' integer weights (exact: negating a weight row keeps it
ternary / int8-symmetric). :meth:`BlockParams.trace_scales` gives the signed
per-channel scale, so ``trace["ln1"] * trace_scales()["ln1"]`` is the float
LayerNorm output.

Options (EncoderConfig / BlockParams fields; the defaults give the dataflow above):

* ``probs_bits`` 8 or 16: Shiftmax output width. 16 gives probs 0..32767 at
  scale 2^-15; av_acc = probs @ v stays within 2^22 (probabilities sum to at
  most 2^(probs_bits-1)), so the int32 accumulator is safe for any T.
* ``act_quant`` "static" (per-tensor int8 activation scales, above) or
  "token" (SPEC 4.5, :mod:`.dynquant`): every tensor that feeds a linear
  layer (ln1, attn, ln2, gelu; x in post-LN) is produced as int16 at a static
  scale, then ``row_quantize`` gives int8 rows plus each row's absmax (traced
  as ``{src}_q8`` and ``{src}_amax``); the layer's accumulator is multiplied
  by the absmax (``scale_rows``), the bias is added at that scale (up to
  ROW_ACC_BITS = 48 bits signed) and the static dyadic multiplier follows.
  Such layers have ``LinearParams.row_scaled`` and ``in_scale`` = S_src / 127.
* ``norm`` "pre" (above) or "post" (BERT): x -> q/k/v; res1 = x + proj;
  ln1 = LN(res1) (int16, the FFN input and its residual); res2 = ln1 + fc2;
  ln2 = LN(res2) (int16) is the block output. Post-LN needs act_quant
  "token" (x and ln1 are int16, row-quantized in front of the linears).
  Gamma signs cannot be folded into weights there (ln1 is also a residual
  input), so the LayerNorm requantizer's output is negated per channel
  where gamma < 0 (``NormParams.signed_out``; clamp to +-32767).
* ``float_ops`` (argument of encoder_block/encoder_stack, for error
  attribution only, never on the device): "layernorm" replaces int_layernorm's
  z by round(float xhat * 2^30 / sqrt(C)); "softmax" replaces Shiftmax by
  round(softmax * 2^(probs_bits-1)); "gelu" replaces ShiftGELU's product by
  round(GELU(x) / scale of gelu_prod). Everything else stays integer.

Heads: head h owns channels ``h*d .. h*d + d - 1`` of q, k, v and attn
(d = C / H). No attention mask (encoder).

Float scales only enter the integer functions through x0: the golden
``shiftmax``/``shiftgelu`` take a float scale and compute x0 =
floor(-1 / scale) from it, so :func:`_scale_for_x0` passes a scale that
reproduces the stored x0 exactly (checked).

Naming convention of float weights (the one place it is defined):
:func:`float_weight_shapes`. Block i, C = hidden, F = ffn::

    blocks.{i}.ln1.weight (C,)   blocks.{i}.ln1.bias (C,)
    blocks.{i}.{q,k,v,o}.weight (C, C)    .bias (C,)
    blocks.{i}.fc1.weight (C, F)          .bias (F,)
    blocks.{i}.fc2.weight (F, C)          .bias (C,)
    blocks.{i}.ln2.weight (C,)   blocks.{i}.ln2.bias (C,)

Linear weights are (in_features, out_features): y = x @ W + b (the
transpose of ``torch.nn.Linear.weight``). Every ``.bias`` is optional
(missing = zeros). Keys outside ``blocks.*`` are ignored; unknown
``blocks.*`` keys are rejected.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from .nonlinear import GELU_DEFAULTS, GELU_SLOPE, INT32_MAX, X0_BITS, iexp_x0, int_layernorm, \
    shiftgelu, shiftmax
from .quant import E_MAX, INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN, M_BITS_DEFAULT, \
    _round_half_up, requantize, residual_add
from .checks import check_int, check_int_array
from .dynquant import row_quantize, scale_rows
from .tlmm import tlmm_matmul

__all__ = [
    "INT32_MIN", "INT32_MAX", "LINEARS", "NORMS", "WEIGHT_KINDS", "GELU_IN_BITS",
    "SOFTMAX_N", "PROBS_BITS", "INT8_MATMUL_MAX_K", "TRACE_NAMES",
    "NORM_POSITIONS", "ACT_QUANTS", "PROBS_BITS_CHOICES", "ROW_ACC_BITS", "FLOAT_OPS",
    "EncoderConfig", "Dyadic", "NormParams", "LinearParams", "BlockParams", "EncoderParams",
    "int8_matmul", "encoder_block", "encoder_stack",
    "float_weight_shapes", "check_float_weights",
    "float_layernorm", "gelu_erf", "float_encoder_block", "float_encoder_stack",
]

INT32_MIN = -(1 << 31)
LINEARS = ("q", "k", "v", "o", "fc1", "fc2")
NORMS = ("ln1", "ln2")
WEIGHT_KINDS = ("ternary", "int8")
GELU_IN_BITS = {"ivit": 8, "accurate": 16}     # GELU input width per shiftgelu mode
SOFTMAX_N = 15                                 # shiftmax IEXP n (I-ViT)
PROBS_BITS = 8                                 # shiftmax output bits: probs 0..127, scale 2^-7
INT8_MATMUL_MAX_K = INT32_MAX >> 14            # 2^14 * K must fit int32: K <= 131071
NORM_POSITIONS = ("pre", "post")               # LayerNorm before / after (BERT) the sublayer
ACT_QUANTS = ("static", "token")               # per-tensor int8 scales or per-token rows (SPEC 4.5)
PROBS_BITS_CHOICES = (8, 16)                   # shiftmax output widths
ROW_ACC_BITS = 48                              # signed width of acc * absmax + bias (token mode)
WIDE_BITS = 16                                 # row-quantizer input width (int16 tensors)
FLOAT_OPS = ("layernorm", "softmax", "gelu")   # operators encoder_block can return to float

# Every tensor encoder_block(trace=True) returns, in dataflow order.
TRACE_NAMES = (
    "x", "ln1_z", "ln1", "q_acc", "q", "k_acc", "k", "v_acc", "v", "qk_acc", "logits",
    "probs", "av_acc", "attn", "proj_acc", "res1", "ln2_z", "ln2", "fc1_acc", "fc1",
    "gelu_prod", "gelu", "fc2_acc", "res2",
)


# --------------------------------------------------------------------------- helpers

def _narrow(name, a, dtype):
    """Cast an int64 stage result to its device dtype; a range violation is a bug here."""
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise ValueError(f"{name}: value range [{a.min()}, {a.max()}] exceeds {np.dtype(dtype)}")
    return a.astype(dtype)


def _scale_for_x0(x0, slope=1.0):
    """A float scale s with floor(-1 / (slope * s)) == x0 (exactly; checked).

    -1/(slope*s) = x0 + 1/2, the middle of the interval that floors to x0, so
    float rounding cannot move it across an integer.
    """
    s = 1.0 / (slope * (-x0 - 0.5))
    if iexp_x0(slope * s) != x0:   # pragma: no cover - guarded by construction
        raise AssertionError(f"scale for x0={x0} does not reproduce it")
    return s


def int8_matmul(a, b, name="a @ b"):
    """Exact int8 x int8 matmul: ``a @ b`` in int64 (numpy matmul broadcasting).

    a: (..., M, K) or (K,), b: (..., K, N) or (K, N); both integer-typed with
    values in [-128, 127] (probabilities 0..127 qualify). The worst case
    |sum| = 2^14 * K must fit int32, so K <= INT8_MATMUL_MAX_K (131071).
    This is the rule of the DSP int8 engine (hw/int8mm.py, products
    accumulated exactly, no rounding). Returns int64.

    Computed with a float64 matmul (BLAS speed): every partial sum is an
    integer of magnitude <= 2^14 * K < 2^31, exactly representable in
    float64, so each addition is exact in any order and the result equals
    the integer matmul.
    """
    a = check_int_array(f"{name}: left operand", a, INT8_MIN, INT8_MAX)
    b = check_int_array(f"{name}: right operand", b, INT8_MIN, INT8_MAX)
    if a.ndim == 0 or b.ndim < 2:
        raise ValueError(f"{name}: expected a (..., M, K) @ (..., K, N), got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{name}: inner dimensions differ: {a.shape} @ {b.shape}")
    if a.shape[-1] > INT8_MATMUL_MAX_K:
        raise ValueError(f"{name}: K={a.shape[-1]} exceeds {INT8_MATMUL_MAX_K} "
                         f"(2^14 * K must fit int32)")
    return _exact_matmul(a, b)


def _exact_matmul(a, b):
    """Integer a @ b via float64 BLAS: exact while every partial sum stays below 2^53."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


# --------------------------------------------------------------------------- config

def _check_modes(prefix, norm, act_quant, probs_bits):
    if norm not in NORM_POSITIONS:
        raise ValueError(f"{prefix}norm must be one of {NORM_POSITIONS}, got {norm!r}")
    if act_quant not in ACT_QUANTS:
        raise ValueError(f"{prefix}act_quant must be one of {ACT_QUANTS}, got {act_quant!r}")
    if norm == "post" and act_quant != "token":
        raise ValueError(f"{prefix}norm='post' needs {prefix}act_quant='token' (the int16 "
                         f"LayerNorm outputs feed the linear layers through the row quantizer)")
    if probs_bits not in PROBS_BITS_CHOICES:
        raise ValueError(f"{prefix}probs_bits must be one of {PROBS_BITS_CHOICES}, "
                         f"got {probs_bits!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and quantization choices of an encoder stack.

    ``weights``: one kind ("ternary" or "int8") for every linear layer, or a
    sequence with one entry per block, each a kind or a mapping
    ``{layer: kind}`` over LINEARS (missing layers: "ternary").
    ``gelu_mode``: shiftgelu mode ("ivit": int8 GELU input, n = 23, 8-bit
    sigmoid; "accurate": int16 input, n = 16, 16-bit sigmoid), one for all
    blocks or a sequence with one mode per block.
    ``norm`` ("pre"/"post"), ``act_quant`` ("static"/"token") and
    ``probs_bits`` (8/16): see the module docstring.
    ``max_seq``: the longest sequence the constants are valid for: it bounds
    the shiftmax row sum (T * |x0| * 2^15 <= 2^31 - 1, no saturation).
    ``ln_eps``: float LayerNorm epsilon (float reference only; the integer
    LayerNorm has none). ``m_bits``: dyadic multiplier width.
    """
    hidden: int
    heads: int
    ffn: int
    layers: int = 1
    weights: object = "ternary"
    gelu_mode: str = "ivit"
    ln_eps: float = 1e-5
    max_seq: int = 512
    m_bits: int = M_BITS_DEFAULT
    norm: str = "pre"
    act_quant: str = "static"
    probs_bits: int = PROBS_BITS

    def __post_init__(self):
        for name in ("hidden", "heads", "ffn", "layers", "max_seq"):
            check_int(f"cfg.{name}", getattr(self, name), 1)
        check_int("cfg.m_bits", self.m_bits, 1, 52)
        if self.hidden % self.heads:
            raise ValueError(f"cfg.heads={self.heads} does not divide cfg.hidden={self.hidden}")
        _check_modes("cfg.", self.norm, self.act_quant, self.probs_bits)
        g = self.gelu_mode
        if not isinstance(g, str):
            if not isinstance(g, Sequence) or len(g) != self.layers:
                raise ValueError(f"cfg.gelu_mode must be a mode or a sequence of {self.layers} "
                                 f"per-block modes, got {g!r}")
            object.__setattr__(self, "gelu_mode", tuple(g))
        for i in range(self.layers):
            if self.gelu(i) not in GELU_DEFAULTS:
                raise ValueError(f"cfg.gelu_mode must be one of {sorted(GELU_DEFAULTS)}, "
                                 f"got {self.gelu(i)!r} for block {i}")
        if not (isinstance(self.ln_eps, numbers.Real) and math.isfinite(self.ln_eps)
                and self.ln_eps >= 0):
            raise ValueError(f"cfg.ln_eps must be finite and >= 0, got {self.ln_eps!r}")
        w = self.weights
        if not isinstance(w, str):
            if not isinstance(w, Sequence) or len(w) != self.layers:
                raise ValueError(f"cfg.weights must be a kind or a sequence of {self.layers} "
                                 f"per-block entries, got {w!r}")
            object.__setattr__(self, "weights", tuple(w))
            w = self.weights
            for i, entry in enumerate(w):
                if isinstance(entry, Mapping):
                    unknown = set(entry) - set(LINEARS)
                    if unknown:
                        raise ValueError(f"cfg.weights[{i}]: unknown layers {sorted(unknown)}; "
                                         f"layers are {LINEARS}")
        for i in range(self.layers):
            for layer in LINEARS:
                kind = self.kind(i, layer)
                if kind not in WEIGHT_KINDS:
                    raise ValueError(f"cfg.weights: blocks.{i}.{layer} kind must be one of "
                                     f"{WEIGHT_KINDS}, got {kind!r}")

    @property
    def head_dim(self):
        return self.hidden // self.heads

    def gelu(self, block):
        """ShiftGELU mode of block ``block``."""
        g = self.gelu_mode
        return g if isinstance(g, str) else g[block]

    def kind(self, block, layer):
        """Weight kind ("ternary" or "int8") of linear layer ``layer`` of block ``block``."""
        w = self.weights
        if isinstance(w, str):
            return w
        entry = w[block]
        return entry.get(layer, "ternary") if isinstance(entry, Mapping) else entry

    @classmethod
    def coerce(cls, cfg):
        """An EncoderConfig from an EncoderConfig or a mapping of its fields."""
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, Mapping):
            names = {f.name for f in fields(cls)}
            unknown = set(cfg) - names
            if unknown:
                raise ValueError(f"cfg: unknown keys {sorted(unknown)}; known: {sorted(names)}")
            return cls(**cfg)
        raise TypeError(f"cfg must be an EncoderConfig or a mapping, got {type(cfg).__name__}")


# --------------------------------------------------------------------------- float weights

def float_weight_shapes(cfg):
    """Name -> shape of every float weight of the stack (the naming convention)."""
    cfg = EncoderConfig.coerce(cfg)
    c, f = cfg.hidden, cfg.ffn
    dims = {"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c), "fc1": (c, f), "fc2": (f, c)}
    shapes = {}
    for i in range(cfg.layers):
        p = f"blocks.{i}."
        for ln in NORMS:
            shapes[p + ln + ".weight"] = (c,)
            shapes[p + ln + ".bias"] = (c,)
        for layer, (k, n) in dims.items():
            shapes[p + layer + ".weight"] = (k, n)
            shapes[p + layer + ".bias"] = (n,)
    return shapes


def check_float_weights(float_weights, cfg):
    """Validate float weights against the naming convention; return float64 copies.

    Missing ``.bias`` entries become zeros. Raises ``ValueError`` naming the
    tensor for a missing weight, a wrong shape, non-finite values or an
    unknown ``blocks.*`` key; ``TypeError`` if float_weights is not a mapping.
    """
    if not isinstance(float_weights, Mapping):
        raise TypeError(f"float_weights must be a mapping name -> array, got "
                        f"{type(float_weights).__name__}")
    shapes = float_weight_shapes(cfg)
    unknown = sorted(k for k in float_weights if str(k).startswith("blocks.") and k not in shapes)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown weight name (expected names like "
                         f"'blocks.0.q.weight'; see float_weight_shapes)")
    out = {}
    for name, shape in shapes.items():
        if name not in float_weights:
            if name.endswith(".bias"):
                out[name] = np.zeros(shape)
                continue
            raise ValueError(f"{name}: missing (expected shape {shape})")
        arr = np.asarray(float_weights[name])
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise ValueError(f"{name}: expected {shape}, got {arr.shape}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains non-finite values (nan or inf)")
        out[name] = arr
    return out


# --------------------------------------------------------------------------- parameters

def _int_array_param(name, value, ndim_max=1):
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got dtype {a.dtype}")
    if a.ndim > ndim_max:
        raise ValueError(f"{name}: expected at most {ndim_max} axes, got shape {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class Dyadic:
    """A dyadic multiplier m / 2^e (SPEC 2): per tensor (ints) or per channel ((N,) arrays).

    ``ratio`` is the float it approximates (documentation only).
    """
    m: object
    e: object
    ratio: object = None

    def __post_init__(self):
        m = _int_array_param("m", self.m)
        e = _int_array_param("e", self.e)
        if m.shape != e.shape:
            raise ValueError(f"m and e must have the same shape, got {m.shape} and {e.shape}")
        if m.size and int(m.min()) < 0:
            raise ValueError(f"m must be >= 0, got {int(m.min())}")
        if e.size and (int(e.min()) < 1 or int(e.max()) > E_MAX):
            raise ValueError(f"e must be in [1, {E_MAX}], got [{int(e.min())}, {int(e.max())}]")
        if m.ndim == 0:
            object.__setattr__(self, "m", int(m))
            object.__setattr__(self, "e", int(e))
        else:
            object.__setattr__(self, "m", m.astype(np.int64))
            object.__setattr__(self, "e", e.astype(np.int64))

    @property
    def per_channel(self):
        return isinstance(self.m, np.ndarray)

    @property
    def value(self):
        """m / 2^e as float (array when per channel)."""
        return np.ldexp(np.asarray(self.m, dtype=np.float64), -np.asarray(self.e))

    def check(self, name, channels, m_bits):
        if self.per_channel and self.m.shape != (channels,):
            raise ValueError(f"{name}: per-channel (m, e) must have shape ({channels},), "
                             f"got {self.m.shape}")
        if int(np.max(self.m)) >= 1 << m_bits:
            raise ValueError(f"{name}: m = {int(np.max(self.m))} exceeds m_bits={m_bits}")


@dataclass(frozen=True, eq=False)
class NormParams:
    """Integer LayerNorm output stage: gamma/beta folded into a per-channel requantizer.

    ln = requantize(int_layernorm(x), requant.m, requant.e, bias) (int8), which
    stores ``sign_c * (gamma_c * xhat_c + beta_c) / out_scale``. ``sign`` (int8
    +/-1, (C,)) is folded into the weight rows of the consuming layers.
    ``gamma``/``beta``: the float parameters (documentation); ``clamped``: channels
    whose |gamma| was raised so that the int32 bias holds beta/gamma.
    ``out_bits``: 8 (int8 output) or 16 (int16, clamped to +-32767).
    ``signed_out``: the output is multiplied by ``sign`` after the requantizer
    (so it carries gamma's true sign; post-LN) instead of folding the sign
    into the consumers' weights.
    """
    requant: Dyadic
    bias: np.ndarray
    sign: np.ndarray
    out_scale: float
    gamma: object = None
    beta: object = None
    clamped: object = None
    out_bits: int = 8
    signed_out: bool = False

    @property
    def bounds(self):
        """Output clamp (lo, hi): int8, or symmetric int16 (a sign flip cannot overflow)."""
        return (INT8_MIN, INT8_MAX) if self.out_bits == 8 else (-INT16_MAX, INT16_MAX)

    @property
    def scale_sign(self):
        """Per-channel sign of the stored value relative to the float LayerNorm output."""
        return np.ones_like(self.sign) if self.signed_out else self.sign

    def check(self, name, channels, m_bits):
        if not isinstance(self.requant, Dyadic):
            raise TypeError(f"{name}.requant must be a Dyadic, got {type(self.requant).__name__}")
        if not self.requant.per_channel:
            raise ValueError(f"{name}.requant must be per channel (gamma differs per channel)")
        self.requant.check(f"{name}.requant", channels, m_bits)
        bias = _int_array_param(f"{name}.bias", self.bias)
        if bias.shape != (channels,):
            raise ValueError(f"{name}.bias: expected ({channels},), got {bias.shape}")
        check_int_array(f"{name}.bias", bias, INT32_MIN, INT32_MAX)
        sign = _int_array_param(f"{name}.sign", self.sign)
        if sign.shape != (channels,) or not np.isin(sign, (-1, 1)).all():
            raise ValueError(f"{name}.sign: expected ({channels},) values in {{-1, +1}}")
        if self.out_bits not in (8, 16):
            raise ValueError(f"{name}.out_bits must be 8 or 16, got {self.out_bits!r}")


@dataclass(frozen=True, eq=False)
class LinearParams:
    """One linear layer: integer weights, int32 bias and the dyadic multiplier of its acc.

    ``weights``: int8 (in_features, out_features), ternary {-1, 0, 1} for kind
    "ternary" (run by tlmm_matmul) or [-127, 127] for kind "int8" (int8_matmul).
    They include ``in_sign`` (the preceding LayerNorm's gamma signs) folded
    into their rows. ``bias``: int32 (out_features,) at the accumulator scale
    ``in_scale * w_scale``, or None. ``requant``: the dyadic multiplier applied
    to acc + bias: to the int8 output for q/k/v/fc1, to the residual scale
    inside residual_add for o/fc2 (per tensor, or per channel for int8 weights).
    ``w_scale`` (float, or (N,) for int8), ``in_scale``, ``out_scale``: the float
    scales everything was derived from (documentation).
    ``row_scaled``: the input is row-quantized (act_quant "token"): the
    accumulator is multiplied by each input row's absmax before the bias is
    added (bias and acc * absmax up to ROW_ACC_BITS signed); ``in_scale`` is
    then S_src / 127, the scale of an int8 input row whose absmax is 1.
    """
    name: str
    kind: str
    weights: np.ndarray
    bias: object
    requant: Dyadic
    w_scale: object
    in_scale: float
    out_scale: float
    in_sign: object = None
    row_scaled: bool = False

    @property
    def acc_limit(self):
        """Largest |acc + bias| the device holds: int32, or ROW_ACC_BITS when row-scaled."""
        return (1 << (ROW_ACC_BITS - 1)) - 1 if self.row_scaled else INT32_MAX

    @property
    def in_features(self):
        return self.weights.shape[0]

    @property
    def out_features(self):
        return self.weights.shape[1]

    @property
    def acc_scale(self):
        """Float scale of the accumulator: in_scale * w_scale (float or (N,))."""
        return self.in_scale * np.asarray(self.w_scale, dtype=np.float64)

    def dequantized_weight(self):
        """w_int * w_scale with the folded input signs undone: the float weight it represents."""
        w = self.weights.astype(np.float64) * np.asarray(self.w_scale, dtype=np.float64)
        if self.in_sign is not None:
            w = w * np.asarray(self.in_sign, dtype=np.float64)[:, None]
        return w

    def check(self, shape, m_bits):
        name = self.name
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"{name}.kind must be one of {WEIGHT_KINDS}, got {self.kind!r}")
        w = np.asarray(self.weights)
        if w.dtype != np.int8:
            raise TypeError(f"{name}.weights: expected dtype int8, got {w.dtype}")
        if w.shape != shape:
            raise ValueError(f"{name}.weights: expected {shape}, got {w.shape}")
        if self.kind == "ternary" and not np.isin(w, (-1, 0, 1)).all():
            raise ValueError(f"{name}.weights: kind 'ternary' needs values in {{-1, 0, 1}}")
        if self.kind == "int8" and w.size and int(w.min()) < -INT8_MAX:
            raise ValueError(f"{name}.weights: int8 weights must be symmetric ([-127, 127]) so "
                             f"a folded sign cannot overflow, got {int(w.min())}")
        if self.bias is not None:
            b = _int_array_param(f"{name}.bias", self.bias)
            if b.shape != (shape[1],):
                raise ValueError(f"{name}.bias: expected ({shape[1]},), got {b.shape}")
            check_int_array(f"{name}.bias", b, -self.acc_limit - 1, self.acc_limit)
        if not isinstance(self.requant, Dyadic):
            raise TypeError(f"{name}.requant must be a Dyadic, got {type(self.requant).__name__}")
        self.requant.check(f"{name}.requant", shape[1], m_bits)

    def accumulate(self, a, absmax=None):
        """acc + bias for int8 activations a (..., K): int64, checked to fit int32.

        Row-scaled layers need ``absmax`` (..., 1), the input rows' absmax:
        they return acc * absmax + bias, checked against ROW_ACC_BITS.
        """
        if self.row_scaled != (absmax is not None):
            raise ValueError(f"{self.name}: row_scaled={self.row_scaled} but absmax "
                             f"{'missing' if absmax is None else 'given'}")
        if self.kind == "ternary":
            acc = tlmm_matmul(a, self.weights)
        else:
            acc = int8_matmul(a, self.weights, name=self.name)
        if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
            raise ValueError(f"{self.name}: acc leaves int32: [{acc.min()}, {acc.max()}]")
        if absmax is not None:
            acc = scale_rows(acc, absmax)
        if self.bias is not None:
            acc = acc + np.asarray(self.bias, dtype=np.int64)
        lim = self.acc_limit
        if acc.size and (acc.min() < -lim - 1 or acc.max() > lim):
            width = f"{ROW_ACC_BITS} bits" if self.row_scaled else "int32"
            raise ValueError(f"{self.name}: acc + bias leaves {width}: "
                             f"[{acc.min()}, {acc.max()}]")
        return acc


@dataclass(frozen=True, eq=False)
class BlockParams:
    """Every integer constant of one encoder block (see the module docstring).

    Integer constants: ln1, ln2 (NormParams); q, k, v, o, fc1, fc2
    (LinearParams); ``logits`` (qk_acc -> int8 logits), ``attn`` (av_acc -> int8),
    ``res1_x`` (x -> res1 scale), ``res2_x`` (res1 -> res2 scale), ``gelu_out``
    (gelu_prod -> int8) as Dyadic; ``softmax_x0`` (= -1/s_l, exact) and
    ``gelu_x0`` (= floor(-1 / (1.702 s_g))) for IEXP; ``gelu_mode``, ``max_seq``,
    ``m_bits``; ``norm``, ``act_quant``, ``probs_bits`` (module docstring).
    Float scales (documentation, and :meth:`trace_scales`):
    in_scale, logit_scale (1/|softmax_x0|), attn_scale, res1_scale,
    gelu_in_scale, gelu_out_scale, out_scale (the block output: res2 in
    pre-LN, ln2 in post-LN), res2_scale (post-LN only: the sum before ln2).
    """
    heads: int
    ln1: NormParams
    q: LinearParams
    k: LinearParams
    v: LinearParams
    logits: Dyadic
    softmax_x0: int
    attn: Dyadic
    o: LinearParams
    res1_x: Dyadic
    ln2: NormParams
    fc1: LinearParams
    gelu_mode: str
    gelu_x0: int
    gelu_out: Dyadic
    fc2: LinearParams
    res2_x: Dyadic
    in_scale: float
    attn_scale: float
    res1_scale: float
    gelu_in_scale: float
    gelu_out_scale: float
    out_scale: float
    max_seq: int = 512
    m_bits: int = M_BITS_DEFAULT
    norm: str = "pre"
    act_quant: str = "static"
    probs_bits: int = PROBS_BITS
    res2_scale: object = None

    def __post_init__(self):
        _check_modes("", self.norm, self.act_quant, self.probs_bits)
        c, f = self.hidden, self.ffn
        m_bits = check_int("m_bits", self.m_bits, 1, 52)
        heads = check_int("heads", self.heads, 1)
        if c % heads:
            raise ValueError(f"heads={heads} does not divide hidden={c}")
        check_int("max_seq", self.max_seq, 1)
        for name, shape in (("q", (c, c)), ("k", (c, c)), ("v", (c, c)), ("o", (c, c)),
                            ("fc1", (c, f)), ("fc2", (f, c))):
            lin = getattr(self, name)
            if not isinstance(lin, LinearParams):
                raise TypeError(f"{name} must be LinearParams, got {type(lin).__name__}")
            lin.check(shape, m_bits)
        for name in NORMS:
            norm = getattr(self, name)
            if not isinstance(norm, NormParams):
                raise TypeError(f"{name} must be NormParams, got {type(norm).__name__}")
            norm.check(name, c, m_bits)
        for name in ("logits", "attn", "res1_x", "res2_x", "gelu_out"):
            d = getattr(self, name)
            if not isinstance(d, Dyadic):
                raise TypeError(f"{name} must be a Dyadic, got {type(d).__name__}")
            if d.per_channel:
                raise ValueError(f"{name}: expected a per-tensor (m, e)")
            d.check(name, 1, m_bits)
        token = self.act_quant == "token"
        for name in LINEARS:
            if getattr(self, name).row_scaled != token:
                raise ValueError(f"{name}.row_scaled must be {token} with "
                                 f"act_quant={self.act_quant!r}")
        post = self.norm == "post"
        for name in NORMS:
            norm = getattr(self, name)
            if norm.signed_out != post or (norm.out_bits == 16) != (post or token):
                raise ValueError(f"{name}: expected signed_out={post}, out_bits="
                                 f"{16 if post or token else 8} for norm={self.norm!r}, "
                                 f"act_quant={self.act_quant!r}")
        if post and self.res2_scale is None:
            raise ValueError("res2_scale is required for norm='post'")
        folds = () if post else (("ln1", ("q", "k", "v")), ("ln2", ("fc1",)))
        for norm, users in folds:
            sign = np.asarray(getattr(self, norm).sign)
            for u in users:
                in_sign = getattr(self, u).in_sign
                in_sign = np.ones(c, np.int8) if in_sign is None else np.asarray(in_sign)
                if not np.array_equal(in_sign, sign):
                    raise ValueError(f"{u}.in_sign must equal {norm}.sign (the gamma signs "
                                     f"folded into {u}'s weight rows)")
        if post:
            for u in LINEARS:
                if getattr(self, u).in_sign is not None:
                    raise ValueError(f"{u}.in_sign must be None for norm='post' (the "
                                     f"LayerNorm outputs carry gamma's sign)")
        if self.gelu_mode not in GELU_DEFAULTS:
            raise ValueError(f"gelu_mode must be one of {sorted(GELU_DEFAULTS)}, "
                             f"got {self.gelu_mode!r}")
        lo = -(1 << (X0_BITS - 1))
        k = -check_int("softmax_x0", self.softmax_x0, lo, -1)
        if self.max_seq * (k << SOFTMAX_N) > INT32_MAX:
            raise ValueError(f"softmax_x0={self.softmax_x0}: a row of max_seq={self.max_seq} "
                             f"could saturate the shiftmax sum (max_seq * |x0| * 2^{SOFTMAX_N} "
                             f"> 2^31 - 1)")
        n = GELU_DEFAULTS[self.gelu_mode][0]
        g = -check_int("gelu_x0", self.gelu_x0, lo, -1)
        if g << n > INT32_MAX:
            raise ValueError(f"gelu_x0={self.gelu_x0}: |x0| * 2^{n} exceeds 2^31 - 1")

    # shapes
    @property
    def hidden(self):
        return self.q.in_features

    @property
    def ffn(self):
        return self.fc1.out_features

    @property
    def head_dim(self):
        return self.hidden // self.heads

    @property
    def gelu_in_bits(self):
        return GELU_IN_BITS[self.gelu_mode]

    @property
    def gelu_sig_bits(self):
        return GELU_DEFAULTS[self.gelu_mode][1]

    @property
    def logit_scale(self):
        return 1.0 / -self.softmax_x0

    @property
    def trace_names(self):
        """Names of encoder_block(trace=True)'s tensors for this block, in dataflow order."""
        if self.norm == "pre":
            names = list(TRACE_NAMES)
            srcs = ("ln1", "attn", "ln2", "gelu")
        else:
            names = ["x", "q_acc", "q", "k_acc", "k", "v_acc", "v", "qk_acc", "logits",
                     "probs", "av_acc", "attn", "proj_acc", "res1", "ln1_z", "ln1", "fc1_acc",
                     "fc1", "gelu_prod", "gelu", "fc2_acc", "res2", "ln2_z", "ln2"]
            srcs = ("x", "attn", "ln1", "gelu")
        if self.act_quant == "token":
            for src in srcs:
                i = names.index(src) + 1
                names[i:i] = [src + "_q8", src + "_amax"]
        return tuple(names)

    def trace_scales(self):
        """Trace name -> float scale (scalar or per-channel array over the last axis).

        ``trace[name] * trace_scales()[name]`` is the float value the integer
        tensor represents, comparable with float_encoder_block's trace of the
        same name (LayerNorm outputs carry the folded gamma sign in their scale).
        Row-quantized ``{src}_q8`` tensors have a per-row scale, scale of src
        * ``{src}_amax`` / 127, and are not listed; nor are the absmax tensors.
        """
        c = self.hidden
        s_z = math.sqrt(c) / 2**30
        sq, sk, sv = (getattr(self, n).out_scale for n in ("q", "k", "v"))
        return {
            "x": self.in_scale,
            "ln1_z": s_z,
            "ln1": self.ln1.scale_sign * self.ln1.out_scale,
            "q_acc": self.q.acc_scale, "q": sq,
            "k_acc": self.k.acc_scale, "k": sk,
            "v_acc": self.v.acc_scale, "v": sv,
            "qk_acc": sq * sk / math.sqrt(self.head_dim),
            "logits": self.logit_scale,
            "probs": 2.0 ** -(self.probs_bits - 1),
            "av_acc": sv * 2.0 ** -(self.probs_bits - 1),
            "attn": self.attn_scale,
            "proj_acc": self.o.acc_scale,
            "res1": self.res1_scale,
            "ln2_z": s_z,
            "ln2": self.ln2.scale_sign * self.ln2.out_scale,
            "fc1_acc": self.fc1.acc_scale,
            "fc1": self.gelu_in_scale,
            "gelu_prod": self.gelu_in_scale * 2.0 ** -(self.gelu_sig_bits - 1),
            "gelu": self.gelu_out_scale,
            "fc2_acc": self.fc2.acc_scale,
            "res2": self.out_scale if self.norm == "pre" else self.res2_scale,
        }


@dataclass(frozen=True, eq=False)
class EncoderParams:
    """A stack of blocks; block i's output scale is block i+1's input scale."""
    blocks: tuple
    in_scale: float

    def __post_init__(self):
        blocks = tuple(self.blocks)
        if not blocks:
            raise ValueError("blocks: an encoder needs at least one block")
        for i, b in enumerate(blocks):
            if not isinstance(b, BlockParams):
                raise TypeError(f"blocks[{i}] must be BlockParams, got {type(b).__name__}")
            if b.hidden != blocks[0].hidden:
                raise ValueError(f"blocks[{i}]: hidden={b.hidden} differs from blocks[0] "
                                 f"({blocks[0].hidden})")
        object.__setattr__(self, "blocks", blocks)

    @property
    def out_scale(self):
        return self.blocks[-1].out_scale

    @property
    def hidden(self):
        return self.blocks[0].hidden


# --------------------------------------------------------------------------- integer block

def _check_x(name, x, hidden, max_seq):
    a = check_int_array(name, x, INT16_MIN, INT16_MAX)
    if a.ndim < 2 or a.shape[-1] != hidden:
        raise ValueError(f"{name}: expected shape (..., T, {hidden}) (int16 residual), "
                         f"got {a.shape}")
    if a.shape[-2] == 0:
        raise ValueError(f"{name}: empty sequence, shape {a.shape}")
    if a.shape[-2] > max_seq:
        raise ValueError(f"{name}: sequence length {a.shape[-2]} exceeds max_seq={max_seq}")
    return a


def _split_heads(a, heads):
    """(..., T, C) -> (..., H, T, d)."""
    t, c = a.shape[-2:]
    return np.swapaxes(a.reshape(a.shape[:-1] + (heads, c // heads)), -2, -3)


def _merge_heads(a):
    """(..., H, T, d) -> (..., T, H * d)."""
    a = np.swapaxes(a, -2, -3)
    return a.reshape(a.shape[:-2] + (a.shape[-2] * a.shape[-1],))


def _round_int(x):
    """round half up (golden.quant's rule) of a float array, as int64."""
    return _round_half_up(x).astype(np.int64)


def _layernorm_z(x, float_op):
    """int_layernorm(x), or with ``float_op`` the float xhat at its scale sqrt(C) / 2^30."""
    if not float_op:
        return int_layernorm(x)
    xf = x.astype(np.float64)
    y = xf - xf.mean(axis=-1, keepdims=True)
    std = np.sqrt((y * y).mean(axis=-1, keepdims=True))
    xhat = np.divide(y, std, out=np.zeros_like(y), where=std > 0)
    return np.clip(_round_int(xhat * 2.0**30 / math.sqrt(x.shape[-1])),
                   -(1 << 30), 1 << 30)


def _norm(name, z, norm, m_bits, t):
    """LayerNorm output stage: per-channel requantizer (+ sign when signed_out)."""
    lo, hi = norm.bounds
    y = requantize(z, norm.requant.m, norm.requant.e, bias=np.asarray(norm.bias),
                   lo=lo, hi=hi, m_bits=m_bits)
    if norm.signed_out:
        y = y * np.asarray(norm.sign, dtype=np.int64)
    t[name] = _narrow(name, y, np.int8 if norm.out_bits == 8 else np.int16)


def _linear_input(src, p, t):
    """The int8 input of a linear layer fed by trace tensor ``src``, and its rows' absmax.

    act_quant "static": src itself (int8), absmax None. "token": row_quantize
    of the int16 src (traced as {src}_q8, {src}_amax).
    """
    if p.act_quant == "static":
        return t[src], None
    q, amax = row_quantize(t[src], in_bits=WIDE_BITS)
    t[src + "_q8"], t[src + "_amax"] = q, amax
    return q, amax


def _act_bounds(p, static_bits=8):
    """Clamp of a tensor that feeds a linear layer: int8 (static) or int16 (token)."""
    bits = WIDE_BITS if p.act_quant == "token" else static_bits
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1, np.int8 if bits == 8 else np.int16


def _attention(h, p, t, float_ops):
    """q/k/v from trace tensor h (int8 or row-quantized), heads, shiftmax, o projection acc."""
    mb = p.m_bits
    a, amax = _linear_input(h, p, t)
    for name in ("q", "k", "v"):
        lin = getattr(p, name)
        acc = lin.accumulate(a, amax)
        t[name + "_acc"] = _narrow(name + "_acc", acc, np.int64 if lin.row_scaled else np.int32)
        t[name] = _narrow(name, requantize(acc, lin.requant.m, lin.requant.e, m_bits=mb), np.int8)
    qh, kh, vh = (_split_heads(t[n], p.heads) for n in ("q", "k", "v"))
    qk = int8_matmul(qh, np.swapaxes(kh, -1, -2), name="qk_acc")
    t["qk_acc"] = _narrow("qk_acc", qk, np.int32)
    logits = requantize(qk, p.logits.m, p.logits.e, m_bits=mb)
    t["logits"] = _narrow("logits", logits, np.int8)
    pb = p.probs_bits
    if "softmax" in float_ops:
        lf = t["logits"] * p.logit_scale
        e = np.exp(lf - lf.max(axis=-1, keepdims=True))
        probs = np.minimum(_round_int(e / e.sum(axis=-1, keepdims=True) * 2.0**(pb - 1)),
                           (1 << (pb - 1)) - 1)
    else:
        probs = shiftmax(logits, _scale_for_x0(p.softmax_x0), n=SOFTMAX_N, out_bits=pb)
    t["probs"] = _narrow("probs", probs, np.int8 if pb == 8 else np.int16)
    # sum(probs) <= 2^(pb-1) per row, so |av| <= 2^(pb-1) * 128 <= 2^22 (exact matmul)
    av = _exact_matmul(probs, check_int_array("v", vh, INT8_MIN, INT8_MAX))
    t["av_acc"] = _narrow("av_acc", av, np.int32)
    lo, hi, dt = _act_bounds(p)
    attn = _merge_heads(requantize(av, p.attn.m, p.attn.e, lo=lo, hi=hi, m_bits=mb))
    t["attn"] = _narrow("attn", attn, dt)
    a, amax = _linear_input("attn", p, t)
    proj = p.o.accumulate(a, amax)
    t["proj_acc"] = _narrow("proj_acc", proj, np.int64 if p.o.row_scaled else np.int32)
    return proj


def _feed_forward(h, p, t, float_ops):
    """fc1 from trace tensor h, ShiftGELU, fc2 accumulator (not requantized)."""
    mb = p.m_bits
    a, amax = _linear_input(h, p, t)
    acc1 = p.fc1.accumulate(a, amax)
    t["fc1_acc"] = _narrow("fc1_acc", acc1, np.int64 if p.fc1.row_scaled else np.int32)
    gb = p.gelu_in_bits
    fc1 = requantize(acc1, p.fc1.requant.m, p.fc1.requant.e,
                     lo=-(1 << (gb - 1)), hi=(1 << (gb - 1)) - 1, m_bits=mb)
    t["fc1"] = _narrow("fc1", fc1, np.int8 if gb == 8 else np.int16)
    if "gelu" in float_ops:
        prod = _round_int(gelu_erf(fc1 * p.gelu_in_scale) / p.gelu_in_scale
                              * 2.0**(p.gelu_sig_bits - 1))
    else:
        prod = shiftgelu(fc1, _scale_for_x0(p.gelu_x0, GELU_SLOPE), mode=p.gelu_mode)
    t["gelu_prod"] = _narrow("gelu_prod", prod, np.int32)
    lo, hi, dt = _act_bounds(p)
    t["gelu"] = _narrow("gelu", requantize(prod, p.gelu_out.m, p.gelu_out.e, lo=lo, hi=hi,
                                           m_bits=mb), dt)
    a, amax = _linear_input("gelu", p, t)
    acc2 = p.fc2.accumulate(a, amax)
    t["fc2_acc"] = _narrow("fc2_acc", acc2, np.int64 if p.fc2.row_scaled else np.int32)
    return acc2


def _check_float_ops(float_ops):
    ops = frozenset(float_ops)
    unknown = ops - set(FLOAT_OPS)
    if unknown:
        raise ValueError(f"float_ops: unknown operators {sorted(unknown)}; known: {FLOAT_OPS}")
    return ops


def encoder_block(x, params, trace=False, float_ops=()):
    """One integer-only encoder block (pre-LN or post-LN): int16 residual in, int16 out.

    x: integer array (..., T, C) with values in int16 range at scale
    params.in_scale (T <= params.max_seq). Returns int16 (..., T, C) at
    params.out_scale; with ``trace=True`` a dict of every intermediate (keys
    params.trace_names, each in its device dtype: int8 / int16 / int32, int64
    for row-scaled accumulators) instead. Deterministic; no float arithmetic
    touches the data unless ``float_ops`` (a subset of FLOAT_OPS, for error
    attribution only) returns operators to float.
    """
    if not isinstance(params, BlockParams):
        raise TypeError(f"params must be BlockParams, got {type(params).__name__}")
    ops = _check_float_ops(float_ops)
    p, mb = params, params.m_bits
    x = _check_x("x", x, p.hidden, p.max_seq)
    t = {"x": x.astype(np.int16)}
    post = p.norm == "post"

    if not post:
        t["ln1_z"] = _narrow("ln1_z", _layernorm_z(x, "layernorm" in ops), np.int32)
        _norm("ln1", t["ln1_z"], p.ln1, mb, t)
    proj = _attention("x" if post else "ln1", p, t, ops)
    res1 = residual_add(x, p.res1_x.m, p.res1_x.e, proj, p.o.requant.m, p.o.requant.e,
                        m_bits=mb)
    t["res1"] = _narrow("res1", res1, np.int16)
    z_name = "ln1_z" if post else "ln2_z"
    t[z_name] = _narrow(z_name, _layernorm_z(res1, "layernorm" in ops), np.int32)
    if post:
        _norm("ln1", t["ln1_z"], p.ln1, mb, t)
    else:
        _norm("ln2", t["ln2_z"], p.ln2, mb, t)
    ffn_in = "ln1" if post else "ln2"
    acc2 = _feed_forward(ffn_in, p, t, ops)
    skip = t["ln1"] if post else t["res1"]
    res2 = residual_add(skip, p.res2_x.m, p.res2_x.e, acc2, p.fc2.requant.m, p.fc2.requant.e,
                        m_bits=mb)
    t["res2"] = _narrow("res2", res2, np.int16)
    if post:
        t["ln2_z"] = _narrow("ln2_z", _layernorm_z(res2, "layernorm" in ops), np.int32)
        _norm("ln2", t["ln2_z"], p.ln2, mb, t)
    out = t["ln2" if post else "res2"]
    if trace:
        return {k: t[k] for k in p.trace_names}
    return out


def encoder_stack(x, params, trace=False, float_ops=()):
    """The blocks of ``params`` (EncoderParams) in order: int16 in, int16 out.

    With ``trace=True`` returns a dict with "x", "out" and every block
    tensor as "blocks.{i}.{name}" (name in the block's trace_names).
    ``float_ops``: as encoder_block.
    """
    if not isinstance(params, EncoderParams):
        raise TypeError(f"params must be EncoderParams, got {type(params).__name__}")
    out = {}
    h = x
    for i, block in enumerate(params.blocks):
        t = encoder_block(h, block, trace=True, float_ops=float_ops)
        if i == 0:
            out["x"] = t["x"]
        out.update({f"blocks.{i}.{k}": v for k, v in t.items()})
        h = t["ln2" if block.norm == "post" else "res2"]
    out["out"] = h
    return out if trace else h


# --------------------------------------------------------------------------- float reference

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_erf(x):
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def float_layernorm(x, weight, bias, eps):
    """Float LayerNorm over the last axis; returns (xhat, weight * xhat + bias)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    return xhat, xhat * weight + bias


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _float_block(x, w, cfg, block, trace):
    p = f"blocks.{block}."
    lin = {n: (w[p + n + ".weight"], w[p + n + ".bias"]) for n in LINEARS}
    ln = lambda name, v: float_layernorm(v, w[p + name + ".weight"],   # noqa: E731
                                         w[p + name + ".bias"], cfg.ln_eps)
    post = cfg.norm == "post"
    t = {"x": x}
    if not post:
        t["ln1_z"], t["ln1"] = ln("ln1", x)
    h = x if post else t["ln1"]
    for n in ("q", "k", "v"):
        t[n] = t[n + "_acc"] = h @ lin[n][0] + lin[n][1]
    qh, kh, vh = (_split_heads(t[n], cfg.heads) for n in ("q", "k", "v"))
    t["logits"] = t["qk_acc"] = qh @ np.swapaxes(kh, -1, -2) / math.sqrt(cfg.head_dim)
    t["probs"] = _softmax(t["logits"])
    t["av_acc"] = t["probs"] @ vh
    t["attn"] = _merge_heads(t["av_acc"])
    t["proj_acc"] = t["attn"] @ lin["o"][0] + lin["o"][1]
    t["res1"] = x + t["proj_acc"]
    ffn_in = "ln1" if post else "ln2"
    t[ffn_in + "_z"], t[ffn_in] = ln(ffn_in, t["res1"])
    t["fc1"] = t["fc1_acc"] = t[ffn_in] @ lin["fc1"][0] + lin["fc1"][1]
    t["gelu"] = t["gelu_prod"] = gelu_erf(t["fc1"])
    t["fc2_acc"] = t["gelu"] @ lin["fc2"][0] + lin["fc2"][1]
    t["res2"] = t["ln1" if post else "res1"] + t["fc2_acc"]
    if post:
        t["ln2_z"], t["ln2"] = ln("ln2", t["res2"])
    return t if trace else t["ln2" if post else "res2"]


def _float_input(x, cfg):
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"x: expected a real array, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim < 2 or x.shape[-1] != cfg.hidden:
        raise ValueError(f"x: expected shape (..., T, {cfg.hidden}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x: contains non-finite values (nan or inf)")
    return x


def float_encoder_block(x, float_weights, cfg, block=0, trace=False):
    """Float reference of block ``block``: float LayerNorm, softmax and exact (erf) GELU.

    Pre-LN or post-LN per ``cfg.norm`` (post-LN returns ln2, BERT's layer output).
    float_weights follow the naming convention (float_weight_shapes); pass
    the original weights, or ``trilut.host.quantize.dequantized_weights(...)``
    for the same ternary/int8-dequantized weights the integer model uses.
    Returns (..., T, C) float64, or with ``trace=True`` a dict with the same
    names as encoder_block's trace (accumulators alias their float values).
    """
    cfg = EncoderConfig.coerce(cfg)
    check_int("block", block, 0, cfg.layers - 1)
    w = check_float_weights(float_weights, cfg)
    return _float_block(_float_input(x, cfg), w, cfg, block, trace)


def float_encoder_stack(x, float_weights, cfg, trace=False):
    """All cfg.layers float blocks in order; trace keys as encoder_stack's."""
    cfg = EncoderConfig.coerce(cfg)
    w = check_float_weights(float_weights, cfg)
    h = _float_input(x, cfg)
    out = {"x": h}
    for i in range(cfg.layers):
        t = _float_block(h, w, cfg, i, True)
        out.update({f"blocks.{i}.{k}": v for k, v in t.items()})
        h = t["ln2" if cfg.norm == "post" else "res2"]
    out["out"] = h
    return out if trace else h
