"""Token generation on the golden integer decoder: greedy, or temperature / top-k sampling.

:class:`GoldenDecoder` holds a model's LlamaParams and its KV cache;
:func:`generate` runs prefill once and then one decode step per new token,
calling ``on_token(token)`` as each token is chosen (so a command can print
text as it comes). The device that runs the steps is named by ``device``:
"golden", or "sim": :class:`SimDecoder`, a decoder build of the accelerator
simulated by Verilator behind the byte protocol (SimDevice + Driver), its
programs from :mod:`trilut.host.llm_compiler` (norms, ternary linears and
the gate product, RoPE and attention on chip; the LM head on the host), every
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
    cycles of each run (on-chip passes only); ``step_link``: each run's link
    traffic per request type (and ``total``); ``step_sim_cycles``: each
    run's simulated cycles, the link's included (``device.set_link`` puts
    it at a board's UART rate); ``sim_cycles_in_runs`` and
    ``seconds``: the simulator's cycles and the wall time spent in runs. The capacity is
    the smaller of the build's KV rows and the model's positions. Call
    :meth:`close` (or use ``with``) to stop the simulator.

    ``sdram`` (default True, the ULX3S-like configuration): the simulated
    SDRAM (LiteDRAM's controller and SDRAM model) behind the bridge; every
    linear's weights (:func:`~trilut.host.llm_compiler.weight_image`) are
    loaded into it once here (``layout``, ``weight_bytes``) and every
    program runs with ``weights=`` (FEED), so per step the link carries
    activations, constants and descriptors, not weights. False: the weights
    are sent over the link with every program. ``reference``: the
    LlamaParams the golden comparison runs (default ``params``; another one
    is a deliberately wrong model, for tests). ``log``: progress lines.
    ``build``: the build's name, for reports."""

    def __init__(self, params, accel, *, sdram=True, reference=None, log=None, build=None):
        from .compiler import _accelerator
        from .device import SimDevice
        from .driver import Driver
        from .llm_compiler import _check, kv_capacity, rope_on_chip, rope_table, weight_image
        if not isinstance(sdram, bool):
            raise TypeError(f"sdram must be a bool, got {sdram!r}")
        self.golden = GoldenDecoder(params if reference is None else reference)
        self.params, self.cache = params, KVCache(params)
        acc = _accelerator(accel)
        _check(params, acc, 1)          # the build's problems before the simulator starts
        self.capacity = min(self.cache.capacity, kv_capacity(params, acc))
        self.sdram, self.build, self._log = sdram, build, log
        self.image = weight_image(params, acc)
        self.device = SimDevice(acc.params, sdram=sdram)
        self.driver = Driver(self.device, acc.params, timeout=600.0)
        if rope_on_chip(params.cfg):    # the RoPE table, once (llm_compiler.rope_table)
            self.driver.write("rope", rope_table(params, acc))
        self.matches, self.step_cycles, self.seconds = True, [], 0.0
        self.sim_cycles_in_runs = 0     # the simulator's cycles during runs (not the loading)
        self.step_link = []             # per run: link traffic {request type: bytes/requests}
        self.step_sim_cycles = []       # per run: the simulator's cycles (link included)
        self.layout, self.weight_bytes = None, sum(map(len, self.image.values()))
        self.counters = []              # (program, counters) of every program run
        self._memo = {}                 # compiled programs (llm_run.forward's memo)
        self.load_cycles = None         # simulated cycles of the weight load (sdram)
        if sdram:
            if log:
                log(f"loading {len(self.image)} weight blobs ({self.weight_bytes:,} bytes) "
                    f"into the simulated SDRAM")
            try:
                self.layout = self.driver.load_weights(self.image, progress=False)
                self.load_cycles = self.device.sync()
            except BaseException:
                self.device.close()
                raise

    def reset(self):
        """Empty the KV cache (and the golden one): a new sequence on the
        same simulator, the weights staying where they are."""
        self.cache = KVCache(self.params)
        self.golden.cache = KVCache(self.golden.params)

    def run(self, ids):
        from .llm_run import run_on_driver
        want = self.golden.run(ids)
        c0 = self.device.sync()
        before = self.driver.link.efficiency()
        t0 = time.monotonic()
        got, _, cycles = run_on_driver(self.driver, self.params, ids, self.cache,
                                       weights=self.layout, image=self.image, log=self.counters,
                                       memo=self._memo)
        self.seconds += time.monotonic() - t0
        if self._log and len(self.step_cycles) == 0:    # once: where the constants live
            self._log(f"constants: {self.const_note}")
        self.step_sim_cycles.append(self.device.sync() - c0)
        self.sim_cycles_in_runs += self.step_sim_cycles[-1]
        self.step_link.append(_traffic_delta(before, self.driver.link.efficiency()))
        self.step_cycles.append(cycles)
        self.matches &= bool(np.array_equal(got, want))
        return got

    @property
    def const_note(self):
        """Where the model's constants live (:func:`~trilut.host.llm_consts.const_plan`:
        resident, or why not), once a run compiled them; None before."""
        plan = self._memo.get("consts")
        return None if plan is None else plan[1]

    def close(self):
        self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _traffic_delta(before, after):
    """Per request type: requests, bytes sent and received, payload between
    two :meth:`~trilut.host.protocol.Link.efficiency` readings."""
    keys = ("requests", "sent", "received", "payload")
    zero = dict.fromkeys(keys, 0)
    return {name: {k: t[k] - before.get(name, zero)[k] for k in keys}
            for name, t in after.items()}


def check_device(device):
    """ValueError unless ``device`` is one this module runs (before any slow work)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def make_decoder(params, device="golden", accel=None, **sim):
    """The decoder that runs ``params`` on ``device`` ("sim": on the decoder
    build ``accel``, an Accelerator parameter dict; ``sim``: SimDecoder's
    keyword arguments)."""
    check_device(device)
    if device == "sim":
        if accel is None:
            raise ValueError("device 'sim' needs accel: a decoder build's parameters "
                             "(gen/units.py top-llm)")
        return SimDecoder(params, accel, **sim)
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
