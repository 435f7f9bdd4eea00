# amaranth: UnusedElaboratable=no
"""Cycles per matmul of the TLMM engine alone, on Verilator: the default
accelerator's engine (``UNITS["top"]``: G = 3, T = 2, L = 16, full tables in
block RAM, 96 MACs/cycle) at one table entry built per cycle and at its
default build rate, for the digits model's and all-MiniLM-L6-v2's linear
shapes at 16 rows (tokens).

Every matmul is checked against golden by the testbench (``sim/tb_matmul.py``,
test ``shapes``: no idle gaps, no backpressure) and its cycles, from the first
activation beat to the last result, against the engine's analytic
``cycles()``. Run::

    python -m trilut.gen.enginebench --json docs/bench/tlmm_build.json

(about 5 minutes: two Verilator builds and 2 x 7 matmuls).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from ..hw.matmul import TLMMEngine
from ..sim import tb_matmul
from .synth import format_table
from .units import UNITS

__all__ = ["SHAPES", "engine_params", "run_engine_bench"]

ROWS = 16
#: (model, K, N) of the linear layers: digits (hidden 64, FFN 256; q/k/v/o,
#: fc1, fc2) and all-MiniLM-L6-v2 (hidden 384, FFN 1536).
SHAPES = [("digits", 64, 64), ("digits", 64, 192), ("digits", 64, 256), ("digits", 256, 64),
          ("minilm", 384, 384), ("minilm", 384, 1536), ("minilm", 1536, 384)]
COLUMNS = ["model", "rows", "k", "n", "build_rate", "build_words", "cycles", "estimate",
           "macs_per_cycle", "of_peak"]
_ENGINE_KEYS = ("group", "tables", "lanes", "encoding", "table_ram")


def engine_params(max_k):
    """The default accelerator's TLMM engine parameters, with ``max_k``."""
    top = UNITS["top"].defaults
    return dict({k: top[k] for k in _ENGINE_KEYS}, max_k=max_k)


def run_engine_bench(rates=(1, None), progress=print):
    """One row per (build rate, shape): measured cycles and MACs/cycle."""
    params = engine_params(max(k for _, k, _ in SHAPES))
    rows = []
    for rate in rates:
        engine = TLMMEngine(**params) if rate is None else TLMMEngine(**params, build_rate=rate)
        p = dict(params, build_rate=engine.build_rate)
        t0 = time.monotonic()
        progress(f"build_rate {engine.build_rate}: {len(SHAPES)} matmuls on Verilator ...")
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            tb_matmul.run("tlmm", p, testcase="shapes", report=report,
                          shapes=[[ROWS, k, n] for _, k, n in SHAPES])
            measured = json.loads(report.read_text())["shapes"]
        progress(f"  done in {time.monotonic() - t0:.0f} s")
        for (model, _, _), r in zip(SHAPES, measured):
            macs = r["rows"] * r["k"] * r["n"] / r["cycles"]
            rows.append({"model": model, **r, "build_rate": engine.build_rate,
                         "build_words": engine.build_words,
                         "macs_per_cycle": round(macs, 2),
                         "of_peak": round(macs / engine.macs_per_cycle, 4),
                         "macs_per_cycle_peak": engine.macs_per_cycle})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args(argv)
    rows = run_engine_bench()
    print(format_table(rows, COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        engine = engine_params(max(k for _, k, _ in SHAPES))
        Path(args.json).write_text(json.dumps({"engine": engine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
