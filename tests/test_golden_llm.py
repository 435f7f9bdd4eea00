"""Golden ternary LLM decoder (golden/llm.py): the integer contract's properties.

Models come from random Hugging Face checkpoints (gen.llmfidelity) through the
importer, so these tests also exercise host/llama.py's quantizer.
"""
import dataclasses
import math

import numpy as np
import pytest

from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.golden import llm
from trilut.golden.encoder import Dyadic
from trilut.golden.llm import (KVCache, LlamaConfig, decode_step, float_forward, int_rmsnorm,
                               prefill, rope_tables)
from trilut.golden.nonlinear import isqrt
from trilut.host.llama import load_llama, logit_correlation, quantize

VARIANTS = {   # name -> (write_random_checkpoint arguments, load_llama overrides)
    "mha-silu": (dict(heads=4, kv_heads=4), {}),
    "gqa-token": (dict(heads=4, kv_heads=2), dict(attn_scale="token")),
    "mqa-relu2-sub": (dict(layout="bitnet-2b", heads=4, kv_heads=1),
                      dict(probs_bits=8, logit_bits=8)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for i, (name, (kw, over)) in enumerate(VARIANTS.items()):
        path = write_random_checkpoint(tmp_path_factory.mktemp(name), seed=20 + i,
                                       layers=2, max_pos=64, **kw)
        ckpt = load_llama(path, **over)
        out[name] = (ckpt, quantize(ckpt))
    return out


def _ids(vocab, n, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("split", [1, 7, 19])
def test_prefill_then_decode_equals_whole_prefill(models, name, split):
    ckpt, params = models[name]
    ids = _ids(ckpt.cfg.vocab, 20, seed=split)
    whole = prefill(params, ids, KVCache(params))
    cache = KVCache(params)
    rows = [prefill(params, ids[:split], cache)]
    rows += [decode_step(params, int(t), cache)[None] for t in ids[split:]]
    assert cache.kv_pos == ids.size
    np.testing.assert_array_equal(np.concatenate(rows), whole)
    assert whole.dtype == np.int32


@pytest.mark.parametrize("name", list(VARIANTS))
def test_integer_model_tracks_float_reference(models, name):
    ckpt, params = models[name]
    ids = _ids(ckpt.cfg.vocab, 24, seed=3)
    golden = params.dequantize_logits(prefill(params, ids, KVCache(params)))
    ref = float_forward(ckpt.dequantized_weights(), ckpt.cfg, ids)
    corr = logit_correlation(golden, ref)
    assert corr.mean() >= 0.99 and corr.min() >= 0.98, (corr.mean(), corr.min())


@pytest.mark.parametrize("wrong", ["rope_adjacent", "gqa_modulo", "logit_scale"])
def test_wrong_model_is_caught(models, monkeypatch, wrong):
    """The fidelity check fails for the convention errors SPEC 7 names."""
    ckpt, params = models["gqa-token"]
    ids = _ids(ckpt.cfg.vocab, 24, seed=3)
    ref = float_forward(ckpt.dequantized_weights(), ckpt.cfg, ids)
    if wrong == "rope_adjacent":       # pairs (2j, 2j+1) instead of (j, j + d/2)
        def bad(x, cos, sin):
            x1, x2 = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            return np.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).reshape(x.shape)
        monkeypatch.setattr(llm, "_rope", bad)
    elif wrong == "gqa_modulo":
        monkeypatch.setattr(llm, "kv_head_of", lambda cfg: np.arange(cfg.heads) % cfg.kv_heads)
    else:                               # attention logits at 4x their scale (e - 2)
        layers = tuple(dataclasses.replace(lp, logits=Dyadic(lp.logits.m, lp.logits.e - 2))
                       for lp in params.layers)
        params = dataclasses.replace(params, layers=layers)
    golden = params.dequantize_logits(prefill(params, ids, KVCache(params)))
    corr = logit_correlation(golden, ref)
    assert corr.mean() < 0.99 or corr.min() < 0.98, (corr.mean(), corr.min())


def test_trace_names_dtypes_and_cache(models):
    ckpt, params = models["mqa-relu2-sub"]
    cfg = ckpt.cfg
    cache = KVCache(params)
    t = prefill(params, _ids(cfg.vocab, 5), cache, trace=True)
    p = "layers.1."
    for name, dt in (("attn_norm", np.int16), ("attn_norm_q8", np.int8), ("q", np.int16),
                     ("v", np.int8), ("q_rope", np.int8), ("k_rope", np.int8),
                     ("logits", np.int8), ("probs", np.int16), ("attn", np.int16),
                     ("attn_sub", np.int16), ("res1", np.int16), ("act_prod", np.int32),
                     ("h", np.int16), ("ffn_sub", np.int16), ("res2", np.int16)):
        assert t[p + name].dtype == dt, name
    assert t["logits"].shape == (5, cfg.vocab) and t["x"].dtype == np.int16
    # probabilities of row i cover 0..i only, and sum to about 2^(pb-1)
    probs = t[p + "probs"]
    assert (probs[:, 0, 1:] == 0).all() and (probs[:, 2, 3:] == 0).all()
    sums = probs.sum(-1)
    assert (np.abs(sums - 2 ** (cfg.probs_bits - 1)) <= 2 ** (cfg.probs_bits - 1) // 8).all()
    # K after RoPE is what the cache holds; relu2 product is exact
    np.testing.assert_array_equal(cache.k[1, :, :5].transpose(1, 0, 2).reshape(5, -1),
                                  t[p + "k_rope"].reshape(5, -1))
    g = t[p + "gate"].astype(np.int64)
    np.testing.assert_array_equal(t[p + "act_prod"], np.maximum(g, 0) ** 2)


def test_int_rmsnorm_matches_float_and_extremes():
    rng = np.random.default_rng(0)
    x = rng.integers(-30000, 30000, (8, 96))
    z = int_rmsnorm(x) * math.sqrt(96) / 2**30
    ref = x / np.sqrt((x.astype(float) ** 2).mean(-1, keepdims=True))
    # relative error <= 1/f + 1/std with f = (2^31 - 1) // std ~ 13,000 for these rows
    f = (2**31 - 1) // isqrt((x * x).sum(-1, keepdims=True))
    assert (np.abs(z - ref) <= np.abs(ref) * 2.0 / f + 2**-29).all()
    ext = np.array([[-32768] * 64, [32767] * 64, [0] * 64, [-32768] + [0] * 63])
    ze = int_rmsnorm(ext)
    assert np.abs(ze).max() <= 2**30 and (ze[2] == 0).all()
    assert ze[3, 0] == -(((32768 * ((2**31 - 1) // 32768))) >> 1)
    assert int(isqrt(np.array([64 * 32768**2]))[0]) == 8 * 32768


def test_rope_tables_and_position_zero():
    cos, sin = rope_tables(16, 10000.0, 40)
    assert cos.dtype == np.int16 and cos.shape == (40, 8)
    assert (cos[0] == 2**14).all() and (sin[0] == 0).all()
    r2 = cos.astype(np.int64) ** 2 + sin.astype(np.int64) ** 2
    assert np.abs(r2 - 2**28).max() <= 2 * 2**14 + 1
    # element j pairs with j + d/2: position 1 rotates (x_j, x_{j+8}) by theta^(-2j/16)
    x = np.zeros((1, 1, 16), np.int64)
    x[..., 0] = 1000
    r = llm._rope(x, cos[1:2].astype(np.int64), sin[1:2].astype(np.int64))
    assert r[0, 0, 0] == 1000 * int(cos[1, 0]) and r[0, 0, 8] == 1000 * int(sin[1, 0])
    assert (np.delete(r[0, 0], [0, 8]) == 0).all()


def test_extreme_embeddings_stay_in_range(models):
    """Tokens whose embedding rows are +-32767 everywhere run without a width error."""
    ckpt, params = models["mha-silu"]
    emb = params.embed.copy()
    emb[0], emb[1] = 32767, -32767
    p2 = dataclasses.replace(params, embed=emb)
    t = prefill(p2, np.array([0, 1, 0, 1, 2]), KVCache(p2), trace=True)
    assert np.abs(t["logits"]).max() < 2**23
    # a full cache (max_pos rows): the last Shiftmax row still sums to ~2^15 (no saturation)
    ids = np.resize([0, 1, 2, 3], ckpt.cfg.max_pos)
    t = prefill(p2, ids, KVCache(p2), trace=True)
    last = t["layers.1.probs"][:, -1].sum(-1)
    assert (np.abs(last - 2**15) <= 2**12).all(), last


def test_errors_name_the_problem(models):
    ckpt, params = models["gqa-token"]
    cfg = ckpt.cfg
    cache = KVCache(params, capacity=8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        prefill(params, np.array([0, cfg.vocab]), cache)
    with pytest.raises(ValueError, match="capacity of 8"):
        prefill(params, _ids(cfg.vocab, 9), cache)
    prefill(params, _ids(cfg.vocab, 8), cache)
    with pytest.raises(ValueError, match="kv_pos 8"):
        decode_step(params, 3, cache)
    with pytest.raises(TypeError, match="integer token ids"):
        prefill(params, np.array([1.0]), KVCache(params))
    with pytest.raises(TypeError, match="KVCache"):
        prefill(params, np.array([1]), None)
    with pytest.raises(ValueError, match="capacity"):
        KVCache(params, capacity=cfg.max_pos + 1)
    for bad, msg in ((dict(kv_heads=3), "kv_heads=3"), (dict(head_dim=7), "even"),
                     (dict(act="gelu"), "cfg.act"), (dict(attn_scale="x"), "attn_scale"),
                     (dict(probs_bits=12), "probs_bits")):
        with pytest.raises(ValueError, match=msg):
            dataclasses.replace(cfg, **bad)
    with pytest.raises(ValueError, match="emulate needs params"):
        float_forward(ckpt.dequantized_weights(), cfg, [1, 2], emulate=("softmax",))
    with pytest.raises(ValueError, match="unknown steps"):
        float_forward(ckpt.dequantized_weights(), cfg, [1, 2], emulate=("bogus",), params=params)
    with pytest.raises(ValueError, match="embed"):
        dataclasses.replace(params, embed=params.embed.astype(np.int32))
    assert isinstance(LlamaConfig.coerce(dataclasses.asdict(cfg)), LlamaConfig)


def test_emulating_every_step_approaches_the_integer_model(models):
    """The ablation's emulation is faithful: all steps emulated ~ the integer model."""
    ckpt, params = models["mha-silu"]
    ids = _ids(ckpt.cfg.vocab, 16, seed=9)
    deq = ckpt.dequantized_weights()
    golden = params.dequantize_logits(prefill(params, ids, KVCache(params)))
    emul = float_forward(deq, ckpt.cfg, ids, emulate=llm.EMULATE_STEPS, params=params)
    assert logit_correlation(golden, emul).min() > 0.999
