"""cocotb testbench for the ternary matmul engines (TLMM and direct).

The configuration arrives as JSON in ``TRILUT_TB`` (engine name, engine
parameters, seed; ``break`` selects a deliberately wrong reference model so
that the suite can show this testbench fails when the model is wrong).
Every test streams rows with random idle gaps on ``act`` and ``wgt`` and
random backpressure on ``out``, and a scoreboard compares every output with
``trilut.golden.tlmm_matmul`` exactly.
"""
import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from trilut.golden import tlmm_matmul
from trilut.hw.matmul import make_engine
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
REPORT = os.environ.get("TRILUT_TB_REPORT")   # optional JSON file of what was checked
CHECKED = {"outputs": 0, "rows": 0, "full_rate": None, "shapes": []}


def _record(**kw):
    CHECKED.update(kw)
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump(CHECKED, f)


class MatmulBench:
    """Owns clock, reset, the two sources and the sink of one engine."""

    def __init__(self, dut, engine=None, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.engine = engine or make_engine(CONFIG["engine"], **CONFIG["params"])
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.np_rng = np.random.default_rng(CONFIG.get("seed", 1))
        self.act = StreamSource(dut, "act", dut.clk, payload_layout(self.engine, "act"),
                                rng=self.rng, idle=idle)
        self.wgt = StreamSource(dut, "wgt", dut.clk, payload_layout(self.engine, "wgt"),
                                rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(self.engine, "out"),
                              rng=self.rng, stall=stall)
        start_clock(dut)

    async def reset(self):
        await reset(self.dut)

    def model(self, a, w):
        """The reference: golden TLMM; ``break`` drops the last k-block."""
        e = self.engine
        if CONFIG.get("break"):
            w = w.copy()
            w[(len(w) - 1) // e.k_block * e.k_block:] = 0
        group = getattr(e, "group", 3)
        encoding = getattr(e, "encoding", "full")
        return tlmm_matmul(a, w, group=group, encoding=encoding, acc_bits=e.acc_bits)

    async def run_rows(self, a, w):
        """Stream every row of ``a`` (M, K) against ``w`` (K, N) and compare.
        Returns the cycles from the first weight beat taken to the last result
        (and sets ``span``: the cycles from the first activation beat taken)."""
        e = self.engine
        act_beats = [b for row in a for b in e.act_beats(row)]
        wgt_beats = e.wgt_beats(w) * len(a)
        blocks = len(a) * (w.shape[1] // e.lanes)
        self.wgt.first_accept = self.act.first_accept = None
        cocotb.start_soon(self.act.send(act_beats))
        cocotb.start_soon(self.wgt.send(wgt_beats))
        beats = await self.out.receive(blocks)
        cycles = (get_sim_time("ns") - self.wgt.first_accept) / 10
        self.span = (get_sim_time("ns") - self.act.first_accept) / 10
        got = np.array([[int(v) for v in b.data] for b in beats]).reshape(len(a), -1)
        lasts = [int(b.last) for b in beats]
        want = self.model(a, w)
        mism = np.argwhere(got != want)
        assert len(mism) == 0, (
            f"{len(mism)} mismatches; first at row {mism[0][0]}, column {mism[0][1]}: "
            f"hardware {got[tuple(mism[0])]}, golden {want[tuple(mism[0])]}")
        per_row = w.shape[1] // e.lanes
        assert lasts == ([0] * (per_row - 1) + [1]) * len(a), "out.last misplaced"
        assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        _record(outputs=CHECKED["outputs"] + got.size, rows=CHECKED["rows"] + len(a))
        return cycles

    async def check_overlong_row(self):
        """After a reset, a row longer than max_k raises the error flag."""
        e, dut = self.engine, self.dut
        await self.reset()
        assert int(dut.error.value) == 0
        a = self.np_rng.integers(-128, 128, size=e.max_k + e.k_block)
        cocotb.start_soon(self.act.send(e.act_beats(a)))
        for _ in range(200):
            await RisingEdge(dut.clk)
            if int(dut.error.value):
                break
        assert int(dut.error.value) == 1, "over-long row not flagged"

    async def check_kblock_mismatch(self):
        """After a reset, a weight block with one k-block too many (a
        malformed program) raises the error flag (engines with k_blocks > 1)."""
        e, dut = self.engine, self.dut
        if e.k_blocks < 2:
            return
        await self.reset()
        a, w = self.random_case(1, e.k_block * (e.k_blocks - 1), _n(e, 1))
        beats = e.wgt_beats(w)
        extra = dict(beats[-1], last_k=0, last_n=0)
        cocotb.start_soon(self.act.send(e.act_beats(a[0])))
        cocotb.start_soon(self.wgt.send(beats[:-1] + [extra, beats[-1]]))
        await self.out.receive(1)
        assert int(dut.error.value) == 1, "k-block mismatch not flagged"

    def random_case(self, rows, k, n):
        a = self.np_rng.integers(-128, 128, size=(rows, k))
        w = self.np_rng.integers(-1, 2, size=(k, n))
        return a, w


def _n(e, blocks):
    return e.lanes * blocks


@cocotb.test()
async def random_rows(dut):
    """Random rows of every length from 1 to max_k, random weights."""
    tb = MatmulBench(dut)
    await tb.reset()
    e = tb.engine
    for k in sorted({1, e.k_block - 1 or 1, e.k_block, e.k_block + 1, e.max_k} - {0}):
        k = min(k, e.max_k)
        a, w = tb.random_case(3, k, _n(e, 3))
        await tb.run_rows(a, w)


@cocotb.test()
async def extreme_values(dut):
    """-128 everywhere against all -1 / all +1, all-zero weights, one-hot rows."""
    tb = MatmulBench(dut)
    await tb.reset()
    e = tb.engine
    k, n = e.max_k, _n(e, 2)
    full = np.full((2, k), -128)
    for wv in (-1, 1, 0):
        await tb.run_rows(full, np.full((k, n), wv))
    onehot = np.zeros((min(k, 4), k), dtype=np.int64)
    for i in range(len(onehot)):
        onehot[i, (i * 7) % k] = 127 if i % 2 else -128
    await tb.run_rows(onehot, tb.random_case(1, k, n)[1])
    await tb.run_rows(np.full((2, k), 127), np.full((k, n), -1))


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure, once the first row's store is built,
    rows stream at one weight beat per cycle (>= 90% including the pipeline
    drain at the end)."""
    tb = MatmulBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    e = tb.engine
    k = e.max_k
    build = getattr(e, "build_words", 1)
    blocks = max(build + 2, 16)          # enough output blocks to hide the next build
    a, w = tb.random_case(8, k, _n(e, blocks))
    cycles = await tb.run_rows(a, w)
    beats = len(a) * blocks * e.k_blocks
    dut._log.info("full_rate: %d weight beats in %d cycles (%.1f%%)", beats, cycles,
                  100 * beats / cycles)
    # The window starts at the first weight beat, after the first row's fill.
    expected = e.cycles(len(a), k, w.shape[1]) - e.fill_cycles(e.k_blocks)
    _record(full_rate={"weight_beats": beats, "cycles": cycles, "estimate": expected})
    assert beats / cycles >= 0.9, f"only {beats}/{cycles:.0f} beats per cycle"
    assert abs(cycles - expected) <= 0.02 * expected + 2, \
        f"{cycles:.0f} cycles measured, analytic estimate {expected}"


@cocotb.test()
async def shapes(dut):
    """Without gaps or backpressure, matmuls of the shapes in the config
    (``shapes``: [rows, K, N] each; default 8 rows of K = max_k against one
    output block, where the table build, not the reads, is the bound) take
    the analytic ``cycles()`` to within 2%, counted from the first
    activation beat to the last result (what a pass sees)."""
    tb = MatmulBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    e = tb.engine
    for rows, k, n in CONFIG.get("shapes") or [(8, e.max_k, e.lanes)]:
        a, w = tb.random_case(rows, k, n)
        await tb.run_rows(a, w)
        expected = e.cycles(rows, k, n)
        dut._log.info("shapes: %d x %d x %d in %d cycles (estimate %d), %.2f MACs/cycle",
                      rows, k, n, tb.span, expected, rows * k * n / tb.span)
        _record(shapes=CHECKED["shapes"] + [{"rows": rows, "k": k, "n": n,
                                              "cycles": tb.span, "estimate": expected}])
        assert abs(tb.span - expected) <= 0.02 * expected + 4, \
            f"{rows}x{k}x{n}: {tb.span:.0f} cycles measured, analytic estimate {expected}"


@cocotb.test()
async def error_flag(dut):
    """A row longer than max_k, or a weight block with the wrong number of
    k-blocks, raises the sticky error flag."""
    tb = MatmulBench(dut)
    await tb.check_kblock_mismatch()
    await tb.check_overlong_row()


def run(engine, params, *, seed=1, broken=False, testcase=None, report=None, shapes=None):
    """Host side: build (cached) and run this testbench on Verilator for
    ``engine`` with ``params``. ``report`` names a JSON file that receives what
    was checked; ``shapes`` ([rows, K, N] each) replaces the ``shapes`` test's
    default. Raises ``SimFailure`` on any mismatch; returns tests passed."""
    from ..gen.verilog import generate_verilog
    from .runner import run_cocotb
    dut = make_engine(engine, **params)
    env = {"TRILUT_TB": json.dumps({"engine": engine, "params": params, "seed": seed,
                                    "break": broken, "shapes": shapes})}
    if report:
        env["TRILUT_TB_REPORT"] = str(Path(report).resolve())   # the simulator runs elsewhere
    name = engine + "-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return run_cocotb(generate_verilog(dut, "engine"), "engine", __name__,
                      name=name + ("-broken" if broken else ""), env=env, testcase=testcase)
