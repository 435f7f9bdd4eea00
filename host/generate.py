"""Token generation on the golden integer decoder: greedy, or temperature / top-k sampling.

:class:`GoldenDecoder` holds a model's LlamaParams and its KV cache;
:func:`generate` runs prefill once and then one decode step per new token,
calling ``on_token(token)`` as each token is chosen (so a command can print
text as it comes). The device that runs the steps is named by ``device``:
"golden" today; "sim" (the simulated accelerator) needs the decoder
hardware and is refused with a clear error until it exists.

Sampling (:func:`choose`): greedy is the argmax of the integer logits (one
logit scale for the whole vocabulary, so this is the argmax of the
dequantized values; ties go to the lowest id). With ``temperature > 0`` the
dequantized logits divided by the temperature go through a float softmax,
optionally restricted to the ``top_k`` largest (ties broken by id), and a
token is drawn with ``numpy.random.default_rng(seed)``: the same seed gives
the same text.
"""
from __future__ import annotations

import math

import numpy as np

from ..golden.llm import KVCache, LlamaParams, prefill

__all__ = ["DEVICES", "GoldenDecoder", "check_device", "make_decoder", "choose", "generate"]

DEVICES = ("golden", "sim")


class GoldenDecoder:
    """The integer golden model with its KV cache (capacity: cfg.max_pos positions)."""

    def __init__(self, params):
        if not isinstance(params, LlamaParams):
            raise TypeError(f"params must be LlamaParams, got {type(params).__name__}")
        self.params = params
        self.cache = KVCache(params)

    @property
    def capacity(self):
        return self.cache.capacity

    def run(self, ids):
        """Integer logits (len(ids), vocab) of tokens appended at kv_pos."""
        return prefill(self.params, np.asarray(ids, np.int64), self.cache)


def check_device(device):
    """ValueError unless ``device`` can run the decoder today (before any slow work)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "sim":
        raise ValueError("--device sim: not yet: needs the decoder hardware (issue 13); "
                         "use --device golden")


def make_decoder(params, device="golden"):
    """The decoder that runs ``params`` on ``device``."""
    check_device(device)
    return GoldenDecoder(params)


def _check_sampling(temperature, top_k):
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")


def choose(logits, scale, temperature=0.0, top_k=0, rng=None):
    """Next token from one row of integer logits at ``scale`` (see the module docstring)."""
    _check_sampling(temperature, top_k)
    row = np.asarray(logits)
    if temperature == 0:
        return int(np.argmax(row))
    z = row.astype(np.float64) * scale / temperature
    if 0 < top_k < z.size:
        keep = np.argsort(-z, kind="stable")[:top_k]
        z = np.where(np.isin(np.arange(z.size), keep), z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


def generate(decoder, ids, max_new_tokens, temperature=0.0, top_k=0, seed=0, on_token=None,
             stop=None):
    """Prefill ``ids`` then generate up to ``max_new_tokens`` tokens.

    Returns ``(tokens int64 [N], logits float64 [P + N - 1, vocab])``: row i of
    the logits is the dequantized output after position i of the prompt
    followed by the generated tokens. ``stop``: a token id that ends
    generation early (it is included). Raises ValueError before running
    anything if the prompt plus the new tokens exceed the cache capacity.
    """
    ids = np.asarray(ids, np.int64)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if ids.size + max_new_tokens > decoder.capacity:
        raise ValueError(f"{ids.size} prompt tokens + {max_new_tokens} new tokens exceed the "
                         f"KV capacity of {decoder.capacity} positions")
    _check_sampling(temperature, top_k)
    rng = np.random.default_rng(seed)
    scale = decoder.params.logit_scale
    rows = [decoder.run(ids)]
    tokens = []
    while True:
        tok = choose(rows[-1][-1], scale, temperature, top_k, rng)
        tokens.append(tok)
        if on_token is not None:
            on_token(tok)
        if len(tokens) == max_new_tokens or tok == stop:
            break
        rows.append(decoder.run([tok]))
    return np.array(tokens, np.int64), np.concatenate(rows).astype(np.float64) * scale
