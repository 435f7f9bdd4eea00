"""Host side of the link protocol (frame format: :mod:`trilut.hw.link`).

:func:`encode` / :class:`FrameParser` build and parse frames;
:class:`Link` runs the stop-and-wait exchange over a
:class:`~trilut.host.device.Device`: one request in flight, a timeout and a
bounded number of retries with the same ``seq`` (the bridge recognises a
retry and re-sends its stored reply without executing the request again),
and a :class:`LinkError` saying what happened when it gives up. A reply is
only accepted with a good CRC, the request's ``seq`` and type, and a payload
of the expected length, so a damaged exchange is retried or reported, never
returned.
"""
import random
import struct
import time
from dataclasses import dataclass

from ..hw.link import (CRC_BYTES, FEED_ABORT, FEED_START, HEADER_BYTES, MAX_PAYLOAD, REPLY,
                       STREAM_WAIT, SYNC, FrameType, Status, crc16, max_feed_frames,
                       max_mem_read_bytes, max_mem_write_bytes, max_read_words,
                       max_record_beats, record_bytes)

__all__ = ["LinkError", "Frame", "encode", "FrameParser", "Link"]


class LinkError(RuntimeError):
    """The link failed: no valid reply after all retries, the device closed,
    or the bridge rejected a request (the message says which)."""


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


def encode(ftype, seq, payload=b""):
    """The bytes of one frame."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    body = struct.pack("<BBH", int(ftype), seq & 0xFF, len(payload)) + payload
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


_TYPES = frozenset(int(t) for t in FrameType)


class FrameParser:
    """Incremental frame parser: :meth:`feed` bytes, get complete frames with
    a good CRC. Bytes that do not start a valid frame (a known type, a
    length up to MAX_PAYLOAD, a good CRC) are skipped (and
    counted in :attr:`discarded`), so the parser resynchronises on the next
    SYNC after damage. ``any_type``: accept unknown types too (testbenches
    that check the bridge's answer to them)."""

    def __init__(self, any_type=False):
        self._buf = bytearray()
        self._types = None if any_type else _TYPES
        self.discarded = 0

    def feed(self, data):
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                self.discarded += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.discarded += start
                del self._buf[:start]
            if len(self._buf) < HEADER_BYTES:
                break
            ftype, seq, length = struct.unpack_from("<BBH", self._buf, 1)
            if length > MAX_PAYLOAD or (self._types and ftype & ~REPLY not in self._types):
                self.discarded += 1
                del self._buf[:1]
                continue
            end = HEADER_BYTES + length + CRC_BYTES
            if len(self._buf) < end:
                break
            if crc16(self._buf[1:end]) != 0:
                self.discarded += 1
                del self._buf[:1]
                continue
            frames.append(Frame(ftype, seq, bytes(self._buf[HEADER_BYTES:end - CRC_BYTES])))
            del self._buf[:end]
        return frames

    def flush(self):
        """Drop a partial frame (counted in :attr:`discarded`): after a
        damaged length field the parser would otherwise wait for up to
        MAX_PAYLOAD bytes that never come, swallowing the replies meanwhile."""
        self.discarded += len(self._buf)
        self._buf.clear()


class Link:
    """Stop-and-wait requests over ``device``.

    ``timeout``: seconds to wait for a reply (plus the device's
    ``byte_time`` per byte of request and reply); ``retries``: further
    attempts after the first. ``stream_bytes``: ``(inputs, outputs)``, the
    bytes per transfer of every input and output stream (see
    :func:`trilut.hw.bridge.stream_ports`). Counters of what went wrong are
    kept in :attr:`stats`; what crossed the line, per request type, in
    :attr:`traffic` (see :meth:`efficiency`).
    """

    def __init__(self, device, stream_bytes, *, timeout=2.0, retries=4, seed=None):
        self.device = device
        self.inputs, self.outputs = (list(s) for s in stream_bytes)
        self.timeout, self.retries = timeout, retries
        # A random first seq: a stale stored reply of an earlier session
        # (same seq, type and CRC) is then all but impossible.
        self._seq = random.Random(seed).randrange(256)
        self._parser = FrameParser()
        self._free = {}             # input stream -> free room at the last reply
        self.stats = {"requests": 0, "retries": 0, "naks": 0, "timeouts": 0, "stale": 0}
        #: request type name -> {"requests", "sent", "received", "payload"}: frames'
        #: bytes host -> device and device -> host (retries and NAKs included) and
        #: the useful bytes among them (register words, stream transfer data).
        self.traffic = {}

    def _count(self, name, key, n):
        t = self.traffic.setdefault(name, dict.fromkeys(
            ("requests", "sent", "received", "payload"), 0))
        t[key] += n

    def efficiency(self):
        """Per request type and in total: requests, bytes each way, useful
        payload bytes and ``efficiency`` = payload / (bytes sent + received)."""
        rows = {name: dict(t) for name, t in self.traffic.items()}
        rows["total"] = {k: sum(t[k] for t in self.traffic.values())
                         for k in ("requests", "sent", "received", "payload")}
        for t in rows.values():
            line = t["sent"] + t["received"]
            t["efficiency"] = round(t["payload"] / line, 4) if line else None
        return rows

    def reconnect(self):
        """After the device was reset: drop a partial reply and the
        remembered free room of the bridge's input buffers."""
        self._parser.flush()
        self._free.clear()

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def transact(self, ftype, payload, reply_len=None):
        """Send one request and return its reply payload (status byte
        first). ``reply_len``: the exact reply length expected, or a callable
        checking it. Raises :class:`LinkError` after ``retries`` retries."""
        ftype = FrameType(ftype) if ftype in FrameType._value2member_map_ else int(ftype)
        name = getattr(ftype, "name", f"type 0x{ftype:02x}")
        seq = self._next_seq()
        frame = encode(ftype, seq, payload)
        self.stats["requests"] += 1
        self._count(name, "requests", 1)
        wait = self.timeout + getattr(self.device, "byte_time", 0.0) * (
            len(frame) + MAX_PAYLOAD + 8) * 2
        history = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.device.write(frame)
            self._count(name, "sent", len(frame))
            deadline = time.monotonic() + wait
            outcome = self._await_reply(name, ftype, seq, deadline, reply_len)
            if isinstance(outcome, bytes):
                return outcome
            if outcome.startswith("timeout"):
                self._parser.flush()
            history.append(outcome)
        raise LinkError(f"{name} (seq {seq}, {len(payload)} payload bytes): no valid "
                        f"reply after {self.retries + 1} attempts ({'; '.join(history)})")

    def _await_reply(self, name, ftype, seq, deadline, reply_len):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stats["timeouts"] += 1
                return f"timeout after {self.timeout:g} s"
            data = self.device.read(left)
            self._count(name, "received", len(data))
            for f in self._parser.feed(data):
                if f.type == FrameType.NAK:
                    self.stats["naks"] += 1
                    code = f.payload[0] if f.payload else -1
                    name = Status(code).name if code in Status._value2member_map_ else code
                    return f"NAK {name}"
                if f.seq != seq or f.type != ftype | REPLY or not f.payload:
                    self.stats["stale"] += 1
                    continue
                ok = (reply_len is None or
                      (reply_len(f.payload) if callable(reply_len) else
                       len(f.payload) == reply_len))
                if not ok:
                    return f"reply of unexpected length {len(f.payload)}"
                return f.payload

    @staticmethod
    def _width(widths, stream, kind):
        if not 0 <= stream < len(widths):
            raise ValueError(f"{kind} stream {stream} does not exist ({len(widths)} {kind}s)")
        return widths[stream]

    @staticmethod
    def _check(reply, what):
        status = reply[0]
        if status != Status.OK:
            name = Status(status).name if status in Status._value2member_map_ else status
            raise LinkError(f"{what}: the bridge answered {name}")

    # --- requests ------------------------------------------------------------------

    def reg_write(self, addr, words):
        """Write 32-bit ``words`` to ``addr``, ``addr + 4``, ... (bulk)."""
        words = [int(w) for w in words]
        per = (MAX_PAYLOAD - 4) // 4
        for i in range(0, len(words), per):
            chunk = words[i:i + per]
            reply = self.transact(FrameType.REG_WRITE,
                                  struct.pack(f"<I{len(chunk)}I", addr + 4 * i, *chunk), 1)
            self._check(reply, f"register write at 0x{addr + 4 * i:x}")
            self._count("REG_WRITE", "payload", 4 * len(chunk))

    def reg_read(self, addr, count=1):
        """``count`` 32-bit words from ``addr``, ``addr + 4``, ..."""
        out = []
        per = max_read_words()
        for i in range(0, count, per):
            n = min(per, count - i)
            reply = self.transact(FrameType.REG_READ, struct.pack("<IH", addr + 4 * i, n),
                                  lambda p, n=n: len(p) in (1, 1 + 4 * n))
            self._check(reply, f"register read at 0x{addr + 4 * i:x}")
            self._count("REG_READ", "payload", 4 * n)
            out += struct.unpack(f"<{n}I", reply[1:])
        return out

    def stream_write_some(self, stream, beats):
        """One STREAM_WRITE of the first of ``beats`` (``(data bytes, last)``,
        data exactly the stream's width) to input ``stream``: as many as fit
        in a frame and in the bridge's buffer (its free room is remembered
        from the previous reply). Returns how many were written (0: full)."""
        nb = self._width(self.inputs, stream, "input")
        n = min(max_record_beats(nb), len(beats), self._free.get(stream, len(beats)))
        recs = bytearray()
        for data, last in beats[:n]:
            if len(data) != nb:
                raise ValueError(f"input stream {stream} takes {nb}-byte transfers, "
                                 f"not {len(data)}")
            recs += data
            recs.append(1 if last else 0)
        reply = self.transact(FrameType.STREAM_WRITE, struct.pack("<BH", stream, n) + recs, 3)
        self._free[stream] = struct.unpack_from("<H", reply, 1)[0]
        if reply[0] == Status.FULL:
            return 0
        self._check(reply, f"stream write to input {stream}")
        self._count("STREAM_WRITE", "payload", n * nb)
        return n

    def stream_write(self, stream, beats, *, wait=10.0):
        """Write all of ``beats`` (see :meth:`stream_write_some`), waiting up
        to ``wait`` seconds at a time for room (the accelerator has to drain
        the bridge's buffer) before raising :class:`LinkError`."""
        i = 0
        deadline = time.monotonic() + wait
        while i < len(beats):
            n = self.stream_write_some(stream, beats[i:])
            if n:
                i += n
                deadline = time.monotonic() + wait
            elif time.monotonic() > deadline:
                raise LinkError(f"input stream {stream}: no room in the bridge's buffer for "
                                f"{wait:g} s (is the accelerator consuming it?)")

    def stream_read(self, stream, max_beats, *, wait=False):
        """Up to ``max_beats`` transfers from output stream ``stream``: a list
        of ``(data bytes, last)``, possibly empty. ``wait``: the bridge first
        waits for output (:data:`~trilut.hw.link.STREAM_WAIT`)."""
        nb = self._width(self.outputs, stream, "output")
        rec = record_bytes(nb)
        max_beats = min(max_beats, max_record_beats(nb))
        head = struct.pack("<BH", stream | (STREAM_WAIT if wait else 0), max_beats)
        reply = self.transact(FrameType.STREAM_READ, head,
                              lambda p: (len(p) - 1) % rec == 0 and
                              (len(p) - 1) // rec <= max_beats)
        self._check(reply, f"stream read from output {stream}")
        body = reply[1:]
        self._count("STREAM_READ", "payload", len(body) // rec * nb)
        return [(body[k:k + nb], bool(body[k + nb] & 1)) for k in range(0, len(body), rec)]

    def mem_write(self, addr, data):
        """Write ``data`` (bytes) to the external memory from byte address
        ``addr`` in MEM_WRITE frames (no checks here: the bridge refuses
        an unaligned or out-of-range request with BAD_ADDRESS, raised as a
        :class:`LinkError`; :meth:`trilut.host.driver.Driver.write_memory`
        checks first)."""
        data = bytes(data)
        per = max_mem_write_bytes()
        for i in range(0, len(data), per):
            chunk = data[i:i + per]
            reply = self.transact(FrameType.MEM_WRITE, struct.pack("<I", addr + i) + chunk, 1)
            self._check(reply, f"memory write of {len(chunk)} bytes at 0x{addr + i:x}")
            self._count("MEM_WRITE", "payload", len(chunk))

    def mem_read(self, addr, n):
        """``n`` bytes of the external memory from byte address ``addr``, in
        MEM_READ frames (refusals as for :meth:`mem_write`)."""
        out = bytearray()
        per = max_mem_read_bytes()
        for i in range(0, n, per):
            k = min(per, n - i)
            reply = self.transact(FrameType.MEM_READ, struct.pack("<IH", addr + i, k),
                                  lambda p, k=k: len(p) in (1, 1 + k))
            self._check(reply, f"memory read of {k} bytes at 0x{addr + i:x}")
            self._count("MEM_READ", "payload", k)
            out += reply[1:]
        return bytes(out)

    def feed(self, frames, *, start=False, abort=False):
        """One FEED request: queue ``frames`` (``(byte address, bytes)``
        pairs, at most :func:`~trilut.hw.link.max_feed_frames`) for the
        weight feeder; ``start``: then start the accelerator; ``abort``: drop
        what the feeder holds first. Returns False when the feeder's queue
        has no room for all of them (nothing queued, nothing started), True
        otherwise; other refusals raise :class:`LinkError`."""
        frames = [(int(a), int(n)) for a, n in frames]
        if len(frames) > max_feed_frames():
            raise ValueError(f"{len(frames)} frames exceed a FEED's {max_feed_frames()}")
        flags = (FEED_START if start else 0) | (FEED_ABORT if abort else 0)
        payload = bytes([flags]) + b"".join(struct.pack("<II", a, n) for a, n in frames)
        reply = self.transact(FrameType.FEED, payload, 1)
        if reply[0] == Status.FULL:
            return False
        self._check(reply, f"feed of {len(frames)} weight frames")
        self._count("FEED", "payload", len(payload) - 1)
        return True
