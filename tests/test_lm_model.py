"""The shipped language model: checkpoint, config, tokenizer, corpus, held-out perplexity.

No torch here (torch is only the optional training extra). Held-out perplexity
goes through the Llama importer and golden's float reference (ternary weights,
float activations, optionally int8 per-token activations before each ternary
linear: the QAT forward) and must match train.py's torch figures.
"""

import hashlib
import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from trilut.golden.llm import float_forward
from trilut.host.llama import load_llama
from trilut.host.models import lm
from trilut.host.models.lm import corpus, tokenizer

CONFIG = lm.load_config()
LOG = json.loads(lm.TRAIN_LOG_PATH.read_text(encoding="utf-8"))
SEQ = LOG["heldout"]["seq"]
# Perplexity from golden's float reference against train.py's torch figure: the two
# differ by summation order, float64 against float32, and the int8 roundings that flips.
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


# ---- held-out perplexity through the importer and the golden float reference ----------------

def perplexity(weights, cfg, windows, act_quant):
    """Held-out perplexity of ``windows`` under golden's float reference (ternary
    weights; int8 per-token activations before each linear with ``act_quant``)."""
    emulate = ("act_quant",) if act_quant else ()
    nll = []
    for w in windows:
        logits = float_forward(weights, cfg, w[:-1], emulate=emulate)
        top = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        nll.append(logz - logits[np.arange(w.size - 1), w[1:]])
    return float(np.exp(np.mean(nll)))


@pytest.fixture(scope="module")
def model():
    ckpt = load_llama(lm.MODEL_DIR)
    return ckpt.dequantized_weights(), ckpt.cfg


@pytest.mark.parametrize("act_quant,key", [(False, "ternary"), (True, "qat")])
def test_heldout_perplexity_matches_train_log(model, act_quant, key):
    windows = lm.heldout_windows(SEQ, LOG["heldout"]["windows"])
    ppl = perplexity(*model, windows, act_quant)
    recorded = LOG["heldout_perplexity"][key]
    print(f"held-out perplexity ({key}): numpy {ppl:.5f}, train_log {recorded:.5f}")
    assert abs(ppl / recorded - 1) < PPL_REL_BOUND


@pytest.mark.parametrize("wrong", ["layers_swapped", "head_rows_rolled"])
def test_wrong_model_misses_the_bound(model, wrong):
    """The check above can fail: an import mistake (two layers swapped, the head's
    rows off by one token) moves the perplexity far out of the bound (on 4
    windows, against the right weights on the same windows)."""
    weights, cfg = model
    bad = dict(weights)
    if wrong == "layers_swapped":
        for name in [n for n in weights if n.startswith("layers.0.")]:
            other = name.replace("layers.0.", "layers.1.", 1)
            bad[name], bad[other] = weights[other], weights[name]
    else:
        bad["head"] = np.roll(weights["head"], 1, axis=-1)
    windows = lm.heldout_windows(SEQ, 4)
    right = perplexity(weights, cfg, windows, False)
    worse = perplexity(bad, cfg, windows, False)
    print(f"{wrong}: perplexity {worse:.4f} vs {right:.4f}")
    assert abs(worse / right - 1) > 50 * PPL_REL_BOUND


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
