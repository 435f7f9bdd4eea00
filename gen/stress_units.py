"""Unit part of ``trilut stress``: every streaming unit against golden on up
to millions of vectors through the batched C++ harness (:mod:`trilut.sim.stress`).

A *vector* is one output element compared with golden integer for integer
(one dot product of a matrix engine, one element of a row unit; its ``last``
flag, and for the per-token quantizer its carried absmax, are compared too).
Each batch is random rows plus the extremes (all minimum, all maximum,
alternating, one-hot, one cold, all equal, length 1 and the maximum length,
maximum K, all -1 / +1 weights, the smallest and largest scales, every x0
edge, m = 0 and 2^m_bits - 1, e = 1 and E_MAX, extreme biases), with random
idle gaps and backpressure drawn per batch (none, light, heavy).
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..golden import nonlinear as nl
from ..golden.dynquant import row_quantize
from ..golden.quant import E_MAX, requantize, residual_add
from ..golden.tlmm import tlmm_matmul
from ..hw.dynquant import DynQuant
from ..hw.int8mm import Int8Engine
from ..hw.layernorm import LayerNorm
from ..hw.matmul import DirectEngine, TLMMEngine
from ..hw.requant import Requantizer, ResidualAdd
from ..hw.shiftgelu import ShiftGELU
from ..hw.shiftmax import Shiftmax
from ..sim.stress import FlatWrap, build, run_batch
from .units import UNITS

__all__ = ["UNIT_CASES", "Batch", "run_unit"]

BATCH_VECTORS = 200_000          # vectors per harness run (bounds memory)
PRESSURE = [(0.0, 0.0), (0.3, 0.3), (0.8, 0.1), (0.1, 0.8)]   # (idle, stall) per batch


@dataclass
class Batch:
    inputs: list        # [(values, beats)] per input stream
    expect: int         # output beats
    want: dict          # field -> expected array (beats,) or (beats, lanes)
    cfg: dict
    describe: object    # beat index -> text naming the input vector


# --- row units ---------------------------------------------------------------

def _row_lengths(rng, max_len, vectors):
    """Lengths summing to about ``vectors``: 1, max_len, then random (half short)."""
    lengths = [1, max_len, max_len, 2]
    total = sum(lengths)
    while total < vectors:
        n = int(rng.integers(1, min(max_len, 16) + 1) if rng.random() < 0.5
                else rng.integers(1, max_len + 1))
        lengths.append(n)
        total += n
    return np.array(lengths)


def _rows(rng, lengths, lo, hi):
    """Concatenated rows: random, except the first few rows of each kind of
    extreme (all lo, all hi, alternating, one-hot, one cold, all equal)."""
    x = rng.integers(lo, hi + 1, size=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    kinds = ["lo", "hi", "alt", "onehot", "cold", "equal", "narrow"]
    for r, (s, n) in enumerate(zip(starts, lengths)):
        if r >= 3 * len(kinds):
            break
        kind, idx = kinds[r % len(kinds)], np.arange(n)
        x[s:s + n] = {"lo": np.full(n, lo), "hi": np.full(n, hi),
                      "alt": np.where(idx % 2, hi, lo),
                      "onehot": np.where(idx == n // 2, hi, lo),
                      "cold": np.where(idx == n - 1, lo, hi),
                      "equal": np.full(n, int(rng.integers(lo, hi + 1))),
                      "narrow": rng.integers(-3, 4, size=n)}[kind]
    return x, starts


def _by_length(fn, x, lengths, starts):
    """Golden ``fn`` (rows along the last axis) over ragged rows, one call per
    distinct length; returns a tuple of flat outputs."""
    outs = None
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        idx = starts[rows][:, None] + np.arange(n)
        res = fn(x[idx])
        res = res if isinstance(res, tuple) else (res,)
        if outs is None:
            outs = [np.zeros(len(x), dtype=np.int64) for _ in res]
        for o, r in zip(outs, res):
            o[idx] = np.broadcast_to(r, idx.shape)
    return tuple(outs)


def _last(lengths):
    last = np.zeros(int(lengths.sum()), dtype=np.int64)
    last[np.cumsum(lengths) - 1] = 1
    return last


def _row_batch(unit, rng, vectors, golden, cfg, note, extra_fields=()):
    lo, hi = -(1 << (unit.in_bits - 1)), (1 << (unit.in_bits - 1)) - 1
    lengths = _row_lengths(rng, unit.max_len, vectors)
    x, starts = _rows(rng, lengths, lo, hi)
    last = _last(lengths)
    outs = _by_length(golden, x, lengths, starts)
    want = {"data": outs[0], "last": last}
    for name, o in zip(extra_fields, outs[1:]):
        want[name] = o
    row_of = np.repeat(np.arange(len(lengths)), lengths)

    def describe(i):
        r = row_of[i]
        return (f"{note}; row {r} (length {lengths[r]}), element {i - starts[r]}; "
                f"row {x[starts[r]:starts[r] + lengths[r]].tolist()}")
    return Batch([({"data": x, "last": last}, len(x))], len(x), want, cfg, describe)


def _scale_for_x0(x0):
    """A scale whose iexp_x0 is exactly ``x0`` (< 0)."""
    return 1.0 / (-x0 - 0.5)


def _shiftmax_batch(unit, rng, vectors, broken):
    x0_min = max(-(1 << (unit.x0_bits - 1)), -(nl.INT32_MAX >> unit.n))
    x0 = int(rng.choice([-1, -2, -4, -13, -32, x0_min, int(rng.integers(x0_min, 0))]))
    scale = _scale_for_x0(x0)
    assert nl.iexp_x0(scale) == x0
    return _row_batch(unit, rng, vectors,
                      lambda r: nl.shiftmax(r, scale, n=unit.n, out_bits=unit.out_bits),
                      {"x0": x0}, f"x0 {x0}")


def _gelu_batch(unit, rng, vectors, broken):
    a_max = nl.INT32_MAX >> unit.n
    x0 = int(rng.choice([-1, -2, -3, -8, -a_max, -int(rng.integers(1, a_max + 1))]))
    scale = _scale_for_x0(x0) / nl.GELU_SLOPE
    x0 = nl.iexp_x0(nl.GELU_SLOPE * scale)
    return _row_batch(unit, rng, vectors,
                      lambda r: nl.shiftgelu(r, scale, n=unit.n, sig_bits=unit.sig_bits,
                                             mode=unit.mode),
                      {"x0": x0}, f"x0 {x0}")


def _layernorm_batch(unit, rng, vectors, broken):
    return _row_batch(unit, rng, vectors, lambda r: nl.int_layernorm(r), {}, "layernorm")


def _dynquant_batch(unit, rng, vectors, broken):
    def golden(r):
        q, a = row_quantize(r, in_bits=unit.in_bits, frac_bits=unit.frac_bits)
        return q.astype(np.int64), a
    return _row_batch(unit, rng, vectors, golden, {}, "dynquant", extra_fields=("absmax",))


# --- element-wise units --------------------------------------------------------

def _consts(rng, m_bits, names):
    mmax = (1 << m_bits) - 1
    out = {}
    for m_name, e_name in names:
        out[m_name] = int(rng.choice([0, 1, mmax, int(rng.integers(1 << (m_bits - 1), mmax + 1)),
                                      int(rng.integers(0, mmax + 1))]))
        out[e_name] = int(rng.choice([1, E_MAX, int(rng.integers(14, 32)),
                                      int(rng.integers(1, E_MAX + 1))]))
    return out


def _wide(rng, bits, count):
    """Random values over the whole signed range, with the extremes and
    small values mixed in."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi + 1, size=count, dtype=np.int64)
    pick = rng.random(count)
    v = np.where(pick < 0.05, lo, np.where(pick < 0.1, hi, v))
    return np.where((pick > 0.1) & (pick < 0.3), rng.integers(-4096, 4097, size=count), v)


def _requant_batch(unit, rng, vectors, broken):
    c = _consts(rng, unit.m_bits, [("m", "e")])
    b = 1 << (unit.bias_bits - 1)
    c["bias"] = int(rng.choice([0, -b, b - 1, int(rng.integers(-b, b))]))
    acc = _wide(rng, unit.acc_bits, vectors)
    last = (rng.random(vectors) < 0.05).astype(np.int64)
    want = requantize(acc, c["m"], c["e"], c["bias"], unit.lo, unit.hi, unit.m_bits)
    return Batch([({"data": acc, "last": last}, vectors)], vectors,
                 {"data": want, "last": last}, c,
                 lambda i: f"acc {acc[i]}, m {c['m']}, e {c['e']}, bias {c['bias']}")


def _residual_batch(unit, rng, vectors, broken):
    c = _consts(rng, unit.m_bits, [("mx", "ex"), ("my", "ey")])
    x, y = _wide(rng, unit.x_bits, vectors), _wide(rng, unit.y_bits, vectors)
    last = (rng.random(vectors) < 0.05).astype(np.int64)
    lo, hi = -(1 << (unit.out_bits - 1)), (1 << (unit.out_bits - 1)) - 1
    want = residual_add(x, c["mx"], c["ex"], y, c["my"], c["ey"], lo, hi, unit.m_bits)
    return Batch([({"data": x, "last": last}, vectors), ({"data": y, "last": last}, vectors)],
                 vectors, {"data": want, "last": last}, c,
                 lambda i: f"x {x[i]}, y {y[i]}, constants {c}")


# --- matrix engines ------------------------------------------------------------

def _engine_batch(unit, rng, vectors, broken, *, ternary):
    L, kb = unit.lanes, unit.k_block
    k = int(rng.choice([1, kb, unit.max_k, unit.max_k, int(rng.integers(1, unit.max_k + 1))]))
    nb = int(rng.integers(1, 9))
    n = nb * L
    rows = max(1, vectors // n)
    a = rng.integers(-128, 128, size=(rows, k))
    a[0], a[min(1, rows - 1)] = -128, 127
    if rows > 2:
        a[2] = 0
        a[2, int(rng.integers(0, k))] = -128        # one-hot
    if ternary:
        w = rng.integers(-1, 2, size=(k, n))
        kind = rng.integers(0, 4)
        if kind == 1:
            w[:] = int(rng.choice([-1, 1]))
        golden = lambda: tlmm_matmul(a, w, group=unit.group,
                                     encoding=getattr(unit, "encoding", "full"),
                                     acc_bits=unit.acc_bits)
    else:
        w = rng.integers(-128, 128, size=(k, n))
        if rng.integers(0, 4) == 1:
            w[:] = int(rng.choice([-128, 127]))
        golden = lambda: unit.model(a, w)
    kbs = -(-k // kb)
    # act beats: rows padded to whole k-blocks, last on each row's final block
    pad = np.zeros((rows, kbs * kb), dtype=np.int64)
    pad[:, :k] = a
    act = {"data": pad.reshape(rows * kbs, kb),
           "last": np.tile((np.arange(kbs) == kbs - 1).astype(np.int64), rows)}
    # wgt beats: output block outer, k-block inner, lane-major codes (as wgt_beats)
    per = unit._wgt_per_lane
    words = np.asarray(unit._weight_words(w), dtype=np.int64)
    pos = np.zeros((kbs * per, n), dtype=np.int64)
    pos[:len(words)] = words
    tiles = pos.reshape(kbs, per, nb, L).transpose(2, 0, 3, 1).reshape(nb * kbs, L * per)
    last_k = np.tile((np.arange(kbs) == kbs - 1).astype(np.int64), nb)
    last_n = last_k * np.repeat((np.arange(nb) == nb - 1).astype(np.int64), kbs)
    wgt = {unit._wgt_field: np.tile(tiles, (rows, 1)), "last_k": np.tile(last_k, rows),
           "last_n": np.tile(last_n, rows)}
    want = golden().reshape(rows * nb, L)
    out_last = np.tile((np.arange(nb) == nb - 1).astype(np.int64), rows)

    def describe(i):
        r, blk = divmod(i, nb)
        return (f"K {k}, N {n}: row {r}, output block {blk}; row {a[r].tolist()}; "
                f"weights column block {w[:, blk * L:(blk + 1) * L].tolist()}")
    return Batch([(act, rows * kbs), (wgt, rows * nb * kbs)], rows * nb,
                 {"data": want, "last": out_last}, {}, describe)


@dataclass(frozen=True)
class UnitCase:
    make: object        # () -> component
    inputs: tuple
    batch: object       # (unit, rng, vectors, broken) -> Batch
    doc: str = ""


def _default(key, cls, **over):
    """``cls`` with the registry's defaults for ``key`` (gen/units.py), ``over`` on top."""
    return lambda: cls(**{**UNITS[key].defaults, **over})


UNIT_CASES = {
    "tlmm": UnitCase(_default("tlmm", TLMMEngine, max_k=256), ("act", "wgt"),
                     lambda u, r, v, b: _engine_batch(u, r, v, b, ternary=True),
                     "TLMM engine, defaults with max_k 256"),
    "direct": UnitCase(_default("direct", DirectEngine, max_k=256), ("act", "wgt"),
                       lambda u, r, v, b: _engine_batch(u, r, v, b, ternary=True),
                       "direct ternary engine, max_k 256"),
    "int8mm": UnitCase(_default("int8mm", Int8Engine), ("act", "wgt"),
                       lambda u, r, v, b: _engine_batch(u, r, v, b, ternary=False),
                       "int8 engine, defaults (max_k 768, int32 out)"),
    "requant": UnitCase(_default("requant", Requantizer, channels=1),
                        ("inp",), _requant_batch, "requantizer, scalar constants"),
    "residual": UnitCase(_default("residual", ResidualAdd), ("x", "y"),
                         _residual_batch, "residual add, defaults"),
    "shiftmax": UnitCase(_default("shiftmax", Shiftmax), ("inp",),
                         _shiftmax_batch, "Shiftmax, defaults"),
    "shiftgelu-ivit": UnitCase(_default("shiftgelu", ShiftGELU, mode="ivit"), ("inp",), _gelu_batch),
    "shiftgelu-accurate": UnitCase(_default("shiftgelu", ShiftGELU,
                                                              mode="accurate"), ("inp",),
                                   _gelu_batch),
    "layernorm": UnitCase(_default("layernorm", LayerNorm), ("inp",),
                          _layernorm_batch),
    "dynquant": UnitCase(_default("dynquant", DynQuant), ("inp",),
                         _dynquant_batch),
}


def _compare(batch, res, broken):
    """(vectors compared, mismatching vectors, index of the first or None)."""
    want = dict(batch.want)
    if broken:      # the deliberately wrong model: one expected value off by one
        want["data"] = want["data"].copy()
        want["data"].reshape(-1)[len(want["data"].reshape(-1)) // 2] += 1
    got_n = len(res.out["last"])
    bad = np.zeros(batch.expect, dtype=bool)
    bad[got_n:] = True                                  # missing beats
    for name, w in want.items():
        g = res.out[name][:batch.expect]
        diff = (g != w[:got_n])
        bad[:got_n] |= diff.any(axis=1) if diff.ndim > 1 else diff
    per_beat = want["data"].shape[1] if want["data"].ndim > 1 else 1
    mism = int(bad.sum()) * per_beat + res.extra * per_beat + (per_beat if res.error else 0)
    first = int(np.argmax(bad)) if bad.any() else None
    return batch.expect * per_beat, mism, first


def run_unit(name, *, vectors, seconds=None, seed=1, broken=False, fail_dir=None,
             progress=None, hold=0):
    """Run ``name`` for ``vectors`` vectors (or until ``seconds`` pass); the
    first batch's output is stalled for ``hold`` cycles at the start (nothing
    may be lost or duplicated).
    Returns ``{"unit", "vectors", "mismatches", "vectors_per_s", ...}``; the
    first mismatch is described in ``first_mismatch`` and saved under
    ``fail_dir``."""
    case = UNIT_CASES[name]
    unit = case.make()
    wrap = FlatWrap(unit, case.inputs)
    exe = build(wrap, "stress_" + name.replace("-", "_"))
    rng = np.random.default_rng(seed)
    done = mism = batches = 0
    first = None
    t0 = time.monotonic()
    sim_time = 0.0
    while done < vectors and not (seconds and time.monotonic() - t0 > seconds):
        batch = case.batch(unit, rng, min(BATCH_VECTORS, vectors - done), broken)
        idle, stall = PRESSURE[batches % len(PRESSURE)]
        t = time.monotonic()
        res = run_batch(exe, wrap, batch.inputs, batch.expect, cfg=batch.cfg,
                        seed=seed * 7919 + batches, idle=idle, stall=stall,
                        hold=hold if batches == 0 else 0)
        sim_time += time.monotonic() - t
        n, m, i = _compare(batch, res, broken)
        done, mism, batches = done + n, mism + m, batches + 1
        if m and first is None:
            first = {"batch": batches - 1, "idle": idle, "stall": stall,
                     "hang": res.hang, "error_flag": res.error, "extra_beats": res.extra,
                     "vector": batch.describe(i) if i is not None else None,
                     "expected": {k: np.asarray(v[i]).tolist() for k, v in batch.want.items()}
                     if i is not None else None,
                     "got": {k: np.asarray(v[i]).tolist() for k, v in res.out.items()}
                     if i is not None and i < len(res.out["last"]) else None}
            if fail_dir:
                Path(fail_dir).mkdir(parents=True, exist_ok=True)
                path = Path(fail_dir) / f"{name}-mismatch.json"
                path.write_text(json.dumps(first, indent=1))
                first["saved"] = str(path)
        if progress:
            progress(name, done, vectors, mism)
    wall = time.monotonic() - t0
    return {"unit": name, "vectors": done, "mismatches": mism,
            "vectors_per_s": round(done / wall, 1) if wall else None,
            "sim_vectors_per_s": round(done / sim_time, 1) if sim_time else None,
            "batches": batches, "seconds": round(wall, 1), "hold_cycles": hold,
            "first_mismatch": first}
