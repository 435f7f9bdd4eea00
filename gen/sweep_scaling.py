"""Measures the sweep layer on this machine (docs/sweeps.md):

    python -m trilut.gen.sweep_scaling --json docs/bench/sweep_scaling.json

runs ``trilut report --sweep`` (the default 27-configuration sweep, or the
grid given) four times, one after the other, each as its own process:
``--jobs 1`` and ``--jobs 2`` with separate empty caches (the scaling
figure), then ``--scheduler`` pointed at a ``dask.distributed``
LocalCluster of 2 single-thread workers with a third empty cache (its build
records are compared with those of ``--jobs 1``, timing fields excepted),
then ``--jobs 2`` again on the finished cache (all hits). Prints a table of
wall times and writes them, the comparison and the machine's load averages,
as JSON. ``--dask-groups`` gives the cluster run a smaller grid (its records
are compared with the ``--jobs 1`` builds of the same configurations);
``--runs`` with ``--previous-log`` finishes an interrupted measurement,
taking the finished runs' rows from the earlier output and their records
from ``--root`` (``--runs ''``: none run, the JSON written again from them).
"""
import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .sweep import TIMING_FIELDS, write_json
from .synth import format_table


def _sweep(name, root, grid, extra, log):
    out, cache = root / name, root / f"cache-{name.split('-')[0]}"
    cmd = [str(Path(sys.executable).parent / "trilut"), "report", "--sweep", "--out", str(out),
           "--cache", str(cache), *grid, *extra]
    print(f"{name}: trilut {' '.join(cmd[1:])}", flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}); see {log}")
    records = json.loads((out / "sweep_records.json").read_text())
    row = {"run": name, "wall_s": round(wall, 1), "builds": len(records),
           "build_s": _build_seconds(records),
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(f"  {row}", flush=True)
    return row, records


def _build_seconds(records):
    """The builds' own times summed (``total_s`` of each record: synthesis
    and P&R, one thread each): what the machine charged each build, beside
    the wall time. Two runs' sums differ when the builds ran slower in one
    (a busier machine), which the wall-time ratio alone would hide."""
    return round(sum(r.get("total_s") or 0 for r in records), 1)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def _same_as(records, reference):
    """Every record equals the reference build with the same cache key
    (same Verilog, tools and options), timing fields excepted."""
    ref = {r["cache_key"]: r for r in _strip(reference)}
    return all(ref.get(r["cache_key"]) == r for r in _strip(records))


def _previous_rows(log):
    """Rows printed by an earlier run of this script (``  {'run': ...}`` lines)."""
    return {row["run"]: row for row in (ast.literal_eval(ln.strip())
                                        for ln in Path(log).read_text().splitlines()
                                        if ln.startswith("  {'run': "))}


RUNS = ("jobs1", "jobs2", "dask", "jobs2-rerun")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="build/sweep_scaling", help="work directory")
    p.add_argument("--json", default="docs/bench/sweep_scaling.json")
    p.add_argument("--groups", default="2,3,4")
    p.add_argument("--tables", default="1,2,4")
    p.add_argument("--lanes", default="4,8,16")
    p.add_argument("--dask-groups", help="a smaller grid for the LocalCluster run "
                                         "(default: the same grid)")
    p.add_argument("--runs", default=",".join(RUNS),
                   help="runs to do now; the others are taken from --previous-log and ROOT")
    p.add_argument("--previous-log", help="this script's output from an earlier, "
                                          "interrupted run (its printed rows)")
    args = p.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    if set(runs) - set(RUNS):
        raise SystemExit(f"--runs: choose from {', '.join(RUNS)}")
    previous = _previous_rows(args.previous_log) if args.previous_log else {}
    root = Path(args.root).resolve()
    if "jobs1" in runs:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    grid = ["--groups", args.groups, "--tables", args.tables, "--lanes", args.lanes]
    dask_grid = ["--groups", args.dask_groups or args.groups, *grid[2:]]
    extra = {"jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "jobs2-rerun": ["--jobs", "2"]}
    rows, recs = {}, {}
    for name in RUNS:
        if name not in runs:
            recs[name] = json.loads((root / name / "sweep_records.json").read_text())
            rows[name] = {**previous[name], "build_s": _build_seconds(recs[name])}
        elif name == "dask":
            from distributed import LocalCluster
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=":0") as cluster:
                rows[name], recs[name] = _sweep(name, root, dask_grid,
                                                ["--scheduler", cluster.scheduler_address],
                                                root / "dask.log")
        else:
            rows[name], recs[name] = _sweep(name, root, grid, extra[name], root / f"{name}.log")
    table = [rows[n] for n in RUNS]
    print(format_table(table, list(table[0])))
    j1, j2 = rows["jobs1"]["wall_s"], rows["jobs2"]["wall_s"]
    summary = {
        "command": "trilut report --sweep " + " ".join(grid),
        "dask_command": "trilut report --sweep " + " ".join(dask_grid) + " --scheduler "
                        "<LocalCluster: 2 workers x 1 thread>",
        "cpus": os.cpu_count(),
        "runs": table,
        "jobs2_over_jobs1": round(j2 / j1, 3),
        # the same ratio had jobs 1's builds run as fast as jobs 2's did
        "jobs2_over_jobs1_same_build_speed": round(
            j2 / (j1 * rows["jobs2"]["build_s"] / rows["jobs1"]["build_s"]), 3),
        "dask_records_equal_jobs1": _same_as(recs["dask"], recs["jobs1"]),
        "jobs2_records_equal_jobs1": _same_as(recs["jobs2"], recs["jobs1"]),
        "rerun_records_equal_jobs2": recs["jobs2-rerun"] == recs["jobs2"],
        "timing_fields_ignored": list(TIMING_FIELDS),
    }
    print(f"jobs 2 / jobs 1 wall time: {summary['jobs2_over_jobs1']} "
          f"({summary['jobs2_over_jobs1_same_build_speed']} at the same build speed); "
          f"LocalCluster records "
          f"equal to jobs 1: {summary['dask_records_equal_jobs1']}; rerun "
          f"{rows['jobs2-rerun']['wall_s']} s")
    write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
