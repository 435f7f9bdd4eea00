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
as JSON.
"""
import argparse
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
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(f"  {row}", flush=True)
    return row, records


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="build/sweep_scaling", help="work directory (emptied)")
    p.add_argument("--json", default="docs/bench/sweep_scaling.json")
    p.add_argument("--groups", default="2,3,4")
    p.add_argument("--tables", default="1,2,4")
    p.add_argument("--lanes", default="4,8,16")
    args = p.parse_args(argv)
    from distributed import LocalCluster

    root = Path(args.root).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    grid = ["--groups", args.groups, "--tables", args.tables, "--lanes", args.lanes]
    rows, recs = [], {}
    for name, extra in (("jobs1", ["--jobs", "1"]), ("jobs2", ["--jobs", "2"])):
        row, recs[name] = _sweep(name, root, grid, extra, root / f"{name}.log")
        rows.append(row)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        row, recs["dask"] = _sweep("dask", root, grid, ["--scheduler", cluster.scheduler_address],
                                   root / "dask.log")
        rows.append(row)
    row, recs["rerun"] = _sweep("jobs2-rerun", root, grid, ["--jobs", "2"], root / "rerun.log")
    rows.append(row)
    print(format_table(rows, list(rows[0])))
    j1, j2 = rows[0]["wall_s"], rows[1]["wall_s"]
    summary = {
        "command": "trilut report --sweep " + " ".join(grid),
        "cpus": os.cpu_count(),
        "runs": rows,
        "jobs2_over_jobs1": round(j2 / j1, 3),
        "dask_records_equal_jobs1": _strip(recs["dask"]) == _strip(recs["jobs1"]),
        "jobs2_records_equal_jobs1": _strip(recs["jobs2"]) == _strip(recs["jobs1"]),
        "rerun_records_equal_jobs2": recs["rerun"] == recs["jobs2"],
        "timing_fields_ignored": list(TIMING_FIELDS),
    }
    print(f"jobs 2 / jobs 1 wall time: {summary['jobs2_over_jobs1']}; LocalCluster records "
          f"equal to jobs 1: {summary['dask_records_equal_jobs1']}; rerun "
          f"{rows[-1]['wall_s']} s")
    write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
