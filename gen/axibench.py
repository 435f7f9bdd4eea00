# amaranth: UnusedElaboratable=no
"""Bandwidth utilisation of the AXI4 read master on long sequential reads.

Each row is one Verilator run of ``sim/tb_axi.py``'s ``throughput`` test: one
command of ``beats`` words from address 0, against cocotbext-axi's AXI4 slave
with a pipelined response latency (cycles from the AR handshake to the
slave starting that burst), no pauses, ``data`` always ready. Every word is
checked against the memory; utilisation is words delivered per cycle from the
command's handshake to the last word's (1.0 is the port's peak: one
full-width beat per cycle). ``first_word``: cycles from the command to the
first word, ``memory_latency`` the part of them from the AR handshake to the
first R handshake. Run::

    python -m trilut.gen.axibench --json docs/bench/axi_master.json

(a few minutes: one Verilator build per data width and outstanding count).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from ..sim import tb_axi
from .synth import format_table

__all__ = ["run_axi_bench"]

COLUMNS = ["data_bits", "outstanding", "latency", "beats", "cycles", "utilisation",
           "first_word", "memory_latency"]
#: (data_bits, outstanding): 128 bits is the KV260's HP port.
CONFIGS = [(128, 1), (128, 2), (128, 4), (64, 1), (64, 4)]
LATENCIES = (20, 40)
BEATS = 16384


def run_axi_bench(configs=CONFIGS, latencies=LATENCIES, beats=BEATS, progress=print):
    rows = []
    for data_bits, outstanding in configs:
        params = dict(data_bits=data_bits, outstanding=outstanding)
        for latency in latencies:
            t0 = time.monotonic()
            progress(f"data_bits {data_bits}, outstanding {outstanding}, latency {latency}: "
                     f"{beats} words on Verilator ...")
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "report.json"
                tb_axi.run(params, testcase="throughput", report=report,
                           bench={"beats": beats, "latency": latency})
                r = json.loads(report.read_text())
            progress(f"  {r['utilisation']:.3f} words/cycle ({time.monotonic() - t0:.0f} s)")
            rows.append({"data_bits": data_bits, "outstanding": outstanding,
                         "latency": latency, "beats": r["beats"], "cycles": r["cycles"],
                         "utilisation": round(r["utilisation"], 4),
                         "first_word": r["first_word"], "memory_latency": r["memory_latency"]})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--beats", type=int, default=BEATS, help="words per run")
    args = ap.parse_args(argv)
    rows = run_axi_bench(beats=args.beats)
    print(format_table(rows, COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "memory": "cocotbext-axi AxiSlave, pipelined latency, no pauses",
            "defaults": {"max_burst": 256, "buffer_beats": "2 bursts"},
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
