"""Pretrained-checkpoint import (host/hf.py), `trilut hf-run`, and the golden modes it uses.

Everything runs on a tiny random BERT checkpoint the tests write themselves
(config.json + model.safetensors + vocab.txt); the real all-MiniLM-L6-v2 is
measured by gen/fidelity.py, not here.

The two cross-checks of the NumPy float reference against
``transformers.BertModel`` / ``ViTModel`` need torch and transformers (the
``train`` / ``pretrained`` extras, about a gigabyte); the ``test`` extra does
not install them, so there (and in CI) those two tests are skipped. They pass
where the extras are installed (the float reference matches to 3.6e-6).
"""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from trilut.gen.cli import main
from trilut.golden.encoder import (ROW_ACC_BITS, EncoderConfig, encoder_stack,
                                   float_encoder_stack, float_weight_shapes)
from trilut.host.hf import (IMPORT_DEFAULTS, UnsupportedCheckpoint, cosine, load_checkpoint,
                            load_tokenizer)
from trilut.host.quantize import (accumulator_widths, check_widths, dequantize_output,
                                  quantize_encoder, quantize_input)

HIDDEN, HEADS, FFN, LAYERS, MAX_POS = 32, 4, 64, 2, 64
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "hello", "world", "un", "##believ",
         "##able", "cafe", "!", ",", ".", "a", "big", "red", "car", "##s", "is", "fast"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [f"w{i}" for i in range(40)]
CONFIG = {
    "architectures": ["BertModel"], "model_type": "bert", "hidden_size": HIDDEN,
    "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "intermediate_size": FFN,
    "vocab_size": len(VOCAB), "max_position_embeddings": MAX_POS, "type_vocab_size": 2,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "position_embedding_type": "absolute",
    "pad_token_id": 0,
}


def _add_linears(t, rng, p, attention):
    """One layer's six linear layers (weights and biases) of a random BERT
    (``attention`` = "attention.self") or ViT ("attention.attention")."""
    c, f = HIDDEN, FFN
    shapes = {f"{attention}.query": (c, c), f"{attention}.key": (c, c),
              f"{attention}.value": (c, c), "attention.output.dense": (c, c),
              "intermediate.dense": (f, c), "output.dense": (c, f)}
    for name, shape in shapes.items():
        t[p + name + ".weight"] = rng.normal(0, 1.5 / np.sqrt(shape[1]), shape)
        t[p + name + ".bias"] = 0.1 * rng.normal(size=shape[0])


def _tensors(rng, prefix=""):
    """Random BERT weights in the Hugging Face (torch) layout."""
    c = HIDDEN
    t = {"embeddings.word_embeddings.weight": rng.normal(0, 1, (len(VOCAB), c)),
         "embeddings.position_embeddings.weight": rng.normal(0, 0.3, (MAX_POS, c)),
         "embeddings.token_type_embeddings.weight": rng.normal(0, 0.3, (2, c)),
         "embeddings.LayerNorm.weight": 1 + 0.1 * rng.normal(size=c),
         "embeddings.LayerNorm.bias": 0.1 * rng.normal(size=c),
         "pooler.dense.weight": rng.normal(0, 0.1, (c, c))}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        _add_linears(t, rng, p, "attention.self")
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            gamma = 1 + 0.3 * rng.normal(size=c)
            gamma[3] = -0.8                      # a negative gamma: exercised sign handling
            t[p + ln + ".weight"] = gamma
            t[p + ln + ".bias"] = 0.1 * rng.normal(size=c)
    return {prefix + k: v.astype(np.float32) for k, v in t.items()}


def write_checkpoint(path, config=None, tensors=None, vocab=True, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or CONFIG))
    save_file(tensors if tensors is not None else _tensors(np.random.default_rng(seed)),
              str(path / "model.safetensors"))
    if vocab:
        (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def model(ckpt):
    m = load_checkpoint(ckpt)
    m.quantize(calib_ids=[ids for ids in _random_ids(np.random.default_rng(1), 12)])
    return m


def _random_ids(rng, n, lo=5, hi=None):
    """n sequences [CLS] ... [SEP] of random lengths 3..20."""
    hi = hi or len(VOCAB)
    return [np.concatenate([[2], rng.integers(lo, hi, rng.integers(1, 19)), [3]])
            for _ in range(n)]


# --------------------------------------------------------------------------- loading

def test_load_maps_checkpoint_onto_golden_names(ckpt):
    m = load_checkpoint(ckpt)
    cfg = m.cfg
    assert (cfg.hidden, cfg.heads, cfg.ffn, cfg.layers) == (HIDDEN, HEADS, FFN, LAYERS)
    for key, value in IMPORT_DEFAULTS.items():
        assert getattr(cfg, key) == value
    assert cfg.norm == "post" and cfg.ln_eps == 1e-12 and cfg.max_seq == MAX_POS
    from safetensors.numpy import load_file
    t = load_file(str(ckpt / "model.safetensors"))
    np.testing.assert_array_equal(m.weights["blocks.1.fc1.weight"],
                                  t["encoder.layer.1.intermediate.dense.weight"].T)
    np.testing.assert_array_equal(m.weights["blocks.0.ln1.weight"],
                                  t["encoder.layer.0.attention.output.LayerNorm.weight"])
    np.testing.assert_array_equal(m.weights["blocks.0.ln2.bias"],
                                  t["encoder.layer.0.output.LayerNorm.bias"])
    assert set(k for k in m.weights) == set(float_weight_shapes(cfg))


def test_head_model_prefix_is_stripped(tmp_path):
    cfg = dict(CONFIG, architectures=["BertForMaskedLM"])
    tensors = _tensors(np.random.default_rng(0), prefix="bert.")
    tensors["cls.predictions.bias"] = np.zeros(len(VOCAB), np.float32)
    m = load_checkpoint(write_checkpoint(tmp_path, cfg, tensors))
    assert m.cfg.layers == LAYERS


@pytest.mark.parametrize("change, match", [
    (dict(model_type="roberta", architectures=["RobertaModel"]), "model_type='roberta'"),
    (dict(model_type="vit", architectures=["BertModel"]), r"architectures=\['BertModel'\]"),
    (dict(model_type="distilbert", architectures=["DistilBertModel"]), "'distilbert'"),
    (dict(architectures=["GPT2LMHeadModel"]), "GPT2LMHeadModel"),
    (dict(hidden_act="gelu_new"), "hidden_act='gelu_new'"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type"),
])
def test_unsupported_architectures_fail_clearly(tmp_path, change, match):
    write_checkpoint(tmp_path, dict(CONFIG, **change), tensors={"x": np.zeros(1, np.float32)})
    with pytest.raises(UnsupportedCheckpoint, match=match) as exc:
        load_checkpoint(tmp_path)
    assert "supported: model_type 'bert'" in str(exc.value) or "only" in str(exc.value)
    assert "model_type 'vit'" in str(exc.value) or "only" in str(exc.value)


def test_broken_checkpoints_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")
    tensors = _tensors(np.random.default_rng(0))
    del tensors["encoder.layer.1.output.dense.bias"]
    write_checkpoint(tmp_path / "a", tensors=tensors)
    with pytest.raises(ValueError, match=r"missing tensor 'encoder\.layer\.1\.output\.dense"):
        load_checkpoint(tmp_path / "a")
    tensors = _tensors(np.random.default_rng(0))
    tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((FFN, HIDDEN + 1),
                                                                    np.float32)
    write_checkpoint(tmp_path / "b", tensors=tensors)
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight has shape"):
        load_checkpoint(tmp_path / "b")
    write_checkpoint(tmp_path / "c", config={k: v for k, v in CONFIG.items()
                                            if k != "intermediate_size"})
    with pytest.raises(ValueError, match="missing.*intermediate_size"):
        load_checkpoint(tmp_path / "c")


def test_wordpiece_tokenizer(ckpt):
    tok = load_tokenizer(ckpt)
    v = {t: i for i, t in enumerate(VOCAB)}
    assert tok.tokenize("Hello, WORLD!") == ["hello", ",", "world", "!"]
    assert tok.tokenize("Unbelievable cars") == ["un", "##believ", "##able", "car", "##s"]
    assert tok.tokenize("Café  zebra") == ["cafe", "[UNK]"]
    assert list(tok.encode("the cat.")) == [v["[CLS]"], v["the"], v["cat"], v["."], v["[SEP]"]]
    import tokenizers                      # a test dependency: the reference WordPiece
    ref = tokenizers.BertWordPieceTokenizer(str(ckpt / "vocab.txt"), lowercase=True)
    for text in ("Hello, WORLD!", "Unbelievable cars is fast.", "Café\tzebra  the mat",
                 "a big red dog ran on the mat!!"):
        assert list(tok.encode(text)) == ref.encode(text).ids, text


# --------------------------------------------------------------------------- float reference

def test_float_reference_matches_transformers(ckpt, model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(str(ckpt)).eval()
    rng = np.random.default_rng(5)
    ids = rng.integers(5, len(VOCAB), (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0                                 # right padding
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    ours = model.float_forward(input_ids=ids, attention_mask=mask)
    keep = mask.astype(bool)
    np.testing.assert_allclose(ours[keep], ref[keep], atol=2e-5)
    assert not ours[~keep].any()


# --------------------------------------------------------------------------- integer pipeline

def test_integer_pipeline_tracks_the_float_model(model):
    ids = _random_ids(np.random.default_rng(7), 6)        # not the calibration ids
    toks, pooled = [], []
    for s in ids:
        y, f = model.integer_forward(input_ids=s)[0], model.float_forward(input_ids=s)[0]
        toks.append(cosine(y, f))
        pooled.append(cosine(y.mean(0), f.mean(0)))
    toks = np.concatenate(toks)
    assert toks.mean() > 0.99 and toks.min() > 0.95, (toks.mean(), toks.min())
    assert min(pooled) > 0.99


def test_cosine_check_catches_a_wrong_mapping(ckpt, model):
    """A deliberately wrong import (ln1/ln2 swapped) must fail the cosine check above."""
    wrong = load_checkpoint(ckpt)
    w = wrong.weights
    for i in range(LAYERS):
        for part in ("weight", "bias"):
            a, b = f"blocks.{i}.ln1.{part}", f"blocks.{i}.ln2.{part}"
            w[a], w[b] = w[b], w[a]
    wrong.quantize(calib_ids=_random_ids(np.random.default_rng(1), 12))
    s = _random_ids(np.random.default_rng(7), 1)[0]
    assert cosine(wrong.integer_forward(input_ids=s)[0],
                  model.float_forward(input_ids=s)[0]).mean() < 0.95


def test_integer_forward_is_the_golden_stack(model):
    """integer_forward = quantize_input -> encoder_stack -> dequantize (masked rows alone)."""
    rng = np.random.default_rng(3)
    ids = rng.integers(5, len(VOCAB), (2, 9))
    mask = np.ones_like(ids)
    mask[0, 6:] = 0
    out = model.integer_forward(input_ids=ids, attention_mask=mask)
    for b in range(2):
        pos = np.flatnonzero(mask[b])
        x = quantize_input(model.embed(ids[b, pos], pos), model.params)
        ref = dequantize_output(encoder_stack(x, model.params), model.params)
        np.testing.assert_array_equal(out[b, pos], ref)
    assert not out[0, 6:].any()


def test_bad_inputs_fail_before_running(model):
    with pytest.raises(ValueError, match=r"token id 999 outside the vocabulary \[0, 68\)"):
        model.integer_forward(input_ids=np.array([[2, 999, 3]]))
    with pytest.raises(ValueError, match="token id -1"):
        model.integer_forward(input_ids=np.array([2, -1, 3]))
    with pytest.raises(ValueError, match=r"expected shape \(batch, tokens\)"):
        model.integer_forward(input_ids=np.zeros((1, 2, 3), np.int64))
    with pytest.raises(TypeError, match="integer token ids"):
        model.integer_forward(input_ids=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="65 tokens exceed the model's maximum of 64"):
        model.integer_forward(input_ids=np.full((1, 65), 5))
    with pytest.raises(ValueError, match="attention_mask: shape"):
        model.integer_forward(input_ids=np.full((2, 4), 5),
                              attention_mask=np.ones((2, 5), np.int64))
    with pytest.raises(ValueError, match="sequence 1 has no unmasked token"):
        model.integer_forward(input_ids=np.full((2, 4), 5),
                              attention_mask=np.array([[1, 1, 0, 0], [0, 0, 0, 0]]))
    fresh = load_checkpoint(model.path)
    with pytest.raises(ValueError, match="call quantize"):
        fresh.integer_forward(input_ids=np.array([2, 5, 3]))


# --------------------------------------------------------------------------- hf-run

def test_hf_run_end_to_end(ckpt, tmp_path, capsys):
    rng = np.random.default_rng(11)
    ids = rng.integers(5, len(VOCAB), (3, 10))
    mask = np.ones_like(ids)
    mask[2, 8:] = 0
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    out, js = tmp_path / "hidden.npy", tmp_path / "run.json"
    rc = main(["hf-run", str(ckpt), "--input-ids", str(tmp_path / "ids.npy"), "--out", str(out),
               "--attention-mask", str(tmp_path / "mask.npy"), "--json", str(js)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "calibrating on 16 built-in sentences and 2 paragraphs" in text
    assert "per-token cosine" in text
    hidden = np.load(out)
    assert hidden.dtype == np.float32 and hidden.shape == (3, 10, HIDDEN)
    assert not hidden[2, 8:].any() and np.abs(hidden[mask == 1]).min(axis=-1).size == 28
    summary = json.loads(js.read_text())
    assert summary["shape"] == [3, 10, HIDDEN] and summary["token_cosine_mean"] > 0.98
    # the same ids through the Python API give the same numbers
    m = load_checkpoint(ckpt)
    tok = load_tokenizer(ckpt)
    from trilut.host.hf import calibration_ids
    m.quantize(calib_ids=calibration_ids(tok, MAX_POS))
    np.testing.assert_array_equal(
        hidden, m.integer_forward(input_ids=ids, attention_mask=mask).astype(np.float32))


def test_hf_run_errors(ckpt, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.array([[2, 500, 3]]))
    np.save(tmp_path / "ok.npy", np.array([[2, 7, 3]]))
    np.save(tmp_path / "cube.npy", np.zeros((1, 2, 3), np.int64))
    out = str(tmp_path / "h.npy")
    cases = [
        (["--input-ids", str(tmp_path / "bad.npy")], "token id 500 outside the vocabulary"),
        (["--input-ids", str(tmp_path / "cube.npy")], "expected shape (batch, tokens)"),
        (["--input-ids", str(tmp_path / "missing.npy")], "--input-ids: "),
        (["--input-ids", str(tmp_path / "ok.npy"), "--attention-mask",
          str(tmp_path / "cube.npy")], "attention_mask: shape"),
        ([], "give exactly one of --input-ids (BERT) or --pixels (ViT)"),
        (["--pixels", str(tmp_path / "cube.npy")], "a bert checkpoint takes token ids"),
    ]
    for extra, msg in cases:
        assert main(["hf-run", str(ckpt), "--out", out] + extra) == 2
        assert msg in capsys.readouterr().err
    write_checkpoint(tmp_path / "rob", dict(CONFIG, model_type="roberta",
                                            architectures=["RobertaModel"]), tensors={})
    assert main(["hf-run", str(tmp_path / "rob"), "--input-ids", str(tmp_path / "ok.npy"),
                 "--out", out]) == 2
    assert "unsupported checkpoint (model_type='roberta'" in capsys.readouterr().err
    assert not (tmp_path / "h.npy").exists()


def test_hf_run_without_vocab_calibrates_on_inputs(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "novocab", vocab=False)
    np.save(tmp_path / "ids.npy", np.random.default_rng(2).integers(5, len(VOCAB), (4, 12)))
    assert main(["hf-run", str(ckpt), "--input-ids", str(tmp_path / "ids.npy"),
                 "--out", str(tmp_path / "h.npy"), "--gelu-mode", "ivit",
                 "--probs-bits", "8"]) == 0
    text = capsys.readouterr().out
    assert "the inputs themselves" in text and "gelu=ivit" in text and "probs_bits=8" in text


# --------------------------------------------------------------------------- golden modes

def _tiny(norm, act_quant, probs_bits=16, gelu_mode="accurate", seed=0):
    cfg = EncoderConfig(hidden=16, heads=2, ffn=32, layers=2, weights="int8", norm=norm,
                        act_quant=act_quant, probs_bits=probs_bits, gelu_mode=gelu_mode,
                        max_seq=12)
    rng = np.random.default_rng(seed)
    w = {k: rng.normal(0, 0.3, s) for k, s in float_weight_shapes(cfg).items()}
    for i in range(2):
        for ln in ("ln1", "ln2"):
            w[f"blocks.{i}.{ln}.weight"] = 1 + 0.4 * rng.normal(size=16)
            w[f"blocks.{i}.{ln}.weight"][2] = -0.7           # a negative gamma
    x = rng.normal(size=(6, 12, 16))
    return cfg, w, x


@pytest.mark.parametrize("norm, act_quant, probs_bits, gelu_mode", [
    ("post", "token", 16, "accurate"), ("post", "token", 8, ("ivit", "accurate")),
    ("pre", "token", 16, "accurate"), ("pre", "static", 16, "ivit"),
])
def test_golden_modes_dtypes_and_fidelity(norm, act_quant, probs_bits, gelu_mode):
    cfg, w, x = _tiny(norm, act_quant, probs_bits, gelu_mode)
    params = quantize_encoder(w, cfg, x[:3], width_headroom=2.0)
    assert [b.gelu_mode for b in params.blocks] == list(cfg.gelu_mode if not isinstance(
        cfg.gelu_mode, str) else [cfg.gelu_mode] * 2)
    t = encoder_stack(quantize_input(x[3:], params), params, trace=True)
    b0 = params.blocks[0]
    assert [k[len("blocks.0."):] for k in t if k.startswith("blocks.0.")] == \
        list(b0.trace_names)
    probs = t["blocks.0.probs"]
    assert probs.dtype == (np.int16 if probs_bits == 16 else np.int8)
    assert probs.min() >= 0 and probs.max() < 2 ** (probs_bits - 1)
    if act_quant == "token":
        src = "x" if norm == "post" else "ln1"
        q8, amax = t[f"blocks.0.{src}_q8"], t[f"blocks.0.{src}_amax"]
        assert q8.dtype == np.int8 and np.abs(q8).max(axis=-1).min() == 127
        assert amax.shape == q8.shape[:-1] + (1,)
        assert t["blocks.0.attn"].dtype == t["blocks.0.gelu"].dtype == np.int16
        assert np.abs(t["blocks.0.fc2_acc"]).max() < 2 ** (ROW_ACC_BITS - 1)
    if norm == "post":
        assert t["blocks.1.ln2"].dtype == np.int16
        np.testing.assert_array_equal(t["out"], t["blocks.1.ln2"])
        assert (np.asarray(b0.ln1.sign) < 0).any()          # negative gammas present
    y = dequantize_output(t["out"], params)
    f = float_encoder_stack(x[3:], w, cfg)
    assert cosine(y, f).min() > 0.97
    scales = b0.trace_scales()
    f_t = float_encoder_stack(x[3:], w, cfg, trace=True)
    for name in ("ln1", "attn", "res1", "ln2", "res2"):
        got = t[f"blocks.0.{name}"] * scales[name]
        assert cosine(got.reshape(-1), f_t[f"blocks.0.{name}"].reshape(-1)) > 0.98, name


def test_float_ops_return_one_operator_to_float():
    cfg, w, x = _tiny("post", "token")
    params = quantize_encoder(w, cfg, x[:3])
    xi = quantize_input(x[3:], params)
    base = encoder_stack(xi, params)
    np.testing.assert_array_equal(base, encoder_stack(xi, params, float_ops=()))
    f = float_encoder_stack(x[3:], w, cfg)
    for op in ("layernorm", "softmax", "gelu"):
        y = encoder_stack(xi, params, float_ops=(op,))
        assert y.dtype == np.int16 and not np.array_equal(y, base), op
        assert cosine(dequantize_output(y, params), f).min() > 0.97
    with pytest.raises(ValueError, match=r"float_ops: unknown operators \['exp'\]"):
        encoder_stack(xi, params, float_ops=("exp",))


def test_mode_validation_and_width_refusal():
    with pytest.raises(ValueError, match="norm='post' needs cfg.act_quant='token'"):
        EncoderConfig(hidden=16, heads=2, ffn=32, norm="post")
    with pytest.raises(ValueError, match=r"cfg.probs_bits must be one of \(8, 16\)"):
        EncoderConfig(hidden=16, heads=2, ffn=32, probs_bits=12)
    with pytest.raises(ValueError, match="per-block modes"):
        EncoderConfig(hidden=16, heads=2, ffn=32, layers=2, gelu_mode=("ivit",))
    cfg, w, x = _tiny("post", "token")
    params = quantize_encoder(w, cfg, [x[0, :5], x[1]])      # ragged calibration
    xi = quantize_input(x[3:], params)
    widths = accumulator_widths(params, xi)
    assert widths["blocks.0.q_acc"]["bits_available"] == ROW_ACC_BITS
    assert widths["blocks.0.qk_acc"]["bits_available"] == 32
    worst = max(widths, key=lambda k: widths[k]["bits_needed"] - widths[k]["bits_available"])
    need = widths[worst]
    headroom = 2.0 ** (need["bits_available"] - need["bits_needed"] + 2)
    with pytest.raises(ValueError, match=rf"^{worst}: calibrated \|value\| up to "
                                         rf"{need['max_abs']} needs"):
        check_widths(params, xi, headroom)


# --------------------------------------------------------------------------- ViT

VIT_CONFIG = {
    "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": HIDDEN,
    "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "intermediate_size": FFN,
    "image_size": 8, "patch_size": 4, "num_channels": 3, "qkv_bias": True,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12,
}


def _vit_tensors(rng):
    c = HIDDEN
    t = {"embeddings.cls_token": rng.normal(0, 1, (1, 1, c)),
         "embeddings.position_embeddings": rng.normal(0, 0.3, (1, 5, c)),
         "embeddings.patch_embeddings.projection.weight": rng.normal(0, 0.3, (c, 3, 4, 4)),
         "embeddings.patch_embeddings.projection.bias": 0.1 * rng.normal(size=c),
         "layernorm.weight": 1 + 0.2 * rng.normal(size=c),
         "layernorm.bias": 0.1 * rng.normal(size=c)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        _add_linears(t, rng, p, "attention.attention")
        for ln in ("layernorm_before", "layernorm_after"):
            t[p + ln + ".weight"] = 1 + 0.3 * rng.normal(size=c)
            t[p + ln + ".bias"] = 0.1 * rng.normal(size=c)
    return {k: v.astype(np.float32) for k, v in t.items()}


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("tiny-vit"), VIT_CONFIG,
                            _vit_tensors(np.random.default_rng(4)), vocab=False)
    m = load_checkpoint(path)
    m.quantize(calib_pixels=np.random.default_rng(8).normal(size=(16, 3, 8, 8)))
    return m


def test_vit_maps_onto_pre_ln_blocks_and_tracks_float(vit):
    assert vit.kind == "vit" and vit.cfg.norm == "pre" and vit.cfg.max_seq == 5
    assert vit.cfg.act_quant == "token" and vit.cfg.probs_bits == 16
    px = np.random.default_rng(9).normal(size=(4, 3, 8, 8))
    y, f = vit.integer_forward(pixels=px), vit.float_forward(pixels=px)
    assert y.shape == f.shape == (4, 5, HIDDEN)
    c = cosine(y, f)
    assert c.mean() > 0.99 and c.min() > 0.97, (c.mean(), c.min())
    with pytest.raises(ValueError, match=r"pixels: expected shape \(batch, 3, 8, 8\)"):
        vit.integer_forward(pixels=np.zeros((1, 3, 8, 9)))
    with pytest.raises(ValueError, match="a vit checkpoint takes pixels"):
        vit.integer_forward(input_ids=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="needs calib_pixels"):
        load_checkpoint(vit.path).quantize()


def test_vit_float_reference_matches_transformers(vit):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.ViTModel.from_pretrained(str(vit.path)).eval()
    px = np.random.default_rng(10).normal(size=(2, 3, 8, 8))
    with torch.no_grad():
        ref = hf(torch.tensor(px, dtype=torch.float32)).last_hidden_state.numpy()
    np.testing.assert_allclose(vit.float_forward(pixels=px), ref, atol=3e-5)


def test_hf_run_pixels(vit, tmp_path, capsys):
    px = np.random.default_rng(12).normal(size=(3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "px.npy", px)
    out = tmp_path / "h.npy"
    assert main(["hf-run", str(vit.path), "--pixels", str(tmp_path / "px.npy"),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "norm=pre" in text and "the inputs themselves" in text
    assert np.load(out).shape == (3, 5, HIDDEN)
    assert main(["hf-run", str(vit.path), "--pixels", str(tmp_path / "px.npy"),
                 "--attention-mask", str(tmp_path / "px.npy"), "--out", str(out)]) == 2
    assert "--attention-mask applies to token ids only" in capsys.readouterr().err
