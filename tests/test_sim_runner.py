"""trilut.sim.runner.shared_runtime: Verilator's runtime objects compiled once
per set of flags and copied into later builds (a fake build directory: the
real builds use it in every simulation test)."""
import time

import pytest

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
