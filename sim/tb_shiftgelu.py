"""cocotb testbench for the streaming ShiftGELU unit (hw/shiftgelu.py).

The configuration arrives as JSON in ``TRILUT_TB``: ``params`` (ShiftGELU
keyword arguments), ``seed`` and ``break`` (a deliberately wrong reference:
the sigmoid rounds half up, ``(e1 * f + 2^(k-1)) >> k``, instead of
truncating, so that the suite can show this testbench fails when the model is
wrong). Every test streams rows with random idle gaps on ``inp`` and random
backpressure on ``out`` (except the throughput and latency tests), and the
scoreboard compares every output and ``last`` flag with
``trilut.golden.nonlinear.shiftgelu`` exactly. The test bodies are shared
with the Shiftmax testbench (:mod:`trilut.sim.tb_shiftmax`).
"""
import json
import os

import cocotb
import numpy as np

from trilut.golden import nonlinear as nl
from trilut.hw.shiftgelu import ShiftGELU
from trilut.sim.tb_shiftmax import (SCALES, RowBench, check_bad_x0, check_extreme_rows,
                                    check_full_rate, check_latency, check_overlong_row,
                                    check_random_rows)

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
# x0 = floor(-1 / (1.702 s)): -1 at s = 1 and the largest valid |x0|
# ((2^31 - 1) >> n: 255 at n = 23, 32767 at n = 16) at s = 1 / (1.702 (|x0| - 0.5)).


def extreme_scales(unit):
    a_max = nl.INT32_MAX >> unit.n
    return [2.0**-2, 2.0**-5, 1.0, 1 / (nl.GELU_SLOPE * (a_max - 0.5))]


def scales(unit):
    """2^-2..2^-5 and 1/12.7 (x0 = -3, -5, -10, -19, -8); int16 inputs in the
    accurate mode also get 2^-10 and 2^-14 (x0 = -602, -9627)."""
    return SCALES + ([2.0**-10, 2.0**-14] if unit.in_bits > 8 else [])


def gelu_x0(scale):
    return nl.iexp_x0(nl.GELU_SLOPE * scale)


def shiftgelu_bench(dut, **kw):
    unit = ShiftGELU(**CONFIG["params"])

    def model(row, scale):
        if CONFIG.get("break"):
            # Wrong on purpose: round half up in the sigmoid's final shift.
            x0, n, k = gelu_x0(scale), unit.n, 32 - unit.sig_bits
            mx = row.max() if unit.mode == "ivit" else np.maximum(row, 0)
            e1 = nl._iexp(row - mx, x0, n)
            e2 = np.minimum(nl._iexp(-mx + 0 * row, x0, n), nl.INT32_MAX)
            f = nl.INT32_MAX // np.minimum(e1 + e2, nl.INT32_MAX)
            return row * ((e1 * f + (1 << (k - 1))) >> k)
        return nl.shiftgelu(row, scale, n=unit.n, sig_bits=unit.sig_bits, mode=unit.mode)

    return RowBench(dut, unit, model, gelu_x0, seed=CONFIG.get("seed", 1), **kw)


@cocotb.test()
async def random_rows(dut):
    """Random rows of lengths 1, 2, random and max_len at scales 2^-2..2^-5 and 1/12.7."""
    tb = shiftgelu_bench(dut)
    await tb.reset()
    await check_random_rows(tb, scales(tb.unit))


@cocotb.test()
async def extreme_rows(dut):
    """All equal, all -128 (negative row max: saturating e2), all +127,
    alternating, one-hot and one-cold rows, at x0 = -3, -19, -1 and -255."""
    tb = shiftgelu_bench(dut)
    await tb.reset()
    await check_extreme_rows(tb, extreme_scales(tb.unit))


@cocotb.test()
async def negative_rows(dut):
    """Rows whose max is negative ("ivit": e2 = IEXP(-m) with -m > 0, shifts
    beyond n, saturation), small ones included."""
    tb = shiftgelu_bench(dut)
    await tb.reset()
    for scale in scales(tb.unit) + [1.0]:
        rows = [-np.abs(tb.random_row(n)) - int(tb.np_rng.integers(1, 100)) for n in tb.lengths()]
        rows = [np.maximum(r, tb.lo) for r in rows]
        rows += [np.full(3, -k) for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 128)]
        rows += [np.maximum([-k, -k - 1, -2 * k], tb.lo) for k in (1, 4, 16, 100)]
        await tb.run_rows(rows, scale)


@cocotb.test()
async def overlong_row(dut):
    tb = shiftgelu_bench(dut)
    await tb.reset()
    await check_overlong_row(tb, SCALES[1])


@cocotb.test()
async def bad_x0(dut):
    """x0 = -256 breaks |x0| 2^23 <= 2^31 - 1 at n = 23 (and x0 = 0 always)."""
    tb = shiftgelu_bench(dut)
    await check_bad_x0(tb, 0, SCALES[0])
    await check_bad_x0(tb, -((nl.INT32_MAX >> tb.unit.n) + 1), SCALES[0])


@cocotb.test()
async def full_rate(dut):
    """Zero-stall throughput over 8 rows of max_len (>= 0.9 elements/cycle),
    latency of one row, and back-to-back short rows."""
    tb = shiftgelu_bench(dut, idle=0.0, stall=0.0)
    await tb.reset()
    await check_latency(tb, SCALES[2], tb.unit.max_len)
    if tb.unit.max_len >= 64:
        await check_full_rate(tb, SCALES[2], 8)
    for length in (1, 8):
        rows = 8
        await tb.run_rows([tb.random_row(length) for _ in range(rows)], SCALES[2])
        rate = rows * length / (tb.out_times[-1] - tb.out_times[0] + 1)
        dut._log.info("short rows: %d rows of %d: %.3f elements/cycle (output side)",
                      rows, length, rate)
