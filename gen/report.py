"""Build reports: ``trilut report`` (per board build) and ``trilut report
--sweep`` (the ECP5-85F design-space table).

Per build (``trilut report DIR [DIR ...] --out OUT``), from each ``DIR`` that
``trilut build`` wrote:

* totals, Fmax against the requested clock and the critical path, from
  ``DIR/report.json`` (nextpnr's post-route figures; KV260: Yosys cell counts,
  no timing);
* **utilization by unit**: one extra Yosys run on the build's own netlist
  (ECP5: the RTLIL of the build plan, ``synth_ecp5 -noflatten`` with classic
  ABC as the build maps it; KV260:
  the package's Verilog, ``synth_xilinx -family xcup`` without ``-flatten``)
  and ``stat -json`` per module. Amaranth names every module by its instance
  path (``top.core.engine``), so each module's own cells are summed into its
  path. The units are the top's instances, with the largest one opened
  into its instances (plus its ``(own)`` logic) as long as it holds over
  half of the LUTs and is mostly its children's logic (the board top's
  core, then the accelerator inside it); ``(glue)`` is the top's own
  logic. These are Yosys counts before packing and without
  cross-boundary optimisation; ``(total, hierarchy kept)`` is their sum and
  ``(flat build)`` the build's own placed figures, for comparison.

Outputs: ``OUT/report.md``, ``OUT/report.json`` and ``OUT/breakdown.png``
(LUT and FF per unit side by side, one panel per build).

Sweep (``trilut report --sweep --out OUT``): the TLMM engine (the unit the
accelerator's MACs come from; full encoding, tables in block RAM: the
registered default) over G x tables x lanes, each placed and routed out of
context on ECP5-85F through :mod:`trilut.gen.sweep` (local jobs or a Dask
scheduler, the shared result cache, ``--seeds`` for min / median / max
Fmax), marking the Pareto front of MACs per cycle
against LUT4: ``OUT/sweep.md``, ``OUT/sweep.json`` (one row per
configuration), ``OUT/sweep_records.json`` (every build's full record),
``OUT/report.json`` (both: ``{"sweep": rows, "records": records}``, the file
to compare between executors), ``OUT/sweep.png``. Failed builds are rows with ``status: failed`` and their
log; the command then exits non-zero.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .sweep import cache_from_args, failure_summary, parse_ints, progress_printer, synth_many
from .synth import ecp5_abc_script, format_table, run_tool, xilinx_counts

__all__ = ["unit_breakdown", "collect", "pareto_front", "run_sweep", "run_report"]

UNIT_COLUMNS = ["unit", "lut", "ff", "dsp", "bram"]
SWEEP_COLUMNS = ["group", "tables", "lanes", "macs_per_cycle", "lut4", "ff", "dp16kd",
                 "fmax_mhz", "lut4_per_mac", "pareto"]


def _ecp5_counts(cells):
    """Yosys ECP5 cells -> LUT4 sites (LUT4 + 2 per CCU2C + 6 per distributed
    RAM), FF, MULT18X18D, DP16KD."""
    return {"lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
            + 6 * cells.get("TRELLIS_DPR16X4", 0),
            "ff": cells.get("TRELLIS_FF", 0),
            "dsp": cells.get("MULT18X18D", 0),
            "bram": cells.get("DP16KD", 0)}


def _xcup_counts(cells):
    c = xilinx_counts(cells)
    return {"lut": c["clb_lut"], "ff": c["ff"], "dsp": c["dsp"], "bram": c["bram36"]}


def unit_breakdown(build, *, work_dir, progress=None, timeout_s=None):
    """Utilization by unit of a ``trilut build`` directory's design (see the
    module docstring); returns a list of rows {unit, lut, ff, dsp, bram}."""
    rep = json.loads((Path(build) / "report.json").read_text())
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if rep["board"] == "kv260":
        src = Path(rep["outputs"]["verilog"])
        top = src.stem
        (work_dir / src.name).write_text(src.read_text())
        script = [f"read_verilog -sv {src.name}",
                  f"synth_xilinx -family xcup -top {top} -noiopad -noclkbuf"]
        counts = _xcup_counts
    else:
        src = Path(rep["outputs"]["rtlil"])
        top = src.stem
        (work_dir / src.name).write_text(src.read_text())
        script = [f"read_rtlil {src.name}", *ecp5_abc_script(top, "-noflatten")]
        counts = _ecp5_counts
    script.append("tee -q -o units_stat.json stat -json")
    (work_dir / "units.ys").write_text("\n".join(script) + "\n")
    (work_dir / "units_stat.json").unlink(missing_ok=True)
    run_tool("yosys", ["-s", "units.ys"], log_path=work_dir / "units_yosys.log", cwd=work_dir,
              step="yosys (per-unit)", progress=progress, timeout_s=timeout_s)
    stat = json.loads((work_dir / "units_stat.json").read_text())
    mods = {k.lstrip("\\"): v.get("num_cells_by_type", {}) for k, v in stat["modules"].items()}
    own = {name: counts({t: n for t, n in cells.items() if t.lstrip("\\") not in mods})
           for name, cells in mods.items()}

    def total(path):
        acc = dict(own.get(path, counts({})))
        for name in mods:
            if name.startswith(path + ".") and "." not in name[len(path) + 1:]:
                for k, v in total(name).items():
                    acc[k] += v
        return acc

    def children(path):
        return [n for n in mods if n.startswith(path + ".") and "." not in n[len(path) + 1:]]

    # Open the largest instance while it holds over half of the design and is
    # mostly its children's logic (a wrapper such as the board top's core).
    units, opened = children(top), []
    whole_lut = total(top)["lut"] or 1
    while units:
        big = max(units, key=lambda k: total(k)["lut"])
        t = total(big)["lut"]
        if not (children(big) and t > 0.5 * whole_lut and own[big]["lut"] < 0.5 * t):
            break
        units.remove(big)
        units += children(big)
        opened.append(big)
    rows = [{"unit": u[len(top) + 1:], **total(u)} for u in units]
    rows += [{"unit": u[len(top) + 1:] + " (own)", **own[u]} for u in opened]
    rows = sorted((r for r in rows if any(r[k] for k in ("lut", "ff", "dsp", "bram"))),
                  key=lambda r: -r["lut"])
    whole = total(top)
    rows.append({"unit": "(glue)", **{k: whole[k] - sum(r[k] for r in rows) for k in whole}})
    rows.append({"unit": "(total, hierarchy kept)", **whole})
    rows.append({"unit": "(flat build)", **{k: rep.get(k) for k in ("lut", "ff", "dsp", "bram")}})
    return rows


def collect(builds, out, *, progress=None, timeout_s=None):
    """``trilut report``: one section per build directory into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections, payload = [], []
    for build in builds:
        build = Path(build)
        rep_path = build / "report.json"
        if not rep_path.exists():
            raise ValueError(f"{build} has no report.json: run `trilut build --out {build}` first")
        rep = json.loads(rep_path.read_text())
        if progress:
            progress(f"{rep['board']}: per-unit synthesis")
        units = unit_breakdown(build, work_dir=out / "units" / rep["board"], progress=None,
                               timeout_s=timeout_s)
        payload.append({"build": str(build), "report": rep, "units": units})
        sections.append(_section(rep, units))
    (out / "report.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / "report.md").write_text("# trilut build reports\n\n" + "\n".join(sections))
    _plot_units(payload, out / "breakdown.png")
    return payload


def _section(rep, units):
    cp = rep.get("critical_path") or {}
    timing = ("not timed (no open place and route for UltraScale+)" if rep.get("fmax_mhz") is None
              else f"Fmax **{rep['fmax_mhz']} MHz** against {rep['target_mhz']} MHz requested "
                   f"({'met' if rep['timing_met'] else 'NOT met'})")
    lines = [f"## {rep['board']} ({rep.get('device', '')})", "",
             f"Core `{rep.get('core')}`, parameters `{rep.get('params')}`, "
             f"{rep.get('macs_per_cycle')} MACs/cycle. {timing}.", "",
             "| total | LUT | FF | DSP | BRAM |", "|---|---|---|---|---|",
             f"| used | {rep['lut']} | {rep['ff']} | {rep['dsp']} | {rep['bram']} |"]
    cap = rep.get("capacity")
    if cap:
        lines.append(f"| device | {cap['lut']} | {cap['ff']} | {cap['dsp']} | {cap['bram']} |")
    lines += ["", "Utilization by unit (Yosys, hierarchy kept):", "", "```",
              format_table(units, UNIT_COLUMNS), "```", ""]
    if cp:
        lines += [f"Critical path ({cp['logic_ns']} ns logic, {cp['routing_ns']} ns routing): "
                  f"`{cp['from']}` -> `{cp['to']}`", "", "```", *cp["steps"], "```", ""]
    return "\n".join(lines)


def _plot_units(payload, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(payload)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 + 0.35 * max(len(p["units"]) for p in payload) * n),
                             squeeze=False)
    for ax, p in zip(axes[:, 0], payload):
        rows = [r for r in p["units"] if not r["unit"].startswith(("(total", "(flat"))]
        rows = rows[::-1]
        y = list(range(len(rows)))
        ax.barh([i + 0.2 for i in y], [r["lut"] for r in rows], height=0.4, label="LUT")
        ax.barh([i - 0.2 for i in y], [r["ff"] for r in rows], height=0.4, label="FF")
        ax.set_yticks(y, [r["unit"] for r in rows])
        rep = p["report"]
        ax.set_title(f"{rep['board']}: LUT {rep['lut']}, FF {rep['ff']}, DSP {rep['dsp']}, "
                     f"BRAM {rep['bram']}, Fmax {rep.get('fmax_mhz')} MHz", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# Design-space sweep
# --------------------------------------------------------------------------

def pareto_front(rows, gain="macs_per_cycle", cost="lut4"):
    """Marks ``pareto`` on each row: True when no other row has at least its
    ``gain`` for at most its ``cost`` with one of them strictly better."""
    ok = [r for r in rows if r.get(cost) is not None]
    for r in rows:
        r["pareto"] = r in ok and not any(
            o[gain] >= r[gain] and o[cost] <= r[cost] and (o[gain] > r[gain] or o[cost] < r[cost])
            for o in ok)
    return rows


def run_sweep(groups, tables, lanes, out, *, seeds=(1,), cache=None, jobs=None,
              scheduler=None):
    """Synthesize the TLMM engine over the grid (each configuration once per
    seed, through :func:`trilut.gen.sweep.synth_many`); write
    sweep.{md,json,png} and the individual build records
    (``sweep_records.json``), both in ``report.json``. Raises :class:`~trilut.gen.sweep.SweepFailure`
    after writing them when a build failed."""
    configs = [dict(group=g, tables=t, lanes=n) for g in groups for t in tables for n in lanes]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged, tasks, records = synth_many(
        [(f"G{c['group']} T{c['tables']} L{c['lanes']}", "tlmm", c) for c in configs],
        seeds=seeds, cache=cache, jobs=jobs, scheduler=scheduler, desc="sweep")
    rows = [_sweep_row(c, r) for c, r in zip(configs, merged)]
    pareto_front(rows)
    columns = SWEEP_COLUMNS if len(seeds) == 1 else SWEEP_COLUMNS[:-3] + [
        "fmax_min", "fmax_max"] + SWEEP_COLUMNS[-2:]
    table = format_table(rows, columns)
    (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "sweep_records.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "report.json").write_text(json.dumps({"sweep": rows, "records": records},
                                                indent=2) + "\n")
    (out / "sweep.md").write_text("```\n" + table + "\n```\n")
    _plot_sweep(rows, out / "sweep.png")
    print(table)
    failure = failure_summary(tasks, records)
    if failure:
        raise failure
    return rows


def _sweep_row(config, rec):
    if rec["status"] == "failed":
        return {**config, "status": "failed", "error": rec["error"], "log": rec["log"]}
    row = {**config, "status": "done", "mapper": rec["mapper"],
           **{k: rec[k] for k in ("macs_per_cycle", "lut4", "ff", "dp16kd", "fmax_mhz")},
           "lut4_per_mac": round(rec["lut4"] / rec["macs_per_cycle"], 2)}
    row.update({k: rec[k] for k in ("fmax_min", "fmax_median", "fmax_max", "seeds") if k in rec})
    return row


def _plot_sweep(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    good = [r for r in rows if "lut4" in r]
    for g in sorted({r["group"] for r in good}):
        pts = [r for r in good if r["group"] == g]
        ax.scatter([r["lut4"] for r in pts], [r["macs_per_cycle"] for r in pts], label=f"G={g}",
                   s=22)
    front = sorted((r for r in good if r["pareto"]), key=lambda r: r["lut4"])
    ax.plot([r["lut4"] for r in front], [r["macs_per_cycle"] for r in front], "k--", lw=1,
            label="Pareto front")
    if good:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("LUT4 (ECP5-85F, placed and routed out of context)")
    ax.set_ylabel("ternary MACs per cycle")
    ax.set_title("TLMM engine: G x tables x lanes", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_report(args):
    """``trilut report`` (arguments from :mod:`trilut.gen.cli`)."""
    if args.sweep and args.builds:
        raise ValueError("trilut report: give build directories or --sweep, not both "
                         "(each writes OUT/report.json)")
    if args.sweep:
        grid = [parse_ints(args.groups, "groups"), parse_ints(args.tables, "tables"),
                parse_ints(args.lanes, "lanes")]
        seeds = parse_ints(args.seeds, "seeds")
        cache = cache_from_args(args)
        n = len(grid[0]) * len(grid[1]) * len(grid[2])
        where = args.scheduler or f"{args.jobs or os.cpu_count()} local jobs"
        print(f"trilut report --sweep: {n} TLMM configurations x {len(seeds)} seed(s) on "
              f"ECP5-85F ({where}, cache {cache.root}) -> {args.out}", flush=True)
        run_sweep(*grid, args.out, seeds=seeds, cache=cache, jobs=args.jobs,
                  scheduler=args.scheduler)
    if args.builds:
        payload = collect(args.builds, args.out, progress=progress_printer(""))
        for p in payload:
            print(f"{p['report']['board']}:")
            print(format_table(p["units"], UNIT_COLUMNS))
        print(f"wrote {Path(args.out) / 'report.md'}, report.json, breakdown.png")
    if not args.sweep and not args.builds:
        raise ValueError("trilut report: give build directories and/or --sweep")
