"""Bit-exact reference for table-lookup ternary matmul (TLMM, SPEC section 3).

y[n] = sum_k a[k] * w[k, n] with a int8 and w ternary, computed the way the
hardware does it: per group of G activations a table of partial sums, per
group of G weights a code that selects one table entry, and one addition per
group and output.

Encoding (the hardware implements exactly this)
-----------------------------------------------
* G ("group") is 2, 3 or 4. K is padded with zero activations and zero
  weights to a multiple of G. Group g covers k = g*G .. g*G + G-1; digit i of
  the group is w[g*G + i] and pairs with a[g*G + i].
* A weight group has the balanced-ternary value v = sum_i w_i * 3**i, in
  [-H, H] with H = (3**G - 1) // 2.
* ``"full"``: code = v + H in [0, 3**G). The table has 3**G entries; entry j
  is sum_i d_i * a_i with d the balanced-ternary digits of j - H.
* ``"folded"``: index = |v| in [0, H], sign = 1 if v < 0 else 0,
  code = index | sign << index_bits with index_bits = ceil(log2(H + 1)).
  The table has H + 1 entries; entry j = sum_i d_i(j) * a_i with d(j) the
  digits of j (entry(-s) = -entry(s) makes the other half redundant). The
  looked-up value is -entry[index] if sign else entry[index].

=====  ===========================  ===============================
G      full: entries / code bits    folded: entries / index + sign
=====  ===========================  ===============================
2      9 / 4                        5 / 3 + 1
3      27 / 5 (1.67 bits/weight)    14 / 4 + 1 (indices 14, 15 unused)
4      81 / 7                       41 / 6 + 1
=====  ===========================  ===============================

Worked example, G = 3 (H = 13), weights (w0, w1, w2) = (+1, 0, -1):
v = 1 + 0*3 - 1*9 = -8.
Full: code = -8 + 13 = 5 = 0b00101; entry 5 has digits of 5 - 13 = -8, i.e.
(+1, 0, -1), so the lookup returns a0 - a2.
Folded: index = 8, sign = 1, code = 8 | 1 << 4 = 24 = 0b1_1000; entry 8 has
digits of 8 = -1 + 0*3 + 1*9, i.e. (-1, 0, +1), value -a0 + a2, negated by
the sign to a0 - a2.

:func:`entry_digits` is the single source of these digit patterns: the
table builder here and the hardware table ROM both use it.

Widths: with int8 activations the worst case is |acc| = 128 * K (a = -128
everywhere, every weight -1), so a signed accumulator of b bits holds any K
up to ``max_k_for(b)``; :func:`acc_bits_for` gives the smallest b for a K.
Tested: every G and encoding, K from 0 to 40 and up to 1000, M 1..4 (and
extra leading axes), N 1..8, activations over the whole int8 range.
"""
from __future__ import annotations

import numbers

import numpy as np

from .checks import check_int, check_int_array

__all__ = [
    "GROUPS", "ENCODINGS", "table_entries", "code_bits", "entry_digits",
    "ternary_codes", "decode_codes", "tlmm_tables", "tlmm_lookup", "tlmm_matmul",
    "acc_bits_for", "max_k_for",
]

GROUPS = (2, 3, 4)
ENCODINGS = ("full", "folded")

_ACT_MIN, _ACT_MAX = -128, 127


def _check(group, encoding):
    """Validate (group, encoding); return group as an int."""
    if isinstance(group, bool) or not isinstance(group, numbers.Integral) or group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return int(group)


def _half(group):
    """H = (3**G - 1) // 2, the largest |v| of a weight group."""
    return (3**group - 1) // 2


def _index_bits(group):
    """ceil(log2(H + 1)): width of the folded index."""
    return _half(group).bit_length()


def _num_groups(k, group):
    return -(-k // group)


def table_entries(group, encoding):
    """Number of table entries per group: 3**G (full) or H + 1 (folded)."""
    group = _check(group, encoding)
    return 3**group if encoding == "full" else _half(group) + 1


def code_bits(group, encoding):
    """Bits per weight-group code: ceil(log2(3**G)) (full) or index_bits + 1 (folded)."""
    group = _check(group, encoding)
    return (3**group - 1).bit_length() if encoding == "full" else _index_bits(group) + 1


def _balanced_digits(v, group):
    """Balanced-ternary digits of integers v, least significant first: shape v.shape + (G,)."""
    v = np.asarray(v, dtype=np.int64)
    digits = []
    for _ in range(group):
        d = (v + 1) % 3 - 1
        digits.append(d)
        v = (v - d) // 3
    return np.stack(digits, axis=-1).astype(np.int8)


def entry_digits(group, encoding):
    """Digit pattern of every table entry, shape (table_entries, G), int8.

    Row j holds d with entry j = sum_i d[i] * a_i: the digits of j - H (full)
    or of j (folded). This is the table builder's ROM.
    """
    group = _check(group, encoding)
    h = _half(group)
    values = np.arange(-h, h + 1) if encoding == "full" else np.arange(h + 1)
    return _balanced_digits(values, group)


def _code_values(group, encoding):
    """Group value v for every word of code_bits bits, and which words are valid codes."""
    words = np.arange(1 << code_bits(group, encoding))
    h = _half(group)
    if encoding == "full":
        return words - h, words < 3**group
    bits = _index_bits(group)
    index, sign = words & ((1 << bits) - 1), words >> bits
    # sign = 1 with index 0 ("-0") is never produced, so it is not a valid code.
    return np.where(sign == 1, -index, index), (index <= h) & ((sign == 0) | (index > 0))


def _codes_array(codes, group, encoding):
    """Validate a (num_groups, N) array of codes; return it as int64."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (num_groups, N), got shape {codes.shape}")
    if codes.dtype.kind not in "iu":
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    _, valid = _code_values(group, encoding)
    in_range = (codes >= 0) & (codes < len(valid))
    bad = ~in_range | ~valid[np.where(in_range, codes, 0)]
    if bad.any():
        g, n = np.argwhere(bad)[0]
        raise ValueError(f"codes[{g}, {n}] = {codes[g, n]} is not a valid "
                         f"{encoding} code for group={group}")
    return codes.astype(np.int64)


def _ternary(w):
    """Validate a 2-D ternary weight matrix; return it as int64."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (K, N), got shape {w.shape}")
    if w.dtype.kind not in "iuf":
        raise TypeError(f"w must have an integer or float dtype, got {w.dtype}")
    bad = ~np.isin(w, (-1, 0, 1))
    if bad.any():
        k, n = np.argwhere(bad)[0]
        raise ValueError(f"w must be ternary (-1, 0, +1): w[{k}, {n}] = {w[k, n]}")
    return w.astype(np.int64)


def _activations(a):
    """Validate int8-range integer activations of shape (..., K); return int64."""
    a = check_int_array("activations", a)
    if a.ndim == 0:
        raise ValueError("activations must have at least one axis (K)")
    bad = (a < _ACT_MIN) | (a > _ACT_MAX)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"activations must lie in [{_ACT_MIN}, {_ACT_MAX}] (int8): "
                         f"a{list(pos)} = {a[pos]}")
    return a


def ternary_codes(w, group=3, encoding="full"):
    """Encode ternary weights w (K, N) as codes (num_groups, N), int64.

    num_groups = ceil(K / G); see the module docstring for the encoding.
    Raises ``ValueError`` for non-2-D or non-ternary w (naming the first
    offending position and value) and for a bad group or encoding.
    """
    group = _check(group, encoding)
    w = _ternary(w)
    k, n = w.shape
    pad = _num_groups(k, group) * group - k
    w = np.pad(w, ((0, pad), (0, 0))).reshape(-1, group, n)
    v = np.einsum("i,gin->gn", 3 ** np.arange(group, dtype=np.int64), w)
    if encoding == "full":
        return v + _half(group)
    return np.abs(v) | (v < 0).astype(np.int64) << _index_bits(group)


def decode_codes(codes, group, encoding, k=None):
    """Inverse of :func:`ternary_codes`: codes (num_groups, N) -> w int8.

    Without ``k`` the padded matrix (num_groups * G, N) is returned; with
    ``k`` the padding rows are dropped after checking that they are zero.
    Raises ``ValueError`` for invalid codes (out of range, unused folded
    indices, "-0") and for a ``k`` that does not match num_groups.
    """
    group = _check(group, encoding)
    codes = _codes_array(codes, group, encoding)
    values, _ = _code_values(group, encoding)
    w = _balanced_digits(values[codes], group)  # (num_groups, N, G)
    w = w.transpose(0, 2, 1).reshape(-1, codes.shape[1])
    if k is None:
        return w
    k = check_int("k", k, 0)
    if _num_groups(k, group) != codes.shape[0]:
        raise ValueError(f"k={k} needs {_num_groups(k, group)} groups of {group}, "
                         f"codes have {codes.shape[0]}")
    if w[k:].any():
        raise ValueError(f"codes put nonzero weights into the padding rows k >= {k}")
    return w[:k]


def tlmm_tables(a, group=3, encoding="full"):
    """Tables for activations a (..., K): shape (..., num_groups, entries), int64.

    tables[..., g, j] = sum_i entry_digits(G, encoding)[j, i] * a[..., g*G + i],
    with a zero-padded to a multiple of G.
    """
    group = _check(group, encoding)
    a = _activations(a)
    k = a.shape[-1]
    pad = _num_groups(k, group) * group - k
    a = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)])
    a = a.reshape(a.shape[:-1] + (-1, group))
    return a @ entry_digits(group, encoding).T.astype(np.int64)


def tlmm_lookup(tables, codes, group, encoding):
    """acc[..., n] = sum_g lookup(tables[..., g, :], codes[g, n]), int64.

    ``lookup`` is entry[code] (full) or +/- entry[index] by the sign bit
    (folded). This is the table path only: no products of a and w.
    """
    group = _check(group, encoding)
    codes = _codes_array(codes, group, encoding)
    tables = check_int_array("tables", tables)
    expected = (codes.shape[0], table_entries(group, encoding))
    if tables.shape[-2:] != expected:
        raise ValueError(f"tables of shape {tables.shape} do not match codes of shape "
                         f"{codes.shape}: expected (..., {expected[0]}, {expected[1]})")
    acc = np.zeros(tables.shape[:-2] + codes.shape[1:], dtype=np.int64)
    if encoding == "full":
        for g, code in enumerate(codes):
            acc += tables[..., g, code]
        return acc
    bits = _index_bits(group)
    for g, code in enumerate(codes):
        entry = tables[..., g, code & ((1 << bits) - 1)]
        acc += np.where(code >> bits == 1, -entry, entry)
    return acc


def tlmm_matmul(a, w, group=3, encoding="full", acc_bits=32):
    """a @ w through the table path: ternary_codes + tlmm_tables + tlmm_lookup.

    a: integers in [-128, 127], shape (K,) or (..., K); w: ternary (K, N).
    Returns int64 of shape a.shape[:-1] + (N,). Raises ``TypeError`` for a
    non-integer a, ``ValueError`` for out-of-range activations, non-ternary
    weights, mismatched shapes, or K > max_k_for(acc_bits) (the worst case
    128 * K would overflow a signed acc_bits accumulator).
    """
    group = _check(group, encoding)
    a = _activations(a)
    codes = ternary_codes(w, group, encoding)
    k = np.shape(w)[0]
    if a.shape[-1] != k:
        raise ValueError(f"shape mismatch: a has shape {a.shape}, w has shape "
                         f"{np.shape(w)} (a's last axis must equal w's first)")
    acc_bits = check_int("acc_bits", acc_bits, 1)
    if k > max_k_for(acc_bits):
        raise ValueError(f"K={k} is too large for acc_bits={acc_bits}: the worst case "
                         f"128*K must fit, so K <= {max_k_for(acc_bits)}")
    return tlmm_lookup(tlmm_tables(a, group, encoding), codes, group, encoding)


def acc_bits_for(k, act_bits=8):
    """Smallest signed width holding any sum of k products a * w.

    a in [-2**(act_bits-1), 2**(act_bits-1) - 1] and w ternary: the worst case
    is +2**(act_bits-1) * k (a at its minimum, w = -1), which must fit as a
    positive value. acc_bits_for(0) is 1.
    """
    k = check_int("k", k, 0)
    act_bits = check_int("act_bits", act_bits, 1)
    return (k << (act_bits - 1)).bit_length() + 1


def max_k_for(acc_bits, act_bits=8):
    """Largest K whose worst case 2**(act_bits-1) * K fits a signed acc_bits accumulator."""
    acc_bits = check_int("acc_bits", acc_bits, 1)
    act_bits = check_int("act_bits", act_bits, 1)
    return ((1 << (acc_bits - 1)) - 1) >> (act_bits - 1)
