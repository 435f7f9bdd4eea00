"""cocotb testbench for the accelerator top (:class:`trilut.hw.top.Accelerator`).

The configuration arrives as JSON in ``TRILUT_TB``: the accelerator's
parameters, ``seed``, ``pause`` (probability of a pause cycle on every AXI
channel) and ``break`` (a deliberately wrong reference that drops the last
k-block of every weight matrix, so that the suite can show this testbench
fails when the model is wrong; the block tests zero q's last weight row).

The host side speaks only AXI: programs, constants and control through a
cocotbext-axi ``AxiLiteMaster`` on ``s_axil``, activations through an
``AxiStreamSource`` on ``s_axis``, LINEAR weights (one frame per pass)
through a second ``AxiStreamSource`` on ``s_axis_wgt`` running concurrently,
results through an ``AxiStreamSink`` on ``m_axis``; every channel (AW, W, B,
AR, R, s_axis, s_axis_wgt, m_axis) gets a random pause generator.
Descriptors and constant entries are packed with :mod:`trilut.hw.isa`'s
layouts and the register offsets come from the build's
:class:`~trilut.hw.isa.RegisterMap`. A scoreboard compares every stored row
with the golden model (``tlmm_matmul`` + ``requantize`` / ``residual_add``)
exactly. Whole encoder blocks are compiled by :mod:`trilut.host.compiler`
(the same code path as the host driver) and every stored tensor is compared
with golden ``encoder_block``'s trace.

"""
import functools
import json
import logging
import os
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from trilut.golden import requantize, residual_add, tlmm_matmul
from trilut.golden.encoder import EncoderConfig, encoder_block, float_weight_shapes
from trilut.host.compiler import compile_block
from trilut.host.quantize import quantize_encoder, quantize_input
from trilut.hw import isa
from trilut.hw.isa import (KEY_BANK, RESIDUAL_BANK, VALUE_BANK, EngineKind, Epilogue,
                           ErrorCode, Head, Opcode, const_words, descriptor_words,
                           pack_descriptor, pack_requant_const, pack_residual_const,
                           pack_softmax_const)
from trilut.hw.top import Accelerator
from trilut.sim.streams import pauses

CONFIG = json.loads(os.environ.get("TRILUT_TB", "{}"))
CLOCK_NS = 10
#: Cycles a soft reset's CTRL write may take beyond the core's reset hold:
#: the AXI4-Lite handshakes under random pauses.
SOFT_RESET_SLACK = 40
REPORT = os.environ.get("TRILUT_TB_REPORT")   # optional JSON file of what was measured
MEASURED = {}


def _record(**kw):
    MEASURED.update(kw)
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump(MEASURED, f)


class TopBench:
    """Owns clock, reset and the three AXI interfaces of one Accelerator."""

    def __init__(self, dut, *, pause=None):
        self.dut = dut
        self.acc = Accelerator(**CONFIG["params"])
        self.regs = self.acc.regs
        self.rng = random.Random(CONFIG.get("seed", 1))
        self.np_rng = np.random.default_rng(CONFIG.get("seed", 1))
        pause = CONFIG.get("pause", 0.3) if pause is None else pause
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.wsrc = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_wgt"), dut.clk,
                                    dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        for bus in ("s_axil", "s_axis", "s_axis_wgt", "m_axis"):  # else a line per transfer
            logging.getLogger(f"cocotb.{dut._name}.{bus}").setLevel(logging.WARNING)
        if pause:
            w, r = self.axil.write_if, self.axil.read_if
            for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel,
                       self.src, self.wsrc, self.sink):
                ch.set_pause_generator(pauses(self.rng, pause))

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    # --- register access ---------------------------------------------------

    async def write(self, name, value, word=0):
        await self.axil.write_dword(self.regs.offset(name) + 4 * word, value)

    async def read(self, name):
        return await self.axil.read_dword(self.regs.offset(name))

    async def status(self):
        return data.Const(isa.STATUS, await self.read("status"))

    async def counters(self):
        return {name: await self.read(name) for name, _ in isa.COUNTERS}

    async def write_words(self, name, word, words):
        """Consecutive 32-bit words from ``word`` of window ``name``: one
        cocotbext-axi burst of single-word AXI4-Lite writes."""
        data = b"".join(w.to_bytes(4, "little") for w in words)
        await self.axil.write(self.regs.offset(name) + 4 * word, data)

    async def write_program(self, descs):
        await self.write_words("prog", 0, [w for d in descs for w in descriptor_words(d)])

    async def write_consts(self, const_set, entries):
        await self.write_words("const", 4 * const_set * self.acc.const_stride,
                               [w for e in entries for w in const_words(e)])

    async def start(self):
        await self.write("ctrl", isa.CTRL.const({"start": 1}).as_value().value)

    async def soft_reset(self):
        """CTRL.soft_reset. Its write response comes when the core is out of
        reset: within ``soft_reset_cycles`` plus the AXI handshakes (the
        units' valid bits have a reset; the core no longer needs hundreds of
        cycles to drain)."""
        t0 = get_sim_time(unit="ns")
        await self.write("ctrl", isa.CTRL.const({"soft_reset": 1}).as_value().value)
        cycles = (get_sim_time(unit="ns") - t0) / CLOCK_NS
        limit = self.acc.soft_reset_cycles + SOFT_RESET_SLACK
        assert cycles <= limit, f"soft reset took {cycles:.0f} cycles (limit {limit})"

    async def wait_idle(self, timeout=200_000):
        """Poll STATUS until not busy (the bus must stay responsive)."""
        for _ in range(timeout // 20):
            st = await self.status()
            if not st.busy:
                return st
            await ClockCycles(self.dut.clk, 20)
        raise AssertionError(f"still busy after {timeout} cycles: {st}")

    # --- streams -------------------------------------------------------------

    def send(self, frames, weights=()):
        """Queue ``frames`` on s_axis and ``weights`` (frames) on s_axis_wgt."""
        for src, fs in ((self.src, frames), (self.wsrc, weights)):
            for f in fs:
                src.send_nowait(AxiStreamFrame(f))

    async def receive(self, rows, length, wide=False, timeout_us=2000):
        frames = []
        for _ in range(rows):
            f = await with_timeout(self.sink.recv(), timeout_us, "us")
            frames.append(f.tdata)
        return self.acc.frames_to_rows(frames, length, wide)

    # --- golden model --------------------------------------------------------

    def matmul(self, a, w):
        e = self.acc.engine
        if CONFIG.get("break"):
            w = w.copy()
            w[(len(w) - 1) // e.k_block * e.k_block:] = 0
        return tlmm_matmul(a, w, group=e.group, encoding=e.encoding)

    def random_requant(self, n, k):
        """Per-channel (m, e, bias) that map K-long dot products of int8
        activations onto int8 with a spread of values and some saturation."""
        acc_std = 74 * np.sqrt(2 * k / 3)       # uniform int8 x uniform ternary
        centre = 15 + int(round(np.log2(acc_std / 40)))
        m = self.np_rng.integers(1 << 14, 1 << 16, size=n)
        e = self.np_rng.integers(max(1, centre - 1), centre + 2, size=n)
        bias = self.np_rng.integers(-int(acc_std), int(acc_std) + 1, size=n)
        return m, e, bias

    async def run_program(self, descs, frames, outputs, weights=(), timeout_us=2000):
        """Write ``descs``, queue ``frames`` on s_axis and ``weights`` on
        s_axis_wgt, start, collect ``outputs`` (a list of (rows, length,
        wide) per STORE) and wait for the sequencer to stop. Returns (stored
        arrays, STATUS, counters)."""
        await self.write_program(descs)
        self.send(frames, weights)
        await self.start()
        try:
            got = [await self.receive(*o, timeout_us=timeout_us) for o in outputs]
        except SimTimeoutError:
            raise AssertionError(f"no result after {timeout_us} us: {await self.status()}, "
                                 f"counters {await self.counters()}") from None
        st = await self.wait_idle()
        return got, st, await self.counters()


def _check(name, got, want):
    """Exact comparison; the golden result must not be degenerate (a
    scoreboard comparing constant outputs would prove nothing)."""
    assert len(np.unique(want)) >= min(8, want.size // 2), f"{name}: degenerate golden {want}"
    mism = np.argwhere(got != want)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, golden {want.shape}"
    assert len(mism) == 0, (
        f"{name}: {len(mism)} mismatches; first at {tuple(mism[0])}: hardware "
        f"{got[tuple(mism[0])]}, golden {want[tuple(mism[0])]}")


def _ok(st, pc):
    assert st.done and not st.error, f"program did not finish cleanly: {st}"
    assert int(st.pc) == pc, f"stopped at pc {int(st.pc)}, expected {pc}"


async def two_linears(tb, *, m_rows, k, n1, n2, banks=(0, 1), rows=(0, 0), sets=(0, 1)):
    """LOAD x -> LINEAR (W1, requant) -> LINEAR (W2, requant) -> STORE."""
    rng = tb.np_rng
    x = rng.integers(-128, 128, size=(m_rows, k))
    w1 = rng.integers(-1, 2, size=(k, n1))
    w2 = rng.integers(-1, 2, size=(n1, n2))
    c1, c2 = tb.random_requant(n1, k), tb.random_requant(n2, n1)
    await tb.write_consts(sets[0], [pack_requant_const(*t) for t in zip(*c1)])
    await tb.write_consts(sets[1], [pack_requant_const(*t) for t in zip(*c2)])
    b0, b1 = banks
    r0, r1 = rows
    prog = [
        pack_descriptor(Opcode.LOAD, dst_bank=b0, dst_row=r0, rows=m_rows, k=k),
        pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=b0, src_row=r0,
                        dst_bank=b1, dst_row=r1, rows=m_rows, k=k, n=n1, const=sets[0]),
        pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=b1, src_row=r1,
                        dst_bank=b0, dst_row=r0, rows=m_rows, k=n1, n=n2, const=sets[1]),
        pack_descriptor(Opcode.STORE, src_bank=b0, src_row=r0, rows=m_rows, k=n2),
        pack_descriptor(Opcode.END),
    ]
    wf = tb.acc.weight_frames(w1) + tb.acc.weight_frames(w2)
    (got,), st, cnt = await tb.run_program(prog, tb.acc.row_frames(x), [(m_rows, n2, False)],
                                           wf)
    h = requantize(tb.matmul(x, w1), *c1)
    want = requantize(tb.matmul(h, w2), *c2)
    _check("two_linears", got, want)
    _ok(st, len(prog) - 1)
    e = tb.acc.engine
    beats = m_rows * (n1 // e.lanes * -(-k // e.k_block) + n2 // e.lanes * -(-n1 // e.k_block))
    assert cnt["engine_busy"] == beats, f"engine_busy {cnt['engine_busy']}, expected {beats}"
    assert cnt["epilogue_busy"] == m_rows * (n1 + n2)
    assert cnt["load_busy"] == m_rows * -(-k // tb.acc.axis_bytes)
    assert cnt["store_busy"] == m_rows * -(-n2 // tb.acc.axis_bytes)
    assert cnt["wgt_load"] <= beats // m_rows, "weights are sent once per pass"
    return cnt


@cocotb.test()
async def linear_chain(dut):
    """LOAD -> LINEAR -> LINEAR -> STORE, random pauses on every channel."""
    tb = TopBench(dut)
    await tb.reset()
    acc = tb.acc
    cnt = await two_linears(tb, m_rows=5, k=acc.max_width, n1=4 * acc.lanes,
                            n2=acc.max_width // acc.lanes * acc.lanes)
    dut._log.info("counters: %s", cnt)


@cocotb.test()
async def second_shape(dut):
    """Other shapes in the same build: K not a multiple of k_block, other
    banks, base rows and constant sets; then the first shape again."""
    tb = TopBench(dut)
    await tb.reset()
    acc = tb.acc
    last_bank = acc.banks - 1
    await two_linears(tb, m_rows=3, k=7, n1=2 * acc.lanes, n2=acc.lanes,
                      banks=(last_bank, 0), rows=(acc.max_rows - 3, 2),
                      sets=(acc.const_sets - 1, 0))
    await two_linears(tb, m_rows=acc.max_rows, k=acc.engine.k_block, n1=acc.lanes,
                      n2=2 * acc.lanes)


@cocotb.test()
async def residual(dut):
    """LOAD residual (int16) and x, LINEAR with the residual-add epilogue
    (bias, per-channel multipliers), STORE the residual bank; then a requant
    LINEAR reads the same x again and both results are checked."""
    tb = TopBench(dut)
    await tb.reset()
    acc, rng = tb.acc, tb.np_rng
    width = min(acc.max_width, 16 * acc.lanes)
    m_rows, k, n = 4, width - 1, width
    x = rng.integers(-128, 128, size=(m_rows, k))
    res = rng.integers(-20000, 20000, size=(m_rows, n))
    res[0, :2] = [32767, -32768]
    w = rng.integers(-1, 2, size=(k, n))
    mx = rng.integers(1 << 15, 1 << 16, size=n)
    ex = rng.integers(12, 15, size=n)
    my = rng.integers(1 << 15, 1 << 16, size=n)
    ey = rng.integers(15, 17, size=n)
    bias = rng.integers(-5000, 5000, size=n)
    await tb.write_consts(1, [pack_residual_const(*t) for t in zip(mx, ex, my, ey, bias)])
    rows = 3
    prog = [
        pack_descriptor(Opcode.LOAD, dst_bank=RESIDUAL_BANK, dst_row=rows, rows=m_rows, k=n),
        pack_descriptor(Opcode.LOAD, dst_bank=0, dst_row=1, rows=m_rows, k=k),
        pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.RESIDUAL, src_bank=0, src_row=1,
                        dst_bank=RESIDUAL_BANK, dst_row=rows, rows=m_rows, k=k, n=n, const=1),
        pack_descriptor(Opcode.STORE, src_bank=RESIDUAL_BANK, src_row=rows, rows=m_rows, k=n),
        pack_descriptor(Opcode.END),
    ]
    frames = acc.row_frames(res, wide=True) + acc.row_frames(x)
    (got,), st, cnt = await tb.run_program(prog, frames, [(m_rows, n, True)],
                                           acc.weight_frames(w))
    want = residual_add(tb.matmul(x, w) + bias, mx, ex, res, my, ey)
    _check("residual", got, want)
    _ok(st, len(prog) - 1)
    dut._log.info("residual counters: %s", cnt)


def valid_attn(acc):
    """Fields of a valid ATTN_QK and ATTN_AV descriptor (2 rows, 2 heads)."""
    i8 = acc.int8_engine
    L, K = i8.lanes, i8.k_per_cycle
    qk = dict(engine=EngineKind.INT8, epilogue=Epilogue.REQUANT_SOFTMAX, src_bank=0,
              dst_bank=1, rows=2, k=2 * K, n=2 * L, heads=2)
    return qk, dict(qk, epilogue=Epilogue.REQUANT, k=2 * L, n=2 * L)


def attn_cases(acc):
    """Malformed ATTN_QK / ATTN_AV descriptors and the code each must raise."""
    i8 = acc.int8_engine
    W, R, L, K = acc.max_width, acc.max_rows, i8.lanes, i8.k_per_cycle
    qk, av = valid_attn(acc)
    QK, AV = Opcode.ATTN_QK, Opcode.ATTN_AV
    return [
        (QK, {}, ErrorCode.UNSUPPORTED),
        (QK, dict(qk, engine=EngineKind.TLMM), ErrorCode.UNSUPPORTED),
        (QK, dict(qk, epilogue=Epilogue.REQUANT), ErrorCode.UNSUPPORTED),
        (AV, dict(av, epilogue=Epilogue.REQUANT_SOFTMAX), ErrorCode.UNSUPPORTED),
        (QK, dict(qk, head=Head.LAYERNORM), ErrorCode.UNSUPPORTED),
        (QK, dict(qk, src_bank=KEY_BANK), ErrorCode.BANK),
        # 8-bit probabilities live in an int8 bank (this build's probs_bits)
        (QK, dict(qk, dst_bank=RESIDUAL_BANK), ErrorCode.BANK),
        (AV, dict(av, src_bank=RESIDUAL_BANK), ErrorCode.BANK),
        (QK, dict(qk, dst_bank=acc.banks), ErrorCode.BANK),
        (QK, dict(qk, src_row=R - 1), ErrorCode.ROWS),
        (AV, dict(av, rows=0), ErrorCode.ROWS),
        (QK, dict(qk, heads=0), ErrorCode.SHAPE),
        (QK, dict(qk, k=K + 1), ErrorCode.SHAPE),          # head dim not whole k-blocks
        (QK, dict(qk, n=0), ErrorCode.SHAPE),               # no keys
        (AV, dict(av, n=L + 1), ErrorCode.SHAPE),          # head dim not whole lane blocks
        (QK, dict(qk, n=(R // L + 1) * L), ErrorCode.SHAPE),   # more keys than max_rows
        (AV, dict(av, k=R + 1), ErrorCode.SHAPE),          # more keys than max_rows
        (QK, dict(qk, heads=W // (2 * K) + 1), ErrorCode.SHAPE),  # heads x K > max_width
        (AV, dict(av, heads=W // (2 * L) + 1), ErrorCode.SHAPE),  # heads x N > max_width
        (QK, dict(qk, const=acc.const_sets), ErrorCode.CONST),
        (QK, dict(qk, dst_bank=0, dst_row=1), ErrorCode.OVERLAP),
        (AV, dict(av, dst_bank=0, src_row=3, dst_row=2), ErrorCode.OVERLAP),
    ]


@cocotb.test()
async def malformed(dut):
    """Malformed descriptors stop the sequencer with the right code, the bus
    stays responsive, soft reset returns to idle (also mid-pass), and a valid
    program runs afterwards."""
    tb = TopBench(dut)
    await tb.reset()
    acc = tb.acc
    L, W, R = acc.lanes, acc.max_width, acc.max_rows
    ok_lin = dict(epilogue=Epilogue.REQUANT, src_bank=0, dst_bank=1, rows=1, k=W, n=L)
    ok_norm = dict(head=Head.LAYERNORM, src_bank=RESIDUAL_BANK, dst_bank=0, rows=1, k=W, n=W)
    cases = [
        ([pack_descriptor(Opcode.LOAD, rows=1, k=4), pack_descriptor(9)], ErrorCode.OPCODE, 1),
        ([pack_descriptor(Opcode.LOAD, dst_bank=acc.banks, rows=1, k=4)], ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.STORE, src_bank=acc.banks + 1, rows=1, k=4)], ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.LOAD, dst_row=R - 1, rows=2, k=4)], ErrorCode.ROWS, 0),
        ([pack_descriptor(Opcode.LOAD, rows=0, k=4)], ErrorCode.ROWS, 0),
        ([pack_descriptor(Opcode.LOAD, rows=1, k=W + 1)], ErrorCode.SHAPE, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, n=L + 1))], ErrorCode.SHAPE, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, n=W + L))], ErrorCode.SHAPE, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, epilogue=Epilogue.RESIDUAL))],
         ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, src_bank=KEY_BANK))], ErrorCode.BANK, 0),
        # int8 weights: N a multiple of the int8 engine's lanes
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, engine=EngineKind.INT8,
                                                n=acc.int8_engine.lanes + 1))],
         ErrorCode.SHAPE, 0),
        # a RESIDUAL pass reads its destination rows: disjoint from its source
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, epilogue=Epilogue.RESIDUAL,
                                                src_bank=RESIDUAL_BANK, src_row=2,
                                                dst_bank=RESIDUAL_BANK, rows=3))],
         ErrorCode.OVERLAP, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, const=acc.const_sets))],
         ErrorCode.CONST, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, dst_bank=0, rows=3, dst_row=1))],
         ErrorCode.OVERLAP, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, epilogue=Epilogue.REQUANT_SOFTMAX))],
         ErrorCode.UNSUPPORTED, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, epilogue=Epilogue.REQUANT_GELU,
                                                dst_bank=0, rows=3, dst_row=2))],
         ErrorCode.OVERLAP, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, head=Head.RMSNORM))],
         ErrorCode.UNSUPPORTED, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, src_bank=0))], ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, dst_bank=acc.banks))],
         ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, n=L))], ErrorCode.SHAPE, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, src_row=R - 1, rows=2))],
         ErrorCode.ROWS, 0),
        ([pack_descriptor(Opcode.LINEAR, **dict(ok_lin, epilogue=Epilogue.REQUANT_GELU,
                                                dst_bank=KEY_BANK))], ErrorCode.BANK, 0),
        ([pack_descriptor(Opcode.NORM, **dict(ok_norm, dst_bank=VALUE_BANK))],
         ErrorCode.BANK, 0),
    ] + [([pack_descriptor(op, **fields)], code, 0) for op, fields, code in attn_cases(acc)]
    for prog, code, pc in cases:
        frames = acc.row_frames(np.zeros((1, 4), dtype=int)) if pc else []
        await tb.write_program(prog)
        tb.send(frames)
        await tb.start()
        st = await tb.wait_idle()
        assert st.error and not st.done, f"{code.name}: no error raised ({st})"
        assert st.code == code, f"expected {code.name}, got {st.code}"
        assert int(st.pc) == pc, f"{code.name}: stopped at pc {int(st.pc)}, expected {pc}"
        build = data.Const(isa.BUILD, await tb.read("build"))
        assert int(build.max_rows) == R and int(build.max_width) == W
        await tb.soft_reset()
        st = await tb.status()
        assert not (st.busy or st.error or st.done), f"soft reset left {st}"
    # A unit error inside an ATTN pass: Shiftmax with x0 = 0 stops with UNIT
    # (STATUS.unit bit 7), the bus stays responsive, soft reset clears it.
    await tb.write_consts(0, [pack_softmax_const(1 << 15, 15, 0)])
    await tb.write_program([pack_descriptor(Opcode.ATTN_QK, **valid_attn(acc)[0])])
    await tb.start()
    st = await tb.wait_idle()
    assert st.error and st.code == ErrorCode.UNIT and int(st.unit) == 1 << 7, f"{st}"
    await tb.soft_reset()
    st = await tb.status()
    assert not (st.busy or st.error or st.done), f"soft reset left {st}"
    # Soft reset in the middle of a LOAD whose data never comes.
    await tb.write_program([pack_descriptor(Opcode.LOAD, rows=2, k=W)])
    await tb.start()
    await ClockCycles(dut.clk, 50)
    assert (await tb.status()).busy
    await tb.soft_reset()
    st = await tb.status()
    assert not (st.busy or st.error), f"soft reset mid-pass left {st}"
    # The accelerator accepts a new, valid program.
    await two_linears(tb, m_rows=2, k=min(W, 64), n1=L, n2=L)


@cocotb.test()
async def weight_errors(dut):
    """Malformed s_axis_wgt frames for a LOAD -> LINEAR (K = N = max_width,
    the weight store's full depth): a frame one beat longer than the depth
    stops with UNIT and only the store's overflow flag, a frame with fewer
    beats than the LINEAR's K and N need stops at the LINEAR with only the
    mismatch flag; the bus stays responsive, soft reset clears both, and a
    valid program then runs bit-exact."""
    tb = TopBench(dut)
    await tb.reset()
    acc, rng = tb.acc, tb.np_rng
    L, W = acc.lanes, acc.max_width
    e = acc.engine
    assert -(-W // e.k_block) * (W // L) == acc.wstore_depth
    x = rng.integers(-128, 128, size=(2, W))
    prog = [pack_descriptor(Opcode.LOAD, rows=2, k=W),
            pack_descriptor(Opcode.LINEAR, epilogue=Epilogue.REQUANT, src_bank=0, dst_bank=1,
                            rows=2, k=W, n=W),
            pack_descriptor(Opcode.END)]
    full = acc.weight_frames(rng.integers(-1, 2, size=(W, W)))[0]
    short = acc.weight_frames(rng.integers(-1, 2, size=(W, W - L)))[0]
    for frame, flag in ((full + bytes(acc.axis_bytes), "wstore_overflow"),
                        (short, "wstore_mismatch")):
        await tb.write_program(prog)
        tb.send(acc.row_frames(x), [frame])
        await tb.start()
        st = await tb.wait_idle()
        bit = 1 << isa.UNIT_FLAGS.index(flag)
        assert st.error and st.code == ErrorCode.UNIT and int(st.unit) == bit, f"{flag}: {st}"
        assert int(st.pc) == 1, f"{flag}: stopped at pc {int(st.pc)}, expected 1 (LINEAR)"
        await with_timeout(tb.wsrc.wait(), 100, "us")     # the whole frame was taken
        await tb.soft_reset()
        st = await tb.status()
        assert not (st.busy or st.error or st.done), f"soft reset left {st}"
    await two_linears(tb, m_rows=3, k=W, n1=W, n2=2 * L)


@cocotb.test()
async def pass_cycles(dut):
    """Without pauses: one LINEAR pass's cycles (the PASS_CYCLES register, and
    the run phase after the constant copy) against the engine's analytic
    cycles()."""
    tb = TopBench(dut, pause=0.0)
    await tb.reset()
    acc, rng = tb.acc, tb.np_rng
    e = acc.engine
    results = []
    for m_rows, k, n in ((4, acc.max_width, 16 * e.lanes),
                         (acc.max_rows, acc.max_width // 4, e.lanes)):
        x = rng.integers(-128, 128, size=(m_rows, k))
        w = rng.integers(-1, 2, size=(k, n))
        c = tb.random_requant(n, k)
        await tb.write_consts(0, [pack_requant_const(*t) for t in zip(*c)])
        await tb.write_program([pack_descriptor(Opcode.LOAD, rows=m_rows, k=k),
                                pack_descriptor(Opcode.END)])
        tb.send(acc.row_frames(x))
        await tb.start()
        _ok(await tb.wait_idle(), 1)
        # The weights wait in the source before the pass starts.
        _, st, cnt = await tb.run_program(
            [pack_descriptor(Opcode.LINEAR, src_bank=0, dst_bank=1, rows=m_rows, k=k, n=n),
             pack_descriptor(Opcode.END)], [], [], acc.weight_frames(w))
        _ok(st, 1)
        (got,), st, _ = await tb.run_program(
            [pack_descriptor(Opcode.STORE, src_bank=1, rows=m_rows, k=n),
             pack_descriptor(Opcode.END)], [], [(m_rows, n, False)])
        _check("pass_cycles", got, requantize(tb.matmul(x, w), *c))
        lin = cnt["engine_busy"] + cnt["engine_stall"]      # run phase of the pass
        analytic = e.cycles(m_rows, k, n)
        dut._log.info("LINEAR M=%d K=%d N=%d: pass %d cycles (run phase %d, constant "
                      "copy %d); engine analytic %d; engine busy %d, epilogue busy %d",
                      m_rows, k, n, cnt["pass_cycles"], lin, n, analytic,
                      cnt["engine_busy"], cnt["epilogue_busy"])
        results.append({"m": m_rows, "k": k, "n": n, "pass_cycles": cnt["pass_cycles"],
                        "run_cycles": lin, "analytic": analytic,
                        "engine_busy": cnt["engine_busy"]})
        bound = max(analytic, m_rows * n + e.fill_cycles(e.k_blocks)) + 60
        assert lin <= bound, f"LINEAR took {lin} cycles, bound {bound}"
    _record(linear=results)


# --- whole encoder blocks through the compiler ----------------------------------------

def random_block(seed, *, hidden, heads, ffn, seq, **modes):
    """A random float encoder block (some negative LayerNorm gammas) quantized
    by ``quantize_encoder`` (calibration on 16 random sequences) with the
    EncoderConfig ``modes`` (weights, norm, act_quant, probs_bits,
    gelu_mode); returns (BlockParams, int16 input x of one sequence)."""
    import math
    rng = np.random.default_rng(seed)
    cfg = EncoderConfig(hidden=hidden, heads=heads, ffn=ffn, max_seq=seq, **modes)
    w = {}
    for name, shape in float_weight_shapes(cfg).items():
        if name.endswith(("ln1.weight", "ln2.weight")):
            g = 1 + 0.3 * rng.standard_normal(shape)
            g[::5] *= -1
            w[name] = g
        elif name.endswith(("ln1.bias", "ln2.bias")):
            w[name] = 0.1 * rng.standard_normal(shape)
        elif name.endswith(".weight"):
            w[name] = rng.standard_normal(shape) / math.sqrt(shape[0])
        else:
            w[name] = 0.05 * rng.standard_normal(shape)
    params = quantize_encoder(w, cfg, rng.standard_normal((16, seq, hidden)))
    return params.blocks[0], quantize_input(rng.standard_normal((seq, hidden)), params)


def digits_block(image=0):
    """Block 0 of the shipped digits model (host.models.digits) and the int16
    encoder input of test image ``image``."""
    from trilut.host.models.digits.pipeline import DigitsPipeline
    pipe = DigitsPipeline()
    return pipe.params.blocks[0], pipe.encoder_input(pipe.x_test[image:image + 1])[0]


def golden_trace(block, x):
    """golden encoder_block trace; with ``break``, q's weights lose their last
    k-block (a wrong model: q and everything after it must mismatch)."""
    import dataclasses
    if CONFIG.get("break"):
        w = block.q.weights.copy()
        w[-1:] = 0
        block = dataclasses.replace(block, q=dataclasses.replace(block.q, weights=w))
    return encoder_block(x, block, trace=True)


async def run_compiled(tb, prog, x, timeout_us=20_000, stall=0):
    """Constants, program (and on a decoder build its ``kv_pos``), input
    frames of ``prog`` (host.compiler) -> dict of
    decoded outputs, STATUS, counters. ``stall``: the host does not read
    m_axis for that many cycles after the start (the sequencer must wait at
    the first STORE, busy, without error, and lose nothing)."""
    for s, entries in prog.consts:
        await tb.write_consts(s, entries)
    await tb.write_program(prog.descriptors)
    if "kv_pos" in tb.regs.registers:     # decoder builds: the program's KV position
        await tb.write("kv_pos", getattr(prog, "kv_pos", 0))
    tb.send(prog.input_frames(x), prog.weight_frames())
    if stall:
        tb.sink.clear_pause_generator()
        tb.sink.pause = True
    await tb.start()
    if stall:
        await ClockCycles(tb.dut.clk, stall)
        st = await tb.status()
        first_store = next(i for i, n in enumerate(prog.passes) if n.startswith("store"))
        assert st.busy and not st.error and int(st.pc) == first_store, f"{st}"
        assert tb.sink.empty(), "frames arrived while the sink was paused"
        tb.sink.set_pause_generator(pauses(tb.rng, CONFIG.get("pause", 0.3)))
    raw = []
    try:
        for _ in range(prog.output_frames):
            f = await with_timeout(tb.sink.recv(), timeout_us, "us")
            raw.append(f.tdata)
    except SimTimeoutError:
        raise AssertionError(f"no result after {timeout_us} us: {await tb.status()}, "
                             f"counters {await tb.counters()}") from None
    st = await tb.wait_idle()
    assert tb.sink.empty(), "extra frames on m_axis"
    return prog.decode(raw), st, await tb.counters()


def check_block(got, trace, label):
    """Every stored tensor exactly equal to golden's trace of the same name."""
    for name, value in got.items():
        _check(f"{label} {name}", value, trace[name].astype(np.int64))


async def block_run(tb, block, x, label, *, trace=True, stall=0):
    prog = compile_block(block, tb.acc, len(x), trace=trace)
    got, st, cnt = await run_compiled(tb, prog, x, stall=stall)
    check_block(got, golden_trace(block, x), label)
    _ok(st, len(prog.descriptors) - 1)
    return got, cnt


# seq 7: neither a multiple of attn_lanes (the last key block of QK^T is cut)
# nor of attn_kpc (AV's probability rows are zero-padded).
SMALL = dict(hidden=32, heads=4, ffn=64, seq=7)
#: bench block --model wide: a ternary block of all-MiniLM-L6-v2's shape,
#: per-token activation quantization, 16 tokens.
WIDE = dict(hidden=384, heads=12, ffn=1536, seq=16, act_quant="token")


@cocotb.test()
async def whole_block(dut):
    """Block 0 of the digits model (2 heads, hidden 64, FFN 256, sequence 16)
    compiled by host.compiler, every traced tensor stored and compared with
    golden encoder_block; then a second program in the same build with
    another shape (4 heads, hidden 32, FFN 64, sequence 7, random weights),
    during which the host stops reading m_axis for 20,000 cycles (the
    sequencer waits at the first STORE; nothing is lost or duplicated).
    Random pauses on all seven AXI channels."""
    tb = TopBench(dut)
    await tb.reset()
    block, x = digits_block()
    _, cnt = await block_run(tb, block, x, "digits")
    dut._log.info("digits block counters: %s", cnt)
    block, x = random_block(CONFIG.get("seed", 1), **SMALL)
    await block_run(tb, block, x, "small", stall=20_000)


@cocotb.test()
async def token_blocks(dut):
    """The issue-7 datapath (a build with gelu_mode "accurate" and 16-bit
    probabilities): whole blocks compiled by host.compiler, every traced
    tensor compared with golden, random pauses on all AXI channels.

    * post-LN, per-token quantization, int8 weights (the MiniLM/BERT layer):
      DynQuant in front of q/k/v/o/fc1/fc2 on the int8 engine, RowScale,
      int16 attn/ln1/gelu in the int16 bank, LayerNorm outputs negated per
      channel, 16-bit probabilities through ATTN_AV;
    * pre-LN, per-token quantization, ternary weights: DynQuant into the
      TLMM engine;
    * pre-LN, static int8 activations, int8 q/k/v/o and ternary fc1/fc2:
      int8 LINEARs from an int8 bank, the accurate GELU's int16 input."""
    tb = TopBench(dut)
    await tb.reset()
    for i, (shape, modes) in enumerate((
            (SMALL, dict(weights="int8", norm="post", act_quant="token", probs_bits=16,
                         gelu_mode="accurate")),
            (dict(hidden=32, heads=2, ffn=64, seq=5),
             dict(norm="pre", act_quant="token", probs_bits=16, gelu_mode="accurate")),
            (dict(hidden=48, heads=3, ffn=64, seq=6),
             dict(weights=[{n: "int8" for n in ("q", "k", "v", "o")}], probs_bits=16,
                  gelu_mode="accurate")))):
        block, x = random_block(CONFIG.get("seed", 1) + i, **shape, **modes)
        await block_run(tb, block, x, f"token block {i}")


@cocotb.test()
async def attn_extremes(dut):
    """ATTN_QK and ATTN_AV alone at the build's limits: Q, K and V LOADed
    straight into an int8 bank and the KV banks (K/V read back by STORE),
    heads x head dim = max_width, keys = rows = max_rows; query rows all
    -128, all +127, all 0 (equal logits), one-hot; a key row and a value
    row all -128; logits saturating at both ends. probs and attn exact
    against golden int8_matmul -> requantize -> shiftmax -> int8_matmul ->
    requantize."""
    from trilut.golden.encoder import _scale_for_x0, int8_matmul
    from trilut.golden.nonlinear import shiftmax
    tb = TopBench(dut)
    await tb.reset()
    acc, rng = tb.acc, tb.np_rng
    t, c, h = acc.max_rows, acc.max_width, 4
    d = c // h
    q = rng.integers(-128, 128, size=(t, c))
    q[0], q[1], q[2] = -128, 127, 0
    q[3] = 0
    q[3, 5] = 127
    k = rng.integers(-128, 128, size=(t, c))
    k[4] = -128
    v = rng.integers(-128, 128, size=(t, c))
    v[5] = -128
    lm, le, x0 = 23000, 22, -13          # logits ~ qk / 180: saturates at both ends
    am, ae = 21000, 15                   # attn ~ av / 1.6
    await tb.write_consts(0, [pack_softmax_const(lm, le, x0)])
    await tb.write_consts(1, [pack_requant_const(am, ae, 0)])
    qk_f = dict(engine=EngineKind.INT8, heads=h, rows=t, const=0)
    prog = [
        pack_descriptor(Opcode.LOAD, dst_bank=0, rows=t, k=c),
        pack_descriptor(Opcode.LOAD, dst_bank=KEY_BANK, rows=t, k=c),
        pack_descriptor(Opcode.LOAD, dst_bank=VALUE_BANK, rows=t, k=c),
        pack_descriptor(Opcode.STORE, src_bank=KEY_BANK, rows=t, k=c),
        pack_descriptor(Opcode.STORE, src_bank=VALUE_BANK, rows=t, k=c),
        pack_descriptor(Opcode.ATTN_QK, epilogue=Epilogue.REQUANT_SOFTMAX, src_bank=0,
                        dst_bank=1, k=d, n=t, **qk_f),
        pack_descriptor(Opcode.STORE, src_bank=1, rows=t, k=h * t),
        pack_descriptor(Opcode.ATTN_AV, epilogue=Epilogue.REQUANT, src_bank=1, dst_bank=0,
                        k=t, n=d, **dict(qk_f, const=1)),
        pack_descriptor(Opcode.STORE, src_bank=0, rows=t, k=c),
        pack_descriptor(Opcode.END),
    ]
    frames = acc.row_frames(q) + acc.row_frames(k) + acc.row_frames(v)
    (k_got, v_got, p_got, a_got), st, cnt = await tb.run_program(
        prog, frames, [(t, c, False), (t, c, False), (t, h * t, False), (t, c, False)],
        timeout_us=5000)
    split = lambda a: a.reshape(t, h, d).transpose(1, 0, 2)     # noqa: E731
    logits = requantize(int8_matmul(split(q), split(k).transpose(0, 2, 1)), lm, le)
    assert logits.min() == -128 and logits.max() == 127, "logits must saturate both ways"
    probs = shiftmax(logits, _scale_for_x0(x0))
    if CONFIG.get("break"):
        probs[:, :, -1] = 0
    attn = requantize(int8_matmul(probs, split(v)), am, ae).transpose(1, 0, 2).reshape(t, c)
    _check("K read back", k_got, k)
    _check("V read back", v_got, v)
    _check("probs", p_got, probs.transpose(1, 0, 2).reshape(t, h * t))
    _check("attn", a_got, attn)
    _ok(st, len(prog) - 1)
    dut._log.info("attn_extremes counters: %s", cnt)


@cocotb.test()
async def small_block(dut):
    """The small shape alone (every traced tensor, random pauses): the cheap
    run behind the wrong-model check."""
    tb = TopBench(dut)
    await tb.reset()
    block, x = random_block(CONFIG.get("seed", 1), **SMALL)
    await block_run(tb, block, x, "small")


@cocotb.test()
async def reset_mid_block(dut):
    """CTRL.soft_reset in the middle of a block (inside ATTN_QK, after the
    host fed only the frames up to it), then the next program (other weights,
    every traced tensor) runs bit-exact."""
    tb = TopBench(dut)
    await tb.reset()
    block, x = random_block(CONFIG.get("seed", 1) + 1, **SMALL)
    prog = compile_block(block, tb.acc, len(x))
    for s, entries in prog.consts:
        await tb.write_consts(s, entries)
    await tb.write_program(prog.descriptors)
    qk = prog.passes.index("qk")
    tb.send(prog.input_frames(x), prog.weight_frames()[:3])    # LOAD x; k, v, q weights
    await tb.start()
    for _ in range(5000):
        st = await tb.status()
        if int(st.pc) == qk:
            break
        await ClockCycles(dut.clk, 5)
    await ClockCycles(dut.clk, 50)
    st = await tb.status()
    assert st.busy and int(st.pc) == qk, f"expected to be inside ATTN_QK: {st}"
    await tb.soft_reset()
    st = await tb.status()
    assert not (st.busy or st.error or st.done), f"soft reset mid-block left {st}"
    block, x = random_block(CONFIG.get("seed", 1) + 2, **SMALL)
    await block_run(tb, block, x, "after reset")


@cocotb.test()
async def block_cycles(dut):
    """Without pauses, the digits block (CONFIG ``model`` "digits"; "minilm":
    layer 0 of all-MiniLM-L6-v2 on 8 tokens; "wide": a random ternary block
    of shape :data:`WIDE`) as an untraced program:

    1. the whole program in one run, its weight frames queued on s_axis_wgt
       only when CTRL.start has been written (nothing preloaded), s_axis_wgt
       delivering a beat in a random ``rate`` share of cycles (1 = every
       cycle; CONFIG ``wgt_rates``): total cycles, weight transfers taken
       (``wgt_load``), of them while a compute pass ran (``wgt_overlap``),
       and cycles a LINEAR waited for weights (``wgt_wait``); the hidden
       fraction of the weight-loading time (``beats / rate`` cycles) is 1 -
       wgt_wait / (beats / rate);
    2. one pass at a time (all frames queued up front): PASS_CYCLES of each
       pass, and for each LINEAR its MACs (M x K x N) per pass cycle and per
       run-phase cycle against its engine's peak ``macs_per_cycle`` (TLMM
       or int8).

    Both runs' block outputs checked exactly."""
    from trilut.hw.isa import unpack_descriptor
    tb = TopBench(dut, pause=0.0)
    await tb.reset()
    model = CONFIG.get("model", "digits")
    if model == "minilm":
        from trilut.gen.hflayer import layer_input
        _, enc, x, _ = layer_input()
        block = enc.blocks[0]
    elif model == "wide":
        block, x = random_block(CONFIG.get("seed", 1), **WIDE)
    else:
        block, x = digits_block(1)
    engines = {EngineKind.TLMM: tb.acc.engine, EngineKind.INT8: tb.acc.int8_engine}
    prog = compile_block(block, tb.acc, len(x))
    out = prog.outputs[-1].name
    want = golden_trace(block, x)[out].astype(np.int64)
    for s, entries in prog.consts:
        await tb.write_consts(s, entries)
    beats = sum(len(f) // tb.acc.axis_bytes for f in prog.weight_frames())

    whole = []
    for rate in CONFIG.get("wgt_rates", [1.0, 0.25, 0.1, 0.05]):
        if rate < 1:
            tb.wsrc.set_pause_generator(pauses(tb.rng, 1 - rate))
        else:
            tb.wsrc.clear_pause_generator()
            tb.wsrc.pause = False
        await tb.write_program(prog.descriptors)
        tb.send(prog.input_frames(x))
        await tb.start()
        tb.send((), prog.weight_frames())
        raw = [(await with_timeout(tb.sink.recv(), 20_000, "us")).tdata
               for _ in range(prog.output_frames)]
        _ok(await tb.wait_idle(timeout=2_000_000), len(prog.descriptors) - 1)
        cnt = await tb.counters()
        _check(f"{model} {out} (whole program, rate {rate})", prog.decode(raw)[out], want)
        hidden = max(0.0, 1 - cnt["wgt_wait"] / (beats / rate))
        dut._log.info("%s block in one run, s_axis_wgt rate %.2f: %d cycles; %d weight "
                      "beats, %d taken while busy, %d during compute passes, LINEARs waited "
                      "%d cycles for weights: %.4f of weight loading hidden", model, rate,
                      cnt["cycles"], beats, cnt["wgt_load"], cnt["wgt_overlap"],
                      cnt["wgt_wait"], hidden)
        whole.append({"rate": rate, "cycles": cnt["cycles"], "weight_beats": beats,
                      "wgt_load": cnt["wgt_load"], "wgt_overlap": cnt["wgt_overlap"],
                      "wgt_wait": cnt["wgt_wait"], "weight_load_hidden_fraction": hidden})
    tb.wsrc.clear_pause_generator()
    tb.wsrc.pause = False       # (clearing the generator can leave a pause on)

    tb.send(prog.input_frames(x), prog.weight_frames())
    cycles, linear, raw = {}, {}, []
    end = prog.descriptors[-1]
    for name, desc in zip(prog.passes[:-1], prog.descriptors[:-1]):
        await tb.write_program([desc, end])
        await tb.start()
        if name.startswith("store"):
            o = prog.outputs[0]
            for _ in range(o.rows):
                raw.append((await with_timeout(tb.sink.recv(), 2000, "us")).tdata)
        st = await tb.wait_idle()
        _ok(st, 1)
        cnt = await tb.counters()
        cycles[name] = cnt["pass_cycles"]
        f = unpack_descriptor(desc)
        if f["opcode"] == Opcode.LINEAR:
            macs = f["rows"] * f["k"] * f["n"]
            run = cnt["engine_busy"] + cnt["engine_stall"]
            linear[name] = {"m": f["rows"], "k": f["k"], "n": f["n"], "macs": macs,
                            "pass_cycles": cnt["pass_cycles"], "run_cycles": run,
                            "macs_per_cycle": macs / cnt["pass_cycles"],
                            "macs_per_cycle_run": macs / run,
                            "peak": engines[f["engine"]].macs_per_cycle}
    got = prog.decode(raw)
    _check(f"{model} {out}", got[out], want)
    compute = sum(v for k, v in cycles.items() if not k.startswith(("load", "store")))
    lin_macs = sum(v["macs"] for v in linear.values())
    lin_cycles = sum(v["pass_cycles"] for v in linear.values())
    lin_run = sum(v["run_cycles"] for v in linear.values())
    # the LINEARs' peak (one engine kind per model here; the largest if mixed)
    peak = max(v["peak"] for v in linear.values())
    dut._log.info("%s block, cycles per pass: %s; compute passes %d", model, cycles, compute)
    for name, v in linear.items():
        dut._log.info("LINEAR %s: %s", name, v)
    dut._log.info("LINEAR passes: %.2f MACs/cycle over the passes, %.2f over their run "
                  "phases; engine peak %d", lin_macs / lin_cycles, lin_macs / lin_run, peak)
    _record(block={"model": model, "hidden": block.hidden, "heads": block.heads,
                   "ffn": block.ffn, "seq": len(x), "cycles": cycles, "compute_cycles": compute,
                   "linear": linear, "macs_per_cycle_peak": peak,
                   "macs_per_cycle_linear": lin_macs / lin_cycles,
                   "macs_per_cycle_linear_run": lin_macs / lin_run,
                   "whole_program": whole, "cycles_block": whole[0]["cycles"],
                   "weight_load_hidden_fraction": whole[0]["weight_load_hidden_fraction"]})


@functools.lru_cache(maxsize=4)
def _verilog(params_json):
    """The Verilog of one build, generated once per process (about 10 s at
    max_width 256; the runner's build cache is keyed by its hash)."""
    from ..hw.top import generate_verilog
    return generate_verilog(Accelerator(**json.loads(params_json)), "accel")


def run(params, *, seed=1, pause=0.3, broken=False, testcase=None, report=None, **extra):
    """Host side: build (cached) and run this testbench on Verilator for an
    Accelerator with ``params``; ``extra``: more CONFIG entries (``model``,
    ``wgt_rates`` of block_cycles). Raises ``SimFailure`` on any mismatch;
    returns the number of tests passed."""
    from .runner import run_cocotb
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "pause": pause,
                                    "break": broken, **extra})}
    if report:
        env["TRILUT_TB_REPORT"] = str(report)
    name = "top-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    name += f"-{testcase or 'all'}" + ("-broken" if broken else "")
    return run_cocotb(_verilog(json.dumps(params, sort_keys=True)), "accel", __name__,
                      name=name, env=env, testcase=testcase, seed=seed)
