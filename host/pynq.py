"""The KV260 under PYNQ: a device for :class:`~trilut.host.driver.Driver`.

:class:`PynqDevice` loads the ``trilut build --board kv260`` design's
bitstream with ``pynq.Overlay``, reaches the registers of
:class:`~trilut.hw.kv260.Kv260Top` (one AXI4-Lite map,
:class:`~trilut.hw.kv260.Kv260Map`) through ``pynq.MMIO``, keeps the
weights in a ``pynq.allocate`` buffer in DDR that the top reads through
``S_AXI_HP0_FPD``, and moves rows through the block design's AXI DMA
(``pynq.lib.dma.DMA``: MM2S into ``s_axis``, S2MM from ``m_axis``).
The driver talks to it through :class:`PynqLink`, which has the methods of
:class:`~trilut.host.protocol.Link` the driver uses, so the same
``Driver.load_weights`` / ``Driver.run(program, x, weights=layout)`` run on
the board.

``pynq`` is an optional extra (``pip install trilut[kv260]``, on the board).
Tests pass a stand-in module with the same surface (``Overlay``, ``MMIO``,
``allocate``) that maps them onto the Verilator model (``sim/tb_kv260.py``).
"""
import time

import numpy as np
from amaranth.lib import data

from ..hw.isa import CTRL, ErrorCode
from ..hw.kv260 import HP0_DATA_BITS, MEMCTRL, MEMSTATUS, Kv260Map
from ..hw.link import MAX_PAYLOAD
from .protocol import LinkError

__all__ = ["PynqDevice", "PynqLink", "MemoryPortError", "DEFAULT_IP", "DEFAULT_DMA"]

#: Names of the top and the DMA in the block design (INTEGRATION.md).
DEFAULT_IP = "trilut_kv260_0"
DEFAULT_DMA = "axi_dma_0"
#: The AXI DMA's S2MM_LENGTH register (PG021): after a simple-mode receive,
#: the bytes actually received (the transfer ends at ``tlast``).
S2MM_LENGTH = 0x58


class MemoryPortError(LinkError):
    """The top's memory port stopped with an error (``code``: the
    :class:`~trilut.hw.isa.ErrorCode` ``MEM_*`` of MEMSTATUS)."""

    def __init__(self, code, what):
        self.code = code
        name = code.name if isinstance(code, ErrorCode) else code
        super().__init__(f"{what}: the memory port stopped with {name}")


def _import_pynq():
    try:
        import pynq
    except ImportError:
        raise ImportError("the KV260 device needs PYNQ: pip install trilut[kv260] "
                          "(on the board's PYNQ image it is installed)") from None
    return pynq


class PynqDevice:
    """A KV260 running ``bitfile`` (the kv260 package's design).

    ``memory_bytes``: the DDR buffer for weights (``pynq.allocate``, default
    16 MB), which the driver addresses from 0 (:meth:`Driver.load_weights
    <trilut.host.driver.Driver.load_weights>`); ``ip`` / ``dma``: the block
    design's instance names; ``data_bits``: the top's HP0 width (the build's
    ``report.json`` ``mem_port.data_bits``); ``pynq``: the module to use (default: ``import
    pynq``; tests give a simulation stand-in); ``poll``: seconds a waiting
    read polls the DMA before returning empty."""

    def __init__(self, bitfile, *, memory_bytes=16 << 20, ip=DEFAULT_IP, dma=DEFAULT_DMA,
                 data_bits=HP0_DATA_BITS, pynq=None, poll=0.01):
        if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) \
                or memory_bytes < 4096:
            raise ValueError(f"memory_bytes must be an integer >= 4096, not {memory_bytes!r}")
        if data_bits not in (32, 64, 128):
            raise ValueError(f"data_bits must be 32, 64 or 128 (S_AXI_HP0_FPD), not {data_bits!r}")
        self.pynq = _import_pynq() if pynq is None else pynq
        self.overlay = self.pynq.Overlay(bitfile)
        if ip not in self.overlay.ip_dict:
            raise ValueError(f"the overlay has no IP {ip!r} (it has "
                             f"{', '.join(sorted(self.overlay.ip_dict))})")
        info = self.overlay.ip_dict[ip]
        self.mmio = self.pynq.MMIO(info["phys_addr"], info["addr_range"])
        if not hasattr(self.overlay, dma):
            raise ValueError(f"the overlay has no DMA {dma!r} (INTEGRATION.md: axi_dma_0)")
        self.dma = getattr(self.overlay, dma)
        self.memory_bytes = memory_bytes
        self.beat_bytes = data_bits // 8
        self.weights = self.pynq.allocate(shape=(memory_bytes,), dtype=np.uint8)
        self.poll = poll

    def open(self):
        return self

    def close(self):
        if hasattr(self.weights, "freebuffer"):
            self.weights.freebuffer()

    def make_link(self, accel, inputs, outputs, *, timeout=2.0, **_):
        """The driver's link (``inputs`` / ``outputs``: bytes per transfer of
        the accelerator's streams, :func:`trilut.hw.bridge.stream_ports`)."""
        return PynqLink(self, accel, inputs, outputs, timeout=timeout)


class PynqLink:
    """What :class:`~trilut.host.driver.Driver` needs of a link, over MMIO,
    the weight buffer and the DMA. Stream 0 in is ``s_axis`` (a DMA
    transfer per :meth:`stream_write_some`); ``s_axis_wgt`` is fed from DDR
    only (:meth:`feed`); stream 0 out is ``m_axis`` (a DMA receive per row:
    the S2MM transfer ends at ``tlast``)."""

    def __init__(self, device, accel, inputs, outputs, *, timeout=2.0):
        self.device, self.accel = device, accel
        self.map = Kv260Map(accel.regs)
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.timeout = timeout
        self._nb = accel.axis_bytes
        self._send = device.pynq.allocate(shape=(MAX_PAYLOAD * self._nb,), dtype=np.uint8)
        row = -(-2 * max(accel.max_width, 1) // self._nb) * self._nb
        self._recv = device.pynq.allocate(shape=(row,), dtype=np.uint8)
        self._receiving = False

    # --- registers -----------------------------------------------------------------

    def reg_write(self, addr, words):
        for i, w in enumerate(words):
            self.device.mmio.write(addr + 4 * i, int(w))

    def reg_read(self, addr, count=1):
        return [int(self.device.mmio.read(addr + 4 * i)) for i in range(count)]

    def mem_status(self):
        """MEMSTATUS as a dict (busy, feeding, error, code, free)."""
        st = data.Const(MEMSTATUS, self.reg_read(self.map.offset("memstatus"))[0])
        code = int(st.code)
        return {"busy": bool(st.busy), "feeding": bool(st.feeding), "error": bool(st.error),
                "code": ErrorCode(code) if code in ErrorCode._value2member_map_ else code,
                "free": int(st.free)}

    def _check_memory(self, what):
        st = self.mem_status()
        if st["error"]:
            raise MemoryPortError(st["code"], what)
        return st

    # --- streams -------------------------------------------------------------------

    def stream_write_some(self, stream, beats):
        """Start one DMA transfer of ``beats`` (``(bytes, last)``; the
        accelerator counts a LOAD's transfers itself, so the DMA's ``tlast``
        at the end of the transfer does no harm); 0 while the previous one
        is still running."""
        if stream != 0:
            raise LinkError("the KV260 top reads s_axis_wgt from DDR: load_weights(program), "
                            "then run(program, x, weights=layout)")
        self._check_memory("stream write")
        ch = self.device.dma.sendchannel
        if not ch.idle:
            return 0
        beats = beats[:MAX_PAYLOAD]
        raw = b"".join(d for d, _ in beats)
        if any(len(d) != self._nb for d, _ in beats):
            raise ValueError(f"input stream 0 takes {self._nb}-byte transfers")
        self._send[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self._send.flush()
        ch.transfer(self._send, nbytes=len(raw))
        return len(beats)

    def stream_write(self, stream, beats, *, wait=10.0):
        i, deadline = 0, time.monotonic() + wait
        while i < len(beats):
            n = self.stream_write_some(stream, beats[i:])
            if n:
                i, deadline = i + n, time.monotonic() + wait
            elif time.monotonic() > deadline:
                raise LinkError(f"input stream {stream}: the DMA did not finish in {wait:g} s")

    def stream_read(self, stream, max_beats, *, wait=False):
        """The transfers of the next row from ``m_axis`` (a list of ``(bytes,
        last)``), or ``[]`` if it has not arrived (``wait``: after polling
        for the device's ``poll`` seconds)."""
        if stream != 0:
            raise ValueError(f"output stream {stream} does not exist (1 output)")
        self._check_memory("stream read")
        ch = self.device.dma.recvchannel
        if not self._receiving:
            ch.transfer(self._recv)
            self._receiving = True
        deadline = time.monotonic() + (self.device.poll if wait else 0)
        while not ch.idle:
            if time.monotonic() >= deadline:
                return []
        self._receiving = False
        n = int(self.device.dma.mmio.read(S2MM_LENGTH))
        self._recv.invalidate()
        raw = bytes(self._recv[:n])
        nb = self._nb
        return [(raw[k:k + nb], k + nb >= n) for k in range(0, n, nb)]

    # --- weights in DDR --------------------------------------------------------------

    def _span(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.device.memory_bytes:
            raise LinkError(f"memory bytes {addr:#x}..{addr + n - 1:#x} are outside the "
                            f"{self.device.memory_bytes}-byte weight buffer")

    def mem_write(self, addr, data):
        data = bytes(data)
        self._span(addr, len(data))
        self.device.weights[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.device.weights.flush()

    def mem_read(self, addr, n):
        self._span(addr, n)
        self.device.weights.invalidate()
        return bytes(self.device.weights[addr:addr + n])

    def _abort(self):
        """Drop what the feeder holds; clear an error once the port is idle."""
        self.reg_write(self.map.offset("memctrl"), [MEMCTRL.const({"abort": 1}).as_value().value])
        deadline = time.monotonic() + self.timeout
        while True:
            st = self.mem_status()
            if st["error"] and not st["busy"]:
                self.reg_write(self.map.offset("memctrl"),
                               [MEMCTRL.const({"reset": 1}).as_value().value])
                return
            if not st["feeding"]:
                return
            if time.monotonic() > deadline:
                if st["error"]:         # bursts that never return (MEM_TIMEOUT): feed raises
                    return
                raise LinkError(f"the weight feeder is still busy {self.timeout:g} s after an "
                                f"abort: {st}")

    def feed(self, frames, *, start=False, abort=False):
        """Queue weight ``frames`` (``(address in the weight buffer, bytes)``)
        for the feeder; ``start``: then start the accelerator; ``abort``: drop
        what the feeder holds first (and clear a memory error if no burst is
        in flight). False when the queue has no room for all of them (nothing
        queued); :class:`MemoryPortError` if the port has stopped."""
        if abort:
            self._abort()
        if not frames and not start:
            return True
        st = self._check_memory("feed")
        frames = [(int(a), int(n)) for a, n in frames]
        if len(frames) > st["free"]:
            return False
        beat = self.device.beat_bytes
        for a, n in frames:
            self._span(a, n)
            if a % beat or n <= 0 or n % self._nb:
                raise ValueError(f"feed frame ({a:#x}, {n}): the address must be a multiple "
                                 f"of {beat} bytes and the length a positive multiple of "
                                 f"{self._nb}")
        base = self.device.weights.physical_address
        for a, n in frames:
            phys = base + a
            for name, word in (("feed_addr_lo", phys & 0xFFFFFFFF), ("feed_addr_hi", phys >> 32),
                               ("feed_len", n)):      # FEED_LEN last: it queues the frame
                self.reg_write(self.map.offset(name), [word])
        if frames:
            self._check_memory(f"feed of {len(frames)} frames")
        if start:
            self.reg_write(self.map.offset("ctrl"), [CTRL.const({"start": 1}).as_value().value])
        return True
