"""Pretrained Hugging Face encoders (BERT and ViT families) in the integer golden pipeline.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (the
Hugging Face layout; no network access, no ``transformers`` needed). Supported:

* ``model_type == "bert"`` (BertModel, and Bert* head models: only the
  encoder is used, key prefix ``bert.`` stripped): BERT, MiniLM and other
  BERT-shaped encoders with absolute position embeddings and erf GELU.
  Input: token ids.
* ``model_type == "vit"`` (ViTModel, ViT* heads, prefix ``vit.``): input
  pixels (batch, channels, image_size, image_size), already normalized as the
  checkpoint's image processor does.

Anything else (RoBERTa, DistilBERT, decoders, other activations or position
embeddings) raises :class:`UnsupportedCheckpoint` naming what config.json
declares and what is supported.

Mapping onto :mod:`trilut.golden.encoder` (layer i -> ``blocks.i.*``)::

    golden   BERT (norm="post")            ViT (norm="pre")
    q, k, v  attention.self.{query,...}    attention.attention.{query,...}
    o        attention.output.dense        attention.output.dense
    ln1      attention.output.LayerNorm    layernorm_before
             (after res1 = x + o)          (before attention)
    fc1      intermediate.dense            intermediate.dense
    fc2      output.dense                  output.dense
    ln2      output.LayerNorm              layernorm_after
             (after res2 = ln1 + fc2)      (before fc1)

BERT is post-LN: golden.encoder's ``norm="post"`` blocks compute exactly its
dataflow (no re-association). torch ``Linear.weight`` (out, in) is
transposed to the golden (in, out).

Host side, in float: the embeddings (BERT: word + position + token type 0,
position ids 0..T-1, then the embedding LayerNorm; ViT: the patch
projection, the class token and position embeddings); the result is
quantized to the int16 residual stream at the calibrated input scale
(quantize_input). ViT's final LayerNorm: the integer LayerNorm
(int_layernorm) of the last block's output, its gamma/beta applied while
dequantizing. The encoder layers run in integers with int8 per-channel
weights and, by default (:data:`IMPORT_DEFAULTS`), the issue #7 modes:
per-token activation quantization in front of every linear layer, 16-bit
Shiftmax output, the accurate ShiftGELU mode, attention-logit scales snapped
so x0 is exact, and accumulator widths checked on the calibration set
(WIDTH_HEADROOM). The last hidden state is dequantized at the last block's
output scale.

Attention masks (BERT): each sequence runs on its unmasked tokens only
(keeping their position ids), which is what BERT's additive -10000 mask
computes up to exp(-10000); masked positions of the output are 0.

Calibration uses :func:`calibration_ids`: the CALIBRATION_SENTENCES one by
one plus two paragraphs made of them (so longer inputs are covered), tokenized
with the checkpoint's own WordPiece vocabulary, unless other inputs are
given; ViT needs calibration pixels.
"""
from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..golden.encoder import EncoderConfig, encoder_stack, float_encoder_stack, float_layernorm
from ..golden.nonlinear import int_layernorm, int_layernorm_scale
from .quantize import dequantize_output, quantize_encoder, quantize_input

__all__ = [
    "SUPPORTED", "IMPORT_DEFAULTS", "CALIBRATION_SENTENCES", "calibration_ids",
    "UnsupportedCheckpoint",
    "HFEncoder", "load_checkpoint", "WordPiece", "load_tokenizer", "cosine", "hf_run",
]

SUPPORTED = ("model_type 'bert' (BertModel and Bert* heads: BERT, MiniLM) and "
             "model_type 'vit' (ViTModel and ViT* heads)")

# Quantization choices for imported checkpoints (SPEC 1, 4.3, 4.5, 4.6); the
# LayerNorm position ("post" for BERT, "pre" for ViT) comes from the architecture.
IMPORT_DEFAULTS = dict(weights="int8", act_quant="token", probs_bits=16, gelu_mode="accurate")
WIDTH_HEADROOM = 2.0     # calibrated accumulator ranges must fit twice over

_ARCH = {   # model_type -> (architecture prefix, key prefix, norm, layer map)
    "bert": ("Bert", "bert.", "post", {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
        "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm"}),
    "vit": ("ViT", "vit.", "pre", {
        "q": "attention.attention.query", "k": "attention.attention.key",
        "v": "attention.attention.value", "o": "attention.output.dense",
        "ln1": "layernorm_before", "fc1": "intermediate.dense", "fc2": "output.dense",
        "ln2": "layernorm_after"}),
}
_NEED = {"bert": ("vocab_size", "max_position_embeddings"), "vit": ("image_size", "patch_size")}
_LINEARS = ("q", "k", "v", "o", "fc1", "fc2")

# Sentences for activation calibration only (never used to measure fidelity).
CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A field-programmable gate array can be reconfigured after manufacturing.",
    "She sold her old bicycle and bought a pair of running shoes instead.",
    "Integer arithmetic is cheaper than floating point on small devices.",
    "The museum opens at nine in the morning, except on public holidays.",
    "How many layers does the network have, and how wide is each one?",
    "Rain is expected across the northern region for most of the week.",
    "He forgot his umbrella at the station, so he walked home soaked.",
    "Transformers process every token of a sentence in parallel.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Our team won the match after a penalty in the final minute!",
    "Please send the signed contract back before Friday afternoon.",
    "Quantum computers promise speedups for certain search problems.",
    "The library lends books, films and, surprisingly, gardening tools.",
    "Why do cats always sit on the keyboard when you are working?",
    "Prices rose by 3.5 percent in March, the fastest pace in a year.",
)


def calibration_ids(tokenizer, max_len=512):
    """Default BERT calibration set: each CALIBRATION_SENTENCE, then two paragraphs
    (first and second half of the sentences joined), as id arrays of at most
    ``max_len`` tokens (longer ones cut, keeping the final [SEP])."""
    half = len(CALIBRATION_SENTENCES) // 2
    texts = list(CALIBRATION_SENTENCES) + [" ".join(CALIBRATION_SENTENCES[:half]),
                                           " ".join(CALIBRATION_SENTENCES[half:])]
    ids = [tokenizer.encode(t) for t in texts]
    return [a if len(a) <= max_len else np.append(a[:max_len - 1], a[-1]) for a in ids]


class UnsupportedCheckpoint(ValueError):
    """The checkpoint's architecture or options are not supported (message says which)."""


def cosine(a, b, axis=-1):
    """Cosine similarity along ``axis`` (0 where either vector is zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis)
    num = (a * b).sum(axis=axis)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


# --------------------------------------------------------------------------- loading

def _read_config(path):
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face checkpoint "
                                f"directory with config.json and model.safetensors)")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None


def _check_supported(hf):
    """The checkpoint's kind ("bert" or "vit"); UnsupportedCheckpoint otherwise."""
    arch = hf.get("architectures") or []
    mtype = hf.get("model_type")
    found = f"model_type={mtype!r}, architectures={arch}"
    if mtype not in _ARCH or any(not a.startswith(_ARCH[mtype][0]) for a in arch):
        raise UnsupportedCheckpoint(f"unsupported checkpoint ({found}); supported: {SUPPORTED}")
    checks = [("hidden_act", "gelu"), ("is_decoder", False), ("add_cross_attention", False)]
    if mtype == "bert":
        checks.append(("position_embedding_type", "absolute"))
    for key, want in checks:
        got = hf.get(key, want)
        if got != want:
            raise UnsupportedCheckpoint(f"unsupported checkpoint ({found}): {key}={got!r}, "
                                        f"only {want!r} is supported")
    need = ("hidden_size", "num_attention_heads", "num_hidden_layers",
            "intermediate_size") + _NEED[mtype]
    missing = [k for k in need if k not in hf]
    if missing:
        raise ValueError(f"config.json: missing {missing}")
    return mtype


def _load_tensors(path, prefix):
    from safetensors.numpy import load_file
    st = path / "model.safetensors"
    if not st.is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors")
    tensors = load_file(str(st))
    if any(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def _get(tensors, name, shape, default=None):
    if name not in tensors:
        if default is not None:
            return default
        raise ValueError(f"model.safetensors: missing tensor {name!r} (expected shape {shape})")
    a = np.asarray(tensors[name], dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"model.safetensors: {name} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"model.safetensors: {name} contains non-finite values")
    return a


@dataclass(eq=False)
class HFEncoder:
    """An imported checkpoint: float weights, host-side embeddings, config.

    ``kind``: "bert" or "vit". ``weights``: golden-named float encoder
    weights (blocks.*). ``embeddings``: BERT: word (V, C), position (P, C),
    token_type (types, C), ln.weight/ln.bias; ViT: patch.weight (C, ch*p*p),
    patch.bias, cls (C,), position (N+1, C), final_ln.weight/final_ln.bias.
    ``cfg``: the EncoderConfig of the integer pipeline; ``hf_config``:
    config.json as a dict; ``params``: EncoderParams once :meth:`quantize` ran.

    Inputs are given as keywords everywhere: ``input_ids`` (+ optional
    ``attention_mask``) for BERT, ``pixels`` for ViT.
    """
    kind: str
    path: Path
    hf_config: dict
    cfg: EncoderConfig
    weights: dict
    embeddings: dict
    params: object = field(default=None, repr=False)

    @property
    def vocab_size(self):
        return self.embeddings["word"].shape[0]

    @property
    def max_tokens(self):
        """Longest token sequence (BERT): position embeddings and cfg.max_seq."""
        return min(self.embeddings["position"].shape[0], self.cfg.max_seq)

    # ---- host side, float
    def check_ids(self, input_ids, attention_mask=None):
        """Checked (B, T) int64 ids and (B, T) bool mask; ValueError on bad shape/values."""
        if self.kind != "bert":
            raise ValueError(f"input_ids: a {self.kind} checkpoint takes pixels, not token ids")
        ids = np.asarray(input_ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids: expected integer token ids, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise ValueError(f"input_ids: expected shape (batch, tokens), got {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"input_ids: token id {bad} outside the vocabulary "
                             f"[0, {self.vocab_size})")
        limit = self.max_tokens
        if ids.shape[1] > limit:
            raise ValueError(f"input_ids: {ids.shape[1]} tokens exceed the model's "
                             f"maximum of {limit}")
        if attention_mask is None:
            mask = np.ones(ids.shape, bool)
        else:
            mask = np.asarray(attention_mask)
            if mask.ndim == 1:
                mask = mask[None]
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask: shape {mask.shape} differs from input_ids "
                                 f"{ids.shape}")
            if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
                raise ValueError("attention_mask: values must be 0 or 1")
            mask = mask.astype(bool)
            empty = np.flatnonzero(~mask.any(axis=1))
            if empty.size:
                raise ValueError(f"attention_mask: sequence {int(empty[0])} has no unmasked "
                                 f"token")
        return ids.astype(np.int64), mask

    def check_pixels(self, pixels):
        """Checked float64 (B, channels, size, size) pixels; ValueError on bad shape/values."""
        if self.kind != "vit":
            raise ValueError(f"pixels: a {self.kind} checkpoint takes token ids, not pixels")
        hf = self.hf_config
        px = np.asarray(pixels)
        if px.dtype.kind not in "iuf":
            raise TypeError(f"pixels: expected a real array, got dtype {px.dtype}")
        if px.ndim == 3:
            px = px[None]
        want = (hf.get("num_channels", 3), hf["image_size"], hf["image_size"])
        if px.ndim != 4 or px.shape[1:] != want or px.shape[0] == 0:
            raise ValueError(f"pixels: expected shape (batch, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {px.shape}")
        px = px.astype(np.float64)
        if not np.isfinite(px).all():
            raise ValueError("pixels: contains non-finite values (nan or inf)")
        return px

    def embed(self, ids, positions=None):
        """BERT: float block-0 input of a sequence (T,) or batch (B, T): LN(word + pos + type 0)."""
        e = self.embeddings
        ids = np.asarray(ids)
        pos = np.arange(ids.shape[-1]) if positions is None else np.asarray(positions)
        x = e["word"][ids] + e["position"][pos] + e["token_type"][0]
        return float_layernorm(x, e["ln.weight"], e["ln.bias"], self.cfg.ln_eps)[1]

    def embed_pixels(self, pixels):
        """ViT: float block-0 input (B, N+1, C) of checked pixels: [cls; patches] + position."""
        e, p = self.embeddings, self.hf_config["patch_size"]
        b, ch, h, w = pixels.shape
        patches = pixels.reshape(b, ch, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        tokens = patches.reshape(b, (h // p) * (w // p), ch * p * p) @ e["patch.weight"].T \
            + e["patch.bias"]
        cls = np.broadcast_to(e["cls"], (b, 1, e["cls"].shape[-1]))
        return np.concatenate([cls, tokens], axis=1) + e["position"]

    def _rows(self, input_ids=None, attention_mask=None, pixels=None):
        """(output shape (B, T), [(b, positions, float block-0 input (T_b, C)), ...])."""
        if (input_ids is None) == (pixels is None):
            raise ValueError("give exactly one of input_ids (BERT) or pixels (ViT)")
        if pixels is not None:
            x = self.embed_pixels(self.check_pixels(pixels))
            pos = np.arange(x.shape[1])
            return x.shape[:2], [(b, pos, x[b]) for b in range(x.shape[0])]
        ids, mask = self.check_ids(input_ids, attention_mask)
        rows = []
        for b in range(ids.shape[0]):
            pos = np.flatnonzero(mask[b])
            rows.append((b, pos, self.embed(ids[b, pos], pos)))
        return ids.shape, rows

    def _final_norm(self, h):
        e = self.embeddings
        return float_layernorm(h, e["final_ln.weight"], e["final_ln.bias"], self.cfg.ln_eps)[1]

    def float_forward(self, **inputs):
        """Float reference last hidden state (B, T, C) float64 (masked positions 0)."""
        shape, rows = self._rows(**inputs)
        out = np.zeros(tuple(shape) + (self.cfg.hidden,))
        for b, pos, x in rows:
            h = float_encoder_stack(x, self.weights, self.cfg)
            out[b, pos] = self._final_norm(h) if self.kind == "vit" else h
        return out

    # ---- integer pipeline
    def quantize(self, percentile=100.0, width_headroom=WIDTH_HEADROOM, calib_ids=None,
                 calib_pixels=None):
        """Calibrate and quantize; sets and returns self.params (EncoderParams).

        BERT: calib_ids, a list of 1-D id sequences (any lengths) or a (B, T)
        array; default :func:`calibration_ids` with the checkpoint's tokenizer.
        ViT: calib_pixels (required).
        """
        if self.kind == "vit":
            if calib_pixels is None:
                raise ValueError("quantize: a ViT checkpoint needs calib_pixels")
            xs = [x[None] for _, _, x in self._rows(pixels=calib_pixels)[1]]
        else:
            if calib_ids is None:
                tok = load_tokenizer(self.path)
                calib_ids = calibration_ids(tok, self.max_tokens)
            xs = [self._rows(input_ids=np.asarray(c))[1][0][2][None] for c in calib_ids]
        self.params = quantize_encoder(self.weights, self.cfg, xs, percentile=percentile,
                                       width_headroom=width_headroom)
        return self.params

    def integer_forward(self, float_ops=(), progress=None, **inputs):
        """Integer pipeline's last hidden state, dequantized: (B, T, C) float64.

        Needs :meth:`quantize` first. ``float_ops``: operators returned to
        float (error attribution, see encoder_block; "layernorm" also covers
        ViT's final LayerNorm). ``progress(i, n)`` is called after each
        sequence or image.
        """
        if self.params is None:
            raise ValueError("integer_forward: call quantize() first")
        shape, rows = self._rows(**inputs)
        out = np.zeros(tuple(shape) + (self.cfg.hidden,))
        for i, (b, pos, x) in enumerate(rows):
            y = encoder_stack(quantize_input(x, self.params), self.params, float_ops=float_ops)
            if self.kind == "vit" and "layernorm" not in float_ops:
                e = self.embeddings
                xhat = int_layernorm(y) * int_layernorm_scale(self.cfg.hidden)
                out[b, pos] = xhat * e["final_ln.weight"] + e["final_ln.bias"]
            elif self.kind == "vit":
                out[b, pos] = self._final_norm(dequantize_output(y, self.params))
            else:
                out[b, pos] = dequantize_output(y, self.params)
            if progress is not None:
                progress(i + 1, len(rows))
        return out


def _embeddings(kind, hf, t, c):
    if kind == "bert":
        return {
            "word": _get(t, "embeddings.word_embeddings.weight", (hf["vocab_size"], c)),
            "position": _get(t, "embeddings.position_embeddings.weight",
                             (hf["max_position_embeddings"], c)),
            "token_type": _get(t, "embeddings.token_type_embeddings.weight",
                               (hf.get("type_vocab_size", 2), c)),
            "ln.weight": _get(t, "embeddings.LayerNorm.weight", (c,)),
            "ln.bias": _get(t, "embeddings.LayerNorm.bias", (c,)),
        }
    ch, size, p = hf.get("num_channels", 3), hf["image_size"], hf["patch_size"]
    if size % p:
        raise UnsupportedCheckpoint(f"image_size={size} is not a multiple of patch_size={p}")
    n = (size // p) ** 2
    return {
        "patch.weight": _get(t, "embeddings.patch_embeddings.projection.weight",
                             (c, ch, p, p)).reshape(c, ch * p * p),
        "patch.bias": _get(t, "embeddings.patch_embeddings.projection.bias", (c,)),
        "cls": _get(t, "embeddings.cls_token", (1, 1, c)).reshape(c),
        "position": _get(t, "embeddings.position_embeddings", (1, n + 1, c)).reshape(n + 1, c),
        "final_ln.weight": _get(t, "layernorm.weight", (c,)),
        "final_ln.bias": _get(t, "layernorm.bias", (c,)),
    }


def load_checkpoint(path, **overrides):
    """Load a Hugging Face checkpoint directory into an :class:`HFEncoder`.

    ``overrides``: EncoderConfig fields replacing IMPORT_DEFAULTS (e.g.
    ``gelu_mode="ivit"``, ``probs_bits=8``). Raises UnsupportedCheckpoint
    for other architectures, FileNotFoundError for a missing file,
    ValueError naming a missing or misshapen tensor.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory (expected a Hugging Face checkpoint "
                                f"directory with config.json and model.safetensors)")
    hf = _read_config(path)
    kind = _check_supported(hf)
    _, prefix, norm, layer_map = _ARCH[kind]
    c, f, n = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    max_seq = (min(int(hf["max_position_embeddings"]), 512) if kind == "bert"
               else (hf["image_size"] // hf["patch_size"]) ** 2 + 1)
    settings = dict(IMPORT_DEFAULTS, hidden=c, heads=hf["num_attention_heads"], ffn=f,
                    layers=n, norm=norm, ln_eps=float(hf.get("layer_norm_eps", 1e-12)),
                    max_seq=max_seq)
    settings.update(overrides)
    cfg = EncoderConfig.coerce(settings)
    t = _load_tensors(path, prefix)
    emb = _embeddings(kind, hf, t, c)
    shapes = {"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c), "fc1": (f, c), "fc2": (c, f)}
    no_qkv_bias = kind == "vit" and not hf.get("qkv_bias", True)
    weights = {}
    for i in range(n):
        for gname, hname in layer_map.items():
            src, dst = f"encoder.layer.{i}.{hname}", f"blocks.{i}.{gname}"
            if gname in _LINEARS:
                out_f = shapes[gname][0]
                weights[dst + ".weight"] = np.ascontiguousarray(
                    _get(t, src + ".weight", shapes[gname]).T)
                zero = np.zeros(out_f) if no_qkv_bias and gname in ("q", "k", "v") else None
                weights[dst + ".bias"] = _get(t, src + ".bias", (out_f,), zero)
            else:
                weights[dst + ".weight"] = _get(t, src + ".weight", (c,))
                weights[dst + ".bias"] = _get(t, src + ".bias", (c,))
    return HFEncoder(kind=kind, path=path, hf_config=hf, cfg=cfg, weights=weights,
                     embeddings=emb)


# --------------------------------------------------------------------------- tokenizer

def _is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class WordPiece:
    """BERT's uncased/cased WordPiece tokenizer (BasicTokenizer + greedy longest match).

    vocab: token -> id. ``encode(text)`` returns [CLS] pieces [SEP] as int64.
    Rules as BERT's reference tokenizer: drop control characters, whitespace
    split, optional lowercase + accent stripping, CJK characters and
    punctuation as single tokens, then longest-match-first word pieces
    (continuations prefixed "##"; a word with no match or longer than
    ``max_chars`` becomes [UNK]).
    """

    def __init__(self, vocab, lowercase=True, max_chars=100):
        self.vocab = dict(vocab)
        self.lowercase = lowercase
        self.max_chars = max_chars
        for tok in ("[CLS]", "[SEP]", "[UNK]"):
            if tok not in self.vocab:
                raise ValueError(f"vocabulary lacks {tok}")

    def _words(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                            and ch not in "\t\n\r"):
                continue
            out.append(f" {ch} " if _is_cjk(cp) else " " if ch.isspace() else ch)
        words = []
        for w in "".join(out).split():
            if self.lowercase:
                w = "".join(c for c in unicodedata.normalize("NFD", w.lower())
                            if unicodedata.category(c) != "Mn")
            cur = ""
            for ch in w:
                if _is_punct(ch):
                    if cur:
                        words.append(cur)
                    words.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def tokenize(self, text):
        pieces = []
        for w in self._words(text):
            if len(w) > self.max_chars:
                pieces.append("[UNK]")
                continue
            start, sub = 0, []
            while start < len(w):
                end = len(w)
                while end > start:
                    cand = w[start:end] if start == 0 else "##" + w[start:end]
                    if cand in self.vocab:
                        break
                    end -= 1
                if end == start:
                    sub = ["[UNK]"]
                    break
                sub.append(cand)
                start = end
            pieces.extend(sub)
        return pieces

    def encode(self, text):
        toks = ["[CLS]"] + self.tokenize(text) + ["[SEP]"]
        return np.array([self.vocab[t] for t in toks], dtype=np.int64)


def load_tokenizer(path):
    """The checkpoint's WordPiece tokenizer from vocab.txt or tokenizer.json."""
    path = Path(path)
    lowercase = True
    tc = path / "tokenizer_config.json"
    if tc.is_file():
        lowercase = bool(json.loads(tc.read_text()).get("do_lower_case", True))
    if (path / "vocab.txt").is_file():
        lines = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return WordPiece({t: i for i, t in enumerate(lines)}, lowercase)
    if (path / "tokenizer.json").is_file():
        tj = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        model = tj.get("model", {})
        if model.get("type") != "WordPiece":
            raise UnsupportedCheckpoint(f"{path}/tokenizer.json: model type "
                                        f"{model.get('type')!r}, only WordPiece is supported")
        norm = tj.get("normalizer") or {}
        lowercase = bool(norm.get("lowercase", lowercase))
        return WordPiece(model["vocab"], lowercase, model.get("max_input_chars_per_word", 100))
    raise FileNotFoundError(f"{path}: no vocab.txt or tokenizer.json (give token ids for "
                            f"calibration instead)")


# --------------------------------------------------------------------------- command line

def _load_npy(what, path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{what}: {path} is not a NumPy .npy array ({exc})") from None


def hf_run(checkpoint, out, input_ids=None, attention_mask=None, pixels=None, calib=None,
           overrides=None, log=print):
    """``trilut hf-run``: integer pipeline on token ids or pixels, float32 hidden state.

    Paths (.npy): ``input_ids`` (B, T) or (T,) integers with optional
    ``attention_mask`` (same shape, 0/1) for BERT, or ``pixels`` (B, ch, H, W)
    for ViT; ``out`` to write (B, T, hidden) float32; ``calib``: calibration
    token ids (rows) or pixels. Default calibration: BERT: calibration_ids()
    with the checkpoint's tokenizer; otherwise (ViT, or no vocabulary files)
    the inputs themselves (logged). Returns a summary dict (shape, cosine to
    the float reference, seconds).
    """
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm
    t0 = time.monotonic()
    model = load_checkpoint(checkpoint, **(overrides or {}))
    if (input_ids is None) == (pixels is None):
        raise ValueError("give exactly one of --input-ids (BERT) or --pixels (ViT)")
    if input_ids is not None:
        ids = _load_npy("--input-ids", input_ids)
        mask = None if attention_mask is None else _load_npy("--attention-mask", attention_mask)
        ids, mask = model.check_ids(ids, mask)
        inputs = dict(input_ids=ids, attention_mask=mask)
    else:
        if attention_mask is not None:
            raise ValueError("--attention-mask applies to token ids only")
        inputs = dict(pixels=model.check_pixels(_load_npy("--pixels", pixels)))
    shape = model._rows(**inputs)[0]
    c = model.cfg
    log(f"hf-run: {model.hf_config.get('architectures')} {c.layers} layers, hidden {c.hidden}, "
        f"{c.heads} heads; modes: norm={c.norm} act_quant={c.act_quant} "
        f"probs_bits={c.probs_bits} gelu={c.gelu_mode}; input {tuple(shape)}")
    key = "calib_ids" if model.kind == "bert" else "calib_pixels"
    if calib is not None:
        data = _load_npy("--calib", calib)
        kw = {key: list(np.atleast_2d(data)) if model.kind == "bert" else data}
        what = f"{len(data)} inputs from {calib}"
    elif model.kind == "bert" and any((model.path / f).is_file()
                                      for f in ("vocab.txt", "tokenizer.json")):
        kw, what = {}, (f"{len(CALIBRATION_SENTENCES)} built-in sentences and 2 "
                        f"paragraphs of them")
    else:
        kw = {key: ([ids[b, mask[b]] for b in range(ids.shape[0])] if model.kind == "bert"
                    else inputs["pixels"])}
        what = "the inputs themselves (no built-in calibration set for this checkpoint)"
    with threadpool_limits(limits=1, user_api="blas"):
        log(f"  [{time.monotonic() - t0:6.1f}s] calibrating on {what}")
        model.quantize(**kw)
        log(f"  [{time.monotonic() - t0:6.1f}s] running the integer pipeline")
        with tqdm(total=shape[0], unit="seq", leave=False) as bar:
            hidden = model.integer_forward(progress=lambda i, n: bar.update(1), **inputs)
        ref = model.float_forward(**inputs)
    keep = inputs["attention_mask"] if model.kind == "bert" else np.ones(shape, bool)
    cos = cosine(hidden[keep], ref[keep])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, hidden.astype(np.float32))
    summary = {"shape": list(hidden.shape), "token_cosine_mean": float(cos.mean()),
               "token_cosine_worst": float(cos.min()), "seconds": time.monotonic() - t0}
    log(f"  [{summary['seconds']:6.1f}s] wrote {out} {tuple(hidden.shape)} float32; "
        f"per-token cosine to the float model: mean {cos.mean():.4f}, worst {cos.min():.4f}")
    return summary
