# amaranth: UnusedElaboratable=no
"""The ULX3S SDRAM subsystem: generation, construction checks, the init
sequencer, the board's SDRAM clock pin, and Verilator regressions
(sim/tb_sdram.py) through the real LiteDRAM controller and its SDRAM model."""
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from trilut.gen import litedram
from trilut.gen.litedram import LiteDRAMError, generate, litedram_config
from trilut.gen.sdrambench import simulate
from trilut.hw.board import ULX3STop, UartLoopback, ecp5_pll_params, pll_phase_params
from trilut.hw.sdram import SDRAM, WB_TIMEOUT, SDRAMInit, init_program
from trilut.sim.runner import SimFailure

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# One Verilator build (~2 minutes, cached): the --sim core at 50 MHz behind the
# wrapper of trilut.gen.sdrambench.SIM_PARAMS.


@pytest.mark.sim
@pytest.mark.xdist_group("sdram")
def test_sdram_through_litedram():
    assert simulate() == 3


@pytest.mark.sim
@pytest.mark.xdist_group("sdram")
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a model expecting each read one
    address further on must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(broken=True, testcase="random_traffic")


# --- generation, construction and the init sequencer (no Verilator) ---------

@pytest.fixture(scope="module")
def board_core():
    return generate(sim=False)


def test_generated_cores(board_core):
    sim = generate(sim=True)
    assert (board_core.addr_bits, board_core.data_bits, board_core.words) == (24, 16, 1 << 24)
    assert board_core.words * board_core.data_bits // 8 == 32 << 20          # 32 MB
    assert (sim.sim, board_core.sim) == (True, False)
    assert sim.verilog.is_file() and sim.verilog != board_core.verilog
    assert generate(sim=True) == sim                                      # cached
    assert "sdram_dq" in board_core.verilog.read_text()[:4000]
    assert "sdram_dq" not in sim.verilog.read_text()[:4000]


def test_init_program_is_the_measured_recipe(board_core):
    """../shared/TOOLCHAIN.md's sequence, in byte addresses on wb_ctrl."""
    issue = [(0x80C, None), (0x810, 0), (0x804, None), (0x808, 1)]
    recipe = [(0x800, 0xE)]
    for address, command in ((0x400, 0xB), (0, 0xD), (0, 0xD), (0x20, 0xF)):
        recipe += [(a, {0x80C: address, 0x804: command}.get(a, v)) for a, v in issue]
    recipe += [(0x800, 0xF), (0x000, 1)]
    prog = init_program(board_core, 10_000)
    assert [(a << 2, v) for a, v, _ in prog] == recipe
    assert prog[0][2] == 10_000 and all(w == 10 for a, v, w in prog if a << 2 == 0x808)


def test_wrapper_parameters(board_core):
    s = SDRAM(board_core)
    assert s.init_wait_cycles == 10_000                  # 200 us at 50 MHz
    assert SDRAM(board_core, init_wait_cycles=16).init_wait_cycles == 16
    assert s.command(5, 3) == {"addr": 5, "len": 2}
    assert s.command(board_core.words - 256, 256) == {"addr": board_core.words - 256,
                                                       "len": 255}
    assert "sdram_dq" in s.signature.members and "sdram_a" in s.signature.members
    assert "sdram_dq" not in SDRAM(generate(sim=True)).signature.members
    for args, match in [((0, 0), "words"), ((0, 257), "words"), ((-1, 1), "outside"),
                        ((board_core.words - 1, 2), "outside")]:
        with pytest.raises(ValueError, match=match):
            s.command(*args)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(max_burst=100), ValueError, "power of two"),
    (dict(max_burst=1), ValueError, "max_burst"),
    (dict(max_burst=8192), ValueError, "max_burst"),
    (dict(fifo_depth=1), ValueError, "fifo_depth"),
    (dict(fifo_depth=8.0), TypeError, "fifo_depth"),
    (dict(init_wait_cycles=-1), ValueError, "init_wait_cycles"),
    (dict(init_wait_cycles=True), TypeError, "init_wait_cycles"),
])
def test_bad_parameters_rejected(board_core, kw, exc, match):
    with pytest.raises(exc, match=match):
        SDRAM(board_core, **kw)
    with pytest.raises(TypeError, match="LiteDRAMCore"):
        SDRAM("litedram_core.v")


def test_bad_clock_rejected():
    with pytest.raises(ValueError, match="10-200 MHz"):
        litedram_config(300e6)
    with pytest.raises(TypeError, match="sys_clk_hz"):
        litedram_config("50e6")
    assert litedram_config()["sys_clk_freq"] == 50e6       # the ulx3s-85f build clock


def test_generator_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(litedram.SDRAM_CONFIG, "sdram_module", "NoSuchModule")
    with pytest.raises(LiteDRAMError, match="(?s)litedram_gen exited 1.*NoSuchModule"):
        generate(sim=True, build_root=tmp_path, progress=lambda _: None)


def _run_init(program, slave, limit=2_000, seed=0):
    """Run SDRAMInit against a Wishbone slave that answers ``slave`` ("ack",
    "err" or "none") after random delays; returns (writes, done, error),
    writes as (word address, value, cycle)."""
    dut = SDRAMInit(program)
    rng, writes, out = random.Random(seed), [], {}

    async def bench(ctx):
        t = 0
        while t < limit and not ctx.get(dut.done) and not ctx.get(dut.error):
            answer = ctx.get(dut.bus.cyc) and ctx.get(dut.bus.stb) and rng.random() < 0.5
            if answer and slave != "none":
                assert ctx.get(dut.bus.we) and ctx.get(dut.bus.sel) == 0xF
                writes.append((ctx.get(dut.bus.adr), ctx.get(dut.bus.dat_w), t))
                strobe = dut.bus.ack if slave == "ack" else dut.bus.err
                ctx.set(strobe, 1)
                await ctx.tick()
                ctx.set(strobe, 0)
            else:
                await ctx.tick()
            t += 1
        out.update(done=ctx.get(dut.done), error=ctx.get(dut.error), cycles=t)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return writes, out


def test_init_sequencer_writes_and_waits():
    program = [(0x200, 0xE, 40), (0x203, 0x400, 0), (0x202, 1, 7), (0x000, 1, 0)]
    writes, out = _run_init(program, "ack")
    assert out["done"] and not out["error"]
    assert [(a, v) for a, v, _ in writes] == [(a, v) for a, v, _ in program]
    gaps = [b[2] - a[2] for a, b in zip(writes, writes[1:])]
    assert all(g > w for g, (_, _, w) in zip(gaps, program)), (gaps, program)


@pytest.mark.parametrize("slave", ["err", "none"])
def test_init_sequencer_stops_on_a_bus_error(slave):
    """An error response or no acknowledge within WB_TIMEOUT cycles sets
    error; done stays low and nothing hangs."""
    writes, out = _run_init([(0x200, 0xE, 3), (0x000, 1, 0)], slave)
    assert out["error"] and not out["done"]
    assert len(writes) == (1 if slave == "err" else 0)
    assert out["cycles"] <= WB_TIMEOUT + 10


# --- the SDRAM clock pin on the ULX3S (hw/board.py) ---------------------------

def _board_rtlil(**kw):
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    top = ULX3STop(UartLoopback(), freq_mhz=50, **kw)
    files = ULX3S_85F_Platform().prepare(top, name="top").files
    return top, files["top.il"], files["top.lpf"]


def test_sdram_clock_pin():
    top, il, lpf = _board_rtlil(sdram_clock=True)
    oddr = il[il.index("cell \\ODDRX1F"):]
    oddr = oddr[:oddr.index("end")]
    for conn in ("\\SCLK \\clk_sdram", "\\D0 1'1", "\\D1 1'0", "\\Q \\sdram_0__clk__io"):
        assert conn in oddr, conn
    for param in ("CLKOS_DIV 12", "CLKOS_CPHASE 8", "CLKOS_FPHASE 0", "CLKOS \\clk_sdram"):
        assert param in il, param                  # 90 degrees of 20 ns = 3 of 12 VCO cycles
    assert 'LOCATE COMP "sdram_0__clk__io" SITE "F19";' in lpf
    assert top.sdram_pins is not None and len(top.sdram_pins.dq.io) == 16
    _, il_off, lpf_off = _board_rtlil()
    assert "ODDRX1F" not in il_off and "CLKOS" not in il_off and "F19" not in lpf_off
    with pytest.raises(TypeError, match="sdram_clock"):
        ULX3STop(UartLoopback(), freq_mhz=50, sdram_clock=1)


def test_pll_phase_checks():
    pll = ecp5_pll_params(25e6, 50e6)
    assert pll_phase_params(pll, 0) == {"div": 12, "cphase": pll["clkop_cphase"], "fphase": 0}
    with pytest.raises(ValueError, match="phase_deg"):
        pll_phase_params(pll, 360)
    with pytest.raises(TypeError, match="phase_deg"):
        pll_phase_params(pll, "90")


@pytest.mark.pnr
@pytest.mark.parametrize("mhz,phase", [(50, 90), (50, 45), (65, 90), (100, 90), (50, 180)])
def test_pll_phase_matches_ecppll(mhz, phase, tmp_path):
    """The secondary output's settings are what Project Trellis' ecppll picks."""
    tool = Path(sys.executable).parent / "yowasp-ecppll"
    subprocess.run([str(tool), "-i", "25", "-o", str(mhz), "--clkout1", str(mhz),
                    "--phase1", str(phase), "-f", "pll.v"],
                   cwd=tmp_path, check=True, capture_output=True)
    ref = {k: int(v) for k, v in re.findall(r"\.CLKOS_(DIV|CPHASE|FPHASE)\((\d+)\)",
                                            (tmp_path / "pll.v").read_text())}
    got = pll_phase_params(ecp5_pll_params(25e6, mhz * 1e6), phase)
    assert ref == {"DIV": got["div"], "CPHASE": got["cphase"], "FPHASE": got["fphase"]}
