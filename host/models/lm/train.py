"""BitNet b1.58 quantization-aware training of the built-in LM (needs torch).

    python -m trilut.host.models.lm.train [--steps N] [--out DIR]

Trains the Llama described by ``ARCH`` (hidden 256, 4 layers, 4 query heads
and 2 kv heads of 64, SiLU-gated MLP of 688, byte vocabulary) on the
generated stories of ``corpus.py``, then writes ``model.safetensors`` (latent
float16 weights, Hugging Face names, ``(out, in)`` matrices), ``config.json``
and ``train_log.json`` into DIR (default: this package's directory).

QAT, in every BitNet linear (q, k, v, o, gate, up, down; no biases):
- weights per tensor: gamma = mean(|w|), w_t = clip(round(w / (gamma + 1e-5)), -1, 1),
  forward with w_t * gamma (``trilut.golden.quantize_ternary``);
- input activations per token: scale = absmax / 127, clip(round(x / scale), -128, 127),
  forward with q * scale;
- both with a straight-through estimator; rounding is half up, as in ``trilut.golden``.
The embedding, the RMSNorms, attention (RoPE, softmax) and the LM head stay float.

torch is imported only here: it is the optional ``train`` extra.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..qat import fake_quant_int8_per_token, fake_quant_ternary

from . import ATTN_LINEARS, MLP_LINEARS, MODEL_DIR, TRAIN_LOG_PATH, heldout_windows, token_stream, tokenizer, weight_shapes
from .corpus import TRAIN_SEED, stories

ARCH = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": tokenizer.VOCAB_SIZE,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": tokenizer.BOS,
    "eos_token_id": tokenizer.EOS,
    "torch_dtype": "float16",
}
# Not a Hugging Face field: what the latent weights mean, for the importer.
QUANT_NOTE = {"method": "bitnet-b1.58",
              "weights": "q/k/v/o/gate/up/down_proj: ternary, absmean per tensor, quantized at load",
              "activations": "int8 absmax per token before each ternary linear",
              "high_precision": "embed_tokens, RMSNorms, attention, lm_head"}

TRAIN_STORIES = 60000          # ~24 M tokens; the run sees each window-start a few times at most
class BitLinear(nn.Linear):
    """``nn.Linear`` without bias; ``mode`` picks the forward:
    "qat" ternary weights and int8 inputs, "ternary" ternary weights and float
    inputs, "float" the latent weights."""

    def __init__(self, fan_in, fan_out):
        super().__init__(fan_in, fan_out, bias=False)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x, mode):
        w = self.weight
        if mode != "float":
            w = fake_quant_ternary(w)
            if mode == "qat":
                x = fake_quant_int8_per_token(x)
        return F.linear(x, w)


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, d, theta):
    """cos, sin of shape (seq, d) in the Hugging Face layout (frequencies repeated twice)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rope(x, cos, sin):
    """HF ``rotate_half``: element i pairs with element i + d/2."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, d = cfg["hidden_size"], cfg["head_dim"]
        self.heads, self.kv_heads, self.d = cfg["num_attention_heads"], cfg["num_key_value_heads"], d
        self.input_layernorm = RMSNorm(h, cfg["rms_norm_eps"])
        self.q_proj = BitLinear(h, self.heads * d)
        self.k_proj = BitLinear(h, self.kv_heads * d)
        self.v_proj = BitLinear(h, self.kv_heads * d)
        self.o_proj = BitLinear(self.heads * d, h)
        self.post_attention_layernorm = RMSNorm(h, cfg["rms_norm_eps"])
        self.gate_proj = BitLinear(h, cfg["intermediate_size"])
        self.up_proj = BitLinear(h, cfg["intermediate_size"])
        self.down_proj = BitLinear(cfg["intermediate_size"], h)

    def forward(self, x, cos, sin, mode):
        n, t, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y, mode).view(n, t, self.heads, self.d).transpose(1, 2)
        k = self.k_proj(y, mode).view(n, t, self.kv_heads, self.d).transpose(1, 2)
        v = self.v_proj(y, mode).view(n, t, self.kv_heads, self.d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.heads // self.kv_heads          # query head h reads kv head h // rep
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(n, t, self.heads * self.d), mode)
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y, mode)) * self.up_proj(y, mode), mode)


class TinyLlama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], h)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(h, cfg["rms_norm_eps"])
        self.lm_head = nn.Linear(h, cfg["vocab_size"], bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        cos, sin = rope_tables(cfg["max_position_embeddings"], cfg["head_dim"], cfg["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, mode="qat"):
        t = ids.shape[1]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.cos[:t], self.sin[:t], mode)
        return self.lm_head(self.norm(x))

    def named_weights(self):
        """``{Hugging Face name: parameter}``."""
        params = {"model.embed_tokens.weight": self.embed_tokens.weight}
        for i, layer in enumerate(self.layers):
            for name, param in layer.named_parameters():
                group = ("self_attn." if name.split(".")[0] in ATTN_LINEARS
                         else "mlp." if name.split(".")[0] in MLP_LINEARS else "")
                params[f"model.layers.{i}." + group + name] = param
        params["model.norm.weight"] = self.norm.weight
        params["lm_head.weight"] = self.lm_head.weight
        return params

    def export(self):
        """``{Hugging Face name: float16 ndarray}``."""
        return {k: np.ascontiguousarray(v.detach().cpu().numpy().astype(np.float16))
                for k, v in self.named_weights().items()}

    def load_export(self, tensors):
        """Load ``{Hugging Face name: array}`` (e.g. the float16-rounded export)."""
        with torch.no_grad():
            for name, param in self.named_weights().items():
                param.copy_(torch.from_numpy(np.asarray(tensors[name], dtype=np.float32)))


@torch.no_grad()
def mean_loss(model, windows, mode, batch=8):
    """Mean next-token cross-entropy (nats) over ``windows`` (int64 tensor (n, seq + 1))."""
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(windows), batch):
        w = windows[s:s + batch]
        logits = model(w[:, :-1], mode)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                       reduction="sum"))
        count += w[:, 1:].numel()
    return total / count


@torch.no_grad()
def sample(model, prompt, max_new=200, top_k=None, temperature=1.0, seed=0, mode="qat"):
    """Text continuing ``prompt``: greedy, or top-k sampling with a seeded generator.
    Stops at EOS or at max_position_embeddings tokens."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(prompt)
    limit = model.cos.shape[0]
    for _ in range(max_new):
        if len(ids) >= limit:
            break
        logits = model(torch.tensor([ids]), mode)[0, -1]
        if top_k is None:
            nxt = int(logits.argmax())
        else:
            vals, idx = torch.topk(logits / temperature, top_k)
            nxt = int(idx[torch.multinomial(torch.softmax(vals, -1), 1, generator=gen)])
        if nxt == tokenizer.EOS:
            break
        ids.append(nxt)
    return tokenizer.decode(ids)


SAMPLE_PROMPTS = ("Once upon a time", "Lily had a red", "One day, Tom went to the",
                  "The dogs")


def train(steps=1500, batch=8, seq=256, lr=2e-3, warmup=100, weight_decay=0.1, seed=TRAIN_SEED,
          threads=1, eval_every=250, log=print, checkpoint=None):
    """Train; returns ``(model, log_dict)``. ``checkpoint(model, log_dict)`` is called
    at every evaluation (the caller writes the files)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    cfg = dict(ARCH)
    seq = min(seq, cfg["max_position_embeddings"])

    t_data = time.perf_counter()
    stream = torch.from_numpy(token_stream(stories(TRAIN_STORIES, TRAIN_SEED)).astype(np.int64))
    heldout = torch.from_numpy(heldout_windows(seq))
    log(f"corpus: {TRAIN_STORIES} training stories, {stream.numel()} tokens; held-out "
        f"{heldout.shape[0]} x {seq} tokens ({time.perf_counter() - t_data:.1f} s)")

    model = TinyLlama(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    matrices = [p for p in model.parameters() if p.ndim == 2]
    norms = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                             {"params": norms, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def lr_at(step):                  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(seq + 1)
    history, recent = [], []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        if step == steps // 2 + 1:    # two-stage weight decay: none in the second half
            opt.param_groups[0]["weight_decay"] = 0.0
        model.train()
        w = stream[torch.randint(0, stream.numel() - seq - 1, (batch, 1), generator=gen) + offsets]
        logits = model(w[:, :-1], "qat")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-50:]
        elapsed = time.perf_counter() - t0
        if step % 20 == 0 or step == 1:
            log(f"step {step:5d}/{steps}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                f"{step * batch * seq / elapsed:6.0f} tok/s  {elapsed:6.0f} s")
        if step % eval_every == 0 or step == steps:
            ho = mean_loss(model, heldout, "qat")
            history.append({"step": step, "tokens": step * batch * seq, "seconds": round(elapsed, 1),
                            "train_loss_last50": round(sum(recent) / len(recent), 4),
                            "heldout_loss_qat": round(ho, 4)})
            log(f"  held-out loss (QAT) {ho:.4f}  ppl {math.exp(ho):.3f}")
            log(f"  sample: {sample(model, SAMPLE_PROMPTS[0], max_new=120)!r}")
            if checkpoint is not None and step != steps:
                checkpoint(model, {"partial": True, "history": history})
    seconds = time.perf_counter() - t0

    # Everything below is measured on the float16-rounded weights, i.e. the shipped file.
    model.load_export(model.export())
    losses = {mode: mean_loss(model, heldout, mode) for mode in ("qat", "ternary", "float")}
    result = {
        "parameters": n_params,
        "tokens_seen": steps * batch * seq,
        "wall_seconds": round(seconds, 1),
        "train_loss_last50": round(sum(recent) / len(recent), 4),
        "heldout": {"windows": int(heldout.shape[0]), "seq": seq,
                    "tokens_scored": int(heldout[:, 1:].numel())},
        "heldout_loss": {m: round(v, 5) for m, v in losses.items()},
        "heldout_perplexity": {m: round(math.exp(v), 5) for m, v in losses.items()},
        "training": {"seed": seed, "steps": steps, "batch": batch, "seq": seq,
                     "optimizer": "AdamW betas (0.9, 0.95), grad clip 1.0",
                     "lr": lr, "schedule": f"linear warm-up {warmup} steps, cosine to 0",
                     "weight_decay": f"{weight_decay} on matrices for the first half, 0 after; "
                                     "never on norms",
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "train_stories": TRAIN_STORIES},
        "history": history,
        "samples": [{"prompt": p, "greedy": sample(model, p),
                     "top_k10_t0.8_seed0": sample(model, p, top_k=10, temperature=0.8, seed=0)}
                    for p in SAMPLE_PROMPTS],
    }
    return model, result


def write(model, result, out_dir):
    """model.safetensors, config.json and train_log.json into ``out_dir``."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(ARCH)
    config["trilut_quantization"] = QUANT_NOTE
    tensors = model.export()
    expected = weight_shapes(config)
    assert list(tensors) == list(expected), sorted(set(tensors) ^ set(expected))
    for name, shape in expected.items():
        assert tensors[name].shape == shape, (name, tensors[name].shape, shape)
    # One metadata key: safetensors writes the map in hash order (byte-reproducible files).
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for name, obj in (("config.json", config), (TRAIN_LOG_PATH.name, result)):
        with open(out_dir / name, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trilut.host.models.lm.train",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    ap.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (default 250)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, default=MODEL_DIR,
                    help=f"output directory (default {MODEL_DIR})")
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "eval_every", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        ap.error(f"--lr must be > 0, got {args.lr}")
    model, result = train(steps=args.steps, batch=args.batch, lr=args.lr, threads=args.threads,
                          eval_every=args.eval_every,
                          checkpoint=lambda m, r: write(m, r, args.out))
    write(model, result, args.out)
    ppl = result["heldout_perplexity"]
    print(f"held-out perplexity: QAT {ppl['qat']:.4f}, ternary weights + float activations "
          f"{ppl['ternary']:.4f}, latent float {ppl['float']:.4f}; {result['wall_seconds']:.0f} s")
    for s in result["samples"]:
        print(f"greedy: {s['greedy']!r}")
    print(f"wrote model.safetensors, config.json, train_log.json to {args.out}")


if __name__ == "__main__":
    main()
