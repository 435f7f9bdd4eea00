# amaranth: UnusedElaboratable=no
"""``trilut demo``: the main job on the built-in model.

1. build the default accelerator (``trilut units``: ``top``) and its
   Verilator simulation behind the byte-level host bridge
   (:class:`~trilut.host.device.SimDevice`);
2. compile the shipped digits classifier (the int8 patch embedding, two
   ternary encoder blocks and the int8 classifier head) into one
   accelerator program (:func:`~trilut.host.compiler.compile_stack` with
   ``embed`` and ``head``): an image goes in as 16 int8 feature rows, its
   per-token int16 logits come back, the host sums them and takes the argmax;
3. classify the held-out digits three ways: float activations, the golden
   integer model, and the simulated accelerator driven through the host
   driver over the same framed byte protocol a board's UART carries;
   every image's logits must equal the golden ones integer for integer;
4. the first ``--board-images`` images again on the ULX3S-85F build's
   configuration: the simulated link throttled to its UART (its clock and
   the baud rate ``trilut build`` picks for it) and its SDRAM (LiteDRAM's
   controller and SDRAM model), the model's weights loaded into the SDRAM
   once before the timed images (the load's time reported apart), each
   image then sending its input and one FEED request and reading its
   result: the link's bytes per image each way, its requests and payload
   efficiency, the cycles an image takes end to end and so the images per
   second the board delivers (``images_per_s_board``, beside the
   compute-only ``images_per_s_at_fmax``);
5. the accelerator's Fmax on ECP5-85F: from the place-and-route report
   shipped in ``docs/bench/top_ecp5.json`` when that report was made from
   exactly this Verilog (same SHA-256; P&R of the whole accelerator takes
   15-25 minutes here), else (or with ``--synth``) by running Yosys and
   nextpnr-ecp5 now;
6. print (and with ``--json`` write) the summary.
"""
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


#: The board-true figures (:func:`_board_figures`), printed in a second table.
BOARD_COLUMNS = ["board_mhz", "baud", "link_bytes_host_to_device", "link_bytes_device_to_host",
                 "link_requests_per_image", "cycles_per_image_board", "images_per_s_link",
                 "images_per_s_board", "weights_load_s"]


class DemoFailure(RuntimeError):
    """The accelerator's output differed from the golden model's."""


def _step(i, n, text):
    print(f"[{i}/{n}] {text}", flush=True)


def _accuracy(pred, labels):
    return round(float(np.mean(np.asarray(pred) == np.asarray(labels))), 4)


def run_hw(pipeline, accel, images, *, progress=True, clk_hz=None, baud=None, sdram=False):
    """Run ``images`` through the whole classifier (embedding, encoder,
    head) on the simulated ``accel`` via the host driver, the link ideal (a byte per cycle) or, with ``clk_hz`` and
    ``baud``, a board's UART (:class:`~trilut.host.device.SimDevice`'s
    throttle). The simulation always has the ULX3S SDRAM behind the bridge
    (one Verilator build serves both of the demo's runs; an unused memory
    changes no cycle count); ``sdram``: the weights are loaded into it once
    before the images (:meth:`~trilut.host.driver.Driver.load_weights`) and
    fed from there, else sent with every image. Returns a dict: ``out`` (the
    int16 per-token logits), per run ``accel_cycles`` (the accelerator's counter),
    ``sim_cycles`` (everything the run took, link included) and ``traffic``
    (the link's bytes by request type,
    :meth:`trilut.host.protocol.Link.efficiency`); ``seconds``; with
    ``sdram`` also ``load`` (``bytes`` of weights, the load's ``cycles`` and
    ``link_bytes``)."""
    from ..host.compiler import compile_stack
    from ..host.device import SimDevice
    from ..host.driver import Driver

    embed, encoder, head = pipeline.classifier_params
    program = compile_stack(encoder, accel, seq=pipeline.config["tokens"], embed=embed,
                            head=head)
    inputs = pipeline.features(images)
    res = {"out": [], "accel_cycles": [], "sim_cycles": [], "traffic": []}
    with SimDevice(accel, clk_hz=clk_hz, baud=baud, sdram=True) as dev:
        driver = Driver(dev, accel)
        layout = None
        if sdram:
            start = dev.sync()
            layout = driver.load_weights(program, progress=False)
            total = driver.link.efficiency()["total"]
            res["load"] = {"bytes": sum(n for _, n in layout.values()),
                           "cycles": dev.sync() - start,
                           "link_bytes": total["sent"] + total["received"]}
        t0 = time.monotonic()
        for x in tqdm(inputs, desc="      accelerator", unit="img", disable=not progress,
                      leave=False):
            start = dev.sync()
            driver.link.traffic.clear()
            res["out"].append(driver.run(program, x, weights=layout)["logits"])
            res["sim_cycles"].append(dev.sync() - start)
            res["traffic"].append(driver.link.efficiency())
            res["accel_cycles"].append(driver.counters()["cycles"])
        res["seconds"] = time.monotonic() - t0
    res["out"] = np.stack(res["out"])
    return res


def _board_figures(pipe, accel, images, golden, clk_hz, baud, step):
    """The summary's board fields: ``images`` (the first ones; the figures
    are the last run's, so with two or more they are an image after the
    first, whose program and constants are already on the device) run
    again on the simulation of the ULX3S configuration (the link throttled
    to ``baud`` at ``clk_hz``, the weights in the SDRAM, loaded first),
    checked against ``golden``. ``images_per_s_link`` is the link's bound
    (stop and wait: requests and replies take turns on the line, so both
    directions' bytes count); ``images_per_s_board`` the measured
    end-to-end rate, compute and link together; ``weights_load_s`` the
    one-time load of ``weights_bytes`` into the SDRAM over the same link.
    All None without images."""
    keys = ["board_mhz", "baud", "dram", "link_bytes_per_s", "link_bytes_per_image",
            "link_bytes_host_to_device", "link_bytes_device_to_host",
            "link_requests_per_image", "link_efficiency", "cycles_per_image_board",
            "images_per_s_link", "images_per_s_board", "board_images", "weights_bytes",
            "weights_load_link_bytes", "weights_load_s"]
    if not len(images):
        step("board link: skipped (--board-images 0)")
        return dict.fromkeys(keys)
    step(f"the same on the board's configuration: UART {baud} baud at {clk_hz / 1e6:g} MHz "
         f"({10 * clk_hz / baud:g} cycles per byte), weights in the SDRAM (loaded once), "
         f"{len(images)} image(s)")
    run = run_hw(pipe, accel, images, clk_hz=clk_hz, baud=baud, sdram=True)
    bad = [i for i in range(len(images)) if not np.array_equal(run["out"][i], golden[i])]
    if bad:
        raise DemoFailure(f"on the throttled link the accelerator's logits differ from golden "
                          f"(image {bad[0]})")
    t = run["traffic"][-1]
    total = t.pop("total")
    h2d, d2h, cyc = total["sent"], total["received"], run["sim_cycles"][-1]
    per_s = baud / 10
    from .build import BOARDS
    load = run["load"]
    fig = dict(zip(keys, [
        round(clk_hz / 1e6, 4), baud, BOARDS["ulx3s-85f"].dram, per_s, h2d + d2h, h2d, d2h, total["requests"],
        {**t, "total": total}, cyc, round(per_s / (h2d + d2h), 2),
        round(clk_hz / cyc, 2), len(images), load["bytes"], load["link_bytes"],
        round(load["cycles"] / clk_hz, 3)]))
    print(f"      weights: {load['bytes']} bytes into the SDRAM once, "
          f"{fig['weights_load_s']} s over the link")
    print(f"      every image's logits equal to golden; per image: {h2d} bytes host -> "
          f"device, {d2h} device -> host in {total['requests']} requests (payload efficiency "
          f"{total['efficiency']:.1%}); {cyc} cycles = {fig['images_per_s_board']} images/s")
    return fig


def verilog_sha256(accel):
    """:func:`~trilut.gen.verilog.netlist_sha256` of the Verilog ``trilut synth
    --unit top`` generates for ``accel``."""
    from .verilog import generate_verilog, netlist_sha256
    fresh = type(accel)(**accel.params)         # a component elaborates once
    return netlist_sha256(generate_verilog(fresh, "top"))


def _recorded_pnr(accel):
    """The shipped P&R report if it was made from exactly ``accel``'s Verilog."""
    if not RECORDED_PNR.exists():
        return None
    rec = json.loads(RECORDED_PNR.read_text())
    return rec if rec.get("verilog_sha256") == verilog_sha256(accel) else None


def run_demo(args):
    from ..host.models.digits.pipeline import DigitsPipeline
    from .sweep import DEFAULT_CACHE, ResultCache, progress_printer, synth_unit

    settings = {**UNITS["top"].defaults, **parse_settings(args.set)}
    accel = UNITS["top"].cls(**settings)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.board_images < 0:
        raise ValueError(f"--board-images must be >= 0, not {args.board_images}")
    n_steps = 5 if args.skip_synth else 6
    print("trilut demo: the digits classifier on the simulated accelerator\n  accelerator: " +
          " ".join(f"{k}={v}" for k, v in accel.params.items()))

    _step(1, n_steps, "compile the built-in model (int8 embedding, 2 ternary encoder blocks, "
                      "int8 head; 16 tokens)")
    pipe = DigitsPipeline()
    images, labels = pipe.x_test, pipe.y_test
    if args.images:
        images, labels = images[:args.images], labels[:args.images]
    n = len(images)
    print(f"      {n} held-out images; weights and constants from "
          f"host/models/digits (calibrated on training images)")

    _step(2, n_steps, "float and golden integer reference")
    acc_float = _accuracy(pipe.classify_float(images), labels)
    golden = pipe.logits(images)
    acc_golden = _accuracy(pipe.classify_logits(golden), labels)
    print(f"      float {100 * acc_float:.2f}%, golden integer {100 * acc_golden:.2f}%")

    _step(3, n_steps, "simulated accelerator through the host driver (Verilator; the first "
                      "run compiles the simulator, a few minutes)")
    ideal = run_hw(pipe, accel, images)
    hw = ideal["out"]
    bad = [i for i in range(n) if not np.array_equal(hw[i], golden[i])]
    acc_hw = _accuracy(pipe.classify_logits(hw), labels)
    if bad:
        raise DemoFailure(f"the accelerator's logits differ from golden on {len(bad)} of {n} "
                          f"images (first: image {bad[0]})")
    cycles = int(np.median(ideal["accel_cycles"]))
    sim_rate = sum(ideal["sim_cycles"]) / ideal["seconds"]
    print(f"      {n} images, every image's logits equal to golden (0 mismatches); "
          f"accuracy {100 * acc_hw:.2f}%; {cycles} accelerator cycles per image; "
          f"simulation {sim_rate / 1e3:.0f}k cycles/s")

    from .build import board_link
    clk_hz, baud = board_link(freq_mhz=args.board_mhz)
    board = _board_figures(pipe, accel, images[:args.board_images], golden, clk_hz, baud,
                           lambda text: _step(4, n_steps, text))

    fmax = synth = None
    if not args.skip_synth:
        synth = None if args.synth else _recorded_pnr(accel)
        if synth:
            _step(5, n_steps, f"Fmax: the measured place-and-route report of this exact "
                              f"Verilog ({RECORDED_PNR.name}; --synth runs it again)")
        else:
            _step(5, n_steps, "Yosys + nextpnr-ecp5 for LFE5U-85F (out of context, classic "
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
        "sim_cycles_per_s": round(sim_rate),
        **board,
        "accelerator": accel.params,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if synth:
        summary.update({k: synth.get(k) for k in ("lut4", "ff", "mult18", "dp16kd", "mapper")})
    print(format_table([summary], SUMMARY_COLUMNS))
    if board["board_mhz"] is not None:
        which = "an image after the first" if board["board_images"] > 1 else "the first image"
        print(f"\non a ULX3S-85F build ({board['board_mhz']:g} MHz, UART {baud} baud = "
              f"{baud // 10} bytes/s each way, weights in its SDRAM; {which}):")
        print(format_table([summary], BOARD_COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return summary
