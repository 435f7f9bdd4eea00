"""Ternary matmul engines: construction checks and Verilator regressions."""
import pytest

from trilut.hw.matmul import DirectEngine, TLMMEngine, make_engine
from trilut.sim import tb_matmul
from trilut.sim.runner import SimFailure

# (engine, parameters): G = 2, 3, 4, both encodings, both engines, one and
# several k-blocks per row.
CONFIGS = [
    ("tlmm", dict(group=2, tables=2, lanes=4, max_k=16, encoding="full")),
    ("tlmm", dict(group=3, tables=4, lanes=4, max_k=36, encoding="folded")),
    ("tlmm", dict(group=4, tables=2, lanes=2, max_k=16, encoding="folded")),
    ("tlmm", dict(group=3, tables=1, lanes=3, max_k=9, encoding="full")),
    ("tlmm", dict(group=4, tables=2, lanes=2, max_k=8, encoding="full")),
    ("tlmm", dict(group=2, tables=3, lanes=2, max_k=6, encoding="folded")),
    ("tlmm", dict(group=3, tables=4, lanes=16, max_k=48, encoding="full", table_ram="block")),
    ("direct", dict(group=3, tables=4, lanes=4, max_k=36)),
    ("direct", dict(group=2, tables=3, lanes=2, max_k=6)),
]


def _id(cfg):
    engine, p = cfg
    return engine + "-" + "-".join(f"{k[0]}{v}" for k, v in p.items())


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_engine_matches_golden(cfg):
    assert tb_matmul.run(*cfg) == 4


@pytest.mark.sim
def test_wrong_model_is_caught():
    """The scoreboard is not vacuous: a reference that drops the last
    k-block of every row must be reported as mismatching."""
    with pytest.raises(SimFailure, match="mismatches"):
        tb_matmul.run(*CONFIGS[1], broken=True, testcase="random_rows")


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
