"""The built-in default model: a 2-layer ternary transformer on sklearn's 8x8 digits.

Files beside this module: ``config.json`` (shapes, split, measured
accuracies), ``weights.safetensors`` (latent float32 weights; the ternary
quantizer is applied by whoever loads them) and ``train.py`` (retraining,
needs the ``train`` extra: torch). Everything here is NumPy only.

Weight matrices are stored as (in_features, out_features): ``y = x @ W + b``.
"""

from pathlib import Path

from .. import checkpoint
from .data import load_digits_split, patchify, unpatchify

MODEL_DIR = Path(__file__).resolve().parent
CONFIG_PATH = MODEL_DIR / "config.json"
WEIGHTS_PATH = MODEL_DIR / "weights.safetensors"

# Linear layers inside each encoder block, in execution order.
BLOCK_LINEARS = ("q", "k", "v", "o", "fc1", "fc2")

__all__ = ["MODEL_DIR", "CONFIG_PATH", "WEIGHTS_PATH", "BLOCK_LINEARS",
           "weight_shapes", "load_config", "load_weights",
           "load_digits_split", "patchify", "unpatchify"]


def weight_shapes(config):
    """Every tensor name of the weight file and its shape, in file order."""
    f, h, ffn = config["in_features"], config["hidden"], config["ffn"]
    shapes = {"embed.weight": (f, h), "embed.bias": (h,), "pos": (config["tokens"], h)}
    linear = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "fc1": (h, ffn), "fc2": (ffn, h)}
    for i in range(config["layers"]):
        p = f"blocks.{i}."
        shapes[p + "ln1.weight"] = (h,)
        shapes[p + "ln1.bias"] = (h,)
        for name in BLOCK_LINEARS:
            if name == "fc1":
                shapes[p + "ln2.weight"] = (h,)
                shapes[p + "ln2.bias"] = (h,)
            shapes[p + name + ".weight"] = linear[name]
            shapes[p + name + ".bias"] = (linear[name][1],)
    shapes["head_ln.weight"] = (h,)
    shapes["head_ln.bias"] = (h,)
    shapes["head.weight"] = (h, config["classes"])
    shapes["head.bias"] = (config["classes"],)
    return shapes


def load_config(path=CONFIG_PATH):
    """The model's config.json as a dict."""
    return checkpoint.load_config(path)


def load_weights(path=WEIGHTS_PATH, config=None):
    """The latent float32 weights as ``{name: np.ndarray}``.

    Checks that the names and shapes are exactly those of
    :func:`weight_shapes` and that every value is finite; raises
    ``ValueError`` naming the first mismatch.
    """
    config = load_config() if config is None else config
    return checkpoint.load_checked(path, weight_shapes(config), "float32")
