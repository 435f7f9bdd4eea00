"""``trilut demo``: the main job on the default configuration.

1. generate the default TLMM engine's Verilog;
2. run its cocotb regression on Verilator (random rows, int8 extremes, a
   zero-stall rate check, the error flag), every output compared with the
   golden model integer for integer;
3. synthesize, place and route it out of context for ECP5-85F;
4. print (and optionally write as JSON) a summary.
"""
import json
import time
from pathlib import Path

from .synth import format_table
from .units import UNITS, parse_settings

DEMO_DIR = Path("build/demo")


def _step(i, n, text):
    print(f"[{i}/{n}] {text}", flush=True)


def run_demo(args):
    from ..sim import tb_matmul
    from .cli import _progress, synth_unit

    settings = {**UNITS["tlmm"].defaults, **parse_settings(args.set)}
    settings.setdefault("max_k", 4 * settings["group"] * settings["tables"])
    engine = UNITS["tlmm"].cls(**settings)
    engine._MustUse__silence = True      # used for its properties; simulated and built below
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print("trilut demo: table-lookup ternary matmul engine, " +
          " ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"  {engine.macs_per_cycle} ternary MACs/cycle, K up to {engine.max_k}, "
          f"{engine.acc_bits}-bit accumulators, {engine.entries}-entry tables")

    _step(1, 3, "Verilator regression against the golden model "
                "(first run compiles the simulator, ~1 min)")
    report = DEMO_DIR / "sim_report.json"
    report.unlink(missing_ok=True)
    tests = tb_matmul.run("tlmm", settings, report=report)
    checked = json.loads(report.read_text())
    rate = checked["full_rate"]
    beats_per_cycle = rate["weight_beats"] / rate["cycles"]
    print(f"      {tests} cocotb tests passed: {checked['outputs']} outputs of "
          f"{checked['rows']} rows equal to golden, 0 mismatches; "
          f"{100 * beats_per_cycle:.1f}% of peak rate without stalls")

    _step(2, 3, "Yosys + nextpnr-ecp5 for LFE5U-85F (out of context, ~1-2 min)")
    synth = synth_unit("tlmm", settings, "ecp5-85f", work_root=DEMO_DIR / "synth",
                       progress=_progress("      "))

    _step(3, 3, "summary")
    fmax = synth["fmax_mhz"]
    summary = {
        "engine": "tlmm", "params": settings, "macs_per_cycle": engine.macs_per_cycle,
        "cocotb_tests_passed": tests, "outputs_checked": checked["outputs"],
        "mismatches": 0, "peak_rate_fraction": round(beats_per_cycle, 4),
        "lut4": synth["lut4"], "ff": synth["ff"], "dp16kd": synth["dp16kd"],
        "mult18": synth["mult18"], "fmax_mhz": fmax,
        "gmacs_at_fmax": round(engine.macs_per_cycle * fmax / 1000, 2) if fmax else None,
        "lut4_per_mac": round(synth["lut4"] / engine.macs_per_cycle, 2),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(format_table([summary], ["macs_per_cycle", "outputs_checked", "mismatches",
                                   "peak_rate_fraction", "lut4", "ff", "dp16kd",
                                   "lut4_per_mac", "fmax_mhz", "gmacs_at_fmax"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return summary
