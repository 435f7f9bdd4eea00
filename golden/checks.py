"""Argument checks shared by the golden model, the hardware generators and
the host: one wording for every "bad parameter" error."""
import numbers

__all__ = ["check_int"]


def check_int(name, value, lo=None, hi=None):
    """Return ``value`` as an int. Raise ``TypeError`` unless it is an
    integer (``bool`` is not), ``ValueError`` unless ``lo <= value <= hi``
    (either bound may be None). Messages name the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bound = (f"in [{lo}, {hi}]" if lo is not None and hi is not None
                 else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
