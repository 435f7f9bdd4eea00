# amaranth: UnusedElaboratable=no
"""host.compiler: program structure, frame order, decoding, and the checks
that refuse models a build cannot run (naming the tensor). The programs
themselves run on the simulated accelerator in tests/test_hw_top.py."""
import dataclasses
from functools import lru_cache

import numpy as np
import pytest

from trilut.golden.encoder import EncoderConfig, encoder_block, float_weight_shapes
from trilut.host.compiler import (CONST_SETS_PER_BLOCK, CompileError, compile_block,
                                  compile_stack)
from trilut.host.quantize import quantize_encoder, quantize_input
from trilut.hw.isa import KEY_BANK, RESIDUAL_BANK, VALUE_BANK, Opcode, unpack_descriptor
from trilut.hw.top import Accelerator

PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=256, prog_depth=32, const_sets=12)


@lru_cache(maxsize=None)
def model(hidden=32, heads=4, ffn=64, seq=8, layers=1, seed=0, **cfg_kw):
    rng = np.random.default_rng(seed)
    cfg = EncoderConfig(hidden=hidden, heads=heads, ffn=ffn, max_seq=seq, layers=layers,
                        **cfg_kw)
    w = {name: rng.standard_normal(shape) / np.sqrt(shape[0])
         for name, shape in float_weight_shapes(cfg).items()}
    params = quantize_encoder(w, cfg, rng.standard_normal((4, seq, hidden)))
    return params, quantize_input(rng.standard_normal((seq, hidden)), params)


def test_block_program_structure():
    params, x = model()
    block = params.blocks[0]
    prog = compile_block(block, PARAMS, 8, trace=True)
    assert prog.accel_params == Accelerator(**PARAMS).params
    descs = [unpack_descriptor(d) for d in prog.descriptors]
    assert descs[-1]["opcode"] == Opcode.END and prog.passes[-1] == "end"
    assert len(prog.passes) == len(descs)
    ops = [d["opcode"] for d in descs]
    assert ops.count(Opcode.LINEAR) == 6 and ops.count(Opcode.NORM) == 2
    qk = descs[prog.passes.index("qk")]
    assert (qk["opcode"], qk["heads"], qk["k"], qk["n"], qk["rows"]) == \
        (Opcode.ATTN_QK, 4, 8, 8, 8)
    av = descs[prog.passes.index("av")]
    assert (av["opcode"], av["heads"], av["k"], av["n"]) == (Opcode.ATTN_AV, 4, 8, 8)
    assert descs[prog.passes.index("k")]["dst_bank"] == KEY_BANK
    assert descs[prog.passes.index("v")]["dst_bank"] == VALUE_BANK
    assert descs[prog.passes.index("fc2")]["dst_bank"] == RESIDUAL_BANK
    # One constant set per pass with constants; attention passes use one entry.
    assert [s for s, _ in prog.consts] == list(range(CONST_SETS_PER_BLOCK))
    sizes = [len(e) for _, e in prog.consts]
    assert sizes == [32, 32, 32, 32, 1, 1, 32, 32, 64, 32]
    assert [o.name for o in prog.outputs] == ["ln1", "q", "k", "v", "probs", "attn", "res1",
                                              "ln2", "gelu", "res2"]
    # s_axis: the x rows only; s_axis_wgt: one frame per LINEAR, in program order.
    acc = Accelerator(**PARAMS)
    assert prog.input_frames(x) == acc.row_frames(x, wide=True)
    wf = prog.weight_frames()
    order = [n for n, d in zip(prog.passes, descs) if d["opcode"] == Opcode.LINEAR]
    assert order == ["k", "v", "q", "o", "fc1", "fc2"]
    assert wf == [f for n in order for f in acc.weight_frames(getattr(block, n).weights)]
    e = acc.engine
    assert len(wf[4]) == acc.axis_bytes * -(-32 // e.k_block) * (64 // e.lanes)   # fc1


def test_decode_round_trip():
    """Frames as the hardware would store the golden tensors decode back to
    the golden trace (probs from T rows of heads x T to (heads, T, T))."""
    params, x = model()
    block = params.blocks[0]
    prog = compile_block(block, PARAMS, 8, trace=True)
    trace = encoder_block(x, block, trace=True)
    acc = Accelerator(**PARAMS)
    frames = []
    for o in prog.outputs:
        t = trace[o.name]
        if o.heads:
            t = t.transpose(1, 0, 2).reshape(8, -1)
        frames += acc.row_frames(t, wide=o.wide)
    got = prog.decode(frames)
    for name, value in got.items():
        assert np.array_equal(value, trace[name]), name
    with pytest.raises(CompileError, match="frames"):
        prog.decode(frames[:-1])


def test_untraced_program_stores_only_the_output():
    params, _ = model()
    prog = compile_block(params.blocks[0], PARAMS, 8)
    assert [o.name for o in prog.outputs] == ["res2"]
    assert sum(p.startswith("store") for p in prog.passes) == 1


def test_stack():
    params, x = model(layers=2)
    with pytest.raises(CompileError, match="constant sets"):
        compile_stack(params, PARAMS, 8)
    prog = compile_stack(params, dict(PARAMS, const_sets=20, prog_depth=64), 8, trace=True)
    assert [o.name for o in prog.outputs][-1] == "out"
    assert "blocks.1.probs" in [o.name for o in prog.outputs]
    assert len(prog.input_frames(x)) == 8 and len(prog.weight_frames()) == 2 * 6


@pytest.mark.parametrize("change,match", [
    (dict(seq=17), r"x: sequence length 17"),
    (dict(params=dict(max_width=16)), r"hidden = 32 exceeds max_width"),
    (dict(params=dict(banks=1)), r"2 int8 banks"),
    (dict(params=dict(prog_depth=8)), r"prog_depth = 8"),
    (dict(params=dict(const_sets=4)), r"constant sets"),
    (dict(params=dict(attn_kpc=16)), r"head dim 8 must be a multiple of attn_kpc"),
    (dict(model=dict(weights="int8"), params=dict(wstore_depth=16)),
     r"blocks\.0\.q: int8 weights \(32 x 32\) are 64 weight-store beats"),
    (dict(model=dict(probs_bits=16)), r"blocks\.0\.probs: probs_bits 16"),
    (dict(model=dict(act_quant="token"), seq=8, params=dict(max_rows=16)),
     r"sequence length 8 \(3 regions of seq rows in the int16 bank\) needs 24 rows"),
    (dict(model=dict(gelu_mode="accurate")), r"blocks\.0\.fc1: gelu_mode"),
    (dict(model=dict(heads=2, ffn=512)), r"ffn = 512 exceeds max_width"),
])
def test_refused_before_anything_runs(change, match):
    seq = change.get("seq", 8)
    params, _ = model(seq=max(seq, 8), **change.get("model", {}))
    with pytest.raises(CompileError, match=match):
        compile_block(params.blocks[0], dict(PARAMS, **change.get("params", {})), seq)


def test_every_problem_listed():
    """A model that does not fit gets one error naming each tensor that does
    not fit, not just the first."""
    params, _ = model(weights="int8", gelu_mode="accurate", ffn=512)
    with pytest.raises(CompileError) as info:
        compile_block(params.blocks[0], dict(PARAMS, wstore_depth=16), 8)
    msg = str(info.value)
    assert "problems):" in msg
    for part in ("ffn = 512 exceeds max_width", "fc1: gelu_mode 'accurate'",
                 "q: int8 weights", "fc2: int8 weights"):
        assert part in msg, (part, msg)


def test_bad_inputs_named():
    params, x = model()
    prog = compile_block(params.blocks[0], PARAMS, 8)
    with pytest.raises(CompileError, match=r"x: expected shape \(8, 32\)"):
        prog.input_frames(x[:4])
    with pytest.raises(CompileError, match="x: expected an integer"):
        prog.input_frames(x.astype(float))
    with pytest.raises(TypeError, match="accel"):
        compile_block(params.blocks[0], "big", 8)
    wrong = dataclasses.replace(params.blocks[0], m_bits=20)
    with pytest.raises(CompileError, match="m_bits"):
        compile_block(wrong, PARAMS, 8)
