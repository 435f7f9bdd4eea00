"""Tests for the synthesis / place-and-route measurement flow (trilut.gen.synth)."""

import json

import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from trilut.gen.synth import TARGETS, SynthError, format_table, synthesize


# ----------------------------------------------------------------------------
# Tiny designs
# ----------------------------------------------------------------------------

class Counter(wiring.Component):
    """8-bit free-running counter."""
    count: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + 1)
        return m


class MulMem(wiring.Component):
    """Registered signed 16x16 multiply and a 512 x 18 memory with a synchronous read port."""
    a: In(16)
    b: In(16)
    p: Out(32)
    addr: In(9)
    wdata: In(18)
    we: In(1)
    rdata: Out(18)

    def elaborate(self, platform):
        m = Module()
        ra, rb = Signal(16), Signal(16)
        m.d.sync += [ra.eq(self.a), rb.eq(self.b),
                     self.p.eq(ra.as_signed() * rb.as_signed())]
        m.submodules.mem = mem = memory.Memory(shape=18, depth=512, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.wdata), wp.en.eq(self.we),
                     rp.addr.eq(self.addr)]
        m.d.sync += self.rdata.eq(rp.data)
        return m


class Wide(wiring.Component):
    """300 bits in, 300 bits out: more ports than the CABGA381 package has pins."""
    a: In(300)
    o: Out(300)

    def elaborate(self, platform):
        m = Module()
        r = Signal(300)
        m.d.sync += [r.eq(self.a ^ (r << 1)), self.o.eq(r)]
        return m


@pytest.fixture(scope="module")
def counter_v():
    return verilog.convert(Counter(), name="top")


@pytest.fixture(scope="module")
def mulmem_v():
    return verilog.convert(MulMem(), name="top")


@pytest.fixture(scope="module")
def wide_v():
    return verilog.convert(Wide(), name="top")


# 209 hand-instantiated block RAMs: one more than the LFE5U-85F has.
TOO_MANY_BRAMS_V = """
module top(input clk, input [9:0] addr, input [1:0] din, input we, output reg o);
  wire [209*2-1:0] dout;
  genvar i;
  generate for (i = 0; i < 209; i = i + 1) begin : g
    DP16KD #(.DATA_WIDTH_A(18), .DATA_WIDTH_B(18)) ram (
      .CLKA(clk), .CEA(1'b1), .OCEA(1'b1), .WEA(we), .RSTA(1'b0),
      .CSA0(1'b0), .CSA1(1'b0), .CSA2(1'b0),
      .ADA0(1'b0), .ADA1(1'b0), .ADA2(1'b0), .ADA3(1'b0),
      .ADA4(addr[0]), .ADA5(addr[1]), .ADA6(addr[2]), .ADA7(addr[3]), .ADA8(addr[4]),
      .ADA9(addr[5]), .ADA10(addr[6]), .ADA11(addr[7]), .ADA12(addr[8]), .ADA13(addr[9]),
      .DIA0(din[0]), .DIA1(din[1]), .DOA0(dout[i*2]), .DOA1(dout[i*2+1]));
  end endgenerate
  always @(posedge clk) o <= ^dout;
endmodule
"""


# ----------------------------------------------------------------------------
# Fast tests
# ----------------------------------------------------------------------------

def test_targets_hold_device_capacities():
    ecp5 = TARGETS["ecp5-85f"].capacity
    assert (ecp5["lut4"], ecp5["mult18"], ecp5["dp16kd"]) == (83_640, 156, 208)
    xc = TARGETS["xcup"].capacity
    assert (xc["lut6"], xc["dsp"], xc["bram36"], xc["uram"]) == (117_120, 1_248, 144, 64)
    assert TARGETS["ecp5-85f"].pnr and not TARGETS["xcup"].pnr


def test_unknown_target_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="ice40-up5k"):
        synthesize("module top; endmodule", "top", "ice40-up5k", work_dir=tmp_path)


def test_format_table_aligns_columns():
    rows = [
        {"name": "direct", "lut4": 1234, "fmax_mhz": 122.456, "fits": True},
        {"name": "tlmm-g3", "lut4": 98, "fmax_mhz": None},
    ]
    text = format_table(rows, ["name", "lut4", "fmax_mhz", "fits"])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "lut4", "fmax_mhz", "fits"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 4
    # numbers right-aligned: the units digits line up
    assert lines[2].index("1234") + 4 == lines[3].index("98") + 2
    assert "122.5" in lines[2] and "yes" in lines[2]
    assert lines[3].split()[-1] == "-"          # None prints as "-", missing key as blank
    assert format_table([], ["a", "b"]).splitlines()[0].split() == ["a", "b"]


# ----------------------------------------------------------------------------
# Yosys / nextpnr runs
# ----------------------------------------------------------------------------

@pytest.mark.pnr
def test_counter_ecp5(counter_v, tmp_path):
    steps = []
    r = synthesize(counter_v, "top", "ecp5-85f", work_dir=tmp_path, progress=steps.append)
    assert r["target"] == "ecp5-85f" and r["top"] == "top"
    assert r["lut4"] > 0
    assert r["ff"] >= 8
    assert r["mult18"] == 0 and r["dp16kd"] == 0
    assert r["fmax_mhz"] is not None and r["fmax_mhz"] > 100
    assert r["clock"] == "clk" and r["timing_met"] is True
    assert r["io"] == 0                              # out of context: no I/O buffers
    assert 0 < r["lut4_util"] < 0.001
    assert r["breakdown"]["TRELLIS_FF"] == r["ff"]
    assert r["breakdown"].get("CCU2C", 0) > 0 or r["breakdown"].get("LUT4", 0) > 0
    assert steps[0] == "yosys synth_ecp5"
    assert "nextpnr-ecp5 place" in steps and "nextpnr-ecp5 route" in steps
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["fmax_mhz"] == r["fmax_mhz"] and on_disk["lut4"] == r["lut4"]
    for name in ("yosys.log", "nextpnr.log", "nextpnr_report.json", "commands.txt"):
        assert (tmp_path / name).exists(), name
    assert "--out-of-context" in (tmp_path / "commands.txt").read_text()


@pytest.mark.pnr
def test_multiplier_and_memory_ecp5(mulmem_v, tmp_path):
    r = synthesize(mulmem_v, "top", "ecp5-85f", work_dir=tmp_path, freq_mhz=50, seed=3)
    assert r["mult18"] >= 1
    assert r["dp16kd"] >= 1
    assert r["breakdown"]["MULT18X18D"] == r["mult18"]
    assert r["breakdown"]["DP16KD"] == r["dp16kd"]
    assert r["fmax_mhz"] is not None and r["fmax_mhz"] > 50
    assert r["seed"] == 3 and r["freq_mhz"] == 50
    assert r["mult18_util"] == pytest.approx(r["mult18"] / 156, abs=1e-5)


@pytest.mark.pnr
def test_xcup_estimates(counter_v, mulmem_v, tmp_path):
    c = synthesize(counter_v, "top", "xcup", work_dir=tmp_path / "counter")
    assert c["fmax_mhz"] is None
    assert c["ff"] == 8
    assert c["lut6"] + c["carry8"] > 0
    assert c["fits"] and c["overflow"] == []
    m = synthesize(mulmem_v, "top", "xcup", work_dir=tmp_path / "mulmem")
    assert m["dsp"] >= 1
    assert m["bram36"] >= 0.5
    assert m["breakdown"]["DSP48E2"] == m["dsp"]
    for key in ("lut6", "ff", "dsp", "bram36", "uram", "carry8", "lutram", "breakdown"):
        assert key in m, key
    assert json.loads((tmp_path / "mulmem" / "report.json").read_text())["dsp"] == m["dsp"]


@pytest.mark.pnr
def test_wide_ports_route_out_of_context(wide_v, tmp_path):
    r = synthesize(wide_v, "top", work_dir=tmp_path / "ooc")
    assert r["io"] == 0 and r["ff"] >= 600
    assert r["fmax_mhz"] > 100
    # the same design with I/O buffers needs 600+ pins and cannot fit the package
    with pytest.raises(SynthError, match="TRELLIS_IO"):
        synthesize(wide_v, "top", work_dir=tmp_path / "io", out_of_context=False)


@pytest.mark.pnr
def test_syntax_error_names_yosys(tmp_path):
    bad = "module top(input clk, output o);\n  assign o = ;\nendmodule\n"
    with pytest.raises(SynthError, match="yosys") as info:
        synthesize(bad, "top", work_dir=tmp_path)
    assert "syntax error" in str(info.value)
    assert info.value.step.startswith("yosys")
    assert not (tmp_path / "nextpnr.log").exists()


@pytest.mark.pnr
def test_too_many_block_rams_does_not_fit(tmp_path):
    with pytest.raises(SynthError, match=r"does not fit.*needs 209 DP16KD, device has 208"):
        synthesize(TOO_MANY_BRAMS_V, "top", work_dir=tmp_path)


def test_netlist_hash_ignores_enum_names_only():
    from amaranth.lib import enum

    from trilut.gen.verilog import generate_verilog, netlist_sha256

    class Two(enum.Enum, shape=2):
        A = 0
        B = 1

    class Three(enum.Enum, shape=2):
        A = 0
        B = 1
        C = 2

    def design(shape, width=3):
        class Dut(wiring.Component):
            o: Out(width)

            def elaborate(self, platform):
                m = Module()
                code = Signal(shape)
                m.d.sync += code.eq(shape.B)
                m.d.comb += self.o.eq(code)
                return m
        return generate_verilog(Dut(), "dut")

    two, three = design(Two), design(Three)
    assert two != three and "enum_value" in three
    assert netlist_sha256(two) == netlist_sha256(three)
    assert netlist_sha256(two) != netlist_sha256(design(Two, width=4))


def test_worst_endpoints_groups_bits_and_ranks():
    """nextpnr's per-endpoint arrival times grouped by signal (bit and
    primitive suffixes dropped), slowest first."""
    from trilut.gen.synth import worst_endpoints
    ends = [{"cell": "a.b_TRELLIS_FF_Q_3", "delay": [1.0, 9.5]},
            {"cell": "a.b_TRELLIS_FF_Q", "delay": [1.0, 8.0]},
            {"cell": "a.b_TRELLIS_FF_Q_7", "delay": [1.0, 9.1]},
            {"cell": "x.mem.0.1$DPRAM_COMB0", "delay": [0.5, 9.9]}]
    rep = {"detailed_net_timings": [{"net": "n", "endpoints": ends}]}
    assert worst_endpoints(rep) == [{"endpoint": "x.mem", "ns": 9.9, "count": 1},
                                    {"endpoint": "a.b", "ns": 9.5, "count": 2}]
    assert worst_endpoints(rep, 1) == [{"endpoint": "x.mem", "ns": 9.9, "count": 1}]
    assert worst_endpoints({}) == []
