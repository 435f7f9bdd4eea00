"""cocotb testbench for the streaming RoPE + requantizer (hw/rope.py).

``TRILUT_TB`` JSON: ``params`` (RoPE keyword arguments), ``seed``, ``break``
(a deliberately wrong reference model that the suite shows is caught):

* ``"interleaved"``: GPT-J pairs (2j, 2j + 1) instead of rotate_half's (j, j + d/2);
* ``"plus"``: r_j = x_j c + x_{j+h} s (the sign of the first half lost).

Rows (one token: 1..4 heads of head_dim elements, its position in ``pos``)
stream with random idle gaps on ``inp`` and ``table`` and random
backpressure on ``out`` (except the zero-stall test); every element and
``last`` flag is compared with golden ``rope_requant`` integer for integer.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from trilut.golden.encoder import Dyadic
from trilut.golden.llm import rope_requant, rope_tables
from trilut.hw.rope import RoPE
from trilut.sim.streams import (StreamSink, StreamSource, UnitBench, payload_layout,
                                record_handshakes, reset, start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
BREAKS = ("interleaved", "plus")
PERIOD_NS = 10
LO, HI = -32768, 32767


class RoPEBench(UnitBench):
    """Clock, reset, sources (inp, table), sink (out) and scoreboard of one RoPE."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        super().__init__(dut, RoPE, CONFIG, BREAKS)
        u = self.unit
        self.inp = StreamSource(dut, "inp", dut.clk, payload_layout(u, "inp"), rng=self.rng,
                                idle=idle)
        self.table = StreamSource(dut, "table", dut.clk, payload_layout(u, "table"),
                                  rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(u, "out"), rng=self.rng,
                              stall=stall)
        self.times = record_handshakes(dut, ["inp", "out"], PERIOD_NS)
        self.cos = self.sin = None
        self.dyadic = None
        start_clock(dut, PERIOD_NS)

    async def reset(self):
        await reset(self.dut)

    async def load_table(self, cos, sin):
        await self.table.send(self.unit.table_beats(cos, sin))
        self.cos, self.sin = np.asarray(cos, np.int64), np.asarray(sin, np.int64)

    def golden_table(self, theta=10000.0):
        return rope_tables(self.unit.head_dim, theta, self.unit.max_pos)

    def random_table(self):
        shape = (self.unit.max_pos, self.unit.head_dim // 2)
        return (self.np_rng.integers(LO, HI + 1, size=shape),
                self.np_rng.integers(LO, HI + 1, size=shape))

    def set_requant(self, m, e):
        self.dut.m.value, self.dut.e.value = int(m), int(e)
        self.dyadic = Dyadic(int(m), int(e))

    def model(self, x, pos):
        d = self.unit.head_dim
        x = np.asarray(x, np.int64).reshape(1, -1, d)
        c, s = self.cos[pos:pos + 1], self.sin[pos:pos + 1]
        if self.broken == "interleaved":          # pairs (2j, 2j + 1) in rotate_half's slots
            perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
            inv = np.argsort(perm)
            y = rope_requant(x[..., perm], c, s, self.dyadic, self.unit.out_bits,
                             self.unit.m_bits)
            return y[..., inv].reshape(-1)
        if self.broken == "plus":
            h = d // 2
            y = rope_requant(x, c, -s, self.dyadic, self.unit.out_bits, self.unit.m_bits)
            y2 = rope_requant(x, c, s, self.dyadic, self.unit.out_bits, self.unit.m_bits)
            y[..., h:] = y2[..., h:]
            return y.reshape(-1)
        return rope_requant(x, c, s, self.dyadic, self.unit.out_bits,
                            self.unit.m_bits).reshape(-1)

    async def run_rows(self, rows, *, allow_error=False, check=True):
        """Stream ``rows`` = [(x, pos)] and compare with the model; returns handshake cycles."""
        for log in self.times.values():
            log.clear()
        beats = [{"data": int(v), "pos": int(pos), "last": int(i == len(x) - 1)}
                 for x, pos in rows for i, v in enumerate(x)]
        sender = cocotb.start_soon(self.inp.send(beats))
        got = await self.out.receive(len(beats))
        await sender
        if check:
            at = 0
            for k, (x, pos) in enumerate(rows):
                want = self.model(x, pos)
                part = got[at:at + len(x)]
                at += len(x)
                data = np.array([int(b.data) for b in part], dtype=np.int64)
                bad = np.nonzero(data != want)[0]
                assert len(bad) == 0, (
                    f"{len(bad)} mismatches in row {k} (pos {pos}, {len(x)} elements); first "
                    f"at {bad[0]}: hardware {data[bad[0]]}, model {want[bad[0]]}")
                assert [int(b.last) for b in part] == [0] * (len(x) - 1) + [1], \
                    f"out.last misplaced in row {k}"
        if not allow_error:
            assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        return {k: list(v) for k, v in self.times.items()}

    def random_row(self, heads, *, narrow=False):
        n = heads * self.unit.head_dim
        if narrow:
            return np.clip(np.round(self.np_rng.normal(0, 2000, size=n)), LO, HI).astype(int)
        return self.np_rng.integers(LO, HI + 1, size=n)

    def e_for(self, top_bits):
        """An e that maps a |r| of about 2^top_bits to the output range."""
        return top_bits + self.unit.m_bits - (self.unit.out_bits - 1)


@cocotb.test()
async def random_rows(dut):
    """Golden tables (theta 10000): 1..4 heads per row at random positions
    (0 and max_pos - 1 included), full-range and activation-like values."""
    tb = RoPEBench(dut)
    await tb.reset()
    await tb.load_table(*tb.golden_table())
    P = tb.unit.max_pos
    for top in (29, 27, 25):
        tb.set_requant(tb.np_rng.integers(1 << 15, 1 << 16), tb.e_for(top))
        rows = [(tb.random_row(int(tb.np_rng.integers(1, 5)), narrow=bool(k % 2)),
                 int(pos)) for k, pos in enumerate([0, P - 1, *tb.np_rng.integers(0, P, 6)])]
        await tb.run_rows(rows)


@cocotb.test()
async def extreme_rows(dut):
    """Full-range random int16 tables (cos/sin up to -32768), rows of all
    -32768, all 32767, alternating extremes, one-hot; m in {0, 1, 2^m_bits - 1},
    e in {1, 20, 62} (saturation at both clamps, ties)."""
    tb = RoPEBench(dut)
    await tb.reset()
    d, P = tb.unit.head_dim, tb.unit.max_pos
    await tb.load_table(*tb.random_table())
    xs = [np.full(2 * d, LO), np.full(2 * d, HI), np.array([LO, HI] * d),
          np.array([HI] * (d // 2) + [LO] * (d // 2)), np.full(d, 7)]
    one = np.zeros(d, dtype=np.int64)
    one[d // 2] = LO
    xs.append(one)
    rows = [(x, int(pos)) for x in xs for pos in (0, P - 1, int(tb.np_rng.integers(0, P)))]
    mmax = (1 << tb.unit.m_bits) - 1
    for m, e in ((mmax, 1), (mmax, tb.e_for(31)), (1, 1), (0, 20), (mmax, 62), (3, 2)):
        tb.set_requant(m, e)
        await tb.run_rows(rows)


@cocotb.test()
async def errors(dut):
    """A row that is not a whole number of heads, and a table longer than
    max_pos * d / 2, set the sticky error; reset clears it and rows are right again."""
    tb = RoPEBench(dut)
    await tb.reset()
    d = tb.unit.head_dim
    cos, sin = tb.golden_table()
    await tb.load_table(cos, sin)
    tb.set_requant(40000, tb.e_for(29))
    await tb.run_rows([(tb.random_row(1)[:d - 1], 0)], allow_error=True, check=False)
    assert int(dut.error.value) == 1, "a partial head was not flagged"
    await tb.reset()
    await tb.run_rows([(tb.random_row(2), 1)])
    beats = tb.unit.table_beats(cos, sin)
    await tb.table.send([dict(b, last=0) for b in beats] + [dict(beats[0], last=1)])
    await RisingEdge(dut.clk)
    assert int(dut.error.value) == 1, "table overflow not flagged"
    await tb.reset()
    await tb.load_table(cos, sin)
    await tb.run_rows([(tb.random_row(3), tb.unit.max_pos - 1)])


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure, rows of 4 heads stream at one element per
    cycle, and the first result comes after the analytic latency."""
    tb = RoPEBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    u = tb.unit
    await tb.load_table(*tb.golden_table())
    tb.set_requant(50000, tb.e_for(28))
    rows = [(tb.random_row(4, narrow=True), k % u.max_pos) for k in range(16)]
    t = await tb.run_rows(rows)
    out = t["out"]
    rate = len(out) / (out[-1] - out[0] + 1)
    lat = out[0] - t["inp"][u.head_dim - 1]
    dut._log.info("rope full_rate d=%d: %d elements, %.3f elements/cycle sustained; first "
                  "result %d cycles after its head's last element (analytic %d)",
                  u.head_dim, len(out), rate, lat, u.latency())
    assert rate >= 0.99, f"only {rate:.3f} elements per cycle"
    assert lat == u.latency(), f"latency {lat}, analytic {u.latency()}"
