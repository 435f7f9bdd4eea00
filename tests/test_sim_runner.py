"""trilut.sim.runner.shared_runtime: Verilator's runtime objects compiled once
per set of flags and copied into later builds (a fake build directory: the
real builds use it in every simulation test); compact_memory_init on
Amaranth's Verilog."""
import re
import time

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import trilut.sim.runner as runner

CLASSES = """# Verilated -*- Makefile -*-
VM_GLOBAL_FAST += \\
  verilated \\
  verilated_threads \\

VM_GLOBAL_SLOW += \\

"""
GLOBAL = ["verilated.o", "verilated.d", "verilated_threads.o", "verilated_threads.d"]
OWN = ["Vtop__ALL.o", "verilator.o", "harness.o"]      # the design's: never shared


def _fake_build(obj):
    (obj / "Vtop_classes.mk").write_text(CLASSES)
    for name in GLOBAL + OWN:
        (obj / name).write_bytes(name.encode())


def test_runtime_objects_are_kept_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BUILD_ROOT", tmp_path)
    with runner.shared_runtime(tmp_path / "a", ["cocotb", "-O3"]):
        _fake_build(tmp_path / "a")
    (cache,) = (tmp_path / "runtime").iterdir()
    assert sorted(f.name for f in cache.iterdir()) == sorted(GLOBAL)

    with runner.shared_runtime(tmp_path / "b", ["cocotb", "-O3"]):
        copied = sorted(f.name for f in (tmp_path / "b").iterdir())
    assert copied == sorted(GLOBAL)
    assert (tmp_path / "b" / "verilated.o").read_bytes() == b"verilated.o"
    # dated ahead of the Vtop.mk Verilator writes next, so make keeps them
    assert (tmp_path / "b" / "verilated.o").stat().st_mtime > time.time() + 3600

    with runner.shared_runtime(tmp_path / "c", ["cocotb", "-O3", "-CFLAGS", "-DX"]):
        assert not any((tmp_path / "c").iterdir())      # other flags: nothing shared


def test_failed_build_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BUILD_ROOT", tmp_path)
    with pytest.raises(RuntimeError):
        with runner.shared_runtime(tmp_path / "a", ["harness"]):
            _fake_build(tmp_path / "a")
            (tmp_path / "a" / "verilated_threads.o").unlink()
            raise RuntimeError("the build failed")
    assert not (tmp_path / "runtime").exists()
    with runner.shared_runtime(tmp_path / "b", ["harness"]):     # incomplete: not kept
        _fake_build(tmp_path / "b")
        (tmp_path / "b" / "verilated_threads.d").unlink()
    assert not (tmp_path / "runtime").exists()


def test_cocotb_builds_make_only_the_top_public(tmp_path, monkeypatch):
    """cocotb's runner asks for ``--public-flat-rw`` (every signal of every
    module VPI-visible); ours passes ``runner.PUBLIC_ARGS`` instead."""
    runner._verilator_on_path()
    sim = runner._runner()
    commands = []
    monkeypatch.setattr(sim, "_execute", lambda cmds, cwd: commands.extend(cmds))
    src = tmp_path / "t.v"
    src.write_text("module t(input a, output b); assign b = a; endmodule\n")
    sim.build(sources=[src], hdl_toplevel="t", build_dir=tmp_path / "b",
              build_args=runner.VERILATOR_ARGS)
    verilator = commands[0]
    assert "--public-flat-rw" not in verilator
    i = verilator.index(runner.PUBLIC_ARGS[0])
    assert verilator[i:i + len(runner.PUBLIC_ARGS)] == runner.PUBLIC_ARGS


class _Mems(wiring.Component):
    """Two memories read at one address: ``zeros`` (all zero) and ``table``."""
    addr: In(4)
    data: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.submodules.zeros = zeros = Memory(shape=8, depth=16, init=[])
        m.submodules.table = table = Memory(shape=8, depth=16, init=[0] * 15 + [7])
        a, b = zeros.read_port(domain="comb"), table.read_port(domain="comb")
        m.d.comb += [a.addr.eq(self.addr), b.addr.eq(self.addr), self.data.eq(a.data | b.data << 8)]
        return m


def test_zero_memories_become_loops_and_others_stay():
    text = runner.generate_verilog(_Mems(), "mems")
    compact = runner.compact_memory_init(text)
    entries = re.compile(r"^    .+\[\d+\] = \d+'h", re.M)
    assert len(entries.findall(text)) == 32
    # The all-zero memory is now a loop over its 16 entries; the table keeps
    # its 16 lines, the 7 among them.
    assert len(entries.findall(compact)) == 16 and "\\table [15] = 8'h07;" in compact
    assert re.search(r"for \(i = 0; i < 16; i = i \+ 1\) zeros\[i\] = 8'h0;", compact)
    assert runner.compact_memory_init(compact) == compact
