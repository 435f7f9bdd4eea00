"""Token generation on the golden integer decoder: greedy, or temperature / top-k sampling.

:class:`GoldenDecoder` holds a model's LlamaParams and its KV cache;
:func:`generate` runs prefill once and then one decode step per new token,
calling ``on_token(token)`` as each token is chosen (so a command can print
text as it comes). The device that runs the steps is named by ``device``:
"golden", or "sim": :class:`SimDecoder`, a decoder build of the accelerator
simulated by Verilator behind the byte protocol (SimDevice + Driver), its
segments from :mod:`trilut.host.llm_compiler` (norms, ternary linears and
the gate product on chip; RoPE, attention and the LM head on the host), every
step compared with the golden model.

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
import time

import numpy as np

from ..golden.llm import KVCache, LlamaParams, prefill

__all__ = ["DEVICES", "GoldenDecoder", "SimDecoder", "check_device", "make_decoder", "choose",
           "generate"]

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


class SimDecoder:
    """``params`` on the simulated accelerator ``accel`` (a decoder build's
    parameter dict, ``llm=True``), through the host driver and the byte
    protocol. Each :meth:`run` is compared with the golden model integer for
    integer: ``matches`` stays True while every step agreed (the hardware's
    logits are returned either way). ``step_cycles``: the accelerator's
    cycles of each run (on-chip passes only); ``sim_cycles``/``seconds``:
    the simulator's cycles and the wall time spent in runs. The capacity is
    the smaller of the build's KV rows and the model's positions. Call
    :meth:`close` (or use ``with``) to stop the simulator."""

    def __init__(self, params, accel):
        from .compiler import _accelerator
        from .device import SimDevice
        from .driver import Driver
        from .llm_compiler import _check
        self.golden = GoldenDecoder(params)
        self.params, self.cache = params, KVCache(params)
        acc = _accelerator(accel)
        _check(params, acc, 1)          # the build's problems before the simulator starts
        self.capacity = min(self.cache.capacity, acc.max_rows)
        self.device = SimDevice(acc.params)
        self.driver = Driver(self.device, acc.params, timeout=600.0)
        self.matches, self.step_cycles, self.seconds = True, [], 0.0

    @property
    def sim_cycles(self):
        return self.device.cycles

    def run(self, ids):
        from .llm_compiler import run_on_driver
        want = self.golden.run(ids)
        t0 = time.monotonic()
        got, _, cycles = run_on_driver(self.driver, self.params, ids, self.cache)
        self.device.sync()
        self.seconds += time.monotonic() - t0
        self.step_cycles.append(cycles)
        self.matches &= bool(np.array_equal(got, want))
        return got

    def close(self):
        self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_device(device):
    """ValueError unless ``device`` is one this module runs (before any slow work)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def make_decoder(params, device="golden", accel=None):
    """The decoder that runs ``params`` on ``device`` ("sim": on the decoder
    build ``accel``, an Accelerator parameter dict)."""
    check_device(device)
    if device == "sim":
        if accel is None:
            raise ValueError("device 'sim' needs accel: a decoder build's parameters "
                             "(gen/units.py top-llm)")
        return SimDecoder(params, accel)
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
