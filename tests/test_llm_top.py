# amaranth: UnusedElaboratable=no
"""The ternary decoder on a decoder build of the accelerator top
(``Accelerator(llm=True)``, unit ``top-llm-small``): prefill and >= 8
decode steps against golden, integer for integer, with random AXI pauses,
for an MHA and a GQA checkpoint; a wrong model caught; bad inputs refused
before anything runs; the decoder build's descriptor checks
(tb_llm_top.malformed_decoder_passes, run with every configuration); the
bitnet-2b layout (packed weights, sub-norms, ReLU^2 on a relu2 build).
Verilator builds: the silu top and its relu2 variant for the cocotb tests,
the byte-protocol bridge around the silu top for hf-generate."""
import numpy as np
import pytest
from amaranth.lib import data

from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.gen.units import UNITS
from trilut.golden.llm import KVCache
from trilut.host.compiler import CompileError
from trilut.host.llama import load_llama, quantize
from trilut.host.llm_compiler import compile_layer, kv_capacity
from trilut.host.llm_run import forward
from trilut.hw.isa import (KEY_BANK, LLM_FIELDS, VALUE_BANK, Epilogue, Head, Opcode,
                          unpack_descriptor)
from trilut.sim import tb_llm_top
from trilut.sim.runner import SimFailure

PARAMS = UNITS["top-llm-small"].defaults
MODEL = dict(hidden=64, layers=2, heads=4, ffn=128, vocab=256, max_pos=64)
# 20 prompt tokens: two chunks (18 + 2) of the build's 56 int16 rows; + 8
# decode steps fill the 28 KV positions per layer (56 rows for 2 layers).
RUN = dict(prefill_tokens=20, decode=8)


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), **MODEL, kv_heads=2)
    return quantize(load_llama(path))


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm")
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_prefill_and_decode_match_golden(kv_heads):
    assert tb_llm_top.run(PARAMS, model=dict(MODEL, kv_heads=kv_heads), **RUN) == 2


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-relu2")
def test_bitnet_2b_relu2_matches_golden():
    """The bitnet-b1.58-2B-4T layout (packed weights, ReLU^2, sub-norms, tied
    head) on a build whose GateMul squares (llm_act "relu2")."""
    model = dict(MODEL, kv_heads=2, layout="bitnet-2b")
    assert tb_llm_top.run(dict(PARAMS, llm_act="relu2"), model=model, prefill_tokens=4,
                          decode=2) == 2


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm")
@pytest.mark.parametrize("broken, decode", [
    ("norm_sign", 0),    # the reference's RMSNorm drops gamma's sign
    ("rope_pos", 1),     # every token rotated at the position before its own (REQUANT_ROPE at kv_pos + row)
    ("noncausal", 0),    # ATTN_QK without its causal bit: a prefill row attends to the tokens after it
    ("uniform_entry", 0),   # the uniform v and gate LINEARs read the next entry of their set
])
def test_wrong_model_is_caught(broken, decode):
    """A reference broken in one step fails the comparison with the accelerator."""
    with pytest.raises(SimFailure, match="mismatches"):
        tb_llm_top.run(PARAMS, model=dict(MODEL, kv_heads=2), prefill_tokens=4, decode=decode,
                       broken=broken)


def test_one_segment_per_layer(params):
    """RoPE, the KV append and causal GQA attention on chip: a layer is one
    segment, compiled at KV position 0: its KV rows start at the layer's
    part of the region, RoPE at position 0, the key counts at the chunk's
    rows; the ``kv_pos`` register (the segment's ``kv_pos``) moves them."""
    (seg,) = compile_layer(params, 1, PARAMS, rows=3, kv_pos=5, final=True)
    base = kv_capacity(params, PARAMS)                  # layer 1's KV rows
    descs = [unpack_descriptor(d) for d in seg.descriptors]
    at = {n: descs[seg.passes.index(n)] for n in ("q", "k", "v", "qk", "av", "gate", "up")}
    norms = [d for d in descs if d["opcode"] == Opcode.NORM]
    assert norms and all(d["head"] == Head.RMSNORM for d in norms)
    assert seg.kv_pos == 5
    assert (at["v"]["dst_bank"], at["v"]["dst_row"], at["v"]["rows"]) == (VALUE_BANK, base, 3)
    assert at["q"]["epilogue"] == at["k"]["epilogue"] == Epilogue.REQUANT_ROPE
    assert (at["q"]["kv_pos"], at["k"]["kv_pos"], at["k"]["dst_bank"], at["k"]["dst_row"]) \
        == (0, 0, KEY_BANK, base)
    qk, av = (data.Const(LLM_FIELDS, at[n]["reserved"]) for n in ("qk", "av"))
    assert (int(qk.causal), int(qk.kv_group), int(av.kv_group)) == (1, 2, 2)   # GQA 4 / 2
    assert (int(qk.kv_base), int(av.kv_base)) == (base, base)
    assert (at["qk"]["n"], at["qk"]["kv_pos"], at["av"]["k"]) == (3, 0, 3)     # + kv_pos keys
    assert at["up"]["epilogue"] == Epilogue.REQUANT_GATEMUL
    assert at["up"]["dst_row"] == at["gate"]["dst_row"]
    assert [o.name for o in seg.outputs] == ["norm"]


def test_uniform_constants_shrink_the_payload(params, monkeypatch):
    """Per-tensor scales (BitNet): every LINEAR of a layer's segment reads one
    entry of one shared set (``uniform``, its index in ``heads``), the very
    entry it read for every channel before; only the RMSNorm gammas and the
    attention's one-entry sets stay per channel. The entries written per
    segment shrink from 642 to 2 x 64 + 2 + the distinct uniform entries."""
    from trilut.host import llm_compiler
    from trilut.host.compiler import _Builder
    (seg,) = compile_layer(params, 1, PARAMS, rows=1, kv_pos=4)
    monkeypatch.setattr(llm_compiler, "_Builder",       # the compiler before: per channel
                        lambda *a, uniform, **k: _Builder(*a, **k))
    (old,) = compile_layer(params, 1, PARAMS, rows=1, kv_pos=4)
    sets, old_sets = dict(seg.consts), dict(old.consts)
    lin = [(unpack_descriptor(d), unpack_descriptor(o)) for d, o, n in
           zip(seg.descriptors, old.descriptors, seg.passes) if n in
           ("q", "k", "v", "o", "gate", "up", "down")]
    assert len(lin) == 7 and len({d["const"] for d, _ in lin}) == 1
    shared = sets[lin[0][0]["const"]]
    for d, o in lin:
        assert data.Const(LLM_FIELDS, d["reserved"]).uniform == 1
        assert data.Const(LLM_FIELDS, o["reserved"]).uniform == 0
        assert old_sets[o["const"]] == [shared[d["heads"]]] * o["n"]
    c, ffn, kvw = MODEL["hidden"], MODEL["ffn"], 2 * MODEL["hidden"] // MODEL["heads"]
    assert sum(map(len, old_sets.values())) == 5 * c + 2 * kvw + 2 * ffn + 2 == 642
    assert sum(map(len, sets.values())) == 2 * c + 2 + len(shared) and len(shared) <= 7


def test_uniform_entries_beyond_the_set_are_refused():
    """A uniform LINEAR names its entry in the 8-bit ``heads`` field and the
    hardware refuses an entry >= max_width (CONST): a program with more
    distinct uniform entries than that is a CompileError, not a wrong index."""
    from trilut.host.compiler import _Builder
    from trilut.hw.top import Accelerator
    bld = _Builder(Accelerator(**PARAMS), 1, False, uniform=True)
    for i in range(PARAMS["max_width"] + 1):
        bld.emit(f"lin{i}", Opcode.LINEAR, const=bld.const_set([i], "uniform"))
    with pytest.raises(CompileError, match="129 distinct uniform entries exceed 128"):
        bld.finish()
    del bld.descs[-1], bld.sets[-1]           # 128 entries: 0 .. 127 fit
    descs, consts = bld.finish()
    assert consts == [(0, list(range(128)))]
    assert [unpack_descriptor(d)["heads"] for d in descs] == list(range(128))


def test_token_scale_keeps_attention_on_the_host(tmp_path):
    """attn_scale "token" (K quantized per token after RoPE) runs RoPE and
    attention on the host: two segments, q and k stored as int16."""
    ckpt = load_llama(write_random_checkpoint(tmp_path, **MODEL, kv_heads=2),
                      attn_scale="token")
    a, b = compile_layer(quantize(ckpt), 0, PARAMS, rows=2, kv_pos=0)
    assert [o.name for o in a.outputs] == ["layers.0.q", "layers.0.k", "layers.0.v"]
    assert b.loads == [("attn", 64)]


def test_bad_inputs_are_refused(params):
    cap = PARAMS["max_rows"] // MODEL["layers"]          # every layer's K, V on chip
    assert kv_capacity(params, PARAMS) == cap == 28
    with pytest.raises(ValueError, match="token id 256 outside the vocabulary"):
        next(forward(params, [1, 256], KVCache(params), PARAMS))
    with pytest.raises(ValueError, match=f"exceed the KV capacity of {cap} positions"):
        next(forward(params, np.zeros(cap + 1, np.int64), KVCache(params), PARAMS))
    cache = KVCache(params)
    cache.kv_pos = cap
    with pytest.raises(ValueError, match="at kv_pos 28 exceed the KV capacity"):
        next(forward(params, [3], cache, PARAMS))
    with pytest.raises(CompileError, match=r"Accelerator\(llm=True\)"):
        next(forward(params, [3], KVCache(params), dict(PARAMS, llm=False)))
    with pytest.raises(CompileError, match="ffn = 128 exceeds max_width = 64"):
        compile_layer(params, 0, dict(PARAMS, max_width=64), rows=1, kv_pos=0)
    with pytest.raises(CompileError, match="act 'silu': this build's GateMul runs 'relu2'"):
        compile_layer(params, 0, dict(PARAMS, llm_act="relu2"), rows=1, kv_pos=0)


def test_llm_parameter_is_checked():
    from trilut.hw.top import Accelerator
    with pytest.raises(TypeError, match="llm must be a bool"):
        Accelerator(**dict(PARAMS, llm=1))
    with pytest.raises(ValueError, match="llm_act must be one of"):
        Accelerator(**dict(PARAMS, llm_act="gelu"))


@pytest.mark.sim
@pytest.mark.xdist_group("accel-llm-bridge")
def test_hf_generate_on_the_simulated_device(tmp_path):
    """``trilut hf-generate --device sim``: the host driver and the byte
    protocol (SimDevice) run a prefill and 8 greedy steps; tokens and logits
    equal the golden run's, every step checked."""
    from trilut.gen.llm import hf_generate
    path = write_random_checkpoint(tmp_path / "ckpt", **MODEL, kv_heads=2, seed=3)
    np.save(tmp_path / "ids.npy", np.random.default_rng(4).integers(0, 256, 6))
    runs = {dev: hf_generate(path, tmp_path / "ids.npy", 8, tmp_path / f"{dev}.npz", dev,
                             log=lambda *a: None, unit="top-llm-small")
            for dev in ("golden", "sim")}
    assert runs["sim"]["hw_matches_golden"] is True
    assert runs["sim"]["tokens"] == runs["golden"]["tokens"]
    z = {dev: np.load(tmp_path / f"{dev}.npz") for dev in runs}
    np.testing.assert_array_equal(z["sim"]["logits"], z["golden"]["logits"])
    assert runs["sim"]["ttft_cycles"] > 0 and runs["sim"]["decode_cycles_per_token"] > 0
    assert runs["sim"]["sim_cycles_per_s"] > 0 and runs["sim"]["fmax_mhz"] is None
