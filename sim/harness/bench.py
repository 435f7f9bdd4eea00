"""Simulation speed through the host driver: simulated cycles per wall-clock
second of :class:`~trilut.host.device.SimDevice` (Verilator harness, byte-level
bridge) running programs end to end, every result checked exactly against
golden.

``python -m trilut.sim.harness.bench [--runs N] [--json PATH]`` prints a
table and writes JSON. Workloads: ``linear`` (LOAD -> LINEAR -> LINEAR ->
STORE at the build's largest shapes, on the default accelerator) and
``digits`` (the shipped digits model's two encoder blocks compiled by
:mod:`trilut.host.compiler`, one held-out image per run, on a build with
room for them: the demo's workload). The wall time counts everything the driver
does (constants, program, streams, status polls); the harness is started and
its build cached before timing begins.
"""
import argparse
import json
import time

import numpy as np

from ...gen.units import UNITS

__all__ = ["WORKLOADS", "benchmark", "main"]

# The Accelerator's constructor defaults, and the default accelerator of
# `trilut demo` (it holds the digits model's encoder).
WORKLOADS = {
    "linear": {},
    "digits": dict(UNITS["top"].defaults),
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
        return self.acc.row_frames(x)

    def weight_frames(self):
        return self.acc.weight_frames(self.ws[0]) + self.acc.weight_frames(self.ws[1])

    def decode(self, frames):
        return {"y": self.acc.frames_to_rows(frames, self.outputs[0].length)}

    def golden(self, x):
        return {"y": self._golden(x)}


class _Digits:
    """The shipped digits model's encoder (every block, host.compiler's
    ``compile_stack``) on held-out test images, against golden
    ``encoder_stack``."""

    def __init__(self, acc, rng):
        from ...golden.encoder import encoder_stack
        from ...host.compiler import compile_stack
        from ...host.models.digits.pipeline import DigitsPipeline
        pipe = DigitsPipeline()
        self.xs = pipe.encoder_input(pipe.x_test)
        self.prog = compile_stack(pipe.params, acc, self.xs.shape[1])
        self._golden = lambda x: encoder_stack(x[None], pipe.params)[0]
        self._next = 0

    def input(self, rng):
        x, self._next = self.xs[self._next], self._next + 1
        return x

    def golden(self, x):
        return {"out": self._golden(x)}


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
            prog = work = _TwoLinears(acc, rng)
        else:
            work = _Digits(acc, rng)
            prog = work.prog
        c0 = dev.sync()
        t0 = time.perf_counter()
        accel_cycles = 0
        for _ in range(runs):
            x = work.input(rng)
            got = drv.run(prog, x)
            accel_cycles += drv.counters()["cycles"]
            want = work.golden(x)
            for name, value in got.items():
                if not np.array_equal(value, np.asarray(want[name], dtype=np.int64)):
                    raise AssertionError(f"{workload}: output {name} differs from golden")
        wall = time.perf_counter() - t0
        cycles = dev.sync() - c0
    return {"workload": workload, "params": acc.params, "runs": runs,
            "sim_cycles": cycles, "accel_cycles": accel_cycles, "wall_s": round(wall, 3),
            "cycles_per_s": round(cycles / wall), "requests": drv.link.stats["requests"],
            "accel_cycles_per_run": accel_cycles // runs,
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
