"""Simulation speed through the host driver: simulated cycles per wall-clock
second of :class:`~trilut.host.device.SimDevice` (Verilator harness, byte-level
bridge) running programs end to end, every result checked exactly against
golden.

``python -m trilut.sim.harness.bench [--runs N] [--json PATH]`` prints a
table and writes JSON. Workloads: ``linear`` (LOAD -> LINEAR -> LINEAR ->
STORE at the build's largest shapes, on the default accelerator) and
``block`` (one whole encoder block compiled by :mod:`trilut.host.compiler`,
on a build with room for it). The wall time counts everything the driver
does (constants, program, streams, status polls); the harness is started and
its build cached before timing begins.
"""
import argparse
import json
import time

import numpy as np

__all__ = ["WORKLOADS", "benchmark", "main"]

# The default accelerator, and a build that holds a whole encoder block.
WORKLOADS = {
    "linear": {},
    "block": dict(max_rows=16, max_width=64, prog_depth=32, const_sets=12),
}


class _TwoLinears:
    """LOAD x -> LINEAR (W1) -> LINEAR (W2) -> STORE with requantization, shaped
    like :class:`trilut.host.compiler.Program`, plus its golden result."""

    def __init__(self, acc, rng):
        from ...golden import requantize, tlmm_matmul
        from ...hw.isa import Epilogue, Opcode, pack_descriptor, pack_requant_const
        self.acc, self.accel_params = acc, acc.params
        m, k = acc.max_rows, acc.max_width
        n = k // acc.lanes * acc.lanes
        self.ws = [rng.integers(-1, 2, size=(k, n)), rng.integers(-1, 2, size=(n, n))]
        self.requant = []
        for w in self.ws:
            std = 74 * np.sqrt(2 * len(w) / 3)
            e = 15 + int(round(np.log2(std / 40)))
            self.requant.append((rng.integers(1 << 14, 1 << 16, n), np.full(n, e),
                                 rng.integers(-int(std), int(std) + 1, n)))
        self.consts = [(i, [pack_requant_const(*t) for t in zip(*c)])
                       for i, c in enumerate(self.requant)]
        self.descriptors = [
            pack_descriptor(Opcode.LOAD, dst_bank=0, rows=m, k=k),
            pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=0, dst_bank=1,
                            rows=m, k=k, n=n, const=0),
            pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=1, dst_bank=0,
                            rows=m, k=n, n=n, const=1),
            pack_descriptor(Opcode.STORE, src_bank=0, rows=m, k=n),
            pack_descriptor(Opcode.END)]

        class Out:
            rows, length = m, n
        self.outputs = [Out]
        eng = acc.engine
        self._golden = lambda x: requantize(
            tlmm_matmul(requantize(tlmm_matmul(x, self.ws[0], group=eng.group,
                                               encoding=eng.encoding), *self.requant[0]),
                        self.ws[1], group=eng.group, encoding=eng.encoding), *self.requant[1])
        self.x_shape = (m, k)

    def input(self, rng):
        return rng.integers(-128, 128, size=self.x_shape)

    def input_frames(self, x):
        acc = self.acc
        return (acc.row_frames(x) + acc.weight_frames(self.ws[0], len(x)) +
                acc.weight_frames(self.ws[1], len(x)))

    def decode(self, frames):
        return {"y": self.acc.frames_to_rows(frames, self.outputs[0].length)}

    def golden(self, x):
        return {"y": self._golden(x)}


class _Block:
    """One random encoder block compiled by host.compiler (all outputs traced)."""

    def __init__(self, acc, rng):
        from ...golden.encoder import encoder_block
        from ...host.compiler import compile_block
        from ..tb_top import random_block
        hidden = acc.max_width // 2
        self.block, self.x = random_block(int(rng.integers(1 << 30)), hidden=hidden, heads=2,
                                          ffn=acc.max_width, seq=acc.max_rows)
        self.prog = compile_block(self.block, acc, acc.max_rows, trace=True)
        self._trace = encoder_block(self.x, self.block, trace=True)

    def input(self, rng):
        return self.x

    def golden(self, x):
        return {o.name: self._trace[o.name] for o in self.prog.outputs}


def benchmark(workload="linear", runs=3, seed=0):
    """Run ``workload`` ``runs`` times through :class:`~trilut.host.driver.Driver`
    on a fresh :class:`~trilut.host.device.SimDevice`; returns a dict with the
    simulated cycles, the accelerator's own CYCLES counter, the wall time and
    their ratio. Raises AssertionError if any output differs from golden."""
    from ...host.device import SimDevice
    from ...host.driver import Driver
    params = WORKLOADS[workload]
    rng = np.random.default_rng(seed)
    with SimDevice(params) as dev:
        drv = Driver(dev, params)
        acc = drv.accel
        if workload == "linear":
            prog = _TwoLinears(acc, rng)
        else:
            blk = _Block(acc, rng)
            prog = blk.prog
            prog.input, prog.golden = blk.input, blk.golden
        c0 = dev.sync()
        t0 = time.perf_counter()
        accel_cycles = 0
        for _ in range(runs):
            x = prog.input(rng)
            got = drv.run(prog, x)
            accel_cycles += drv.counters()["cycles"]
            want = prog.golden(x)
            for name, value in got.items():
                if not np.array_equal(value, np.asarray(want[name], dtype=np.int64)):
                    raise AssertionError(f"{workload}: output {name} differs from golden")
        wall = time.perf_counter() - t0
        cycles = dev.sync() - c0
    return {"workload": workload, "params": acc.params, "runs": runs,
            "sim_cycles": cycles, "accel_cycles": accel_cycles, "wall_s": round(wall, 3),
            "cycles_per_s": round(cycles / wall), "requests": drv.link.stats["requests"],
            "matches_golden": True}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    ap.add_argument("--json", default="build/sim_speed.json")
    args = ap.parse_args(argv)
    rows = [benchmark(w, args.runs) for w in (args.workload or sorted(WORKLOADS))]
    print(f"{'workload':10s} {'runs':>4s} {'sim cycles':>11s} {'accel cycles':>12s} "
          f"{'wall s':>7s} {'cycles/s':>10s} {'requests':>8s}")
    for r in rows:
        print(f"{r['workload']:10s} {r['runs']:4d} {r['sim_cycles']:11d} "
              f"{r['accel_cycles']:12d} {r['wall_s']:7.2f} {r['cycles_per_s']:10d} "
              f"{r['requests']:8d}")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
