# amaranth: UnusedElaboratable=no
"""``trilut bench decode``: the decoder's prefill and decode cycles on the
simulated ULX3S-like configuration (a decoder build with its weights
resident in the simulated SDRAM: LiteDRAM's controller and SDRAM model at
the 50 MHz board clock), checked against the analytic cycle model of
:mod:`trilut.gen.llm_plan`, and the model's projection for BitNet b1.58
0.73B on the KV260.

    trilut bench decode [--unit top-llm] [--prefill 16,64,128] [--steps 2] [--json PATH]

For each prompt length P (a prompt cut from host.hf.CALIBRATION_SENTENCES;
P is cut to the build's KV capacity minus one, said in the output), a new
sequence: prefill of P tokens, then ``--steps`` greedy decode steps at
kv_pos = P, P + 1, ...; every step is compared with the golden model.
Cycle counts are the accelerator's ``cycles`` counter over the on-chip
segments (host/llm_compiler.py: RMSNorms, ternary linears, the gate
product, RoPE and causal GQA attention; the LM head runs on the host and
takes none).

Figures:

* MACs/cycle: the on-chip ternary MACs (every linear, every token) over
  the cycles, against the TLMM engine's peak (lanes x k-block).
* ``weight_bytes_per_token``: what each decode step reads from the SDRAM
  (every linear's ``s_axis_wgt`` frames, as the feeder streams them).
* ``dram_bandwidth_utilization``: during decode, those bytes over (the
  step's cycles x the memory's peak bytes per cycle). The whole step is
  counted (its NORM, LOAD and STORE passes too: the weights stream during
  them as well, so the LINEAR passes' own cycles, ``engine_busy +
  engine_stall``, would give more than the bytes they read; they are
  stored as ``linear_run_cycles``).
* ``link_bytes_per_decode_step``: the host link's traffic (requests,
  bytes sent and received) of a decode step after a decode step (its
  program already on chip), with the link at a byte per cycle.
* ``tokens_per_s_at_board_clock``: the decode step's accelerator cycles
  at the 50 MHz board clock, as if the host link cost nothing;
  ``tokens_per_s_board`` (``board_link``): what the ULX3S-85F build
  delivers, measured: decode steps simulated with the link at its UART's
  rate (after a prefill at a byte per cycle; :func:`_board_steps`).
* Model: :meth:`~trilut.gen.llm_plan.DecoderCost.sim_step` with the
  measured SDRAM rate (docs/bench/sdram.json) and the host link's cost of
  a LOAD and a STORE pass (latency + bytes / rate: the host's turnaround
  and the byte link, not the accelerator) fitted once to the counters of
  the first prefill and the first decode step (:func:`_link_model`); per
  point the relative error.
* Projection: :meth:`~trilut.gen.llm_plan.DecoderCost.streamed` for BitNet
  b1.58 0.73B on the KV260 configuration (KV260_ACCEL, 250 MHz, the DDR4
  through HP ports: assumptions in gen/llm_plan.py), the LM head on the
  accelerator or on the ARM cores, beside TeLLMe's published figures.
"""
import json
from pathlib import Path

import numpy as np

from .llm_plan import BITNET_0P73B, KV260_MHZ, DecoderCost, kv260_ddr4, ulx3s_sdram
from .sweep import parse_ints, progress_printer, write_json
from .units import UNITS

__all__ = ["run_decode_bench", "KV260_ACCEL", "TELLME"]

#: The KV260 configuration projected: the decoder build's TLMM engine at 32
#: lanes (192 ternary MACs/cycle, twice top-llm's) and a 16 x 8 int8 engine
#: (128 MACs/cycle) for attention and the LM head. Not built: a projection.
KV260_ACCEL = dict(UNITS["top-llm"].defaults, group=2, tables=4, lanes=32, attn_lanes=8, attn_kpc=8,
                   max_width=2047)
#: TeLLMe (KV260, BitNet b1.58 0.73B), as published.
TELLME = {"tokens_per_s": 25.0, "ttft_s_64_tokens": 0.45}
BOARD_MHZ = 50.0        # the ULX3S SDRAM's (and the decoder's) clock in the simulation
PROJECT_PROMPT = 64


def _prompt(tok, n):
    from ..host.hf import CALIBRATION_SENTENCES
    ids = tok.encode(" ".join(CALIBRATION_SENTENCES))
    while len(ids) < n:
        ids = ids + ids
    return np.asarray(ids[:n], np.int64)


def _link_passes(cost, m):
    """{"load"/"store": (passes, bytes)} of one chunk of ``m`` tokens."""
    segs = [p for li in range(cost.cfg.layers) for p in
            cost.sim_segments(m, load_x=li == 0, final=li == cost.cfg.layers - 1)]
    return {k: (sum(kind == k for p in segs for kind, _, _ in p),
                sum(arg for p in segs for kind, _, arg in p if kind == k))
            for k in ("load", "store")}


def _link_model(cost, points):
    """The host link's LOAD/STORE cost ``{kind: (latency, bytes_per_cycle)}``
    fitted to two runs ``[(m, counters)]`` of different chunk sizes (the
    first prefill and the first decode step): per pass, cycles = latency +
    bytes / rate through the two points' mean pass cycles (counters
    ``load_busy + load_stall``, ``store_busy + store_stall``); where that
    line would give a negative latency, latency 0 and the larger passes'
    rate."""
    fit = {}
    for k in ("load", "store"):
        xy = []
        for m, counters in points:
            n, nbytes = _link_passes(cost, m)[k]
            busy = sum(c[f"{k}_busy"] for _, c in counters)
            assert busy * cost.axis_bytes == nbytes, (k, busy, nbytes)
            xy.append((nbytes / n, sum(c[f"{k}_busy"] + c[f"{k}_stall"]
                                       for _, c in counters) / n))
        (x0, y0), (x1, y1) = sorted(xy)
        slope = (y1 - y0) / (x1 - x0)
        if y0 - slope * x0 < 0:         # no negative latency: the rate of the larger passes
            fit[k] = (0.0, x1 / y1)
        else:
            fit[k] = (y0 - slope * x0, 1 / slope)
    return fit


def _fmax(unit):
    """Fmax of a recorded place and route of ``unit`` (None: none exists)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "bench" / f"{unit}_ecp5.json"
    if path.is_file():
        return json.loads(path.read_text()).get("fmax_mhz"), str(path.name)
    return None, (f"no place and route of {unit} is recorded (docs/bench/{unit}_ecp5.json): "
                  f"it is a simulation build; tokens/s are given at the {BOARD_MHZ:g} MHz "
                  f"board clock instead")


def projection(cfg=BITNET_0P73B):
    """``cfg`` (default BitNet b1.58 0.73B) on the KV260 (model only)."""
    cost = DecoderCost(cfg, KV260_ACCEL)
    mem = kv260_ddr4()
    out = {"model": {k: getattr(cfg, k) for k in ("hidden", "layers", "heads", "kv_heads",
                                                   "ffn", "vocab")},
           "config": {k: KV260_ACCEL[k] for k in
                                         ("group", "tables", "lanes", "encoding",
                                          "attn_lanes", "attn_kpc")},
           "clock_mhz": KV260_MHZ, "memory": mem.source,
           "memory_peak_mb_s": mem.peak_mb_s, "ternary_macs_per_cycle":
               cost.tlmm.lanes * cost.tlmm.k_block,
           "weight_bytes_per_token": cost.cfg.layers * cost.layer_bytes(),
           "lm_head_bytes_per_token": cost.cfg.hidden * cost.cfg.vocab, "rows": {}}
    for head in ("pl", "ps"):
        dec = cost.streamed(1, PROJECT_PROMPT, mem, head)
        pre = cost.streamed(PROJECT_PROMPT, 0, mem, head)
        out["rows"][head] = {"decode_cycles_per_token": round(dec),
                             "tokens_per_s": round(KV260_MHZ * 1e6 / dec, 1),
                             "ttft_s_64_tokens": round(pre / (KV260_MHZ * 1e6), 3)}
    out["note"] = ("head 'pl': the int8 LM head on the accelerator (its 49 MB streamed per "
                   "token); 'ps': on the ARM cores, its time not counted (an upper bound); "
                   "decode at kv_pos 64; attention over the visible prefix as in the plan "
                   "(the simulated build computes every row over all kv_pos + M keys)")
    return out


def run_decode_bench(unit="top-llm", prefill=(16, 64, 128), steps=2, json_path=None,
                     log=None, params=None):
    """The bench (module docstring); returns the JSON payload. ``params``:
    another model (LlamaParams; prompts of seeded random ids) instead of
    the built-in LM, e.g. for a build too small for it."""
    from ..host.generate import SimDecoder
    from ..host.hf import calibration_ids
    from ..host.llama import load_llama, quantize
    from ..host.llm_compiler import compile_chunk, kv_capacity
    from ..host.llm_consts import const_plan
    from ..host.models.lm import MODEL_DIR
    from ..host.models.lm.tokenizer import ByteTokenizer
    log = log or progress_printer("bench decode: ")
    if unit not in UNITS or not UNITS[unit].defaults.get("llm"):
        raise ValueError(f"unit {unit!r} is not a decoder build (llm=True)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    prefill = list(prefill)
    if not prefill or any(isinstance(p, bool) or not isinstance(p, int) or p < 1
                          for p in prefill):
        raise ValueError(f"prefill lengths must be integers >= 1, got {prefill!r}")
    accel = UNITS[unit].defaults
    builtin = params is None
    if builtin:
        tok = ByteTokenizer(MODEL_DIR / "tokenizer.json")
        ckpt = load_llama(MODEL_DIR)
        log("quantizing the built-in LM")
        params = quantize(ckpt, calibration_ids(tok, ckpt.cfg.max_pos))
    cap = kv_capacity(params, accel)
    points = sorted({min(p, cap - 1) for p in prefill})
    clipped = [p for p in prefill if p > cap - 1]
    prompt = (_prompt(tok, max(points)) if builtin else
              np.random.default_rng(0).integers(0, params.cfg.vocab, max(points)))
    cost = DecoderCost(params.cfg, accel)
    mem = ulx3s_sdram()
    chunk = accel["max_rows"] // 3
    macs_tok = sum(k * n for k, n in cost.linears().values()) * params.cfg.layers
    peak_macs = cost.tlmm.lanes * cost.tlmm.k_block
    runs, link, link_tok = [], None, None
    # The programs a chunk runs (each a run of consecutive layers' segments).
    programs = [prog.segments for _, prog in
                compile_chunk(params, accel, 1, plan=const_plan(params, accel)[0])]
    per_chunk = len(programs)
    with SimDecoder(params, accel, sdram=True, log=log, build=unit) as dec:
        log(f"weights loaded ({dec.weight_bytes:,} bytes, {dec.load_cycles:,} cycles)")
        for p in points:
            dec.reset()
            ids = prompt[:p]
            n0 = len(dec.counters)
            logits = dec.run(ids)
            first = (min(p, chunk), dec.counters[n0:n0 + per_chunk])
            runs.append(_row("prefill", p, p, dec.step_cycles[-1], None, macs_tok, peak_macs))
            for s in range(min(steps, cap - p)):
                n0 = len(dec.counters)
                logits = dec.run([int(np.argmax(logits[-1]))])
                if link is None:
                    link = _link_model(cost, [first, (1, dec.counters[n0:])])
                model = cost.sim_step(1, mem, link, pos0=p + s, programs=programs)[0]
                row = _row("decode", p + s, 1, dec.step_cycles[-1], model, macs_tok, peak_macs)
                row.update(_bandwidth(dec.counters[n0:], dec.weight_bytes, mem,
                                      dec.step_cycles[-1]))
                runs.append(row)
                if s or link_tok is None:   # a step after a step: its program is loaded
                    link_tok = dec.step_link[-1]["total"]
                log(f"decode at kv_pos {p + s}: {dec.step_cycles[-1]:,} cycles "
                    f"(model {model:,.0f})")
        for r in runs:                  # the prefills, with the link fitted
            if r["phase"] == "prefill":
                r.update(_model(sum(cost.sim_step(min(chunk, r["tokens"] - s), mem, link,
                                                  pos0=s, programs=programs)[0]
                                    for s in range(0, r["tokens"], chunk)), r["cycles"]))
                log(f"prefill P={r['tokens']}: {r['cycles']:,} cycles "
                    f"(model {r['model_cycles']:,})")
        weight_bytes = dec.weight_bytes
        board = _board_steps(dec, prompt[:points[0]], min(steps, cap - points[0]), log)
        matches, rate = dec.matches, dec.sim_cycles_in_runs / max(dec.seconds, 1e-9)
    decode = [r for r in runs if r["phase"] == "decode"]
    per_tok = float(np.mean([r["cycles"] for r in decode]))
    fmax, fmax_note = _fmax(unit)
    proj = projection()
    out = {
        "build": unit, "accel": accel, "memory": mem.source, "memory_peak_mb_s": mem.peak_mb_s,
        "hw_matches_golden": matches, "kv_capacity": cap,
        "prefill_clipped": (f"P = {', '.join(map(str, clipped))} exceed the build's KV capacity "
                            f"of {cap} positions: run at P = {cap - 1}" if clipped else None),
        "cycles_scope": "accelerator cycles of the on-chip segments (LM head on the host "
                        "excluded)",
        "segments_per_program": programs,
        "points": runs, "peak_macs_per_cycle": peak_macs, "macs_per_token": macs_tok,
        "decode_cycles_per_token": per_tok,
        "weight_bytes_per_token": weight_bytes,
        "link_bytes_per_decode_step": link_tok,
        "dram_bandwidth_utilization": min(r["dram_bandwidth_utilization"] for r in decode),
        "model_link": {k: {"latency": round(a, 1), "bytes_per_cycle": round(b, 4)}
                       for k, (a, b) in link.items()},
        "model_max_abs_error": max(abs(r["model_error"]) for r in runs),
        "fmax_mhz": fmax, "fmax_note": fmax_note, "board_mhz": BOARD_MHZ,
        "tokens_per_s_at_board_clock": round(BOARD_MHZ * 1e6 / per_tok, 1),
        "board_link": board,
        "tokens_per_s_board": board["tokens_per_s"],
        "sim_cycles_per_s": round(rate),
        "projected_bitnet_0p73b_kv260": proj,
        "projected_bitnet_0p73b_kv260_tokens_per_s": proj["rows"]["pl"]["tokens_per_s"],
        "projected_this_model_kv260": projection(params.cfg),
        "tellme": TELLME,
    }
    _print(out)
    write_json(json_path, out)
    return out


def _board_steps(dec, prompt, steps, log):
    """Decode steps with the host link at the ULX3S-85F build's UART rate
    (2 Mbaud at 50 MHz: 250 cycles a byte each way): a new sequence, its
    prefill with the link at a byte per cycle, then ``steps + 1`` greedy
    steps at the board's rate (checked against golden like every run),
    measured in the simulator's cycles per step (the accelerator, the
    link's bytes and the harness's host turn per request, the demo's board
    model). The first step also writes the decode program (the prefill ran
    a chunk of another size): it is reported on its own
    (``first_step_cycles``), the rate (``tokens_per_s``) is the mean of the
    ``steps`` after it, what every further token costs."""
    from .build import board_link
    clk_hz, baud = board_link()
    dec.reset()
    logits = dec.run(prompt)
    dec.device.set_link(clk_hz, baud)
    try:
        for i in range(steps + 1):
            logits = dec.run([int(np.argmax(logits[-1]))])
            log(f"decode on the board's link{' (first step)' if i == 0 else ''}: "
                f"{dec.step_sim_cycles[-1]:,} cycles")
    finally:
        dec.device.set_link()
    sims = dec.step_sim_cycles[-steps - 1:]
    links = [t["total"] for t in dec.step_link[-steps - 1:]]
    per_step = float(np.mean(sims[1:]))
    return {"clk_hz": clk_hz, "baud": baud, "kv_pos": len(prompt), "steps": steps + 1,
            "sim_cycles_per_step": sims, "accel_cycles_per_step": dec.step_cycles[-steps - 1:],
            "requests_per_step": [t["requests"] for t in links],
            "link_bytes_per_step": [t["sent"] + t["received"] for t in links],
            "first_step_cycles": sims[0],
            "step_s": round(per_step / clk_hz, 4),
            "tokens_per_s": round(clk_hz / per_step, 2)}


def _model(model, cycles):
    return {"model_cycles": round(model), "model_error": round(model / cycles - 1, 4)}


def _row(phase, kv_pos, tokens, cycles, model, macs_tok, peak):
    return {"phase": phase, "kv_pos": kv_pos, "tokens": tokens, "cycles": cycles,
            **(_model(model, cycles) if model is not None else {}),
            "macs_per_cycle": round(tokens * macs_tok / cycles, 2),
            "macs_fraction_of_peak": round(tokens * macs_tok / cycles / peak, 4)}


def _bandwidth(counters, weight_bytes, mem, cycles):
    run = sum(c["engine_busy"] + c["engine_stall"] for _, c in counters)
    return {"linear_run_cycles": run,
            "dram_bandwidth_utilization": round(weight_bytes / (cycles * mem.bytes_per_cycle),
                                                4)}


def _print(out):
    print(f"{out['build']}, weights in the simulated SDRAM ({out['memory_peak_mb_s']:g} MB/s "
          f"peak); golden match: {out['hw_matches_golden']}")
    if out["prefill_clipped"]:
        print(out["prefill_clipped"])
    print(f"{'phase':8s}{'kv_pos':>7s}{'tokens':>7s}{'cycles':>11s}{'model':>11s}{'error':>8s}"
          f"{'MACs/cyc':>10s}{'of peak':>9s}{'DRAM util':>10s}")
    for r in out["points"]:
        util = r.get("dram_bandwidth_utilization")
        print(f"{r['phase']:8s}{r['kv_pos']:>7d}{r['tokens']:>7d}{r['cycles']:>11,d}"
              f"{r['model_cycles']:>11,d}{100 * r['model_error']:>7.2f}%"
              f"{r['macs_per_cycle']:>10.2f}{100 * r['macs_fraction_of_peak']:>8.1f}%"
              + (f"{util:>10.3f}" if util is not None else ""))
    print(f"decode: {out['decode_cycles_per_token']:,.0f} accelerator cycles/token = "
          f"{out['tokens_per_s_at_board_clock']} tokens/s at {out['board_mhz']:g} MHz if the link "
          f"cost nothing (fmax: {out['fmax_mhz']}), {out['weight_bytes_per_token']:,} weight "
          f"bytes/token, DRAM utilization {out['dram_bandwidth_utilization']}, "
          f"simulator {out['sim_cycles_per_s']:,} cycles/s")
    b = out["board_link"]
    print(f"on the ULX3S-85F's link ({b['baud']:,} baud, simulated): "
          f"{int(np.mean(b['sim_cycles_per_step'][1:])):,} cycles per decode step, "
          f"{int(np.mean(b['link_bytes_per_step'][1:])):,} link bytes in "
          f"{int(np.mean(b['requests_per_step'][1:]))} requests; {b['tokens_per_s']} tokens/s "
          f"(the first step, which writes the decode program: {b['first_step_cycles']:,} "
          f"cycles)")
    p = out["projected_bitnet_0p73b_kv260"]
    for head, r in p["rows"].items():
        print(f"BitNet b1.58 0.73B on KV260 (model, LM head on {head.upper()}): "
              f"{r['tokens_per_s']} tokens/s, TTFT(64) {r['ttft_s_64_tokens']} s; TeLLMe "
              f"{out['tellme']['tokens_per_s']} tokens/s, {out['tellme']['ttft_s_64_tokens']} s")


def add_decode_args(p):
    """The decode bench's options on the ``bench`` parser."""
    p.add_argument("--unit", default="top-llm", help="decode: decoder build (default top-llm)")
    p.add_argument("--prefill", default="16,64,128",
                   help="decode: prompt lengths (cut to the build's KV capacity - 1)")
    p.add_argument("--steps", type=int, default=2, help="decode: decode steps per prompt")


def cmd_decode(args):
    return run_decode_bench(args.unit, parse_ints(args.prefill, "prefill"), args.steps,
                            args.json)
