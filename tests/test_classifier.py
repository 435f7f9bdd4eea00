# amaranth: UnusedElaboratable=no
"""The integer classifier around the encoder (golden/classifier.py), its
quantizer (host/quantize.py: quantize_embedding, quantize_head,
quantize_classifier) and its program (compile_stack(embed=, head=)): exact
against float within the quantization bounds, bad input refused with a
clear error, the program's shape and constant sets. The hardware runs it in
tests/test_demo.py."""
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

from trilut.golden.classifier import (EmbedParams, HeadParams, classifier, embed, head,
                                      pool_logits)
from trilut.golden.encoder import (EncoderConfig, encoder_stack, float_encoder_stack,
                                   float_layernorm, float_weight_shapes)
from trilut.host.compiler import CompileError, compile_stack
from trilut.host.quantize import (dequantized_weights, pinned, quantize_classifier,
                                  quantize_embedding, quantize_head)
from trilut.hw.isa import RESIDUAL_BANK, Opcode, unpack_descriptor
from trilut.hw.top import Accelerator

PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=256, prog_depth=32, const_sets=12)
K, T, C, CLASSES, EPS = 6, 8, 32, 5, 1e-5
SCALE = 1 / 16


@lru_cache(maxsize=None)
def model(layers=1):
    """A random pre-LN classifier: features (T, K) int8 at SCALE."""
    rng = np.random.default_rng(1)
    cfg = EncoderConfig(hidden=C, heads=2, ffn=64, max_seq=T, layers=layers)
    w = {name: rng.standard_normal(shape) / np.sqrt(shape[0])
         for name, shape in float_weight_shapes(cfg).items()}
    we, be = rng.standard_normal((K, C)), rng.standard_normal(C) * 0.3
    hw = (1 + 0.3 * rng.standard_normal(C), 0.2 * rng.standard_normal(C),
          rng.standard_normal((C, CLASSES)) / np.sqrt(C), 0.3 * rng.standard_normal(CLASSES))
    feats = rng.integers(0, 17, (32, T, K)).astype(np.int8)
    params = quantize_classifier(w, cfg, we, be, SCALE, feats, hw, eps=EPS)
    return cfg, w, we, be, hw, feats, params


def float_logits(feats, cfg, w, we, be, hw):
    """The float classifier (the integer model's weights dequantized in the encoder)."""
    x = feats * SCALE @ we + be
    y = float_encoder_stack(x, dequantized_weights(w, cfg), cfg)
    g, b, wh, bh = hw
    return float_layernorm(y, g, b, EPS)[1] @ wh + bh


def test_embed_within_quantization_bound():
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    x = embed(feats, emb) * emb.out_scale
    ref = pinned(feats * SCALE @ we + be)
    lin = emb.linear
    # int8 weights (half a step each), the int32 bias and the int16 output rounding.
    bound = (np.abs(feats).sum(-1, keepdims=True) * SCALE * lin.w_scale / 2
             + SCALE * lin.w_scale / 2 + emb.out_scale)
    assert (np.abs(x - ref) <= bound * 1.001).all()
    assert np.abs(x).max() > 100 * emb.out_scale          # not a trivially small signal
    assert (embed(feats, emb)[..., 0] == 0).all()         # the pinned channel


def test_head_fold_matches_float_head():
    """The head on the encoder's integer output gives the float head's
    logits on that output (gamma, beta and channel 0 folded, int8 steps)."""
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    y = encoder_stack(embed(feats, emb), enc)
    got = head(y, hd)[..., list(hd.classes)] * hd.out_scale
    g, b, wh, bh = hw
    want = float_layernorm(y * enc.out_scale, g, b, EPS)[1] @ wh + bh
    err = np.abs(got - want).max()
    assert err < 0.03 * np.abs(want).max(), err
    assert (head(y, hd)[..., 0] == 0).all()               # column 0: spare


def test_classifier_agrees_with_float_and_can_fail():
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    lg = classifier(feats, emb, enc, hd)
    want = float_logits(feats, cfg, w, we, be, hw).sum(-2)
    scores = pool_logits(lg, hd)
    assert scores.shape == (32, CLASSES) and scores.dtype == np.int64
    assert np.mean(scores.argmax(-1) == want.argmax(-1)) >= 0.9
    t = classifier(feats, emb, enc, hd, trace=True)
    assert np.array_equal(t["logits"], lg) and np.array_equal(t["x"], embed(feats, emb))
    assert np.array_equal(t["out"], t["blocks.0.res2"]) and t["head_ln"].dtype == np.int8
    # A wrong model (the head NORM's channel 0 not folded away) disagrees.
    wh = hd.linear.weights.copy()
    wh[0] = wh[1]
    broken = replace(hd, linear=replace(hd.linear, weights=wh))
    assert not np.array_equal(classifier(feats, emb, enc, broken), lg)


def test_bad_parameters_and_inputs_are_refused():
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    with pytest.raises(ValueError, match="kind must be 'int8'"):
        EmbedParams(replace(emb.linear, kind="ternary"), SCALE, emb.out_scale)
    with pytest.raises(TypeError, match="LinearParams"):
        EmbedParams(None, SCALE, 1.0)
    with pytest.raises(ValueError, match="head.classes"):
        replace(hd, classes=(0, 99))
    with pytest.raises(ValueError, match="head.classes"):
        replace(hd, classes=(1, 1))
    with pytest.raises(ValueError, match=r"features: expected shape \(\.\.\., T, 6\)"):
        embed(feats[..., :4], emb)
    with pytest.raises(TypeError, match="features must have an integer dtype"):
        embed(feats.astype(float), emb)
    with pytest.raises(ValueError, match=r"features must be in \[-128, 127\], got \[0, 320\]"):
        embed(feats.astype(np.int16) * 20, emb)
    with pytest.raises(ValueError, match="y: expected shape"):
        head(np.zeros((T, C + 1), np.int16), hd)
    with pytest.raises(TypeError, match="HeadParams"):
        head(np.zeros((T, C), np.int16), emb)
    with pytest.raises(ValueError, match="pin_channel"):
        quantize_embedding(we, be, SCALE, 1.0, pin_channel=C)
    with pytest.raises(ValueError, match="weight .K, C. and bias"):
        quantize_embedding(we, be[:3], SCALE, 1.0)
    with pytest.raises(ValueError, match="head: expected"):
        quantize_head(*hw[:2], hw[2][:3], hw[3], np.zeros((2, T, C)), eps=EPS)
    with pytest.raises(ValueError, match="head calib"):
        quantize_head(*hw, np.full((2, T, C), np.nan), eps=EPS)
    with pytest.raises(ValueError, match="pre-LN"):
        quantize_classifier(w, dict(vars(cfg), norm="post", act_quant="token"), we, be,
                            SCALE, feats, hw, eps=EPS)


def test_program_shape_and_shared_constant_sets():
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    prog = compile_stack(enc, PARAMS, T, embed=emb, head=hd)
    assert prog.passes == ["load_f", "embed", "ln1", "k", "v", "q", "qk", "av", "o", "ln2",
                           "fc1", "fc2", "head_ln", "head", "store_logits", "end"]
    descs = [unpack_descriptor(d) for d in prog.descriptors]
    d = dict(zip(prog.passes, descs))
    assert (d["load_f"]["opcode"], d["load_f"]["dst_bank"], d["load_f"]["k"]) == \
        (Opcode.LOAD, 0, K)
    assert (d["embed"]["dst_bank"], d["embed"]["n"], d["head"]["n"]) == (RESIDUAL_BANK, C, 8)
    # 10 sets of the block + embed / head NORM / head LINEAR: the embedding
    # shares the QK set (entry 0 Shiftmax's), the head NORM the AV set; the
    # head LINEAR (no third attention set in one block) has its own.
    assert len(prog.consts) == 11
    assert d["embed"]["const"] == d["qk"]["const"] and d["head_ln"]["const"] == d["av"]["const"]
    qk_set = prog.consts[d["qk"]["const"]][1]
    assert len(qk_set) == C and qk_set[0] >> 96 & 0xFFFF == (-enc.blocks[0].softmax_x0
                                                              ^ 0xFFFF) + 1
    assert [o.name for o in prog.outputs] == ["logits"] and prog.outputs[0].columns == 6
    acc = Accelerator(**PARAMS)
    assert prog.input_frames(feats[0]) == acc.row_frames(feats[0], wide=False)
    frames = acc.row_frames(np.pad(classifier(feats[0], emb, enc, hd), ((0, 0), (0, 2))),
                            wide=True)
    assert np.array_equal(prog.decode(frames)["logits"], classifier(feats[0], emb, enc, hd))
    # Without the spare constants nothing is shared: 13 sets.
    plain = replace(emb, linear=replace(emb.linear, requant=replace(
        emb.linear.requant, m=np.where(np.arange(C) == 0, 0, emb.linear.requant.m))))
    with pytest.raises(CompileError, match=r"needs 12 constant sets .* const_sets = 11"):
        compile_stack(enc, dict(PARAMS, const_sets=11), T, embed=plain, head=hd)
    traced = compile_stack(enc, dict(PARAMS, prog_depth=64), T, embed=emb, head=hd, trace=True)
    assert [o.name for o in traced.outputs][:2] == ["x", "blocks.0.ln1"]
    assert [o.name for o in traced.outputs][-2:] == ["head_ln", "logits"]


def test_compiler_refuses_bad_classifier_input():
    cfg, w, we, be, hw, feats, (emb, enc, hd) = model()
    prog = compile_stack(enc, PARAMS, T, embed=emb, head=hd)
    with pytest.raises(CompileError, match=r"expected shape \(8, 6\)"):
        prog.input_frames(feats[0, :, :4])
    with pytest.raises(CompileError, match="must fit int8"):
        prog.input_frames(feats[0].astype(np.int16) * 20)
    with pytest.raises(CompileError, match="integer array"):
        prog.input_frames(feats[0].astype(float))
    with pytest.raises(TypeError, match="EmbedParams"):
        compile_stack(enc, PARAMS, T, embed=hd)
    with pytest.raises(TypeError, match="head: expected HeadParams, got EmbedParams"):
        compile_stack(enc, PARAMS, T, head=emb)
    _, _, _, _, _, _, (emb2, enc2, hd2) = model(layers=2)
    # Two blocks: all three classifier passes share attention sets (20, not 23).
    assert len(compile_stack(enc2, dict(PARAMS, const_sets=20), T, embed=emb2,
                             head=hd2).consts) == 20
    with pytest.raises(CompileError, match="needs 20 constant sets .*shared: 3"):
        compile_stack(enc2, dict(PARAMS, const_sets=19), T, embed=emb2, head=hd2)
    wide = quantize_embedding(np.ones((300, C)), np.zeros(C), SCALE, emb.out_scale)
    with pytest.raises(CompileError, match="embed: weights 300 x 32 exceed max_width"):
        compile_stack(enc, PARAMS, T, embed=wide, head=hd)
    narrow = quantize_embedding(we[:, :16], be[:16], SCALE, 1e-3)
    with pytest.raises(CompileError, match="classifier .*\n  embed: output width 16 differs "
                                           "from the blocks' hidden 32"):
        compile_stack(enc, PARAMS, T, embed=narrow, head=hd)
