# amaranth: UnusedElaboratable=no
"""Host driver for the bridged accelerator: registers, programs, constants,
streams and whole inference runs over a :class:`~trilut.host.device.Device`.

Everything is packed with :mod:`trilut.hw.isa` (register map, descriptor and
constant layouts, ``STATUS``/``BUILD``); stream numbers and widths come from
:func:`trilut.hw.bridge.stream_ports`. Every wait has a timeout; an
accelerator that stops with an error raises :class:`AcceleratorError` naming
the :class:`~trilut.hw.isa.ErrorCode`.
"""
import hashlib
import sys
import time
from dataclasses import dataclass

from amaranth.lib import data

from ..hw import isa
from ..hw.bridge import FEED_QUEUE, stream_ports
from ..hw.isa import FIELD_LIMITS, ErrorCode, const_words, descriptor_words
from ..hw.link import MAX_PAYLOAD, MEM_ALIGN
from ..hw.top import Accelerator
from .protocol import Link, LinkError

__all__ = ["Driver", "Status", "AcceleratorError", "BuildMismatch", "LinkError", "MemoryMismatch",
           "WeightsNotResident", "BLOB_ALIGN", "weight_blobs"]

#: :meth:`Driver.run` reads STATUS after this many polls without progress.
STATUS_EVERY = 8
#: :meth:`Driver.load_weights` starts every blob on a multiple of this many
#: bytes (32 SDRAM words: whole bursts for a reader).
BLOB_ALIGN = 64
#: Bytes per progress step of the memory transfers (and the size from which
#: :meth:`Driver.load_weights` reports progress by default).
PROGRESS_BYTES = 64 << 10


class MemoryMismatch(RuntimeError):
    """Memory read back differs from what was written."""


class WeightsNotResident(RuntimeError):
    """:meth:`Driver.run` was given a weight layout the external memory does
    not hold (never loaded, or overwritten since)."""


def weight_blobs(model):
    """``{name: bytes}`` of a compiled model's weights: a
    :class:`~trilut.host.compiler.Program` (one blob per LINEAR pass, the
    ``s_axis_wgt`` frames it streams) or a mapping name -> bytes-like or
    NumPy array (its bytes as stored)."""
    import numpy as np
    if hasattr(model, "weight_frames"):
        return {f"linear{i}": bytes(f) for i, f in enumerate(model.weight_frames())}
    if not hasattr(model, "items"):
        raise TypeError(f"model must be a compiled Program or a mapping name -> bytes, "
                        f"not {type(model).__name__}")
    out = {}
    for name, blob in model.items():
        if isinstance(blob, np.ndarray):
            blob = np.ascontiguousarray(blob).tobytes()
        elif not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob {name!r} must be bytes or a NumPy array, "
                            f"not {type(blob).__name__}")
        if not len(blob):
            raise ValueError(f"blob {name!r} is empty")
        out[str(name)] = bytes(blob)
    return out


class AcceleratorError(RuntimeError):
    """The accelerator stopped with an error (``status`` says which)."""

    def __init__(self, status):
        self.status = status
        super().__init__(f"accelerator error {status.code.name} at descriptor {status.pc}"
                         + (f" (unit flags {status.unit:#x})" if status.unit else ""))


class BuildMismatch(RuntimeError):
    """The device's BUILD register does not match the expected configuration."""


@dataclass(frozen=True)
class Status:
    busy: bool
    done: bool
    error: bool
    code: ErrorCode
    unit: int
    pc: int

    @classmethod
    def from_word(cls, word):
        st = data.Const(isa.STATUS, word)
        code = int(st.code)
        return cls(bool(st.busy), bool(st.done), bool(st.error),
                   ErrorCode(code) if code in ErrorCode._value2member_map_ else code,
                   int(st.unit), int(st.pc))


class Driver:
    """Drives one accelerator through ``device``.

    ``accel``: the :class:`~trilut.hw.top.Accelerator` (or its parameter
    dict) the device was built from; ``timeout`` (seconds) bounds every wait
    for the accelerator, ``link_timeout``/``retries`` the link's. The
    device is opened here; :meth:`check_build` compares ``BUILD`` with
    ``accel``. ``memory_bytes``: the external memory behind the bridge
    (default: the device's ``memory_bytes``; 0: none), for
    :meth:`write_memory`, :meth:`read_memory` and :meth:`load_weights`.
    A device with a ``make_link(accel, inputs, outputs, timeout=)`` method
    gives its own link (:class:`trilut.host.pynq.PynqDevice`).
    """

    def __init__(self, device, accel, *, timeout=30.0, link_timeout=2.0, retries=4,
                 check=True, memory_bytes=None):
        if isinstance(accel, dict):
            accel = Accelerator(**accel)
        if not isinstance(accel, Accelerator):
            raise TypeError(f"accel must be an Accelerator or its parameter dict, not {accel!r}")
        self.accel, self.regs = accel, accel.regs
        self.device = device.open()
        ins, outs = stream_ports(accel)
        self.inputs, self.outputs = [n for n, _ in ins], [n for n, _ in outs]
        widths = ([b for _, b in ins], [b for _, b in outs])
        make_link = getattr(self.device, "make_link", None)     # a device with its own link
        self.link = (make_link(accel, *widths, timeout=link_timeout) if make_link else
                     Link(self.device, widths, timeout=link_timeout, retries=retries))
        self.timeout = timeout
        self.memory_bytes = (getattr(device, "memory_bytes", 0) if memory_bytes is None
                             else memory_bytes)
        self._forget_device()
        self._written = {}              # (addr, bytes) -> SHA-256 of a blob load_weights wrote
        self._feed_plan = None          # (program, layout, frames) checked by _feed_frames
        if check:
            self.check_build()

    # --- registers -------------------------------------------------------------

    def read(self, name, count=1):
        words = self.link.reg_read(self.regs.offset(name), count)
        return words if count > 1 else words[0]

    def write(self, name, words, word=0):
        """Write ``words`` into register/window ``name`` from word ``word``. A
        write into the ``const`` window, the ``prog`` window or ``kv_pos``
        here (not through :meth:`write_consts`, :meth:`write_program`,
        :meth:`set_kv_pos`) forgets what those know is there."""
        words = [words] if isinstance(words, int) else list(words)
        if name == "const":
            self._consts = {}
        elif name == "prog":
            self._loaded, self._prog = None, None
        elif name == "kv_pos":
            self._kv_pos = None
        self.link.reg_write(self.regs.offset(name) + 4 * word, words)

    def check_build(self):
        """Raise :class:`BuildMismatch` unless ``BUILD`` matches ``accel``.
        Forgets which program, constants and ``kv_pos`` are on the device
        (:meth:`write_consts`): a device checked again may be another one,
        or reset."""
        self._forget_device()
        got = data.Const(isa.BUILD, self.read("build"))
        want = {"max_rows": self.accel.max_rows, "max_width": self.accel.max_width,
                "banks": self.accel.banks}
        have = {k: int(got[k]) for k in want}
        if have != want:
            raise BuildMismatch(f"device BUILD {have} does not match the configuration {want}")

    def status(self):
        return Status.from_word(self.read("status"))

    def counters(self):
        """Every counter of :data:`~trilut.hw.isa.COUNTERS` (one bulk read)."""
        names = [n for n, _ in isa.COUNTERS]
        offsets = [self.regs.offset(n) for n in names]
        assert offsets == list(range(offsets[0], offsets[0] + 4 * len(names), 4))
        return dict(zip(names, self.link.reg_read(offsets[0], len(names))))

    def load(self, program, *, changed_only=False):
        """Write ``program``'s constant sets and descriptors. :meth:`run`
        does this only when the program differs from the one loaded last
        (program and constant memory keep their contents across runs and soft
        resets), so running one model on many inputs sends them once, and
        then writes only the constant entries that changed
        (``changed_only``, :meth:`write_consts`)."""
        for s, entries in program.consts:
            self.write_consts(s, entries, changed_only=changed_only)
        self.write_program(program.descriptors, changed_only=changed_only)
        self._loaded = program

    def forget(self):
        """Assume nothing is loaded: the next :meth:`run` writes its program,
        every constant entry and ``kv_pos`` again (after a failure that
        leaves the device's memories in doubt)."""
        self._forget_device()

    def _forget_device(self):
        self._loaded = None             # the program whose memories are on the device
        self._consts = {}               # set -> {entry: value} written since check_build
        self._prog = None               # the descriptors in program memory (a tuple)
        self._kv_pos = None             # the kv_pos register (decoder builds)

    def write_program(self, descriptors, *, changed_only=False):
        """Write ``descriptors`` into program memory from descriptor 0; with
        ``changed_only`` (what :meth:`run` does) not if the driver wrote the
        very same program last (recorded as :meth:`write_consts` records
        constants): a decode step's program, the same at every position
        (the ``kv_pos`` register moves it), is sent once."""
        self._loaded = None
        descriptors = tuple(descriptors)
        if len(descriptors) > self.accel.prog_depth:
            raise ValueError(f"program of {len(descriptors)} descriptors exceeds prog_depth "
                             f"= {self.accel.prog_depth}")
        if changed_only and descriptors == self._prog:
            return
        self._prog = None
        self.link.reg_write(self.regs.offset("prog"),
                            [w for d in descriptors for w in descriptor_words(d)])
        self._prog = descriptors

    def set_kv_pos(self, kv_pos):
        """The decoder build's ``kv_pos`` register (:data:`~trilut.hw.isa.KV_POS_DOC`),
        written only if it does not hold ``kv_pos`` already."""
        if "kv_pos" not in self.regs.registers:
            raise ValueError("this build has no kv_pos register (a decoder build, "
                             "Accelerator(llm=True), has)")
        if not 0 <= kv_pos <= FIELD_LIMITS["kv_pos"]:
            raise ValueError(f"kv_pos must be in [0, {FIELD_LIMITS['kv_pos']}], not {kv_pos}")
        if kv_pos != self._kv_pos:
            self._kv_pos = None
            self.link.reg_write(self.regs.offset("kv_pos"), [kv_pos])
            self._kv_pos = kv_pos

    def write_consts(self, const_set, entries, *, changed_only=False):
        """Set ``const_set``'s entries 0 .. len(entries) - 1 to ``entries``.
        This driver records what it wrote; with ``changed_only`` (what
        :meth:`run` does) it writes only the entries that differ from that
        record (runs of consecutive entries, one REG_WRITE each). The
        constant memory keeps its contents across runs and soft resets; the
        record starts empty at :meth:`check_build` (opening, :meth:`hard_reset`)
        and :meth:`forget`, and is dropped by a raw ``write("const", ...)``
        and, for the set, by a write that did not finish (an exception), so
        nothing stale is assumed; it cannot know of another driver writing
        the same device (neither can :meth:`run`'s program check). A decode
        step whose segments place their constants in the same sets
        (``llm_consts.const_plan``) sends none of them again."""
        self._loaded = None
        entries = list(entries)
        if not 0 <= const_set < self.accel.const_sets:
            raise ValueError(f"const_set must be in [0, {self.accel.const_sets - 1}], "
                             f"not {const_set}")
        if len(entries) > self.accel.const_stride:
            raise ValueError(f"{len(entries)} constant entries exceed a set's "
                             f"{self.accel.const_stride}")
        known = self._consts.pop(const_set, {})     # back once every write succeeded
        if not changed_only:
            known = {}
        base = self.regs.offset("const") + 16 * const_set * self.accel.const_stride
        i = 0
        while i < len(entries):
            if known.get(i) == entries[i]:
                i += 1
                continue
            j = i + 1
            while j < len(entries) and known.get(j) != entries[j]:
                j += 1
            self.link.reg_write(base + 16 * i, [w for e in entries[i:j] for w in const_words(e)])
            i = j
        known.update(enumerate(entries))
        self._consts[const_set] = known

    def start(self):
        self.write("ctrl", isa.CTRL.const({"start": 1}).as_value().value)

    def soft_reset(self):
        """Soft-reset the accelerator; with external memory, first drop
        whatever the weight feeder still holds (a run stopped midway). The
        bridge empties its stream buffers with it (input not yet taken,
        output not yet read: the stopped run's)."""
        if self.memory_bytes:
            self.link.feed([], abort=True)
        self.write("ctrl", isa.CTRL.const({"soft_reset": 1}).as_value().value)

    def hard_reset(self):
        """Reset the whole device through its reset pin (a device with a
        ``hard_reset()``, such as :class:`~trilut.host.device.SimDevice`)
        and reconnect: the link forgets its partial frame and the bridge's
        buffer room, nothing is assumed loaded (program, constants, external
        memory), and BUILD is checked again. Returns the device's answer
        (SimDevice: the ``leds`` byte just before the reset)."""
        reset = getattr(self.device, "hard_reset", None)
        if reset is None:
            raise TypeError(f"{type(self.device).__name__} has no reset pin to pulse "
                            f"(SimDevice has)")
        leds = reset()
        self.link.reconnect()
        self._written, self._feed_plan = {}, None
        self.check_build()
        return leds

    def wait(self, timeout=None):
        """Poll STATUS until the accelerator is idle; raise
        :class:`AcceleratorError` if it stopped with an error, ``TimeoutError``
        if it is still busy after ``timeout`` seconds."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.error:
                raise AcceleratorError(st)
            if not st.busy:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"accelerator still busy after {timeout} s: {st}")

    # --- external memory ------------------------------------------------------------

    def _check_span(self, addr, n):
        for name, v in (("addr", addr), ("length", n)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"memory {name} must be an integer, not {v!r}")
        if not self.memory_bytes:
            raise ValueError("the device has no external memory (SimDevice(sdram=True), or a "
                             "board build with the SDRAM)")
        if addr < 0 or n < 1 or addr + n > self.memory_bytes:
            raise ValueError(f"memory bytes {addr:#x}..{addr + n - 1:#x} ({n} bytes) are "
                             f"outside the memory (0..{self.memory_bytes - 1:#x})")

    @staticmethod
    def _progress(what, total, progress):
        """A callable(done) printing ``what``'s progress to standard error
        every :data:`PROGRESS_BYTES` (``progress``: True, False, a callable
        taking (done, total), or None: print for loads of PROGRESS_BYTES or
        more)."""
        if callable(progress):
            return lambda done: progress(done, total)
        if progress is False or (progress is None and total < PROGRESS_BYTES):
            return lambda done: None
        t0 = time.monotonic()

        def say(done):
            dt = time.monotonic() - t0
            print(f"{what}: {done:,} / {total:,} bytes ({100 * done / total:.0f} %, "
                  f"{dt:.1f} s)", file=sys.stderr, flush=True)
        return say

    def write_memory(self, addr, data, *, progress=False):
        """Write ``data`` (bytes or a NumPy array's bytes) to the external
        memory from byte address ``addr``. The link moves whole
        :data:`~trilut.hw.link.MEM_ALIGN`-byte words: an unaligned start or
        end is merged with the memory's word read first. ``ValueError``
        before anything is sent for a span outside the memory."""
        data = _as_bytes(data)
        self._check_span(addr, len(data))
        self._forget(addr, len(data))
        lo, end = addr - addr % MEM_ALIGN, addr + len(data)
        hi = -(-end // MEM_ALIGN) * MEM_ALIGN
        if (lo, hi) != (addr, end):
            buf = bytearray(hi - lo)
            buf[:MEM_ALIGN] = self.link.mem_read(lo, MEM_ALIGN)
            buf[-MEM_ALIGN:] = self.link.mem_read(hi - MEM_ALIGN, MEM_ALIGN)
            buf[addr - lo:end - lo] = data
            data = bytes(buf)
        say = self._progress(f"memory write at {addr:#x}", end - addr, progress)
        for i in range(0, len(data), PROGRESS_BYTES):
            self.link.mem_write(lo + i, data[i:i + PROGRESS_BYTES])
            say(max(0, min(lo + i + PROGRESS_BYTES, end) - addr))     # the caller's bytes

    def read_memory(self, addr, n, *, progress=False):
        """``n`` bytes of the external memory from byte address ``addr``
        (checked like :meth:`write_memory`)."""
        self._check_span(addr, n)
        lo = addr - addr % MEM_ALIGN
        hi = -(-(addr + n) // MEM_ALIGN) * MEM_ALIGN
        say = self._progress(f"memory read at {addr:#x}", n, progress)
        out = bytearray()
        for i in range(lo, hi, PROGRESS_BYTES):
            out += self.link.mem_read(i, min(PROGRESS_BYTES, hi - i))
            say(max(0, min(i + PROGRESS_BYTES, addr + n) - addr))
        return bytes(out[addr - lo:addr - lo + n])

    def _forget(self, addr, n):
        """Drop the records of loaded blobs that bytes addr..addr+n-1 overlap."""
        self._written = {(a, k): d for (a, k), d in self._written.items()
                         if a + k <= addr or addr + n <= a}
        self._feed_plan = None

    def load_weights(self, model, *, base=0, verify=False, progress=None):
        """Write a compiled model's weight blobs (:func:`weight_blobs`) into
        the external memory one after the other from ``base``, each on a
        :data:`BLOB_ALIGN` boundary, and return the layout ``{name: (addr,
        bytes)}``. Every frame is CRC-checked by the link; ``verify``: read
        everything back and raise :class:`MemoryMismatch` naming the blob
        and the first differing byte. The whole span is checked against the
        memory before anything is sent. ``progress``: see
        :meth:`write_memory` (default: printed for loads of 64 KB or more)."""
        blobs = weight_blobs(model)
        layout, addr = {}, base
        for name, blob in blobs.items():
            addr = -(-addr // BLOB_ALIGN) * BLOB_ALIGN
            layout[name] = (addr, len(blob))
            addr += len(blob)
        if not blobs:
            raise ValueError("the model has no weights to load")
        self._check_span(base, addr - base)
        image = bytearray(addr - base)
        for name, (a, n) in layout.items():
            image[a - base:a - base + n] = blobs[name]
        say = self._progress(f"loading {len(blobs)} weight blobs", len(image), progress)
        self.write_memory(base, image, progress=lambda done, total: say(done))
        if verify:
            say = self._progress("verifying", len(image), progress)
            back = self.read_memory(base, len(image), progress=lambda done, total: say(done))
            for name, (a, n) in layout.items():
                got = back[a - base:a - base + n]
                if got != blobs[name]:
                    k = next(i for i in range(n) if got[i] != blobs[name][i])
                    raise MemoryMismatch(f"weight blob {name!r} at {a:#x}: byte {k} reads "
                                         f"{got[k]:#04x}, written {blobs[name][k]:#04x}")
        self._written.update({span: _digest(blobs[name]) for name, span in layout.items()})
        return layout

    def _feed_frames(self, program, layout):
        """The FEED frames ``(addr, bytes)`` of ``program``'s weights at
        ``layout`` (from :meth:`load_weights`), in stream order, once the
        memory is known to hold them: blobs this driver loaded there and has
        not overwritten since, or else read back and compared once.
        :class:`WeightsNotResident` names the first blob that is not there."""
        plan = self._feed_plan
        if plan is not None and plan[0] is program and plan[1] == layout:
            return plan[2]
        if not self.memory_bytes:
            raise WeightsNotResident("the device has no external memory to hold weights "
                                     "(SimDevice(sdram=True), or a board build with the SDRAM)")
        if not hasattr(layout, "items"):
            raise TypeError(f"weights must be the layout load_weights returned, "
                            f"not {type(layout).__name__}")
        frames = []
        for name, blob in weight_blobs(program).items():
            if name not in layout:
                raise WeightsNotResident(f"weight blob {name!r} of the program is not in the "
                                         f"layout ({', '.join(layout) or 'empty'})")
            addr, n = layout[name]
            if n != len(blob):
                raise WeightsNotResident(f"weight blob {name!r} is {len(blob)} bytes, the "
                                         f"layout's {n}: loaded for another program")
            if self._written.get((addr, n)) != _digest(blob):
                self._check_span(addr, n)
                if self.read_memory(addr, n) != blob:
                    raise WeightsNotResident(
                        f"the memory at {addr:#x} does not hold weight blob {name!r} of this "
                        f"program (never loaded there, or overwritten since): "
                        f"load_weights(program) first")
                self._written[(addr, n)] = _digest(blob)
            frames.append((addr, n))
        if not frames:
            raise ValueError("the program has no LINEAR weights to feed")
        self._feed_plan = (program, dict(layout), frames)
        return frames

    # --- streams ---------------------------------------------------------------

    def _beats(self, stream, frames):
        nb = self.link.inputs[stream]
        beats = []
        for i, f in enumerate(frames):
            f = bytes(f)
            if not f or len(f) % nb:
                raise ValueError(f"frame {i} for input {self.inputs[stream]} is {len(f)} "
                                 f"bytes, not a positive multiple of its width {nb}")
            n = len(f) // nb
            beats += [(f[k * nb:(k + 1) * nb], k == n - 1) for k in range(n)]
        return beats

    def send(self, stream, frames):
        """Send ``frames`` (bytes, whole transfers; ``tlast`` on each frame's
        final transfer) to input ``stream`` (a number or a port name)."""
        stream = self._index(stream, self.inputs)
        self.link.stream_write(stream, self._beats(stream, frames), wait=self.timeout)

    def receive(self, stream, n_frames, timeout=None):
        """``n_frames`` frames (split at ``tlast``) from output ``stream``;
        raises :class:`AcceleratorError` if the accelerator stops with an
        error first, ``TimeoutError`` after ``timeout`` seconds."""
        stream = self._index(stream, self.outputs)
        frames, cur = [], bytearray()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(frames) < n_frames:
            got = self.link.stream_read(stream, 1 << 16, wait=True)
            for data_, last in got:
                cur += data_
                if last:
                    frames.append(bytes(cur))
                    cur.clear()
            if not got:
                self._check_stalled(deadline, f"{len(frames)} of {n_frames} frames received")
        if cur or len(frames) > n_frames:
            raise LinkError(f"output {self.outputs[stream]}: {len(frames)} frames and "
                            f"{len(cur)} more bytes, expected {n_frames} frames")
        return frames

    def _check_stalled(self, deadline, what):
        st = self.status()
        if st.error:
            raise AcceleratorError(st)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} when the timeout ran out; accelerator {st}")

    @staticmethod
    def _index(stream, names):
        if isinstance(stream, str):
            return names.index(stream)
        if not 0 <= stream < len(names):
            raise ValueError(f"stream {stream} does not exist ({names})")
        return stream

    # --- a whole run ---------------------------------------------------------------

    def run(self, program, x, timeout=None, *, weights=None):
        """Run a compiled program (duck-typed like
        :class:`trilut.host.compiler.Program`: ``descriptors``, ``consts``,
        ``input_frames(x)`` for ``s_axis``, ``weight_frames()`` for
        ``s_axis_wgt`` (if the program has LINEAR weights), ``outputs`` with
        ``rows`` each, ``decode``; a program may instead give
        ``stream_frames(x)`` -> {port name: frames}) on input
        ``x``; returns ``program.decode(frames)``. All input streams and the
        output are served together, so a program that stores while it still
        loads cannot deadlock on a full buffer: the output is read whenever no
        input transfer was taken (all sent, or the bridge's buffers full), so
        there is no empty read per written frame.

        ``weights``: the layout :meth:`load_weights` returned for this
        program: its weights are then read from the external memory by the
        bridge's weight feeder instead of being sent (one FEED request, which
        also starts the accelerator); :class:`WeightsNotResident` before
        anything runs if the memory does not hold them there. If the run
        fails, the feeder is told to drop what it still holds."""
        params = getattr(program, "accel_params", None)
        if params is not None and dict(params) != self.accel.params:
            raise BuildMismatch(f"program compiled for {dict(params)}, driver configured "
                                f"for {self.accel.params}")
        feed = [] if weights is None else self._feed_frames(program, weights)
        if hasattr(program, "stream_frames"):
            per_stream = program.stream_frames(x)
        else:
            per_stream = {self.inputs[0]: program.input_frames(x)}
            if hasattr(program, "weight_frames") and weights is None:
                per_stream["s_axis_wgt"] = program.weight_frames()
        if feed and "s_axis_wgt" in per_stream:
            raise ValueError("the program streams s_axis_wgt itself; weights= does not apply")
        pending = {}
        for name, frames in per_stream.items():
            i = self._index(name, self.inputs)
            pending[i] = self._beats(i, frames)
        if "kv_pos" in self.regs.registers:     # decoder builds: the program's position
            self.set_kv_pos(getattr(program, "kv_pos", 0))
        if self._loaded is not program:
            self.load(program, changed_only=True)
        if not feed:
            self.start()
            return self._serve(program, pending, timeout)
        # The first FEED also drops anything an earlier run left in the feeder.
        if not self.link.feed(feed[:FEED_QUEUE], start=True, abort=True):
            raise LinkError("the weight feeder refused the first frames")
        try:
            return self._serve(program, pending, timeout, feed[FEED_QUEUE:])
        except BaseException:
            self.link.feed([], abort=True)
            raise

    def _serve(self, program, pending, timeout, feed=()):
        """The input, output and (``feed``: weight frames still to queue)
        feeder traffic of a started run; returns the decoded output."""
        n_out = sum(o.rows for o in program.outputs)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        frames, cur = [], bytearray()
        pos = dict.fromkeys(pending, 0)
        idle = 0
        while (any(pos[i] < len(b) for i, b in pending.items()) or len(frames) < n_out
               or feed):
            progress = written = 0
            waited = False
            if feed and self.link.feed(feed[:FEED_QUEUE // 4]):
                feed = feed[FEED_QUEUE // 4:]
                written += 1
            for i, beats in pending.items():
                if pos[i] < len(beats):
                    # A frame takes at most MAX_PAYLOAD bytes: never more than this.
                    n = self.link.stream_write_some(i, beats[pos[i]:pos[i] + MAX_PAYLOAD])
                    pos[i] += n
                    written += n
            progress += written
            # The output is read once the inputs are sent or stop being taken
            # (an accelerator that stores while it loads fills the output
            # buffer first): no round trip per frame for an empty read.
            if len(frames) < n_out and not written:
                # With everything sent the bridge waits for the output itself.
                sent = not feed and all(pos[i] == len(b) for i, b in pending.items())
                got = self.link.stream_read(0, 1 << 16, wait=sent)
                waited = sent and not got
                progress += len(got)
                for data_, last in got:
                    cur += data_
                    if last:
                        frames.append(bytes(cur))
                        cur.clear()
            if progress:
                deadline = time.monotonic() + limit
                idle = 0
            else:
                # STATUS (error, timeout) every STATUS_EVERY idle rounds only:
                # one round trip per poll while the accelerator computes; and
                # after a waiting read that got nothing (the bridge waited
                # its read_wait cycles: an accelerator stopped by an error is
                # found then, not STATUS_EVERY waits later).
                idle += 1
                if waited or idle % STATUS_EVERY == 0 or time.monotonic() > deadline:
                    left = sum(len(b) - pos[i] for i, b in pending.items())
                    self._check_stalled(deadline, f"{left} input transfers still to send, "
                                                  f"{len(frames)} of {n_out} frames received")
        self.wait(timeout)
        return program.decode(frames)


def _as_bytes(data):
    import numpy as np
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes or a NumPy array, not {type(data).__name__}")


def _digest(blob):
    return hashlib.sha256(blob).digest()
