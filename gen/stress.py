"""``trilut stress``: the reliability campaign, one JSON report.

Parts (``--only PART``, repeatable):

* ``units``: every streaming unit against golden through the batched C++
  harness (:mod:`trilut.gen.stress_units`), ``--vectors`` per unit;
* ``block``: the whole accelerator (the shipped digits model's two encoder
  blocks, the demo's workload) through the bridged-top harness and the host
  driver; a vector is one encoder output element compared with golden;
* ``programs``: hypothesis-generated descriptor sequences
  (:mod:`trilut.gen.stress_programs`);
* ``link``: demo images with :class:`~trilut.host.faults.FaultyDevice`
  damaging the byte path;
* ``resets``: soft and hard resets at random cycles inside every pass type,
  then a valid program bit-exact; a long-stalled output stream.

The defaults are a short run (CI); ``--full`` the campaign of issue 15
(10^6 vectors per unit, 10^4 programs, 1,000 reset trials, 20 link images).
Every report names the commit it ran on; ``--merge`` joins reports of parts
run separately (:func:`merge_reports`).
"""
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from .sweep import progress_printer, write_json
from .synth import format_table

__all__ = ["PARTS", "run_stress", "add_stress_parser", "run_block", "run_link",
           "merge_reports"]

PARTS = ("units", "block", "programs", "link", "resets")
SHORT = {"vectors": 20_000, "images": 2, "programs": 200, "link_images": 2,
         "uart_programs": 2, "resets": 20, "hold": 10_000}
FULL = {"vectors": 1_000_000, "images": 1000, "programs": 10_000, "link_images": 20,
        "uart_programs": 20, "resets": 1000, "hold": 1_000_000}
FAIL_DIR = Path("build/stress")
#: Link retries in the fault runs: at 1e-3 faults per byte a 1 KB request
#: gets through with probability ~e^-1 per attempt.
LINK_RETRIES = 20


def _digits(accel):
    from ..sim.harness.bench import _Digits
    return _Digits(accel, None)


def run_block(images, *, seconds=None, broken=False, progress=None):
    """The digits encoder on ``images`` held-out images (cycled) through
    SimDevice + Driver; returns the units-table row for ``block``."""
    from ..host.device import SimDevice
    from ..host.driver import Driver
    from .units import UNITS
    params = dict(UNITS["top"].defaults)
    t0 = time.monotonic()
    done = mism = 0
    first = None
    with SimDevice(params) as dev:
        drv = Driver(dev, params)
        work = _digits(drv.accel)
        t0 = time.monotonic()
        for i in range(images):
            if seconds and time.monotonic() - t0 > seconds:
                break
            x = work.xs[i % len(work.xs)]
            got = np.asarray(drv.run(work.prog, x)["out"])
            want = np.asarray(work.golden(x)["out"], dtype=np.int64)
            if broken:
                want = want.copy()
                want.flat[i % want.size] += 1
            bad = np.argwhere(got != want)
            done, mism = done + want.size, mism + len(bad)
            if len(bad) and first is None:
                first = {"image": i % len(work.xs), "element": bad[0].tolist(),
                         "expected": int(want[tuple(bad[0])]), "got": int(got[tuple(bad[0])])}
            if progress:
                progress("block", done, images * want.size, mism)
    wall = time.monotonic() - t0
    return {"unit": "block", "vectors": done, "mismatches": mism,
            "vectors_per_s": round(done / wall, 1) if wall else None,
            "seconds": round(wall, 1), "first_mismatch": first,
            "note": "digits encoder (2 blocks) on the default top; vectors = output elements"}


def run_link(images, *, rate=1e-3, seed=1, detect=True, progress=None, baseline=True):
    """Demo images over a damaged link (every fault kind at ``rate`` per
    byte) and, with ``baseline``, the same images on a clean link (the
    throughput cost); returns the ``link`` report."""
    from ..host.device import SimDevice
    from ..host.driver import Driver
    from ..host.faults import FaultyDevice
    from .units import UNITS
    params = dict(UNITS["top"].defaults)

    from ..host.protocol import LinkError

    def run(fault_rate):
        wrong = gave_up = 0
        with SimDevice(params) as dev:
            faulty = FaultyDevice(dev, rate=0, seed=seed, detect=detect)
            drv = Driver(faulty, params, link_timeout=0.5, retries=LINK_RETRIES)
            faulty.attach(drv.link)
            work = _digits(drv.accel)
            drv.link.traffic.clear()
            c0, t0 = dev.sync(), time.monotonic()
            faulty.rate = fault_rate
            for i in range(images):
                x = work.xs[i % len(work.xs)]
                try:
                    got = np.asarray(drv.run(work.prog, x)["out"])
                    wrong += int(not np.array_equal(got, work.golden(x)["out"]))
                except LinkError:       # noticed, but not recovered: the host gave up
                    gave_up += 1
                    faulty.rate, rate_was = 0, faulty.rate
                    drv.soft_reset()
                    drv.forget()        # program and constants written again
                    faulty.rate = rate_was
                if progress:
                    progress("link" if fault_rate else "link (clean)", i + 1, images, wrong)
            faulty.rate = 0
            faulty.finish()
            wall = time.monotonic() - t0
            cycles = dev.sync() - c0
            total = drv.link.efficiency()["total"]
        return {"wrong": wrong, "gave_up": gave_up, "counts": faulty.counts,
                "undetected_by_kind": faulty.undetected_by_kind, "stats": dict(drv.link.stats),
                "cycles": cycles, "wall_s": wall, "bytes": total["sent"] + total["received"]}

    bad = run(rate)
    clean = run(0) if baseline else None
    c = bad["counts"]
    return {"images": images, "rate_per_byte": rate, "frames_sent": c["frames"],
            "faults_injected": c["injected"], "detected": c["detected"],
            "tolerated": c["tolerated"], "superseded": c["superseded"],
            "recovered": c["detected"] if bad["wrong"] + bad["gave_up"] == 0 else None,
            "undetected": c["undetected"],
            "wrong_answers": bad["wrong"] + (clean["wrong"] if clean else 0),
            "runs_given_up": bad["gave_up"], "retries": LINK_RETRIES,
            "undetected_by_kind": bad["undetected_by_kind"],
            "by_kind": {k: c[k] for k in c if k not in ("frames", "injected", "detected",
                                                         "undetected", "tolerated",
                                                         "superseded")},
            "link_stats": bad["stats"],
            "throughput_cost": clean and {
                "cycles_clean": clean["cycles"], "cycles_faulty": bad["cycles"],
                "cycles_ratio": round(bad["cycles"] / clean["cycles"], 3),
                "bytes_ratio": round(bad["bytes"] / clean["bytes"], 3),
                "wall_ratio": round(bad["wall_s"] / clean["wall_s"], 3)}}


#: The pin-level link run: a small accelerator (the host tests' build) behind
#: the UART PHY at 8 clock cycles per bit, served on a pty.
UART_PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
                   max_width=32, prog_depth=16, const_sets=4)
UART_LINK = dict(clk_hz=1_000_000, baud=125_000)


def run_link_uart(programs, *, rate=1e-3, seed=1, detect=True, progress=None):
    """``programs`` valid LOAD -> LINEAR -> STORE programs (exact against
    golden) through SerialDevice -> pty -> the pin-level harness (UART PHY ->
    bridge), with :class:`~trilut.host.faults.FaultyDevice` on the host's
    byte path; returns the ``link.uart`` report."""
    from ..host.device import UartSim
    from ..host.driver import Driver
    from ..host.faults import FaultyDevice
    from ..host.protocol import LinkError
    from .stress_programs import _Fuzzer
    rng = np.random.default_rng(seed)
    wrong = gave_up = 0
    t0 = time.monotonic()
    with UartSim(UART_PARAMS, **UART_LINK) as uart:
        with FaultyDevice(uart.serial_device(), rate=0, seed=seed, detect=detect) as faulty:
            drv = Driver(faulty, UART_PARAMS, link_timeout=1.0, retries=LINK_RETRIES)
            faulty.attach(drv.link)
            fz = _Fuzzer(drv, None)
            acc = drv.accel
            faulty.rate = rate
            for i in range(programs):
                spec = {"kind": "valid", "seed": int(rng.integers(2**32)),
                        "rows": int(rng.integers(1, acc.max_rows + 1)),
                        "k": int(rng.integers(1, acc.max_width + 1)), "bank": 0, "row": 0,
                        "row2": 0, "const": int(rng.integers(acc.const_sets)),
                        "linears": [int(rng.integers(1, acc.max_width // acc.lanes + 1))],
                        "extreme": bool(rng.random() < 0.2)}
                try:
                    wrong += not fz.run(spec)[1]
                except LinkError:
                    gave_up += 1
                if progress:
                    progress("link (pin-level UART)", i + 1, programs, wrong)
            faulty.rate = 0
            faulty.finish()
            c = dict(faulty.counts)
    return {"programs": programs, "rate_per_byte": rate, "frames_sent": c["frames"],
            "faults_injected": c["injected"], "detected": c["detected"],
            "tolerated": c["tolerated"], "superseded": c["superseded"],
            "undetected": c["undetected"], "wrong_answers": wrong, "runs_given_up": gave_up,
            "seconds": round(time.monotonic() - t0, 1), "accelerator": UART_PARAMS,
            **UART_LINK}


def _bar(prefix):
    say = progress_printer(prefix, None)
    last = {}

    def report(name, done, total, bad):
        now = time.monotonic()
        if done >= total or now - last.get(name, 0) > 5:
            last[name] = now
            say(f"{name}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), "
                f"{bad} mismatch(es)")
    return report


def source_commit():
    """The commit the code runs from (``+dirty`` with uncommitted changes),
    or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def merge_reports(reports, names=None):
    """One report from reports of parts run separately (later ones win):
    ``units`` rows by unit name, the other parts whole; ``sources`` says
    which report (``names``) and commit each unit row and part came from."""
    names = list(names or range(len(reports)))
    out = {"units": {}, "sources": {"units": {}}}
    for name, rep in zip(names, reports):
        origin = {"report": str(name), "commit": rep.get("commit")}
        for row in rep.get("units", []):
            out["units"][row["unit"]] = row
            out["sources"]["units"][row["unit"]] = origin
        for part in ("programs", "link", "resets"):
            if part in rep:
                out[part] = rep[part]
                out["sources"][part] = origin
    out["units"] = list(out["units"].values())
    out["seconds"] = None
    out["ok"] = _ok(out)
    return out


def run_stress(*, parts=PARTS, sizes=None, seconds=None, seed=1, units=None,
               progress=True):
    """Run ``parts`` with ``sizes`` (keys of :data:`SHORT`); returns the report."""
    from .stress_units import UNIT_CASES, run_unit
    sizes = {**SHORT, **(sizes or {})}
    bar = _bar("") if progress else None
    report = {"sizes": sizes, "seed": seed, "commit": source_commit()}
    t0 = time.monotonic()
    if "units" in parts or "block" in parts:
        report["units"] = []
    if "units" in parts:
        for name in units or UNIT_CASES:
            row = run_unit(name, vectors=sizes["vectors"], seconds=seconds, seed=seed,
                           fail_dir=FAIL_DIR, progress=bar, hold=sizes["hold"])
            report["units"].append(row)
    if "block" in parts:
        report["units"].append(run_block(sizes["images"], seconds=seconds, progress=bar))
    if "programs" in parts:
        from .stress_programs import run_programs
        report["programs"] = run_programs(sizes["programs"], seed=seed, progress=bar,
                                          seconds=seconds)
    if "link" in parts:
        report["link"] = run_link(sizes["link_images"], seed=seed, progress=bar)
        report["link"]["uart"] = run_link_uart(sizes["uart_programs"], seed=seed,
                                               progress=bar)
    if "resets" in parts:
        from .stress_programs import run_resets
        report["resets"] = run_resets(sizes["resets"], seed=seed, progress=bar, seconds=seconds)
        if "units" in parts:
            report["resets"]["stalled_output"] = {
                "hold_cycles": sizes["hold"], "units": len(units or UNIT_CASES),
                "note": "each unit's first batch has out stalled this long at the start; "
                        "a lost or duplicated beat counts as a unit mismatch"}
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["ok"] = _ok(report)
    return report


def _ok(report):
    ok = all(u["mismatches"] == 0 for u in report.get("units", []))
    if "programs" in report:
        ok &= report["programs"]["hangs"] == 0 and report["programs"]["wrong"] == 0
    for lk in ([report["link"], report["link"].get("uart")] if "link" in report else []):
        ok &= lk is None or (lk["undetected"] == 0 and lk["wrong_answers"] == 0
                             and lk["runs_given_up"] == 0)
    if "resets" in report:
        ok &= report["resets"]["failures"] == 0
    return bool(ok)


def format_report(report):
    lines = []
    if report.get("units"):
        rows = [{k: u.get(k) for k in ("unit", "vectors", "mismatches", "vectors_per_s")}
                for u in report["units"]]
        lines.append(format_table(rows, ["unit", "vectors", "mismatches", "vectors_per_s"]))
    if "programs" in report:
        p = report["programs"]
        lines.append("programs: " + ", ".join(f"{k} {v}" for k, v in p.items()
                                              if not isinstance(v, (dict, list))))
        lines.append("  outcomes: " + json.dumps(p.get("outcomes", {})))
    if "link" in report:
        lk = report["link"]
        lines.append("link: " + ", ".join(f"{k} {lk[k]}" for k in (
            "images", "rate_per_byte", "frames_sent", "faults_injected", "detected",
            "tolerated", "superseded", "recovered", "undetected", "wrong_answers",
            "runs_given_up")))
        lines.append("  throughput cost: " + json.dumps(lk["throughput_cost"]))
        if lk.get("uart"):
            u = lk["uart"]
            lines.append("  pin-level UART: " + ", ".join(f"{k} {u[k]}" for k in (
                "programs", "faults_injected", "detected", "tolerated", "superseded",
                "undetected", "wrong_answers", "runs_given_up")))
    if "resets" in report:
        lines.append("resets: " + ", ".join(f"{k} {v}" for k, v in report["resets"].items()
                                            if not isinstance(v, (dict, list))))
    lines.append(f"all clean: {report['ok']}" + (f" ({report['seconds']} s)"
                                                   if report.get("seconds") else ""))
    return "\n".join(lines)


def add_stress_parser(sub):
    p = sub.add_parser("stress", help="reliability campaign: units x 10^6 vectors, fuzzed "
                                      "programs, link faults, resets")
    p.add_argument("--json", metavar="PATH", help="write the report here")
    p.add_argument("--full", action="store_true",
                   help="the full campaign (" + ", ".join(f"{k} {v:,}" for k, v in FULL.items())
                        + "); default a short run: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                SHORT.items()))
    p.add_argument("--vectors", type=int, help="vectors per unit")
    p.add_argument("--images", type=int, help="digits images for the whole block")
    p.add_argument("--programs", type=int, help="fuzzed programs")
    p.add_argument("--link-images", type=int, help="images over the damaged link")
    p.add_argument("--uart-programs", type=int, help="programs over the damaged pin-level "
                                                     "UART link")
    p.add_argument("--resets", type=int, help="reset trials")
    p.add_argument("--hold", type=int, help="cycles each unit's output is stalled at the "
                                            "start of its first batch")
    p.add_argument("--seconds", type=float, help="stop each unit, the block, the programs "
                                                 "and the resets after this many seconds")
    p.add_argument("--only", action="append", choices=PARTS, help="run only this part "
                                                                 "(repeatable)")
    p.add_argument("--unit", action="append", help="units part: only this unit (repeatable)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--merge", nargs="+", metavar="REPORT",
                   help="run nothing: join these reports of parts run separately (later ones "
                        "win) into --json")
    p.set_defaults(func=cmd_stress)
    return p


def cmd_stress(args):
    from .stress_units import UNIT_CASES
    if args.merge:
        for path in args.merge:
            if not Path(path).is_file():
                raise ValueError(f"--merge: no report {path}")
        report = merge_reports([json.loads(Path(p).read_text()) for p in args.merge],
                               args.merge)
        print(format_report(report))
        write_json(args.json, report)
        return 0 if report["ok"] else 1
    for u in args.unit or ():
        if u not in UNIT_CASES:
            raise ValueError(f"unknown unit {u!r}; choose from {', '.join(UNIT_CASES)}")
    sizes = dict(FULL if args.full else SHORT)
    for key in sizes:
        value = getattr(args, key.replace("-", "_"), None)
        if value is not None:
            if value < 0:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 0, not {value}")
            sizes[key] = value
    print("trilut stress: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()), flush=True)
    report = run_stress(parts=args.only or PARTS, sizes=sizes, seconds=args.seconds,
                        seed=args.seed, units=args.unit)
    print(format_report(report))
    write_json(args.json, report)
    return 0 if report["ok"] else 1
