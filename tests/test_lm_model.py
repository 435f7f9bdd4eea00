"""The shipped language model: checkpoint, config, tokenizer, corpus, held-out perplexity.

No torch here (torch is only the optional training extra). The NumPy float
forward below is a deliberately naive reference written for this test: ternary
weights (``trilut.golden.quantize_ternary``), float activations, optionally
int8 per-token activations before each ternary linear (the QAT forward).
"""

import hashlib
import json
import math
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from trilut.golden import quantize_int8, quantize_ternary
from trilut.host.models import lm
from trilut.host.models.lm import corpus, tokenizer

CONFIG = lm.load_config()
LOG = json.loads(lm.TRAIN_LOG_PATH.read_text(encoding="utf-8"))
SEQ = LOG["heldout"]["seq"]
# Perplexity from this NumPy forward against train.py's torch figure: the two
# differ only by float32 summation order (and int8 roundings it may flip).
PPL_REL_BOUND = 2e-3


def test_config_is_a_llama_config():
    c = CONFIG
    assert c["model_type"] == "llama" and c["architectures"] == ["LlamaForCausalLM"]
    assert c["hidden_act"] == "silu"
    assert c["rope_scaling"] is None and not c["attention_bias"] and not c["mlp_bias"]
    assert c["hidden_size"] % 16 == 0 and c["intermediate_size"] % 16 == 0
    assert c["num_attention_heads"] * c["head_dim"] == c["hidden_size"]
    assert c["num_attention_heads"] % c["num_key_value_heads"] == 0
    assert c["num_key_value_heads"] < c["num_attention_heads"]           # GQA
    assert c["vocab_size"] == tokenizer.VOCAB_SIZE
    assert (c["bos_token_id"], c["eos_token_id"]) == (tokenizer.BOS, tokenizer.EOS)
    assert c["max_position_embeddings"] == SEQ == 256


def test_checkpoint_loads_with_hf_names():
    raw = load_file(str(lm.WEIGHTS_PATH))
    assert all(t.dtype == np.float16 for t in raw.values())
    w = lm.load_weights()
    h, ffn, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    kv = CONFIG["num_key_value_heads"] * CONFIG["head_dim"]
    # Spelled out independently of lm.weight_shapes.
    expected = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
                "lm_head.weight": (v, h)}
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}."
        expected.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                         p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                         p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                         p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                         p + "mlp.down_proj.weight": (h, ffn)})
    assert {k: t.shape for k, t in w.items()} == expected
    assert sum(t.size for t in w.values()) == LOG["parameters"]
    assert 2_000_000 <= LOG["parameters"] <= 10_000_000


@pytest.mark.parametrize("damage", ["missing", "dtype", "nan"])
def test_load_weights_rejects_a_bad_file(tmp_path, damage):
    raw = load_file(str(lm.WEIGHTS_PATH))
    name = "model.layers.0.mlp.up_proj.weight"
    if damage == "missing":
        del raw[name]
    elif damage == "dtype":
        raw[name] = raw[name].astype(np.float32)
    else:
        raw[name] = raw[name].copy()
        raw[name][0, 0] = np.nan
    path = tmp_path / "bad.safetensors"
    save_file(raw, str(path))
    with pytest.raises(ValueError, match="up_proj"):
        lm.load_weights(path)


def test_tokenizer_round_trips():
    spec = json.loads(tokenizer.TOKENIZER_PATH.read_text(encoding="utf-8"))
    assert spec["vocab_size"] == 256 and spec["type"] == "byte-level"
    text = "".join(chr(c) for c in range(128) if c not in (tokenizer.BOS, tokenizer.EOS))
    text += " caf\u00e9, \u00fcber, \u65e5\u672c \U0001f600"
    ids = tokenizer.encode(text, eos=True)
    assert ids == [tokenizer.BOS] + list(text.encode("utf-8")) + [tokenizer.EOS]
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode("ab", bos=False) == [97, 98]
    assert tokenizer.decode([0xE6, 0x97]) == "\ufffd"          # a cut multi-byte char is visible


def test_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="BOS"):
        tokenizer.encode("a\x02b")
    with pytest.raises(ValueError, match="EOS"):
        tokenizer.encode("a\x03b")
    with pytest.raises(TypeError, match="str"):
        tokenizer.encode(b"abc")
    with pytest.raises(ValueError, match="256"):
        tokenizer.decode([65, 256])
    with pytest.raises(ValueError, match="-1"):
        tokenizer.decode([-1])


def test_corpus_is_deterministic():
    a = corpus.stories(300, corpus.TRAIN_SEED)
    assert a == corpus.stories(300, corpus.TRAIN_SEED)
    assert a != corpus.stories(300, corpus.HELDOUT_SEED)
    assert len(set(a)) == len(a)
    text = "\n".join(a)
    assert text.isascii() and "\x02" not in text and "\x03" not in text
    held = "\n".join(corpus.stories(lm.HELDOUT_STORIES, corpus.HELDOUT_SEED))
    # Pins the held-out text behind the recorded perplexity (Python's Random is stable).
    assert hashlib.sha256(held.encode()).hexdigest()[:16] == "a8f6a11152653ed1"
    with pytest.raises(ValueError, match="n must"):
        corpus.stories(-1, 0)
    with pytest.raises(TypeError, match="seed"):
        corpus.stories(3, "0")


# ---- NumPy float forward -------------------------------------------------------------------

def _rms_norm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + CONFIG["rms_norm_eps"]) * g


def _rope(x, pos, adjacent=False):
    """HF rotate_half (element i pairs with i + d/2); ``adjacent`` pairs 2i with 2i + 1 (wrong)."""
    d = x.shape[-1]
    inv = 1.0 / CONFIG["rope_theta"] ** (np.arange(0, d, 2) / d)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    if adjacent:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
        return out
    a, b = x[..., :d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward(w, ids, act_quant, wrong=None):
    """Logits (n, t, vocab) for ids (n, t). ``wrong`` selects a deliberately wrong model."""
    c = CONFIG
    heads, kv_heads, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    tern = {}

    def linear(name, x):
        if name not in tern:
            w_t, gamma = quantize_ternary(w[name])
            tern[name] = (w_t.astype(np.float32) * np.float32(gamma)).T
        if act_quant:
            q, scale = quantize_int8(x, per_token=True)
            x = (q * scale).astype(np.float32)
        return x @ tern[name]

    n, t = ids.shape
    pos = np.arange(t)
    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = _rms_norm(x, w[p + "input_layernorm.weight"])
        q = linear(p + "self_attn.q_proj.weight", y).reshape(n, t, heads, d).transpose(0, 2, 1, 3)
        k = linear(p + "self_attn.k_proj.weight", y).reshape(n, t, kv_heads, d).transpose(0, 2, 1, 3)
        v = linear(p + "self_attn.v_proj.weight", y).reshape(n, t, kv_heads, d).transpose(0, 2, 1, 3)
        q, k = _rope(q, pos, wrong == "rope_adjacent"), _rope(k, pos, wrong == "rope_adjacent")
        kv_of = [h % kv_heads if wrong == "gqa_modulo" else h // (heads // kv_heads)
                 for h in range(heads)]
        s = q @ k[:, kv_of].transpose(0, 1, 3, 2) / np.float32(math.sqrt(d))
        if wrong != "no_causal_mask":
            s = s + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v[:, kv_of]
        x = x + linear(p + "self_attn.o_proj.weight", a.transpose(0, 2, 1, 3).reshape(n, t, heads * d))
        y = _rms_norm(x, w[p + "post_attention_layernorm.weight"])
        g = linear(p + "mlp.gate_proj.weight", y)
        u = linear(p + "mlp.up_proj.weight", y)
        x = x + linear(p + "mlp.down_proj.weight", g / (1 + np.exp(-g)) * u)
    return _rms_norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def perplexity(w, windows, act_quant, wrong=None):
    logits = forward(w, windows[:, :-1], act_quant, wrong).astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    target = np.take_along_axis(logits, windows[:, 1:, None], -1)[..., 0]
    return float(np.exp(np.mean(logz - target)))


@pytest.fixture(scope="module")
def weights():
    return lm.load_weights()


@pytest.mark.parametrize("act_quant,key", [(False, "ternary"), (True, "qat")])
def test_heldout_perplexity_matches_train_log(weights, act_quant, key):
    windows = lm.heldout_windows(SEQ, LOG["heldout"]["windows"])
    ppl = perplexity(weights, windows, act_quant)
    recorded = LOG["heldout_perplexity"][key]
    print(f"held-out perplexity ({key}): numpy {ppl:.5f}, train_log {recorded:.5f}")
    assert abs(ppl / recorded - 1) < PPL_REL_BOUND


@pytest.mark.parametrize("wrong", ["rope_adjacent", "gqa_modulo", "no_causal_mask"])
def test_wrong_model_misses_the_bound(weights, wrong):
    """The check above can fail: each convention error moves the perplexity far out
    of the bound (on 4 windows, against the right forward on the same windows)."""
    windows = lm.heldout_windows(SEQ, 4)
    right = perplexity(weights, windows, False)
    bad = perplexity(weights, windows, False, wrong)
    print(f"{wrong}: perplexity {bad:.4f} vs {right:.4f}")
    assert abs(bad / right - 1) > 50 * PPL_REL_BOUND


def test_builtin_generates_words_of_its_corpus(capsys):
    """`trilut generate` on the built-in LM (golden integer model): every complete
    word it writes is a word of the training corpus (an untrained or mis-imported
    model writes byte soup), and the JSON has the issue's fields."""
    from trilut.gen.llm import generate_text
    summary = generate_text("Once upon a time", 48)
    words = re.findall(r"[A-Za-z]+", summary["text"])[:-1]        # the last may be cut
    known = set(re.findall(r"[A-Za-z]+", " ".join(corpus.stories(2000, corpus.TRAIN_SEED))))
    assert len(words) >= 6 and set(words) <= known, words
    assert capsys.readouterr().out.startswith("Once upon a time")
    assert summary["hw_matches_golden"] is None and summary["device"] == "golden"
