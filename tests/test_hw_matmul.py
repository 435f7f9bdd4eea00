"""Ternary matmul engines: construction checks and Verilator regressions."""
import json

import pytest

from trilut.hw.matmul import DirectEngine, TLMMEngine, make_engine
from trilut.sim import tb_matmul
from trilut.sim.runner import SimFailure

# (engine, parameters): G = 2, 3, 4, both encodings, both engines, one and
# several k-blocks per row; TLMM build rates of 1 (distributed RAM default),
# the block-RAM default (2 here), 9, a power of two, a rate that
# leaves the last word part-empty, and a whole table per word.
CONFIGS = [
    ("tlmm", dict(group=2, tables=2, lanes=4, max_k=16, encoding="full")),
    ("tlmm", dict(group=3, tables=4, lanes=4, max_k=36, encoding="folded")),
    ("tlmm", dict(group=4, tables=2, lanes=2, max_k=16, encoding="folded")),
    ("tlmm", dict(group=3, tables=1, lanes=3, max_k=9, encoding="full")),
    ("tlmm", dict(group=3, tables=4, lanes=16, max_k=48, encoding="full", table_ram="block")),
    ("tlmm", dict(group=3, tables=2, lanes=4, max_k=60, encoding="full", table_ram="block",
                  build_rate=9)),
    ("tlmm", dict(group=3, tables=3, lanes=2, max_k=45, encoding="folded", build_rate=4)),
    ("tlmm", dict(group=2, tables=2, lanes=2, max_k=16, encoding="full", build_rate=5)),
    ("tlmm", dict(group=4, tables=1, lanes=3, max_k=12, encoding="folded", build_rate=41)),
    ("direct", dict(group=3, tables=4, lanes=4, max_k=36)),
]


def _id(cfg):
    engine, p = cfg
    return engine + "-" + "-".join(f"{k[0]}{v}" for k, v in p.items())


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_engine_matches_golden(cfg):
    assert tb_matmul.run(*cfg) == 5


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[5]], ids=_id)
def test_wrong_model_is_caught(cfg):
    """The scoreboard is not vacuous: a reference that drops the last
    k-block of every row must be reported as mismatching (one table word per
    cycle, and nine entries per word)."""
    with pytest.raises(SimFailure, match="mismatches"):
        tb_matmul.run(*cfg, broken=True, testcase="random_rows")


@pytest.mark.sim
def test_build_bound_cycles(tmp_path):
    """Where the table build is the bound (one output block, many k-blocks)
    the measured cycles follow the analytic model, and a build rate of 9
    makes the matmul about 8x faster than one entry per cycle (27 KB + 1
    against 3 KB + 1 cycles per row of KB k-blocks)."""
    report = tmp_path / "r.json"
    base = dict(group=3, tables=2, lanes=4, max_k=60, encoding="full", table_ram="block")
    spans = {}
    for rate in (1, 9):
        tb_matmul.run("tlmm", dict(base, build_rate=rate), testcase="shapes",
                      report=report, shapes=[[6, 60, 4]])
        (shape,) = json.loads(report.read_text())["shapes"]
        assert abs(shape["cycles"] - shape["estimate"]) <= 0.02 * shape["estimate"] + 4
        spans[rate] = shape["cycles"]
    assert spans[1] > 7 * spans[9], spans


@pytest.mark.parametrize("engine", [TLMMEngine, DirectEngine])
@pytest.mark.parametrize("param,value,exc", [
    ("group", 5, ValueError), ("group", 1, ValueError), ("tables", 0, ValueError),
    ("lanes", 0, ValueError), ("max_k", 0, ValueError), ("act_bits", 1, ValueError),
    ("lanes", 2.5, TypeError),
])
def test_bad_parameters_rejected(engine, param, value, exc):
    with pytest.raises(exc, match=param):
        engine(**{param: value})


def test_bad_encoding_rejected():
    with pytest.raises(ValueError, match="encoding"):
        TLMMEngine(encoding="half")
    with pytest.raises(ValueError, match="table_ram"):
        TLMMEngine(table_ram="flash")
    with pytest.raises(ValueError, match="engine"):
        make_engine("systolic")
    for rate, exc in ((0, ValueError), (28, ValueError), (2.5, TypeError)):
        with pytest.raises(exc, match="build_rate"):
            TLMMEngine(group=3, encoding="full", build_rate=rate)


def test_build_rate_defaults():
    """Block RAM: the fastest power-of-two build (up to 4) that costs no
    more DP16KD than one entry per cycle; distributed RAM: one entry per
    cycle."""
    top = TLMMEngine(group=3, tables=2, lanes=16, max_k=256, encoding="full",
                     table_ram="block")
    assert (top.build_rate, top.build_words) == (4, 7)
    assert top.resources()["dp16kd"] == 96 == 32 * top._dp16kd(1)
    assert top.fill_cycles(43) == 7 * 43 + 1
    shallow = TLMMEngine(group=3, tables=4, lanes=16, encoding="full", table_ram="block")
    assert (shallow.build_rate, shallow.build_words, shallow.resources()["dp16kd"]) == (2, 14, 64)
    deep = TLMMEngine(group=3, tables=2, lanes=16, max_k=1536, encoding="full",
                      table_ram="block")
    assert (deep.build_rate, deep.resources()["dp16kd"]) == (4, 320) and deep._dp16kd(1) == 11
    lut = TLMMEngine(group=3, tables=2, lanes=4, max_k=1536, encoding="folded")
    assert (lut.build_rate, lut.build_words, lut.resources()["dp16kd"]) == (1, 14, 0)
    assert TLMMEngine(group=4, encoding="folded", build_rate=41).build_words == 1


def test_derived_widths():
    e = TLMMEngine(group=3, tables=4, lanes=16, max_k=768)
    assert e.max_k == 768 and e.k_blocks == 64 and e.macs_per_cycle == 192
    assert e.acc_bits == 18          # 128 * 768 = 98,304 < 2**17
    assert DirectEngine(group=3, tables=4, lanes=16, max_k=768).acc_bits == 18


def test_host_side_checks():
    e = TLMMEngine(group=3, tables=2, lanes=4, max_k=12)
    import numpy as np
    with pytest.raises(ValueError, match="max_k"):
        e.wgt_beats(np.zeros((13, 4), dtype=int))
    with pytest.raises(ValueError, match="lanes"):
        e.wgt_beats(np.zeros((12, 6), dtype=int))
    with pytest.raises(ValueError):
        e.wgt_beats(np.full((12, 4), 2))
