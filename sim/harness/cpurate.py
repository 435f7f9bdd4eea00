"""Simulated cycles per second of the harness's own CPU time, beside the
wall-clock rate, for each run of a ``--device sim`` decoder.

``python -m trilut.sim.harness.cpurate [--json PATH] -- generate ARGS...``
runs the ``trilut`` command with :meth:`trilut.host.generate.SimDecoder.run`
timed: per run (the prefill, then one per decode step) the simulated
cycles, the wall time, the harness process's CPU time (user + system, from
``/proc``) and the two rates. The CPU rate is what the Verilator model does
per second of a core it has to itself; the wall rate also counts the time
the harness waits on the host (Python) and on other jobs of a loaded
machine, so comparing builds (compiler flags, profile-guided builds) side by
side on a shared machine is done with the CPU rate. Prints a table and
writes JSON (default ``build/sim_cpu_rate.json``).
"""
import argparse
import json
import os
import time

__all__ = ["harness_cpu_s", "main"]


def harness_cpu_s(pid):
    """CPU seconds (user + system) the process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="build/sim_cpu_rate.json")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="the trilut command after --, e.g. -- generate --device sim ...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--device" not in command or "sim" not in command:
        ap.error("give a trilut command running on --device sim after --")
    from ...gen.cli import main as trilut
    from ...host.generate import SimDecoder
    rows, run = [], SimDecoder.run

    def timed(self, ids):
        pid = self.device._proc.pid
        c0, w0, s0 = harness_cpu_s(pid), time.monotonic(), self.sim_cycles_in_runs
        got = run(self, ids)
        cpu, wall = harness_cpu_s(pid) - c0, time.monotonic() - w0
        cycles = self.sim_cycles_in_runs - s0
        rows.append({"tokens": len(ids), "sim_cycles": cycles, "wall_s": round(wall, 3),
                     "harness_cpu_s": round(cpu, 3),
                     "cycles_per_wall_s": round(cycles / wall),
                     "cycles_per_cpu_s": round(cycles / cpu) if cpu else None})
        return got

    SimDecoder.run = timed
    try:
        status = trilut(command)
    finally:
        SimDecoder.run = run
    if not rows:
        raise SystemExit("no SimDecoder run happened: is the command a --device sim decoder?")
    print(f"{'run':>3s} {'tokens':>6s} {'sim cycles':>10s} {'wall s':>7s} {'cpu s':>6s} "
          f"{'cycles/wall s':>13s} {'cycles/cpu s':>12s}")
    for i, r in enumerate(rows):
        print(f"{i:3d} {r['tokens']:6d} {r['sim_cycles']:10d} {r['wall_s']:7.2f} "
              f"{r['harness_cpu_s']:6.2f} {r['cycles_per_wall_s']:13,d} "
              f"{r['cycles_per_cpu_s'] or 0:12,d}")
    with open(args.json, "w") as f:
        json.dump({"command": command, "load_average": os.getloadavg()[:3], "runs": rows},
                  f, indent=1)
    print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
