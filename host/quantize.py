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
   "ivit" mode: s_g >= 1 / (1.702 * 255)). The mode is cfg.gelu(i) per block.
7. ``cfg.act_quant == "token"``: the tensors feeding linear layers (LayerNorm
   outputs, attn, gelu; x in post-LN) are int16 at ``headroom * range /
   32767``; the layer's in_scale is S_src / 127 (row-quantized input with
   absmax 1) and its bias is at S_src S_w / 127 (row_scaled, up to 48 bits).
   ``cfg.norm == "post"``: LayerNorm outputs are int16 with gamma's sign
   applied after the requantizer (no sign folding); ln1 feeds fc1 and the
   second residual; ln2 is the block output (its scale the next block's
   input scale). ``cfg.probs_bits`` sets the attn multiplier's probs scale.
8. Optional width check (``width_headroom``): the integer stack runs on the
   calibration inputs and every accumulator's calibrated |value| times the
   headroom must fit its device width (:func:`check_widths`), else a
   ValueError names the tensor.

Every dyadic multiplier comes from ``requant_params(ratio, cfg.m_bits)``.
"""
from __future__ import annotations

import math

import numpy as np

from ..golden.classifier import EmbedParams, HeadParams
from ..golden.encoder import (GELU_IN_BITS, LINEARS, ROW_ACC_BITS, SOFTMAX_N, BlockParams,
                              Dyadic, EncoderConfig, EncoderParams, LinearParams, NormParams,
                              check_float_weights, encoder_stack, float_encoder_stack,
                              float_layernorm, float_weight_shapes)
from ..golden.nonlinear import GELU_DEFAULTS, GELU_SLOPE, INT32_MAX, iexp_x0, int_layernorm_scale
from ..golden.quant import INT8_MAX, INT16_MAX, INT16_MIN, M_BITS_DEFAULT, _round_half_up, \
    quantize_int8, quantize_ternary, requant_params

__all__ = [
    "EncoderConfig", "float_weight_shapes", "quantize_weight", "dequantized_weights",
    "calibrate", "quantize_encoder", "quantize_input", "dequantize_output",
    "accumulator_widths", "check_widths", "spare_constants", "quantize_embedding", "pinned",
    "quantize_head", "quantize_classifier",
]

INT32_MIN = -(1 << 31)
_TINY = 1e-12          # floor of a calibrated range (an all-zero tensor still gets a scale)


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


def _calib_arrays(calib_inputs, cfg):
    """A list of checked float arrays: one array, or a list/tuple of arrays whose
    sequence lengths differ (e.g. sentences of different lengths)."""
    if isinstance(calib_inputs, (list, tuple)):
        if not calib_inputs:
            raise ValueError("calib_inputs: empty list")
        return [_calib_array(c, cfg, f"calib_inputs[{i}]") for i, c in enumerate(calib_inputs)]
    return [_calib_array(calib_inputs, cfg)]


def _calib_array(calib_inputs, cfg, what="calib_inputs"):
    x = np.asarray(calib_inputs)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{what}: expected a real array, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[-1] != cfg.hidden or x.size == 0:
        raise ValueError(f"{what}: expected shape (..., T, {cfg.hidden}), got {x.shape}")
    if x.shape[-2] > cfg.max_seq:
        raise ValueError(f"{what}: sequence length {x.shape[-2]} exceeds "
                         f"cfg.max_seq={cfg.max_seq}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains non-finite values (nan or inf)")
    return x


def calibrate(float_weights, cfg, calib_inputs, percentile=100.0):
    """Per-tensor ranges (|value| percentile) of the float model on calib_inputs.

    Returns {"x": r, "blocks.{i}.{name}": r, ...} over the float trace names.
    ``float_weights`` are used as given (pass dequantized_weights(...)).
    ``calib_inputs``: one array (..., T, hidden) or a list of such arrays
    (different T allowed); the percentile is taken over all of them.
    """
    cfg = EncoderConfig.coerce(cfg)
    if not (0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    traces = [float_encoder_stack(x, float_weights, cfg, trace=True)
              for x in _calib_arrays(calib_inputs, cfg)]
    return {k: _range(np.concatenate([np.ravel(t[k]) for t in traces]), percentile)
            for k in traces[0]}


def _dyadic(ratio, m_bits, what):
    try:
        m, e = requant_params(ratio, m_bits)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return Dyadic(m, e, ratio)


def _int_bias(name, b, acc_scale, row_scaled=False):
    q = _round_half_up(np.asarray(b, dtype=np.float64) / acc_scale)
    bits = ROW_ACC_BITS if row_scaled else 32
    lim = 2.0 ** (bits - 1)
    if q.size and (q.min() < -lim or q.max() > lim - 1):
        raise ValueError(f"{name}: bias / (s_in * s_w) leaves {bits} bits (|bias_int| up to "
                         f"{np.abs(q).max():.3g}); the input scale is too small")
    return q.astype(np.int64 if row_scaled else np.int32)


def _norm(prefix, gamma, beta, c, out_scale, m_bits, out_bits=8, signed_out=False):
    s_z = int_layernorm_scale(c)
    sign = np.where(gamma < 0, -1, 1).astype(np.int8)
    g = np.abs(gamma)
    g_floor = np.maximum(np.abs(beta) / (s_z * INT32_MAX), 1e-6 * max(float(g.max()), 1.0))
    clamped = g < g_floor
    g = np.maximum(g, g_floor)
    bias = _round_half_up(sign * beta / (g * s_z))
    bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int32)
    return NormParams(_dyadic(g * s_z / out_scale, m_bits, prefix), bias, sign, out_scale,
                      gamma=gamma, beta=beta, clamped=clamped, out_bits=out_bits,
                      signed_out=signed_out)


def _linear(name, w, b, kind, in_scale, out_scale, m_bits, in_sign=None, row_scaled=False):
    w_int, w_scale = quantize_weight(w, kind)
    if in_sign is not None:
        w_int = (w_int * in_sign[:, None].astype(np.int8)).astype(np.int8)
    acc_scale = in_scale * np.asarray(w_scale, dtype=np.float64)
    bias = _int_bias(f"{name}.bias", b, acc_scale, row_scaled)
    return LinearParams(name=name, kind=kind, weights=w_int, bias=bias,
                        requant=_dyadic(acc_scale / out_scale, m_bits, f"{name}.requant"),
                        w_scale=w_scale, in_scale=in_scale, out_scale=out_scale,
                        in_sign=in_sign, row_scaled=row_scaled)


def quantize_encoder(float_weights, cfg, calib_inputs, *, percentile=100.0,
                     residual_headroom=2.0, width_headroom=None):
    """Quantize a float encoder stack into integer EncoderParams.

    float_weights: name -> array per float_weight_shapes(cfg) (weights
    (in, out)); cfg: EncoderConfig or a mapping of its fields; calib_inputs:
    float (..., T, hidden) inputs of block 0 (or a list of such arrays with
    different T). ``percentile`` of |activation|
    sets every int8 activation range (100 = absmax); ``residual_headroom``
    multiplies the ranges of int16 tensors (residual stream, input, "accurate"
    GELU input, token-mode linear inputs), which have 15 bits to spare.
    ``width_headroom`` (None: no check): run :func:`check_widths` on the
    calibration inputs with this margin. Raises ValueError/TypeError
    naming the offending tensor (shape, non-finite values, heads not
    dividing hidden, an accumulator too narrow, ...). See the module
    docstring for every rule.
    """
    cfg = EncoderConfig.coerce(cfg)
    if not residual_headroom >= 1.0:
        raise ValueError(f"residual_headroom must be >= 1, got {residual_headroom}")
    w = check_float_weights(float_weights, cfg)
    deq = dequantized_weights(w, cfg)
    calib = _calib_arrays(calib_inputs, cfg)
    r = calibrate(deq, cfg, calib, percentile)
    r16 = lambda name: residual_headroom * r[name] / INT16_MAX   # noqa: E731
    r8 = lambda name: r[name] / INT8_MAX                           # noqa: E731
    token, post = cfg.act_quant == "token", cfg.norm == "post"
    ract = r16 if token else r8        # scale of a tensor that feeds a linear layer
    lin_in = (lambda s: s / INT8_MAX) if token else (lambda s: s)   # noqa: E731
    ln_bits = 16 if token or post else 8
    mb, c, dh = cfg.m_bits, cfg.hidden, cfg.head_dim
    in_scale = r16("x")
    s_x = in_scale
    blocks = []
    k_max = INT32_MAX // (cfg.max_seq << SOFTMAX_N)
    if k_max < 1:
        raise ValueError(f"cfg.max_seq={cfg.max_seq} too long: even x0 = -1 lets the "
                         f"shiftmax row sum saturate")
    for i in range(cfg.layers):
        p = f"blocks.{i}."
        lin = lambda n, in_s, out_s, sign=None: _linear(   # noqa: E731
            p + n, w[p + n + ".weight"], w[p + n + ".bias"], cfg.kind(i, n), lin_in(in_s),
            out_s, mb, None if post else sign, token)
        norm = lambda n, s: _norm(p + n + ".requant", w[p + n + ".weight"],   # noqa: E731
                                  w[p + n + ".bias"], c, s, mb, ln_bits, post)
        # attention
        if post:
            s_qkv_in, ln1 = s_x, None
        else:
            s_qkv_in = ract(p + "ln1")
            ln1 = norm("ln1", s_qkv_in)
        sign1 = None if post else ln1.sign
        q = lin("q", s_qkv_in, r8(p + "q"), sign1)
        k = lin("k", s_qkv_in, r8(p + "k"), sign1)
        v = lin("v", s_qkv_in, r8(p + "v"), sign1)
        k_l = int(min(max(math.floor(INT8_MAX / r[p + "logits"]), 1), k_max))
        s_l = 1.0 / k_l
        logits = _dyadic(q.out_scale * k.out_scale / (math.sqrt(dh) * s_l), mb, p + "logits")
        s_a = ract(p + "attn")
        attn = _dyadic(2.0 ** -(cfg.probs_bits - 1) * v.out_scale / s_a, mb, p + "attn")
        s_r1 = r16(p + "res1")
        o = lin("o", s_a, s_r1)
        res1_x = _dyadic(s_x / s_r1, mb, p + "res1_x")
        # feed-forward
        if post:
            s_ffn_in = r16(p + "ln1")
            ln1 = norm("ln1", s_ffn_in)
            ln2 = None
        else:
            s_ffn_in = ract(p + "ln2")
            ln2 = norm("ln2", s_ffn_in)
        gelu_mode = cfg.gelu(i)
        n_gelu, sig_bits = GELU_DEFAULTS[gelu_mode]
        gelu_in_bits = GELU_IN_BITS[gelu_mode]
        gelu_range = r[p + "fc1"] * (residual_headroom if gelu_in_bits == 16 else 1.0)
        s_g = gelu_range / ((1 << (gelu_in_bits - 1)) - 1)
        s_g = max(s_g, 1.0 / (GELU_SLOPE * (INT32_MAX >> n_gelu)))
        gelu_x0 = iexp_x0(GELU_SLOPE * s_g)
        fc1 = lin("fc1", s_ffn_in, s_g, None if post else ln2.sign)
        s_h = ract(p + "gelu")
        gelu_out = _dyadic(s_g * 2.0 ** -(sig_bits - 1) / s_h, mb, p + "gelu_out")
        s_r2 = r16(p + "res2")
        fc2 = lin("fc2", s_h, s_r2)
        res2_x = _dyadic((s_ffn_in if post else s_r1) / s_r2, mb, p + "res2_x")
        if post:
            s_out = r16(p + "ln2")
            ln2 = norm("ln2", s_out)
        else:
            s_out = s_r2
        blocks.append(BlockParams(
            heads=cfg.heads, ln1=ln1, q=q, k=k, v=v, logits=logits, softmax_x0=-k_l,
            attn=attn, o=o, res1_x=res1_x, ln2=ln2, fc1=fc1, gelu_mode=gelu_mode,
            gelu_x0=gelu_x0, gelu_out=gelu_out, fc2=fc2, res2_x=res2_x, in_scale=s_x,
            attn_scale=s_a, res1_scale=s_r1, gelu_in_scale=s_g, gelu_out_scale=s_h,
            out_scale=s_out, max_seq=cfg.max_seq, m_bits=mb, norm=cfg.norm,
            act_quant=cfg.act_quant, probs_bits=cfg.probs_bits,
            res2_scale=s_r2 if post else None))
        s_x = s_out
    params = EncoderParams(tuple(blocks), in_scale)
    if width_headroom is not None:
        check_widths(params, [quantize_input(c, params) for c in calib], width_headroom)
    return params


def _ln_inputs(block):
    """Trace names of the LayerNorm inputs of a block: {"ln1_var": src, "ln2_var": src}."""
    if block.norm == "post":
        return {"ln1_var": "res1", "ln2_var": "res2"}
    return {"ln1_var": "x", "ln2_var": "res1"}


def _ln_var(x):
    """max over rows of sum((x - mu)^2), mu the rounded row mean (the LayerNorm accumulator)."""
    x = x.astype(np.int64)
    mu = np.floor(x.mean(axis=-1, keepdims=True) + 0.5).astype(np.int64)
    return int(((x - mu) ** 2).sum(axis=-1).max())


def _device_widths(block):
    """Signed bit width of every accumulator-like tensor of a block on the device."""
    widths = {n + "_acc": getattr(block, n).acc_limit.bit_length() + 1
              for n in ("q", "k", "v", "fc1")}
    widths.update(proj_acc=block.o.acc_limit.bit_length() + 1,
                  fc2_acc=block.fc2.acc_limit.bit_length() + 1,
                  qk_acc=32, av_acc=32, gelu_prod=32)
    return widths


def accumulator_widths(params, x, headroom=1.0):
    """Per accumulator tensor: calibrated |value| max, bits it needs with headroom, bits it has.

    Runs the integer stack on int16 inputs ``x`` (e.g. quantize_input(calib,
    params)), one array or a list of arrays (different T). Returns
    {"blocks.{i}.{name}": {"max_abs", "bits_needed", "bits_available"}} for
    q/k/v/fc1/fc2 and projection accumulators, qk_acc, av_acc and gelu_prod
    (signed widths), and ln1_var/ln2_var, the LayerNorm's sum of squared
    deviations (unsigned; available = the worst case C * (2^16 - 1)^2 of int16
    input, as hw/layernorm.py sizes it).
    """
    if not headroom >= 1.0:
        raise ValueError(f"headroom must be >= 1, got {headroom}")
    traces = [encoder_stack(xi, params, trace=True)
              for xi in (x if isinstance(x, (list, tuple)) else [x])]
    out = {}
    for i, block in enumerate(params.blocks):
        for name, avail in _device_widths(block).items():
            key = f"blocks.{i}.{name}"
            mx = max(int(np.abs(t[key].astype(np.int64)).max()) for t in traces)
            need = int(math.ceil(mx * headroom)).bit_length() + 1
            out[key] = {"max_abs": mx, "bits_needed": need, "bits_available": avail}
        for name, src in _ln_inputs(block).items():
            mx = max(_ln_var(t[f"blocks.{i}.{src}"]) for t in traces)
            out[f"blocks.{i}.{name}"] = {
                "max_abs": mx, "bits_needed": int(math.ceil(mx * headroom)).bit_length(),
                "bits_available": (block.hidden * ((1 << 16) - 1) ** 2).bit_length()}
    return out


def check_widths(params, x, headroom=2.0):
    """accumulator_widths, raising ValueError naming the first tensor that lacks headroom."""
    widths = accumulator_widths(params, x, headroom)
    for key, w in widths.items():
        if w["bits_needed"] > w["bits_available"]:
            raise ValueError(f"{key}: calibrated |value| up to {w['max_abs']} needs "
                             f"{w['bits_needed']} bits with headroom {headroom}, the device "
                             f"has {w['bits_available']}")
    return widths


def quantize_input(x, params):
    """Float block-0 input -> int16 at params.in_scale (round half up, saturating)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("x: contains non-finite values (nan or inf)")
    return np.clip(_round_half_up(x / params.in_scale), INT16_MIN, INT16_MAX).astype(np.int16)


def dequantize_output(y, params):
    """int16 stack output -> float at params.out_scale."""
    return np.asarray(y, dtype=np.float64) * params.out_scale


# --------------------------------------------------------------------------- classifier

def spare_constants(params):
    """The attention passes' per-tensor multipliers of ``params`` (EncoderParams),
    (logits, attn) per block: each is the only entry of its constant set, whose
    other entries a pass with a spare channel 0 can use (host/compiler.py,
    "Constant sets"), if its channel-0 constant is this one."""
    return [d for b in params.blocks for d in (b.logits, b.attn)]


def _int8_linear(name, w, b, in_scale, out_scale, m_bits, spare=None):
    """int8 LinearParams of float ``w`` (K, N), ``b`` (N,), per-channel requant
    to ``out_scale``. Spare columns (all-zero weights and bias: their output is
    0 whatever the multiplier) get ``spare``'s (m, e), else (0, 1)."""
    w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w_int, w_scale = quantize_weight(w, "int8")
    dead = ~np.any(w != 0, axis=0) & (b == 0)
    acc_scale = in_scale * w_scale
    bias = _int_bias(f"{name}.bias", b, acc_scale)
    ratio = np.where(dead, 1.0, acc_scale / out_scale)
    d = _dyadic(ratio, m_bits, f"{name}.requant")
    m, e = np.array(d.m), np.array(d.e)
    m[dead], e[dead] = (spare.m, spare.e) if spare is not None else (0, 1)
    return LinearParams(name=name, kind="int8", weights=w_int, bias=bias,
                        requant=Dyadic(m, e, ratio), w_scale=w_scale, in_scale=in_scale,
                        out_scale=out_scale)


def quantize_embedding(weight, bias, in_scale, out_scale, *, pin_channel=None, spare=None,
                       m_bits=M_BITS_DEFAULT):
    """EmbedParams of ``x = f @ weight + bias`` (weight (K, C) float, f the
    float features = int8 features * ``in_scale``) into the int16 encoder
    input at ``out_scale`` (the encoder's in_scale): int8 weights per output
    channel, int32 bias, per-channel multipliers.

    ``pin_channel`` c: subtract channel c's output from every channel, so
    channel c is 0 (a spare channel: weight column and bias zero). Exact for a
    pre-LN encoder: every reader of the residual stream is a LayerNorm, which
    ignores a per-token constant added to all channels, or a residual add,
    which carries it along to the next LayerNorm; calibrate the encoder on
    the pinned embedding. ``spare``: the Dyadic for spare channels
    (:func:`spare_constants`)."""
    w, b = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise ValueError(f"embedding: weight (K, C) and bias (C,) expected, got {w.shape} "
                         f"and {b.shape}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("embedding: weight or bias has non-finite values")
    if pin_channel is not None:
        c = int(pin_channel)
        if not 0 <= c < w.shape[1]:
            raise ValueError(f"pin_channel {pin_channel} outside 0..{w.shape[1] - 1}")
        w, b = w - w[:, c:c + 1], b - b[c]
        w[:, c], b[c] = 0.0, 0.0
    lin = _int8_linear("embed", w, b, in_scale, out_scale, m_bits, spare)
    return EmbedParams(lin, in_scale, out_scale, m_bits)


def pinned(x, channel=0):
    """``x`` with channel ``channel`` subtracted from every channel (float,
    last axis): the embedding quantize_embedding(pin_channel=...) computes."""
    x = np.asarray(x, dtype=np.float64)
    return x - x[..., channel:channel + 1]


def quantize_head(ln_weight, ln_bias, weight, bias, calib, *, eps, spare_norm=None,
                  spare_linear=None, percentile=100.0, headroom=2.0, m_bits=M_BITS_DEFAULT):
    """HeadParams of ``LayerNorm(y) @ weight + bias`` (weight (C, classes))
    on the encoder output, calibrated on float encoder outputs ``calib``
    (..., T, C).

    Folded, exactly in float: gamma and beta into the linear layer (the NORM
    gives plain xhat, one int8 scale for every channel; weight rows times
    gamma, bias + beta @ weight), and xhat's channel 0 into the others: the
    channels of xhat sum to zero, so ``xhat @ W == xhat[1:] @ (W[1:] - W[0])``
    and channel 0 is spare (its weight row zero; its NORM multiplier
    ``spare_norm``). Classes are logit columns 1.. (column 0 spare, zero, its
    multiplier ``spare_linear``), all at one int16 logit scale, ``headroom``
    times the calibrated range."""
    g, be = np.asarray(ln_weight, dtype=np.float64), np.asarray(ln_bias, dtype=np.float64)
    w, b = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    c = g.shape[0] if g.ndim == 1 else -1
    if g.shape != (c,) or be.shape != (c,) or w.ndim != 2 or w.shape[0] != c or \
            b.shape != (w.shape[1],) or c < 2:
        raise ValueError(f"head: expected ln weight/bias (C,), weight (C, N), bias (N,) with "
                         f"C >= 2, got {g.shape}, {be.shape}, {w.shape}, {b.shape}")
    y = np.asarray(calib, dtype=np.float64)
    if y.ndim < 2 or y.shape[-1] != c or y.size == 0 or not np.isfinite(y).all():
        raise ValueError(f"head calib: expected finite float (..., T, {c}), got {y.shape}")
    wf, bf = g[:, None] * w, b + be @ w
    wf = wf - wf[0]
    wf[0] = 0.0
    xhat = float_layernorm(y, 1.0, 0.0, eps)[0]
    s_u = _range(xhat[..., 1:], percentile) / INT8_MAX
    s_z = int_layernorm_scale(c)
    d = _dyadic(np.full(c, s_z / s_u), m_bits, "head.norm.requant")
    m, e = np.array(d.m), np.array(d.e)
    if spare_norm is not None:
        m[0], e[0] = spare_norm.m, spare_norm.e
    norm = NormParams(Dyadic(m, e, d.ratio), np.zeros(c, np.int32), np.ones(c, np.int8), s_u,
                      gamma=np.ones(c), beta=np.zeros(c), clamped=np.zeros(c, bool))
    s_logit = headroom * _range(xhat @ wf + bf, percentile) / INT16_MAX
    n = w.shape[1]
    w_pad, b_pad = np.zeros((c, n + 1)), np.zeros(n + 1)
    w_pad[:, 1:], b_pad[1:] = wf, bf
    lin = _int8_linear("head", w_pad, b_pad, s_u, s_logit, m_bits, spare_linear)
    return HeadParams(norm, lin, tuple(range(1, n + 1)), s_logit, m_bits)


def quantize_classifier(float_weights, cfg, embed_weight, embed_bias, feature_scale,
                        calib_features, head_weights, *, eps, **encoder_options):
    """(EmbedParams, EncoderParams, HeadParams) of a pre-LN encoder classifier:
    ``x = features * feature_scale @ embed_weight + embed_bias`` (pinned:
    channel 0 subtracted, :func:`quantize_embedding`), the encoder blocks
    (``float_weights``, ``cfg``; :func:`quantize_encoder` with
    ``encoder_options``, calibrated on the pinned embedding of
    ``calib_features``), then ``head_weights`` = (ln weight, ln bias, weight,
    bias) (:func:`quantize_head`, calibrated on the float stack's outputs with
    the dequantized weights). Spare channels take the attention passes'
    multipliers (:func:`spare_constants`): the embedding block 0's logits,
    the head NORM the last attn, the head linear the one before, so the
    compiler can place all three in the attention passes' constant sets."""
    cfg = EncoderConfig.coerce(cfg)
    if cfg.norm != "pre":
        raise ValueError("quantize_classifier: pinning the embedding needs a pre-LN encoder")
    wt, bt = np.asarray(embed_weight, np.float64), np.asarray(embed_bias, np.float64)
    f = np.asarray(calib_features, dtype=np.float64) * feature_scale
    x = pinned(f @ wt + bt)
    encoder = quantize_encoder(float_weights, cfg, x, **encoder_options)
    spare = spare_constants(encoder)
    emb = quantize_embedding(wt, bt, feature_scale, encoder.in_scale, pin_channel=0,
                             spare=spare[0], m_bits=cfg.m_bits)
    out = float_encoder_stack(x, dequantized_weights(float_weights, cfg), cfg)
    hd = quantize_head(*head_weights, out, eps=eps, spare_norm=spare[-1],
                       spare_linear=spare[-2] if len(spare) > 2 else None, m_bits=cfg.m_bits)
    return emb, encoder, hd
