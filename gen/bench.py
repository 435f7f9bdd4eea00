# amaranth: UnusedElaboratable=no
# (bench block --model wide builds an Accelerator only to size its weight store)
"""Benchmarks: ``trilut bench tlmm`` (TLMM against the direct adder tree, in
one run), ``trilut bench units`` (the row units' cost), ``trilut bench
block`` (cycles of a whole encoder block on the simulated accelerator) and
``trilut bench decode`` (the LLM decoder, gen/decodebench.py).

For every target rate S (ternary MACs per cycle) and group size G, the lanes
L are fixed and the tables per cycle T = round(S / (L * G)), so both engines
of a row have exactly the same MACs per cycle and the same interface. Each
configuration is synthesized and placed out of context on ECP5-85F with the
same seed; the TLMM/direct ratio of LUT4 per MAC-per-cycle is computed from
figures measured in this run.

Variants measured per (S, G):

* ``direct``: the baseline adder tree;
* ``tlmm-bram``: full-encoding tables in block RAM (one DP16KD read port per
  lane and table; only when L * T fits the device's 208 DP16KD);
* ``tlmm-lutram``: sign-folded tables in distributed RAM (G = 2, 3: the
  folded table fits one 16-deep RAM; two row buffers make it 32 deep).
"""
import json
from pathlib import Path

from .sweep import cache_from_args, failure_summary, parse_ints, synth_many, write_json
from .synth import TARGETS, format_table
from .units import UNITS, build_unit, parse_settings

BENCH_COLUMNS = ["macs_per_cycle", "group", "tables", "lanes", "engine", "lut4", "ff", "dp16kd",
                 "dp16kd_estimate", "lut4_per_mac", "ratio_vs_direct", "fmax_mhz"]


def bench_configs(sizes, groups, lanes):
    bram_limit = TARGETS["ecp5-85f"].capacity["dp16kd"]
    for size in sizes:
        for group in groups:
            tables = max(1, round(size / (lanes * group)))
            base = dict(group=group, tables=tables, lanes=lanes)
            yield "direct", "direct", base
            if lanes * tables <= bram_limit:
                yield "tlmm-bram", "tlmm", dict(base, encoding="full", table_ram="block")
            if group <= 3:
                yield "tlmm-lutram", "tlmm", dict(base, encoding="folded", table_ram="distributed")


def _bench_row(variant, unit, params, rec):
    if rec["status"] == "failed":
        return {"engine": variant, **params, "error": rec["error"], "log": rec["log"]}
    estimate = build_unit(unit, params)[0].resources()["dp16kd"]
    row = {"engine": variant, **params, "macs_per_cycle": rec["macs_per_cycle"],
           "lut4": rec["lut4"], "ff": rec["ff"], "dp16kd": rec["dp16kd"],
           "dp16kd_estimate": estimate, "fmax_mhz": rec["fmax_mhz"],
           **{k: rec.get(k) for k in ("lut4_logic", "lut4_carry", "lut4_ram", "lut4_ramw")},
           "lut4_per_mac": round(rec["lut4"] / rec["macs_per_cycle"], 2)}
    row.update({k: rec[k] for k in ("fmax_min", "fmax_max") if k in rec})
    return row


def _synth_all(args, configs, desc):
    """``configs`` of (label, unit, settings) through the sweep layer with the
    command's --jobs / --scheduler / --cache / --seeds."""
    return synth_many(configs, seeds=parse_ints(args.seeds, "seeds"), cache=cache_from_args(args),
                      jobs=args.jobs, scheduler=args.scheduler, desc=desc)


def add_ratios(rows):
    """``ratio_vs_direct``: LUT4 per MAC of each row over the direct engine's
    at the same group, tables and lanes (measured in the same run)."""
    direct = {(r["group"], r["tables"], r["lanes"]): r for r in rows
              if r["engine"] == "direct" and "lut4" in r}
    for r in rows:
        d = direct.get((r["group"], r["tables"], r["lanes"]))
        if d and "lut4" in r:
            r["ratio_vs_direct"] = round(r["lut4_per_mac"] / d["lut4_per_mac"], 3)
    return rows


UNIT_COLUMNS = ["unit", "params", "lut4", "ff", "mult18", "dp16kd", "fmax_mhz"]


def run_unit_bench(args):
    """``trilut bench units``: every row unit at its registered defaults (plus
    ShiftGELU's accurate mode), synthesized side by side on ECP5-85F."""
    configs = [(name, {}) for name in UNITS if name not in ("tlmm", "direct")]
    configs += [("shiftgelu", {"mode": "accurate"}), ("int8mm", {"requant": True, "channels": 64})]
    print(f"trilut bench units: {len(configs)} place-and-route runs on ECP5-85F", flush=True)
    merged, tasks, records = _synth_all(
        args, [(f"{n} {s or ''}".strip(), n, s) for n, s in configs], "bench units")
    rows = []
    for (name, settings), rec in zip(configs, merged):
        if rec["status"] == "failed":
            rows.append({"unit": name, "params": str(settings), "error": rec["error"],
                         "log": rec["log"]})
            continue
        rows.append({"unit": name, "params": " ".join(f"{k}={v}" for k, v in rec["params"].items()),
                     **{k: rec[k] for k in ("lut4", "ff", "mult18", "dp16kd", "fmax_mhz")}})
    rows.sort(key=lambda r: (r["unit"], r["params"]))
    print(format_table(rows, UNIT_COLUMNS))
    write_json(args.json, rows)
    _raise_failures(tasks, records)
    return rows


def _raise_failures(tasks, records):
    failure = failure_summary(tasks, records)
    if failure:
        raise failure


BLOCK_COLUMNS = ["pass", "m", "k", "n", "macs", "cycles", "macs_per_cycle", "of_peak"]


#: bench block --model: the accelerator build (a unit, with "wide" its
#: buffers sized for the block) and the weight-stream rates tried.
BLOCK_MODELS = {"digits": ("top", [1.0, 0.25, 0.1, 0.05]), "minilm": ("top-minilm", [1.0]),
                "wide": ("top", [1.0])}


def _wide_build(params):
    """The default engines with the banks and weight store sized for
    :data:`~trilut.sim.tb_top.WIDE`: rows of ``ffn`` columns, three regions
    of ``seq`` rows (a per-token quantized block's int16 tensors, see
    ``host.compiler``), one ``hidden x ffn`` ternary matrix per weight-store
    buffer."""
    from ..sim.tb_top import WIDE
    params = {**params, "max_width": WIDE["ffn"], "max_rows": 3 * WIDE["seq"]}
    params["wstore_depth"] = UNITS["top"].cls(**params).weight_beats(WIDE["hidden"], WIDE["ffn"])
    return params


def run_block_bench(args):
    """The digits model's block 0 on the default accelerator (``trilut units``:
    ``top``); with ``--model minilm`` all-MiniLM-L6-v2's layer 0 (8 tokens)
    on ``top-minilm``; with ``--model wide`` a random ternary block of
    MiniLM's shape (hidden 384, 12 heads, FFN 1536, 16 tokens, per-token
    activation quantization) on the default engines with buffers sized for
    it (``--set`` overrides either build), in Verilator (cocotb
    ``block_cycles`` of :mod:`trilut.sim.tb_top`, results checked exactly
    against golden): cycles per pass, achieved MACs per cycle of the LINEAR
    passes against their engine's peak, and the share of weight-loading
    time hidden behind compute at several weight-stream rates."""
    from ..sim import tb_top
    model = getattr(args, "model", "digits")
    unit, rates = BLOCK_MODELS[model]
    params = dict(UNITS[unit].defaults)
    if model == "wide":
        params = _wide_build(params)
    params.update(parse_settings(args.set))
    report = Path("build/bench/block_report.json").resolve()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    print(f"trilut bench block: the {model} block on the simulated accelerator " +
          " ".join(f"{k}={v}" for k, v in params.items()) +
          " (Verilator; the first run compiles the simulator, a few minutes)", flush=True)
    tb_top.run(params, testcase="block_cycles", pause=0.0, report=report, model=model,
               wgt_rates=rates)
    b = json.loads(report.read_text())["block"]
    peak = b["macs_per_cycle_peak"]
    rows = []
    for name, cycles in b["cycles"].items():
        lin = b["linear"].get(name)
        row = {"pass": name, "cycles": cycles}
        if lin:
            row.update(m=lin["m"], k=lin["k"], n=lin["n"], macs=lin["macs"],
                       macs_per_cycle=round(lin["macs_per_cycle"], 2),
                       of_peak=f"{100 * lin['macs_per_cycle'] / peak:.1f}%")
        rows.append(row)
    print(format_table(rows, BLOCK_COLUMNS))
    rates = [{"weight_stream_rate": w["rate"], "block_cycles": w["cycles"],
              "linear_wait_cycles": w["wgt_wait"],
              "weight_load_hidden_fraction": round(w["weight_load_hidden_fraction"], 4)}
             for w in b["whole_program"]]
    print(format_table(rates, list(rates[0])))
    summary = {
        "model": model, "accelerator": params,
        "shape": {k: b[k] for k in ("hidden", "heads", "ffn", "seq")},
        "macs_per_cycle_peak": peak,
        "macs_per_cycle_linear": round(b["macs_per_cycle_linear"], 3),
        "macs_per_cycle_linear_run": round(b["macs_per_cycle_linear_run"], 3),
        "linear_fraction_of_peak": round(b["macs_per_cycle_linear"] / peak, 4),
        "weight_load_hidden_fraction": round(b["weight_load_hidden_fraction"], 4),
        "cycles_block": b["cycles_block"], "compute_pass_cycles": b["compute_cycles"],
        "passes": rows, "weight_stream_rates": rates,
    }
    print(f"block: {summary['cycles_block']} cycles in one run; LINEARs "
          f"{summary['macs_per_cycle_linear']} of {peak} MACs/cycle "
          f"({100 * summary['linear_fraction_of_peak']:.1f}% of peak); weight loading "
          f"{100 * summary['weight_load_hidden_fraction']:.0f}% hidden")
    write_json(args.json, summary)
    return summary


def run_bench(args):
    if args.what == "decode":
        from .decodebench import cmd_decode
        return cmd_decode(args)
    if args.what == "units":
        return run_unit_bench(args)
    if args.what == "block":
        return run_block_bench(args)
    sizes, groups = parse_ints(args.sizes, "sizes"), parse_ints(args.groups, "groups")
    configs = list(bench_configs(sizes, groups, args.lanes))
    print(f"trilut bench tlmm: {len(configs)} place-and-route runs on ECP5-85F "
          f"(a few minutes each at 1,024 MACs/cycle)", flush=True)
    merged, tasks, records = _synth_all(
        args, [(f"{v} G={p['group']} T={p['tables']} L={p['lanes']}", unit, p)
               for v, unit, p in configs], "bench tlmm")
    rows = [_bench_row(v, unit, p, rec) for (v, unit, p), rec in zip(configs, merged)]
    rows.sort(key=lambda r: (r["group"] * r["tables"] * r["lanes"], r["group"], r["engine"]))
    add_ratios(rows)
    print(format_table(rows, BENCH_COLUMNS))
    write_json(args.json, rows)
    if args.plot:
        plot_bench(rows, args.plot)
        print(f"wrote {args.plot}")
    _raise_failures(tasks, records)
    return rows


VARIANT_COLOURS = {"direct": "#888888", "tlmm-lutram": "#4c72b0", "tlmm-bram": "#dd8452"}
PARTS = (("lut4_logic", "logic", ""), ("lut4_carry", "carry", "//"),
         ("lut4_ram", "distributed RAM", ".."), ("lut4_ramw", "RAM write ports", "xx"))


def plot_bench(rows, path):
    """Grouped bars: LUT4 per MAC-per-cycle of each variant at each (rate, G),
    split into logic / carry / distributed RAM / RAM write sites (nextpnr's
    pre-packing counts, scaled to the packed LUT4 total), Fmax on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if "lut4" in r]
    groups = sorted({(r["group"] * r["tables"] * r["lanes"], r["group"]) for r in rows})
    variants = [v for v in VARIANT_COLOURS if any(r["engine"] == v for r in rows)]
    fig, ax = plt.subplots(figsize=(max(8, 1.5 * len(groups)), 5))
    width = 0.8 / len(variants)
    for vi, variant in enumerate(variants):
        for gi, (macs, g) in enumerate(groups):
            match = [r for r in rows if r["engine"] == variant and r["group"] == g
                     and r["group"] * r["tables"] * r["lanes"] == macs]
            if not match:
                continue
            r = match[0]
            x = gi + (vi - (len(variants) - 1) / 2) * width
            raw = [r.get(key) or 0 for key, _, _ in PARTS]
            scale = r["lut4_per_mac"] / sum(raw) if sum(raw) else 0
            bottom = 0
            for (key, label, hatch), value in zip(PARTS, raw):
                h = value * scale
                ax.bar(x, h, width, bottom=bottom, color=VARIANT_COLOURS[variant], hatch=hatch,
                       edgecolor="white", label=f"{variant}" if key == "lut4_logic" and gi == 0
                       else None)
                bottom += h
            ax.text(x, bottom + 0.5, f"{r['fmax_mhz']:.0f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{m} MAC/cyc\nG={g}" for m, g in groups], fontsize=8)
    ax.set_ylabel("LUT4 per MAC/cycle (ECP5-85F)")
    ax.set_title("TLMM vs direct ternary adder tree (numbers on bars: Fmax MHz; "
                 "hatching: carry //, RAM .., RAM write xx)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
