"""Amaranth's own simulator for small internal blocks (the row units that
use them are verified on Verilator)."""
import random

from amaranth.sim import Simulator

__all__ = ["run_requests"]


def run_requests(dut, payloads, *, seed=0):
    """Send each payload on ``dut.inp`` and wait for its result on
    ``dut.out`` (one request at a time, random backpressure on ``out``).
    Returns the results; asserts none arrives before ``dut.latency - 1``
    cycles."""
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        for payload in payloads:
            ctx.set(dut.inp.payload, payload)
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
            assert waited >= dut.latency - 1, f"result after {waited} cycles"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results
