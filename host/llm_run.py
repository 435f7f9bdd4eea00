# amaranth: UnusedElaboratable=no
# (an Accelerator built from a parameter dict is a host-side helper here)
"""Running the decoder on a decoder build: :func:`forward` is a generator
that yields ``(program, inputs)`` per program of
:func:`~trilut.host.llm_compiler.compile_chunk` (the chunk's programs
compiled once per chunk size, run at each KV position) and takes back the
decoded outputs, so a synchronous host driver (:func:`run_on_driver`) and
an asynchronous cocotb testbench (``sim/tb_llm_top.py``) drive it alike;
the host's parts (the embedding, the int8 LM head, and RoPE and attention
where the build cannot run them) happen in between. :func:`check_tokens`
checks a run's token ids before anything is sent.
"""
from __future__ import annotations

import numpy as np

from ..golden.dynquant import row_quantize
from ..golden.encoder import WIDE_BITS
from ..golden.llm import LOGIT_BITS, KVCache, _attention, attend
from ..golden.quant import requantize
from .compiler import _accelerator
from .llm_compiler import REGIONS, _check, compile_chunk, kv_capacity, rope_on_chip
from .llm_consts import const_plan

__all__ = ["check_tokens", "forward", "run_on_driver"]


def check_tokens(params, ids, cache, accel):
    """``ids`` as int64 after the checks a run needs before anything is sent:
    integer ids inside the vocabulary, a cache made for ``params``, and
    kv_pos + len(ids) within the build's KV rows (``max_rows``) and the
    cache's capacity."""
    a = np.asarray(ids)
    cfg, acc = params.cfg, _accelerator(accel)
    if a.dtype.kind not in "iu" or a.ndim != 1 or a.size == 0:
        raise ValueError(f"ids: expected a non-empty 1-D sequence of integer token ids, got "
                         f"{a.dtype} {a.shape}")
    if a.min() < 0 or a.max() >= cfg.vocab:
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise ValueError(f"ids: token id {bad} outside the vocabulary [0, {cfg.vocab})")
    if not isinstance(cache, KVCache) or cache.cfg != cfg:
        raise TypeError("cache: expected a KVCache made for these params")
    cap = min(kv_capacity(params, acc), cache.capacity)
    if cache.kv_pos + a.size > cap:
        raise ValueError(f"ids: {a.size} tokens at kv_pos {cache.kv_pos} exceed the KV "
                         f"capacity of {cap} positions (the build's KV region: "
                         f"{kv_capacity(params, acc)} per layer of max_rows = {acc.max_rows} "
                         f"rows; the cache {cache.capacity})")
    return a.astype(np.int64)


def forward(params, ids, cache, accel, *, trace=False, image=None, memo=None):
    """Generator: run tokens ``ids`` at positions ``cache.kv_pos ..`` (prefill,
    or a decode step with one id). Yields ``(program, inputs)`` for each
    program of :func:`compile_chunk` and expects the decoded outputs back
    (``gen.send``); returns ``(logits, stored)``: int32 logits (P, vocab) as
    golden ``prefill``, and every tensor the accelerator stored, golden
    trace names (``layers.{i}.q``, ...; rows of all chunks). ``cache``
    advances as in golden. ``image``: the model's :func:`weight_image`
    (packed once, reused). ``memo``: a dict kept across calls for these
    params and build: the programs of a chunk size are compiled once and
    run at each kv_pos (:meth:`SegmentProgram.at_kv_pos`), the constants'
    placement (:func:`const_plan`, key "consts") made once."""
    acc = _accelerator(accel)
    ids = check_tokens(params, ids, cache, acc)
    cfg, mb = params.cfg, params.cfg.m_bits
    chunk = acc.max_rows // REGIONS
    _check(params, acc, min(chunk, ids.size))
    logits, stored = [], {}
    if memo is not None and "consts" not in memo:
        memo["consts"] = const_plan(params, acc)
    plan, _ = memo["consts"] if memo is not None else const_plan(params, acc)
    for start in range(0, ids.size, chunk):
        piece = ids[start:start + chunk]
        pos0, m = cache.kv_pos, piece.size
        key = (m, trace)
        if memo is None or key not in memo:
            progs = compile_chunk(params, acc, m, trace=trace, image=image, plan=plan)
            if memo is not None:
                memo[key] = progs
        else:
            progs = memo[key]
        got = {}
        for host_attn, prog in progs:
            inputs = {"x": params.embed[piece]} if ("x", cfg.hidden) in prog.loads else {}
            if host_attn is not None:   # the host's attention between a layer's segments
                li, lp = host_attn, params.layers[host_attn]
                pre = f"layers.{li}."
                t = {k[len(pre):]: v for k, v in got.items() if k.startswith(pre)}
                if rope_on_chip(cfg):       # K/V append, attention
                    attend(params, lp, li, cache, pos0, t)
                else:                       # RoPE, K/V append, attention
                    _attention(params, lp, li, cache, pos0, t)
                inputs["attn"] = t["attn"]
            got.update((yield prog.at_kv_pos(pos0), inputs))
        for name, v in got.items():
            stored[name] = np.concatenate([stored[name], v]) if name in stored else v
        cache.kv_pos += m
        q, amax = row_quantize(got["norm"], in_bits=WIDE_BITS)
        lim = (1 << (LOGIT_BITS - 1)) - 1
        logits.append(requantize(params.head.accumulate(q, amax), params.head.requant.m,
                                 params.head.requant.e, lo=-lim, hi=lim, m_bits=mb))
    return np.concatenate(logits).astype(np.int32), stored


def run_on_driver(driver, params, ids, cache, *, trace=False, weights=None, image=None,
                  log=None, memo=None):
    """:func:`forward` on a :class:`~trilut.host.driver.Driver` (its
    accelerator build): ``(logits, stored, cycles)``, ``cycles`` the sum of
    the accelerator's ``cycles`` counter over the programs (on-chip passes
    only: the host's parts take none). ``weights``: the layout
    :meth:`~trilut.host.driver.Driver.load_weights` returned for the
    model's :func:`weight_image` (given as ``image``): every program's
    weights are then fed from the external memory (FEED), not sent.
    ``log``: a list that gets ``(program, counters)`` per program run
    (:meth:`~trilut.host.driver.Driver.counters` after it); ``memo``: see
    :func:`forward`."""
    if weights is not None and image is None:
        raise ValueError("weights= needs image=: the weight_image loaded at that layout")
    gen = forward(params, ids, cache, driver.accel, trace=trace, image=image, memo=memo)
    cycles = 0
    try:
        req = next(gen)
        while True:
            prog, x = req
            got = driver.run(prog, x, weights=None if weights is None
                             else prog.feed_layout(weights))
            counters = driver.counters()
            cycles += counters["cycles"]
            if log is not None:
                log.append((prog, counters))
            req = gen.send(got)
    except StopIteration as stop:
        return (*stop.value, cycles)
