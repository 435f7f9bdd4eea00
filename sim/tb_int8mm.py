# amaranth: UnusedElaboratable=no
"""cocotb testbench for the int8 x int8 engine (:class:`trilut.hw.int8mm.Int8Engine`).

The configuration arrives as JSON in ``TRILUT_TB`` (engine parameters,
seed; ``break`` selects a deliberately wrong reference: the raw engine's
model drops the last k-block of each row, the requantizing engine's model
rounds ties to even). Every test streams rows with random idle gaps on
``act``, ``wgt`` and ``param`` and random backpressure on ``out``; a
scoreboard compares every output with the exact int64 product (then golden
``requantize``) integer for integer.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from trilut.golden.quant import E_MAX
from trilut.hw.int8mm import Int8Engine
from trilut.sim.tb_matmul import MatmulBench
from trilut.sim.streams import StreamSource, payload_layout
from trilut.sim.tb_requant import _ties_to_even, tie_inputs

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))


class Int8Bench(MatmulBench):
    """The ternary engines' bench (streams, clock, row checker) around an
    Int8Engine, plus the requantizer's constants."""

    def __init__(self, dut, *, idle=0.3, stall=0.3):
        super().__init__(dut, Int8Engine(**CONFIG["params"]), idle=idle, stall=stall)
        e = self.engine
        if e.requant and e.channels > 1:
            self.param = StreamSource(dut, "param", dut.clk, payload_layout(e, "param"),
                                      rng=self.rng, idle=idle)
        self.consts = None

    def num_channels(self, n):
        """Table entries used for N = n outputs (1 for scalar constants)."""
        e = self.engine
        return min(n, e.channels) if e.requant and e.channels > 1 else 1

    async def load(self, m, e, bias, n):
        """Requantizer constants for N = n outputs: scalars, or per-channel
        arrays (broadcast to ``num_channels(n)`` entries; column j uses entry
        j % num_channels)."""
        eng = self.engine
        nch = self.num_channels(n)
        m, e, bias = (np.broadcast_to(np.asarray(v, dtype=np.int64), (nch,)) for v in
                      (m, e, bias))
        if eng.channels == 1:
            for name, value in (("m", m), ("e", e), ("bias", bias)):
                sig = getattr(self.dut, name)
                sig.value = int(value[0]) & ((1 << len(sig)) - 1)
            await RisingEdge(self.dut.clk)
        else:
            await self.param.send(eng.param_beats(m, e, bias))
            self.dut.num_channels.value = nch
            await ClockCycles(self.dut.clk, 2)
        self.consts = (m, e, bias)

    def model(self, a, w):
        """The reference; ``break`` corrupts it (see the module docstring)."""
        e = self.engine
        if not e.requant:
            if CONFIG.get("break"):
                w = w.copy()
                w[(len(w) - 1) // e.k_block * e.k_block:] = 0
            return e.model(a, w)
        cols = np.arange(w.shape[1]) % len(self.consts[0])
        m, ex, bias = (c[cols] for c in self.consts)
        if not CONFIG.get("break"):
            return e.model(a, w, m, ex, bias)
        acc = np.asarray(a, dtype=np.int64) @ np.asarray(w, dtype=np.int64)
        return np.clip([[_ties_to_even(v + bias[j], m[j], ex[j]) for j, v in enumerate(row)]
                        for row in acc], -(1 << (e.out_bits - 1)), (1 << (e.out_bits - 1)) - 1)

    def random_case(self, rows, k, n):
        a = self.np_rng.integers(-128, 128, size=(rows, k))
        w = self.np_rng.integers(-128, 128, size=(k, n))
        return a, w

    def random_consts(self, n):
        """Random requantizer constants for N = n outputs that keep results
        mostly inside the output range (plus some saturating ones)."""
        e = self.engine
        if not e.requant:
            return None
        mmax = (1 << e.m_bits) - 1
        b = 1 << (e.bias_bits - 1)
        count = self.num_channels(n)
        m = [self.rng.choice([self.rng.randrange(mmax // 2, mmax + 1), mmax, 1, 3])
             for _ in range(count)]
        ex = [self.rng.choice([self.rng.randrange(18, 30), self.rng.randrange(1, E_MAX + 1)])
              for _ in range(count)]
        bias = [self.rng.choice([0, self.rng.randrange(-5000, 5000),
                                 self.rng.randrange(-b, b)]) for _ in range(count)]
        return m, ex, bias


def _n(e, blocks):
    return e.lanes * blocks


async def _with_consts(tb, n):
    c = tb.random_consts(n)
    if c is not None:
        await tb.load(*c, n)


@cocotb.test()
async def random_rows(dut):
    """Random rows of every length from 1 to max_k, random weights, random
    requantizer constants (per channel where the engine has a table)."""
    tb = Int8Bench(dut)
    await tb.reset()
    e = tb.engine
    for k in sorted({1, max(1, e.k_block - 1), e.k_block, e.k_block + 1, e.max_k}):
        k = min(k, e.max_k)
        n = _n(e, 3)
        await _with_consts(tb, n)
        a, w = tb.random_case(3, k, n)
        await tb.run_rows(a, w)


@cocotb.test()
async def extreme_values(dut):
    """-128 everywhere against all -128 / all +127 / zero weights, +127
    against -128, one-hot rows; with the requantizer: m = 2**m_bits - 1 and
    e = 1 (saturating), large e, exact ties of both signs, bias limits."""
    tb = Int8Bench(dut)
    await tb.reset()
    e = tb.engine
    k, n = e.max_k, _n(e, 2)
    mmax = (1 << (e.m_bits or 16)) - 1
    consts = [(1, 1, 0)]
    if e.requant:
        b = 1 << (e.bias_bits - 1)
        consts = [(mmax, 1, 0), (1, 1, 0), (3, 2, -b), (mmax, E_MAX, b - 1), (1, 20, 0),
                  (0, 7, 5), (mmax, 24, 0)]
    full = np.full((2, k), -128)
    for c in consts:
        if e.requant:
            await tb.load(*c, n)
        for wv in (-128, 127, 0):
            await tb.run_rows(full, np.full((k, n), wv))
        await tb.run_rows(np.full((2, k), 127), np.full((k, n), -128))
    onehot = np.zeros((min(k, 4), k), dtype=np.int64)
    for i in range(len(onehot)):
        onehot[i, (i * 7) % k] = 127 if i % 2 else -128
    await tb.run_rows(onehot, tb.random_case(1, k, n)[1])
    if e.requant:
        # Exact ties of both signs: acc = a[0] * w[0, n] with a one-hot row.
        m, ex = 3, 4
        await tb.load(m, ex, 0, n)
        ties = [v for v in tie_inputs(m, ex, -128 * 127, 128 * 128, [0, 1, -1, 50, -50, 127,
                                                                     -128], tb.rng) if v]
        for t in ties:
            # Factor t = a * w with a, w in int8 where possible.
            for av in range(1, 129):
                if t % av == 0 and -128 <= t // av <= 127:
                    a = np.zeros((1, k), dtype=np.int64)
                    a[0, 0] = av if av < 128 else -128
                    wv = t // av if av < 128 else -(t // av)
                    w = tb.random_case(1, k, n)[1]
                    w[0, :] = wv
                    w[1:, :] = tb.np_rng.integers(-128, 128, size=(k - 1, n))
                    await tb.run_rows(a, w)
                    break


@cocotb.test()
async def full_rate(dut):
    """Without gaps or backpressure rows stream at one weight beat per
    cycle (>= 90% including the pipeline drain); logs MACs per cycle."""
    tb = Int8Bench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    e = tb.engine
    k, blocks = e.max_k, 16
    rows = max(8, -(-600 // (blocks * e.k_blocks)))     # >= 600 weight beats
    await _with_consts(tb, _n(e, blocks))
    a, w = tb.random_case(rows, k, _n(e, blocks))
    cycles = await tb.run_rows(a, w)
    beats = len(a) * blocks * e.k_blocks
    macs = beats * e.macs_per_cycle
    dut._log.info("full_rate: %d weight beats, %d MACs in %d cycles: %.1f%% of peak, "
                  "%.1f MACs/cycle (analytic %d cycles)", beats, macs, cycles,
                  100 * beats / cycles, macs / cycles,
                  e.cycles(len(a), k, _n(e, blocks)))
    assert beats / cycles >= 0.9, f"only {beats}/{cycles:.0f} beats per cycle"


@cocotb.test()
async def error_flag(dut):
    """A row longer than max_k, a weight block with the wrong number of
    k-blocks, or (per-channel requantizer) a param table overflow raises the
    sticky error flag; reset clears it."""
    tb = Int8Bench(dut)
    e = tb.engine
    await _with_consts(tb, _n(e, 1))
    await tb.check_kblock_mismatch()
    if e.requant and e.channels > 1:
        await tb.reset()
        m, ex, bias = tb.random_consts(e.channels)
        beats = [dict(b, last=0) for b in e.param_beats(m, ex, bias)]
        assert len(beats) == e.channels
        await tb.param.send(beats + beats[:1])
        await ClockCycles(dut.clk, 2)
        assert int(dut.error.value) == 1, "param table overflow not flagged"
    await tb.check_overlong_row()
