"""Hugging Face Llama-family checkpoints (Llama, BitNet b1.58) -> the integer golden decoder.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (no
``transformers`` or torch needed; the safetensors file is read here, BF16
included). Supported (anything else raises :class:`UnsupportedCheckpoint`
naming the config field):

* ``model_type`` "llama" or "bitnet"; ``hidden_act`` "silu" or "relu2"
  (ReLU(gate)^2, bitnet-b1.58-2B-4T); GQA/MQA through
  ``num_key_value_heads``; ``head_dim``; ``rope_theta``; tied
  (``tie_word_embeddings``) or separate ``lm_head.weight``;
* BitNet sub-norms, detected from the tensors: bitnet_b1_58-large's
  ``self_attn.inner_attn_ln`` / ``mlp.ffn_layernorm`` and 2B-4T's
  ``self_attn.attn_sub_norm`` / ``mlp.ffn_sub_norm`` (RMSNorm before o_proj
  and down_proj);
* weights F32/F16/BF16 (latent weights, quantized here: ternary absmean per
  tensor, or int8 per output channel with ``weights="int8"``), or 2B-4T's
  packed uint8 (out/4, in): four 2-bit values w + 1, value i of a byte (bits
  2i, 2i+1) belonging to row block i (rows i*out/4 .. (i+1)*out/4 - 1), with
  a per-tensor ``weight_scale`` s (W = W_q / s, used as is, not re-quantized).

Refused: rope_scaling, attention_bias/mlp_bias true, sliding windows, MoE
fields, other hidden_act or model_type values.

Quantization (:func:`quantize`) calibrates every activation scale on a few
token sequences with the float reference of the *dequantized* weights
(golden.llm.float_forward), the same way host.quantize does for encoders:
int16 tensors get ``headroom * absmax / 32767``, int8 tensors ``absmax / 127``.
docs/llm.md lists every constant.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..golden.encoder import LinearParams
from ..golden.llm import (LOGIT_BITS, SOFTMAX_N, LayerParams, LlamaConfig, LlamaParams,
                          float_forward, float_weight_shapes, rope_tables)
from ..golden.nonlinear import INT32_MAX, iexp_x0
from ..golden.quant import INT8_MAX, INT16_MAX, _round_half_up
from .hf import UnsupportedCheckpoint, _read_config
from .quantize import _dyadic, _norm, quantize_weight

__all__ = ["UnsupportedCheckpoint", "read_safetensors", "write_safetensors", "pack_ternary",
           "unpack_ternary", "LlamaCheckpoint", "load_llama", "default_calibration_ids",
           "quantize", "logit_correlation"]

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}
_REFUSED = {"rope_scaling": None, "attention_bias": False, "mlp_bias": False,
            "sliding_window": None, "use_sliding_window": False}
_MOE = ("num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
        "n_routed_experts")
_SUB_NORMS = (("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
              ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm"))
_HF_LIN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
           "down": "mlp.down_proj"}
HEADROOM = 2.0
# SiLU input scale floor 1/64 (x0 = -64): IEXP's resolution 1/|x0| against the row divide's
# f = (2^31 - 1) // (|x0| 2^16) (about 2^15 / |x0|); gen.llmfidelity.silu_sweep measures
# the error by x0 (48..96 best, x0 = -8192 many times worse), docs/llm.md
SILU_X0 = 64


# --------------------------------------------------------------------------- safetensors

def read_safetensors(path):
    """name -> numpy array of a .safetensors file (BF16 widened to float32)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        a = np.frombuffer(raw[8 + n + lo:8 + n + hi], dtype=_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    """Write name -> (array, dtype) with dtype a safetensors name ("F32", "BF16", "U8", ...).

    BF16 rounds float32 to nearest even."""
    header, blobs, off = {}, [], 0
    for name, (a, dt) in tensors.items():
        if dt == "BF16":
            u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
            data = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
        else:
            data = np.ascontiguousarray(a, dtype=_DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(np.shape(a)),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def pack_ternary(w_t):
    """Pack ternary (out, in) weights as bitnet-b1.58-2B-4T does: uint8 (out/4, in)."""
    w = np.asarray(w_t, np.int64) + 1
    r = w.shape[0] // 4
    if w.shape[0] % 4:
        raise ValueError(f"packed weights need out_features divisible by 4, got {w.shape[0]}")
    return sum(w[i * r:(i + 1) * r] << (2 * i) for i in range(4)).astype(np.uint8)


def unpack_ternary(packed):
    """Inverse of pack_ternary: int8 (4 * rows, in) values in {-1, 0, 1}."""
    p = np.asarray(packed, np.uint8)
    w = np.concatenate([(p >> (2 * i)) & 3 for i in range(4)]).astype(np.int8) - 1
    if (w > 1).any():
        raise ValueError("packed weights hold the 2-bit code 3 (only w + 1 in {0, 1, 2} is valid)")
    return w


# --------------------------------------------------------------------------- loading

@dataclass(eq=False)
class LlamaCheckpoint:
    """An imported checkpoint: ``cfg`` (LlamaConfig), float ``weights`` by golden
    name ((in, out) layout; packed tensors dequantized), ``prequantized``
    {name: (ternary int8 (in, out), scale)} for packed tensors, ``tied``."""
    path: Path
    hf_config: dict
    cfg: LlamaConfig
    weights: dict
    prequantized: dict
    tied: bool

    def check_ids(self, ids, new_tokens=0):
        """Checked 1-D int64 prompt ids; ValueError for ids outside the vocabulary or a
        prompt (+ new_tokens) longer than the model's maximum positions."""
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise TypeError(f"input ids: expected integers, got dtype {a.dtype}")
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"input ids: expected a non-empty 1-D array, got shape {a.shape}")
        if a.min() < 0 or a.max() >= self.cfg.vocab:
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ValueError(f"input ids: token id {bad} outside the vocabulary "
                             f"[0, {self.cfg.vocab})")
        if a.size + new_tokens > self.cfg.max_pos:
            raise ValueError(f"input ids: {a.size} prompt tokens + {new_tokens} new tokens "
                             f"exceed the model's {self.cfg.max_pos} positions")
        return a.astype(np.int64)

    def quantized_weight(self, name, kind="ternary"):
        """(int8 (in, out), scale) of a linear weight: the given ternary codes of a packed
        tensor, else quantize_weight of the float weight (head: always int8 per channel)."""
        if name in self.prequantized:
            return self.prequantized[name]
        return quantize_weight(self.weights[name], "int8" if name == "head" else kind)

    def dequantized_weights(self, kind="ternary"):
        """Float weights with every linear (and the head) replaced by its quantized value."""
        out = dict(self.weights)
        for name in out:
            if name == "head" or name.rsplit(".", 1)[-1] in _HF_LIN:
                q, s = self.quantized_weight(name, kind)
                out[name] = q.astype(np.float64) * np.asarray(s, np.float64)
        return out


def _check_config(hf):
    mtype = hf.get("model_type")
    if mtype not in ("llama", "bitnet"):
        raise UnsupportedCheckpoint(f"config.json: model_type={mtype!r}; supported: 'llama', "
                                    f"'bitnet' (Llama-family decoders)")
    for key, ok in _REFUSED.items():
        if hf.get(key, ok) not in (ok, None, False):
            raise UnsupportedCheckpoint(f"config.json: {key}={hf[key]!r} is not supported")
    for key in _MOE:
        if hf.get(key):
            raise UnsupportedCheckpoint(f"config.json: {key}={hf[key]!r}: mixture-of-experts "
                                        f"models are not supported")
    act = hf.get("hidden_act", "silu")
    if act not in ("silu", "relu2"):
        raise UnsupportedCheckpoint(f"config.json: hidden_act={act!r}; supported: 'silu', "
                                    f"'relu2'")
    need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size")
    missing = [k for k in need if k not in hf]
    if missing:
        raise ValueError(f"config.json: missing {missing}")
    return act


def _tensor(t, name, shape):
    if name not in t:
        raise ValueError(f"model.safetensors: missing tensor {name!r} (expected shape {shape})")
    a = t[name]
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"model.safetensors: {name} has shape {tuple(a.shape)}, "
                         f"expected {tuple(shape)}")
    a = np.asarray(a, np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"model.safetensors: {name} contains non-finite values")
    return a


def load_llama(path, max_pos=None, **overrides):
    """Load a checkpoint directory into a :class:`LlamaCheckpoint`.

    ``max_pos`` caps the positions (KV rows) the integer model is built for
    (default: max_position_embeddings, at most 2048); ``overrides``: other
    LlamaConfig fields (probs_bits, logit_bits, attn_scale, m_bits).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (config.json + "
                                f"model.safetensors)")
    hf = _read_config(path)
    act = _check_config(hf)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors")
    t = read_safetensors(path / "model.safetensors")
    c, heads = hf["hidden_size"], hf["num_attention_heads"]
    sub = next((pair for pair in _SUB_NORMS if f"model.layers.0.{pair[0]}.weight" in t), None)
    cfg = LlamaConfig(
        vocab=hf["vocab_size"], hidden=c, layers=hf["num_hidden_layers"], heads=heads,
        kv_heads=hf.get("num_key_value_heads") or heads, ffn=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or c // heads, act=act, sub_norm=sub is not None,
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        max_pos=max_pos or min(int(hf.get("max_position_embeddings", 2048)), 2048),
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)), **overrides)
    shapes = float_weight_shapes(cfg)
    tied = bool(hf.get("tie_word_embeddings", False))
    if not tied and "lm_head.weight" not in t:
        raise ValueError("model.safetensors: no lm_head.weight and tie_word_embeddings is "
                         "false")
    weights, pre = {"embed": _tensor(t, "model.embed_tokens.weight", shapes["embed"]),
                    "norm": _tensor(t, "model.norm.weight", shapes["norm"])}, {}
    weights["head"] = (weights["embed"] if tied else
                       _tensor(t, "lm_head.weight", shapes["head"][::-1])).T.copy()
    for i in range(cfg.layers):
        p, g = f"model.layers.{i}.", f"layers.{i}."
        weights[g + "attn_norm"] = _tensor(t, p + "input_layernorm.weight", (c,))
        weights[g + "mlp_norm"] = _tensor(t, p + "post_attention_layernorm.weight", (c,))
        if sub:
            weights[g + "attn_sub_norm"] = _tensor(t, f"{p}{sub[0]}.weight",
                                                   shapes[g + "attn_sub_norm"])
            weights[g + "ffn_sub_norm"] = _tensor(t, f"{p}{sub[1]}.weight",
                                                  shapes[g + "ffn_sub_norm"])
        for n, hname in _HF_LIN.items():
            k_in, n_out = shapes[g + n]
            key = f"{p}{hname}.weight"
            if key in t and t[key].dtype == np.uint8:
                if f"{p}{hname}.weight_scale" not in t:
                    raise ValueError(f"model.safetensors: packed {key} has no weight_scale")
                raw = t[key]
                if raw.shape != (n_out // 4, k_in):
                    raise ValueError(f"model.safetensors: packed {key} has shape {raw.shape}, "
                                     f"expected {(n_out // 4, k_in)}")
                s = float(np.asarray(t[f"{p}{hname}.weight_scale"], np.float64).ravel()[0])
                if not (math.isfinite(s) and s > 0):
                    raise ValueError(f"model.safetensors: {p}{hname}.weight_scale = {s}")
                w_t = np.ascontiguousarray(unpack_ternary(raw).T)
                pre[g + n] = (w_t, 1.0 / s)
                weights[g + n] = w_t.astype(np.float64) / s
            else:
                weights[g + n] = _tensor(t, key, (n_out, k_in)).T.copy()
    return LlamaCheckpoint(path, hf, cfg, weights, pre, tied)


# --------------------------------------------------------------------------- quantization

def default_calibration_ids(vocab, count=4, length=48, seed=1234):
    """Random token sequences for calibration when no text is at hand."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, length) for _ in range(count)]


def _ranges(weights, cfg, calib_ids):
    traces = [float_forward(weights, cfg, np.asarray(ids), trace=True) for ids in calib_ids]
    return {k: max(max(float(np.abs(t[k]).max()) for t in traces), 1e-12) for k in traces[0]}


def _lin(name, w_int, w_scale, kind, in_scale, out_scale, mb):
    acc = in_scale * np.asarray(w_scale, np.float64)
    return LinearParams(name=name, kind=kind, weights=w_int, bias=None,
                        requant=_dyadic(acc / out_scale, mb, f"{name}.requant"),
                        w_scale=w_scale, in_scale=in_scale, out_scale=out_scale,
                        row_scaled=True)


def quantize(ckpt, calib_ids=None, kind="ternary", headroom=HEADROOM):
    """Calibrate and quantize a checkpoint into :class:`~trilut.golden.llm.LlamaParams`.

    ``calib_ids``: a list of 1-D token id arrays (default
    :func:`default_calibration_ids`); ``kind``: "ternary" (absmean per tensor)
    or "int8" (per output channel) for float latent weights; ``headroom``
    multiplies the calibrated range of every int16 tensor.
    """
    cfg, mb = ckpt.cfg, ckpt.cfg.m_bits
    if calib_ids is None:
        calib_ids = default_calibration_ids(cfg.vocab, length=min(48, cfg.max_pos))
    calib = [ckpt.check_ids(ids) for ids in calib_ids]
    r = _ranges(ckpt.dequantized_weights(kind), cfg, calib)
    s16 = lambda n: headroom * r[n] / INT16_MAX   # noqa: E731
    s8 = lambda n: r[n] / INT8_MAX                 # noqa: E731
    emb = ckpt.weights["embed"]
    s_x = max(float(np.abs(emb).max()), 1e-12) / INT16_MAX
    embed = np.clip(_round_half_up(emb / s_x), -INT16_MAX, INT16_MAX).astype(np.int16)
    k_max = INT32_MAX // (cfg.max_pos << SOFTMAX_N)
    if k_max < 1:
        raise ValueError(f"max_pos={cfg.max_pos} too long for Shiftmax rows (sum saturates)")
    d, layers = cfg.head_dim, []

    def lin(name, src_scale, out_scale):
        w_int, w_s = ckpt.quantized_weight(name, kind)
        k = "int8" if (name == "head" or (kind == "int8" and name not in ckpt.prequantized)) \
            else "ternary"
        return _lin(name, w_int, w_s, k, src_scale / INT8_MAX, out_scale, mb)

    def norm(name, size, scale):
        return _norm(name, ckpt.weights[name], np.zeros(size), size, scale, mb, 16, True)

    for i in range(cfg.layers):
        p = f"layers.{i}."
        sc = {n: s16(p + n) for n in ("attn_norm", "q", "k", "attn", "res1", "mlp_norm",
                                      "up", "act", "h", "res2")}
        sc.update(v=s8(p + "v"), q_rope=s8(p + "q_rope"))
        sc["k_rope"] = s8(p + "k_rope") if cfg.attn_scale == "static" else s16(p + "k_rope")
        sc["gate"] = max(s16(p + "gate"), 1.0 / SILU_X0) if cfg.act == "silu" \
            else s16(p + "gate")
        k_l = int(min(max(math.floor(((1 << (cfg.logit_bits - 1)) - 1) / r[p + "logits"]), 1),
                      k_max))
        k_eff = sc["k_rope"] / (INT8_MAX if cfg.attn_scale == "token" else 1)
        rope = 2.0 ** -14
        s_in = sc["attn_norm"]
        attn_sub, ffn_sub, o_in, down_in = None, None, sc["attn"], sc["h"]
        if cfg.sub_norm:
            sc.update(attn_sub=s16(p + "attn_sub"), ffn_sub=s16(p + "ffn_sub"))
            attn_sub = norm(p + "attn_sub_norm", cfg.heads * d, sc["attn_sub"])
            ffn_sub = norm(p + "ffn_sub_norm", cfg.ffn, sc["ffn_sub"])
            o_in, down_in = sc["attn_sub"], sc["ffn_sub"]
        prod = sc["gate"] * 2.0 ** -15 if cfg.act == "silu" else sc["gate"] ** 2
        s_prev = s_x if i == 0 else layers[-1].scales["res2"]
        layers.append(LayerParams(
            attn_norm=norm(p + "attn_norm", cfg.hidden, s_in),
            q=lin(p + "q", s_in, sc["q"]), k=lin(p + "k", s_in, sc["k"]),
            v=lin(p + "v", s_in, sc["v"]),
            q_rope=_dyadic(sc["q"] * rope / sc["q_rope"], mb, p + "q_rope"),
            k_rope=_dyadic(sc["k"] * rope / sc["k_rope"], mb, p + "k_rope"),
            logits=_dyadic(sc["q_rope"] * k_eff * k_l / math.sqrt(d), mb, p + "logits"),
            softmax_x0=-k_l,
            attn=_dyadic(2.0 ** -(cfg.probs_bits - 1) * sc["v"] / sc["attn"], mb, p + "attn"),
            attn_sub_norm=attn_sub, o=lin(p + "o", o_in, sc["res1"]),
            res1_x=_dyadic(s_prev / sc["res1"], mb, p + "res1_x"),
            mlp_norm=norm(p + "mlp_norm", cfg.hidden, sc["mlp_norm"]),
            gate=lin(p + "gate", sc["mlp_norm"], sc["gate"]),
            up=lin(p + "up", sc["mlp_norm"], sc["up"]),
            act_x0=iexp_x0(sc["gate"]) if cfg.act == "silu" else None,
            act_out=_dyadic(prod / sc["act"], mb, p + "act_out"),
            hid=_dyadic(sc["act"] * sc["up"] / sc["h"], mb, p + "hid"),
            ffn_sub_norm=ffn_sub, down=lin(p + "down", down_in, sc["res2"]),
            res2_x=_dyadic(sc["res1"] / sc["res2"], mb, p + "res2_x"), scales=sc))
    s_norm = s16("norm")
    s_logit = headroom * r["logits"] / ((1 << (LOGIT_BITS - 1)) - 1)
    cos, sin = rope_tables(d, cfg.rope_theta, cfg.max_pos)
    return LlamaParams(cfg=cfg, embed=embed, in_scale=s_x, layers=tuple(layers),
                       norm=norm("norm", cfg.hidden, s_norm), head=lin("head", s_norm, s_logit),
                       logit_scale=s_logit, rope_cos=cos, rope_sin=sin)


def logit_correlation(a, b):
    """Per-row Pearson correlation of two (T, vocab) logit arrays (rows centred over vocab)."""
    a = np.asarray(a, np.float64) - np.mean(a, axis=-1, keepdims=True)
    b = np.asarray(b, np.float64) - np.mean(b, axis=-1, keepdims=True)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide((a * b).sum(-1), den, out=np.ones(den.shape), where=den > 0)
