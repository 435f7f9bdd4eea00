# amaranth: UnusedElaboratable=no
"""Loading the built-in LM's weights into the ULX3S SDRAM over the host link.

Run::

    python -m trilut.gen.memlinkbench --json docs/bench/memlink.json

The weights are the built-in LM's (``host/models/lm``, quantized by
:func:`trilut.host.llama.quantize`) as the SDRAM would hold them: every
ternary linear packed 2 bits a weight (:func:`trilut.host.llama.pack_ternary`,
``(out, in)``), the int8 LM head and the int16 embedding table, one blob
each, loaded by :meth:`trilut.host.driver.Driver.load_weights` into a
``SimDevice(sdram=True)`` (the bridge, LiteDRAM's controller and its SDRAM
model in Verilator). Two runs:

1. the whole image at one link byte per cycle, read back and compared
   byte for byte (``verify``);
2. the first ``--kb`` KB of it (default 64; ``--full``: all of it, ~30
   minutes of simulation) with the link throttled to the ULX3S build's
   UART (the rate ``trilut build`` chooses for the board clock: 2 Mbaud at
   50 MHz), timed in simulated cycles: the load rate a board achieves, and
   the whole image's load time at that rate.
"""
import argparse
import sys
import time

import numpy as np

from ..host.device import SimDevice
from ..host.driver import Driver
from ..host.llama import load_llama, pack_ternary, quantize
from ..host.models.lm import MODEL_DIR
from .build import board_link
from .sweep import progress_printer, write_json
from .synth import format_table

__all__ = ["lm_blobs", "measure", "main"]

#: The accelerator behind the bridge (the memory path does not depend on it:
#: the small configuration of tests/test_device.py keeps the build short).
PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=32, prog_depth=16, const_sets=4)
BOARD = "ulx3s-85f"
COLUMNS = ["figure", "value", "unit"]


def lm_blobs(model_dir=MODEL_DIR):
    """``{name: bytes}``: the built-in LM's weights as stored in the SDRAM."""
    params = quantize(load_llama(model_dir))
    blobs = {"embed": params.embed.astype("<i2").tobytes()}
    for i, layer in enumerate(params.layers):
        for name in ("q", "k", "v", "o", "gate", "up", "down"):
            lin = getattr(layer, name)
            if lin.kind != "ternary":
                raise ValueError(f"layer {i} {name}: expected ternary weights, not {lin.kind}")
            blobs[f"layers.{i}.{name}"] = pack_ternary(np.asarray(lin.weights).T).tobytes()
    blobs["head"] = np.asarray(params.head.weights, np.int8).T.tobytes()
    return blobs


def _load(dev, blobs, *, verify, log):
    drv = Driver(dev, PARAMS)
    c0 = dev.sync()
    t0 = time.monotonic()
    layout = drv.load_weights(blobs, verify=False,
                              progress=lambda done, total: log(f"  {done:,} / {total:,} bytes"))
    cycles = dev.sync() - c0
    wall = time.monotonic() - t0
    if verify:
        end = max(a + n for a, n in layout.values())
        back = drv.read_memory(0, end)
        bad = sum(back[a:a + n] != blobs[name] for name, (a, n) in layout.items())
        if bad:
            raise RuntimeError(f"{bad} weight blobs read back differently")
    return cycles, wall, drv.link.efficiency()["MEM_WRITE"]


def measure(*, kb=64, full=False, log=None):
    log = log or progress_printer(file=sys.stderr)
    blobs = lm_blobs()
    total = sum(len(b) for b in blobs.values())
    log(f"built-in LM: {len(blobs)} weight blobs, {total:,} bytes")
    clk_hz, baud = board_link(BOARD)
    rec = {"model": "built-in LM (host/models/lm)", "blobs": len(blobs), "bytes": total,
           "clk_hz": clk_hz, "baud": baud, "line_bytes_per_s": baud / 10}

    log("1. the whole image at a byte per cycle, read back and compared")
    with SimDevice(PARAMS, sdram=True) as dev:
        cycles, wall, _ = _load(dev, blobs, verify=True, log=log)
    rec.update(fast_cycles=cycles, fast_wall_s=round(wall, 1), verified=True)

    image = b"".join(blobs.values()) if full else b"".join(blobs.values())[:kb << 10]
    part = {"image": image}
    log(f"2. {len(image):,} bytes at {baud} baud, {clk_hz / 1e6:g} MHz "
        f"({10 * clk_hz / baud:g} cycles a byte)")
    with SimDevice(PARAMS, sdram=True, clk_hz=clk_hz, baud=baud) as dev:
        cycles, wall, traffic = _load(dev, part, verify=False, log=log)
    seconds = cycles / clk_hz
    rate = len(image) / seconds
    rec.update(board_bytes=len(image), board_cycles=cycles, board_s=round(seconds, 4),
               board_bytes_per_s=round(rate), board_efficiency=round(rate / (baud / 10), 4),
               board_sim_wall_s=round(wall, 1),
               link_bytes_sent=traffic["sent"], link_bytes_received=traffic["received"],
               full_load_s=round(total / rate, 2),
               full_load_note="measured" if full else
               f"the whole image at the rate measured on its first {len(image):,} bytes")
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trilut.gen.memlinkbench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the record here (e.g. docs/bench/memlink.json)")
    ap.add_argument("--kb", type=int, default=64,
                    help="KB of the image loaded at the board's link rate (default 64)")
    ap.add_argument("--full", action="store_true",
                    help="load the whole image at the board's rate (~30 min of simulation)")
    args = ap.parse_args(argv)
    if args.kb < 1:
        ap.error("--kb must be >= 1")
    rec = measure(kb=args.kb, full=args.full)
    units = {"per_s": "bytes/s", "bytes": "bytes", "cycles": "cycles", "_s": "s", "hz": "Hz",
             "baud": "baud"}
    rows = [{"figure": k, "value": v,
             "unit": next((u for s, u in units.items() if k.endswith(s)), "")}
            for k, v in rec.items() if not isinstance(v, str)]
    print(format_table(rows, COLUMNS))
    print(rec["full_load_note"])
    write_json(args.json, rec)


if __name__ == "__main__":
    main()
