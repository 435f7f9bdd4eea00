"""The shared sequential divider, in Amaranth's simulator (a small internal
block; the row units that use it are verified on Verilator)."""
import random

import pytest

from trilut.hw.divider import SeqDivider
from trilut.sim.pysim import run_requests


@pytest.mark.parametrize("num_bits,den_bits", [(32, 32), (31, 16), (8, 3)])
def test_divider_matches_floor_division(num_bits, den_bits):
    rng = random.Random(num_bits)
    top_n, top_d = (1 << num_bits) - 1, (1 << den_bits) - 1
    pairs = [(top_n, 1), (top_n, top_d), (0, 1), (top_n, 2), (1, top_d), (5, 0)]
    pairs += [(rng.randrange(top_n + 1), rng.randrange(1, top_d + 1)) for _ in range(40)]
    got = run_requests(SeqDivider(num_bits, den_bits),
                       [{"num": n, "den": d} for n, d in pairs])
    want = [n // d if d else top_n for n, d in pairs]
    assert got == want


def test_divider_rejects_bad_widths():
    with pytest.raises(ValueError, match="num_bits"):
        SeqDivider(0, 8)
    with pytest.raises(ValueError, match="den_bits"):
        SeqDivider(8, 65)
