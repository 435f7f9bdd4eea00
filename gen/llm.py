"""``trilut hf-generate`` and ``trilut generate``: the integer decoder from the command line.

    trilut hf-generate CKPT --input-ids IDS.npy --max-new-tokens N --out OUT.npz \
        [--device golden|sim]
    trilut generate --prompt TEXT --max-new-tokens N [--device golden|sim] [--json OUT.json]

hf-generate: a Hugging Face Llama/BitNet checkpoint (host/llama.py),
calibrated on ``--calib`` ids (.npy, rows or one sequence) or, by default, on
random token sequences; greedy by default (``--temperature``/``--top-k``/
``--seed`` sample). OUT.npz: ``tokens`` int64 [N] and ``logits`` float32
[P + N - 1, vocab], row i the dequantized logits after position i of the
prompt followed by the generated tokens.

generate: the built-in LM (host/models/lm, byte-level tokenizer) or any
checkpoint directory with a byte-level ``tokenizer.json`` (``--model DIR``),
calibrated on host.hf.calibration_ids (CALIBRATION_SENTENCES and two
paragraphs of them, cut to the model's positions); tokens are printed as they
come. JSON fields (issue 13): text, tokens, hw_matches_golden (null: no
hardware ran), ttft_cycles, decode_cycles_per_token, fmax_mhz,
tokens_per_s_at_fmax, sim_cycles_per_s (null on golden), plus prompt,
device and seconds.

``--device sim``: the decoder build ``--unit`` (default ``top-llm``,
gen/units.py) simulated by Verilator behind the byte protocol
(host.generate.SimDecoder: norms, ternary linears, the gate product, RoPE
and causal GQA attention on the accelerator; the embedding and the LM head
on the host, see docs/llm.md "On the top"), every step compared with golden. The JSON's
cycle fields then count the accelerator's cycles (on-chip passes only:
``cycles_scope`` says so); ``fmax_mhz`` and ``tokens_per_s_at_fmax`` stay
null (no place and route of a decoder build exists). ``--weights sdram``
(default): the weights are loaded once into the simulated ULX3S SDRAM and
fed by FEED per program run; ``link``: sent with every program. The JSON adds
``build``, ``weights``, ``weight_bytes_per_token`` and ``constants``
(where the model's constants live: ``llm_consts.const_plan``'s note).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..host.generate import DEVICES, check_device, generate, make_decoder
from ..host.hf import CALIBRATION_SENTENCES, _load_npy, calibration_ids
from ..host.llama import load_llama, quantize
from ..host.llm_compiler import kv_capacity
from ..host.models.lm import MODEL_DIR
from ..host.models.lm.tokenizer import ByteTokenizer
from .sweep import progress_printer
from .units import UNITS

__all__ = ["hf_generate", "generate_text", "add_llm_parsers"]


#: Where ``--device sim`` takes the weights from (``--weights``).
WEIGHTS = ("sdram", "link")
WEIGHT_PATHS = {
    "sdram": "resident in the simulated ULX3S SDRAM (LiteDRAM controller + SDRAM model at the "
             "50 MHz board clock), loaded once, fed to the weight store by FEED per program run",
    "link": "sent over the byte link with every program run"}

#: What the cycle fields of a ``--device sim`` run count.
CYCLES_SCOPE = ("accelerator cycles (counter 'cycles') of the on-chip passes: RMSNorms, "
                "ternary linears with their requantizers and residual adds, the gate product, "
                "RoPE and causal GQA attention; the LM head runs on the host and is not "
                "counted")


def _decoder(params, device, unit, log, positions, weights="sdram"):
    """The decoder for ``device``; for sim, the build ``unit`` is checked
    (a decoder build holding ``positions`` KV rows) before Verilator runs;
    ``weights``: "sdram" (resident in the simulated SDRAM) or "link"."""
    if device != "sim":
        return make_decoder(params, device)
    if unit not in UNITS or not UNITS[unit].defaults.get("llm"):
        raise ValueError(f"--unit {unit!r}: not a decoder build (llm=True units: "
                         f"{', '.join(n for n, u in UNITS.items() if u.defaults.get('llm'))})")
    rows = kv_capacity(params, UNITS[unit].defaults)
    if positions > rows:
        raise ValueError(f"{positions} positions (prompt + new tokens) exceed the KV capacity "
                         f"of {rows} positions of the build {unit} (max_rows "
                         f"{UNITS[unit].defaults['max_rows']} for {params.cfg.layers} layers)")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    log(f"--device sim: {unit} in Verilator (built on first use, cached), weights "
        + ("resident in the simulated SDRAM" if weights == "sdram" else "sent over the link"))
    return make_decoder(params, device, UNITS[unit].defaults, sdram=weights == "sdram",
                        log=log, build=unit)


def _close(decoder):
    if hasattr(decoder, "close"):
        decoder.close()


def _sim_fields(decoder):
    """The JSON's hardware fields: null on golden (no hardware ran)."""
    fields = dict.fromkeys(("hw_matches_golden", "ttft_cycles", "decode_cycles_per_token",
                            "fmax_mhz", "tokens_per_s_at_fmax", "sim_cycles_per_s"))
    if hasattr(decoder, "step_cycles"):
        steps = decoder.step_cycles
        fields.update(hw_matches_golden=decoder.matches, ttft_cycles=steps[0],
                      decode_cycles_per_token=(float(np.mean(steps[1:])) if len(steps) > 1
                                               else None),
                      sim_cycles_per_s=decoder.sim_cycles_in_runs / max(decoder.seconds, 1e-9),
                      cycles_scope=CYCLES_SCOPE, build=decoder.build,
                      weights=WEIGHT_PATHS["sdram" if decoder.sdram else "link"],
                      weight_bytes_per_token=decoder.weight_bytes,
                      constants=decoder.const_note)
    return fields


def hf_generate(checkpoint, input_ids, max_new_tokens, out, device="golden", calib=None,
                temperature=0.0, top_k=0, seed=0, log=None, unit="top-llm", weights="sdram"):
    """The hf-generate command; returns a summary dict."""
    log = log or progress_printer(file=sys.stderr)
    check_device(device)
    ckpt = load_llama(checkpoint)
    ids = ckpt.check_ids(_load_npy("--input-ids", input_ids), max_new_tokens)
    calib_ids = None if calib is None else list(np.atleast_2d(_load_npy("--calib", calib)))
    log(f"hf-generate: {ckpt.hf_config.get('architectures')} {ckpt.cfg.layers} layers, hidden "
        f"{ckpt.cfg.hidden}, heads {ckpt.cfg.heads}/{ckpt.cfg.kv_heads}, {ckpt.cfg.act}, "
        f"sub-norms {ckpt.cfg.sub_norm}; calibrating on "
        f"{'random token sequences' if calib is None else calib}")
    params = quantize(ckpt, calib_ids)
    log(f"prefill of {ids.size} tokens, then {max_new_tokens} steps on {device}")
    decoder = _decoder(params, device, unit, log, ids.size + max_new_tokens, weights)
    try:
        tokens, logits = generate(decoder, ids, max_new_tokens, temperature, top_k, seed)
    finally:
        _close(decoder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, tokens=tokens, logits=logits.astype(np.float32))
    summary = {"tokens": tokens.tolist(), "out": str(out), **_sim_fields(decoder)}
    log(f"wrote {out}: tokens {tokens.tolist()}" + (
        f"; hardware matches golden: {summary['hw_matches_golden']}" if device == "sim" else ""))
    return summary


def generate_text(prompt, max_new_tokens, device="golden", json_path=None, model_dir=None,
                  temperature=0.0, top_k=0, seed=0, echo=print, unit="top-llm",
                  weights="sdram"):
    """The generate command: text from the built-in LM, printed as it comes."""
    log = progress_printer(file=sys.stderr)
    check_device(device)
    model_dir = Path(model_dir) if model_dir else MODEL_DIR
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (the built-in LM is "
                                f"host/models/lm; --model DIR names another)")
    tok = ByteTokenizer(model_dir / "tokenizer.json")
    ckpt = load_llama(model_dir)
    ids = ckpt.check_ids(tok.encode(prompt), max_new_tokens)
    log(f"calibrating on {len(CALIBRATION_SENTENCES)} sentences and two paragraphs of them")
    params = quantize(ckpt, calibration_ids(tok, ckpt.cfg.max_pos))
    t0 = time.monotonic()
    out, shown = [], [""]

    def show(t):                  # print complete characters only (a byte may end mid-UTF-8)
        out.append(t)
        text = tok.decode(out)
        if not text.endswith("\ufffd"):
            echo(text[len(shown[0]):], end="", flush=True)
            shown[0] = text

    decoder = _decoder(params, device, unit, log, len(ids) + max_new_tokens, weights)
    echo(prompt, end="", flush=True)
    try:
        tokens, _ = generate(decoder, ids, max_new_tokens, temperature, top_k, seed,
                             on_token=show, stop=tok.eos)
    finally:
        _close(decoder)
    echo(tok.decode(tokens)[len(shown[0]):])
    summary = {"prompt": prompt, "text": tok.decode(tokens), "tokens": tokens.tolist(),
               "device": device, **_sim_fields(decoder), "seconds": time.monotonic() - t0}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        log(f"wrote {json_path}")
    return summary


def _sampling(p):
    p.add_argument("--device", choices=DEVICES, default="golden",
                   help="golden (integer model) or sim (a decoder build in Verilator, every "
                        "step checked against golden)")
    p.add_argument("--unit", default="top-llm",
                   help="decoder build for --device sim (gen/units.py; default top-llm)")
    p.add_argument("--weights", choices=WEIGHTS, default="sdram",
                   help="--device sim: weights resident in the simulated SDRAM, loaded once "
                        "(default), or sent over the link with every program run")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k best (0: all)")
    p.add_argument("--seed", type=int, default=0)


def add_llm_parsers(sub):
    """Register hf-generate and generate on an argparse subparsers object."""
    p = sub.add_parser("hf-generate", help="Hugging Face Llama/BitNet checkpoint: greedy or "
                                           "sampled generation on the integer decoder")
    p.add_argument("checkpoint")
    p.add_argument("--input-ids", required=True, help="int64 [P] .npy prompt")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--out", required=True, help=".npz with tokens and logits")
    p.add_argument("--calib", help=".npy token ids for calibration (rows or one sequence)")
    _sampling(p)
    p.set_defaults(func=lambda a: hf_generate(
        a.checkpoint, a.input_ids, a.max_new_tokens, a.out, a.device, a.calib, a.temperature,
        a.top_k, a.seed, unit=a.unit, weights=a.weights))
    p = sub.add_parser("generate", help="text from the built-in ternary LM")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--model", help="checkpoint directory with a byte-level tokenizer.json "
                                   "(default: the built-in LM)")
    _sampling(p)
    p.set_defaults(func=lambda a: generate_text(
        a.prompt, a.max_new_tokens, a.device, a.json, a.model, a.temperature, a.top_k, a.seed,
        unit=a.unit, weights=a.weights))
