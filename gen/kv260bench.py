"""The KV260 top on Verilator, driven by the PYNQ host code: what one
encoder block run costs with its weights read from DDR.

Each row is one run of ``sim/tb_kv260.py``'s ``resident_block`` test (the
small block of ``tests/test_kv260.py``: 4 heads, hidden 32, FFN 64, 7
tokens; weights loaded once into the simulated DDR, two runs, both checked
against golden); ``pause`` is the probability of a pause cycle on every AXI
channel (AR, R, the AXI4-Lite channels, both streams). The figures are the
accelerator's counters of the second run (``cycles`` from start to END;
``wgt_wait``: cycles a LINEAR waited for weights that had not arrived;
``wgt_load``: cycles the weight store took a transfer) and the bytes the
HP0 master read per run. The DDR model answers without latency beyond its
pauses. Run::

    python -m trilut.gen.kv260bench --json docs/bench/kv260_sim.json
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ..sim import tb_kv260
from .synth import format_table

__all__ = ["run_kv260_bench", "PARAMS"]

#: The accelerator of tests/test_kv260.py (128-bit rows and weight transfers).
PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=64, prog_depth=32, const_sets=12, axis_bytes=16)
COLUMNS = ["pause", "cycles", "wgt_load", "wgt_wait", "weight_bytes", "hp0_beats", "wall_s"]
PAUSES = (0.0, 0.3)


def run_kv260_bench(pauses=PAUSES, progress=print):
    rows = []
    for pause in pauses:
        t0 = time.monotonic()
        progress(f"pause {pause}: a block twice through PynqDevice + Driver on Verilator ...")
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            tb_kv260.run(PARAMS, testcase="resident_block", pause=pause, report=report)
            r = json.loads(report.read_text())
        c = r["counters"]
        rows.append({"pause": pause, "cycles": c["cycles"], "wgt_load": c["wgt_load"],
                     "wgt_wait": c["wgt_wait"], "weight_bytes": r["weight_bytes"],
                     "hp0_beats": r["hp0_beats"], "wall_s": round(time.monotonic() - t0, 1)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args(argv)
    rows = run_kv260_bench(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(rows, COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "params": PARAMS, "block": {"hidden": 32, "heads": 4, "ffn": 64, "seq": 7},
            "memory": "cocotbext-axi AxiSlaveRead, no latency beyond the pauses",
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
