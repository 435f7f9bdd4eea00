"""Link fault injection at the transport boundary (``trilut stress``).

:class:`FaultyDevice` wraps any :class:`~trilut.host.device.Device` and
damages the byte path in both directions at a set rate: bit flips, dropped
bytes, truncated and duplicated frames (host to device) and long stalls
(a request split in two with a pause longer than the bridge's inter-byte
timeout in between). The protocol is unchanged: the wrapper only sees bytes.

Each fault is tracked until the link shows it noticed: the damaged request
was sent again (a retry after a NAK, a timeout or a bad reply), the host's
parser discarded bytes or a stale reply, or (a duplicated request) the
bridge answered the copy by re-sending its stored reply, byte for byte, as it
does for a retry instead of executing the request again (the wrapper parses
the raw reply bytes, before any reply fault, to see this). A fault the link never noticed is *undetected*, except a stall: a pause
shorter than the bridge's inter-byte timeout (in simulated cycles) damages
nothing and is counted as *tolerated* when no retry followed. A fault in a
retransmitted copy of a request (a retry after a timeout) that the link never
noticed is *superseded* when the bridge sent no more replies to that request
than it received intact copies: the damaged copy was dropped unanswered
(a damaged SYNC byte, say) and the host took the late reply to an earlier,
intact copy, so nothing it used was damaged; a damaged copy that was answered
stays undetected. ``detect=False``
(the deliberately wrong injector of the test suite) counts every fault as
undetected, so that a report which must show 0 undetected is shown to fail.
"""
import random
import time
from collections import Counter

from ..hw.link import REPLY
from .device import Device
from .protocol import FrameParser

__all__ = ["FaultyDevice", "FAULT_KINDS"]

FAULT_KINDS = ("flip", "drop", "truncate", "duplicate", "stall", "reply_flip", "reply_drop")
_PENDING_WRITES = 4      # a fault not noticed within this many later requests is undetected


class FaultyDevice(Device):
    """``device`` with faults: each request byte is hit with probability
    ``rate`` (one fault kind drawn from ``kinds``; ``reply_*`` kinds hit the
    device's reply bytes at the same rate). ``evidence``: a callable giving a
    count that grows when the link notices damage without a retry (set by
    :meth:`attach`). ``stall_s``: the pause of a stall. Counters in
    :attr:`counts`."""

    def __init__(self, device, *, rate=1e-3, kinds=FAULT_KINDS, seed=1, stall_s=0.05,
                 detect=True):
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), not {rate}")
        self.device, self.rate, self.kinds = device, rate, tuple(kinds)
        self._write_kinds = [k for k in self.kinds if not k.startswith("reply_")]
        self._read_kinds = [k for k in self.kinds if k.startswith("reply_")]
        self.rng = random.Random(seed)
        self.stall_s, self.detect = stall_s, detect
        self.evidence = lambda: 0
        self.byte_time = device.byte_time
        self._last_frame = None
        self._replies = FrameParser(any_type=True)
        self._last_reply, self._repeats = None, 0
        # [kind, writes since, evidence at injection, (type, seq) if in a retry copy]
        self._pending = []
        self._intact = Counter()     # (type, seq) -> undamaged copies sent
        self._answers = Counter()    # (type, seq) -> replies the device sent (raw)
        self.counts = {"frames": 0, "injected": 0, "detected": 0, "undetected": 0,
                       "tolerated": 0, "superseded": 0,
                       **{k: 0 for k in FAULT_KINDS}}
        #: fault kind -> faults of that kind the link never noticed
        self.undetected_by_kind = {k: 0 for k in FAULT_KINDS}

    def attach(self, link):
        """Take the link's own damage counters as evidence of detection."""
        self.evidence = lambda: link.stats["stale"] + link._parser.discarded + self._repeats
        return self

    @property
    def cycles(self):
        return self.device.cycles

    def sync(self):
        return self.device.sync()

    def open(self):
        self.device.open()
        return self

    def close(self):
        self.finish()
        self.device.close()

    def _fault(self, kind, copy=None):
        self.counts["injected"] += 1
        self.counts[kind] += 1
        self._pending.append([kind, 0, self.evidence(), copy])

    def _settle(self, retry):
        """A new request is being written: a retry of the last one notices
        every pending fault; otherwise the link's evidence counters may."""
        keep = []
        for item in self._pending:
            kind, age, ev, copy = item
            if self.detect and (retry or self.evidence() > ev):
                self.counts["detected"] += 1
            elif age + 1 >= _PENDING_WRITES:
                self._missed(kind, copy)
            else:
                keep.append([kind, age + 1, ev, copy])
        self._pending = keep

    def finish(self):
        """Count every fault still pending (end of a run)."""
        for kind, _, ev, copy in self._pending:
            if self.detect and self.evidence() > ev:
                self.counts["detected"] += 1
            else:
                self._missed(kind, copy)
        self._pending = []

    def _missed(self, kind, copy):
        if kind == "stall" and self.detect:
            self.counts["tolerated"] += 1
            return
        if copy is not None and self.detect and self._answers[copy] <= self._intact[copy]:
            self.counts["superseded"] += 1
            return
        self.counts["undetected"] += 1
        self.undetected_by_kind[kind] += 1

    def write(self, data):
        data = bytes(data)
        retry = data == self._last_frame
        self._settle(retry=retry)
        self._last_frame = data
        self.counts["frames"] += 1
        request = (data[1], data[2]) if len(data) > 2 else None      # (type, seq)
        copy = request if retry else None
        if not retry:           # a new request: its seq's counts start again (seq wraps)
            self._intact[request] = self._answers[request] = 0
        injected = self.counts["injected"]
        if not (self._write_kinds and self.rate):
            self._intact[request] += 1
            return self.device.write(data)
        out = bytearray()
        i = 0
        while i < len(data):
            if self.rng.random() >= self.rate:
                out.append(data[i])
                i += 1
                continue
            kind = self.rng.choice(self._write_kinds)
            if kind == "stall" and not out:     # between frames: a pause, not a fault
                out.append(data[i])
                i += 1
                continue
            self._fault(kind, copy)
            if kind == "flip":
                out.append(data[i] ^ (1 << self.rng.randrange(8)))
            elif kind == "drop":
                pass
            elif kind == "truncate":
                break
            elif kind == "duplicate":
                self.device.write(bytes(out) + data[i:])
                out = bytearray(data)
                # the second copy is whole, and so is the first if this is its only fault
                self._intact[request] += 1 + (self.counts["injected"] == injected + 1)
                break
            elif kind == "stall":
                self.device.write(bytes(out))
                out = bytearray()
                time.sleep(self.stall_s)
                out.append(data[i])
            i += 1
        if self.counts["injected"] == injected:
            self._intact[request] += 1
        return self.device.write(bytes(out))

    def read(self, timeout):
        data = self.device.read(timeout)
        for f in self._replies.feed(data):
            self._repeats += f == self._last_reply
            self._last_reply = f
            if f.type & REPLY:
                self._answers[(f.type & ~REPLY, f.seq)] += 1
        if not (self._read_kinds and self.rate and data):
            return data
        out = bytearray()
        for b in data:
            if self.rng.random() >= self.rate:
                out.append(b)
                continue
            kind = self.rng.choice(self._read_kinds)
            self._fault(kind)
            if kind == "reply_flip":
                out.append(b ^ (1 << self.rng.randrange(8)))
        return bytes(out)
