# amaranth: UnusedElaboratable=no
"""cocotb testbench for the dyadic requantizer and the residual adder.

The configuration arrives as JSON in ``TRILUT_TB``: ``unit`` ("requant" or
"residual"), the unit's parameters, ``seed`` and ``break`` (a deliberately
wrong reference that rounds ties to even, as I-ViT's PyTorch code does, so
that the suite can show this testbench fails when the model is wrong).
Every test streams data with random idle gaps on the inputs and random
backpressure on ``out``; a scoreboard compares every output with golden
``requantize`` / ``residual_add`` exactly.
"""
import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from trilut.golden.quant import E_MAX, requantize, residual_add
from trilut.hw.requant import Requantizer, ResidualAdd
from trilut.sim.streams import StreamSink, StreamSource, payload_layout, reset, start_clock

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
UNITS = {"requant": Requantizer, "residual": ResidualAdd}


def _ties_to_even(v, m, e):
    """round(v * m / 2**e) with ties to even, in Python ints (the broken model)."""
    q, r = divmod(int(v) * int(m), 1 << int(e))
    half = 1 << (int(e) - 1)
    return q + (r > half or (r == half and q % 2 == 1))


def tie_inputs(m, e, lo_v, hi_v, targets, rng, count=8):
    """Values v in [lo_v, hi_v] with v * m exactly halfway between two
    multiples of 2**e (empty if m has too many factors of two)."""
    if m == 0:
        return []
    g = (m & -m).bit_length() - 1
    if g > e - 1:
        return []
    step, odd = 1 << (e - 1 - g), m >> g
    out = []
    for y in targets:   # (2t+1) * odd / 2 ~ y
        t = int(round(y / odd - 0.5))
        for dt in (-1, 0, 1):
            v = (2 * (t + dt) + 1) * step
            if lo_v <= v <= hi_v:
                out.append(v)
    for _ in range(count):
        t = rng.randrange(lo_v // (2 * step) - 1, hi_v // (2 * step) + 1)
        v = (2 * t + 1) * step
        if lo_v <= v <= hi_v:
            out.append(v)
    return out


class Bench:
    """Owns clock, reset, sources and sink of one unit."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        self.dut = dut
        self.unit = UNITS[CONFIG["unit"]](**CONFIG["params"])
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.broken = bool(CONFIG.get("break"))
        self.inputs = ["inp"] if CONFIG["unit"] == "requant" else ["x", "y"]
        self.src = {n: StreamSource(dut, n, dut.clk, payload_layout(self.unit, n),
                                    rng=self.rng, idle=idle) for n in self.inputs}
        self.out = StreamSink(dut, "out", dut.clk, payload_layout(self.unit, "out"),
                              rng=self.rng, stall=stall)
        if self.unit.channels > 1:
            self.param = StreamSource(dut, "param", dut.clk, payload_layout(self.unit, "param"),
                                      rng=self.rng, idle=idle)
        start_clock(dut)

    async def reset(self):
        await reset(self.dut)

    # --- constants ---------------------------------------------------------

    async def load(self, consts, num_channels=None):
        """Program the constants: a dict of field -> int (scalar ports) or of
        field -> per-channel array (table, ``num_channels`` entries used)."""
        if self.unit.channels == 1:
            for name, value in consts.items():
                sig = getattr(self.dut, name)
                sig.value = int(value) & ((1 << len(sig)) - 1)
            await RisingEdge(self.dut.clk)
        else:
            await self.param.send(self.unit.param_beats(**consts))
            self.dut.num_channels.value = num_channels or len(next(iter(consts.values())))
            await ClockCycles(self.dut.clk, 2)

    # --- reference ---------------------------------------------------------

    def channel_of(self, length, num_channels):
        """Channel index of each element of a row (wraps, restarts per row)."""
        return np.arange(length) % num_channels

    def model(self, rows, consts, num_channels):
        """Golden outputs (one array per row); ``break`` rounds ties to even."""
        u, out = self.unit, []
        for row in rows:
            row = np.asarray(row, dtype=np.int64)
            ch = self.channel_of(len(row), num_channels)
            c = {k: np.broadcast_to(np.asarray(v, dtype=np.int64), (num_channels,))[ch]
                 for k, v in consts.items()}
            if CONFIG["unit"] == "requant":
                y = requantize(row, c["m"], c["e"], bias=c["bias"], lo=u.lo, hi=u.hi,
                               m_bits=u.m_bits)
                if self.broken:
                    y = np.clip([_ties_to_even(v + b, mm, ee) for v, b, mm, ee in
                                 zip(row, c["bias"], c["m"], c["e"])], u.lo, u.hi)
            else:
                x, yv = row[:, 0], row[:, 1]
                y = residual_add(x, c["mx"], c["ex"], yv, c["my"], c["ey"], lo=u.lo, hi=u.hi,
                                 m_bits=u.m_bits)
                if self.broken:
                    y = np.clip([_ties_to_even(a, mx, ex) + _ties_to_even(b, my, ey)
                                 for a, b, mx, ex, my, ey in
                                 zip(x, yv, c["mx"], c["ex"], c["my"], c["ey"])], u.lo, u.hi)
            out.append(np.asarray(y, dtype=np.int64))
        return out

    # --- streaming ----------------------------------------------------------

    def _beats(self, rows):
        lanes = getattr(self.unit, "lanes", 1)
        if CONFIG["unit"] == "requant":
            beats = []
            for row in rows:
                assert len(row) % lanes == 0
                n = len(row) // lanes
                for i in range(n):
                    d = row[i * lanes:(i + 1) * lanes]
                    beats.append({"data": int(d[0]) if lanes == 1 else [int(v) for v in d],
                                  "last": int(i == n - 1)})
            return {"inp": beats}
        xs, ys = [], []
        for row in rows:
            for i, (x, y) in enumerate(row):
                xs.append({"data": int(x), "last": int(i == len(row) - 1)})
                ys.append({"data": int(y), "last": int(i == len(row) - 1)})
        return {"x": xs, "y": ys}

    async def run_rows(self, rows, consts, num_channels=1):
        """Stream ``rows`` (requant: lists of accumulators; residual: lists of
        (x, y) pairs), compare with the golden model, return the cycles from
        the first accepted input to the last output."""
        lanes = getattr(self.unit, "lanes", 1)
        beats = self._beats(rows)
        for name, bl in beats.items():
            self.src[name].first_accept = None
            cocotb.start_soon(self.src[name].send(bl))
        count = len(beats[self.inputs[0]])
        got_beats = await self.out.receive(count)
        cycles = (get_sim_time("ns") - self.src[self.inputs[0]].first_accept) / 10 + 1
        if lanes == 1:
            got = [int(b.data) for b in got_beats]
        else:
            got = [int(v) for b in got_beats for v in b.data]
        want = np.concatenate(self.model(rows, consts, num_channels))
        bad = np.flatnonzero(np.asarray(got) != want)
        flat = np.concatenate([np.asarray(r, dtype=np.int64).reshape(len(r), -1) for r in rows])
        assert len(bad) == 0, (
            f"{len(bad)} mismatches of {len(want)}; first at element {bad[0]} "
            f"(input {flat[bad[0]].tolist()}): hardware {got[bad[0]]}, golden {want[bad[0]]}")
        lasts = [int(b.last) for b in got_beats]
        want_lasts = [int(i == len(r) // lanes - 1) for r in rows for i in range(len(r) // lanes)]
        assert lasts == want_lasts, "out.last misplaced"
        assert int(self.dut.error.value) == 0, "error flag raised on a valid stream"
        return cycles

    # --- random data ----------------------------------------------------------

    def random_consts(self, n):
        """Random constants for ``n`` channels (or scalars for n == 1)."""
        u, rng = self.unit, self.rng
        mmax = (1 << u.m_bits) - 1

        def m():
            return rng.choice([rng.randrange(mmax + 1), rng.randrange(mmax // 2, mmax + 1),
                               mmax, rng.randrange(1, 8)])

        def e():
            return rng.choice([rng.randrange(1, E_MAX + 1), rng.randrange(10, 40),
                               rng.randrange(1, 8)])
        if CONFIG["unit"] == "requant":
            b = 1 << (u.bias_bits - 1)
            cols = {"m": [m() for _ in range(n)], "e": [e() for _ in range(n)],
                    "bias": [rng.choice([0, rng.randrange(-b, b), rng.randrange(-99, 100)])
                             for _ in range(n)]}
        else:
            cols = {"mx": [m() for _ in range(n)], "ex": [e() for _ in range(n)],
                    "my": [m() for _ in range(n)], "ey": [e() for _ in range(n)]}
        return {k: (v[0] if n == 1 else v) for k, v in cols.items()}

    def random_value(self, bits, consts, ch, field="m", efield="e"):
        """A random value of ``bits`` bits: uniform, small, or an exact tie."""
        rng, lo, hi = self.rng, -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        kind = rng.random()
        if kind < 0.4:
            return rng.randrange(lo, hi + 1)
        if kind < 0.6:
            return rng.randrange(-300, 301)
        mm = int(np.atleast_1d(consts[field])[ch % np.size(consts[field])])
        ee = int(np.atleast_1d(consts[efield])[ch % np.size(consts[efield])])
        bias = 0
        if "bias" in consts:
            bias = int(np.atleast_1d(consts["bias"])[ch % np.size(consts["bias"])])
        ties = tie_inputs(mm, ee, lo + bias, hi + bias, [0, 1, -1, 127, -128, 3000],
                          rng, count=2)
        if kind < 0.95 and ties:
            return rng.choice(ties) - bias
        # Around the output's clamp limits.
        u = self.unit
        target = rng.choice([u.hi, u.lo, u.hi + 1, u.lo - 1]) + rng.choice([-0.5, 0, 0.5])
        v = int(round(target * (1 << ee) / max(mm, 1))) - bias + rng.randrange(-2, 3)
        return min(max(v, lo), hi)

    def random_rows(self, consts, num_channels, count, max_len):
        lanes = getattr(self.unit, "lanes", 1)
        rows = []
        for _ in range(count):
            n = self.rng.randrange(1, max_len + 1) * lanes
            if CONFIG["unit"] == "requant":
                rows.append([self.random_value(self.unit.acc_bits, consts, i % num_channels)
                             for i in range(n)])
            else:
                rows.append([(self.random_value(self.unit.x_bits, consts, i % num_channels,
                                                "mx", "ex"),
                              self.random_value(self.unit.y_bits, consts, i % num_channels,
                                                "my", "ey")) for i in range(n)])
        return rows

    def num_channels_choices(self):
        u, lanes = self.unit, getattr(self.unit, "lanes", 1)
        if u.channels == 1:
            return [1]
        return sorted({u.channels, lanes, max(lanes, u.channels // 2 // lanes * lanes)})


@cocotb.test()
async def random_rows(dut):
    """Random constants (per channel where the unit has a table, with every
    table size from lanes to channels), random rows of random lengths
    (shorter and longer than num_channels), ties and clamp-limit values."""
    tb = Bench(dut)
    await tb.reset()
    for nch in tb.num_channels_choices():
        for _ in range(3):
            consts = tb.random_consts(nch)
            await tb.load(consts, nch)
            rows = tb.random_rows(consts, nch, 8, max(2 * nch + 3, 24))
            await tb.run_rows(rows, consts, nch)


@cocotb.test()
async def extreme_values(dut):
    """Full-range inputs at the extreme constants: m = 0, 1, 2**m_bits - 1;
    e = 1, 2, 15, 31, 47, 62; bias at its limits; exact ties of both signs;
    outputs one step around the clamp limits."""
    tb = Bench(dut)
    await tb.reset()
    u = tb.unit
    mmax = (1 << u.m_bits) - 1
    requant = CONFIG["unit"] == "requant"
    in_bits = u.acc_bits if requant else u.x_bits
    lo_v, hi_v = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    cases = [(mmax, 1), (mmax, 62), (1, 1), (3, 2), (0, 5), (mmax, 15), (1, 31),
             (mmax - 1, 47), (1 << (u.m_bits - 1), 16), (12345, 62)]
    for m, e in cases:
        if requant:
            b = (1 << (u.bias_bits - 1))
            for bias in (0, -b, b - 1):
                consts = {"m": m, "e": e, "bias": bias}
                vals = [lo_v, hi_v, 0, 1, -1, -bias if lo_v <= -bias <= hi_v else 0]
                vals += [v - bias for v in tie_inputs(m, e, lo_v + bias, hi_v + bias,
                                                      [0, 1, -1, 2, -2, u.hi, u.lo], tb.rng)]
                if m == 1 and e == 1:   # q around the clamp limits, ties included
                    vals += [v - bias for v in list(range(2 * u.lo - 4, 2 * u.lo + 5))
                             + list(range(2 * u.hi - 4, 2 * u.hi + 5))
                             if lo_v <= v - bias <= hi_v]
                nch = 1 if u.channels == 1 else u.lanes
                await tb.load({k: [v] * nch if nch > 1 else v for k, v in consts.items()}, nch)
                vals += [0] * (-len(vals) % u.lanes)
                await tb.run_rows([vals], consts, nch)
        else:
            ylo, yhi = -(1 << (u.y_bits - 1)), (1 << (u.y_bits - 1)) - 1
            consts = {"mx": m, "ex": e, "my": mmax - m, "ey": max(1, 63 - e) if e > 1 else 1}
            xs = [lo_v, hi_v, 0, 1, -1] + tie_inputs(m, e, lo_v, hi_v, [0, 1, -1, 2, -2,
                                                                       u.hi, u.lo], tb.rng)
            ys = [ylo, yhi, -1, 0, 1] + [tb.rng.randrange(ylo, yhi + 1) for _ in xs[5:]]
            pairs = list(zip(xs, ys))
            # Cancelling terms: the same constants on both sides, x = -y.
            pairs += [(-y, y) for y in (ylo + 1, yhi, 12345, -1, 1)]
            for c in (consts, {"mx": m, "ex": e, "my": m, "ey": e}):
                await tb.load({k: [v] if u.channels > 1 else v for k, v in c.items()}, 1)
                await tb.run_rows([pairs], c, 1)


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure the unit takes one beat per cycle: the
    measured beats per cycle over many rows (fill and drain included) must
    be >= 0.9."""
    tb = Bench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    u = tb.unit
    nch = u.channels
    consts = tb.random_consts(nch)
    await tb.load(consts, nch)
    rows = tb.random_rows(consts, nch, 40, 2 * nch + 24)
    cycles = await tb.run_rows(rows, consts, nch)
    lanes = getattr(u, "lanes", 1)
    beats = sum(len(r) for r in rows) // lanes
    dut._log.info("full_rate: %d beats (%d elements) in %d cycles: %.3f elements/cycle "
                  "(analytic %d cycles)", beats, beats * lanes, cycles,
                  beats * lanes / cycles, u.cycles(beats * lanes))
    assert beats / cycles >= 0.9, f"only {beats}/{cycles:.0f} beats per cycle"


@cocotb.test()
async def error_flag(dut):
    """A param table longer than ``channels`` (ResidualAdd: also ``last``
    differing between x and y) raises the sticky error flag; reset clears it."""
    tb = Bench(dut)
    u = tb.unit
    checked = False
    if u.channels > 1:
        await tb.reset()
        consts = tb.random_consts(u.channels)
        beats = [dict(b, last=0) for b in u.param_beats(**consts)]
        await tb.param.send(beats + beats[:1])
        await ClockCycles(dut.clk, 2)
        assert int(dut.error.value) == 1, "param table overflow not flagged"
        checked = True
    if CONFIG["unit"] == "residual":
        await tb.reset()
        assert int(dut.error.value) == 0
        await tb.load({k: [1] * u.channels if u.channels > 1 else 1
                       for k in ("mx", "ex", "my", "ey")}, 1)
        cocotb.start_soon(tb.src["x"].send([{"data": 1, "last": 1}]))
        cocotb.start_soon(tb.src["y"].send([{"data": 1, "last": 0}]))
        await tb.out.receive(1)
        assert int(dut.error.value) == 1, "x.last != y.last not flagged"
        checked = True
    await tb.reset()
    assert int(dut.error.value) == 0, "reset does not clear error"
    if not checked:
        dut._log.info("error_flag: no error condition for a scalar Requantizer")
