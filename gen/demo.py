# amaranth: UnusedElaboratable=no
"""``trilut demo``: the main job on the built-in model.

1. build the default accelerator (``trilut units``: ``top``) and its
   Verilator simulation behind the byte-level host bridge
   (:class:`~trilut.host.device.SimDevice`);
2. compile the shipped digits classifier (two ternary encoder blocks) into
   one accelerator program (:func:`~trilut.host.compiler.compile_stack`);
3. classify the held-out digits three ways: float activations, the golden
   integer model, and the simulated accelerator driven through the host
   driver over the same framed byte protocol a board's UART carries;
   every hardware output must equal the golden output integer for integer;
4. the accelerator's Fmax on ECP5-85F: from the place-and-route report
   shipped in ``docs/bench/top_ecp5.json`` when that report was made from
   exactly this Verilog (same SHA-256; P&R of the whole accelerator takes
   15-25 minutes here), else (or with ``--synth``) by running Yosys and
   nextpnr-ecp5 now;
5. print (and with ``--json`` write) the summary.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .synth import format_table
from .units import UNITS, parse_settings

DEMO_DIR = Path("build/demo")
# The measured P&R report of the default accelerator (written by
# `trilut synth --unit top --mapper abc --json docs/bench/top_ecp5.json`).
RECORDED_PNR = Path(__file__).resolve().parent.parent / "docs" / "bench" / "top_ecp5.json"
SUMMARY_COLUMNS = ["images", "accuracy_float", "accuracy_golden", "accuracy_hw",
                   "hw_matches_golden", "cycles_per_image", "fmax_mhz", "images_per_s_at_fmax",
                   "sim_cycles_per_s"]


class DemoFailure(RuntimeError):
    """The accelerator's output differed from the golden model's."""


def _step(i, n, text):
    print(f"[{i}/{n}] {text}", flush=True)


def _accuracy(pred, labels):
    return round(float(np.mean(np.asarray(pred) == np.asarray(labels))), 4)


def run_hw(pipeline, accel, images, *, progress=True):
    """Run ``images`` through the encoder on the simulated ``accel`` via the
    host driver. Returns (int16 encoder outputs, accelerator cycles per run,
    simulated cycles, wall seconds)."""
    from ..host.compiler import compile_stack
    from ..host.device import SimDevice
    from ..host.driver import Driver

    program = compile_stack(pipeline.params, accel, seq=pipeline.config["tokens"])
    inputs = pipeline.encoder_input(images)
    outs, run_cycles = [], []
    with SimDevice(accel) as dev:
        driver = Driver(dev, accel)
        sim0, t0 = dev.sync(), time.monotonic()
        for x in tqdm(inputs, desc="      accelerator", unit="img", disable=not progress,
                      leave=False):
            outs.append(driver.run(program, x)["out"])
            run_cycles.append(driver.counters()["cycles"])
        seconds = time.monotonic() - t0
        sim_cycles = dev.sync() - sim0
    return np.stack(outs), run_cycles, sim_cycles, seconds


def verilog_sha256(accel):
    """SHA-256 of the Verilog ``trilut synth --unit top`` generates for ``accel``."""
    from .verilog import generate_verilog
    fresh = type(accel)(**accel.params)         # a component elaborates once
    return hashlib.sha256(generate_verilog(fresh, "top").encode()).hexdigest()


def _recorded_pnr(accel):
    """The shipped P&R report if it was made from exactly ``accel``'s Verilog."""
    if not RECORDED_PNR.exists():
        return None
    rec = json.loads(RECORDED_PNR.read_text())
    return rec if rec.get("verilog_sha256") == verilog_sha256(accel) else None


def run_demo(args):
    from ..golden.encoder import encoder_stack
    from ..host.models.digits.pipeline import DigitsPipeline
    from .sweep import DEFAULT_CACHE, ResultCache, progress_printer, synth_unit

    settings = {**UNITS["top"].defaults, **parse_settings(args.set)}
    accel = UNITS["top"].cls(**settings)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    n_steps = 4 if args.skip_synth else 5
    print("trilut demo: the digits classifier on the simulated accelerator\n  accelerator: " +
          " ".join(f"{k}={v}" for k, v in accel.params.items()))

    _step(1, n_steps, "compile the built-in model (2 ternary encoder blocks, 16 tokens)")
    pipe = DigitsPipeline()
    images, labels = pipe.x_test, pipe.y_test
    if args.images:
        images, labels = images[:args.images], labels[:args.images]
    n = len(images)
    print(f"      {n} held-out images; weights and constants from "
          f"host/models/digits (calibrated on training images)")

    _step(2, n_steps, "float and golden integer reference")
    acc_float = _accuracy(pipe.classify_float(images), labels)
    golden = encoder_stack(pipe.encoder_input(images), pipe.params)
    acc_golden = _accuracy(pipe.classify_from_encoder_output(golden), labels)
    print(f"      float {100 * acc_float:.2f}%, golden integer {100 * acc_golden:.2f}%")

    _step(3, n_steps, "simulated accelerator through the host driver (Verilator; the first "
                      "run compiles the simulator, a few minutes)")
    hw, run_cycles, sim_cycles, seconds = run_hw(pipe, accel, images)
    bad = [i for i in range(n) if not np.array_equal(hw[i], golden[i])]
    acc_hw = _accuracy(pipe.classify_from_encoder_output(hw), labels)
    if bad:
        raise DemoFailure(f"accelerator output differs from golden on {len(bad)} of {n} "
                          f"images (first: image {bad[0]})")
    cycles = int(np.median(run_cycles))
    print(f"      {n} images, every encoder output equal to golden (0 mismatches); "
          f"accuracy {100 * acc_hw:.2f}%; {cycles} accelerator cycles per image; "
          f"simulation {sim_cycles / seconds / 1e3:.0f}k cycles/s")

    fmax = synth = None
    if not args.skip_synth:
        synth = None if args.synth else _recorded_pnr(accel)
        if synth:
            _step(4, n_steps, f"Fmax: the measured place-and-route report of this exact "
                              f"Verilog ({RECORDED_PNR.name}; --synth runs it again)")
        else:
            _step(4, n_steps, "Yosys + nextpnr-ecp5 for LFE5U-85F (out of context, classic "
                              "ABC mapping; 15-25 minutes)")
            synth = synth_unit("top", settings, "ecp5-85f", work_root=DEMO_DIR / "synth",
                               cache=ResultCache(DEFAULT_CACHE), mapper="abc",
                               progress=progress_printer("      "))
        fmax = synth["fmax_mhz"]
        print(f"      {synth['lut4']} LUT4, {synth['ff']} FF, {synth['mult18']} MULT18X18D, "
              f"{synth['dp16kd']} DP16KD; Fmax {fmax} MHz")

    _step(n_steps, n_steps, "summary")
    summary = {
        "images": n, "accuracy_float": acc_float, "accuracy_golden": acc_golden,
        "accuracy_hw": acc_hw, "hw_matches_golden": not bad, "cycles_per_image": cycles,
        "fmax_mhz": fmax,
        "images_per_s_at_fmax": round(fmax * 1e6 / cycles, 1) if fmax else None,
        "sim_cycles_per_s": round(sim_cycles / seconds),
        "accelerator": accel.params,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if synth:
        summary.update({k: synth.get(k) for k in ("lut4", "ff", "mult18", "dp16kd", "mapper")})
    print(format_table([summary], SUMMARY_COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return summary
