"""Program fuzzing and reset trials of ``trilut stress`` on the simulated
accelerator (the default top behind the byte bridge, driven by the host
driver: the path a board uses).

Programs (hypothesis, :func:`program_specs`), four kinds:

* ``valid``: LOAD -> 0..2 LINEAR (REQUANT, ternary weights, random shapes,
  rows, banks and constants) -> STORE -> END; the result must equal golden
  ``requantize(tlmm_matmul(...))`` integer for integer;
* ``truncated``: a valid program cut after a random descriptor (END after
  it): it must finish, and what it stores must equal golden;
* ``mutated``: a valid program with one field of one descriptor made invalid
  (unknown opcode, bank, rows, K or N, constant set): it must stop with the
  documented :class:`~trilut.hw.isa.ErrorCode` at that descriptor;
* ``random``: every program slot a random descriptor (random opcode among
  those that need no host stream, random fields), or ``no_end`` (the whole
  program memory filled with valid NORM passes and no END): it must stop
  within the cycle limit, with ``done`` or a documented error code
  (``no_end``: PC).

After an error the host soft-resets; the accelerator must then be idle
without error. A run still busy after :data:`CYCLE_LIMIT` cycles is a hang.

Resets (:func:`run_resets`): soft and hard resets in turn at a random cycle
inside each pass type (LOAD, LINEAR, STORE, NORM), then a valid program must
be bit-exact.
"""
import time

import numpy as np

from ..golden import requantize, tlmm_matmul
from ..hw.isa import (ErrorCode, Epilogue, Head, Opcode, RESIDUAL_BANK, KEY_BANK, pack_descriptor,
                      pack_requant_const, unpack_descriptor)

__all__ = ["program_specs", "run_programs", "run_resets", "CYCLE_LIMIT", "KINDS",
           "RESET_MODES", "RESET_PASSES"]

CYCLE_LIMIT = 2_000_000
KINDS = ("valid", "truncated", "mutated", "random", "no_end")
_NO_HOST_OPS = [Opcode.END, Opcode.NORM, Opcode.ATTN_QK, Opcode.ATTN_AV, *range(7, 16)]


class _Program:
    """A fuzzed program in the shape :meth:`~trilut.host.driver.Driver.run` takes."""

    def __init__(self, acc, descriptors, consts, frames, out_rows, out_len, golden):
        self.descriptors, self.consts = descriptors, consts
        self._frames, self._len, self.golden = frames, out_len, golden
        self.acc = acc

        class Out:
            rows = out_rows
        self.outputs = [Out] if out_rows else []

    def stream_frames(self, x):
        return self._frames

    def decode(self, frames):
        return self.acc.frames_to_rows(frames, self._len) if frames else None


def _chain(acc, spec):
    """The valid LOAD -> LINEAR* -> STORE program of ``spec`` as
    ``(descriptors, consts, frames per descriptor, golden per STORE)``."""
    rng = np.random.default_rng(spec["seed"])
    W, R, L = acc.max_width, acc.max_rows, acc.lanes
    rows, k, bank, row = spec["rows"], spec["k"], spec["bank"], spec["row"]
    x = rng.integers(-128, 128, size=(rows, k))
    if spec["extreme"]:
        x[:] = int(rng.choice([-128, 127]))
    descs = [(pack_descriptor(Opcode.LOAD, dst_bank=bank, dst_row=row, rows=rows, k=k),
              {"s_axis": acc.row_frames(x)})]
    consts, y, width = [], x, k
    eng = acc.engine
    for i, n_blocks in enumerate(spec["linears"]):
        n = n_blocks * L
        w = rng.integers(-1, 2, size=(width, n))
        m = rng.integers(0, 1 << 16, size=n)
        e = rng.integers(1, 30, size=n)
        bias = rng.integers(-(1 << 20), 1 << 20, size=n)
        if spec["extreme"]:
            m[:], e[:] = (1 << 16) - 1, 1
        cset = (spec["const"] + i) % acc.const_sets
        consts.append((cset, [pack_requant_const(*t) for t in zip(m, e, bias)]))
        dst, drow = 1 - bank if acc.banks > 1 else bank, spec["row2"] if i % 2 == 0 else row
        descs.append((pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=bank,
                                      src_row=row, dst_bank=dst, dst_row=drow, rows=rows,
                                      k=width, n=n, const=cset),
                      {"s_axis_wgt": acc.weight_frames(w)}))
        y = requantize(tlmm_matmul(y, w, group=eng.group, encoding=eng.encoding), m, e, bias)
        bank, row, width = dst, drow, n
    descs.append((pack_descriptor(Opcode.STORE, src_bank=bank, src_row=row, rows=rows, k=width),
                  {}))
    return descs, consts, y, width


def _mutate(acc, descs, spec):
    """Make one field of descriptor ``spec['at']`` invalid; returns the
    descriptors, the index and the expected code."""
    i = spec["at"] % len(descs)
    d = unpack_descriptor(descs[i][0])
    op, W, R, L = d["opcode"], acc.max_width, acc.max_rows, acc.lanes
    choice = spec["how"]
    options = [("opcode", 7 + choice % 9, ErrorCode.OPCODE)]
    if op == Opcode.LOAD:
        options += [("dst_bank", acc.banks + choice % (13 - acc.banks), ErrorCode.BANK),
                    ("rows", 0, ErrorCode.ROWS),
                    ("dst_row", R - d["rows"] + 1 + choice % 8, ErrorCode.ROWS),
                    ("k", 0, ErrorCode.SHAPE), ("k", W + 1 + choice % 100, ErrorCode.SHAPE)]
    elif op == Opcode.LINEAR:
        options += [("n", d["n"] + 1 + choice % (L - 1), ErrorCode.SHAPE),
                    ("n", W + L * (1 + choice % 4), ErrorCode.SHAPE),
                    ("k", W + 1 + choice % 100, ErrorCode.SHAPE),
                    ("const", acc.const_sets + choice % (256 - acc.const_sets), ErrorCode.CONST),
                    ("src_bank", KEY_BANK, ErrorCode.BANK)]
    elif op == Opcode.STORE:
        options += [("src_bank", acc.banks + choice % (13 - acc.banks), ErrorCode.BANK),
                    ("rows", 0, ErrorCode.ROWS)]
    field, value, code = options[(choice // 9) % len(options)]
    d[field] = value
    return descs[:i] + [(pack_descriptor(**d), {})], i, code


def program_specs():
    """The hypothesis strategy of fuzzed program specifications."""
    from hypothesis import strategies as st
    return st.fixed_dictionaries({
        "kind": st.sampled_from(KINDS), "seed": st.integers(0, 2**32 - 1),
        "rows": st.integers(1, 16), "k": st.integers(1, 256), "bank": st.integers(0, 1),
        "row": st.integers(0, 15), "row2": st.integers(0, 15),
        "linears": st.lists(st.integers(1, 16), max_size=2),
        "const": st.integers(0, 255), "extreme": st.booleans(),
        "cut": st.integers(0, 3), "at": st.integers(0, 3), "how": st.integers(0, 10**6),
        "words": st.lists(st.tuples(st.sampled_from(_NO_HOST_OPS),
                                    st.integers(0, 2**124 - 1)), min_size=1, max_size=32),
    })


def _fit(acc, spec):
    """Clamp a spec's rows/row numbers to the build."""
    s = dict(spec)
    s["rows"] = min(s["rows"], acc.max_rows)
    s["row"] = min(s["row"], acc.max_rows - s["rows"])
    s["row2"] = min(s["row2"], acc.max_rows - s["rows"])
    s["k"] = min(s["k"], acc.max_width)
    s["bank"] %= acc.banks
    return s


def _random_words(acc, spec):
    words = [pack_descriptor(op) | (rest << 4) for op, rest in spec["words"]]
    return (words * acc.prog_depth)[:acc.prog_depth]


def _no_end(acc):
    W = acc.max_width
    norm = pack_descriptor(Opcode.NORM, head=Head.LAYERNORM, src_bank=RESIDUAL_BANK, dst_bank=0,
                           rows=1, k=W, n=W)
    return [norm] * acc.prog_depth


class _Fuzzer:
    def __init__(self, drv, dev, broken=False):
        self.drv, self.dev, self.acc, self.broken = drv, dev, drv.accel, broken

    def _bounded(self):
        """Wait for the accelerator to stop: the harness runs it in growing
        chunks of cycles and reports its ``busy`` LED after each (no STATUS
        polling over the link meanwhile); the final STATUS, or None if it is
        still busy after :data:`CYCLE_LIMIT` cycles (a hang)."""
        from ..hw.bridge import LEDS
        ran, chunk = 0, 1 << 10
        while self.dev.pause_after(chunk) & (1 << LEDS.index("busy")):
            ran += chunk
            if ran > CYCLE_LIMIT:
                return None
            chunk = min(2 * chunk, 1 << 16)
        return self.drv.status()

    def _recover(self):
        self.drv.soft_reset()
        st = self.drv.status()
        return not (st.busy or st.error)

    def _run_words(self, words):
        self.drv.write_program(words)
        self.drv.start()
        return self._bounded()

    def run(self, spec):
        """One program: returns (outcome, ok, detail)."""
        from ..host.driver import AcceleratorError
        acc, kind = self.acc, spec["kind"]
        spec = _fit(acc, spec)
        if kind in ("random", "no_end"):
            words = _random_words(acc, spec) if kind == "random" else _no_end(acc)
            st = self._run_words(words)
            if st is None:
                return "hang", False, f"{kind} program still busy after {CYCLE_LIMIT} cycles"
            if not st.error:
                ok = kind == "random" and st.done
                return "done", ok, "" if ok else f"{kind} program finished without error"
            documented = isinstance(st.code, ErrorCode) and st.code != ErrorCode.NONE
            ok = documented and (kind == "random" or st.code == ErrorCode.PC)
            ok &= self._recover()
            return f"error {getattr(st.code, 'name', st.code)}", ok, f"{kind}: {st}"
        descs, consts, want, width = _chain(acc, spec)
        code, at = None, None
        if kind == "truncated":
            descs = descs[:max(1, len(descs) - 1 - spec["cut"] % len(descs))]
        elif kind == "mutated":
            descs, at, code = _mutate(acc, descs, spec)
        frames = {}
        for _, f in descs:
            for port, fr in f.items():
                frames.setdefault(port, []).extend(fr)
        stores = [d for d, _ in descs if d & 0xF == Opcode.STORE]
        prog = _Program(acc, [d for d, _ in descs] + [pack_descriptor(Opcode.END)], consts,
                        frames, spec["rows"] if stores else 0, width, want)
        try:
            got = self.drv.run(prog, None, timeout=60)
        except AcceleratorError as exc:
            st = exc.status
            ok = code is not None and st.code == code and st.pc == at and self._recover()
            return f"error {getattr(st.code, 'name', st.code)}", ok, (
                f"{kind}: expected {getattr(code, 'name', 'success')} at {at}, got {st}")
        except TimeoutError as exc:
            self._recover()
            return "hang", False, f"{kind}: {exc}"
        if code is not None:
            return "done", False, f"mutated: expected {code.name} at descriptor {at}, ran"
        if stores:
            ref = np.asarray(want, dtype=np.int64)
            if self.broken:
                ref = ref.copy()
                ref.flat[0] += 1
            if not np.array_equal(got, ref):
                bad = np.argwhere(got != ref)[0]
                return "wrong", False, (f"{kind}: output {tuple(bad)} hardware {got[tuple(bad)]}"
                                        f", golden {ref[tuple(bad)]}")
        return "ok", True, ""


def _campaign(count, seed, body, progress, name, seconds=None, failed=lambda: 0):
    """Run ``body(spec)`` on ``count`` hypothesis examples (fewer if
    ``seconds`` run out first); ``failed()`` counts failures for progress."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    done = [0]
    t0 = time.monotonic()

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(program_specs())
    def each(spec):
        if done[0] >= count or (seconds and time.monotonic() - t0 > seconds):
            return
        body(spec)
        done[0] += 1
        if progress:
            progress(name, done[0], count, failed())
    each()
    return done[0]


def _open(broken=False):
    from ..host.device import SimDevice
    from ..host.driver import Driver
    from .units import UNITS
    params = dict(UNITS["top"].defaults)
    dev = SimDevice(params).open()
    return dev, Driver(dev, params, timeout=60)


def run_programs(count, *, seed=1, broken=False, progress=None, seconds=None):
    """``count`` fuzzed programs (fewer if ``seconds`` run out); returns
    ``{run, hangs, wrong, outcomes, ...}``."""
    dev, drv = _open()
    fz = _Fuzzer(drv, dev, broken)
    outcomes, kinds, failures = {}, {}, []
    hangs = wrong = 0
    t0 = time.monotonic()
    try:
        def body(spec):
            nonlocal hangs, wrong
            outcome, ok, detail = fz.run(spec)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            kinds[spec["kind"]] = kinds.get(spec["kind"], 0) + 1
            hangs += outcome == "hang"
            wrong += (not ok) and outcome != "hang"
            if not ok and len(failures) < 10:
                failures.append(detail)
        run = _campaign(count, seed, body, progress, "programs", seconds,
                        lambda: hangs + wrong)
    finally:
        dev.close()
    wall = time.monotonic() - t0
    return {"run": run, "hangs": hangs, "wrong": wrong, "outcomes": outcomes, "kinds": kinds,
            "programs_per_s": round(run / wall, 2) if wall else None,
            "cycle_limit": CYCLE_LIMIT, "failures": failures}


#: Reset trials alternate these; the pass kinds come in turn, each with both.
RESET_MODES = ("soft", "hard")
RESET_PASSES = ("load", "linear", "store", "norm")


def _reset_spec(acc, rng):
    """A random valid LOAD -> LINEAR -> STORE program for a reset trial."""
    return _fit(acc, {"kind": "valid", "seed": int(rng.integers(2**32)),
                      "rows": int(rng.integers(1, 17)), "k": int(rng.integers(1, 257)),
                      "bank": 0, "row": 0, "row2": 0, "const": int(rng.integers(256)),
                      "linears": [int(rng.integers(1, 17))], "extreme": bool(rng.random() < 0.2)})


def _start_pass(drv, acc, kind, spec, rng, full=False):
    """Load and start the program of one ``kind`` pass (the ``spec``
    program's first descriptors, or a NORM), send the earlier passes' input
    streams and part of the last one's (at least one transfer fewer than it
    needs, so that it waits for the host; all of it with ``full``)."""
    if kind == "norm":
        words, descs = _no_end(acc)[:1], []
    else:
        descs, consts, _, _ = _chain(acc, spec)
        descs = descs[:{"load": 1, "linear": 2, "store": 3}[kind]]
        words = [d for d, _ in descs]
        for s, entries in consts[:len(descs) - 1]:
            drv.write_consts(s, entries)
    drv.write_program(words + [pack_descriptor(Opcode.END)])
    drv.start()
    for j, (_, frames) in enumerate(descs):
        for port, fr in frames.items():
            i = drv._index(port, drv.inputs)
            beats = drv._beats(i, fr)
            cut = (len(beats) if full or j < len(descs) - 1
                   else int(rng.integers(0, len(beats))))
            if cut:
                drv.link.stream_write(i, beats[:cut])


def _pass_cycles(dev, drv, acc, rng):
    """Simulated cycles of each pass kind run whole (from its start to idle,
    its input sent meanwhile): the range the reset cycle is drawn from."""
    spans = {}
    for kind in RESET_PASSES:
        spec = _fit(acc, dict(_reset_spec(acc, rng), rows=acc.max_rows, k=acc.max_width,
                              linears=[acc.max_width // acc.lanes]))
        c0 = dev.sync()
        _start_pass(drv, acc, kind, spec, rng, full=True)
        if kind == "store":     # its output is read: the pass runs unthrottled
            drv.receive(0, spec["rows"])
        drv.wait()
        spans[kind] = dev.sync() - c0
        drv.soft_reset()
    return spans


def run_resets(trials, *, seed=1, broken=False, progress=None, seconds=None,
               modes=RESET_MODES):
    """``trials`` resets, soft (CTRL over the link) and hard (the reset pin)
    in turn (``modes``: those of :data:`RESET_MODES` to use), at a random
    cycle inside LOAD / LINEAR / STORE / NORM passes (each pass kind with
    every mode); after each, the accelerator must be idle without error and
    a valid program must equal golden. ``broken``: "golden" (or True)
    checks against a wrong golden, "recovery" skips the reset (both must be
    counted as failures)."""
    from ..hw.bridge import LEDS
    if broken not in (False, True, "golden", "recovery"):
        raise ValueError(f"broken must be False, 'golden' or 'recovery', not {broken!r}")
    modes = tuple(modes)
    if not modes or not set(modes) <= set(RESET_MODES):
        raise ValueError(f"modes must be some of {RESET_MODES}, not {modes!r}")
    rng = np.random.default_rng(seed)
    dev, drv = _open()
    fz = _Fuzzer(drv, dev, broken in (True, "golden"))
    acc = drv.accel
    busy_bit = 1 << LEDS.index("busy")
    failures = []
    per = {m: {"trials": 0, "failures": 0, "busy_at_reset": 0,
               "per_pass": dict.fromkeys(RESET_PASSES, 0)} for m in RESET_MODES}
    t0 = time.monotonic()
    try:
        spans = _pass_cycles(dev, drv, acc, rng)
        for t in range(trials):
            if seconds and time.monotonic() - t0 > seconds:
                trials = t
                break
            mode = modes[t % len(modes)]
            kind = RESET_PASSES[(t // len(modes)) % len(RESET_PASSES)]
            _start_pass(drv, acc, kind, _reset_spec(acc, rng), rng)
            # the reset at a random cycle of the pass: the clock stops there
            busy = dev.pause_after(int(rng.integers(0, spans[kind]))) & busy_bit
            if broken != "recovery":
                drv.soft_reset() if mode == "soft" else drv.hard_reset()
            st = drv.status()
            ok = not (st.busy or st.error)
            if ok:
                outcome, ok, detail = fz.run(_reset_spec(acc, rng))
            else:
                detail = f"after a {mode} reset in {kind}: {st}"
            row = per[mode]
            row["trials"] += 1
            row["per_pass"][kind] += 1
            row["busy_at_reset"] += bool(busy)
            row["failures"] += not ok
            if not ok and len(failures) < 10:
                failures.append(f"trial {t} ({mode} reset in {kind}): {detail}")
            if progress:
                progress("resets", t + 1, trials, sum(r["failures"] for r in per.values()))
    finally:
        dev.close()
    wall = time.monotonic() - t0
    return {"trials": trials, "failures": sum(r["failures"] for r in per.values()),
            "soft": per["soft"], "hard": per["hard"], "pass_cycles": spans,
            "resets_per_s": round(trials / wall, 2) if wall else None,
            "seconds": round(wall, 1), "first_failures": failures,
            "note": "soft: CTRL soft_reset over the link; hard: the harness's reset pin "
                    "(every register to its reset value), the driver reconnecting; the "
                    "reset cycle is uniform over the pass's whole-run length; "
                    "busy_at_reset: the accelerator was busy at that cycle"}
