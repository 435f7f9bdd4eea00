"""Quantization-aware training of the built-in digits model (needs torch).

    python -m trilut.host.models.digits.train [--epochs N] [--out DIR]

Trains the 2-layer ternary transformer described in ``config.json`` on the
fixed stratified split of sklearn's 8x8 digits with BitNet b1.58 QAT, then
writes ``weights.safetensors`` (latent float32 weights, matrices stored as
(in_features, out_features)) and ``config.json`` (with the measured test
accuracies) into DIR (default: this package's directory).

QAT, in every ternary linear layer (q, k, v, o, fc1, fc2):
- weights: gamma = mean(|w|), w_t = clip(round(w / (gamma + 1e-5)), -1, 1),
  forward with w_t * gamma;
- input activations: per-token absmax int8, scale = absmax / 127,
  q = clip(round(x / scale), -128, 127), forward with q * scale;
- both with a straight-through estimator (identity gradient);
- round is half up (floor(x + 1/2)), the rounding of ``trilut.golden``.
The patch embedding, LayerNorms and the head stay float.

torch is imported only here: it is the optional ``train`` extra
(``pip install -e .[train]``); everything else in trilut runs without it.
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

from . import BLOCK_LINEARS, MODEL_DIR, weight_shapes
from .data import CLASSES, IN_FEATURES, PATCH, TOKENS, load_digits_split, patchify

SPLIT_SEED = 0
TEST_FRACTION = 0.2
TRAIN_SEED = 0

ARCH = {
    "task": "digits-8x8",
    "patch": PATCH,
    "tokens": TOKENS,
    "in_features": IN_FEATURES,
    "hidden": 64,
    "heads": 2,
    "ffn": 256,
    "layers": 2,
    "classes": CLASSES,
    "linear": {name: "ternary" for name in BLOCK_LINEARS},
}

LN_EPS = 1e-5
class Linear(nn.Module):
    """y = x @ W + b with W stored (in, out), as in the weight file.

    ``ternary=True`` makes it a BitNet b1.58 layer: with ``quant=True`` the
    weights are ternarized, and with ``act_quant=True`` too its input is
    fake-quantized per token to int8. ``quant=False`` uses the latent float
    weights.
    """

    def __init__(self, fan_in, fan_out, ternary):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.ternary = ternary

    def forward(self, x, quant, act_quant):
        w = self.weight
        if self.ternary and quant:
            w = fake_quant_ternary(w)
            if act_quant:
                x = fake_quant_int8_per_token(x)
        return x @ w + self.bias


class Block(nn.Module):
    """Pre-LN encoder block: x += O(attn(LN1 x)); x += FC2(GELU(FC1(LN2 x)))."""

    def __init__(self, hidden, heads, ffn, ternary):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.q = Linear(hidden, hidden, ternary["q"])
        self.k = Linear(hidden, hidden, ternary["k"])
        self.v = Linear(hidden, hidden, ternary["v"])
        self.o = Linear(hidden, hidden, ternary["o"])
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.fc1 = Linear(hidden, ffn, ternary["fc1"])
        self.fc2 = Linear(ffn, hidden, ternary["fc2"])

    def forward(self, x, quant, act_quant):
        n, t, h = x.shape
        d = h // self.heads
        y = self.ln1(x)

        def split(z):
            return z.reshape(n, t, self.heads, d).transpose(1, 2)    # (n, heads, t, d)

        q, k, v = (split(getattr(self, name)(y, quant, act_quant)) for name in ("q", "k", "v"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(n, t, h)               # heads concatenated
        x = x + self.o(a, quant, act_quant)
        y = self.fc1(self.ln2(x), quant, act_quant)
        return x + self.fc2(F.gelu(y), quant, act_quant)                        # exact (erf) GELU


class DigitsTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden"]
        ternary = {name: cfg["linear"][name] == "ternary" for name in BLOCK_LINEARS}
        self.embed = Linear(cfg["in_features"], h, ternary=False)
        self.pos = nn.Parameter(torch.randn(cfg["tokens"], h) * 0.02)
        self.blocks = nn.ModuleList(Block(h, cfg["heads"], cfg["ffn"], ternary)
                                    for _ in range(cfg["layers"]))
        self.head_ln = nn.LayerNorm(h, eps=LN_EPS)
        self.head = Linear(h, cfg["classes"], ternary=False)

    def forward(self, tokens, quant=True, act_quant=None):
        """Logits. quant: ternary weights (QAT forward); act_quant (default:
        same as quant): int8 per-token inputs to the ternary layers."""
        act_quant = quant if act_quant is None else act_quant
        x = self.embed(tokens, False, False) + self.pos
        for block in self.blocks:
            x = block(x, quant, act_quant)
        return self.head(self.head_ln(x).mean(dim=1), False, False)

    def export(self):
        """{name: float32 ndarray} in the weight file's naming convention."""
        out = {"embed.weight": self.embed.weight, "embed.bias": self.embed.bias, "pos": self.pos}
        for i, b in enumerate(self.blocks):
            p = f"blocks.{i}."
            out[p + "ln1.weight"], out[p + "ln1.bias"] = b.ln1.weight, b.ln1.bias
            out[p + "ln2.weight"], out[p + "ln2.bias"] = b.ln2.weight, b.ln2.bias
            for name in BLOCK_LINEARS:
                layer = getattr(b, name)
                out[p + name + ".weight"], out[p + name + ".bias"] = layer.weight, layer.bias
        out["head_ln.weight"], out["head_ln.bias"] = self.head_ln.weight, self.head_ln.bias
        out["head.weight"], out["head.bias"] = self.head.weight, self.head.bias
        return {k: np.ascontiguousarray(v.detach().cpu().numpy().astype(np.float32))
                for k, v in out.items()}


def _shift_augment(images, gen):
    """Random translation by -1, 0 or +1 pixel in each direction (zero fill)."""
    n = images.shape[0]
    padded = F.pad(images, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(8))[:, :, None]      # (n, 8, 1)
    cols = (dx[:, None] + torch.arange(8))[:, None, :]      # (n, 1, 8)
    return padded[torch.arange(n)[:, None, None], rows, cols]


def _tokens(images):
    """(n, 8, 8) tensor -> (n, 16, 4), the same order as data.patchify."""
    n = images.shape[0]
    return images.reshape(n, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, TOKENS, IN_FEATURES)


@torch.no_grad()
def accuracy(model, tokens, labels, quant, act_quant=None):
    model.eval()
    pred = model(tokens, quant=quant, act_quant=act_quant).argmax(dim=-1)
    return float((pred == labels).float().mean())


def train(epochs=150, batch=64, lr=3e-3, weight_decay=0.05, warmup=5, augment=True,
          label_smoothing=0.1, seed=TRAIN_SEED, threads=1, log=print):
    # One intra-op thread by default: the matrices are tiny, and on a busy
    # 2-core machine two OpenMP threads measured ~20x more CPU time per step.
    # It also keeps float reductions in one fixed order.
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)

    x_tr, y_tr, x_te, y_te = load_digits_split(SPLIT_SEED, TEST_FRACTION)
    img_tr = torch.from_numpy(x_tr)
    lab_tr, lab_te = torch.from_numpy(y_tr), torch.from_numpy(y_te)
    tok_tr_plain = torch.from_numpy(patchify(x_tr))
    tok_te = torch.from_numpy(patchify(x_te))
    assert torch.equal(_tokens(img_tr), tok_tr_plain)

    model = DigitsTransformer(ARCH)
    decay = [p for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith(".weight") and p.ndim == 2)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(len(lab_tr) / batch)
    total = epochs * steps_per_epoch

    def lr_at(step):
        if step < warmup * steps_per_epoch:
            return (step + 1) / (warmup * steps_per_epoch)
        progress = (step - warmup * steps_per_epoch) / max(1, total - warmup * steps_per_epoch)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(lab_tr), generator=gen)
        total_loss = 0.0
        for s in range(0, len(perm), batch):
            idx = perm[s:s + batch]
            img = img_tr[idx]
            if augment:
                img = _shift_augment(img, gen)
            logits = model(_tokens(img), quant=True)
            loss = F.cross_entropy(logits, lab_tr[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        if epoch % 5 == 0 or epoch == epochs or epoch == 1:
            log(f"epoch {epoch:4d}/{epochs}  loss {total_loss / len(lab_tr):.4f}  "
                f"test qat {100 * accuracy(model, tok_te, lab_te, True):6.2f}%  "
                f"float {100 * accuracy(model, tok_te, lab_te, False):6.2f}%  "
                f"({time.perf_counter() - t0:.0f} s)")
        else:
            log(f"epoch {epoch:4d}/{epochs}  loss {total_loss / len(lab_tr):.4f}")
    seconds = time.perf_counter() - t0

    acc = {
        "qat_test": accuracy(model, tok_te, lab_te, True),
        "float_test": accuracy(model, tok_te, lab_te, False),
        "ternary_float_act_test": accuracy(model, tok_te, lab_te, True, act_quant=False),
        "qat_train": accuracy(model, tok_tr_plain, lab_tr, True),
        "float_train": accuracy(model, tok_tr_plain, lab_tr, False),
        "n_train": int(len(lab_tr)),
        "n_test": int(len(lab_te)),
    }
    training = {"seed": seed, "epochs": epochs, "batch": batch, "optimizer": "AdamW",
                "lr": lr, "weight_decay": weight_decay, "schedule": f"linear warmup {warmup} epochs, cosine",
                "label_smoothing": label_smoothing,
                "augment": "random shift -1/0/+1 px" if augment else "none",
                "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                "torch": torch.__version__}
    return model, acc, training


# One metadata key only: safetensors writes its metadata map in hash order,
# so several keys would make the file's bytes differ between runs.
WEIGHTS_METADATA = {"trilut": "digits-8x8 latent float32 weights, linear matrices (in_features, out_features); "
                              "q,k,v,o,fc1,fc2 are ternarized (absmean) by the loader"}


def save_weights(tensors, path):
    """Write ``{name: float32 ndarray}`` to a safetensors file, byte-reproducibly."""
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=WEIGHTS_METADATA)


def write(model, acc, training, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(ARCH)
    config["split"] = {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION}
    config["accuracy"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in acc.items()}
    config["training"] = training
    tensors = model.export()
    expected = weight_shapes(config)
    assert set(tensors) == set(expected), sorted(set(tensors) ^ set(expected))
    for name, shape in expected.items():
        assert tensors[name].shape == shape, (name, tensors[name].shape, shape)
    tensors = {name: tensors[name] for name in expected}
    save_weights(tensors, out_dir / "weights.safetensors")
    with open(out_dir / "config.json", "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trilut.host.models.digits.train",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=150, help="training epochs (default 150)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, default=MODEL_DIR,
                    help=f"output directory for weights.safetensors and config.json (default {MODEL_DIR})")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    model, acc, training = train(epochs=args.epochs, threads=args.threads)
    write(model, acc, training, args.out)
    print(f"test accuracy: QAT (ternary forward) {100 * acc['qat_test']:.2f}%, "
          f"latent float weights {100 * acc['float_test']:.2f}% "
          f"({acc['n_test']} images); {training['seconds']:.0f} s")
    print(f"wrote {args.out / 'weights.safetensors'} and {args.out / 'config.json'}")


if __name__ == "__main__":
    main()
