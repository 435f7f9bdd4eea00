"""Streaming integer LayerNorm and its square root: construction checks,
the square root against math.isqrt (Amaranth simulator), and Verilator
regressions against the golden int_layernorm."""
import json
import math
import random

import numpy as np
import pytest

from trilut.gen.synth import synthesize
from trilut.golden.nonlinear import int_layernorm
from trilut.hw.isqrt import SeqIsqrt
from trilut.hw.layernorm import LayerNorm
from trilut.sim.pysim import run_requests
from trilut.sim.runner import SimFailure, generate_verilog, run_cocotb

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# Most checks run on a small int8 unit; one realistic int16 unit at C = 768.
CONFIGS = [dict(in_bits=8, max_len=64), dict(in_bits=16, max_len=768)]


def _id(params):
    return "-".join(f"{k}{v}" for k, v in params.items())


def simulate(params, *, seed=1, broken=None, testcase=None):
    dut = LayerNorm(**params)
    env = {"TRILUT_TB": json.dumps({"params": params, "seed": seed, "break": broken})}
    name = _id(params) + (f"-broken-{broken}" if broken else "")
    return run_cocotb(generate_verilog(dut, "layernorm"), "layernorm", "trilut.sim.tb_layernorm",
                      name=name, env=env, testcase=testcase)


@pytest.mark.sim
@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_layernorm_matches_golden(params):
    assert simulate(params) == 4


@pytest.mark.sim
@pytest.mark.parametrize("broken", ["half_up", "newton"])
def test_wrong_model_is_caught(broken):
    """The scoreboard is not vacuous: a mean rounded half up, or I-ViT's
    Newton square root, must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        simulate(CONFIGS[0], broken=broken, testcase="extreme_rows")


# --- SeqIsqrt in Amaranth's simulator ---------------------------------------

@pytest.mark.parametrize("width", [1, 2, 3, 8, 26, 41, 42, 64])
def test_isqrt_matches_math_isqrt(width):
    rng = random.Random(width)
    top = (1 << width) - 1
    values = {0, 1, 2, 3, 4, top, top - 1}
    root = math.isqrt(top)
    for k in [2, 3, 255, 256, 4095, root - 1, root] + [rng.randrange(root + 1) for _ in range(8)]:
        values |= {k * k, k * k - 1, k * k + 1, (k + 1) * (k + 1) - 1}
    values |= {rng.randrange(top + 1) for _ in range(16)}
    values = sorted(v for v in values if 0 <= v <= top)
    dut = SeqIsqrt(width)
    assert dut.root_bits == (width + 1) // 2 and dut.latency == dut.root_bits + 1
    assert run_requests(dut, values) == [math.isqrt(v) for v in values]


def test_isqrt_rejects_bad_width():
    with pytest.raises(ValueError, match="width"):
        SeqIsqrt(0)
    with pytest.raises(ValueError, match="width"):
        SeqIsqrt(129)
    with pytest.raises(TypeError, match="width"):
        SeqIsqrt(8.0)


# --- LayerNorm construction and derived widths ------------------------------

@pytest.mark.parametrize("param,value,exc", [
    ("in_bits", 1, ValueError), ("in_bits", 17, ValueError), ("in_bits", 8.0, TypeError),
    ("in_bits", True, TypeError), ("max_len", 0, ValueError),
    ("max_len", (1 << 16) + 1, ValueError), ("max_len", "768", TypeError),
])
def test_bad_parameters_rejected(param, value, exc):
    with pytest.raises(exc, match=param):
        LayerNorm(**{param: value})


def test_derived_widths():
    # SPEC 4.6: int16 input, C = 384 needs a >= 41-bit variance.
    assert LayerNorm(in_bits=16, max_len=384).var_bits == 41
    u = LayerNorm(in_bits=16, max_len=768)
    assert (u.var_bits, u.std_bits, u.c_bits, u.s1_bits) == (42, 21, 10, 26)
    u = LayerNorm()            # int8, C = 768
    assert (u.in_bits, u.max_len, u.out_bits, u.var_bits, u.std_bits) == (8, 768, 32, 26, 13)
    assert u.buffers == 4 and u.buffer_depth == 1024
    # The widths hold the worst rows: alternating extremes maximise the variance.
    for in_bits, c in ((8, 768), (16, 768), (16, 384), (2, 1), (3, 5)):
        u = LayerNorm(in_bits=in_bits, max_len=c)
        lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
        x = np.array([lo, hi] * c)[:c]
        y = x - int(np.round(x.mean()))
        assert int((y * y).sum()) < 1 << u.var_bits
        assert c * (hi - lo) ** 2 < 1 << u.var_bits


def _hw_arith(x, in_bits, var_bits, c_bits):
    """The MEAN/VAR stage's arithmetic in Python, modulo 2^W as the hardware does it."""
    n, c, mask = in_bits, len(x), (1 << var_bits) - 1
    s1u = int(sum(v + (1 << (n - 1)) for v in x))
    s2 = int(sum(v * v for v in x))
    qp = s1u // c
    r = (s1u - (qp * c & mask)) & ((1 << c_bits) - 1)
    up = 2 * r > c or (2 * r == c and qp % 2 == 1)
    mu = qp + up - (1 << (n - 1))
    d = r - c if up else r
    t = (s1u - (c << (n - 1)) + d) & mask
    return mu, (s2 - mu * t) & mask


@pytest.mark.parametrize("in_bits,max_len", [(8, 64), (8, 768), (16, 768)])
def test_one_pass_variance_is_exact(in_bits, max_len):
    """var = S2 - mu * (S1 + d) modulo 2^var_bits equals golden's sum((x - mu)^2)."""
    u = LayerNorm(in_bits=in_bits, max_len=max_len)
    rng = np.random.default_rng(in_bits)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    rows = [np.array([lo, hi] * max_len)[:c] for c in (1, 2, 3, max_len)]
    rows += [np.full(max_len, lo), np.full(max_len, hi), np.array([0, 1]), np.array([-1, 0])]
    rows += [rng.integers(lo, hi + 1, size=rng.integers(1, max_len + 1)) for _ in range(50)]
    for x in rows:
        mu, var = _hw_arith([int(v) for v in x], in_bits, u.var_bits, u.c_bits)
        q, r = divmod(int(x.sum()), len(x))
        gmu = q + (2 * r > len(x) or (2 * r == len(x) and q % 2 == 1))
        assert mu == gmu and var == int(((x - gmu) ** 2).sum())
        assert int_layernorm(x).shape == x.shape


def test_analytic_timing():
    u = LayerNorm(in_bits=8, max_len=768)
    assert u.row_interval(768) == 768 and u.row_interval(384) == 384
    assert u.row_interval(1) == max(u.mean_cycles, u.std_cycles)
    with pytest.raises(ValueError, match="c"):
        u.row_interval(769)


@pytest.mark.pnr
def test_ecp5_timing_and_resources(tmp_path):
    """int8, C = 768 on the ECP5-85F: >= 100 MHz, and the DSP and block-RAM
    counts are the analytic estimate."""
    u = LayerNorm(in_bits=8, max_len=768)
    est = u.resources
    rep = synthesize(generate_verilog(u, "layernorm"), "layernorm", work_dir=tmp_path,
                     freq_mhz=100)
    assert rep["timing_met"], f"Fmax {rep['fmax_mhz']} MHz"
    assert (rep["mult18"], rep["dp16kd"]) == (est["mult18"], est["dp16kd"])
