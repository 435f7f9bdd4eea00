"""Amaranth's own simulator for small internal blocks (the row units that
use them are verified on Verilator)."""
import random

from amaranth.sim import Simulator

__all__ = ["run_requests", "run_iexp"]


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


def run_iexp(dut, x0, ds):
    """Feed ``ds`` one per cycle into an ``IExp`` (after ``x0`` settles);
    return ``(e, t << shift, x0_ok)`` for each input."""
    out = []

    async def bench(ctx):
        ctx.set(dut.x0, x0)
        await ctx.tick().repeat(dut.x0_settle)
        for i, d in enumerate(list(ds) + [0] * dut.latency):
            ctx.set(dut.d, int(d))
            await ctx.tick()
            if i >= dut.latency - 1 and len(out) < len(ds):
                out.append((ctx.get(dut.e), ctx.get(dut.t) << ctx.get(dut.shift),
                            ctx.get(dut.x0_ok)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out
