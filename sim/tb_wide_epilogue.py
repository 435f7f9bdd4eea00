# amaranth: UnusedElaboratable=no
"""cocotb testbench for the lanes-wide LINEAR epilogue (hw/epilogue.py).

The configuration arrives as JSON in ``TRILUT_TB``: the unit's parameters,
``seed`` and ``break`` (a deliberately wrong reference that indexes the
per-channel constants by lane instead of by output channel, the bug a
lanes-wide unit invites, so that the suite can show this testbench fails
when the model is wrong). Every test but ``full_rate`` streams beats with
random idle gaps on ``inp`` and random backpressure on ``out``; a
scoreboard compares every result with golden ``requantize_rows`` exactly.
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from trilut.golden.dynquant import requantize_rows
from trilut.golden.quant import E_MAX
from trilut.hw.wide_epilogue import LinearEpilogue
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))


class Bench:
    """Owns clock, reset, the ``inp`` and ``param`` sources and the sink."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.unit = LinearEpilogue(**CONFIG["params"])
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.inp = StreamSource(dut, "inp", dut.clk, payload_layout(self.unit, "inp"),
                                rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(self.unit, "out"),
                              rng=self.rng, stall=stall)
        self.param = StreamSource(dut, "param", dut.clk, payload_layout(self.unit, "param"),
                                  rng=self.rng, idle=idle)
        start_clock(dut)

    async def reset(self):
        await reset(self.dut)

    async def load(self, consts, narrow):
        """Program the per-channel arrays and the clamp."""
        self.dut.narrow.value = int(narrow)
        await self.param.send(self.unit.param_beats(**consts))
        self.dut.num_channels.value = len(consts["m"])
        await ClockCycles(self.dut.clk, 2)

    def model(self, acc, absmax, consts, narrow):
        """Golden results, rows of N = num_channels * blocks."""
        n = acc.shape[1]
        ch = np.arange(n) % len(consts["m"])
        if CONFIG.get("break"):
            ch = np.arange(n) % self.unit.lanes % len(consts["m"])
        c = {k: np.asarray(v, dtype=np.int64)[ch] for k, v in consts.items()}
        lo, hi = self.unit.bounds(narrow)
        return requantize_rows(acc, absmax[:, None], c["m"], c["e"], c["bias"], lo, hi,
                               m_bits=self.unit.m_bits)

    async def run_rows(self, acc, absmax, consts, narrow):
        """Stream rows ``acc`` (rows, N) with their ``absmax``; compare.
        Returns cycles from the first beat taken to the last result."""
        u = self.unit
        rows, n = acc.shape
        blocks = n // u.lanes
        beats = [{"data": [int(v) for v in acc[r, b * u.lanes:(b + 1) * u.lanes]],
                  "absmax": int(absmax[r]), "last": int(b == blocks - 1)}
                 for r in range(rows) for b in range(blocks)]
        self.inp.first_accept = None
        cocotb.start_soon(self.inp.send(beats))
        got_beats = await self.out.receive(len(beats))
        cycles = (get_sim_time("ns") - self.inp.first_accept) / 10 + 1
        got = np.array([[int(v) for v in b.data] for b in got_beats]).reshape(rows, n)
        want = self.model(acc, absmax, consts, narrow)
        bad = np.argwhere(got != want)
        assert len(bad) == 0, (
            f"{len(bad)} mismatches of {want.size}; first at row {bad[0][0]}, channel "
            f"{bad[0][1]} (acc {acc[tuple(bad[0])]}, absmax {absmax[bad[0][0]]}): "
            f"hardware {got[tuple(bad[0])]}, golden {want[tuple(bad[0])]}")
        assert [int(b.last) for b in got_beats] == [b["last"] for b in beats], \
            "out.last misplaced"
        assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        return cycles

    # --- random data ----------------------------------------------------------

    def num_channels(self):
        u = self.unit
        return self.rng.randrange(1, u.channels // u.lanes + 1) * u.lanes

    def random_consts(self, nch):
        u, rng = self.unit, self.rng
        mmax, b = (1 << u.m_bits) - 1, 1 << (u.bias_bits - 1)
        return {"m": [rng.choice([rng.randrange(mmax + 1), mmax, rng.randrange(1, 8), 0])
                      for _ in range(nch)],
                "e": [rng.choice([rng.randrange(1, E_MAX + 1), rng.randrange(20, 44),
                                  rng.randrange(1, 8)]) for _ in range(nch)],
                "bias": [rng.choice([0, rng.randrange(-b, b), rng.randrange(-999, 1000)])
                         for _ in range(nch)]}

    def random_case(self, rows, nch):
        """Accumulators uniform, small, or at the extremes; absmax from 0 to
        its largest value, ``2**(scale_bits - 1)`` (the absmax of a signed
        row of that width; golden's int64 products need no more)."""
        u, rng = self.unit, self.rng
        lo, hi = -(1 << (u.acc_bits - 1)), (1 << (u.acc_bits - 1)) - 1
        n = nch
        acc = np.array([[rng.choice([rng.randrange(lo, hi + 1), rng.randrange(-3000, 3001),
                                     lo, hi]) for _ in range(n)] for _ in range(rows)],
                       dtype=np.int64)
        amax = 1 << (u.scale_bits - 1)
        absmax = np.array([rng.choice([1, 0, amax, rng.randrange(amax + 1)])
                           for _ in range(rows)], dtype=np.int64)
        return acc, absmax


@cocotb.test()
async def random_rows(dut):
    """Random constants and table sizes, random rows, both clamps."""
    tb = Bench(dut)
    await tb.reset()
    for narrow in (0, 1, 0):
        nch = tb.num_channels()
        consts = tb.random_consts(nch)
        await tb.load(consts, narrow)
        await tb.run_rows(*tb.random_case(6, nch), consts, narrow)


@cocotb.test()
async def extreme_values(dut):
    """acc at both ends of its range, absmax 0 and largest, m 0 and
    maximal, e 1 and E_MAX, the bias at both ends."""
    tb = Bench(dut)
    await tb.reset()
    u = tb.unit
    nch = u.channels
    lo, hi = -(1 << (u.acc_bits - 1)), (1 << (u.acc_bits - 1)) - 1
    b = 1 << (u.bias_bits - 1)
    for m, e, bias in (((1 << u.m_bits) - 1, 1, b - 1), ((1 << u.m_bits) - 1, E_MAX, -b),
                       (0, 1, 0), (1, 1, -b)):
        consts = {"m": [m] * nch, "e": [e] * nch, "bias": [bias] * nch}
        for narrow in (0, 1):
            await tb.load(consts, narrow)
            n = nch
            acc = np.array([[lo] * n, [hi] * n, [lo, hi] * (n // 2) + [lo] * (n % 2)])
            absmax = np.array([1 << (u.scale_bits - 1), 1 << (u.scale_bits - 1), 0])
            await tb.run_rows(acc, absmax, consts, narrow)


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure: one beat (lanes results) per cycle,
    within 2 cycles of the analytic cycles()."""
    tb = Bench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    nch = tb.unit.channels
    consts = tb.random_consts(nch)
    await tb.load(consts, 0)
    acc, absmax = tb.random_case(32, nch)
    cycles = await tb.run_rows(acc, absmax, consts, 0)
    beats = acc.size // tb.unit.lanes
    dut._log.info("full_rate: %d beats (%d results) in %d cycles", beats, acc.size, cycles)
    assert abs(cycles - tb.unit.cycles(beats)) <= 2, \
        f"{cycles} cycles, analytic {tb.unit.cycles(beats)}"


@cocotb.test()
async def table_overflow(dut):
    """More param beats than channels raise the sticky error flag."""
    tb = Bench(dut)
    await tb.reset()
    u = tb.unit
    beats = u.param_beats(m=[1] * u.channels, e=[1] * u.channels, bias=[0] * u.channels)
    extra = [dict(b, last=0) for b in beats] + [beats[-1]]
    await tb.param.send(extra)
    await ClockCycles(dut.clk, 2)
    assert int(dut.error.value) == 1, "table overflow not flagged"


def run(params, *, seed=1, broken=False, testcase=None):
    """Host side: build (cached) and run this testbench on Verilator.
    Raises ``SimFailure`` on any mismatch; returns the tests passed."""
    from ..gen.verilog import generate_verilog
    from .runner import run_cocotb
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = "wide_epilogue-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return run_cocotb(generate_verilog(LinearEpilogue(**params), "wide_epilogue"), "wide_epilogue",
                      __name__, name=name + ("-broken" if broken else ""), env=env,
                      testcase=testcase)
