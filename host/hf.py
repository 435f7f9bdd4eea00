"""Pretrained Hugging Face encoders (BERT family) in the integer golden pipeline.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (the
Hugging Face layout; no network access, no ``transformers`` needed). Supported:

* ``model_type == "bert"`` (BertModel, and any Bert* head model: only the
  encoder is used, key prefix ``bert.`` stripped): BERT, MiniLM and other
  BERT-shaped encoders with absolute position embeddings and erf GELU
  (``hidden_act == "gelu"``).

Anything else (RoBERTa, DistilBERT, ViT, decoders, other activations or
position embeddings) raises :class:`UnsupportedCheckpoint` naming what the
config declares and what is supported.

Mapping onto :mod:`trilut.golden.encoder` (``norm="post"``, BERT's post-LN):

=====================================  ============================
checkpoint (layer i)                   golden name (blocks.i.*)
=====================================  ============================
attention.self.{query,key,value}       q, k, v
attention.output.dense                 o
attention.output.LayerNorm             ln1 (after res1 = x + o)
intermediate.dense                     fc1
output.dense                           fc2
output.LayerNorm                       ln2 (after res2 = ln1 + fc2)
=====================================  ============================

torch ``Linear.weight`` (out, in) is transposed to the golden (in, out).

Host side, in float: the embeddings (word + position + token type, position
ids 0..T-1) and the embedding LayerNorm; their output is quantized to the
int16 residual stream at the calibrated input scale (quantize_input). The 
encoder layers run in integers with int8 per-channel weights and, by default
(:data:`IMPORT_DEFAULTS`), the issue #7 modes: per-token activation
quantization in front of every linear layer, 16-bit Shiftmax output, the
accurate ShiftGELU mode, attention-logit scales snapped so x0 is exact, and
accumulator widths checked on the calibration set. The last hidden state is
dequantized at the last block's output scale.

Attention masks: each sequence runs on its unmasked tokens only (keeping
their position ids), which is what BERT's additive -10000 mask computes up
to exp(-10000); masked positions of the output are 0.

Calibration uses :data:`CALIBRATION_SENTENCES` (tokenized with the
checkpoint's own WordPiece vocabulary) unless other token ids are given.
"""
from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..golden.encoder import EncoderConfig, encoder_stack, float_encoder_stack, float_layernorm
from .quantize import dequantize_output, quantize_encoder, quantize_input

__all__ = [
    "SUPPORTED", "IMPORT_DEFAULTS", "CALIBRATION_SENTENCES", "UnsupportedCheckpoint",
    "HFEncoder", "load_checkpoint", "WordPiece", "load_tokenizer", "cosine", "hf_run",
]

SUPPORTED = "model_type 'bert' (BertModel and Bert* heads: BERT, MiniLM)"

# Quantization choices for imported checkpoints (SPEC 1, 4.3, 4.5, 4.6).
IMPORT_DEFAULTS = dict(weights="int8", norm="post", act_quant="token", probs_bits=16,
                       gelu_mode="accurate")
WIDTH_HEADROOM = 2.0     # calibrated accumulator ranges must fit twice over

_LAYER_MAP = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
    "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm",
}
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
    arch = hf.get("architectures") or []
    mtype = hf.get("model_type")
    found = f"model_type={mtype!r}, architectures={arch}"
    if mtype != "bert" or any(not a.startswith("Bert") for a in arch):
        raise UnsupportedCheckpoint(f"unsupported checkpoint ({found}); supported: {SUPPORTED}")
    checks = (("hidden_act", "gelu"), ("position_embedding_type", "absolute"),
              ("is_decoder", False), ("add_cross_attention", False))
    for key, want in checks:
        got = hf.get(key, want)
        if got != want:
            raise UnsupportedCheckpoint(f"unsupported checkpoint ({found}): {key}={got!r}, "
                                        f"only {want!r} is supported")
    need = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
            "vocab_size", "max_position_embeddings")
    missing = [k for k in need if k not in hf]
    if missing:
        raise ValueError(f"config.json: missing {missing}")


def _load_tensors(path):
    from safetensors.numpy import load_file
    st = path / "model.safetensors"
    if not st.is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors")
    tensors = load_file(str(st))
    if any(k.startswith("bert.") for k in tensors):
        tensors = {k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")}
    return tensors


def _get(tensors, name, shape):
    if name not in tensors:
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

    ``weights``: golden-named float encoder weights (blocks.*); ``embeddings``:
    word (V, C), position (P, C), token_type (types, C), ln weight/bias;
    ``cfg``: the EncoderConfig of the integer pipeline (IMPORT_DEFAULTS plus
    any overrides); ``hf_config``: config.json as a dict.
    """
    path: Path
    hf_config: dict
    cfg: EncoderConfig
    weights: dict
    embeddings: dict
    params: object = field(default=None, repr=False)

    @property
    def vocab_size(self):
        return self.embeddings["word"].shape[0]

    # ---- host side, float
    def check_ids(self, input_ids, attention_mask=None):
        """Checked (B, T) int64 ids and (B, T) bool mask; ValueError on bad shape/values."""
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
        limit = min(self.embeddings["position"].shape[0], self.cfg.max_seq)
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

    def embed(self, ids, positions=None):
        """Float block-0 input of one sequence (T,) or batch (B, T): LN(word + pos + type 0)."""
        e = self.embeddings
        ids = np.asarray(ids)
        pos = np.arange(ids.shape[-1]) if positions is None else np.asarray(positions)
        x = e["word"][ids] + e["position"][pos] + e["token_type"][0]
        return float_layernorm(x, e["ln.weight"], e["ln.bias"], self.cfg.ln_eps)[1]

    def float_forward(self, input_ids, attention_mask=None):
        """Float reference last hidden state (B, T, C) float64 (masked positions 0)."""
        ids, mask = self.check_ids(input_ids, attention_mask)
        out = np.zeros(ids.shape + (self.cfg.hidden,))
        for b in range(ids.shape[0]):
            pos = np.flatnonzero(mask[b])
            out[b, pos] = float_encoder_stack(self.embed(ids[b, pos], pos), self.weights,
                                              self.cfg)
        return out

    # ---- integer pipeline
    def quantize(self, calib_ids=None, percentile=100.0, width_headroom=WIDTH_HEADROOM):
        """Calibrate and quantize; sets and returns self.params (EncoderParams).

        calib_ids: a list of 1-D id sequences (any lengths) or a (B, T) array;
        default: CALIBRATION_SENTENCES through the checkpoint's tokenizer.
        """
        if calib_ids is None:
            tok = load_tokenizer(self.path)
            calib_ids = [tok.encode(s) for s in CALIBRATION_SENTENCES]
        seqs = [self.check_ids(np.asarray(c))[0][0] for c in calib_ids]
        self.params = quantize_encoder(self.weights, self.cfg, [self.embed(s)[None] for s in seqs],
                                       percentile=percentile, width_headroom=width_headroom)
        return self.params

    def integer_forward(self, input_ids, attention_mask=None, float_ops=(), progress=None):
        """Integer pipeline's last hidden state, dequantized: (B, T, C) float64.

        Needs :meth:`quantize` first. ``float_ops``: operators returned to
        float (error attribution, see encoder_block). ``progress(i, n)`` is
        called after each sequence.
        """
        if self.params is None:
            raise ValueError("integer_forward: call quantize() first")
        ids, mask = self.check_ids(input_ids, attention_mask)
        out = np.zeros(ids.shape + (self.cfg.hidden,))
        for b in range(ids.shape[0]):
            pos = np.flatnonzero(mask[b])
            x = quantize_input(self.embed(ids[b, pos], pos), self.params)
            y = encoder_stack(x, self.params, float_ops=float_ops)
            out[b, pos] = dequantize_output(y, self.params)
            if progress is not None:
                progress(b + 1, ids.shape[0])
        return out


def load_checkpoint(path, **overrides):
    """Load a Hugging Face checkpoint directory into an :class:`HFEncoder`.

    ``overrides``: EncoderConfig fields replacing IMPORT_DEFAULTS (e.g.
    ``gelu_mode="ivit"``, ``act_quant``, ``probs_bits``). Raises
    UnsupportedCheckpoint for other architectures, FileNotFoundError for a
    missing file, ValueError naming a missing or misshapen tensor.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory (expected a Hugging Face checkpoint "
                                f"directory with config.json and model.safetensors)")
    hf = _read_config(path)
    _check_supported(hf)
    c, f, n = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    settings = dict(IMPORT_DEFAULTS, hidden=c, heads=hf["num_attention_heads"], ffn=f,
                    layers=n, ln_eps=float(hf.get("layer_norm_eps", 1e-12)),
                    max_seq=min(int(hf["max_position_embeddings"]), 512))
    settings.update(overrides)
    cfg = EncoderConfig.coerce(settings)
    t = _load_tensors(path)
    emb = {
        "word": _get(t, "embeddings.word_embeddings.weight", (hf["vocab_size"], c)),
        "position": _get(t, "embeddings.position_embeddings.weight",
                         (hf["max_position_embeddings"], c)),
        "token_type": _get(t, "embeddings.token_type_embeddings.weight",
                           (hf.get("type_vocab_size", 2), c)),
        "ln.weight": _get(t, "embeddings.LayerNorm.weight", (c,)),
        "ln.bias": _get(t, "embeddings.LayerNorm.bias", (c,)),
    }
    shapes = {"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c), "fc1": (f, c), "fc2": (c, f)}
    weights = {}
    for i in range(n):
        for gname, hname in _LAYER_MAP.items():
            src = f"encoder.layer.{i}.{hname}"
            dst = f"blocks.{i}.{gname}"
            if gname in _LINEARS:
                out_f = shapes[gname][0]
                weights[dst + ".weight"] = np.ascontiguousarray(
                    _get(t, src + ".weight", shapes[gname]).T)
                weights[dst + ".bias"] = _get(t, src + ".bias", (out_f,))
            else:
                weights[dst + ".weight"] = _get(t, src + ".weight", (c,))
                weights[dst + ".bias"] = _get(t, src + ".bias", (c,))
    return HFEncoder(path=path, hf_config=hf, cfg=cfg, weights=weights, embeddings=emb)


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


def hf_run(checkpoint, input_ids, out, attention_mask=None, calib_ids=None, overrides=None,
           log=print):
    """``trilut hf-run``: integer pipeline on token ids, dequantized float32 hidden state.

    Paths: ``input_ids`` (B, T) or (T,) integer .npy; ``out`` .npy to write
    (B, T, hidden) float32; optional ``attention_mask`` .npy (same shape, 0/1)
    and ``calib_ids`` .npy (rows = calibration sequences). Calibration:
    calib_ids, else CALIBRATION_SENTENCES with the checkpoint's tokenizer,
    else (no vocabulary files) the input ids themselves (logged). Returns a
    summary dict (shape, cosine to the float reference, seconds).
    """
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm
    t0 = time.monotonic()
    model = load_checkpoint(checkpoint, **(overrides or {}))
    ids = _load_npy("--input-ids", input_ids)
    mask = None if attention_mask is None else _load_npy("--attention-mask", attention_mask)
    ids, mask = model.check_ids(ids, mask)
    c = model.cfg
    log(f"hf-run: {model.hf_config.get('architectures')} {c.layers} layers, hidden {c.hidden}, "
        f"{c.heads} heads; modes: norm={c.norm} act_quant={c.act_quant} "
        f"probs_bits={c.probs_bits} gelu={c.gelu_mode}; input {ids.shape}")
    if calib_ids is not None:
        calib = list(np.atleast_2d(_load_npy("--calib-ids", calib_ids)))
        what = f"{len(calib)} sequences from {calib_ids}"
    else:
        try:
            tok = load_tokenizer(model.path)
        except FileNotFoundError:
            calib = [ids[b, mask[b]] for b in range(ids.shape[0])]
            what = "the input ids themselves (no vocab.txt/tokenizer.json for the built-in set)"
        else:
            calib = [tok.encode(s) for s in CALIBRATION_SENTENCES]
            what = f"{len(calib)} built-in sentences"
    with threadpool_limits(limits=1, user_api="blas"):
        log(f"  [{time.monotonic() - t0:6.1f}s] calibrating on {what}")
        model.quantize(calib)
        log(f"  [{time.monotonic() - t0:6.1f}s] running the integer pipeline")
        with tqdm(total=ids.shape[0], unit="seq", leave=False) as bar:
            hidden = model.integer_forward(ids, mask, progress=lambda i, n: bar.update(1))
        ref = model.float_forward(ids, mask)
    cos = cosine(hidden[mask], ref[mask])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, hidden.astype(np.float32))
    summary = {"shape": list(hidden.shape), "token_cosine_mean": float(cos.mean()),
               "token_cosine_worst": float(cos.min()), "seconds": time.monotonic() - t0}
    log(f"  [{summary['seconds']:6.1f}s] wrote {out} {tuple(hidden.shape)} float32; "
        f"per-token cosine to the float model: mean {cos.mean():.4f}, worst {cos.min():.4f}")
    return summary
