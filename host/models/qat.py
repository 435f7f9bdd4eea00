"""BitNet b1.58 fake quantization for training the built-in models (torch: the
``train`` extra). Rounding is half up, as in the golden model (SPEC section 2);
gradients pass straight through."""

import torch

__all__ = ["TERNARY_EPS", "fake_quant_ternary", "fake_quant_int8_per_token"]

TERNARY_EPS = 1e-5


def _round_half_up(x):
    return torch.floor(x + 0.5)


def fake_quant_ternary(w):
    """BitNet b1.58 absmean ternary fake-quant with a straight-through gradient."""
    gamma = w.abs().mean()
    w_q = torch.clamp(_round_half_up(w / (gamma + TERNARY_EPS)), -1, 1) * gamma
    return w + (w_q - w).detach()


def fake_quant_int8_per_token(x):
    """Per-token (last axis) absmax int8 fake-quant with a straight-through gradient.

    An all-zero row stays zero (its scale does not matter).
    """
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
    x_q = torch.clamp(_round_half_up(x / scale), -128, 127) * scale
    return x + (x_q - x).detach()
