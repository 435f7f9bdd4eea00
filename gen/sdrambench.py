# amaranth: UnusedElaboratable=no
"""Bandwidth of the ULX3S SDRAM subsystem (hw/sdram.py), measured through the
real LiteDRAM controller and its SDRAM model on Verilator, and the decode
roofline it sets. Run::

    python -m trilut.gen.sdrambench --synth --json docs/bench/sdram.json

(about 5 minutes the first time: generating both cores, one Verilator build,
and with ``--synth`` Yosys + nextpnr of the board core and wrapper on
ECP5-85F, out of context, the PHY's I/O flip-flops moved into the fabric:
:func:`fabric_io_flops`).

Figures (``sim/tb_sdram.py``, test ``throughput``, every word compared):
sequential write and read in bursts of ``max_burst`` words with no idle
gaps and no backpressure; the latency of a lone one-word read (from the
cycle its command is presented to the cycle its word is taken); one-word
reads at random addresses, back to back. MB/s = words/cycle x word bytes
x the clock the controller was generated for.

Roofline: a decoder reads every weight once per generated token, so
tokens/s <= bandwidth / bytes per token. Bytes per token count the ternary
linears at 2 bits, the LM head at 8 bits, one embedding row and the norms
at 16 bits, and at a context of T tokens the int8 K and V rows of every
layer; the models are the built-in LM (``host/models/lm``) and BitNet b1.58
0.73B (``bitnet_b1_58-large``'s config).
"""
import argparse
import json
import math
import re
import tempfile
from pathlib import Path

from ..golden.llm import LlamaConfig, float_weight_shapes
from ..hw.sdram import SDRAM, SIM_INIT_WAIT
from ..sim import tb_sdram
from ..sim.runner import BUILD_ROOT, run_cocotb
from .litedram import core_params, generate, verilog_with_core
from .sweep import progress_printer, write_json
from .synth import format_table, synthesize

__all__ = ["SIM_PARAMS", "MODELS", "simulate", "bytes_per_token", "roofline", "fabric_io_flops",
           "measure"]

#: The testbench's wrapper: defaults, but a 64-cycle power-up wait (the
#: SDRAM model needs none; the board build keeps the 200 us).
SIM_PARAMS = dict(init_wait=SIM_INIT_WAIT, max_burst=256, fifo_depth=32)

#: Decoders for the roofline: the built-in LM's shape and BitNet b1.58 0.73B
#: (hidden 1536, 24 layers, 16 heads, FFN 4096, vocabulary 32002, untied head).
MODELS = {
    "built-in LM": LlamaConfig(vocab=256, hidden=256, layers=4, heads=4, kv_heads=2, ffn=688,
                               max_pos=256),
    "BitNet b1.58 0.73B": LlamaConfig(vocab=32002, hidden=1536, layers=24, heads=16,
                                      kv_heads=16, ffn=4096, sub_norm=True, max_pos=2048),
}
_TERNARY = ("q", "k", "v", "o", "gate", "up", "down")
COLUMNS = ["figure", "value", "unit"]
ROOF_COLUMNS = ["model", "params_m", "stored_mb", "fits_32mb", "context", "bytes_per_token",
                "tokens_per_s"]


def simulate(*, seed=1, broken=False, testcase=None, results=None, **params):
    """Build (cached) and run ``sim/tb_sdram.py`` on the ``--sim`` core; returns
    the number of cocotb tests that passed (raises ``SimFailure`` otherwise)."""
    params = {**SIM_PARAMS, **params, "core": core_params(generate(sim=True))}
    top = tb_sdram.build(params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken,
                                    "results": str(results) if results else None})}
    name = "sdram" + ("-broken" if broken else "") + (f"-{testcase}" if testcase else "")
    return run_cocotb(verilog_with_core(top, "sdram"), "sdram", "trilut.sim.tb_sdram",
                      name=name, env=env, testcase=testcase, seed=seed)


def bytes_per_token(cfg, context=0):
    """Bytes a decode step of ``cfg`` reads from memory at ``context`` cached
    tokens, the bytes the model takes in memory (the whole embedding table,
    no KV cache), and its parameter count: ``(per_token, stored, params)``."""
    per_token = stored = 0.0
    params = 0
    for name, shape in float_weight_shapes(cfg).items():
        n = math.prod(shape)
        params += n
        leaf = name.rsplit(".", 1)[-1]
        size = n * 2 / 8 if leaf in _TERNARY else n if leaf == "head" else 2 * n
        stored += size
        per_token += 2 * cfg.hidden if leaf == "embed" else size     # one embedding row
    per_token += 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * context
    return int(per_token), int(stored), params


def roofline(bandwidth_b_s, *, contexts=(0, 128)):
    """One row per model and context: bytes per token and the tokens/s ceiling."""
    rows = []
    for model, cfg in MODELS.items():
        for t in contexts:
            per_token, stored, params = bytes_per_token(cfg, t)
            rows.append({"model": model, "params_m": round(params / 1e6, 2), "context": t,
                         "stored_mb": round(stored / 2**20, 2),
                         "fits_32mb": stored <= 32 << 20, "bytes_per_token": per_token,
                         "tokens_per_s": round(bandwidth_b_s / per_token, 2)})
    return rows


def fabric_io_flops(verilog):
    """The board core's Verilog with its I/O flip-flops (``OFS1P3BX`` /
    ``IFS1P3BX``, which nextpnr packs into IOLOGIC only at constrained pins)
    replaced by the same flip-flops in fabric, so that the out-of-context
    flow measures it; for measurement only."""
    text = re.sub(r"^(O|I)FS1P3BX ", lambda m: f"trilut_{m[1].lower()}fs1p3bx ", verilog,
                  flags=re.M)
    return text + "".join(
        f"\nmodule trilut_{k}fs1p3bx(input D, PD, SCLK, SP, output reg Q);\n"
        "  always @(posedge SCLK) if (PD) Q <= 1'b1; else if (SP) Q <= D;\nendmodule\n"
        for k in "oi")


def measure(*, seed=1, synth=False):
    """Run the throughput test (and with ``synth`` the ECP5 flow); returns the
    JSON record."""
    say = progress_printer("sdrambench: ")
    say("generating the simulation core and building Verilator (cached)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        simulate(seed=seed, testcase="throughput", results=out)
        fig = json.loads(out.read_text())
    word_b, clk = fig["word_bytes"], fig["clock_mhz"] * 1e6
    record = {
        "controller": "LiteDRAM (litedram_gen, SDR, GENSDRPHY, MT48LC16M16 x16), native port",
        "measured_on": "Verilator, litedram_gen --sim (SDRAMPHYModel behind the controller)",
        "clock_mhz": fig["clock_mhz"], "word_bits": 8 * word_b,
        "burst_words": fig["burst_words"], "seq_words": fig["seq_words"],
        "seq_read_words_per_cycle": round(fig["seq_read_words_per_cycle"], 4),
        "seq_read_mb_s": round(fig["seq_read_words_per_cycle"] * word_b * clk / 1e6, 1),
        "seq_write_words_per_cycle": round(fig["seq_write_words_per_cycle"], 4),
        "seq_write_mb_s": round(fig["seq_write_words_per_cycle"] * word_b * clk / 1e6, 1),
        "peak_mb_s": word_b * clk / 1e6,
        "read_latency_cycles": fig["read_latency_cycles"],
        "random_read_words_per_cycle": round(fig["random_read_words_per_cycle"], 4),
        "random_read_mb_s": round(fig["random_read_words_per_cycle"] * word_b * clk / 1e6, 1),
    }
    record["roofline"] = roofline(record["seq_read_mb_s"] * 1e6)
    if synth:
        say("Yosys + nextpnr of the board core and wrapper on ECP5-85F (a few minutes)")
        text = fabric_io_flops(verilog_with_core(SDRAM(generate(sim=False)), "sdram"))
        rep = synthesize(text, "sdram", "ecp5-85f", work_dir=BUILD_ROOT / "synth" / "sdram",
                         freq_mhz=fig["clock_mhz"], seed=seed, progress=say)
        record["ecp5_85f"] = {k: rep.get(k) for k in ("lut4", "ff", "dp16kd", "fmax_mhz",
                                                      "timing_met")}
        record["ecp5_85f"].update(target_mhz=fig["clock_mhz"], seed=seed,
                                  note="out of context; the PHY's I/O flip-flops in fabric")
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trilut.gen.sdrambench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the record here (e.g. docs/bench/sdram.json)")
    ap.add_argument("--synth", action="store_true",
                    help="also place and route the board core + wrapper on ECP5-85F")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rec = measure(seed=args.seed, synth=args.synth)
    unit = {"mb_s": "MB/s", "words_per_cycle": "words/cycle", "cycles": "cycles"}
    rows = [{"figure": k, "value": v, "unit": next((u for s, u in unit.items() if k.endswith(s)),
                                                    "")}
            for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows += [{"figure": f"ecp5_85f {k}", "value": v, "unit": ""}
             for k, v in rec.get("ecp5_85f", {}).items()]
    print(format_table(rows, COLUMNS))
    print()
    print(format_table(rec["roofline"], ROOF_COLUMNS))
    write_json(args.json, rec)


if __name__ == "__main__":
    main()
