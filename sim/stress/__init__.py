"""Batched C++ simulation of one streaming unit: about a million vectors per
minute instead of thousands through per-cycle Python.

* :class:`FlatWrap` wraps any unit with stream inputs, one stream output,
  constant input ports and an ``error`` flag into fixed flat ports (each
  stream payload and each constant starts on a 32-bit word, so the harness
  needs no knowledge of the layouts);
* ``flat.cpp`` beside this file is ONE Verilator harness for every wrapped
  unit: it reads a binary file of input beats, drives them with seeded random
  idle gaps, random backpressure (and rare long stall bursts) and writes the
  output beats (see its header for the file format);
* :func:`pack` / :func:`unpack` turn numpy arrays into payload words and back
  with the unit's own ``data.Layout`` (vectorised, no per-beat Python);
* :func:`run_batch` builds (cached under ``build/stress/<top>-<hash>``, keyed
  by the Verilog and the harness source) and runs one batch.
"""
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from amaranth.back import verilog as _verilog
from amaranth.hdl import Module, Shape
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..harness import PowerOnReset
from ..runner import BUILD_ROOT, VERILATOR_ARGS, _locked, _verilator_on_path, shared_runtime
from ...hw.regfront import flat_ports

__all__ = ["FlatWrap", "pack", "unpack", "build", "run_batch", "BatchResult", "HARNESS_SOURCE"]

HARNESS_SOURCE = Path(__file__).with_name("flat.cpp")


def _words(width):
    return max(1, -(-width // 32))


class FlatWrap(wiring.Component):
    """``unit`` behind flat ports for the batched harness.

    ``inputs``: names of the unit's stream inputs (channel c of ``in_valid``
    / ``in_ready`` is ``inputs[c]``; its payload sits at word
    :attr:`in_offsets` [c] of ``in_bits``); ``output``: the stream output.
    Every other input port of the unit is a constant, at word
    :attr:`cfg_offsets` [name] of ``cfg`` (held for the whole run). ``error``
    is the unit's ``error`` (0 if it has none). Pure wiring: no latency
    added, handshakes pass straight through.
    """

    def __init__(self, unit, inputs, output="out"):
        members = unit.signature.members
        for name in [*inputs, output]:
            if name not in members or not members[name].is_signature:
                raise ValueError(f"{type(unit).__name__} has no stream {name!r}")
        if not 1 <= len(inputs) <= 8:
            raise ValueError(f"1 to 8 input streams, not {len(inputs)}")
        self._unit, self._inputs, self._output = unit, list(inputs), output
        self.in_layouts = [self._payload(n) for n in inputs]
        self.out_layout = self._payload(output)
        self.in_offsets, pos = [], 0
        for layout in self.in_layouts:
            self.in_offsets.append(pos)
            pos += _words(Shape.cast(layout).width)
        in_words = pos
        self.consts = [n for n, m in members.items()
                       if m.is_port and m.flow == In and n not in inputs]
        self.cfg_offsets, pos = {}, 0
        for name in self.consts:
            self.cfg_offsets[name] = pos
            pos += _words(Shape.cast(members[name].shape).width)
        self.cfg_words = max(1, pos)
        self.out_words = _words(Shape.cast(self.out_layout).width)
        super().__init__({
            "in_valid": In(len(inputs)), "in_ready": Out(len(inputs)),
            "in_bits": In(32 * in_words),
            "out_valid": Out(1), "out_ready": In(1), "out_bits": Out(32 * self.out_words),
            "cfg": In(32 * self.cfg_words), "error": Out(1),
        })

    def _payload(self, name):
        return self._unit.signature.members[name].signature.members["payload"].shape

    unit = property(lambda self: self._unit)
    inputs = property(lambda self: list(self._inputs))

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self._unit
        for c, name in enumerate(self._inputs):
            s = getattr(u, name)
            width = Shape.cast(self.in_layouts[c]).width
            lo = 32 * self.in_offsets[c]
            m.d.comb += [s.valid.eq(self.in_valid[c]), self.in_ready[c].eq(s.ready),
                         s.payload.eq(self.in_bits[lo:lo + width])]
        o = getattr(u, self._output)
        m.d.comb += [self.out_valid.eq(o.valid), o.ready.eq(self.out_ready),
                     self.out_bits.eq(o.payload.as_value())]
        for name in self.consts:
            port = getattr(u, name)
            port = port.as_value() if hasattr(port, "as_value") else port
            lo = 32 * self.cfg_offsets[name]
            m.d.comb += port.eq(self.cfg[lo:lo + len(port)])
        if "error" in u.signature.members:
            m.d.comb += self.error.eq(u.error)
        return m


# --- vectorised payload packing ------------------------------------------

def _leaves(layout, offset=0, path=()):
    """(path, bit offset, width, signed) of every scalar field of ``layout``;
    array elements get their index in the path."""
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            yield from _leaves(field.shape, offset + field.offset, path + (name,))
    elif isinstance(layout, data.ArrayLayout):
        w = Shape.cast(layout.elem_shape).width
        for i in range(layout.length):
            yield from _leaves(layout.elem_shape, offset + i * w, path + (i,))
    else:
        shape = Shape.cast(layout)
        yield path, offset, shape.width, shape.signed


def _field(values, path):
    """values["data"][:, i] for path ("data", i): arrays index the last axis."""
    v = values[path[0]]
    for i in path[1:]:
        v = v[..., i] if isinstance(i, int) else v[i]
    return v


def pack(layout, values, beats):
    """``values``: dict of field name -> int array (``beats``,) or, for an
    ``ArrayLayout`` field, (``beats``, length). Returns uint32 words
    (``beats``, words per beat). Values that do not fit raise ValueError."""
    width = Shape.cast(layout).width
    out = np.zeros((beats, _words(width)), dtype=np.uint64)
    for path, off, w, signed in _leaves(layout):
        v = np.broadcast_to(np.asarray(_field(values, path), dtype=np.int64), (beats,))
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
        if v.size and (v.min() < lo or v.max() > hi):
            raise ValueError(f"field {'.'.join(map(str, path))} holds values outside "
                             f"[{lo}, {hi}]")
        u = v.astype(np.uint64) & np.uint64((1 << w) - 1)
        word, shift = divmod(off, 32)
        for j in range(-(-(shift + w) // 32)):
            part = (u << np.uint64(shift)) if j == 0 else (u >> np.uint64(32 * j - shift))
            out[:, word + j] |= part & np.uint64(0xFFFFFFFF)
    return out.astype(np.uint32)


def unpack(layout, words):
    """uint32 words (beats, words per beat) -> dict path -> int64 array
    (arrays of a field gathered as (beats, length) under its name)."""
    words = np.asarray(words, dtype=np.uint64)
    flat = {}
    for path, off, w, signed in _leaves(layout):
        word, shift = divmod(off, 32)
        v = np.zeros(len(words), dtype=np.uint64)
        for j in range(-(-(shift + w) // 32)):
            part = words[:, word + j]
            v |= (part >> np.uint64(shift)) if j == 0 else (part << np.uint64(32 * j - shift))
        v &= np.uint64((1 << w) - 1)
        s = v.astype(np.int64)
        if signed:
            s = np.where(s >> (w - 1) & 1, s - (1 << w), s)
        flat[path] = s
    out = {}
    for path, v in flat.items():
        if len(path) == 1:
            out[path[0]] = v
    names = {p[0] for p in flat if len(p) > 1}
    for name in names:
        idx = sorted(p[1] for p in flat if p[0] == name and len(p) == 2)
        out[name] = np.stack([flat[(name, i)] for i in idx], axis=1)
    return out


# --- build and run ---------------------------------------------------------

_BUILT = {}


def build(wrap, name):
    """Path of the harness executable for ``wrap`` (a :class:`FlatWrap`)."""
    por = PowerOnReset(wrap)
    ports = flat_ports(por)
    ports["clk"] = (por.clk_domain.clk, None)
    verilog = _verilog.convert(por, name=name, ports=ports, emit_src=False)
    source = HARNESS_SOURCE.read_text()
    key = hashlib.sha256(f"{name}\n{verilog}\n{source}".encode()).hexdigest()[:16]
    if key in _BUILT and _BUILT[key].exists():
        return _BUILT[key]
    build_dir = BUILD_ROOT / "stress" / f"{name}-{key}"
    exe = build_dir / "harness"
    _verilator_on_path()
    with _locked(build_dir.with_suffix(".lock")):
        if not exe.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
            build_dir.mkdir(parents=True)
            (build_dir / f"{name}.v").write_text(verilog)
            cmd = ["verilator", "--cc", "--exe", "--build", "-j", "1", *VERILATOR_ARGS,
                   "--top-module", name, "--prefix", "Vtop", "--Mdir", str(build_dir / "obj"),
                   "-o", str(exe), str(HARNESS_SOURCE), str(build_dir / f"{name}.v")]
            log = build_dir / "build.log"
            with open(log, "w") as f, shared_runtime(build_dir / "obj",
                                                     ["harness", *VERILATOR_ARGS]):
                done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
            if done.returncode or not exe.exists():
                raise RuntimeError(f"Verilator build of {name} failed; see {log}")
    _BUILT[key] = exe
    return exe


class BatchResult(NamedTuple):
    out: dict        #: unpacked output payload fields
    cycles: int
    extra: int       #: beats beyond the expected count (duplicates)
    error: int       #: the unit's sticky error flag at the end
    hang: bool       #: the run hit its cycle limit


def run_batch(exe, wrap, inputs, expect, *, cfg=None, seed=1, idle=0.3, stall=0.3,
              max_cycles=None, hold=0):
    """Run one batch: ``inputs`` a list (one per input stream) of
    ``(values, beats)`` for :func:`pack`; ``cfg`` dict constant -> int;
    ``expect`` output beats; ``hold``: cycles ``out`` is stalled at the start.
    Returns :class:`BatchResult`."""
    header = [len(inputs)]
    body = []
    for c, ((values, beats), layout) in enumerate(zip(inputs, wrap.in_layouts)):
        words = pack(layout, values, beats)
        header += [wrap.in_offsets[c], words.shape[1], beats]
        body.append(words.reshape(-1))
    cfg_words = np.zeros(wrap.cfg_words, dtype=np.uint64)
    for name, value in (cfg or {}).items():
        if name not in wrap.cfg_offsets:
            raise ValueError(f"{type(wrap.unit).__name__} has no constant port {name!r}")
        v = int(value) & ((1 << 64) - 1)
        off = wrap.cfg_offsets[name]
        cfg_words[off] = v & 0xFFFFFFFF
        if v >> 32 and off + 1 < len(cfg_words):
            cfg_words[off + 1] = v >> 32
    header += [wrap.cfg_words, *cfg_words.tolist(), wrap.out_words, expect]
    if max_cycles is None:
        total = sum(b for _, b in inputs) + expect
        max_cycles = 200 * total + 100_000 + hold
    with tempfile.TemporaryDirectory(prefix="trilut-stress-") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        with open(fin, "wb") as f:
            np.asarray(header, dtype=np.uint32).tofile(f)
            for b in body:
                b.astype(np.uint32).tofile(f)
        done = subprocess.run([str(exe), str(fin), str(fout), str(seed),
                               str(int(idle * 1000)), str(int(stall * 1000)), str(max_cycles),
                               str(hold)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"stress harness failed ({done.returncode}): {done.stderr}")
        f = dict(zip(*[iter(done.stdout.split())] * 2))
        words = np.fromfile(fout, dtype=np.uint32).reshape(-1, wrap.out_words)
    return BatchResult(unpack(wrap.out_layout, words), int(f["cycles"]), int(f["extra"]),
                       int(f["error"]), bool(int(f["hang"])))
