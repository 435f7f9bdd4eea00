"""The shared sequential divider, in Amaranth's simulator (a small internal
block; the row units that use it are verified on Verilator)."""
import random

import pytest
from amaranth.sim import Simulator

from trilut.hw.divider import SeqDivider


def run_divider(dut, pairs, *, seed=0):
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        for num, den in pairs:
            ctx.set(dut.inp.payload.num, num)
            ctx.set(dut.inp.payload.den, den)
            ctx.set(dut.inp.valid, 1)
            await ctx.tick().until(dut.inp.ready)
            ctx.set(dut.inp.valid, 0)
            waited = 0
            while True:
                ready = rng.random() < 0.5
                ctx.set(dut.out.ready, ready)
                _, _, valid, value = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                if valid and ready:
                    results.append(value)
                    break
                waited += 1
            ctx.set(dut.out.ready, 0)
            assert waited >= dut.latency - 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("num_bits,den_bits", [(32, 32), (31, 16), (8, 3)])
def test_divider_matches_floor_division(num_bits, den_bits):
    rng = random.Random(num_bits)
    top_n, top_d = (1 << num_bits) - 1, (1 << den_bits) - 1
    pairs = [(top_n, 1), (top_n, top_d), (0, 1), (top_n, 2), (1, top_d), (5, 0)]
    pairs += [(rng.randrange(top_n + 1), rng.randrange(1, top_d + 1)) for _ in range(40)]
    got = run_divider(SeqDivider(num_bits, den_bits), pairs)
    want = [n // d if d else top_n for n, d in pairs]
    assert got == want


def test_divider_rejects_bad_widths():
    with pytest.raises(ValueError, match="num_bits"):
        SeqDivider(0, 8)
    with pytest.raises(ValueError, match="den_bits"):
        SeqDivider(8, 65)
