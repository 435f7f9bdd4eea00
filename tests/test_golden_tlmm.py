"""Golden TLMM model against the naive reference a @ w (SPEC section 3)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trilut.golden.tlmm import (
    ENCODINGS, GROUPS, acc_bits_for, code_bits, decode_codes, entry_digits, max_k_for,
    table_entries, ternary_codes, tlmm_lookup, tlmm_matmul, tlmm_tables,
)

CONFIGS = list(itertools.product(GROUPS, ENCODINGS))
HALF = {g: (3**g - 1) // 2 for g in GROUPS}
INDEX_BITS = {2: 3, 3: 4, 4: 6}


def naive(a, w):
    """The naive reference: a plain int64 matmul."""
    return np.asarray(a, np.int64) @ np.asarray(w, np.int64)


def check_tlmm(acc, a, w):
    """The comparison every TLMM test uses (shown to fail in test_check_detects_*)."""
    expected = naive(a, w)
    assert acc.dtype == np.int64 and acc.shape == expected.shape
    np.testing.assert_array_equal(acc, expected)


@st.composite
def problems(draw):
    """(a, w, group, encoding) with K often not a multiple of G."""
    group, encoding = draw(st.sampled_from(CONFIGS))
    k, n = draw(st.integers(1, 40)), draw(st.integers(1, 8))
    lead = draw(st.sampled_from([(), (1,), (2,), (3,), (4,), (2, 3)]))
    a = draw(hnp.arrays(np.int8, lead + (k,), elements=st.integers(-128, 127)))
    w = draw(hnp.arrays(np.int8, (k, n), elements=st.integers(-1, 1)))
    return a, w, group, encoding


@settings(max_examples=300, deadline=None)
@given(problems())
def test_tlmm_matches_matmul(problem):
    a, w, group, encoding = problem
    check_tlmm(tlmm_matmul(a, w, group, encoding), a, w)


@pytest.mark.parametrize("group,encoding", CONFIGS)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 64, 1000])
def test_tlmm_extremes(group, encoding, k):
    rng = np.random.default_rng(k)
    n = 3
    w_rand = rng.integers(-1, 2, (k, n), dtype=np.int8)
    cases = [
        (np.full(k, -128, np.int8), np.full((k, n), -1, np.int8)),  # +128 K, the worst case
        (np.full(k, -128, np.int8), np.ones((k, n), np.int8)),  # -128 K
        (np.full(k, 127, np.int8), np.full((k, n), -1, np.int8)),
        (np.full(k, 127, np.int8), np.ones((k, n), np.int8)),
        (rng.integers(-128, 128, (2, k), dtype=np.int8), np.zeros((k, n), np.int8)),
        (-128 * np.eye(min(k, 16), k, dtype=np.int64), w_rand),  # one-hot activation rows
        (rng.integers(-128, 128, (2, k), dtype=np.int8), np.eye(k, n, dtype=np.int8)),
    ]
    for a, w in cases:
        check_tlmm(tlmm_matmul(a, w, group, encoding), a, w)
    assert tlmm_matmul(cases[0][0], cases[0][1], group, encoding)[0] == 128 * k


@pytest.mark.parametrize("group,encoding", CONFIGS)
def test_tlmm_at_accumulator_limit(group, encoding):
    k = max_k_for(12)  # 15: 128 * 15 = 1920 <= 2047
    a, w = np.full(k, -128), -np.ones((k, 2), np.int8)
    acc = tlmm_matmul(a, w, group, encoding, acc_bits=12)
    assert acc.max() == 1920 <= 2**11 - 1
    with pytest.raises(ValueError, match=r"K=16 .*acc_bits=12.*K <= 15"):
        tlmm_matmul(np.full(16, -128), -np.ones((16, 2)), group, encoding, acc_bits=12)


@pytest.mark.parametrize("group,encoding", CONFIGS)
def test_sizes(group, encoding):
    h = HALF[group]
    entries = 3**group if encoding == "full" else h + 1
    bits = int(np.ceil(np.log2(3**group))) if encoding == "full" else INDEX_BITS[group] + 1
    assert table_entries(group, encoding) == entries
    assert code_bits(group, encoding) == bits
    assert INDEX_BITS[group] == int(np.ceil(np.log2(h + 1)))
    assert entry_digits(group, encoding).shape == (entries, group)


def test_sizes_g3():
    assert (table_entries(3, "full"), code_bits(3, "full")) == (27, 5)
    assert (table_entries(3, "folded"), code_bits(3, "folded")) == (14, 5)


@pytest.mark.parametrize("group,encoding", CONFIGS)
def test_entry_digits(group, encoding):
    digits = entry_digits(group, encoding).astype(np.int64)
    h = HALF[group]
    assert set(np.unique(digits)) <= {-1, 0, 1}
    values = digits @ 3 ** np.arange(group)
    if encoding == "full":
        # Every sign pattern exactly once, in order of value: entry j is value j - H,
        # and entry(-s) = -entry(s) pairs j with 3**G - 1 - j.
        assert len({tuple(r) for r in digits}) == 3**group
        np.testing.assert_array_equal(values, np.arange(-h, h + 1))
        np.testing.assert_array_equal(digits[::-1], -digits)
    else:
        np.testing.assert_array_equal(values, np.arange(h + 1))
        assert not digits[0].any()
        for row in digits[1:]:
            assert row[np.flatnonzero(row)[-1]] == 1  # highest nonzero digit positive
        np.testing.assert_array_equal(digits, entry_digits(group, "full")[h:])


@pytest.mark.parametrize("group,encoding", CONFIGS)
def test_every_pattern_selects_its_entry(group, encoding):
    """Exhaustive: each of the 3**G weight groups picks the entry with its own digits."""
    patterns = np.array(list(itertools.product((-1, 0, 1), repeat=group)), np.int8)
    codes = ternary_codes(patterns.T, group, encoding)[0]  # one group, 3**G columns
    assert len(set(codes.tolist())) == 3**group
    digits = entry_digits(group, encoding)
    if encoding == "full":
        np.testing.assert_array_equal(digits[codes], patterns)
    else:
        index, sign = codes & (2 ** INDEX_BITS[group] - 1), codes >> INDEX_BITS[group]
        signs = np.where(sign == 1, -1, 1)[:, None]
        np.testing.assert_array_equal(signs * digits[index], patterns)


def test_worked_example_g3():
    w = np.array([[1], [0], [-1]])
    assert ternary_codes(w, 3, "full")[0, 0] == 5
    assert ternary_codes(w, 3, "folded")[0, 0] == 8 | 1 << 4


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CONFIGS), st.integers(0, 30), st.integers(1, 6), st.data())
def test_codes_round_trip(config, k, n, data):
    group, encoding = config
    w = data.draw(hnp.arrays(np.int8, (k, n), elements=st.integers(-1, 1)))
    codes = ternary_codes(w, group, encoding)
    assert codes.shape == (-(-k // group), n)
    assert ((codes >= 0) & (codes < 2 ** code_bits(group, encoding))).all()
    if encoding == "folded":
        index, sign = codes & (2 ** INDEX_BITS[group] - 1), codes >> INDEX_BITS[group]
        assert (index <= HALF[group]).all() and not (sign.astype(bool) & (index == 0)).any()
    else:
        assert (codes < 3**group).all()
    np.testing.assert_array_equal(decode_codes(codes, group, encoding, k=k), w)
    padded = decode_codes(codes, group, encoding)
    assert padded.shape[0] % group == 0 and not padded[k:].any()


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CONFIGS), st.integers(1, 13), st.data())
def test_tables_against_loops(config, k, data):
    group, encoding = config
    a = data.draw(hnp.arrays(np.int8, (2, k), elements=st.integers(-128, 127)))
    tables = tlmm_tables(a, group, encoding)
    digits = entry_digits(group, encoding)
    assert tables.shape == (2, -(-k // group), len(digits))
    for m, g, j in itertools.product(range(2), range(tables.shape[1]), range(len(digits))):
        expected = sum(int(digits[j, i]) * int(a[m, g * group + i])
                       for i in range(group) if g * group + i < k)
        assert tables[m, g, j] == expected


# acc_bits_for / max_k_for


def test_acc_bits_known_values():
    assert acc_bits_for(1) == 9 and acc_bits_for(0) == 1
    assert max_k_for(32) == 2**24 - 1 and acc_bits_for(2**24 - 1) == 32
    assert acc_bits_for(2**24) == 33
    assert max_k_for(24) == 2**16 - 1  # TeLLMe's 24-bit accumulators
    assert acc_bits_for(768) == 18 and acc_bits_for(3072) == 20


@pytest.mark.parametrize("act_bits", [2, 4, 8])
@pytest.mark.parametrize("acc_bits", range(1, 41))
def test_acc_bits_boundaries(acc_bits, act_bits):
    k = max_k_for(acc_bits, act_bits)
    top = 2 ** (acc_bits - 1) - 1
    worst = 2 ** (act_bits - 1)
    assert worst * k <= top < worst * (k + 1)
    assert acc_bits_for(k, act_bits) <= acc_bits
    assert acc_bits_for(k + 1, act_bits) > acc_bits  # the flip point
    if acc_bits >= act_bits:
        assert acc_bits_for(k + 1, act_bits) == acc_bits + 1
    if k:
        assert max_k_for(acc_bits_for(k, act_bits), act_bits) >= k


@pytest.mark.parametrize("k", list(range(0, 300)) + [2**20 - 1, 2**20, 2**20 + 1])
def test_acc_bits_for_is_minimal(k):
    bits = acc_bits_for(k)
    assert 128 * k <= 2 ** (bits - 1) - 1
    assert bits == 1 or 128 * k > 2 ** (bits - 2) - 1


# Errors


@pytest.mark.parametrize("bad,text", [(2, "= 2"), (0.5, "= 0.5"), (np.nan, "= nan"), (-3, "= -3")])
def test_rejects_non_ternary(bad, text):
    w = np.zeros((4, 3))
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"ternary.*w\[1, 2\] " + text):
        ternary_codes(w)
    with pytest.raises(ValueError, match=r"w\[1, 2\]"):
        tlmm_matmul(np.zeros(4, np.int8), w)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"a has shape \(3,\), w has shape \(4, 2\)"):
        tlmm_matmul(np.zeros(3, np.int8), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"a has shape \(2, 5\), w has shape \(4, 2\)"):
        tlmm_matmul(np.zeros((2, 5), np.int8), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"w must be 2-D .*\(4,\)"):
        ternary_codes(np.zeros(4))
    with pytest.raises(ValueError, match=r"at least one axis"):
        tlmm_matmul(np.int8(3), np.zeros((1, 1)))
    codes = ternary_codes(np.zeros((6, 2)), 3, "full")
    with pytest.raises(ValueError, match=r"tables of shape \(3, 27\) do not match codes"):
        tlmm_lookup(np.zeros((3, 27), np.int64), codes, 3, "full")


def test_rejects_k_beyond_accumulator():
    k = max_k_for(32) + 1
    with pytest.raises(ValueError, match=rf"K={k} .*acc_bits=32.*K <= {k - 1}"):
        tlmm_matmul(np.zeros(k, np.int8), np.zeros((k, 1), np.int8))


@pytest.mark.parametrize("group", [1, 5, 0, 3.0, True, "3"])
def test_rejects_bad_group(group):
    for call in (lambda: table_entries(group, "full"), lambda: code_bits(group, "full"),
                 lambda: entry_digits(group, "full"),
                 lambda: ternary_codes(np.zeros((3, 1)), group),
                 lambda: tlmm_tables(np.zeros(3, np.int8), group),
                 lambda: tlmm_matmul(np.zeros(3, np.int8), np.zeros((3, 1)), group)):
        with pytest.raises(ValueError, match=r"group must be one of \(2, 3, 4\), got"):
            call()


@pytest.mark.parametrize("encoding", ["mirror", "FULL", None, 3])
def test_rejects_bad_encoding(encoding):
    for call in (lambda: table_entries(3, encoding), lambda: entry_digits(3, encoding),
                 lambda: ternary_codes(np.zeros((3, 1)), 3, encoding),
                 lambda: decode_codes(np.zeros((1, 1), np.int64), 3, encoding),
                 lambda: tlmm_matmul(np.zeros(3, np.int8), np.zeros((3, 1)), 3, encoding)):
        with pytest.raises(ValueError, match=r"encoding must be one of \('full', 'folded'\)"):
            call()


def test_rejects_bad_activations():
    w = np.zeros((3, 1))
    with pytest.raises(ValueError, match=r"\[-128, 127\].*a\[1\] = 128"):
        tlmm_matmul(np.array([0, 128, 0]), w)
    with pytest.raises(ValueError, match=r"\[-128, 127\].*a\[0, 2\] = -129"):
        tlmm_matmul(np.array([[0, 0, -129]]), w)
    with pytest.raises(TypeError, match=r"integer dtype, got float64"):
        tlmm_matmul(np.zeros(3), w)


@pytest.mark.parametrize("group,encoding,code", [
    (3, "full", 27), (3, "full", -1), (3, "folded", 14), (3, "folded", 1 << 4),
    (2, "folded", 5), (4, "full", 81), (4, "folded", 41 | 1 << 6),
])
def test_rejects_invalid_codes(group, encoding, code):
    codes = np.array([[0, code]])
    with pytest.raises(ValueError, match=rf"codes\[0, 1\] = {code} is not a valid {encoding}"):
        decode_codes(codes, group, encoding)
    with pytest.raises(ValueError, match=r"not a valid"):
        tlmm_lookup(np.zeros((1, table_entries(group, encoding)), np.int64), codes, group, encoding)


def test_decode_checks_k():
    codes = ternary_codes(np.ones((7, 2)), 3, "full")  # 3 groups
    with pytest.raises(ValueError, match=r"k=6 needs 2 groups of 3, codes have 3"):
        decode_codes(codes, 3, "full", k=6)
    with pytest.raises(ValueError, match=r"padding rows k >= 8"):
        decode_codes(ternary_codes(np.ones((9, 2)), 3, "full"), 3, "full", k=8)


# The checks can fail: deliberately wrong table paths must be caught by check_tlmm.


def _wrong_folded_lookup(tables, codes, group):
    """Folded lookup that forgets the sign bit."""
    index = codes & (2 ** INDEX_BITS[group] - 1)
    return sum(tables[..., g, index[g]] for g in range(codes.shape[0]))


def _wrong_digit_order_codes(w, group, encoding):
    """Codes built with the group's digits in reverse order (w[g*G + G-1] as digit 0)."""
    k, n = w.shape
    pad = -(-k // group) * group - k
    w = np.pad(w, ((0, pad), (0, 0))).reshape(-1, group, n)[:, ::-1, :]
    return ternary_codes(w.reshape(-1, n), group, encoding)


@pytest.mark.parametrize("group", GROUPS)
def test_check_detects_sign_ignored(group):
    rng = np.random.default_rng(group)
    a = rng.integers(-128, 128, (3, 11), dtype=np.int8)
    w = rng.integers(-1, 2, (11, 4), dtype=np.int8)
    codes, tables = ternary_codes(w, group, "folded"), tlmm_tables(a, group, "folded")
    check_tlmm(tlmm_lookup(tables, codes, group, "folded"), a, w)
    with pytest.raises(AssertionError):
        check_tlmm(_wrong_folded_lookup(tables, codes, group), a, w)


@pytest.mark.parametrize("group,encoding", CONFIGS)
def test_check_detects_digit_order(group, encoding):
    rng = np.random.default_rng(group)
    a = rng.integers(-128, 128, (3, 11), dtype=np.int8)
    w = rng.integers(-1, 2, (11, 4), dtype=np.int8)
    codes = _wrong_digit_order_codes(w, group, encoding)
    with pytest.raises(AssertionError):
        check_tlmm(tlmm_lookup(tlmm_tables(a, group, encoding), codes, group, encoding), a, w)
