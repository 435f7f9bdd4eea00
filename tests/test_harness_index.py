# amaranth: UnusedElaboratable=no
"""The harness build index (sim/harness): a later process finds the build
of a design by a key of its parameters and sources without generating the
Verilog; a changed harness source, another configuration or a missing
executable is not taken for it. The CPU-rate tool (sim/harness/cpurate.py)
reads CPU time and refuses a command without a simulated decoder."""
import time

import pytest

import trilut.sim.harness as harness
from trilut.hw.bridge import ByteAccelerator

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

SMALL = dict(group=3, tables=1, lanes=2, encoding="folded", banks=1, max_rows=8, max_width=16,
             prog_depth=8, const_sets=1, attn_lanes=2, attn_kpc=2)


class Built(Exception):
    """_build_harness was called (the Verilog would be generated)."""


@pytest.fixture
def index(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(harness, "_BUILT", {})

    def build(top):
        raise Built
    monkeypatch.setattr(harness, "_build_harness", build)
    top = ByteAccelerator(**SMALL)
    memo = (type(top).__name__, tuple(sorted(top.accel.params.items())), top.bridge.timeout,
            None, None)
    exe = tmp_path / "harness" / "bridged-x" / "harness"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    (exe.parent / "harness.sha256").write_text(harness._source_key())
    entry = tmp_path / "harness" / "index" / harness._design_key(memo, None)
    entry.parent.mkdir(parents=True)
    entry.write_text(str(exe))
    return top, exe


def test_indexed_build_is_found_without_verilog(index):
    top, exe = index
    assert harness.build_harness(top) == exe


def test_stale_or_other_builds_are_not_taken(index):
    top, exe = index
    with pytest.raises(Built):                       # another configuration
        harness.build_harness(ByteAccelerator(**dict(SMALL, max_rows=9)))
    (exe.parent / "harness.sha256").write_text("old harness.cpp")
    with pytest.raises(Built):                       # the harness source changed
        harness.build_harness(top)
    (exe.parent / "harness.sha256").write_text(harness._source_key())
    exe.unlink()
    with pytest.raises(Built):                       # the executable is gone
        harness.build_harness(top)


def test_design_key_covers_parameters_and_memory():
    key = harness._design_key(("a", 1), None)
    assert key == harness._design_key(("a", 1), None)
    assert key != harness._design_key(("a", 2), None)


def test_cpu_rate_tool_reads_cpu_time_and_refuses_other_commands(capsys):
    """sim/harness/cpurate.py: a process's CPU time grows with work; a
    command that runs no simulated decoder is refused before anything runs."""
    import os

    from trilut.sim.harness.cpurate import harness_cpu_s, main
    t0 = harness_cpu_s(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert harness_cpu_s(os.getpid()) - t0 >= 0.2
    with pytest.raises(SystemExit):
        main(["--", "generate", "--prompt", "x", "--device", "golden"])
    assert "--device sim" in capsys.readouterr().err
