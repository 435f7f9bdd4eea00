"""What the built-in models share: their config and checked weight files.

``load_config`` reads a config.json; ``load_checked`` reads a safetensors file
and checks that it holds exactly the expected names and shapes, in the stored
dtype, with finite values, raising ``ValueError`` naming the first mismatch.
"""

import json

import numpy as np

__all__ = ["load_config", "load_checked"]


def load_config(path):
    """The config.json at ``path`` as a dict."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_checked(path, expected, dtype):
    """``{name: ndarray}`` from the safetensors file ``path``, in the order of
    ``expected`` (``{name: shape}``), every tensor stored as ``dtype``."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {extra}")
    dtype = np.dtype(dtype)
    for name, shape in expected.items():
        t = tensors[name]
        if t.shape != shape or t.dtype != dtype:
            raise ValueError(f"{path}: {name} is {t.dtype}{t.shape}, expected {dtype}{shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"{path}: {name} has non-finite values")
    return {name: tensors[name] for name in expected}
