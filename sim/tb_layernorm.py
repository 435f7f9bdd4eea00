"""cocotb testbench for the streaming integer LayerNorm (hw/layernorm.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (LayerNorm
keyword arguments), ``seed``, and ``break``, which selects a deliberately
wrong reference model so that the suite can show this testbench fails when
the model is wrong:

* ``"half_up"``: the mean rounded half up instead of ties to even;
* ``"newton"``: I-ViT's square root (10 Newton steps from 2^16) instead of
  the exact isqrt (it differs for var < 142,883 and where var + 1 is a
  perfect square).

Every test streams rows back to back with random idle gaps on ``inp`` and
random backpressure on ``out`` (except the zero-stall throughput test), and
a scoreboard compares every output element and every ``last`` flag with
``trilut.golden.nonlinear.int_layernorm`` exactly.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from trilut.golden.nonlinear import int_layernorm, isqrt, ivit_newton_sqrt
from trilut.hw.layernorm import LayerNorm
from trilut.sim.streams import (StreamSink, StreamSource, UnitBench, payload_layout, reset,
                                start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
BREAKS = ("half_up", "newton")
PERIOD_NS = 10


def wrong_layernorm(x, mode):
    """A deliberately wrong LayerNorm for the ``break`` option (one row)."""
    x = np.asarray(x, dtype=np.int64)
    c = len(x)
    s = int(x.sum())
    q, r = divmod(s, c)
    mu = q + (2 * r > c or (2 * r == c and q % 2 == 1))
    if mode == "half_up":
        mu = (2 * s + c) // (2 * c)
    y = x - mu
    var = np.array([int((y * y).sum())], dtype=np.int64)
    root = ivit_newton_sqrt(var) if mode == "newton" else isqrt(var)
    std = max(int(root[0]), 1)
    return (y * ((2**31 - 1) // std)) >> 1


class _StampedSource(StreamSource):
    """StreamSource that also records the time of the last accepted beat."""

    async def send(self, beats, *, timeout=100_000):
        self.last_accept = None
        await super().send(beats, timeout=timeout)
        self.last_accept = get_sim_time("ns")      # same convention as first_accept


class LayerNormBench(UnitBench):
    """Owns clock, reset, the source, the sink and the scoreboard of one LayerNorm."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        super().__init__(dut, LayerNorm, CONFIG, BREAKS)
        self.inp = _StampedSource(dut, "inp", dut.clk, payload_layout(self.unit, "inp"),
                                  rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(self.unit, "out"),
                              rng=self.rng, stall=stall)
        self.lo, self.hi = -(1 << (self.unit.in_bits - 1)), (1 << (self.unit.in_bits - 1)) - 1
        start_clock(dut, PERIOD_NS)

    async def reset(self):
        await reset(self.dut)

    def model(self, row):
        """Reference for one row: the first max_len elements through golden."""
        row = np.asarray(row, dtype=np.int64)[:self.unit.max_len]
        if self.broken:
            return wrong_layernorm(row, self.broken)
        return int_layernorm(row, max_len=self.unit.max_len)

    @staticmethod
    def beats(rows):
        return [{"data": int(v), "last": int(i == len(r) - 1)}
                for r in rows for i, v in enumerate(r)]

    async def _watch_out(self, stats):
        """Record the times of the first and last beat taken on ``out``."""
        valid, ready = self.dut.out__valid, self.dut.out__ready
        while True:
            await RisingEdge(self.dut.clk)      # sampled as StreamSink samples
            if valid.value and ready.value:
                t = get_sim_time("ns")
                stats.setdefault("out_first", t)
                stats["out_last"] = t
                stats["out_beats"] = stats.get("out_beats", 0) + 1

    async def run_rows(self, rows, *, allow_error=False):
        """Stream ``rows`` and compare every result with the model.

        Returns timing in cycles: ``in_cycles`` (first to last element taken),
        ``out_cycles`` (first to last result taken), ``total`` (first element
        taken to last result taken)."""
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
        for r in rows:
            assert len(r) >= 1 and r.min() >= self.lo and r.max() <= self.hi, "bad test row"
        stats = {}
        self.inp.first_accept = None
        watcher = cocotb.start_soon(self._watch_out(stats))
        sender = cocotb.start_soon(self.inp.send(self.beats(rows)))
        want_rows = [self.model(r) for r in rows]
        count = sum(len(w) for w in want_rows)
        got = await self.out.receive(count)
        await sender
        stats["in_last"] = self.inp.last_accept
        await RisingEdge(self.dut.clk)
        watcher.cancel()
        assert stats.get("out_beats") == count, "output monitor out of step with the sink"
        pos = 0
        for i, (row, want) in enumerate(zip(rows, want_rows)):
            part = got[pos:pos + len(want)]
            pos += len(want)
            data = np.array([int(b.data) for b in part], dtype=np.int64)
            lasts = [int(b.last) for b in part]
            bad = np.nonzero(data != want)[0]
            assert len(bad) == 0, (
                f"{len(bad)} mismatches in row {i} (C = {len(want)}); first at element "
                f"{bad[0]}: hardware {data[bad[0]]}, model {want[bad[0]]}; row starts "
                f"{row[:8].tolist()}")
            assert lasts == [0] * (len(want) - 1) + [1], f"out.last misplaced in row {i}"
        if not allow_error:
            assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        first_in = self.inp.first_accept
        return {"in_cycles": (stats["in_last"] - first_in) / PERIOD_NS + 1,
                "out_cycles": (stats["out_last"] - stats["out_first"]) / PERIOD_NS + 1,
                "total": (stats["out_last"] - first_in) / PERIOD_NS + 1,
                "latency_first": (stats["out_first"] - first_in) / PERIOD_NS,
                "elements": count}

    # --- row generators ---------------------------------------------------

    def random_row(self, c, *, narrow=False):
        if narrow:       # activations as a real model has them: mostly small
            sigma = (self.hi + 1) / 16
            v = np.round(self.np_rng.normal(self.np_rng.normal(0, sigma), sigma, size=c))
            return np.clip(v, self.lo, self.hi).astype(np.int64)
        return self.np_rng.integers(self.lo, self.hi + 1, size=c)

    def lengths(self):
        L = self.unit.max_len
        sizes = [1, 2, 3, L - 1, L] + [int(self.np_rng.integers(1, L + 1)) for _ in range(4)]
        return [c for c in sizes if 1 <= c <= L]


@cocotb.test()
async def random_rows(dut):
    """Rows of length 1, 2, 3, max_len - 1, max_len and random lengths, with
    full-range and narrow (activation-like) random values."""
    tb = LayerNormBench(dut)
    await tb.reset()
    rows = [tb.random_row(c) for c in tb.lengths()]
    rows += [tb.random_row(c, narrow=True) for c in tb.lengths()]
    tb.rng.shuffle(rows)
    await tb.run_rows(rows)


@cocotb.test()
async def extreme_rows(dut):
    """Constant rows (zero variance), one-hot, all minimum, all maximum,
    alternating extremes (the largest variance), ties in the mean, tiny
    variances, and rows with outliers over small values."""
    tb = LayerNormBench(dut)
    await tb.reset()
    L, lo, hi = tb.unit.max_len, tb.lo, tb.hi
    rows = []
    for c in sorted({1, 2, 7, L}):
        c = min(c, L)
        rows += [np.full(c, v) for v in (0, lo, hi, 5, -3)]
        onehot = np.zeros(c, dtype=np.int64)
        onehot[c // 3] = hi
        rows.append(onehot)
        onehot = np.zeros(c, dtype=np.int64)
        onehot[-1] = lo
        rows.append(onehot)
        rows.append(np.array([lo, hi] * c)[:c])
        rows.append(np.array([hi, lo] * c)[:c])
    # Ties: sum / C ends in .5, with even and odd floor (ties to even differs).
    for c in (2, 4, 6, 10, L - L % 2):
        if 2 <= c <= L:
            for a in (0, 1, -1, -2, 4, lo, hi - 1):
                rows.append(np.array([a] * (c // 2) + [a + 1] * (c // 2)))
    # Small variances (Newton's sqrt has not converged below 142,883).
    for c in (3, 16, L):
        if c <= L:
            base = np.full(c, 10, dtype=np.int64)
            base[0] = 11
            rows.append(base)
            rows.append(tb.np_rng.integers(-2, 3, size=c))
    # Outliers: mostly small values, a few channels at the extremes.
    for c in (8, L):
        if c <= L:
            for _ in range(2):
                row = np.clip(np.round(tb.np_rng.normal(0, (hi + 1) / 64, size=c)),
                              lo, hi).astype(np.int64)
                idx = tb.np_rng.choice(c, size=max(1, c // 100), replace=False)
                row[idx] = tb.np_rng.choice([lo, hi], size=len(idx))
                rows.append(row)
    await tb.run_rows(rows)


@cocotb.test()
async def overlong_row(dut):
    """A row longer than max_len sets the sticky error flag, is normalized
    over its first max_len elements, and the following rows are correct."""
    tb = LayerNormBench(dut)
    await tb.reset()
    L = tb.unit.max_len
    assert int(dut.error.value) == 0
    rows = [tb.random_row(L + 5), tb.random_row(min(L, 3)), tb.random_row(L),
            tb.random_row(2 * L + 1), tb.random_row(1)]
    await tb.run_rows(rows, allow_error=True)
    assert int(dut.error.value) == 1, "over-long row not flagged"
    await tb.run_rows([tb.random_row(L)], allow_error=True)
    assert int(dut.error.value) == 1, "error flag not sticky"
    await tb.reset()
    assert int(dut.error.value) == 0, "error flag not cleared by reset"
    await tb.run_rows([tb.random_row(L), tb.random_row(1)])


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure, rows of max_len stream at about one
    element per cycle (>= 0.9 sustained, and within 2% of row_interval)."""
    tb = LayerNormBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    u = tb.unit
    L = u.max_len
    nrows = max(8, 4096 // L)
    rows = [tb.random_row(L, narrow=True) for _ in range(nrows)]
    t = await tb.run_rows(rows)
    n = t["elements"]
    sustained = n / t["out_cycles"]
    dut._log.info("full_rate C=%d: %d rows, %d elements; input %.3f el/cycle, output "
                  "%.3f el/cycle sustained, end to end %.3f (first result after %d cycles; "
                  "analytic latency %d, row interval %d)", L, nrows, n, n / t["in_cycles"],
                  sustained, n / t["total"], t["latency_first"],
                  u.latency() + L - 1, u.row_interval(L))
    assert sustained >= 0.9, f"only {sustained:.3f} elements per cycle"
    measured_interval = (t["out_cycles"] - L) / (nrows - 1)
    assert abs(measured_interval - u.row_interval(L)) <= 0.02 * u.row_interval(L) + 2, (
        f"measured {measured_interval:.1f} cycles per row, analytic {u.row_interval(L)}")
    assert t["latency_first"] - (L - 1) == u.latency(), (
        f"first result {t['latency_first'] - (L - 1)} cycles after the row, "
        f"analytic latency {u.latency()}")
    # Short rows are limited by the per-row math (row_interval) instead.
    for c in sorted({1, 16, 40, L // 2} - {0}):
        if c <= L:
            t = await tb.run_rows([tb.random_row(c) for _ in range(nrows)])
            interval = (t["out_cycles"] - c) / (nrows - 1)
            dut._log.info("full_rate C=%d: %.1f cycles per row, %.3f el/cycle (analytic "
                          "row_interval %d)", c, interval, c / interval, u.row_interval(c))
            assert abs(interval - u.row_interval(c)) <= 0.02 * u.row_interval(c) + 1, (
                f"C={c}: measured {interval:.1f} cycles per row, analytic "
                f"{u.row_interval(c)}")
