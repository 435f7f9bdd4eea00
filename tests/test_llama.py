"""Hugging Face Llama/BitNet importer (host/llama.py) on small random checkpoints in each layout."""
import json

import numpy as np
import pytest

from trilut.gen.cli import main as cli_main
from trilut.host.models.lm.tokenizer import ByteTokenizer
from trilut.gen.llmfidelity import CONFIGS, measure, write_random_checkpoint
from trilut.golden.llm import KVCache, float_forward, prefill
from trilut.host.generate import GoldenDecoder, choose, generate, make_decoder
from trilut.host.llama import (UnsupportedCheckpoint, load_llama, logit_correlation,
                               pack_ternary, quantize, read_safetensors, unpack_ternary,
                               write_safetensors)


def _prompts(vocab, n=8, length=16, seed=11):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, length) for _ in range(n)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fidelity_on_every_layout(tmp_path, name):
    """golden vs float (same ternary weights): logit correlation and greedy agreement."""
    path = write_random_checkpoint(tmp_path / name, seed=300 + len(name), **CONFIGS[name])
    ckpt = load_llama(path)
    r = measure(ckpt, quantize(ckpt), _prompts(ckpt.cfg.vocab), new_tokens=8)
    assert r["corr_mean"] >= 0.99 and r["corr_worst"] >= 0.98, r
    assert r["greedy_agree"] >= 0.9, r


def test_int8_per_channel_weights(tmp_path):
    """quantize(kind="int8"): every linear int8 per output channel, per-channel requantizers."""
    ckpt = load_llama(write_random_checkpoint(tmp_path / "m", heads=4, kv_heads=2, seed=4))
    params = quantize(ckpt, kind="int8")
    lin = params.layers[0].q
    assert lin.kind == "int8" and lin.requant.per_channel and np.abs(lin.weights).max() == 127
    deq = ckpt.dequantized_weights("int8")
    corr = np.concatenate([logit_correlation(
        params.dequantize_logits(prefill(params, ids, KVCache(params))),
        float_forward(deq, ckpt.cfg, ids)) for ids in _prompts(ckpt.cfg.vocab, 4)])
    assert corr.mean() >= 0.99 and corr.min() >= 0.98, (corr.mean(), corr.min())


def test_layouts_load_as_declared(tmp_path):
    a = load_llama(write_random_checkpoint(tmp_path / "a", layout="bitnet-large", kv_heads=4))
    b = load_llama(write_random_checkpoint(tmp_path / "b", layout="bitnet-2b", kv_heads=1))
    c = load_llama(write_random_checkpoint(tmp_path / "c", kv_heads=2, tie=True))
    assert a.cfg.sub_norm and a.cfg.act == "silu" and not a.prequantized and not a.tied
    assert b.cfg.sub_norm and b.cfg.act == "relu2" and b.tied and b.cfg.kv_heads == 1
    assert len(b.prequantized) == 7 * b.cfg.layers
    assert not c.cfg.sub_norm and c.tied
    np.testing.assert_array_equal(c.weights["head"], c.weights["embed"].T)


def test_packing_convention_and_roundtrip():
    # rows (-1, 0, 1, 1) of one column: value i of the byte (bits 2i..2i+1) is row block i
    assert pack_ternary(np.array([[-1], [0], [1], [1]]))[0, 0] == 0 | 1 << 2 | 2 << 4 | 2 << 6
    w = np.random.default_rng(0).integers(-1, 2, (64, 24))
    packed = pack_ternary(w)
    assert packed.shape == (16, 24) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_ternary(packed), w)
    with pytest.raises(ValueError, match="code 3"):
        unpack_ternary(np.full((1, 1), 255, np.uint8))
    with pytest.raises(ValueError, match="divisible by 4"):
        pack_ternary(np.zeros((6, 2)))


def test_packed_weights_equal_the_unpacked_layout(tmp_path):
    """A 2B-4T packed checkpoint and the same weights stored unpacked (W = W_q / s, F32)."""
    src = write_random_checkpoint(tmp_path / "packed", layout="bitnet-2b", kv_heads=2)
    t = read_safetensors(src / "model.safetensors")
    plain = {}
    for k, v in t.items():
        if k.endswith(".weight_scale"):
            continue
        if v.dtype == np.uint8:
            s = float(t[k + "_scale"].ravel()[0])
            plain[k] = (unpack_ternary(v).astype(np.float32) / np.float32(s), "F32")
        else:
            plain[k] = (v, "F32")
    dst = tmp_path / "plain"
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    write_safetensors(dst / "model.safetensors", plain)
    a, b = load_llama(src), load_llama(dst)
    for name, w in a.weights.items():
        np.testing.assert_allclose(b.weights[name], w, rtol=1e-6, err_msg=name)
    for name, (w_t, scale) in a.prequantized.items():
        q, _ = b.quantized_weight(name)
        np.testing.assert_array_equal(q, w_t, err_msg=name)
    # packed weights are used as given (W_q / s), not re-quantized with absmean
    deq = a.dequantized_weights()
    for name in a.prequantized:
        np.testing.assert_array_equal(deq[name], a.weights[name], err_msg=name)


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_relu2_run_as_silu_is_detected(tmp_path):
    """Users of BitNet ports report gibberish from exactly this mix-up: golden with the wrong
    activation is far from the float model with the right one."""
    path = write_random_checkpoint(tmp_path / "m", layout="bitnet-2b", kv_heads=2)
    right = load_llama(path)
    _edit_config(path, hidden_act="silu")
    wrong = load_llama(path)
    ids = _prompts(right.cfg.vocab, 1, length=24)[0]
    params = quantize(wrong)
    g = params.dequantize_logits(prefill(params, ids, KVCache(params)))
    ref = float_forward(right.dequantized_weights(), right.cfg, ids)
    assert logit_correlation(g, ref).mean() < 0.9


def test_missing_sub_norm_is_detected(tmp_path):
    path = write_random_checkpoint(tmp_path / "m", layout="bitnet-large", kv_heads=4)
    right = load_llama(path)
    t = read_safetensors(path / "model.safetensors")
    write_safetensors(path / "model.safetensors", {k: (v, "F32") for k, v in t.items()
                                                   if "inner_attn_ln" not in k
                                                   and "ffn_layernorm" not in k})
    wrong = load_llama(path)
    assert not wrong.cfg.sub_norm
    ids = _prompts(right.cfg.vocab, 1, length=24)[0]
    params = quantize(wrong)
    g = params.dequantize_logits(prefill(params, ids, KVCache(params)))
    ref = float_forward(right.dequantized_weights(), right.cfg, ids)
    assert logit_correlation(g, ref).mean() < 0.99


@pytest.mark.parametrize("field,value", [
    ("rope_scaling", {"type": "linear", "factor": 2.0}), ("attention_bias", True),
    ("mlp_bias", True), ("sliding_window", 256), ("num_local_experts", 8),
    ("hidden_act", "gelu"), ("model_type", "mistral")])
def test_unsupported_configs_name_the_field(tmp_path, field, value):
    path = write_random_checkpoint(tmp_path / "m", layers=1)
    _edit_config(path, **{field: value})
    with pytest.raises(UnsupportedCheckpoint, match=field):
        load_llama(path)


def test_bad_inputs_and_files(tmp_path):
    path = write_random_checkpoint(tmp_path / "m", layers=1, max_pos=32, vocab=100)
    ckpt = load_llama(path)
    with pytest.raises(ValueError, match="token id 100 outside the vocabulary"):
        ckpt.check_ids(np.array([1, 100]))
    with pytest.raises(ValueError, match="exceed the model's 32 positions"):
        ckpt.check_ids(np.arange(30), new_tokens=3)
    with pytest.raises(TypeError, match="integers"):
        ckpt.check_ids(np.array([1.5]))
    _edit_config(path, tie_word_embeddings=False)
    t = read_safetensors(path / "model.safetensors")
    write_safetensors(path / "model.safetensors",
                      {k: (v, "F32") for k, v in t.items() if k != "lm_head.weight"})
    with pytest.raises(ValueError, match="no lm_head.weight"):
        load_llama(path)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        load_llama(tmp_path / "nowhere")


def test_bf16_and_f16_roundtrip(tmp_path):
    vals = np.array([1.0, -2.5, 3.140625, 1e-3, 65504.0], np.float32)
    write_safetensors(tmp_path / "x.safetensors", {"b": (vals, "BF16"), "h": (vals, "F16"),
                                                   "f": (vals, "F32")})
    t = read_safetensors(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(t["b"][:3], vals[:3])
    assert abs(t["b"][3] - 1e-3) / 1e-3 < 2**-8 and t["b"].dtype == np.float32
    np.testing.assert_array_equal(t["h"], vals.astype(np.float16))
    np.testing.assert_array_equal(t["f"], vals)


# --------------------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("gen"), heads=4, kv_heads=2,
                                   max_pos=48, seed=5)
    (path / "tokenizer.json").write_text(json.dumps(
        {"type": "byte-level", "vocab_size": 256, "bos_token_id": 2, "eos_token_id": 3,
         "encoding": "utf-8"}))
    ckpt = load_llama(path)
    return path, ckpt, quantize(ckpt)


def test_generate_greedy_matches_prefill_and_sampling_is_seeded(small):
    _, ckpt, params = small
    ids = _prompts(ckpt.cfg.vocab, 1, length=10)[0]
    tokens, logits = generate(GoldenDecoder(params), ids, 6)
    assert tokens.shape == (6,) and logits.shape == (15, ckpt.cfg.vocab)
    whole = params.dequantize_logits(prefill(params, np.concatenate([ids, tokens[:-1]]),
                                             KVCache(params)))
    np.testing.assert_array_equal(logits, whole)
    np.testing.assert_array_equal(tokens, np.argmax(logits[9:], axis=-1))
    a, _ = generate(GoldenDecoder(params), ids, 6, temperature=1.0, top_k=5, seed=3)
    b, _ = generate(GoldenDecoder(params), ids, 6, temperature=1.0, top_k=5, seed=3)
    np.testing.assert_array_equal(a, b)
    # top_k = 1 is greedy whatever the temperature
    c, _ = generate(GoldenDecoder(params), ids, 6, temperature=5.0, top_k=1, seed=9)
    np.testing.assert_array_equal(c, tokens)


def test_choose_top_k_only_draws_from_the_best():
    row = np.array([0, 50, 40, 10, 45])
    draws = {choose(row, 0.1, 1.0, 2, np.random.default_rng(s)) for s in range(40)}
    assert draws == {1, 4}
    assert choose(row, 0.1) == 1
    with pytest.raises(ValueError, match="temperature"):
        choose(row, 0.1, -1.0)
    with pytest.raises(ValueError, match="top_k"):
        choose(row, 0.1, 1.0, -2)


def test_generate_errors(small):
    _, ckpt, params = small
    with pytest.raises(ValueError, match="exceed the KV capacity of 48"):
        generate(GoldenDecoder(params), np.arange(40), 9)
    with pytest.raises(ValueError, match="device 'sim' needs accel"):
        make_decoder(params, "sim")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(GoldenDecoder(params), np.arange(4), 0)


def test_hf_generate_command(small, tmp_path):
    path, ckpt, _ = small
    ids = _prompts(ckpt.cfg.vocab, 1, length=8)[0]
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out.npz"
    argv = ["hf-generate", str(path), "--input-ids", str(tmp_path / "ids.npy"),
            "--max-new-tokens", "5", "--out", str(out)]
    assert cli_main(argv) == 0
    z = np.load(out)
    assert z["tokens"].dtype == np.int64 and z["tokens"].shape == (5,)
    assert z["logits"].dtype == np.float32 and z["logits"].shape == (12, ckpt.cfg.vocab)
    np.testing.assert_array_equal(z["tokens"], np.argmax(z["logits"][7:], axis=-1))
    assert cli_main(argv + ["--device", "sim", "--unit", "top"]) == 2     # not a decoder build
    long = argv[:-3] + ["21", "--out", str(out), "--device", "sim", "--unit", "top-llm-small"]
    assert cli_main(long) == 2           # 8 + 21 positions > the build's 28 per layer
    np.save(tmp_path / "bad.npy", np.array([0, ckpt.cfg.vocab]))
    assert cli_main(argv[:3] + [str(tmp_path / "bad.npy")] + argv[4:]) == 2
    np.save(tmp_path / "long.npy", np.zeros(45, np.int64))
    assert cli_main(argv[:3] + [str(tmp_path / "long.npy")] + argv[4:]) == 2


def test_generate_command(small, tmp_path, capsys):
    path, _, _ = small
    js = tmp_path / "g.json"
    assert cli_main(["generate", "--prompt", "Once", "--max-new-tokens", "4", "--model",
                     str(path), "--json", str(js)]) == 0
    summary = json.loads(js.read_text())
    for key in ("text", "tokens", "hw_matches_golden", "ttft_cycles", "decode_cycles_per_token",
                "fmax_mhz", "tokens_per_s_at_fmax", "sim_cycles_per_s"):
        assert key in summary
    assert summary["hw_matches_golden"] is None and 1 <= len(summary["tokens"]) <= 4
    assert capsys.readouterr().out.startswith("Once")
    assert ByteTokenizer(path / "tokenizer.json").decode([2, 72, 105, 3]) == "Hi"
    with pytest.raises(ValueError, match="reserved"):
        ByteTokenizer(path / "tokenizer.json").encode("a\x03")
