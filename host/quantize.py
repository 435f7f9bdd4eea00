"""Offline quantizer: float encoder weights + calibration inputs -> integer constants.

:func:`quantize_encoder` turns float weights named by the convention of
:func:`trilut.golden.encoder.float_weight_shapes` into the
:class:`~trilut.golden.encoder.EncoderParams` that
:func:`~trilut.golden.encoder.encoder_stack` (and the hardware) run.

Steps, per block (scales are floats here and nowhere else):

1. Weights: ternary absmean (``quantize_ternary``, one scale per tensor) or
   int8 absmax per output channel (``quantize_int8`` on W^T, one scale per
   column), per ``cfg.kind(block, layer)``.
2. Calibration: the float reference (:func:`float_encoder_stack`) runs on
   ``calib_inputs`` with the *dequantized* weights (what the integer model
   actually multiplies by), and every activation scale is taken from the
   trace: int8 tensors get ``range / 127`` and int16 tensors (input, residual
   stream, "accurate" GELU input) ``headroom * range / 32767``, where
   ``range`` is the ``percentile`` of |value| over the calibration set
   (default 100: absmax; int8 activations clamp whatever exceeds it).
3. LayerNorm: int_layernorm's output z has scale s_z = sqrt(C) / 2^30; the
   output ``gamma * z s_z + beta`` at int8 scale s_ln becomes per channel
   ``requantize(z, m_c, e_c, bias_c)`` with m_c / 2^e_c ~ |gamma_c| s_z / s_ln
   and bias_c = round(sign_c beta_c / (|gamma_c| s_z)); sign_c = sign(gamma_c)
   (+1 for 0) is folded into the rows of the next layers' weights. If
   |gamma_c| < |beta_c| / (s_z (2^31 - 1)) the bias would leave int32: |gamma_c|
   is raised to that bound (reported in NormParams.clamped; never hit by a
   trained model with |gamma| > |beta| / (2 sqrt(C))).
4. Linear layers: bias_int = round(b / (s_in s_w)) (int32, checked);
   q/k/v/fc1 requantize to their calibrated output scale; o and fc2 get the
   multiplier from their accumulator to the residual scale (SPEC 2: no int8
   step before the residual add); the residual input gets its own.
5. Attention logits: the scale is snapped to s_l = 1/k with
   k = clamp(floor(127 / range), 1, k_max), so x0 = -k is exact (SPEC 4.6);
   k_max = (2^31 - 1) // (max_seq * 2^15) keeps the shiftmax row sum below
   saturation for rows up to cfg.max_seq (k_max = 127 for max_seq = 512).
   The 1/sqrt(d) attention scaling is folded into the logit multiplier.
6. GELU: x0 = floor(-1 / (1.702 s_g)) from the calibrated GELU-input scale
   s_g; s_g is raised if needed so that |x0| * 2^n fits 31 bits (n = 23 in
   "ivit" mode: s_g >= 1 / (1.702 * 255)).

Every dyadic multiplier comes from ``requant_params(ratio, cfg.m_bits)``.
"""
from __future__ import annotations

import math

import numpy as np

from ..golden.encoder import (GELU_IN_BITS, LINEARS, PROBS_BITS, SOFTMAX_N, BlockParams,
                              Dyadic, EncoderConfig, EncoderParams, LinearParams, NormParams,
                              check_float_weights, float_encoder_stack, float_weight_shapes)
from ..golden.nonlinear import GELU_DEFAULTS, GELU_SLOPE, INT32_MAX, iexp_x0, int_layernorm_scale
from ..golden.quant import INT8_MAX, INT16_MAX, INT16_MIN, quantize_int8, quantize_ternary, \
    requant_params

__all__ = [
    "EncoderConfig", "float_weight_shapes", "quantize_weight", "dequantized_weights",
    "calibrate", "quantize_encoder", "quantize_input", "dequantize_output",
]

INT32_MIN = -(1 << 31)
_TINY = 1e-12          # floor of a calibrated range (an all-zero tensor still gets a scale)


def _round_half_up(x):
    f = np.floor(x)
    return f + (x - f >= 0.5)


def quantize_weight(w, kind):
    """(w_int int8 (K, N), w_scale) of a float (K, N) weight: "ternary" or "int8".

    ternary: absmean, one float scale. int8: absmax per output channel
    (column), w_scale of shape (N,), values in [-127, 127].
    """
    w = np.asarray(w, dtype=np.float64)
    if kind == "ternary":
        return quantize_ternary(w)
    if kind == "int8":
        q, scale = quantize_int8(w.T, per_token=True)
        return np.ascontiguousarray(q.T), np.asarray(scale, dtype=np.float64)[:, 0]
    raise ValueError(f"kind must be 'ternary' or 'int8', got {kind!r}")


def dequantized_weights(float_weights, cfg):
    """The float weights with every linear weight replaced by w_int * w_scale.

    Same names; LayerNorm parameters and biases unchanged. Running
    float_encoder_block on these isolates the activation-side error of the
    integer model from the weight quantization error.
    """
    cfg = EncoderConfig.coerce(cfg)
    w = check_float_weights(float_weights, cfg)
    out = dict(w)
    for i in range(cfg.layers):
        for layer in LINEARS:
            name = f"blocks.{i}.{layer}.weight"
            q, s = quantize_weight(w[name], cfg.kind(i, layer))
            out[name] = q.astype(np.float64) * s
    return out


def _range(a, percentile):
    a = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    r = float(np.max(a)) if percentile >= 100 else float(np.percentile(a, percentile))
    return max(r, _TINY)


def _calib_array(calib_inputs, cfg):
    x = np.asarray(calib_inputs)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"calib_inputs: expected a real array, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[-1] != cfg.hidden or x.size == 0:
        raise ValueError(f"calib_inputs: expected shape (..., T, {cfg.hidden}), got {x.shape}")
    if x.shape[-2] > cfg.max_seq:
        raise ValueError(f"calib_inputs: sequence length {x.shape[-2]} exceeds "
                         f"cfg.max_seq={cfg.max_seq}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("calib_inputs: contains non-finite values (nan or inf)")
    return x


def calibrate(float_weights, cfg, calib_inputs, percentile=100.0):
    """Per-tensor ranges (|value| percentile) of the float model on calib_inputs.

    Returns {"x": r, "blocks.{i}.{name}": r, ...} over the float trace names.
    ``float_weights`` are used as given (pass dequantized_weights(...)).
    """
    cfg = EncoderConfig.coerce(cfg)
    if not (0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    t = float_encoder_stack(_calib_array(calib_inputs, cfg), float_weights, cfg, trace=True)
    return {k: _range(v, percentile) for k, v in t.items()}


def _dyadic(ratio, m_bits, what):
    try:
        m, e = requant_params(ratio, m_bits)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return Dyadic(m, e, ratio)


def _int32_bias(name, b, acc_scale):
    q = _round_half_up(np.asarray(b, dtype=np.float64) / acc_scale)
    if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):
        raise ValueError(f"{name}: bias / (s_in * s_w) leaves int32 (|bias_int| up to "
                         f"{np.abs(q).max():.3g}); the input scale is too small")
    return q.astype(np.int32)


def _norm(prefix, gamma, beta, c, out_scale, m_bits):
    s_z = int_layernorm_scale(c)
    sign = np.where(gamma < 0, -1, 1).astype(np.int8)
    g = np.abs(gamma)
    g_floor = np.maximum(np.abs(beta) / (s_z * INT32_MAX), 1e-6 * max(float(g.max()), 1.0))
    clamped = g < g_floor
    g = np.maximum(g, g_floor)
    bias = _round_half_up(sign * beta / (g * s_z))
    bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int32)
    return NormParams(_dyadic(g * s_z / out_scale, m_bits, prefix), bias, sign, out_scale,
                      gamma=gamma, beta=beta, clamped=clamped)


def _linear(name, w, b, kind, in_scale, out_scale, m_bits, in_sign=None):
    w_int, w_scale = quantize_weight(w, kind)
    if in_sign is not None:
        w_int = (w_int * in_sign[:, None].astype(np.int8)).astype(np.int8)
    acc_scale = in_scale * np.asarray(w_scale, dtype=np.float64)
    bias = _int32_bias(f"{name}.bias", b, acc_scale)
    return LinearParams(name=name, kind=kind, weights=w_int, bias=bias,
                        requant=_dyadic(acc_scale / out_scale, m_bits, f"{name}.requant"),
                        w_scale=w_scale, in_scale=in_scale, out_scale=out_scale,
                        in_sign=in_sign)


def quantize_encoder(float_weights, cfg, calib_inputs, *, percentile=100.0,
                     residual_headroom=2.0):
    """Quantize a float encoder stack into integer EncoderParams.

    float_weights: name -> array per float_weight_shapes(cfg) (weights
    (in, out)); cfg: EncoderConfig or a mapping of its fields; calib_inputs:
    float (..., T, hidden) inputs of block 0. ``percentile`` of |activation|
    sets every int8 activation range (100 = absmax); ``residual_headroom``
    multiplies the ranges of int16 tensors (residual stream, input, "accurate"
    GELU input), which have 15 bits to spare. Raises ValueError/TypeError
    naming the offending tensor (shape, non-finite values, heads not dividing
    hidden, ...). See the module docstring for every rule.
    """
    cfg = EncoderConfig.coerce(cfg)
    if not residual_headroom >= 1.0:
        raise ValueError(f"residual_headroom must be >= 1, got {residual_headroom}")
    w = check_float_weights(float_weights, cfg)
    deq = dequantized_weights(w, cfg)
    r = calibrate(deq, cfg, calib_inputs, percentile)
    r16 = lambda name: residual_headroom * r[name] / INT16_MAX   # noqa: E731
    r8 = lambda name: r[name] / INT8_MAX                           # noqa: E731
    mb, c, dh = cfg.m_bits, cfg.hidden, cfg.head_dim
    in_scale = r16("x")
    s_x = in_scale
    blocks = []
    k_max = INT32_MAX // (cfg.max_seq << SOFTMAX_N)
    if k_max < 1:
        raise ValueError(f"cfg.max_seq={cfg.max_seq} too long: even x0 = -1 lets the "
                         f"shiftmax row sum saturate")
    n_gelu, sig_bits = GELU_DEFAULTS[cfg.gelu_mode]
    gelu_in_bits = GELU_IN_BITS[cfg.gelu_mode]
    for i in range(cfg.layers):
        p = f"blocks.{i}."
        lin = lambda n, in_s, out_s, sign=None: _linear(   # noqa: E731
            p + n, w[p + n + ".weight"], w[p + n + ".bias"], cfg.kind(i, n), in_s, out_s, mb,
            sign)
        # attention
        s_ln1 = r8(p + "ln1")
        ln1 = _norm(p + "ln1.requant", w[p + "ln1.weight"], w[p + "ln1.bias"], c, s_ln1, mb)
        q = lin("q", s_ln1, r8(p + "q"), ln1.sign)
        k = lin("k", s_ln1, r8(p + "k"), ln1.sign)
        v = lin("v", s_ln1, r8(p + "v"), ln1.sign)
        k_l = int(min(max(math.floor(INT8_MAX / r[p + "logits"]), 1), k_max))
        s_l = 1.0 / k_l
        logits = _dyadic(q.out_scale * k.out_scale / (math.sqrt(dh) * s_l), mb, p + "logits")
        s_a = r8(p + "attn")
        attn = _dyadic(2.0 ** -(PROBS_BITS - 1) * v.out_scale / s_a, mb, p + "attn")
        s_r1 = r16(p + "res1")
        o = lin("o", s_a, s_r1)
        res1_x = _dyadic(s_x / s_r1, mb, p + "res1_x")
        # feed-forward
        s_ln2 = r8(p + "ln2")
        ln2 = _norm(p + "ln2.requant", w[p + "ln2.weight"], w[p + "ln2.bias"], c, s_ln2, mb)
        gelu_range = r[p + "fc1"] * (residual_headroom if gelu_in_bits == 16 else 1.0)
        s_g = gelu_range / ((1 << (gelu_in_bits - 1)) - 1)
        s_g = max(s_g, 1.0 / (GELU_SLOPE * (INT32_MAX >> n_gelu)))
        gelu_x0 = iexp_x0(GELU_SLOPE * s_g)
        fc1 = lin("fc1", s_ln2, s_g, ln2.sign)
        s_h = r8(p + "gelu")
        gelu_out = _dyadic(s_g * 2.0 ** -(sig_bits - 1) / s_h, mb, p + "gelu_out")
        s_r2 = r16(p + "res2")
        fc2 = lin("fc2", s_h, s_r2)
        res2_x = _dyadic(s_r1 / s_r2, mb, p + "res2_x")
        blocks.append(BlockParams(
            heads=cfg.heads, ln1=ln1, q=q, k=k, v=v, logits=logits, softmax_x0=-k_l,
            attn=attn, o=o, res1_x=res1_x, ln2=ln2, fc1=fc1, gelu_mode=cfg.gelu_mode,
            gelu_x0=gelu_x0, gelu_out=gelu_out, fc2=fc2, res2_x=res2_x, in_scale=s_x,
            attn_scale=s_a, res1_scale=s_r1, gelu_in_scale=s_g, gelu_out_scale=s_h,
            out_scale=s_r2, max_seq=cfg.max_seq, m_bits=mb))
        s_x = s_r2
    return EncoderParams(tuple(blocks), in_scale)


def quantize_input(x, params):
    """Float block-0 input -> int16 at params.in_scale (round half up, saturating)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("x: contains non-finite values (nan or inf)")
    return np.clip(_round_half_up(x / params.in_scale), INT16_MIN, INT16_MAX).astype(np.int16)


def dequantize_output(y, params):
    """int16 stack output -> float at params.out_scale."""
    return np.asarray(y, dtype=np.float64) * params.out_scale
