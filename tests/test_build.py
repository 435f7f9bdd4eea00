"""Board builds (gen/build.py, hw/board.py) and their reports (gen/report.py).

The fast end-to-end checks use the ULX3S-12F with the UART loopback core
(a bitstream in ~10 s); the accelerator's own board builds are benchmarks
(docs/boards.md), too slow for the suite. The KV260 package is built for the
configuration the AXI regressions verify.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from trilut.gen.build import BOARDS, REPORT_FIELDS, BuildError, _venv_tool, build_board
from trilut.gen.cli import main
from trilut.hw.board import ULX3STop, UartLoopback, ecp5_pll_params

# --- PLL ---------------------------------------------------------------------

@pytest.mark.pnr
@pytest.mark.parametrize("mhz", [25, 48, 50, 65, 100, 133])
def test_pll_matches_ecppll(mhz, tmp_path):
    """The divider search picks what Project Trellis' ecppll picks."""
    subprocess.run([_venv_tool("yowasp-ecppll"), "-i", "25", "-o", str(mhz), "-f", "pll.v"],
                   cwd=tmp_path, check=True, capture_output=True)
    text = (tmp_path / "pll.v").read_text()
    ref = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE)\((\d+)\)",
                                            text)}
    p = ecp5_pll_params(25e6, mhz * 1e6)
    assert ref == {"CLKI_DIV": p["clki_div"], "CLKFB_DIV": p["clkfb_div"],
                   "CLKOP_DIV": p["clkop_div"], "CLKOP_CPHASE": p["clkop_cphase"]}
    assert 400e6 <= p["f_vco_hz"] <= 800e6
    assert p["f_out_hz"] == 25e6 * p["clkfb_div"] / p["clki_div"]


def test_pll_checks():
    assert ecp5_pll_params(25e6, 48e6)["f_out_hz"] == 46.875e6   # nearest reachable
    with pytest.raises(ValueError, match="f_out_hz must be within 3.125-400 MHz"):
        ecp5_pll_params(25e6, 500e6)
    with pytest.raises(TypeError, match="f_out_hz must be a number"):
        ecp5_pll_params(25e6, "50")


# --- argument checks (no tools run) ---------------------------------------------

class _NoLeds(wiring.Component):
    def __init__(self):
        super().__init__({"uart_rx": In(1), "uart_tx": Out(1)})

    def elaborate(self, platform):  # pragma: no cover - never built
        raise AssertionError


def test_board_top_checks_core():
    with pytest.raises(TypeError, match="must have exactly the ports uart_rx"):
        ULX3STop(_NoLeds(), freq_mhz=50)
    with pytest.raises(TypeError, match="wiring.Component"):
        ULX3STop(object(), freq_mhz=50)
    with pytest.raises(ValueError, match="3.125-400 MHz"):
        ULX3STop(UartLoopback(), freq_mhz=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(board="ulx3s-999f"), "unknown board 'ulx3s-999f'"),
    (dict(board="ulx3s-12f", settings={"lanez": 4}), "unknown accelerator parameter.*lanez"),
    (dict(board="ulx3s-12f", core="cpu"), "unknown core 'cpu'"),
    (dict(board="ulx3s-12f", freq_mhz=-5), "freq_mhz must be a positive number"),
    (dict(board="ulx3s-12f", core="loopback", settings={"lanes": 4}), "takes no accelerator"),
    (dict(board="kv260", core="loopback"), "takes the AXI accelerator only"),
    (dict(board="kv260", settings={"banks": 0}), "banks"),
    (dict(board="kv260", allow_timing_fail=True), "not timed here"),
    (dict(board="ulx3s-12f", estimate=False), "estimate=False is for kv260"),
    (dict(board="ulx3s-12f", mapper="abc10"), "unknown mapper 'abc10'"),
    (dict(board="ulx3s-12f", baud=0), "baud must be a positive integer"),
    (dict(board="ulx3s-12f", baud=20_000_000), "baud 20000000 is too fast"),
    (dict(board="kv260", baud=2_000_000), "has no UART"),
])
def test_build_rejects_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        build_board(out=tmp_path, **kwargs)
    assert not (tmp_path / "report.json").exists()


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert main(["build", "--board", "ulx3s-12f", "--out", str(tmp_path),
                 "--set", "bogus=1"]) == 2
    assert "unknown accelerator parameter(s) bogus" in capsys.readouterr().err


# --- ECP5 bitstream --------------------------------------------------------------

def _check_fields(report, counted=True):
    for key in REPORT_FIELDS:
        assert key in report, key
    for key in ("lut", "ff", "dsp", "bram"):
        if counted:
            assert isinstance(report[key], (int, float)) and report[key] >= 0, key
        else:
            assert report[key] is None, key


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_ulx3s_bitstream_and_report(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", "--board", "ulx3s-12f", "--core", "loopback", "--out", str(out),
                 "--freq", "65", "--no-cache"]) == 0        # the tools run: their progress lines
    printed = capsys.readouterr().out
    for step in ("yosys: abc (technology mapping)", "nextpnr: route", "ecppack: bitstream"):
        assert step in printed
    rep = json.loads((out / "report.json").read_text())
    _check_fields(rep)
    assert rep["board"] == "ulx3s-12f" and rep["device"] == "LFE5U-12F"
    assert rep["target_mhz"] == 65.0 and rep["pll"]["clkfb_div"] == 13
    assert rep["timing_met"] and rep["fmax_mhz"] > 65
    # the fastest FT231X rate within 1.5 % at 65 MHz: 3 and 2 Mbaud are 1.5 % off
    assert (rep["baud"], rep["uart_divisor"], rep["baud_error_pct"]) == (1_500_000, 43, 0.775)
    assert 0 < rep["lut"] < 100 and rep["capacity"]["lut"] == 24288 and rep["io"] == 11  # clk25, rx, tx, 8 LEDs
    bit = Path(rep["outputs"]["bitstream"])
    data = bit.read_bytes()
    assert bit.parent == out and b"\xff\xff\xbd\xb3" in data[:256], "no ECP5 preamble"
    build = Path(rep["outputs"]["build_dir"])
    lpf = next(build.glob("*.lpf")).read_text()
    assert 'FREQUENCY NET "clk_pll" 65000000.0 HZ;' in lpf and "SYSCONFIG" in lpf
    assert "constraining clock net 'clk_pll' to 65.00 MHz" in next(build.glob("*.tim")).read_text()
    cp = rep["critical_path"]
    assert cp["from"] and cp["to"] and cp["logic_ns"] + cp["routing_ns"] < 1000 / rep["fmax_mhz"] + 0.01

    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## ulx3s-12f" in md and "Critical path" in md
    units = json.loads((tmp_path / "r" / "report.json").read_text())[0]["units"]
    names = [u["unit"] for u in units]
    assert names[:2] == ["core", "rst_sync"] and "(flat build)" in names
    whole = next(u for u in units if u["unit"].startswith("(total"))
    assert sum(u["lut"] for u in units[:-2]) == whole["lut"]
    assert (tmp_path / "r" / "breakdown.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_ulx3s_timing_failure_is_an_error(tmp_path):
    """A clock the design cannot reach stops the build with no bitstream."""
    with pytest.raises(BuildError, match=r"timing not met on ulx3s-12f: Fmax [\d.]+ MHz < 400"):
        build_board("ulx3s-12f", tmp_path, core="loopback", freq_mhz=400)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["timing_met"] is False and rep["outputs"]["bitstream"] is None
    assert not list(tmp_path.glob("*.bit"))


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_abc9_mapper(tmp_path):
    """The ABC9 path (trilut.gen.synth's mapping) still builds a small design."""
    rep = build_board("ulx3s-12f", tmp_path, core="loopback", mapper="abc9")
    assert rep["timing_met"] and Path(rep["outputs"]["bitstream"]).exists()
    assert "Executing ABC9 pass" in (tmp_path / "build" / "trilut_ulx3s_12f.rpt").read_text()


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_build_timeout(tmp_path):
    with pytest.raises(BuildError, match="build timed out after 1 s"):
        build_board("ulx3s-12f", tmp_path, core="loopback", timeout_s=1)


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_build_seeds_and_cache(tmp_path, capsys):
    """--seeds: one bitstream per seed through the sweep executor and the Fmax
    spread in seeds.json; a rerun takes every build from the result cache,
    bitstreams included, with identical reports."""
    out = tmp_path / "b"
    argv = ["build", "--board", "ulx3s-12f", "--core", "loopback", "--seeds", "1,2",
            "--jobs", "2", "--cache", str(tmp_path / "c"), "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "seeds.json").read_text())
    fmax = [b["fmax_mhz"] for b in summary["builds"]]
    assert summary["seeds"] == [1, 2] and all(f > 50 for f in fmax)
    assert (summary["fmax_min"], summary["fmax_max"]) == (min(fmax), max(fmax))
    dirs = [out / f"seed-{s}" for s in (1, 2)]
    reports = [json.loads((d / "report.json").read_text()) for d in dirs]
    assert [r["seed"] for r in reports] == [1, 2]
    bits = [(d / "trilut_ulx3s_12f.bit").read_bytes() for d in dirs]
    for d in dirs:
        (d / "trilut_ulx3s_12f.bit").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "cached 2" in capsys.readouterr().err
    assert [(d / "trilut_ulx3s_12f.bit").read_bytes() for d in dirs] == bits
    assert [json.loads((d / "report.json").read_text()) for d in dirs] == reports


class _BigMemory(wiring.Component):
    """A UART core holding 1 Mbit of block RAM (64 DP16KD; the 12F has 56),
    every bit written and read."""

    def __init__(self):
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "leds": Out(8)})

    def elaborate(self, platform):
        from amaranth.hdl import Module, Signal
        from amaranth.lib.memory import Memory
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=32 * 1024, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        addr, value = Signal(15), Signal(32)
        m.d.sync += [addr.eq(addr + 1), value.eq(value + self.uart_rx + (value << 3))]
        m.d.comb += [wp.addr.eq(addr), wp.data.eq(value), wp.en.eq(1), rp.addr.eq(~addr),
                     self.leds.eq(rp.data[:8] ^ rp.data[8:16] ^ rp.data[16:24] ^ rp.data[24:]),
                     self.uart_tx.eq(rp.data.xor())]
        return m


@pytest.mark.pnr
@pytest.mark.xdist_group("board_build")
def test_design_that_does_not_fit(tmp_path):
    with pytest.raises(BuildError, match=r"design does not fit: needs \d+ DP16KD, device has 56\. "):
        build_board("ulx3s-12f", tmp_path, core=_BigMemory())


# --- KV260 package -----------------------------------------------------------------

def test_kv260_package(tmp_path, capsys):
    """The package (no estimate: the xcup synthesis of the whole accelerator
    takes ~3 minutes, a benchmark in docs/boards.md; the flow itself is
    tested in tests/test_synth.py) is complete and its Verilog is exactly the
    KV260 top (the accelerator, its weights from DDR through the HP0 read
    master) that tests/test_kv260.py runs with the PYNQ host code."""
    from test_hw_top import PARAMS
    from trilut.hw.kv260 import Kv260Top
    from trilut.hw.top import Accelerator, generate_verilog
    assert BOARDS["kv260"].accel == PARAMS
    assert main(["build", "--board", "kv260", "--out", str(tmp_path), "--freq", "250",
                 "--no-estimate"]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    _check_fields(rep, counted=False)
    assert rep["fmax_mhz"] is None and rep["target_mhz"] == 250
    assert rep["macs_per_cycle"] == PARAMS["group"] * PARAMS["tables"] * PARAMS["lanes"]
    kv = Kv260Top(accel=Accelerator(**PARAMS))
    assert rep["mem_port"]["name"] == "S_AXI_HP0_FPD" and rep["mem_port"]["data_bits"] == 128
    assert rep["mem_port"]["regs_base"] == kv.map.mem_base
    assert rep["axil_addr_bits"] == kv.map.addr_bits
    verilog = Path(rep["outputs"]["verilog"]).read_text()
    assert Path(rep["outputs"]["verilog"]).name == "trilut_kv260.v"
    assert verilog == generate_verilog(kv, "trilut_kv260")
    for port in ("s_axil_awaddr", "s_axis_tdata", "m_axis_tlast", "m_axi_hp0_araddr",
                 "m_axi_hp0_rdata", "clk", "rst"):
        assert re.search(rf"\b(input|output)\b[^;]*\b{port}\b", verilog), port
    assert not re.search(r"\bs_axis_wgt_tdata\b", verilog)    # fed from DDR inside
    xdc = Path(rep["outputs"]["xdc"]).read_text()
    assert "create_clock -name trilut_clk -period 4.000 [get_ports clk]" in xdc
    assert "@PERIOD_NS@" not in xdc and "@FREQ_MHZ@" not in xdc and "250 MHz" in xdc
    note = Path(rep["outputs"]["integration_note"]).read_text()
    assert f"{kv.map.addr_bits}-bit address" in note and "active high" in note
    assert f"{8 * kv.accel.axis_bytes}-bit `tdata`" in note and "`s_axil_rdata` | 32 |" in note
    for text in ("S_AXI_HP0_FPD", "M_AXI_HPM0_FPD", "pl_clk0", "axi_dma_0", "trilut_kv260_0",
                 f"`0x{kv.map.mem_base + 8:05x}` | w | FEED_LEN", "`m_axi_hp0_araddr` | 40 |"):
        assert text in note, text


def test_ulx3s_85f_carries_the_sdram():
    """The default ulx3s-85f core has the SDRAM controller (generated for the
    build's clock) and the weight feeder behind its bridge; the board top
    hands it the SDRAM pins, the build plan carries the controller's
    Verilog, and report.json's memory fields name it (a build without
    memory reports None)."""
    import amaranth_boards.ulx3s as ulx3s

    from trilut.gen.build import accel_params, dram_report, make_core
    assert BOARDS["ulx3s-85f"].dram == "sdram-32MB-litedram" and not BOARDS["ulx3s-12f"].dram
    core = make_core("accelerator", 50e6, 2_000_000, accel_params("ulx3s-85f"),
                     BOARDS["ulx3s-85f"].dram)
    assert core.sdram.core.sys_clk_hz == 50e6 and not core.sdram.core.sim
    assert core.bridge.feeder is not None and core.bridge.feeder.ratio == 16
    assert dram_report(core) == {"dram": "sdram-32MB-litedram", "dram_peak_mb_s": 100.0}
    assert dram_report(UartLoopback()) == {"dram": None, "dram_peak_mb_s": None}
    top = ULX3STop(core, freq_mhz=50, sdram_clock=True)
    platform = ulx3s.ULX3S_85F_Platform(toolchain="Trellis")
    platform.add_file(core.sdram.core.verilog.name, core.sdram.core.verilog.read_text())
    plan = platform.prepare(top, name="t")
    assert core.sdram.pins is top.sdram_pins
    assert "read_verilog  litedram_core.v" in plan.files["t.ys"]
    lpf = plan.files["t.lpf"]
    for pin in ("F19", "J16", "M20", "U19", "P20"):        # clk, dq0, a0, dqm0, cs
        assert f'"{pin}"' in lpf, pin
    with pytest.raises(ValueError, match="no board SDRAM"):
        make_core("accelerator", 50e6, 2_000_000, accel_params("ulx3s-12f")).attach_sdram(None)
