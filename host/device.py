# amaranth: UnusedElaboratable=no
"""Devices: where the link's bytes go.

One interface, :class:`Device` (``open``/``close``, ``write(bytes)``,
``read(timeout) -> bytes``), with two backends and no mock:

* :class:`SimDevice`: the generated RTL of
  :class:`~trilut.hw.bridge.ByteAccelerator` compiled by Verilator with the
  C++ harness of :mod:`trilut.sim.harness`, talking over pipes. The harness
  clocks the design freely and blocks only when the design is quiet and no
  host byte is pending; :attr:`SimDevice.cycles` is the simulated cycle
  count (exact after :meth:`SimDevice.sync`).
* :class:`SerialDevice`: a serial port (pyserial) to a board's UART, or to
  :class:`UartSim`, which serves the pin-level simulation of
  :class:`~trilut.hw.bridge.UartAccelerator` on a pseudo-terminal (the
  harness bit-bangs ``uart_rx`` and samples ``uart_tx``).

The protocol (framing, retries) lives in :mod:`trilut.host.protocol`.
"""
import os
import select
import struct
import subprocess
import time

from .protocol import LinkError

__all__ = ["Device", "SimDevice", "SerialDevice", "UartSim"]


class Device:
    """A byte pipe to a bridged accelerator. ``byte_time``: seconds per byte
    on the wire (the link stretches its timeouts by it); ``cycles``: the
    simulated cycle count where there is one, else None."""

    byte_time = 0.0
    cycles = None

    def open(self):
        return self

    def close(self):
        pass

    def write(self, data):
        raise NotImplementedError

    def read(self, timeout):
        """Bytes received within ``timeout`` seconds (at least one byte, or
        ``b""`` when none came)."""
        raise NotImplementedError

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


def _accel_params(accel):
    from ..hw.top import Accelerator
    return dict(accel.params if isinstance(accel, Accelerator) else accel or {})


class SimDevice(Device):
    """Verilator simulation of a :class:`~trilut.hw.bridge.ByteAccelerator`
    built from ``accel`` (an Accelerator or its parameter dict); ``timeout``
    is the bridge's inter-byte timeout in cycles. The executable is built on
    first use and cached (:func:`trilut.sim.harness.build_harness`)."""

    def __init__(self, accel=None, *, timeout=4096):
        from ..hw.bridge import ByteAccelerator
        self.top = ByteAccelerator(timeout=timeout, **_accel_params(accel))
        self.accel = self.top.accel
        self._proc = None
        self._buf = bytearray()
        self.cycles = 0

    def open(self):
        if self._proc is None:
            from ..sim.harness import build_harness
            exe = build_harness(self.top)
            self._proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, bufsize=0)
        return self

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.write(b"Q" + bytes(4))
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def _send(self, cmd, data=b""):
        if self._proc is None:
            raise LinkError("SimDevice is not open")
        try:
            self._proc.stdin.write(cmd + struct.pack("<I", len(data)) + data)
        except OSError as e:
            raise LinkError(f"the simulator exited ({self._proc.poll()}): {e}") from None

    def write(self, data):
        self._send(b"D", bytes(data))

    def _pump(self, timeout):
        """Read what the harness sent within ``timeout`` s into the buffer."""
        fd = self._proc.stdout.fileno()
        if select.select([fd], [], [], max(timeout, 0))[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise LinkError(f"the simulator exited (code {self._proc.wait()})")
            self._buf += chunk

    def _messages(self):
        """Complete harness messages in the buffer: yields their link bytes
        (b"" for a cycle report) and updates :attr:`cycles`."""
        while len(self._buf) >= 13:        # 'D', u64 cycles, u32 length, bytes
            n = struct.unpack_from("<I", self._buf, 9)[0]
            if len(self._buf) < 13 + n:
                return
            self.cycles = struct.unpack_from("<Q", self._buf, 1)[0]
            data = bytes(self._buf[13:13 + n])
            del self._buf[:13 + n]
            yield data

    def read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            out = b"".join(self._messages())
            if out:
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            self._pump(left)

    def sync(self, timeout=10.0):
        """Ask the harness for its cycle count and wait for the report, so
        that :attr:`cycles` is exact. Call it only between requests (link
        bytes arriving meanwhile would be dropped)."""
        self._send(b"C")
        deadline = time.monotonic() + timeout
        while True:
            for data in self._messages():
                if not data:
                    return self.cycles
            if time.monotonic() > deadline:
                raise LinkError("no cycle report from the simulator")
            self._pump(deadline - time.monotonic())


class SerialDevice(Device):
    """A serial port (pyserial): ``port`` (e.g. ``/dev/ttyUSB0``) at ``baud``
    8N1, no flow control."""

    def __init__(self, port, baud=115200):
        self.port, self.baud = port, baud
        self.byte_time = 10.0 / baud
        self._ser = None

    def open(self):
        if self._ser is None:
            import serial
            self._ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=10)
        return self

    def close(self):
        ser, self._ser = self._ser, None
        if ser is not None:
            ser.close()

    def write(self, data):
        self._ser.write(bytes(data))
        self._ser.flush()

    def read(self, timeout):
        ser = self._ser
        ser.timeout = max(timeout, 0)
        first = ser.read(1)
        if not first:
            return b""
        ser.timeout = 0
        return first + ser.read(ser.in_waiting or 0)


class UartSim:
    """Pin-level simulation served on a pseudo-terminal: the Verilator harness
    (pin mode) drives ``uart_rx`` and samples ``uart_tx`` of a
    :class:`~trilut.hw.bridge.UartAccelerator` (``clk_hz``, ``baud``,
    ``accel``) and exchanges the bytes with the pty's master side.
    :attr:`port` is the slave's path, for :class:`SerialDevice`. Use as a
    context manager."""

    def __init__(self, accel=None, *, clk_hz=1_000_000, baud=125_000, timeout=None):
        from ..hw.bridge import UartAccelerator
        self.top = UartAccelerator(clk_hz, baud, timeout=timeout, **_accel_params(accel))
        self.accel = self.top.accel
        self.baud = baud
        self._proc = None

    def open(self):
        import tty
        from ..sim.harness import build_harness
        exe = build_harness(self.top)
        master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._proc = subprocess.Popen([str(exe), str(self.top.divisor), str(master)],
                                      pass_fds=(master,))
        os.close(master)
        return self

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        os.close(self._slave)     # the harness sees the pty hang up and exits
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
