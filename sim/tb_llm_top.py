"""cocotb testbench: the ternary decoder on a decoder build of the accelerator
top (``Accelerator(llm=True)``), prefill then decode steps, against golden.

``TRILUT_TB`` JSON: ``params`` (Accelerator keyword arguments), ``model``
(:func:`~trilut.gen.llmfidelity.write_random_checkpoint` keyword arguments),
``prefill`` (prompt tokens), ``decode`` (decode steps), ``seed``, ``pause``
(probability of a pause cycle on every AXI channel: AXI4-Lite, s_axis,
s_axis_wgt, m_axis) and ``break``: ``"norm_sign"`` is a wrong reference
whose layer-0 attention RMSNorm drops gamma's sign, ``"rope_pos"`` one whose
RoPE rotates every token at the position before its own (convention errors
the suite shows are caught); ``"noncausal"`` clears the ``causal`` bit of
every ATTN_QK the accelerator runs (a prefill row then attends to the
tokens after it: caught too); ``"uniform_entry"`` makes every ``uniform``
LINEAR with the REQUANT epilogue (v, gate) the accelerator runs read the
next entry of its shared constant set (another pass's per-tensor m, e: the
entry index is really used; with the GATEMUL and ROPE passes moved too, a
per-tensor field out of range stopped the program with UNIT instead).

A random checkpoint is imported by :mod:`trilut.host.llama`; golden
``prefill`` / ``decode_step`` with ``trace=True`` give the reference. The
hardware side is :func:`trilut.host.llm_run.forward` (the same code
the host driver runs): each segment program goes through
:func:`trilut.sim.tb_top.run_compiled` (constants, program, LOAD and weight
frames on AXI with random pauses; the RoPE table written once after reset),
and every tensor the accelerator stored and the logits are compared with
golden integer for integer.
"""
import copy
import dataclasses
import json
import os
import tempfile

import cocotb
import numpy as np
from amaranth.lib import data

from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.golden.llm import KVCache, decode_step, prefill
from trilut.host.llama import load_llama, quantize
from trilut.host.llm_compiler import rope_table
from trilut.host.llm_run import forward
from trilut.hw.isa import (FIELD_LIMITS, KEY_BANK, LLM_FIELDS, RESIDUAL_BANK, Epilogue,
                          ErrorCode, Head, Opcode, llm_fields, pack_descriptor,
                          unpack_descriptor)
from trilut.sim.tb_top import TopBench, run_compiled

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))


def _reference(params):
    """Golden params, or the wrong model of ``break``."""
    if CONFIG.get("break") == "norm_sign":
        lp = params.layers[0]
        norm = dataclasses.replace(lp.attn_norm, sign=np.abs(lp.attn_norm.sign))
        assert (np.asarray(lp.attn_norm.sign) < 0).any(), "no negative gamma to break"
        layers = (dataclasses.replace(lp, attn_norm=norm),) + tuple(params.layers[1:])
        return dataclasses.replace(params, layers=layers)
    if CONFIG.get("break") == "rope_pos":
        return dataclasses.replace(params, rope_cos=np.roll(params.rope_cos, 1, axis=0),
                                   rope_sin=np.roll(params.rope_sin, 1, axis=0))
    return params


def _noncausal(prog):
    """``prog`` with the causal bit of its ATTN_QK passes cleared."""
    out = copy.copy(prog)
    out.descriptors = [pack_descriptor(**dict(f, reserved=llm_fields(
        kv_group=data.Const(LLM_FIELDS, f["reserved"]).kv_group)))
        if f["opcode"] == Opcode.ATTN_QK else d
        for d, f in ((d, unpack_descriptor(d)) for d in prog.descriptors)]
    return out


def _wrong_entry(prog):
    """``prog`` with every uniform REQUANT LINEAR reading the next entry
    (cyclically) of its constant set (the set holds more than one: another
    pass's; m, e and bias sit at the same bits in every entry layout)."""
    sizes = dict((s, len(e)) for s, e in prog.consts)
    out = copy.copy(prog)
    out.descriptors = []
    for d in prog.descriptors:
        f = unpack_descriptor(d)
        if (f["opcode"] == Opcode.LINEAR and f["epilogue"] == Epilogue.REQUANT
                and data.Const(LLM_FIELDS, f["reserved"]).uniform):
            assert sizes[f["const"]] > 1, "a uniform set of one entry: nothing to get wrong"
            d = pack_descriptor(**dict(f, heads=(f["heads"] + 1) % sizes[f["const"]]))
        out.descriptors.append(d)
    return out


async def _on_chip(tb, gen):
    """Drive a :func:`forward` generator on the bench; its return value."""
    try:
        req = next(gen)
        while True:
            prog, inputs = req
            if CONFIG.get("break") == "noncausal":
                prog = _noncausal(prog)
            if CONFIG.get("break") == "uniform_entry":
                prog = _wrong_entry(prog)
            got, st, _ = await run_compiled(tb, prog, inputs)
            assert not st.error, f"{st}"
            req = gen.send(got)
    except StopIteration as stop:
        return stop.value


def _compare(step, stored, logits, trace, mismatches):
    names = sorted(stored) + ["logits"]
    for name in names:
        got = logits if name == "logits" else stored[name]
        want = np.asarray(trace[name]).reshape(got.shape)
        bad = int((got != want).sum())
        if bad:
            mismatches.append(f"{step} {name}: {bad} of {got.size} differ")
    return len(names)


@cocotb.test()
async def prefill_and_decode(dut):
    """Prefill ``prefill`` tokens, then ``decode`` steps fed the golden
    model's greedy tokens; every stored tensor and the logits exact."""
    tb = TopBench(dut)
    await tb.reset()
    with tempfile.TemporaryDirectory() as tmp:
        params = quantize(load_llama(write_random_checkpoint(tmp, **CONFIG["model"])))
    ref = _reference(params)
    await tb.write_words("rope", 0, rope_table(params, tb.acc))
    rng = np.random.default_rng(CONFIG.get("seed", 1))
    ids = rng.integers(0, params.cfg.vocab, CONFIG["prefill"])
    cache_g, cache_h = KVCache(ref), KVCache(params)
    mismatches, checked = [], 0
    trace = prefill(ref, ids, cache_g, trace=True)
    logits, stored = await _on_chip(tb, forward(params, ids, cache_h, tb.acc, trace=True))
    checked += _compare("prefill", stored, logits, trace, mismatches)
    token = int(np.argmax(trace["logits"][-1]))
    for step in range(CONFIG["decode"]):
        trace = decode_step(ref, token, cache_g, trace=True)
        logits, stored = await _on_chip(tb, forward(params, [token], cache_h, tb.acc,
                                                    trace=True))
        checked += _compare(f"decode {step} (kv_pos {cache_g.kv_pos - 1})", stored, logits,
                            trace, mismatches)
        token = int(np.argmax(trace["logits"]))
    assert cache_h.kv_pos == cache_g.kv_pos
    dut._log.info(f"{checked} tensors compared over 1 prefill + {CONFIG['decode']} decode "
                  f"steps, {len(mismatches)} mismatched")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])


@cocotb.test()
async def malformed_decoder_passes(dut):
    """The decoder build's checks, each stopping its program at descriptor 0
    before any pass runs: a LAYERNORM NORM (its NORM unit is RMSNorm), an
    unknown LINEAR epilogue, REQUANT_GATEMUL into an int8 bank (it reads
    and writes int16 rows), REQUANT_GATEMUL whose destination rows
    intersect its source rows (it reads them back, as RESIDUAL does),
    REQUANT_ROPE into the int16 bank (its output is int8) and a ``uniform``
    LINEAR whose entry (``heads``) is max_width, beyond its set: CONST; a
    LOAD into the KV region that the ``kv_pos`` register moves beyond its
    rows, or beyond 12 bits: ROWS."""
    tb = TopBench(dut)
    await tb.reset()
    c, res = CONFIG["model"]["hidden"], RESIDUAL_BANK
    lin = dict(src_bank=res, dst_bank=res, dst_row=8, rows=2, k=c, n=c)
    cases = [
        (dict(opcode=Opcode.NORM, head=Head.LAYERNORM, epilogue=Epilogue.REQUANT, **lin),
         ErrorCode.UNSUPPORTED),
        (dict(opcode=Opcode.LINEAR, epilogue=7, **lin), ErrorCode.UNSUPPORTED),
        (dict(opcode=Opcode.LINEAR, epilogue=Epilogue.REQUANT_GATEMUL, **dict(lin, dst_bank=0)),
         ErrorCode.BANK),
        (dict(opcode=Opcode.LINEAR, epilogue=Epilogue.REQUANT_GATEMUL, **dict(lin, dst_row=1)),
         ErrorCode.OVERLAP),
        (dict(opcode=Opcode.LINEAR, epilogue=Epilogue.REQUANT_ROPE, **lin), ErrorCode.BANK),
        (dict(opcode=Opcode.LINEAR, epilogue=Epilogue.REQUANT, heads=tb.acc.max_width,
              reserved=llm_fields(uniform=1), **lin), ErrorCode.CONST),
    ]
    # The kv_pos register moves a LOAD into the KV region beyond its rows
    # (dst_row + kv_pos + rows > max_rows), or beyond 12 bits: ROWS.
    load_kv = dict(opcode=Opcode.LOAD, dst_bank=KEY_BANK, dst_row=8, rows=1, k=c)
    rows = tb.acc.max_rows
    cases += [(dict(load_kv, kv_pos_reg=rows - 8), ErrorCode.ROWS),
              (dict(load_kv, kv_pos_reg=FIELD_LIMITS["kv_pos"]), ErrorCode.ROWS)]
    for fields, code in cases:
        kv_pos = fields.pop("kv_pos_reg", 0)
        await tb.write("kv_pos", kv_pos)
        assert await tb.read("kv_pos") == kv_pos
        await tb.write_program([pack_descriptor(**fields), pack_descriptor(Opcode.END)])
        await tb.start()
        st = await tb.wait_idle()
        assert st.error and st.code == code and int(st.pc) == 0, f"{fields}, {kv_pos}: {st}"


def run(params, *, model, prefill_tokens, decode, seed=1, pause=0.3, broken=None):
    """Host side: build (cached) and run this testbench on Verilator."""
    from .runner import run_cocotb
    from .tb_top import _verilog
    env = {"TRILUT_TB": json.dumps({"params": params, "model": model,
                                    "prefill": prefill_tokens, "decode": decode, "seed": seed,
                                    "pause": pause, "break": broken})}
    name = ("llm-" + "-".join(f"{k}{v}" for k, v in sorted(model.items()))
            + (f"-broken-{broken}" if broken else ""))
    return run_cocotb(_verilog(json.dumps(params, sort_keys=True)), "accel", __name__,
                      name=name, env=env, seed=seed)
