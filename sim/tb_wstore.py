# amaranth: UnusedElaboratable=no
"""cocotb testbench for the double-buffered weight store (hw/wstore.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (the engine
whose codes the store holds: ``engine``, ``group``, ``tables``, ``lanes``,
``max_k``; the largest output width ``max_n``, which sizes ``depth``; and
``max_rows``), ``seed``, and ``break`` (a deliberately wrong reference that
expects each output block's k-blocks in reverse order, so that the suite can
show this testbench fails when the model is wrong).

The reference is independent of the store: the expected ``wgt`` stream of a
pass replayed for ``rows`` activation rows is the engine's own
``wgt_beats(w)`` (codes, ``last_k``, ``last_n``) repeated ``rows`` times.
Every test but the throughput ones and ``late_single_beat`` (exact timing)
has random idle gaps on ``load`` and ``play`` and random backpressure on
``wgt``. A monitor records the cycle of every accepted ``load`` and ``wgt``
beat, from which the tests check that the next pass's weights were taken
while the current pass was replayed.
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from trilut.hw.matmul import make_engine
from trilut.hw.wstore import WeightStore
from trilut.sim.streams import (StreamSink, StreamSource, payload_layout, record_handshakes,
                                reset, start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
PERIOD_NS = 10
TIMEOUT = 5_000         # cycles without a beat before a stream test gives up
ENGINE_KEYS = ("group", "tables", "lanes", "max_k")


def build(params):
    """(engine, store) for a testbench configuration."""
    engine = make_engine(params["engine"], **{k: params[k] for k in ENGINE_KEYS})
    depth = WeightStore.depth_for(engine, params["max_k"], params["max_n"])
    return engine, WeightStore(engine, depth=depth, max_rows=params["max_rows"])


class Pass:
    """One pass: weights ``w`` (K, N) replayed for ``rows`` rows."""

    def __init__(self, engine, store, w, rows):
        self.w, self.rows = w, rows
        self.beats = engine.wgt_beats(w)                # one row, the reference
        self.kb = -(-w.shape[0] // engine.k_block)
        self.nb = w.shape[1] // engine.lanes
        self.load = store.load_beats(self.beats)
        self.command = store.play_command(self.kb, self.nb, rows)

    def expected(self, broken=False):
        row = self.beats
        if broken:      # wrong on purpose: k-blocks reversed inside each output block
            row = []
            for i in range(0, len(self.beats), self.kb):
                blk = self.beats[i:i + self.kb]
                row += [dict(b, codes=r["codes"]) for b, r in zip(blk, blk[::-1])]
        return row * self.rows


class StoreBench:
    """Owns clock, reset, the ``load`` and ``play`` sources, the ``wgt`` sink
    and a monitor of accepted beats."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.engine, self.store = build(CONFIG["params"])
        seed = CONFIG.get("seed", 1)
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.load = StreamSource(dut, "load", dut.clk, payload_layout(self.store, "load"),
                                 rng=self.rng, idle=idle)
        self.play = StreamSource(dut, "play", dut.clk, payload_layout(self.store, "play"),
                                 rng=self.rng, idle=idle)
        self.wgt = StreamSink(dut, "wgt", dut.clk, payload_layout(self.store, "wgt"),
                              rng=self.rng, stall=stall)
        start_clock(dut, PERIOD_NS)
        times = record_handshakes(dut, ("load", "wgt"), PERIOD_NS)
        self.load_cycles, self.wgt_cycles = times["load"], times["wgt"]

    async def reset(self):
        await reset(self.dut)
        self.load_cycles.clear()
        self.wgt_cycles.clear()

    def flags(self):
        d = self.dut
        return {"overflow": int(d.overflow.value), "mismatch": int(d.mismatch.value),
                "error": int(d.error.value)}

    # --- data ----------------------------------------------------------------

    def weights(self, k, n, kind="random"):
        rng = self.np_rng
        if kind == "random":
            return rng.integers(-1, 2, size=(k, n))
        if kind == "onehot":
            w = np.zeros((k, n), dtype=np.int64)
            w[rng.integers(0, k), rng.integers(0, n)] = 1 - 2 * int(rng.integers(0, 2))
            return w
        return np.full((k, n), {"neg": -1, "pos": 1, "zero": 0}[kind])

    def new_pass(self, k, n, rows, kind="random"):
        return Pass(self.engine, self.store, self.weights(k, n, kind), rows)

    # --- streaming -----------------------------------------------------------

    async def stream(self, loads, commands, expected, *, what="stream"):
        """Send ``loads`` (load payloads) and ``commands`` (play payloads),
        receive ``len(expected)`` wgt beats and compare them with
        ``expected`` exactly. Returns the monitor's (load, wgt) cycles."""
        l0, w0 = len(self.load_cycles), len(self.wgt_cycles)
        cocotb.start_soon(self.load.send(loads, timeout=TIMEOUT))
        cocotb.start_soon(self.play.send(commands, timeout=TIMEOUT))
        got = await self.wgt.receive(len(expected), timeout=TIMEOUT)
        await RisingEdge(self.dut.clk)               # the monitor sees the last beat
        for i, (g, want) in enumerate(zip(got, expected)):
            hw = {"codes": [int(c) for c in g.codes], "last_k": int(g.last_k),
                  "last_n": int(g.last_n)}
            if hw != want:
                field = next(f for f in ("codes", "last_k", "last_n") if hw[f] != want[f])
                bad = sum(1 for gg, ww in zip(got, expected)
                          if [int(c) for c in gg.codes] != ww["codes"]
                          or int(gg.last_k) != ww["last_k"] or int(gg.last_n) != ww["last_n"])
                raise AssertionError(
                    f"{what}: {bad} mismatches of {len(expected)} beats; first at beat {i} "
                    f"({field}): hardware {hw[field]}, model {want[field]}")
        wgt_cycles = self.wgt_cycles[w0:]
        assert len(wgt_cycles) == len(expected), "monitor and sink disagree"
        return self.load_cycles[l0:], wgt_cycles

    async def run_passes(self, passes, *, what="passes"):
        """Stream ``passes`` back to back and compare; returns, per pass, the
        number of load beats of later passes accepted while it was being
        replayed (from the cycle after the previous pass's last beat to its
        own last beat), and the monitor's (load, wgt) cycles."""
        loads = [b for p in passes for b in p.load]
        expected = [b for p in passes for b in p.expected(CONFIG.get("break"))]
        load_cyc, wgt_cyc = await self.stream(loads, [p.command for p in passes], expected,
                                              what=what)
        assert self.flags() == {"overflow": 0, "mismatch": 0, "error": 0}, \
            f"error flags on a valid stream: {self.flags()}"
        # Which pass each load beat belongs to, and each pass's replay window.
        owner = np.repeat(np.arange(len(passes)), [len(p.load) for p in passes])
        ends = np.cumsum([len(p.beats) * p.rows for p in passes]) - 1
        overlap = []
        for i, end in enumerate(ends):
            start = wgt_cyc[0] if i == 0 else wgt_cyc[ends[i - 1]] + 1
            during = [c for c, o in zip(load_cyc, owner) if o > i and start <= c <= wgt_cyc[end]]
            overlap.append(len(during))
        return overlap, load_cyc, wgt_cyc


def _shapes(e, params):
    """(K, N, rows) of passes of every size: the largest pass (depth beats),
    one beat, partial k-blocks, one and many rows (the rows field's maximum)."""
    mk, mn, kb = params["max_k"], params["max_n"], e.k_block
    max_rows = (1 << params["max_rows"].bit_length()) - 1
    return [(mk, mn, 3, "random"), (1, e.lanes, 1, "random"), (kb + 1, 2 * e.lanes, 5, "random"),
            (mk, mn, 1, "neg"), (mk - 1, e.lanes, 2, "pos"), (2, e.lanes, max_rows, "random"),
            (mk, mn, 2, "onehot"), (kb, mn, 1, "zero"), (mk, mn - e.lanes, 4, "random"),
            (kb * 2, e.lanes, 1, "random"), (mk, mn, 2, "random")]


@cocotb.test()
async def passes_back_to_back(dut):
    """Passes of different shapes (up to depth beats; 1 to the rows field's
    maximum of rows; random, all -1, all +1, all 0, one-hot weights) back to
    back; each pass of 8 or more beats that has a successor must see load
    beats of a later pass accepted during its replay."""
    tb = StoreBench(dut)
    await tb.reset()
    e, params = tb.engine, CONFIG["params"]
    passes = [tb.new_pass(k, n, rows, kind) for k, n, rows, kind in _shapes(e, params)]
    assert max(len(p.beats) for p in passes) == tb.store.depth
    overlap, _, _ = await tb.run_passes(passes)
    dut._log.info("load beats of later passes taken during each pass's replay: %s", overlap)
    for i, (p, o) in enumerate(zip(passes[:-1], overlap)):
        if len(p.beats) * p.rows >= 8:
            assert o > 0, f"pass {i}: no load of a later pass overlapped its replay ({overlap})"


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure the wgt stream runs at one beat per cycle
    from its first beat to its last, across passes (rows 1 to 3) and rows;
    the replay of a pass with rows = 1 hides the next pass's load; the first
    beat comes ``latency`` cycles after the first pass's last load beat."""
    tb = StoreBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    params = CONFIG["params"]
    mk, mn = params["max_k"], params["max_n"]
    for rows in ([2, 1, 3, 1, 2, 1, 1, 2], [1] * 8):
        passes = [tb.new_pass(mk, mn, r) for r in rows]
        _, load_cyc, cyc = await tb.run_passes(passes, what=f"full_rate rows {rows}")
        beats = len(cyc)
        cycles = cyc[-1] - cyc[0] + 1
        first = cyc[0] - load_cyc[len(passes[0].load) - 1]
        dut._log.info("full_rate rows %s: %d wgt beats in %d cycles (%.3f beats/cycle); first "
                      "wgt beat %d cycles after the first pass's last load beat", rows, beats,
                      cycles, beats / cycles, first)
        assert beats == cycles, f"{beats} beats took {cycles} cycles: bubbles in the stream"
        assert first == tb.store.latency, f"latency {first}, documented {tb.store.latency}"


@cocotb.test()
async def late_single_beat(dut):
    """A single-beat pass loaded while its play command waits (store idle):
    the replay reads the word the cycle after the beat is taken, while its
    write (a register stage behind the take) is still pending, so the
    buffer must be marked full one cycle later. Both buffers first hold a
    full pass and the single beats alternate all +1 / all -1, so a read
    before the write gives a different, earlier word."""
    tb = StoreBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    e, params = tb.engine, CONFIG["params"]
    fill = [tb.new_pass(params["max_k"], params["max_n"], 1) for _ in range(2)]
    await tb.run_passes(fill, what="late_single_beat: fill")
    for rows, kind in ((1, "pos"), (2, "neg"), (1, "neg"), (3, "pos")):
        p = tb.new_pass(1, e.lanes, rows, kind)
        await tb.play.send([p.command], timeout=TIMEOUT)
        for _ in range(3):                  # the command is active before the beat
            await RisingEdge(dut.clk)
        await tb.stream(p.load, [], p.expected(), what=f"late_single_beat {kind} rows {rows}")
    assert tb.flags()["error"] == 0, f"error flags on a valid stream: {tb.flags()}"


@cocotb.test()
async def decode_chunks(dut):
    """Decode: rows wider than one buffer are split into chunks of whole
    output blocks (rows = 1, cont on all but the last chunk); the engine's
    stream for each token is exactly the row's wgt beats. Tokens follow each
    other with the weights re-sent per token; once with gaps and
    backpressure, once without, where only a chunk longer than the one
    before it may cost cycles (the difference: one output block at each
    token boundary)."""
    tb = StoreBench(dut)
    e, s, params = tb.engine, tb.store, CONFIG["params"]
    k, tokens = params["max_k"], 3
    kb = -(-k // e.k_block)
    for idle, stall in ((0.3, 0.3), (0.0, 0.0)):
        tb.load.idle = tb.play.idle = idle
        tb.wgt.stall = stall
        await tb.reset()
        w = tb.weights(k, 3 * params["max_n"] + e.lanes)
        beats = e.wgt_beats(w)
        chunks = s.decode_passes(beats, kb)
        assert len(chunks) >= 3
        loads, commands, expected = [], [], []
        for _ in range(tokens):
            loads += [b for c in chunks for b in c[0]]
            commands += [c[1] for c in chunks]
            expected += beats
        _, cyc = await tb.stream(loads, commands, expected, what=f"decode idle {idle}")
        assert tb.flags()["error"] == 0, f"error flags on a valid stream: {tb.flags()}"
        cycles = cyc[-1] - cyc[0] + 1
        dut._log.info("decode (idle %.1f, stall %.1f): chunks of %s beats, %d beats in %d "
                      "cycles (%.3f beats/cycle)", idle, stall,
                      [len(c[0]) for c in chunks], len(cyc), cycles, len(cyc) / cycles)
        if idle == 0.0:
            lost = sum(max(0, len(b[0]) - len(a[0]))
                       for a, b in zip(chunks * tokens, (chunks * tokens)[1:]))
            assert cycles == len(cyc) + lost, \
                f"decode: {cycles} cycles for {len(cyc)} beats, expected {lost} lost"
            assert lost <= (tokens - 1) * kb


@cocotb.test()
async def overflow_error(dut):
    """A pass longer than depth sets ``overflow`` (not ``mismatch``): its
    first depth beats are replayed, the rest dropped; the next pass is
    unaffected; the flag is sticky until reset."""
    tb = StoreBench(dut)
    await tb.reset()
    e, s, params = tb.engine, tb.store, CONFIG["params"]
    mk, mn = params["max_k"], params["max_n"]
    big = tb.new_pass(mk, mn, 1)
    extra = tb.new_pass(e.k_block, e.lanes, 1)
    load = s.load_beats(big.beats + extra.beats + extra.beats)
    assert len(load) > s.depth
    cmd = s.play_command(big.kb, big.nb, 2)
    await tb.stream(load, [cmd], big.beats * 2, what="overflow")
    assert tb.flags() == {"overflow": 1, "mismatch": 0, "error": 1}, tb.flags()
    after = tb.new_pass(mk - 1, 2 * e.lanes, 3)
    await tb.stream(after.load, [after.command], after.expected(), what="after overflow")
    assert tb.flags() == {"overflow": 1, "mismatch": 0, "error": 1}, tb.flags()
    await tb.reset()
    assert tb.flags()["error"] == 0, "reset does not clear the flags"


def _reshaped(beats, kb, nb, rows):
    """The stream a mismatched command gives: ``rows`` rows of ``kb * nb``
    beats, codes wrapping round the loaded beats, flags from the command."""
    out = []
    for _ in range(rows):
        for j in range(kb * nb):
            out.append({"codes": beats[j % len(beats)]["codes"], "last_k": int(j % kb == kb - 1),
                        "last_n": int(j == kb * nb - 1)})
    return out


@cocotb.test()
async def mismatch_error(dut):
    """A play command whose k_blocks * n_blocks is smaller or larger than the
    pass loaded, or has a zero field, sets ``mismatch`` (not ``overflow``)
    and still gives the command's shape (codes wrapping round the loaded
    beats); after a reset the store runs a valid pass."""
    tb = StoreBench(dut)
    e, params = tb.engine, CONFIG["params"]
    loaded = tb.new_pass(3 * e.k_block if params["max_k"] >= 3 * e.k_block else params["max_k"],
                         2 * e.lanes, 1)
    kb, nb = loaded.kb, loaded.nb
    assert kb * nb >= 4
    cases = [(kb, 1, 2), (kb + 1, nb, 1), (1, nb + 1, 2), (0, nb, 1), (kb, nb, 0)]
    for k, n, rows in cases:
        await tb.reset()
        want = _reshaped(loaded.beats, max(k, 1), max(n, 1), max(rows, 1))
        cmd = {"k_blocks": k, "n_blocks": n, "rows": rows, "cont": 0}
        await tb.stream(loaded.load, [cmd], want, what=f"mismatch {cmd}")
        assert tb.flags() == {"overflow": 0, "mismatch": 1, "error": 1}, (cmd, tb.flags())
        good = tb.new_pass(params["max_k"], params["max_n"], 2)
        await tb.stream(good.load, [good.command], good.expected(), what="after mismatch")
    await tb.reset()
    assert tb.flags()["error"] == 0, "reset does not clear the flags"
