"""cocotb testbench for the streaming Shiftmax unit (hw/shiftmax.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (Shiftmax
keyword arguments), ``seed`` and ``break`` (a deliberately wrong reference:
the row sum misses the row's last term, so that the suite can show this
testbench fails when the model is wrong). Every test streams rows with random
idle gaps on ``inp`` and random backpressure on ``out`` (except the
throughput and latency tests, which run without either), and the scoreboard
compares every output, and every ``last`` flag, with
``trilut.golden.nonlinear.shiftmax`` exactly.

:class:`RowBench` is shared with the ShiftGELU testbench.
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from trilut.golden import nonlinear as nl
from trilut.hw.shiftmax import Shiftmax
from trilut.sim.streams import (StreamSink, StreamSource, payload_layout, record_handshakes,
                                reset, start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
PERIOD_NS = 10
SCALES = [2.0**-k for k in range(2, 6)] + [1 / 12.7]      # x0 = -4, -8, -16, -32, -13
EXTREME_SCALES = [2.0**-2, 2.0**-5, 1.0, 2.0**-15]         # x0 = -4, -32, -1, -32768


class RowBench:
    """Owns clock, reset, the ``inp`` source and ``out`` sink of a row unit,
    and a timing monitor; ``model(row, scale)`` is the reference of one row
    and ``x0_of(scale)`` the constant driven onto the ``x0`` port."""

    def __init__(self, dut, unit, model, x0_of, *, idle=0.3, stall=0.3, seed=1):
        self.dut, self.unit, self.model, self.x0_of = dut, unit, model, x0_of
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.inp = StreamSource(dut, "inp", dut.clk, payload_layout(unit, "inp"),
                                rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(unit, "out"),
                              rng=self.rng, stall=stall)
        self.lo, self.hi = -(1 << (unit.in_bits - 1)), (1 << (unit.in_bits - 1)) - 1
        start_clock(dut, PERIOD_NS)
        times = record_handshakes(dut, ("inp", "out"), PERIOD_NS)
        self.in_times, self.out_times = times["inp"], times["out"]

    async def reset(self):
        await reset(self.dut)

    def set_scale(self, scale):
        """Drive x0 (between batches only: the unit must be empty)."""
        self.dut.x0.value = self.x0_of(scale)

    async def run_rows(self, rows, scale, *, cut=None):
        """Stream ``rows`` at ``scale`` and compare every output with the model.
        A row longer than the unit's max_len is expected back cut to max_len."""
        self.set_scale(scale)
        await ClockCycles(self.dut.clk, 2)           # x0 settles before the first beat
        max_len = self.unit.max_len
        for r in rows:
            assert len(r) and self.lo <= min(r) and max(r) <= self.hi, "row outside the input range"
        beats = [{"data": int(v), "last": int(i == len(r) - 1)}
                 for r in rows for i, v in enumerate(r)]
        kept = [np.asarray(r[:max_len], dtype=np.int64) for r in rows]
        count = sum(len(r) for r in kept)
        self.in_times.clear()
        self.out_times.clear()
        cocotb.start_soon(self.inp.send(beats))
        got = await self.out.receive(count)
        await RisingEdge(self.dut.clk)               # let the monitor see the last beat
        pos = 0
        for n_row, row in enumerate(kept):
            want = self.model(row, scale)
            hw = np.array([int(b.data) for b in got[pos:pos + len(row)]])
            lasts = [int(b.last) for b in got[pos:pos + len(row)]]
            bad = np.nonzero(hw != want)[0]
            assert len(bad) == 0, (
                f"{len(bad)} mismatches in row {n_row} (length {len(row)}, scale {scale!r}, "
                f"x0 {self.x0_of(scale)}); first at element {bad[0]}: hardware {hw[bad[0]]}, "
                f"golden {want[bad[0]]}; row {row.tolist()}")
            assert lasts == [0] * (len(row) - 1) + [1], f"out.last misplaced in row {n_row}"
            pos += len(row)
        return count

    def random_row(self, length, narrow=False):
        lo, hi = (-20, 20) if narrow else (self.lo, self.hi)
        return self.np_rng.integers(lo, hi + 1, size=length)

    def lengths(self):
        """Row lengths to test: 1, 2, random, max_len."""
        ml = self.unit.max_len
        rand = [int(self.np_rng.integers(3, ml + 1)) for _ in range(3)] if ml > 2 else []
        return [1, 2] + rand + [ml, 1]

    def extreme_rows(self, length):
        lo, hi = self.lo, self.hi
        idx = np.arange(length)
        return [np.full(length, 5), np.full(length, lo), np.full(length, hi),
                np.where(idx % 2 == 0, lo, hi),
                np.where(idx == length // 2, hi, lo),        # one-hot
                np.where(idx == 0, 1, 0),                     # one-hot, small
                np.where(idx == length - 1, lo, hi)]          # one cold


def shiftmax_bench(dut, **kw):
    unit = Shiftmax(**CONFIG["params"])

    def model(row, scale):
        if CONFIG.get("break") and len(row) > 1:
            # Wrong on purpose: the sum misses the row's last term.
            x0 = nl.iexp_x0(scale)
            e = nl._iexp(row - row.max(), x0, unit.n)
            f = nl.INT32_MAX // min(int(e[:-1].sum()), nl.INT32_MAX)
            return (e * f) >> (32 - unit.out_bits)
        return nl.shiftmax(row, scale, n=unit.n, out_bits=unit.out_bits)

    return RowBench(dut, unit, model, nl.iexp_x0, seed=CONFIG.get("seed", 1), **kw)


# --- tests shared in form with the ShiftGELU testbench ----------------------

async def check_random_rows(tb, scales):
    """Per scale, rows of lengths 1, 2, random, max_len, then a burst of short
    rows (1..3 elements: every row buffer and the queue of row sums fill up
    behind the output's backpressure)."""
    for scale in scales:
        rows = [tb.random_row(n, narrow=i % 3 == 2) for i, n in enumerate(tb.lengths())]
        rows += [tb.random_row(int(tb.np_rng.integers(1, 4))) for _ in range(12)]
        await tb.run_rows(rows, scale)


async def check_extreme_rows(tb, scales):
    for scale in scales:
        for length in sorted({1, 2, tb.unit.max_len}):
            await tb.run_rows(tb.extreme_rows(length), scale)


async def check_overlong_row(tb, scale):
    """A row longer than max_len raises the sticky error flag, comes out cut
    to max_len, and the next row is still correct; reset clears the flag."""
    dut, ml = tb.dut, tb.unit.max_len
    assert int(dut.error.value) == 0
    rows = [tb.random_row(ml + 7), tb.random_row(max(1, ml // 2)), tb.random_row(ml + 1),
            tb.random_row(ml)]
    await tb.run_rows(rows, scale)
    assert int(dut.error.value) == 1, "over-long row not flagged"
    await tb.run_rows([tb.random_row(3)], scale)
    assert int(dut.error.value) == 1, "error flag is not sticky"
    await tb.reset()
    assert int(dut.error.value) == 0, "reset does not clear the error flag"


async def check_bad_x0(tb, bad_x0, scale):
    """A row processed with an invalid x0 raises error (its outputs are
    undefined but still delivered); a good x0 afterwards works again."""
    dut = tb.dut
    await tb.reset()
    dut.x0.value = bad_x0
    await ClockCycles(dut.clk, 2)
    cocotb.start_soon(tb.inp.send([{"data": 1, "last": 0}, {"data": 2, "last": 1}]))
    await tb.out.receive(2)
    assert int(dut.error.value) == 1, f"x0 = {bad_x0} not flagged"
    await tb.reset()
    await tb.run_rows([tb.random_row(5)], scale)
    assert int(dut.error.value) == 0


async def check_full_rate(tb, scale, rows, *, min_rate=0.9):
    """Without gaps or backpressure, rows of max_len stream at >= min_rate
    elements per cycle (sustained: first to last output beat). Returns the
    (sustained, end-to-end) figures."""
    ml = tb.unit.max_len
    data = [tb.random_row(ml) for _ in range(rows)]
    count = await tb.run_rows(data, scale)
    sustained = count / (tb.out_times[-1] - tb.out_times[0] + 1)
    end_to_end = count / (tb.out_times[-1] - tb.in_times[0] + 1)
    tb.dut._log.info("full_rate: %d rows of %d: %.3f elements/cycle sustained (first to last "
                     "output), %.3f end to end (first input to last output)",
                     rows, ml, sustained, end_to_end)
    in_rate = count / (tb.in_times[-1] - tb.in_times[0] + 1)
    tb.dut._log.info("full_rate: input side %.3f elements/cycle", in_rate)
    assert sustained >= min_rate, f"sustained only {sustained:.3f} elements/cycle"
    assert in_rate >= min_rate, f"input side only {in_rate:.3f} elements/cycle"
    return sustained, end_to_end


async def check_latency(tb, scale, length):
    """One row alone, no stalls: the first output comes unit.latency(length)
    cycles after the row's last input beat."""
    await tb.run_rows([tb.random_row(length)], scale)
    measured = tb.out_times[0] - tb.in_times[-1]
    documented = tb.unit.latency(length)
    tb.dut._log.info("latency: row of %d, first output %d cycles after the last input "
                     "(documented %d)", length, measured, documented)
    assert measured == documented, f"latency {measured} != documented {documented}"


# --- the Shiftmax tests ------------------------------------------------------

@cocotb.test()
async def random_rows(dut):
    """Random rows of lengths 1, 2, random and max_len at scales 2^-2..2^-5 and 1/12.7."""
    tb = shiftmax_bench(dut)
    await tb.reset()
    await check_random_rows(tb, SCALES)


@cocotb.test()
async def extreme_rows(dut):
    """All equal, all -128, all +127, alternating, one-hot and one-cold rows,
    at x0 = -4, -32, -1 and -32768 (the extremes of the 16-bit x0 port)."""
    tb = shiftmax_bench(dut)
    await tb.reset()
    await check_extreme_rows(tb, EXTREME_SCALES)


@cocotb.test()
async def overlong_row(dut):
    tb = shiftmax_bench(dut)
    await tb.reset()
    await check_overlong_row(tb, SCALES[1])


@cocotb.test()
async def bad_x0(dut):
    tb = shiftmax_bench(dut)
    await check_bad_x0(tb, 0, SCALES[0])


@cocotb.test()
async def full_rate(dut):
    """Zero-stall throughput over 8 rows of max_len (>= 0.9 elements/cycle),
    and short rows (bounded by one divide per row, ~34 cycles)."""
    tb = shiftmax_bench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    await check_latency(tb, SCALES[2], tb.unit.max_len)
    if tb.unit.max_len >= 64:
        await check_full_rate(tb, SCALES[2], 8)
    for length in (1, 8, 32):
        if length <= tb.unit.max_len:
            rows = 8
            await tb.run_rows([tb.random_row(length) for _ in range(rows)], SCALES[2])
            period = (tb.out_times[-1] - tb.out_times[0] + 1 - length) / (rows - 1)
            dut._log.info("short rows: %d rows of %d: one row per %.1f cycles (output side), "
                          "%.3f elements/cycle; output cycles %s", rows, length, period,
                          length / period, tb.out_times[::length])
