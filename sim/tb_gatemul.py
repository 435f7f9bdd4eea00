"""cocotb testbench for the gated MLP's elementwise unit (hw/gatemul.py).

``TRILUT_TB`` JSON: ``params`` (GateMul keyword arguments), ``seed``,
``break`` (a deliberately wrong reference model the suite shows is caught):

* ``"relu"``: max(gate, 0) instead of its square (relu2) / a plain ReLU
  instead of SiLU (silu);
* ``"swap"``: the act and hid requantizer constants crossed (a wiring slip).

Rows stream on ``gate`` and ``up`` with independent random idle gaps and
random backpressure on ``out`` (except the zero-stall test); every element
and ``last`` flag is compared with golden ``gate_product``.
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from trilut.golden.encoder import Dyadic
from trilut.golden.llm import gate_product
from trilut.golden.quant import requantize
from trilut.hw.gatemul import GateMul
from trilut.sim.streams import (StreamSink, StreamSource, UnitBench, payload_layout,
                                record_handshakes, reset, start_clock)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
BREAKS = ("relu", "swap")
PERIOD_NS = 10
LO, HI = -32768, 32767


class GateMulBench(UnitBench):
    """Clock, reset, sources (gate, up), sink (out) and scoreboard of one GateMul."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        super().__init__(dut, GateMul, CONFIG, BREAKS)
        u = self.unit
        self.gate = StreamSource(dut, "gate", dut.clk, payload_layout(u, "gate"),
                                 rng=random.Random(self.seed + 1), idle=idle)
        self.up = StreamSource(dut, "up", dut.clk, payload_layout(u, "up"),
                               rng=random.Random(self.seed + 2), idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(u, "out"), rng=self.rng,
                              stall=stall)
        self.times = record_handshakes(dut, ["up", "out"], PERIOD_NS)
        self.consts = None
        start_clock(dut, PERIOD_NS)

    async def reset(self):
        await reset(self.dut)

    async def set_consts(self, act_m, act_e, hid_m, hid_e, x0=-5):
        """Drive the constants (and x0, stable from two cycles before the next row)."""
        d = self.dut
        d.act_m.value, d.act_e.value, d.hid_m.value, d.hid_e.value = act_m, act_e, hid_m, hid_e
        if self.unit.act == "silu":
            d.x0.value = x0
        self.consts = (x0, Dyadic(act_m, act_e), Dyadic(hid_m, hid_e))
        await ClockCycles(d.clk, 2)

    def model(self, gate, up):
        x0, act_out, hid = self.consts
        mb = self.unit.m_bits
        if self.broken == "relu":
            g = np.maximum(gate, 0)
            prod = g if self.unit.act == "relu2" else g * 2**15
            a = requantize(prod, act_out.m, act_out.e, lo=LO, hi=HI, m_bits=mb)
            return requantize(a * up, hid.m, hid.e, lo=LO, hi=HI, m_bits=mb)
        if self.broken == "swap":
            act_out, hid = hid, act_out
        return gate_product(self.unit.act, gate, up, x0 if self.unit.act == "silu" else None,
                            act_out, hid, mb).astype(np.int64)

    async def run_rows(self, rows, *, allow_error=False):
        """Stream ``rows`` = [(gate, up)] and compare; returns handshake cycles."""
        for log in self.times.values():
            log.clear()

        def beats(k):
            return [{"data": int(v), "last": int(i == len(r[k]) - 1)}
                    for r in rows for i, v in enumerate(r[k])]
        senders = [cocotb.start_soon(self.gate.send(beats(0))),
                   cocotb.start_soon(self.up.send(beats(1)))]
        got = await self.out.receive(sum(min(len(g), self.unit.max_len) for g, _ in rows))
        for s in senders:
            await s
        at = 0
        for k, (g, u) in enumerate(rows):
            n = min(len(g), self.unit.max_len)
            want = self.model(np.asarray(g[:n], np.int64), np.asarray(u[:n], np.int64))
            part = got[at:at + n]
            at += n
            data = np.array([int(b.data) for b in part], dtype=np.int64)
            bad = np.nonzero(data != want)[0]
            assert len(bad) == 0, (
                f"{len(bad)} mismatches in row {k}; first at {bad[0]}: gate {g[bad[0]]}, up "
                f"{u[bad[0]]}: hardware {data[bad[0]]}, model {want[bad[0]]}")
            assert [int(b.last) for b in part] == [0] * (n - 1) + [1], \
                f"out.last misplaced in row {k}"
        if not allow_error:
            assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        return {k: list(v) for k, v in self.times.items()}

    def pair(self, n, *, narrow=False):
        if narrow:
            g, u = (np.clip(np.round(self.np_rng.normal(0, 3000, size=n)), LO, HI).astype(int)
                    for _ in range(2))
            return g, u
        return self.np_rng.integers(LO, HI + 1, size=n), self.np_rng.integers(LO, HI + 1, size=n)


def _consts(tb):
    """Constants that keep act and h mostly inside int16 (some saturate)."""
    r = tb.np_rng
    return dict(act_m=int(r.integers(1 << 15, 1 << 16)), act_e=31,
                hid_m=int(r.integers(1 << 15, 1 << 16)), hid_e=int(r.integers(29, 33)))


@cocotb.test()
async def random_rows(dut):
    """Rows of 1, 2, 17 and 64 elements, full-range and activation-like values,
    several x0 (silu; -64 is the importer's SILU_X0)."""
    tb = GateMulBench(dut)
    await tb.reset()
    for x0 in (-64, -5, -300, -1):
        await tb.set_consts(**_consts(tb), x0=x0)
        await tb.run_rows([tb.pair(n, narrow=bool(k % 2)) for k, n in enumerate((1, 2, 17, 64))])


@cocotb.test()
async def extreme_rows(dut):
    """gate/up at -32768 and 32767, zeros, all-equal and one-hot rows; m = 0
    and 2^16 - 1, e = 1 (saturation) and 62, the largest |x0|."""
    tb = GateMulBench(dut)
    await tb.reset()
    vals = np.array([LO, HI, 0, 1, -1, 181, -181])
    g = np.repeat(vals, len(vals))
    u = np.tile(vals, len(vals))
    one = np.zeros(16, dtype=np.int64)
    one[3] = HI
    rows = [(g, u), (np.full(8, HI), np.full(8, LO)), (one, np.full(16, HI)),
            (np.full(5, 9), np.full(5, -7))]
    mmax = (1 << tb.unit.m_bits) - 1
    for cm in ((mmax, 1, mmax, 1), (mmax, 30, 0, 9), (1, 62, mmax, 62), (mmax, 16, mmax, 17),
               (3, 2, 5, 3)):
        for x0 in (-5, -32767):
            await tb.set_consts(*cm, x0=x0)
            await tb.run_rows(rows)
            if tb.unit.act == "relu2":
                break


@cocotb.test()
async def errors(dut):
    """Rows longer than max_len are cut on both inputs (sticky error, the next
    rows pair up again); gate and up disagreeing on ``last`` also sets the
    error; reset clears it."""
    tb = GateMulBench(dut)
    await tb.reset()
    await tb.set_consts(**_consts(tb))
    L = tb.unit.max_len
    await tb.run_rows([tb.pair(L + 3), tb.pair(5), tb.pair(2 * L + 1), tb.pair(L)],
                      allow_error=True)
    assert int(dut.error.value) == 1, "over-long row not flagged"
    await tb.reset()
    await tb.set_consts(**_consts(tb))
    g, u = tb.pair(4)
    senders = [cocotb.start_soon(tb.gate.send([{"data": int(v), "last": int(i == 3)}
                                               for i, v in enumerate(g)])),
               cocotb.start_soon(tb.up.send([{"data": int(v), "last": int(i == 1)}
                                             for i, v in enumerate(u)]))]
    await tb.out.receive(4)
    for s in senders:
        await s
    await RisingEdge(dut.clk)
    assert int(dut.error.value) == 1, "last mismatch not flagged"
    await tb.reset()
    await tb.set_consts(**_consts(tb))
    await tb.run_rows([tb.pair(9), tb.pair(L)])


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure one element per cycle; the first result
    comes the analytic latency after its pair is joined (the first ``up``
    element is taken at the join, also behind ShiftGELU for silu)."""
    tb = GateMulBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    u = tb.unit
    await tb.set_consts(**_consts(tb))
    t = await tb.run_rows([tb.pair(min(256, u.max_len), narrow=True) for _ in range(8)])
    out = t["out"]
    rate = len(out) / (out[-1] - out[0] + 1)
    lat = out[0] - t["up"][0]
    dut._log.info("gatemul %s full_rate: %d results timed, %.3f elements/cycle sustained; first "
                  "result %d cycles after the first up element (analytic %d at the join)",
                  u.act, len(out), rate, lat, u.latency())
    assert rate >= 0.99, f"only {rate:.3f} elements per cycle"
    assert lat == u.latency(), f"latency {lat}, analytic {u.latency()}"
