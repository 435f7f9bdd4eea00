# amaranth: UnusedElaboratable=no
"""Devices: where the link's bytes go.

One interface, :class:`Device` (``open``/``close``, ``write(bytes)``,
``read(timeout) -> bytes``), with two backends and no mock:

* :class:`SimDevice`: the generated RTL of
  :class:`~trilut.hw.bridge.ByteAccelerator` compiled by Verilator with the
  C++ harness of :mod:`trilut.sim.harness`, talking over pipes. The harness
  clocks the design freely and blocks only when the design is quiet and no
  host byte is pending; :attr:`SimDevice.cycles` is the simulated cycle
  count (exact after :meth:`SimDevice.sync`). By default a link byte moves
  every cycle; with ``clk_hz`` and ``baud`` the harness moves them at a
  board's UART rate (``baud / 10`` bytes per second each way), so cycle
  counts are what the board's link allows. :meth:`SimDevice.pause_after`
  stops the clock at a chosen cycle and :meth:`SimDevice.hard_reset`
  pulses the design's reset pin (the reliability campaign's reset trials).
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

__all__ = ["Device", "SimDevice", "SerialDevice", "UartSim", "build_baud"]


class Device:
    """A byte pipe to a bridged accelerator. ``byte_time``: seconds per byte
    on the wire (the link stretches its timeouts by it); ``cycles``: the
    simulated cycle count where there is one, else None."""

    byte_time = 0.0
    cycles = None
    #: Bytes of external memory behind the bridge (MEM_WRITE / MEM_READ); 0: none.
    memory_bytes = 0

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


#: Simulated cycles per second assumed when stretching the link's timeouts
#: for a throttled SimDevice (the harness runs 250-350k on this machine).
_SIM_MIN_CYCLES_PER_S = 50_000


class SimDevice(Device):
    """Verilator simulation of a :class:`~trilut.hw.bridge.ByteAccelerator`
    built from ``accel`` (an Accelerator or its parameter dict); ``timeout``
    is the bridge's inter-byte timeout in cycles (default 4096, or 4 byte
    times if that is longer). ``clk_hz`` and ``baud`` (both or neither):
    throttle the link to a board's UART, :attr:`cycles_per_byte` =
    ``10 * clk_hz / baud`` cycles per byte each way (:meth:`set_link`
    changes it between requests). ``sdram``: put the
    ULX3S SDRAM (LiteDRAM's controller and SDRAM model, 32 MB) behind the
    bridge (see :class:`~trilut.hw.bridge.ByteAccelerator`); then
    :attr:`memory_bytes` says its size. The executable is built
    on first use and cached (:func:`trilut.sim.harness.build_harness`)."""

    def __init__(self, accel=None, *, timeout=None, clk_hz=None, baud=None, sdram=False):
        from ..hw.bridge import ByteAccelerator
        self._proc = None
        self.bridge_timeout = None
        self._rate(clk_hz, baud)
        if timeout is None:
            timeout = max(4096, 1 << (4 * int(self.cycles_per_byte)).bit_length())
        self.bridge_timeout = timeout
        self.top = ByteAccelerator(timeout=timeout, sdram=sdram, **_accel_params(accel))
        self.accel = self.top.accel
        self.memory_bytes = self.top.bridge.memory_bytes
        self._buf = bytearray()
        self._events = []               # ('B' or 'R', LEDS byte) reports of the harness
        self.cycles = 0

    def _rate(self, clk_hz, baud):
        from ..golden.checks import check_int
        if (clk_hz is None) != (baud is None):
            raise ValueError("give both clk_hz and baud (a board's link) or neither")
        if clk_hz is not None:
            check_int("clk_hz", clk_hz, 1)
            check_int("baud", baud, 1)
            if baud > clk_hz * 10:
                raise ValueError(f"baud {baud} exceeds a byte per cycle at clk_hz {clk_hz}")
        cycles_per_byte = 1.0 if baud is None else 10 * clk_hz / baud
        if self.bridge_timeout is not None and 4 * cycles_per_byte > self.bridge_timeout:
            raise ValueError(f"{cycles_per_byte:g} cycles per byte: the bridge's "
                             f"inter-byte timeout of this build is {self.bridge_timeout} "
                             f"cycles (4 byte times needed); give the rate when the "
                             f"SimDevice is made")
        self.clk_hz, self.baud, self.cycles_per_byte = clk_hz, baud, cycles_per_byte
        self.byte_time = cycles_per_byte / _SIM_MIN_CYCLES_PER_S if baud else 0.0

    def set_link(self, clk_hz=None, baud=None):
        """Change the simulated link's rate between requests (for example
        after loading weights at a byte per cycle): ``clk_hz`` and ``baud``
        a board's UART as in the constructor, neither a byte per cycle. The
        harness applies it from its next message on; the build (its
        bridge's inter-byte timeout) stays, so a rate slower than the
        timeout allows is refused."""
        self._rate(clk_hz, baud)
        if self._proc is not None:
            num, den = (0, 1) if baud is None else (baud, 10 * clk_hz)
            self._send(b"T", struct.pack("<QQ", num, den))

    @property
    def bytes_per_s(self):
        """The simulated link's bytes per second each way (None: one per
        cycle, no clock given)."""
        return None if self.baud is None else self.baud / 10

    def open(self):
        if self._proc is None:
            from ..sim.harness import build_harness
            exe = build_harness(self.top)
            throttle = [] if self.baud is None else [str(self.baud), str(10 * self.clk_hz)]
            self._proc = subprocess.Popen([str(exe), *throttle], stdin=subprocess.PIPE,
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
        while len(self._buf) >= 13:        # kind, u64 cycles, u32 length, bytes
            n = struct.unpack_from("<I", self._buf, 9)[0]
            if len(self._buf) < 13 + n:
                return
            self.cycles = struct.unpack_from("<Q", self._buf, 1)[0]
            kind, data = chr(self._buf[0]), bytes(self._buf[13:13 + n])
            del self._buf[:13 + n]
            if kind == "D":
                yield data
            else:                           # 'B' / 'R': the LEDS byte
                self._events.append((kind, data[0]))

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

    def _event(self, kind, timeout):
        """Wait for the harness's ``kind`` report; link bytes meanwhile are
        dropped (call between requests)."""
        deadline = time.monotonic() + timeout
        while True:
            for _ in self._messages():
                pass
            for i, (k, leds) in enumerate(self._events):
                if k == kind:
                    del self._events[:i + 1]
                    return leds
            if time.monotonic() > deadline:
                raise LinkError(f"no {kind!r} report from the simulator")
            self._pump(deadline - time.monotonic())

    def pause_after(self, cycles, timeout=10.0):
        """Let the design run ``cycles`` more cycles (quiet or not), then
        hold its clock until the next write (or :meth:`hard_reset`, or
        :meth:`sync`); returns the design's ``leds`` byte at that cycle (bits
        :data:`~trilut.hw.bridge.LEDS`). Call it only between requests."""
        if isinstance(cycles, bool) or not isinstance(cycles, int) or not 0 <= cycles < 1 << 32:
            raise ValueError(f"cycles must be an integer in [0, 2**32), not {cycles!r}")
        self._send(b"B", struct.pack("<I", cycles))
        return self._event("B", timeout)

    def hard_reset(self, timeout=10.0):
        """Pulse the design's reset pin now: every register back to its
        reset value (memories keep their contents), the link bytes in flight
        both ways lost, then the power-on reset's cycles. Returns the
        ``leds`` byte just before the reset. Call it only between requests;
        :meth:`trilut.host.driver.Driver.hard_reset` reconnects the host."""
        self._send(b"R")
        return self._event("R", timeout)


def build_baud(build_dir):
    """The UART rate of a board build: ``baud`` in ``build_dir/report.json``
    (written by ``trilut build``; the bitstream's UART runs at exactly it)."""
    import json
    from pathlib import Path
    path = Path(build_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the output directory of trilut build")
    baud = json.loads(path.read_text()).get("baud")
    if not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"{path} names no UART rate (baud: {baud!r}); rebuild with trilut build")
    return baud


class SerialDevice(Device):
    """A serial port (pyserial): ``port`` (e.g. ``/dev/ttyUSB0``), 8N1, no
    flow control, at the rate of the board build in directory ``build``
    (:func:`build_baud`: what ``trilut build`` wrote into its report.json),
    or at ``baud`` (which must then agree with ``build`` if both are given).
    A UART at another rate than the bitstream's only receives garbage, so
    the rate is never guessed."""

    def __init__(self, port, baud=None, *, build=None):
        if build is not None:
            built = build_baud(build)
            if baud is not None and baud != built:
                raise ValueError(f"baud {baud} differs from the build's {built} "
                                 f"({build}/report.json)")
            baud = built
        if baud is None:
            raise ValueError("SerialDevice needs the link rate: build=DIR (trilut build's output "
                             "directory, whose report.json names it) or baud=N")
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
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
    :attr:`port` is the slave's path, for :class:`SerialDevice`
    (:meth:`serial_device`). Use as a context manager."""

    def __init__(self, accel=None, *, clk_hz=1_000_000, baud=125_000, timeout=None):
        from ..hw.bridge import UartAccelerator
        self.top = UartAccelerator(clk_hz, baud, timeout=timeout, **_accel_params(accel))
        self.accel = self.top.accel
        self.baud = baud
        self._proc = None

    def serial_device(self):
        """A :class:`SerialDevice` on :attr:`port` at the simulated rate whose
        timeouts allow for the simulation's speed (a byte takes ``10 *
        divisor`` simulated cycles, far longer in wall time than on a board)."""
        dev = SerialDevice(self.port, self.baud)
        dev.byte_time = 10 * self.top.divisor / _SIM_MIN_CYCLES_PER_S
        return dev

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
