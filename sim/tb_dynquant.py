# amaranth: UnusedElaboratable=no
"""cocotb testbench for per-token dynamic quantization (hw/dynquant.py):
the :class:`DynQuant` row unit and the :class:`RowScaleRequantizer` after
the next linear layer.

The configuration arrives as JSON in ``TRILUT_TB``: ``unit`` ("dynquant" or
"rowscale"), ``params`` (the unit's keyword arguments), ``seed`` and
``break`` (a deliberately wrong reference: DynQuant truncates ``x * r >> F``
instead of rounding half up; RowScaleRequantizer forgets the row's absmax).
Every test streams with random idle gaps on the inputs and random
backpressure on ``out`` (except the throughput tests), and the scoreboard
compares every output, ``last`` flag and carried ``absmax`` with
``trilut.golden.dynquant`` exactly. The pytest side picks the tests of one
unit with ``testcase`` (``DYNQUANT_TESTS`` / ``ROWSCALE_TESTS``).
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from trilut.golden.dynquant import requantize_rows, row_absmax, row_multiplier, row_quantize
from trilut.golden.quant import E_MAX, requantize
from trilut.hw.dynquant import DynQuant, RowScaleRequantizer
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock
from trilut.sim.tb_shiftmax import (PERIOD_NS, RowBench, check_extreme_rows, check_full_rate,
                                    check_overlong_row, check_random_rows)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
DYNQUANT_TESTS = ["dq_random_rows", "dq_extreme_rows", "dq_overlong_row", "dq_full_rate"]
ROWSCALE_TESTS = ["rs_random_rows", "rs_extreme_values", "rs_full_rate"]


# --- DynQuant -------------------------------------------------------------------

class RecordingSink(StreamSink):
    """A StreamSink that keeps the beats of its last ``receive``."""

    async def receive(self, count, **kw):
        self.beats = await super().receive(count, **kw)
        return self.beats


class DynQuantBench(RowBench):
    """RowBench (tb_shiftmax) for a unit without x0: the scale argument is
    ignored, and every output beat's ``absmax`` is checked too."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        unit = DynQuant(**CONFIG["params"])
        super().__init__(dut, unit, self._model, lambda scale: None,
                         idle=idle, stall=stall, seed=CONFIG.get("seed", 1))
        self.out = RecordingSink(dut, "out", dut.clk, payload_layout(unit, "out"),
                                 rng=self.rng, stall=stall)

    def _model(self, row, scale):
        u = self.unit
        if CONFIG.get("break"):   # wrong on purpose: truncates instead of rounding
            r = row_multiplier(row_absmax(row, u.in_bits), u.frac_bits)
            return (row * r) >> u.frac_bits
        return row_quantize(row, u.in_bits, u.frac_bits)[0].astype(np.int64)

    def set_scale(self, scale):
        pass

    async def run_rows(self, rows, scale=None, **kw):
        count = await super().run_rows(rows, scale, **kw)
        pos = 0
        for n_row, row in enumerate(rows):
            row = np.asarray(row[:self.unit.max_len], dtype=np.int64)
            want = int(row_absmax(row, self.unit.in_bits)[0])
            got = {int(b.absmax) for b in self.out.beats[pos:pos + len(row)]}
            assert got == {want}, f"absmax of row {n_row}: hardware {got}, golden {want}"
            pos += len(row)
        return count

    def magnitude_rows(self, count):
        """Rows of random length whose absmax spans every magnitude (1 .. 2^(in_bits-1)),
        including tiny ranges (absmax 1..4: exact rounding ties)."""
        rows = []
        for _ in range(count):
            bits = int(self.np_rng.integers(1, self.unit.in_bits))
            lo, hi = -(1 << (bits - 1)) if bits > 1 else -2, (1 << (bits - 1)) if bits > 1 else 2
            n = int(self.np_rng.integers(1, self.unit.max_len + 1))
            rows.append(np.clip(self.np_rng.integers(lo, hi + 1, size=n), self.lo, self.hi))
        return rows


@cocotb.test()
async def dq_random_rows(dut):
    """Rows of lengths 1, 2, random and max_len, bursts of short rows (every
    slot and the divider queue fill behind backpressure), every magnitude."""
    tb = DynQuantBench(dut)
    await tb.reset()
    await check_random_rows(tb, [None])
    await tb.run_rows(tb.magnitude_rows(24))
    assert int(dut.error.value) == 0


@cocotb.test()
async def dq_extreme_rows(dut):
    """All equal, all -2^(in_bits-1), all max, alternating, one-hot, one-cold
    (tb_shiftmax's set), plus all-zero rows, +-1 one-hot and absmax 1..3 rows
    (ties), at lengths 1, 2 and max_len."""
    tb = DynQuantBench(dut)
    await tb.reset()
    await check_extreme_rows(tb, [None])
    for length in sorted({1, 2, tb.unit.max_len}):
        idx = np.arange(length)
        rows = [np.zeros(length, np.int64), np.where(idx == length - 1, -1, 0),
                np.where(idx == 0, 1, 0), idx % 3 - 1, (idx % 5) - 2, np.full(length, -3),
                np.where(idx % 2 == 0, tb.lo, 0)]
        await tb.run_rows(rows)
    assert int(dut.error.value) == 0


@cocotb.test()
async def dq_overlong_row(dut):
    tb = DynQuantBench(dut)
    await tb.reset()
    await check_overlong_row(tb, None)


@cocotb.test()
async def dq_full_rate(dut):
    """No gaps, no backpressure: the documented latency for one row, >= 0.9
    elements/cycle over 8 rows of max_len (max_len >= the divide interval),
    and the rate of short rows (one divide per row)."""
    tb = DynQuantBench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    await tb.run_rows([tb.random_row(5)])
    measured = tb.out_times[0] - tb.in_times[-1]
    dut._log.info("latency: first output %d cycles after the last input (documented %d)",
                  measured, tb.unit.latency)
    assert measured == tb.unit.latency, f"latency {measured} != documented {tb.unit.latency}"
    if tb.unit.max_len >= tb.unit.divide_interval:
        await check_full_rate(tb, None, 8)
    for length in (1, 8):
        rows = 8
        await tb.run_rows([tb.random_row(length) for _ in range(rows)])
        period = (tb.out_times[-1] - tb.out_times[0] + 1 - length) / (rows - 1)
        dut._log.info("short rows: %d rows of %d: one row per %.1f cycles, %.3f elements/cycle",
                      rows, length, period, length / period)
        assert period <= tb.unit.divide_interval + 1


# --- RowScaleRequantizer --------------------------------------------------------

class RowScaleBench:
    """Owns clock, reset, ``inp``/``param`` sources and the ``out`` sink of a
    RowScaleRequantizer; compares with golden ``requantize_rows``."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.unit = u = RowScaleRequantizer(**CONFIG["params"])
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.inp = StreamSource(dut, "inp", dut.clk, payload_layout(u, "inp"),
                                rng=self.rng, idle=idle)
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(u, "out"),
                              rng=self.rng, stall=stall)
        if u.channels > 1:
            self.param = StreamSource(dut, "param", dut.clk, payload_layout(u, "param"),
                                      rng=self.rng, idle=idle)
        self.lo, self.hi = -(1 << (u.out_bits - 1)), (1 << (u.out_bits - 1)) - 1
        start_clock(dut, PERIOD_NS)

    async def load(self, consts, nch):
        """Scalar ports (channels == 1) or the per-channel table via ``param``."""
        if self.unit.channels == 1:
            for name, value in consts.items():
                getattr(self.dut, name).value = int(np.atleast_1d(value)[0])
            await RisingEdge(self.dut.clk)
        else:
            await self.param.send(self.unit.param_beats(**consts))
            self.dut.num_channels.value = nch
            await ClockCycles(self.dut.clk, 2)

    def model(self, acc, a, consts, nch):
        ch = np.arange(len(acc)) % nch
        c = {k: np.asarray(v, dtype=np.int64)[ch] for k, v in consts.items()}
        if CONFIG.get("break"):   # wrong on purpose: the row's absmax is forgotten
            return requantize(acc, c["m"], c["e"], c["bias"], self.lo, self.hi,
                              self.unit.m_bits)
        return requantize_rows(acc[None], np.array([[a]]), c["m"], c["e"], c["bias"],
                               self.lo, self.hi, self.unit.m_bits)[0]

    async def run_rows(self, rows, consts, nch):
        """``rows``: (acc list, absmax) pairs. Returns elements per cycle
        (first accepted input to last output)."""
        beats = [{"data": int(v), "absmax": int(a), "last": int(i == len(acc) - 1)}
                 for acc, a in rows for i, v in enumerate(acc)]
        self.inp.first_accept = None
        cocotb.start_soon(self.inp.send(beats))
        got = await self.out.receive(len(beats))
        cycles = (get_sim_time("ns") - self.inp.first_accept) / PERIOD_NS + 1
        pos = 0
        for n_row, (acc, a) in enumerate(rows):
            acc = np.asarray(acc, dtype=np.int64)
            want = self.model(acc, a, consts, nch)
            hw = np.array([int(b.data) for b in got[pos:pos + len(acc)]])
            bad = np.flatnonzero(hw != want)
            assert len(bad) == 0, (
                f"{len(bad)} mismatches in row {n_row} (absmax {a}); first at element "
                f"{bad[0]}: acc {acc[bad[0]]}, hardware {hw[bad[0]]}, golden {want[bad[0]]}")
            lasts = [int(b.last) for b in got[pos:pos + len(acc)]]
            assert lasts == [0] * (len(acc) - 1) + [1], f"out.last misplaced in row {n_row}"
            pos += len(acc)
        assert int(self.dut.error.value) == 0
        return len(beats) / cycles

    def random_consts(self, nch):
        u, rng = self.unit, self.rng
        mmax, b = (1 << u.m_bits) - 1, 1 << (u.bias_bits - 1)
        return {"m": [rng.choice([rng.randrange(mmax + 1), mmax, rng.randrange(1, 8)])
                      for _ in range(nch)],
                "e": [rng.choice([rng.randrange(1, E_MAX + 1), rng.randrange(20, 50)])
                      for _ in range(nch)],
                "bias": [rng.choice([0, rng.randrange(-b, b), rng.randrange(-99, 100)])
                         for _ in range(nch)]}

    def random_rows(self, count, max_len):
        u, rng = self.unit, self.rng
        amax, alo = 1 << (u.scale_bits - 1), -(1 << (u.acc_bits - 1))
        rows = []
        for _ in range(count):
            a = rng.choice([0, 1, amax, rng.randrange(amax + 1), rng.randrange(1, 300)])
            bits = rng.randrange(2, u.acc_bits + 1)
            acc = [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1))
                   for _ in range(rng.randrange(1, max_len + 1))]
            rows.append((acc, a))
        rows.append(([alo, -alo - 1, 0, -1, 1], amax))
        return rows

    def channel_counts(self):
        c = self.unit.channels
        return sorted({1, c, max(1, c // 2)}) if c > 1 else [1]


@cocotb.test()
async def rs_random_rows(dut):
    """Random constants per table size, random rows of random lengths
    (shorter and longer than the table), every absmax magnitude and 0."""
    tb = RowScaleBench(dut)
    await reset(dut)
    for nch in tb.channel_counts():
        for _ in range(3):
            consts = tb.random_consts(nch)
            await tb.load(consts, nch)
            await tb.run_rows(tb.random_rows(10, 2 * nch + 9), consts, nch)


@cocotb.test()
async def rs_extreme_values(dut):
    """The widest product (acc = -2^(acc_bits-1), absmax = 2^(scale_bits-1)),
    m = 0 and 2^m_bits - 1, e = 1, 30 and 62, bias at both ends."""
    tb = RowScaleBench(dut)
    await reset(dut)
    u = tb.unit
    nch = u.channels
    alo, ahi = -(1 << (u.acc_bits - 1)), (1 << (u.acc_bits - 1)) - 1
    amax, mmax = 1 << (u.scale_bits - 1), (1 << u.m_bits) - 1
    blo, bhi = -(1 << (u.bias_bits - 1)), (1 << (u.bias_bits - 1)) - 1
    for m in (mmax, 0, 1):
        for e in (1, 30, E_MAX):
            for bias in (0, blo, bhi):
                consts = {"m": [m] * nch, "e": [e] * nch, "bias": [bias] * nch}
                await tb.load(consts, nch)
                rows = [([alo, ahi, 0, -1, 1, alo], amax), ([alo, ahi, 7], 0),
                        ([ahi, alo, -5], 1), ([3, -3, 1000], amax - 1)]
                await tb.run_rows(rows, consts, nch)


@cocotb.test()
async def rs_full_rate(dut):
    """No gaps, no backpressure: one beat per cycle over 512 beats (>= 0.9)."""
    tb = RowScaleBench(dut, idle=0.0, stall=0.0)
    await reset(dut)
    nch = tb.unit.channels
    consts = tb.random_consts(nch)
    await tb.load(consts, nch)
    rows = [([tb.rng.randrange(-1000, 1000) for _ in range(64)], tb.rng.randrange(1, 999))
            for _ in range(8)]
    rate = await tb.run_rows(rows, consts, nch)
    dut._log.info("full_rate: %.3f beats/cycle end to end (latency %d)", rate,
                  tb.unit.latency)
    assert rate >= 0.9, f"only {rate:.3f} beats/cycle"
