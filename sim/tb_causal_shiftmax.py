"""cocotb testbench: causal attention rows of the golden decoder through the
existing Shiftmax unit (hw/shiftmax.py), unchanged.

The decoder's Shiftmax runs over the visible prefix ``0 .. kv_pos + i`` of
score row i only (golden/llm.py: a masked position never enters Shiftmax,
its probability is 0). The hardware needs nothing new for that: the row is
streamed with ``last`` on its final visible element, and the zeros after it
are the top's part (the AV pass reads K = kv_pos + i + 1 rows of V; see
docs/llm.md "Hardware plan").

``TRILUT_TB`` JSON: ``params`` (Shiftmax keyword arguments), ``model``
(``write_random_checkpoint`` keyword arguments), ``prefill`` (tokens),
``decode`` (decode steps), ``seed``, ``break``: ``"masked"`` is the wrong
model that runs Shiftmax over the whole cache row with the masked logits
at 0, which the suite shows is caught.

A random checkpoint is quantized by the host importer, a prompt is
prefilled and a few tokens decoded with ``trace=True``; every (layer, head,
query) row's visible logits go into the unit with random idle gaps and
backpressure, and the outputs are compared with the traced ``probs``
integer for integer (and golden's probabilities after the prefix are
checked to be 0).
"""
import json
import os
import random
import tempfile

import cocotb
import numpy as np

from trilut.gen.llmfidelity import write_random_checkpoint
from trilut.golden.encoder import _scale_for_x0
from trilut.golden.llm import SOFTMAX_N, KVCache, decode_step, prefill
from trilut.golden.nonlinear import shiftmax
from trilut.host.llama import load_llama, quantize
from trilut.hw.shiftmax import Shiftmax
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
PERIOD_NS = 10


def golden_rows(cfg_json):
    """[(x0, logits row, probs row)] of every layer, head and query of a
    prefill then decode run; asserts golden's masked probabilities are 0."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_checkpoint(tmp, **cfg_json["model"])
        params = quantize(load_llama(path))
    rng = np.random.default_rng(cfg_json.get("seed", 1))
    cache = KVCache(params)
    ids = rng.integers(0, params.cfg.vocab, cfg_json["prefill"])
    traces = [(0, prefill(params, ids, cache, trace=True))]
    for _ in range(cfg_json["decode"]):
        pos0 = cache.kv_pos
        traces.append((pos0, decode_step(params, int(rng.integers(0, params.cfg.vocab)), cache,
                                         trace=True)))
    rows = []
    for pos0, t in traces:
        for li, lp in enumerate(params.layers):
            logits, probs = t[f"layers.{li}.logits"], t[f"layers.{li}.probs"]
            heads, n_new, _ = logits.shape
            for h in range(heads):
                for i in range(n_new):
                    vis = pos0 + i + 1
                    assert not probs[h, i, vis:].any(), "golden: a masked probability is not 0"
                    rows.append((lp.softmax_x0, logits[h, i], probs[h, i], vis))
    return params, rows


@cocotb.test()
async def causal_rows(dut):
    """Prefill then decode: each visible prefix through the unit equals golden's probs."""
    unit = Shiftmax(**CONFIG["params"])
    rng = random.Random(CONFIG.get("seed", 1))
    inp = StreamSource(dut, "inp", dut.clk, payload_layout(unit, "inp"), rng=rng, idle=0.3)
    out = StreamSink(dut, "out", dut.clk, payload_layout(unit, "out"), rng=rng, stall=0.3)
    start_clock(dut, PERIOD_NS)
    params, rows = golden_rows(CONFIG)
    assert params.cfg.probs_bits == unit.out_bits and params.cfg.logit_bits == unit.in_bits
    await reset(dut)
    broken = CONFIG.get("break")
    checked = 0
    for k, (x0, logits, probs, vis) in enumerate(rows):
        dut.x0.value = int(x0)
        await cocotb.triggers.ClockCycles(dut.clk, 2)        # x0 stable before the row
        beats = [{"data": int(v), "last": int(j == vis - 1)} for j, v in enumerate(logits[:vis])]
        sender = cocotb.start_soon(inp.send(beats))
        got = np.array([int(b.data) for b in await out.receive(vis)], dtype=np.int64)
        await sender
        want = probs[:vis].astype(np.int64)
        if broken == "masked":
            want = shiftmax(logits.astype(np.int64), _scale_for_x0(x0), n=SOFTMAX_N,
                            out_bits=unit.out_bits)[:vis]
        bad = np.nonzero(got != want)[0]
        assert len(bad) == 0, (f"{len(bad)} mismatches in row {k} (visible {vis}); first at "
                               f"{bad[0]}: hardware {got[bad[0]]}, model {want[bad[0]]}")
        checked += vis
    assert int(dut.error.value) == 0, "error flag raised"
    dut._log.info("causal shiftmax: %d rows, %d probabilities equal to golden", len(rows),
                  checked)
