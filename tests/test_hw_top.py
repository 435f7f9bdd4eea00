# amaranth: UnusedElaboratable=no
"""Accelerator top: ISA packing, construction checks and AXI-level Verilator
regressions (LOAD -> LINEAR -> LINEAR -> STORE against golden, residual
epilogue, a second shape in the same build, malformed programs, malformed
weight frames (weight store overflow / mismatch), pass cycles;
whole encoder blocks compiled by host.compiler, reset mid-block, a stalled
result stream). One build for every simulation test (xdist group)."""
import json

import numpy as np
import pytest
from amaranth.hdl import Const, Module, ResetInserter, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from trilut.hw import isa
from trilut.hw.isa import (CONST_BITS, DESCRIPTOR, RESIDUAL_CONST, REQUANT_CONST, Opcode, RegisterMap,
                           descriptor_words, pack_descriptor, pack_requant_const,
                           pack_residual_const, unpack_descriptor)
from trilut.hw.arith import const_div, delay, valid_delay
from trilut.hw.memories import BLOCK_DEPTH, BLOCKED_READ_LATENCY, CONST_READ_LATENCY, Memories
from trilut.hw.sequencer import FLAGS, rules
from trilut.hw.top import Accelerator, flat_ports
from trilut.sim import tb_top
from trilut.sim.runner import SimFailure

# One small build for every simulation test (the Verilator build is cached).
PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=16,
              max_width=256, prog_depth=32, const_sets=12)
TESTCASES = ["linear_chain", "second_shape", "residual", "malformed", "weight_errors",
             "pass_cycles", "attn_extremes", "whole_block", "reset_mid_block"]
# A second build for the issue-7 datapath (accurate GELU, 16-bit probabilities,
# per-token quantization, int8 weights); three int16 regions of 7 rows.
TOKEN_PARAMS = dict(group=3, tables=2, lanes=4, encoding="folded", banks=2, max_rows=24,
                    max_width=64, prog_depth=48, const_sets=10, gelu_mode="accurate",
                    probs_bits=16, wstore_depth=256)


@pytest.mark.sim
@pytest.mark.xdist_group("accel-top")
@pytest.mark.parametrize("testcase", TESTCASES)
def test_top_matches_golden(testcase, tmp_path):
    report = tmp_path / "report.json"
    assert tb_top.run(PARAMS, testcase=testcase, report=report) == 1
    if testcase == "pass_cycles":
        for r in json.loads(report.read_text())["linear"]:
            # Run phase within 10% of the engine's analytic schedule.
            assert r["run_cycles"] <= 1.1 * r["analytic"], r


@pytest.mark.sim
@pytest.mark.xdist_group("accel-top-token")
@pytest.mark.parametrize("broken", [False, True])
def test_token_blocks(broken):
    """Post-LN/per-token/int8, pre-LN/per-token/ternary and mixed-weight
    blocks against golden; the wrong model (q loses a weight row) fails."""
    if broken:
        with pytest.raises(SimFailure, match="mismatches"):
            tb_top.run(TOKEN_PARAMS, broken=True, testcase="token_blocks")
    else:
        assert tb_top.run(TOKEN_PARAMS, testcase="token_blocks") == 1


@pytest.mark.sim
@pytest.mark.xdist_group("accel-top")
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a golden block whose q weights lose
    their last row (the block tests' wrong model; linear_chain's drops the last
    k-block of every LINEAR, same scoreboard) must be reported as
    mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        tb_top.run(PARAMS, broken=True, testcase="small_block")


# --- construction ---------------------------------------------------------------

@pytest.mark.parametrize("param,value,exc", [
    ("banks", 0, ValueError), ("banks", 15, ValueError), ("max_rows", 0, ValueError),
    ("max_rows", 4096, ValueError), ("max_width", 0, ValueError), ("max_width", 2, ValueError),
    ("prog_depth", 0, ValueError), ("const_sets", 257, ValueError),
    ("axis_bytes", 3, ValueError), ("axis_bytes", 2, ValueError), ("axis_bytes", 1.5, TypeError),
    ("banks", True, TypeError), ("group", 5, ValueError), ("encoding", "half", ValueError),
    ("table_ram", "flash", ValueError), ("attn_lanes", 3, ValueError),
    ("attn_kpc", 0, ValueError), ("banks", 14, ValueError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        Accelerator(**{**PARAMS, param: value})


def test_kv_words_need_room():
    with pytest.raises(ValueError, match="max_rows"):
        Accelerator(**{**PARAMS, "max_rows": 8, "attn_kpc": 16})


def test_defaults_and_ports():
    acc = Accelerator(**PARAMS)
    # one weight beat per transfer: TLMM codes 4 lanes x 2 tables x 5 bits = 40 bits,
    # int8 weights 4 lanes x 4 bytes = 128 bits
    assert acc.axis_bytes == 16
    assert acc.const_stride == 256
    names = set(flat_ports(acc))
    for ch in ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
               "bvalid", "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid",
               "rready"):
        assert f"s_axil_{ch}" in names
    for bus in ("s_axis", "s_axis_wgt", "m_axis"):
        assert {f"{bus}_{s}" for s in ("tdata", "tvalid", "tready", "tlast")} <= names


def test_host_frames():
    acc = Accelerator(**PARAMS)
    x = np.array([[1, -2, 3], [127, -128, 0]])
    frames = acc.row_frames(x)
    assert [len(f) for f in frames] == [16, 16]
    assert np.array_equal(acc.frames_to_rows(frames, 3), x)
    r = np.array([[32767, -32768, 5, 6, 7]])
    assert np.array_equal(acc.frames_to_rows(acc.row_frames(r, wide=True), 5, wide=True), r)
    w = np.ones((24, 8), dtype=int)
    f = acc.weight_frames(w)          # one frame per pass, whatever the rows
    assert len(f) == 1 and len(f[0]) == 16 * len(acc.engine.wgt_beats(w))
    assert acc.wstore_depth == 43 * 64       # ceil(256 / k_block 6) x 256 / lanes 4
    # int8 weights: the int8 engine's beats, lane-major signed bytes, element 0
    # in the low byte (its data layout), one 16-byte transfer each
    w8 = np.arange(-64, 64).reshape(16, 8)
    f8 = acc.weight_frames(w8, "int8")[0]
    beats = acc.int8_engine.wgt_beats(w8)
    layout = acc.int8_engine.wgt.payload.shape()["data"].shape
    assert len(f8) == 16 * len(beats) == 16 * acc.weight_beats(16, 8, "int8")
    for i, b in enumerate(beats):
        word = int.from_bytes(f8[16 * i:16 * i + 16], "little")
        assert word == layout.const(b["data"]).as_value().value
    with pytest.raises(ValueError, match="kind"):
        acc.weight_frames(w8, "int4")


# --- ISA ---------------------------------------------------------------------

def test_descriptor_layout():
    assert DESCRIPTOR.size == 128
    fields = dict(epilogue=isa.Epilogue.RESIDUAL, src_bank=1, src_row=4095, dst_bank=15,
                  dst_row=7, rows=12, k=768, n=3072, const=255, kv_pos=9, heads=255)
    value = pack_descriptor(Opcode.LINEAR, **fields)
    back = unpack_descriptor(value)
    assert back["opcode"] == Opcode.LINEAR
    assert all(back[k] == int(v) for k, v in fields.items())
    words = descriptor_words(value)
    assert len(words) == 4 and sum(w << (32 * i) for i, w in enumerate(words)) == value
    assert unpack_descriptor(pack_descriptor(9))["opcode"] == 9   # malformed on purpose
    with pytest.raises(ValueError, match="rows"):
        pack_descriptor(Opcode.LOAD, rows=4096)
    with pytest.raises(ValueError, match="bogus"):
        pack_descriptor(Opcode.LOAD, bogus=1)
    assert pack_descriptor() == 0 and Opcode.END == 0     # zeroed memory stops


def test_const_layouts():
    v = pack_requant_const(m=65535, e=62, bias=-(1 << 31))
    c = data.Const(REQUANT_CONST, v)
    assert (int(c.m), int(c.e), int(c.bias)) == (65535, 62, -(1 << 31))
    c = data.Const(isa.SOFTMAX_CONST, isa.pack_softmax_const(m=40000, e=20, x0=-13))
    assert (int(c.m), int(c.e), int(c.bias), int(c.x0)) == (40000, 20, 0, -13)
    v = pack_residual_const(mx=1, ex=2, my=3, ey=4, bias=-5)
    c = data.Const(RESIDUAL_CONST, v)
    assert [int(c[f]) for f in ("mx", "ex", "my", "ey", "bias")] == [1, 2, 3, 4, -5]


def test_register_map():
    regs = RegisterMap(prog_depth=16, const_entries=128)
    spans = sorted((r.offset, r.offset + 4 * r.words, r.name) for r in regs)
    for (a0, a1, n0), (b0, _, n1) in zip(spans, spans[1:]):
        assert a1 <= b0, f"{n0} overlaps {n1}"
    assert regs.offset("ctrl") == 0 and regs.offset("status") == 4
    assert regs["prog"].offset % (16 * 16) == 0 and regs["const"].offset % (128 * 16) == 0
    assert (1 << regs.addr_bits) >= regs["const"].offset + 128 * 16


# --- the parts: check table, constant division, resettable valid bits ----------

class _AnyFacts(dict):
    """Every fact and flag a 1-bit constant (the table only builds conditions)."""
    def __getitem__(self, name):
        return dict.get(self, name, Const(1))
    __getattr__ = __getitem__


def test_every_opcode_has_a_table_row():
    """An opcode in isa without a row in the sequencer's table would be
    refused as OPCODE by the hardware: adding one means adding its row."""
    for probs16 in (False, True):
        table = rules(probs16)
        assert set(table) == set(Opcode)
        for op, rule in table.items():
            assert rule.consts in ("n", "one", None), op
            if rule.ends:
                continue
            # every condition names only error codes the check stage ranks
            codes = set(rule.checks(_AnyFacts(d=Signal(DESCRIPTOR))))
            assert codes and codes <= set(isa.ErrorCode) - {isa.ErrorCode.NONE,
                                                            isa.ErrorCode.OPCODE,
                                                            isa.ErrorCode.UNIT,
                                                            isa.ErrorCode.PC}, op
    assert {f"is_{op.name.lower()}" for op in Opcode} <= set(FLAGS)


def _div_errors(divide, divisor, max_value):
    """Values x in [0, max_value] for which the simulated ``divide(x)`` is
    not floor(x / divisor)."""
    x = Signal(range(max_value + 1))
    q = Signal(16)
    m = Module()
    m.d.comb += q.eq(divide(x))
    sim = Simulator(m)
    wrong = []

    async def bench(ctx):
        for v in range(max_value + 1):
            ctx.set(x, v)
            if ctx.get(q) != v // divisor:
                wrong.append(v)
    sim.add_testbench(bench)
    sim.run()
    return wrong


@pytest.mark.parametrize("divisor,max_value", [(6, 4095 + 5), (12, 4095), (5, 300), (16, 4095),
                                               (1, 9)])
def test_const_div_matches_floor(divisor, max_value):
    """The hardware expression, simulated, equals floor(x / divisor) for
    every x in range."""
    assert not _div_errors(lambda x: const_div(x, divisor, max_value), divisor, max_value)
    with pytest.raises(ValueError, match="divisor"):
        const_div(Signal(4), 0, 10)


def test_const_div_check_can_fail():
    """The same check catches a multiplier one too small (ceil -> floor)."""
    s = (4100).bit_length() + (6).bit_length()
    wrong = _div_errors(lambda x: (x * ((1 << s) // 6)) >> s, 6, 4100)
    assert wrong


def test_valid_delay_resets_and_delay_does_not():
    """A reset clears a valid_delay line in one cycle; a data delay keeps
    its contents (so the test could tell them apart)."""
    m = Module()
    v = Signal()
    rst = Signal()
    inner = Module()
    out_v = valid_delay(inner, v, 6, name="v")
    out_d = delay(inner, v, 6, name="d")
    m.submodules.inner = ResetInserter(rst)(inner)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        ctx.set(v, 1)
        await ctx.tick().repeat(3)
        ctx.set(v, 0)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        for _ in range(8):
            seen.append((ctx.get(out_v), ctx.get(out_d)))
            await ctx.tick()
    sim.add_testbench(bench)
    sim.run()
    assert all(a == 0 for a, _ in seen), seen
    assert any(b == 1 for _, b in seen), seen


def _const_read_errors(latency):
    """Addresses whose constant-memory read (``Memories.const_r``, three
    blocks, the last one short) does not give the entry last written there
    (32-bit lane enables) ``latency`` cycles after the address, reading one
    address per cycle."""
    rng = np.random.default_rng(12)
    entries = 3 * BLOCK_DEPTH - 100
    mems = Memories(banks=1, row_bits=1, col_bits=2, kv_bytes=4, prog_depth=2,
                    const_entries=entries)
    edges = [0, BLOCK_DEPTH - 1, BLOCK_DEPTH, 2 * BLOCK_DEPTH - 1, 2 * BLOCK_DEPTH, entries - 1]
    writes = edges + [int(a) for a in rng.integers(0, entries, 200)]
    model, wrong = {}, []
    sim = Simulator(mems)
    sim.add_clock(1e-6)

    async def bench(ctx):
        w, r = mems.const_w, mems.const_r
        for a in writes:
            lanes = int(rng.integers(1, 16))
            value = int.from_bytes(rng.bytes(CONST_BITS // 8), "little")
            ctx.set(w.addr, a)
            ctx.set(w.data, value)
            ctx.set(w.en, lanes)
            await ctx.tick()
            mask = sum(0xFFFF_FFFF << (32 * i) for i in range(CONST_BITS // 32) if lanes >> i & 1)
            model[a] = model.get(a, 0) & ~mask | value & mask
        ctx.set(w.en, 0)
        issued = []
        for a in [int(a) for a in rng.permutation(sorted(model))] + [0] * latency:
            ctx.set(r.addr, a)
            await ctx.tick()
            issued.append(a)
            if len(issued) > latency and ctx.get(r.data) != model[issued[-latency]]:
                wrong.append(issued[-latency])
    sim.add_testbench(bench)
    sim.run()
    return wrong


def test_const_memory_blocks():
    """The constant memory in blocks (a register per block, then the block
    select) returns every entry CONST_READ_LATENCY cycles after its
    address, across block boundaries; the same check fails when it expects
    one cycle less (so it can catch a wrong latency)."""
    assert _const_read_errors(CONST_READ_LATENCY) == []
    assert _const_read_errors(CONST_READ_LATENCY - 1)


def _bank_read_errors(latency):
    """Addresses whose int16-bank read (``Memories.res_r`` and ``wide_r``,
    two blocks of 1024 entries) does not give the value last written there
    ``latency`` cycles after the address, both ports reading one address per
    cycle in different orders."""
    rng = np.random.default_rng(13)
    mems = Memories(banks=1, row_bits=2, col_bits=9, kv_bytes=4, prog_depth=2,
                    const_entries=2)
    entries = 1 << 11
    writes = [0, 1023, 1024, entries - 1] + [int(a) for a in rng.integers(0, entries, 150)]
    model, wrong = {}, []
    sim = Simulator(mems)
    sim.add_clock(1e-6)

    async def bench(ctx):
        w = mems.res_w
        for a in writes:
            model[a] = int(rng.integers(-32768, 32768))
            ctx.set(w.addr, a)
            ctx.set(w.data, model[a])
            ctx.set(w.en, 1)
            await ctx.tick()
        ctx.set(w.en, 0)
        orders = [[int(a) for a in rng.permutation(sorted(model))] + [0] * latency
                  for _ in range(2)]
        issued = [[], []]
        for step in range(len(orders[0])):
            for port, order, seen in zip((mems.res_r, mems.wide_r), orders, issued):
                ctx.set(port.addr, order[step])
                seen.append(order[step])
            await ctx.tick()
            for port, seen in zip((mems.res_r, mems.wide_r), issued):
                if len(seen) > latency and ctx.get(port.data) != model[seen[-latency]]:
                    wrong.append(seen[-latency])
    sim.add_testbench(bench)
    sim.run()
    return wrong


def test_int16_bank_blocks():
    """The int16 bank in blocks (a register per block and port, then the
    block select) returns every value BLOCKED_READ_LATENCY cycles after its
    address on both read ports, across the block boundary; the same check
    fails when it expects one cycle less."""
    assert _bank_read_errors(BLOCKED_READ_LATENCY) == []
    assert _bank_read_errors(BLOCKED_READ_LATENCY - 1)
