"""cocotb drivers for Amaranth ``lib.stream`` ports in generated Verilog.

Amaranth flattens a stream member ``x`` of a component into the Verilog ports
``x__valid``, ``x__ready`` and ``x__payload``; payloads are packed and
unpacked with the component's own ``data.Layout``, so no bit position is
written twice. Every source inserts random idle gaps and every sink random
backpressure; both take a ``random.Random`` so a failing seed reproduces.
"""
import random

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["start_clock", "reset", "payload_layout", "pack", "unpack", "StreamSource", "StreamSink",
           "StreamTimeout", "record_handshakes", "pauses", "UnitBench"]


class StreamTimeout(AssertionError):
    pass


def payload_layout(component, name):
    """The payload shape of stream member ``name`` of ``component``."""
    return component.signature.members[name].signature.members["payload"].shape


def pack(layout, value):
    """Payload value (dict/list for a layout, int for a plain shape) -> the
    unsigned integer driven onto ``x__payload``. A value that does not fit
    its field raises ``ValueError`` instead of being silently truncated."""
    if isinstance(layout, data.Layout):
        _check_fits(layout, value, "payload")
        return layout.const(value).as_value().value
    _check_fits(layout, value, "payload")
    return int(value) & ((1 << Shape.cast(layout).width) - 1)


def _check_fits(layout, value, where):
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            if name in value:
                _check_fits(field.shape, value[name], f"{where}.{name}")
    elif isinstance(layout, data.ArrayLayout):
        for i, item in enumerate(value):
            _check_fits(layout.elem_shape, item, f"{where}[{i}]")
    elif not isinstance(layout, data.Layout):
        shape = Shape.cast(layout)
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        hi = (1 << (shape.width - (1 if shape.signed else 0))) - 1
        if not lo <= int(value) <= hi:
            raise ValueError(f"{where} = {int(value)} does not fit {shape}")


def unpack(layout, bits):
    """Unsigned integer read from ``x__payload`` -> a ``data.Const`` view of
    ``layout``, or a (signed where the shape is) int for a plain shape."""
    if isinstance(layout, data.Layout):
        return data.Const(layout, bits)
    shape = Shape.cast(layout)
    return bits - (1 << shape.width) if shape.signed and bits >> (shape.width - 1) else bits


class StreamSource:
    """Drives ``name__valid``/``name__payload``, honouring ``name__ready``.

    ``idle`` is the probability of an idle cycle before each beat; valid is
    never withdrawn once asserted (Amaranth stream rules)."""

    def __init__(self, dut, name, clock, layout, *, rng=None, idle=0.3):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clock, self.layout, self.name = clock, layout, name
        self.rng = rng or random.Random(0)
        self.idle = idle
        self.valid.value = 0
        self.first_accept = None     # sim time (ns) of the first accepted beat

    async def send(self, beats, *, timeout=100_000):
        for i, beat in enumerate(beats):
            while self.rng.random() < self.idle:
                await RisingEdge(self.clock)
            self.payload.value = pack(self.layout, beat)
            self.valid.value = 1
            waited = 0
            await RisingEdge(self.clock)
            while not self.ready.value:
                waited += 1
                if waited > timeout:
                    raise StreamTimeout(f"{self.name}: beat {i} not accepted in {timeout} cycles")
                await RisingEdge(self.clock)
            if self.first_accept is None:
                self.first_accept = get_sim_time("ns")
            self.valid.value = 0


class StreamSink:
    """Collects beats from ``name__valid``/``name__payload``; ``stall`` is the
    probability that ``name__ready`` is low in a cycle."""

    def __init__(self, dut, name, clock, layout, *, rng=None, stall=0.3):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clock, self.layout, self.name = clock, layout, name
        self.rng = rng or random.Random(1)
        self.stall = stall
        self.ready.value = 0

    async def receive(self, count, *, timeout=100_000):
        beats, idle = [], 0
        while len(beats) < count:
            ready = int(self.rng.random() >= self.stall)
            self.ready.value = ready
            await RisingEdge(self.clock)
            if ready and self.valid.value:
                beats.append(unpack(self.layout, self.payload.value.to_unsigned()))
                idle = 0
            else:
                idle += 1
                if idle > timeout:
                    raise StreamTimeout(f"{self.name}: got {len(beats)} of {count} beats, "
                                        f"then nothing for {timeout} cycles")
        self.ready.value = 0
        return beats


def record_handshakes(dut, names, period_ns):
    """Start a monitor that records, for each stream in ``names`` (ports
    ``<name>__valid`` / ``<name>__ready``), the cycle number of every
    accepted beat; returns ``{name: list}`` (lists appended in place, so
    callers may keep and clear them)."""
    times = {name: [] for name in names}
    ports = [(getattr(dut, f"{n}__valid"), getattr(dut, f"{n}__ready"), times[n])
             for n in names]

    async def monitor():
        while True:
            await RisingEdge(dut.clk)
            now = int(get_sim_time("ns")) // period_ns
            for valid, ready, log in ports:
                if valid.value == 1 and ready.value == 1:
                    log.append(now)
    cocotb.start_soon(monitor())
    return times


def pauses(rng, p):
    """Endless random pause bits (1 with probability ``p``) for a
    cocotbext-axi channel's ``set_pause_generator``: idle gaps on a source,
    backpressure on a sink; ``p`` = 1 stops the channel for good."""
    while True:
        yield int(rng.random() < p)


def start_clock(dut, period_ns=10):
    """Start ``dut.clk`` (Amaranth's default clock port)."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles=3):
    """Hold ``dut.rst`` (Amaranth's default reset) for ``cycles`` clock cycles."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class UnitBench:
    """What every unit testbench sets up from the runner's config (``TRILUT_TB``).

    ``unit`` is ``cls(**config["params"])``; ``seed`` (default 1) seeds
    ``rng`` (``random.Random``, for gaps and stalls) and ``np_rng`` (numpy,
    for stimulus); ``broken`` is the requested wrong-model mode or None, and
    must be one of ``breaks``.
    """

    def __init__(self, dut, cls, config, breaks):
        self.dut = dut
        self.unit = cls(**config["params"])
        self.seed = config.get("seed", 1)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.broken = config.get("break") or None
        if self.broken is not None and self.broken not in breaks:
            raise ValueError(f"unknown break mode {self.broken!r}")
