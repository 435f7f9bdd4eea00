"""The built-in ternary language model: a 4-layer Llama trained with BitNet b1.58 QAT.

Files beside this module: ``config.json`` (a Hugging Face Llama config),
``model.safetensors`` (latent float16 weights with Hugging Face names; q, k, v,
o, gate, up and down are ternarized by absmean at load), ``tokenizer.json``
and ``tokenizer.py`` (byte level), ``corpus.py`` (the generated training
text), ``train_log.json`` (the measured losses and perplexities) and
``train.py`` (retraining; needs the ``train`` extra: torch). Everything else
here is NumPy only. Matrices are stored as in torch's ``nn.Linear``:
``(out_features, in_features)``, ``y = x @ W.T``.
"""

from pathlib import Path

import numpy as np

from .. import checkpoint
from . import tokenizer
from .corpus import HELDOUT_SEED, stories

MODEL_DIR = Path(__file__).resolve().parent
CONFIG_PATH = MODEL_DIR / "config.json"
WEIGHTS_PATH = MODEL_DIR / "model.safetensors"
TRAIN_LOG_PATH = MODEL_DIR / "train_log.json"

# The BitNet (ternary) linears of each layer, Hugging Face names.
ATTN_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")

# The held-out evaluation set: HELDOUT_WINDOWS windows of (SEQ + 1) tokens cut
# one after the other from the held-out stories, each predicting SEQ tokens.
HELDOUT_STORIES = 200
HELDOUT_WINDOWS = 32

__all__ = ["MODEL_DIR", "CONFIG_PATH", "WEIGHTS_PATH", "TRAIN_LOG_PATH", "ATTN_LINEARS",
           "MLP_LINEARS", "weight_shapes", "load_config", "load_weights", "token_stream",
           "heldout_windows", "tokenizer"]


def weight_shapes(config):
    """Every tensor name of the weight file and its shape ``(out, in)``, in file order."""
    h, ffn, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = config.get("head_dim", h // config["num_attention_heads"])
    q_out, kv_out = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (q_out, h)
        shapes[p + "self_attn.k_proj.weight"] = (kv_out, h)
        shapes[p + "self_attn.v_proj.weight"] = (kv_out, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, q_out)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (ffn, h)
        shapes[p + "mlp.up_proj.weight"] = (ffn, h)
        shapes[p + "mlp.down_proj.weight"] = (h, ffn)
    shapes["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (v, h)
    return shapes


def load_config(path=CONFIG_PATH):
    """The model's config.json as a dict."""
    return checkpoint.load_config(path)


def load_weights(path=WEIGHTS_PATH, config=None):
    """The latent weights as ``{name: float32 ndarray}`` (stored as float16).

    Checks that the names and shapes are exactly those of
    :func:`weight_shapes` and that every value is finite; raises
    ``ValueError`` naming the first mismatch.
    """
    config = load_config() if config is None else config
    tensors = checkpoint.load_checked(path, weight_shapes(config), "float16")
    return {name: t.astype(np.float32) for name, t in tensors.items()}


def token_stream(texts):
    """Stories -> one uint8 token stream, each story as BOS, its bytes, EOS."""
    ids = []
    for text in texts:
        ids += tokenizer.encode(text, bos=True, eos=True)
    return np.array(ids, dtype=np.uint8)


def heldout_windows(seq, windows=HELDOUT_WINDOWS):
    """The held-out set: int64 array ``(windows, seq + 1)``; the model reads
    ``[:, :-1]`` and is scored on predicting ``[:, 1:]``."""
    stream = token_stream(stories(HELDOUT_STORIES, HELDOUT_SEED))
    need = windows * (seq + 1)
    if stream.size < need:
        raise ValueError(f"{windows} windows of {seq + 1} tokens need {need} held-out tokens, "
                         f"the held-out stories give {stream.size}")
    return stream[:need].reshape(windows, seq + 1).astype(np.int64)
