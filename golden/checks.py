"""Argument checks shared by the golden model, the hardware generators and
the host: one wording for every "bad parameter" error."""
import numbers

import numpy as np

__all__ = ["check_int", "check_int_array"]


def _bound(lo, hi):
    return (f"in [{lo}, {hi}]" if lo is not None and hi is not None
            else f">= {lo}" if lo is not None else f"<= {hi}")


def check_int(name, value, lo=None, hi=None):
    """Return ``value`` as an int. Raise ``TypeError`` unless it is an
    integer (``bool`` is not), ``ValueError`` unless ``lo <= value <= hi``
    (either bound may be None). Messages name the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {_bound(lo, hi)}, got {value}")
    return value


def check_int_array(name, value, lo=None, hi=None):
    """Return ``value`` as an int64 array. Raise ``TypeError`` unless it has
    an integer dtype, ``ValueError`` unless every element lies in
    ``[lo, hi]`` (either bound may be None; the message gives the array's
    range). Messages name the array."""
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if a.size and (lo is not None or hi is not None):
        amin, amax = int(a.min()), int(a.max())
        if (lo is not None and amin < lo) or (hi is not None and amax > hi):
            raise ValueError(f"{name} must be {_bound(lo, hi)}, got [{amin}, {amax}]")
    return a.astype(np.int64)
