"""Fidelity of the integer decoder against its float reference on random Llama/BitNet checkpoints.

    python -m trilut.gen.llmfidelity [--json docs/bench/llm_fidelity.json] [--prompts 20]
    python -m trilut.gen.llmfidelity --lm [--lm-json docs/bench/llm_ppl.json] [--windows N]

For each configuration of :data:`CONFIGS` (MHA, GQA, MQA; tied and untied
heads; SiLU and ReLU^2; the three on-disk layouts of host/llama.py; held to
TARGETS) and :data:`SCALE_CONFIGS` (two wider, deeper ones, reported) a
random checkpoint is written with :func:`write_random_checkpoint`, loaded
through the importer, calibrated on its own random token sequences and
measured on unseen random prompts:

* per-position logit correlation (rows centred over the vocabulary) of the
  golden integer model (dequantized logits) against the float reference
  with the same ternary weights: mean and worst position;
* greedy agreement: the golden model generates ``new_tokens`` tokens
  greedily from each prompt; the fraction of steps where the float model,
  fed the same context, picks the same token.

Ablation (ABLATION_CONFIGS, default variant): the float model with exactly one integer step
emulated (golden.llm.EMULATE_STEPS), all of them together, and the integer
model itself. The attention choices (VARIANTS: "static" vs "token" k
scales, 16- vs 8-bit logits) are measured on every configuration. Prints tables and writes JSON.

``--lm``: held-out perplexity of the built-in LM (host/models/lm, its
``heldout_windows``) in float (ternary weights, float activations), in float
with BitNet's int8 per-token activations (the forward it was trained with)
and in the golden integer model, calibrated on host.hf.calibration_ids; also
the per-position logit correlation golden vs float on the held-out windows
and how often their argmax agrees (teacher-forced), and :func:`measure` on
20 greedy generations of 32 tokens from the first 32 tokens of held-out
windows.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..golden.encoder import _scale_for_x0
from ..golden.llm import EMULATE_STEPS, KVCache, float_forward, prefill
from ..golden.nonlinear import GELU_SLOPE, shiftgelu
from ..golden.quant import quantize_ternary
from ..host.generate import GoldenDecoder, generate
from ..host.llama import (load_llama, logit_correlation, pack_ternary, quantize,
                          write_safetensors)
from .synth import format_table

LAYOUTS = ("llama", "bitnet-large", "bitnet-2b")
# (attn_scale, logit_bits): the default first, then the alternatives it was chosen over
VARIANTS = (("static", 16), ("token", 16), ("static", 8))
ABLATION_CONFIGS = ("gqa-untied", "bitnet-2b-packed-relu2", "bitnet-2b-512x4")
GEN_PROMPTS, GEN_PROMPT_LEN, GEN_TOKENS = 20, 32, 32   # built-in LM: greedy generation check
TARGETS = {"corr_mean": 0.99, "corr_worst": 0.98, "greedy_agree": 0.90}
# name -> write_random_checkpoint arguments
CONFIGS = {
    "mha-untied": dict(heads=4, kv_heads=4, tie=False),
    "gqa-untied": dict(heads=4, kv_heads=2, tie=False),
    "mqa-tied": dict(heads=4, kv_heads=1, tie=True),
    "gqa-tied-bf16": dict(heads=4, kv_heads=2, tie=True, dtype="BF16"),
    "bitnet-large-f16": dict(layout="bitnet-large", heads=4, kv_heads=4, dtype="F16"),
    "bitnet-2b-packed-relu2": dict(layout="bitnet-2b", heads=4, kv_heads=2),
}
# Wider and deeper (hidden 512, 4 layers, 8 heads of 64, FFN 1376, vocabulary 2000): measured
# and reported, not held to TARGETS (docs/llm.md: the ReLU^2 layout misses them at this size).
SCALE_CONFIGS = {
    "llama-512x4": dict(hidden=512, layers=4, heads=8, kv_heads=2, ffn=1376, vocab=2000),
    "bitnet-2b-512x4": dict(layout="bitnet-2b", hidden=512, layers=4, heads=8, kv_heads=2,
                            ffn=1376, vocab=2000),
}


def write_random_checkpoint(path, layout="llama", hidden=64, layers=2, heads=4, kv_heads=2,
                            ffn=128, vocab=256, tie=False, act=None, dtype="F32", max_pos=128,
                            qk_gain=2.5, head_gain=3.0, seed=0):
    """Write a random Hugging Face checkpoint (config.json + model.safetensors) to ``path``.

    ``layout``: "llama" (latent float weights in ``dtype``), "bitnet-large"
    (model_type llama, sub-norms inner_attn_ln / ffn_layernorm) or
    "bitnet-2b" (model_type bitnet, relu2 by default, sub-norms
    attn_sub_norm / ffn_sub_norm, packed uint8 linears with weight_scale,
    BF16 elsewhere, tied by default). ``qk_gain`` sharpens attention and
    ``head_gain`` the logits (a random model is otherwise nearly uniform).
    Norm gammas are 1 +- 0.3 with one channel in 16 negated. Returns the path.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    packed = layout == "bitnet-2b"
    act = act or ("relu2" if packed else "silu")
    tie = tie or packed
    d = hidden // heads
    dt = "BF16" if packed else dtype

    def gamma(n):
        g = 1.0 + 0.3 * rng.standard_normal(n)
        return g * np.where(rng.random(n) < 1 / 16, -1.0, 1.0)

    t = {"model.embed_tokens.weight": (rng.standard_normal((vocab, hidden)), dt),
         "model.norm.weight": (gamma(hidden), dt)}
    if not tie:
        t["lm_head.weight"] = (head_gain * rng.standard_normal((vocab, hidden)) / hidden**0.5, dt)
    else:
        t["model.embed_tokens.weight"] = (head_gain * rng.standard_normal((vocab, hidden))
                                          / hidden**0.5, dt)
    sub = {"bitnet-large": ("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
           "bitnet-2b": ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")}.get(layout)
    shapes = {"self_attn.q_proj": (heads * d, hidden), "self_attn.k_proj": (kv_heads * d, hidden),
              "self_attn.v_proj": (kv_heads * d, hidden), "self_attn.o_proj": (hidden, heads * d),
              "mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden),
              "mlp.down_proj": (hidden, ffn)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (gamma(hidden), dt)
        t[p + "post_attention_layernorm.weight"] = (gamma(hidden), dt)
        if sub:
            t[f"{p}{sub[0]}.weight"] = (gamma(heads * d), dt)
            t[f"{p}{sub[1]}.weight"] = (gamma(ffn), dt)
        for name, (n_out, n_in) in shapes.items():
            gain = qk_gain if name in ("self_attn.q_proj", "self_attn.k_proj") else 1.0
            w = gain * rng.standard_normal((n_out, n_in)) / n_in**0.5
            if packed:
                w_t, g = quantize_ternary(w)
                t[f"{p}{name}.weight"] = (pack_ternary(w_t), "U8")
                t[f"{p}{name}.weight_scale"] = (np.array([1.0 / g]), "BF16")
            else:
                t[f"{p}{name}.weight"] = (w, dt)
    cfg = {"architectures": ["BitNetForCausalLM" if packed else "BitnetForCausalLM"
                             if layout == "bitnet-large" else "LlamaForCausalLM"],
           "model_type": "bitnet" if packed else "llama", "vocab_size": vocab,
           "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "hidden_act": act,
           "max_position_embeddings": max_pos, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": tie, "rope_scaling": None, "attention_bias": False}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    write_safetensors(path / "model.safetensors", t)
    return path


def measure(ckpt, params, prompts, new_tokens):
    """Correlation and greedy agreement of golden vs float on ``prompts``."""
    deq = ckpt.dequantized_weights()
    corr, agree = [], []
    for ids in prompts:
        tokens, gl = generate(GoldenDecoder(params), ids, new_tokens)
        seq = np.concatenate([ids, tokens[:-1]])
        fl = float_forward(deq, ckpt.cfg, seq)
        corr.append(logit_correlation(gl, fl))
        agree.append(np.argmax(fl[len(ids) - 1:], axis=-1) == tokens)
    corr, agree = np.concatenate(corr), np.concatenate(agree)
    return {"corr_mean": float(corr.mean()), "corr_worst": float(corr.min()),
            "greedy_agree": float(agree.mean()), "positions": int(corr.size)}


def ablation(ckpt, params, prompts):
    """Logit correlation to float of the float model with one integer step emulated."""
    deq, rows = ckpt.dequantized_weights(), []
    for steps in [(s,) for s in EMULATE_STEPS] + [EMULATE_STEPS]:
        c = np.concatenate([logit_correlation(float_forward(deq, ckpt.cfg, ids, emulate=steps,
                                                            params=params),
                                              float_forward(deq, ckpt.cfg, ids))
                            for ids in prompts])
        rows.append({"emulated": "+".join(steps) if len(steps) > 1 else steps[0],
                     "corr_mean": float(c.mean()), "corr_worst": float(c.min())})
    c = np.concatenate([logit_correlation(params.dequantize_logits(prefill(params, ids,
                                                                            KVCache(params))),
                                          float_forward(deq, ckpt.cfg, ids)) for ids in prompts])
    rows.append({"emulated": "integer model (golden)", "corr_mean": float(c.mean()),
                 "corr_worst": float(c.min())})
    return rows


def silu_sweep(x0s=(16, 32, 48, 64, 96, 128, 256, 1024, 8192)):
    """Error of the integer SiLU (shiftgelu "accurate", slope 1) against x sigmoid(x) for
    gate values x ~ N(0, 2^2) (200,000, seed 0) quantized at scale 1/(|x0| + 1/2), i.e.
    IEXP constant x0 (host.llama.SILU_X0 comes from this table)."""
    xf = 2.0 * np.random.default_rng(0).standard_normal(200_000)
    ref = xf / (1.0 + np.exp(-xf))
    rows = []
    for k in x0s:
        s = 1.0 / (k + 0.5)
        g = np.round(xf / s).astype(np.int64)
        y = shiftgelu(g, _scale_for_x0(-k, GELU_SLOPE), mode="accurate") * s / 2.0**15
        rows.append({"x0": -k, "max_abs_err": float(np.abs(y - ref).max()),
                     "rms_err": float(np.sqrt(np.mean((y - ref) ** 2)))})
    return rows


def run(prompts=20, prompt_len=24, new_tokens=12, seed=7, log=print):
    """Every configuration and the ablation; returns the JSON payload."""
    t0 = time.monotonic()
    results, abl = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, kw) in enumerate({**CONFIGS, **SCALE_CONFIGS}.items()):
            path = write_random_checkpoint(Path(tmp) / name, seed=100 + i, **kw)
            for attn_scale, logit_bits in VARIANTS:
                ckpt = load_llama(path, attn_scale=attn_scale, logit_bits=logit_bits)
                rng = np.random.default_rng(seed)
                ps = [rng.integers(0, ckpt.cfg.vocab, prompt_len) for _ in range(prompts)]
                params = quantize(ckpt)
                row = {"config": name, "attn_scale": attn_scale, "logit_bits": logit_bits,
                       "heads": ckpt.cfg.heads,
                       "kv_heads": ckpt.cfg.kv_heads, "act": ckpt.cfg.act, "tied": ckpt.tied,
                       "sub_norm": ckpt.cfg.sub_norm, **measure(ckpt, params, ps, new_tokens)}
                results.append(row)
                log(f"  [{time.monotonic() - t0:6.1f}s] {name} ({attn_scale}, {logit_bits}-bit "
                    f"logits): corr mean "
                    f"{row['corr_mean']:.4f} worst {row['corr_worst']:.4f}, greedy "
                    f"{row['greedy_agree']:.3f}")
                if name in ABLATION_CONFIGS and (attn_scale, logit_bits) == VARIANTS[0]:
                    abl.append({"config": name, "rows": ablation(ckpt, params, ps[:6])})
    return {"targets": TARGETS, "silu_x0_sweep": silu_sweep(), "prompts": prompts,
            "prompt_len": prompt_len,
            "new_tokens": new_tokens, "results": results, "ablation": abl,
            "seconds": time.monotonic() - t0}


def _nll(logits, targets):
    """Per-position negative log-likelihood of ``targets`` under float logits (T, V)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1))
    return lse - z[np.arange(targets.size), targets]


def lm_perplexity(model_dir=None, windows=None, log=print):
    """Held-out perplexity of the built-in LM: float, float with BitNet's int8 per-token
    activations (the forward it was trained with), and the golden integer model."""
    from ..host.hf import calibration_ids
    from ..host.models import lm
    from ..host.models.lm.tokenizer import ByteTokenizer
    t0 = time.monotonic()
    label = str(model_dir) if model_dir else "built-in (host/models/lm)"
    model_dir = Path(model_dir) if model_dir else lm.MODEL_DIR
    ckpt = load_llama(model_dir)
    tok = ByteTokenizer(model_dir / "tokenizer.json")
    params = quantize(ckpt, calibration_ids(tok, ckpt.cfg.max_pos))
    data = lm.heldout_windows(ckpt.cfg.max_pos)[:windows]
    deq = ckpt.dequantized_weights()
    nll = {"float": [], "float_int8_act": [], "golden": []}
    corr, agree = [], []
    for i, w in enumerate(data):
        x, y = w[:-1], w[1:]
        fl = float_forward(deq, ckpt.cfg, x)
        gl = params.dequantize_logits(prefill(params, x, KVCache(params)))
        nll["float"].append(_nll(fl, y))
        nll["float_int8_act"].append(_nll(float_forward(deq, ckpt.cfg, x,
                                                        emulate=("act_quant",)), y))
        nll["golden"].append(_nll(gl, y))
        corr.append(logit_correlation(gl, fl))
        agree.append(np.argmax(gl, -1) == np.argmax(fl, -1))
        log(f"  [{time.monotonic() - t0:6.1f}s] window {i + 1}/{len(data)}: golden ppl so far "
            f"{np.exp(np.concatenate(nll['golden']).mean()):.4f}")
    ppl = {k: float(np.exp(np.concatenate(v).mean())) for k, v in nll.items()}
    corr, agree = np.concatenate(corr), np.concatenate(agree)
    prompts = list(lm.heldout_windows(ckpt.cfg.max_pos)[:GEN_PROMPTS, :GEN_PROMPT_LEN])
    gen = measure(ckpt, params, prompts, GEN_TOKENS)
    log(f"  [{time.monotonic() - t0:6.1f}s] greedy generation from {len(prompts)} prompts: "
        f"agreement {gen['greedy_agree']:.4f}")
    return {"model": label, "windows": int(len(data)),
            "corr_mean": float(corr.mean()), "corr_worst": float(corr.min()),
            "argmax_agree": float(agree.mean()), "generation": gen,
            "tokens_scored": int(data[:, 1:].size), "perplexity": ppl,
            "golden_minus_float": ppl["golden"] - ppl["float"],
            "golden_minus_float_int8_act": ppl["golden"] - ppl["float_int8_act"],
            "seconds": time.monotonic() - t0}


def _fmt(rows):
    """Correlations with five decimals (format_table keeps 3-4 significant digits)."""
    return [{k: f"{v:.5f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="docs/bench/llm_fidelity.json")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--lm", action="store_true", help="instead: perplexity of the built-in LM")
    ap.add_argument("--lm-json", default="docs/bench/llm_ppl.json")
    ap.add_argument("--windows", type=int, help="held-out windows (default: all)")
    args = ap.parse_args(argv)
    if args.lm:
        out = lm_perplexity(windows=args.windows)
        names = {"float": "float", "float_int8_act": "float, int8 per-token activations",
                 "golden": "golden (integer)"}
        print(format_table([{"model": names[k], "perplexity": f"{v:.4f}"}
                            for k, v in out["perplexity"].items()], ["model", "perplexity"]))
        Path(args.lm_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.lm_json).write_text(json.dumps(out, indent=2) + "\n")
        g = out["generation"]
        print(f"logit correlation golden vs float: mean {out['corr_mean']:.5f}, worst "
              f"{out['corr_worst']:.5f}; argmax agreement {out['argmax_agree']:.4f}; greedy "
              f"generation ({GEN_PROMPTS} prompts x {GEN_TOKENS} tokens): corr mean "
              f"{g['corr_mean']:.5f}, worst {g['corr_worst']:.5f}, agreement "
              f"{g['greedy_agree']:.4f}")
        print(f"wrote {args.lm_json}")
        return
    out = run(prompts=args.prompts, new_tokens=args.new_tokens)
    cols = ["config", "attn_scale", "logit_bits", "heads", "kv_heads", "act", "tied", "sub_norm",
            "corr_mean", "corr_worst", "greedy_agree"]
    print(format_table(_fmt(out["results"]), cols))
    print("\ninteger SiLU error against x sigmoid(x), x ~ N(0, 2^2), by IEXP constant x0:")
    print(format_table(out["silu_x0_sweep"], ["x0", "max_abs_err", "rms_err"]))
    for a in out["ablation"]:
        print(f"\nablation on {a['config']} (float model with one integer step):")
        print(format_table(_fmt(a["rows"]), ["emulated", "corr_mean", "corr_worst"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
