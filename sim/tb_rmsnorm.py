"""cocotb testbench for the decoder's RMSNorm (hw/rmsnorm.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (RMSNorm
keyword arguments), ``seed`` and ``break``, a deliberately wrong reference
model that the suite shows this testbench catches:

* ``"layernorm"``: the mean subtracted (golden int_layernorm instead of int_rmsnorm);
* ``"asym_clamp"``: the requantizer clamped to [-32768, 32767] instead of +-32767.

Every test loads a gamma table (m, e, sign per channel) through ``param``,
streams rows with random idle gaps on ``inp`` and ``param`` and random
backpressure on ``out`` (except the zero-stall throughput test), and
compares every element and ``last`` flag with golden int_rmsnorm followed by
golden's norm output stage (encoder._norm with NormParams(out_bits=16,
signed_out=True)), integer for integer.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from trilut.golden.encoder import Dyadic, NormParams, _norm
from trilut.golden.llm import int_rmsnorm
from trilut.golden.nonlinear import int_layernorm
from trilut.hw.rmsnorm import RMSNorm
from trilut.sim.streams import (StreamSink, StreamSource, UnitBench, payload_layout,
                                record_handshakes, reset, start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
BREAKS = ("layernorm", "asym_clamp")
PERIOD_NS = 10
LO, HI = -32768, 32767


class RMSNormBench(UnitBench):
    """Clock, reset, sources (inp, param), sink (out) and scoreboard of one RMSNorm."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        super().__init__(dut, RMSNorm, CONFIG, BREAKS)
        u = self.unit
        self.inp = StreamSource(dut, "inp", dut.clk, payload_layout(u, "inp"), rng=self.rng,
                                idle=idle)
        self.param = StreamSource(dut, "param", dut.clk, payload_layout(u, "param"),
                                  rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(u, "out"), rng=self.rng,
                              stall=stall)
        self.lo, self.hi = -(1 << (u.in_bits - 1)), (1 << (u.in_bits - 1)) - 1
        self.norm = None
        self.times = record_handshakes(dut, ["inp", "out"], PERIOD_NS)
        dut.num_channels.value = 0
        start_clock(dut, PERIOD_NS)

    async def reset(self):
        await reset(self.dut)

    async def load(self, m, e, sign):
        """Write the gamma table (arrays of one length C) and set num_channels = C."""
        m, e, sign = (np.asarray(a, dtype=np.int64) for a in (m, e, sign))
        await self.param.send(self.unit.param_beats(m, e, sign))
        self.dut.num_channels.value = len(m)
        self.norm = NormParams(requant=Dyadic(m, e), bias=np.zeros(len(m), np.int64),
                               sign=sign, out_scale=1.0, out_bits=16, signed_out=True)
        await RisingEdge(self.dut.clk)

    def random_table(self, c, *, e_range=(26, 36)):
        m = self.np_rng.integers(0, 1 << self.unit.m_bits, size=c)
        e = self.np_rng.integers(e_range[0], e_range[1] + 1, size=c)
        sign = self.np_rng.choice([-1, 1], size=c)
        return m, e, sign

    def model(self, row):
        """Golden for one row (its first max_len elements) with the loaded table."""
        row = np.asarray(row, dtype=np.int64)[:self.unit.max_len]
        z = int_layernorm(row) if self.broken == "layernorm" else int_rmsnorm(row)
        t = {}
        _norm("y", z, self.norm, self.unit.m_bits, t)
        y = t["y"].astype(np.int64)
        if self.broken == "asym_clamp":
            y = np.where((y == -HI) & (self.norm.sign[:len(y)] > 0), LO, y)
        return y

    async def run_rows(self, rows, *, allow_error=False):
        """Stream ``rows`` and compare every result; returns handshake cycle lists."""
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
        for r in rows:
            assert len(r) >= 1 and r.min() >= self.lo and r.max() <= self.hi, "bad test row"
        for log in self.times.values():
            log.clear()
        beats = [{"data": int(v), "last": int(i == len(r) - 1)}
                 for r in rows for i, v in enumerate(r)]
        sender = cocotb.start_soon(self.inp.send(beats))
        want = [self.model(r) for r in rows]
        got = await self.out.receive(sum(len(w) for w in want))
        await sender
        pos = 0
        for i, (row, w) in enumerate(zip(rows, want)):
            part = got[pos:pos + len(w)]
            pos += len(w)
            data = np.array([int(b.data) for b in part], dtype=np.int64)
            bad = np.nonzero(data != w)[0]
            assert len(bad) == 0, (
                f"{len(bad)} mismatches in row {i} (C = {len(w)}); first at element {bad[0]}: "
                f"hardware {data[bad[0]]}, model {w[bad[0]]}; row starts {row[:6].tolist()}")
            assert [int(b.last) for b in part] == [0] * (len(w) - 1) + [1], \
                f"out.last misplaced in row {i}"
        if not allow_error:
            assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        return {k: list(v) for k, v in self.times.items()}

    def random_row(self, c, *, narrow=False):
        if narrow:
            v = np.round(self.np_rng.normal(0, (self.hi + 1) / 16, size=c))
            return np.clip(v, self.lo, self.hi).astype(np.int64)
        return self.np_rng.integers(self.lo, self.hi + 1, size=c)


@cocotb.test()
async def random_rows(dut):
    """Tables and rows of C = 1, 2, 3, an odd length, max_len - 1 and max_len;
    full-range and activation-like random values."""
    tb = RMSNormBench(dut)
    await tb.reset()
    L = tb.unit.max_len
    for c in (1, 2, 3, 2 * (L // 4) + 1, L - 1, L):
        await tb.load(*tb.random_table(c))
        await tb.run_rows([tb.random_row(c), tb.random_row(c, narrow=True),
                           tb.random_row(c, narrow=True)])


@cocotb.test()
async def extreme_rows(dut):
    """All -32768, all 32767, all zero (std clamped to 1), constant, one-hot,
    alternating extremes; m = 0 and 2^m_bits - 1, e = 1 (saturation at both
    clamps, both signs), e = 62, and ties of the rounding."""
    tb = RMSNormBench(dut)
    await tb.reset()
    L, lo, hi = tb.unit.max_len, tb.lo, tb.hi
    rows = [np.full(L, v) for v in (lo, hi, 0, 7, -1)]
    for k, v in ((0, hi), (L // 2, lo), (L - 1, 1)):
        one = np.zeros(L, dtype=np.int64)
        one[k] = v
        rows.append(one)
    rows += [np.array([lo, hi] * L)[:L], np.array([hi, lo] * L)[:L], tb.random_row(L)]
    mmax = (1 << tb.unit.m_bits) - 1
    tables = [
        (np.full(L, mmax), np.ones(L), np.tile([1, -1], L)[:L]),         # saturate both ways
        (np.full(L, mmax), np.full(L, 15), np.tile([-1, 1], L)[:L]),     # near the clamps
        (np.zeros(L), np.full(L, 20), np.ones(L)),                        # m = 0
        (np.full(L, mmax), np.full(L, 62), -np.ones(L)),                  # e = 62
        (np.full(L, 1), np.full(L, 1), np.tile([1, -1], L)[:L]),          # ties (z odd, e = 1)
        tb.random_table(L, e_range=(1, 62)),
    ]
    for m, e, sign in tables:
        await tb.load(m, e, sign)
        await tb.run_rows(rows)


@cocotb.test()
async def errors(dut):
    """An over-long row sets the sticky error, is normalized over its first
    max_len elements and the next rows are right; a gamma table longer than
    max_len also sets it; reset clears it."""
    tb = RMSNormBench(dut)
    await tb.reset()
    L = tb.unit.max_len
    await tb.load(*tb.random_table(L))
    await tb.run_rows([tb.random_row(L + 3), tb.random_row(L), tb.random_row(2 * L + 1),
                       tb.random_row(L)], allow_error=True)
    assert int(dut.error.value) == 1, "over-long row not flagged"
    await tb.reset()
    assert int(dut.error.value) == 0, "error flag not cleared by reset"
    m, e, sign = tb.random_table(L)
    beats = tb.unit.param_beats(m, e, sign)
    extra = dict(beats[0], last=1)
    await tb.param.send([dict(b, last=0) for b in beats] + [extra])
    await RisingEdge(dut.clk)
    assert int(dut.error.value) == 1, "gamma table overflow not flagged"
    await tb.reset()
    await tb.load(m, e, sign)
    await tb.run_rows([tb.random_row(L), tb.random_row(L)])


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure, rows of max_len stream at one element per
    cycle, and the first result appears after the analytic latency."""
    tb = RMSNormBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    u = tb.unit
    L = u.max_len
    await tb.load(*tb.random_table(L))
    nrows = max(8, 2048 // L)
    times = await tb.run_rows([tb.random_row(L, narrow=True) for _ in range(nrows)])
    out = times["out"]
    n = len(out)
    rate = n / (out[-1] - out[0] + 1)
    lat = out[0] - times["inp"][L - 1]
    dut._log.info("rmsnorm full_rate C=%d: %d rows, %.3f elements/cycle sustained; first "
                  "result %d cycles after the row's last element (analytic %d)",
                  L, nrows, rate, lat, u.latency())
    assert rate >= 0.98, f"only {rate:.3f} elements per cycle"
    assert lat == u.latency(), f"latency {lat}, analytic {u.latency()}"
