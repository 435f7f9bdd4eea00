"""Integer input embedding and classifier head around the encoder stack (golden).

With these a classifier runs as one accelerator program: the host sends
int8 feature rows and reads back per-token logits, nothing else. Dataflow
(T tokens, K input features, C = hidden, N logit columns)::

    features int8   (T, K)  s_f          host-made rows (e.g. pixels and a one-hot position)
    emb_acc  int32  (T, C)  s_f s_w      int8_matmul + int32 bias        (EmbedParams.linear)
    x        int16  (T, C)  s_x          requantize per channel, clamp int16: the encoder input
    ...      encoder_stack (trace names "blocks.{i}.*")
    out      int16  (T, C)  s_out        the encoder output
    head_z   int32  (T, C)               int_layernorm(out)
    head_ln  int8   (T, C)  s_ln         per-channel requantizer             (HeadParams.norm)
    head_acc int32  (T, N)  s_ln s_w     int8_matmul + int32 bias        (HeadParams.linear)
    logits   int16  (T, N)  s_logit      requantize per channel to one scale, clamp int16

Every step is an existing golden rule (``int8_matmul``, ``requantize``,
``int_layernorm``), exactly what the accelerator's int8-engine LINEAR
(REQUANT into the int16 bank) and NORM passes compute. ``HeadParams.classes``
names the logit columns that are classes (the others are padding to the
engine's lanes); the class scores are the per-token logits summed over the
tokens (:func:`pool_logits`): mean pooling before a linear layer equals the
mean of its per-token outputs, and the sum is T times the mean, so its
argmax is the mean-pooled model's. The float scales are documentation only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_int_array
from .encoder import EncoderParams, LinearParams, NormParams, _narrow, _norm, \
    encoder_stack
from .nonlinear import int_layernorm
from .quant import INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN, M_BITS_DEFAULT, requantize

__all__ = ["EmbedParams", "HeadParams", "embed", "head", "classifier", "pool_logits",
           "CLASSIFIER_TRACE"]

#: Trace names :func:`classifier` adds around encoder_stack's.
CLASSIFIER_TRACE = ("features", "emb_acc", "x", "out", "head_z", "head_ln", "head_acc",
                    "logits")


def _check_linear(name, lin, m_bits):
    if not isinstance(lin, LinearParams):
        raise TypeError(f"{name}: expected LinearParams, got {type(lin).__name__}")
    if lin.kind != "int8":
        raise ValueError(f"{name}: kind must be 'int8' (the int8 engine), got {lin.kind!r}")
    if lin.row_scaled:
        raise ValueError(f"{name}: row_scaled input is not supported here")
    lin.check(tuple(np.shape(lin.weights)), m_bits)


@dataclass(frozen=True, eq=False)
class EmbedParams:
    """int8 feature rows (T, K) -> the encoder's int16 input (T, C).

    ``linear``: int8 LinearParams (K, C) whose per-channel ``requant`` takes
    acc + bias to the int16 encoder input at ``out_scale``; ``in_scale``: the
    float value of one unit of the features. ValueError/TypeError at
    construction for anything malformed."""
    linear: LinearParams
    in_scale: float
    out_scale: float
    m_bits: int = M_BITS_DEFAULT

    def __post_init__(self):
        _check_linear("embed", self.linear, self.m_bits)

    @property
    def in_features(self):
        return self.linear.in_features

    @property
    def hidden(self):
        return self.linear.out_features


@dataclass(frozen=True, eq=False)
class HeadParams:
    """The encoder output (T, C) int16 -> per-token int16 logits (T, N).

    ``norm``: NormParams of the LayerNorm (int8 output, gamma's sign not
    applied on chip: ``signed_out`` False); ``linear``: int8 LinearParams
    (C, N), requantized per channel to one logit scale ``out_scale``;
    ``classes``: the columns of N holding classes, in class order."""
    norm: NormParams
    linear: LinearParams
    classes: tuple
    out_scale: float
    m_bits: int = M_BITS_DEFAULT

    def __post_init__(self):
        if not isinstance(self.norm, NormParams):
            raise TypeError(f"head.norm: expected NormParams, got {type(self.norm).__name__}")
        _check_linear("head", self.linear, self.m_bits)
        c, n = self.linear.weights.shape
        self.norm.check("head.norm", c, self.m_bits)
        if self.norm.out_bits != 8 or self.norm.signed_out:
            raise ValueError("head.norm: must give int8 output without signed_out")
        cls = tuple(int(i) for i in self.classes)
        if not cls or len(set(cls)) != len(cls) or min(cls) < 0 or max(cls) >= n:
            raise ValueError(f"head.classes: expected distinct columns in [0, {n}), got "
                             f"{self.classes!r}")
        object.__setattr__(self, "classes", cls)

    @property
    def hidden(self):
        return self.linear.in_features

    @property
    def columns(self):
        return self.linear.out_features


def _rows(name, a, width):
    if a.ndim < 2 or a.shape[-1] != width or a.shape[-2] == 0:
        raise ValueError(f"{name}: expected shape (..., T, {width}) with T >= 1, got {a.shape}")
    return a


def embed(features, params, trace=False):
    """int8 features (..., T, K) -> int16 encoder input (..., T, C) (or, with
    ``trace``, a dict with ``emb_acc`` and ``x``)."""
    if not isinstance(params, EmbedParams):
        raise TypeError(f"params must be EmbedParams, got {type(params).__name__}")
    f = _rows("features", check_int_array("features", features, INT8_MIN, INT8_MAX),
              params.in_features)
    lin = params.linear
    acc = lin.accumulate(f)
    x = requantize(acc, lin.requant.m, lin.requant.e, lo=INT16_MIN, hi=INT16_MAX,
                   m_bits=params.m_bits)
    t = {"emb_acc": _narrow("emb_acc", acc, np.int32), "x": _narrow("x", x, np.int16)}
    return t if trace else t["x"]


def head(y, params, trace=False):
    """int16 encoder output (..., T, C) -> int16 per-token logits (..., T, N)
    (or, with ``trace``, a dict with ``head_z``, ``head_ln``, ``head_acc``,
    ``logits``)."""
    if not isinstance(params, HeadParams):
        raise TypeError(f"params must be HeadParams, got {type(params).__name__}")
    y = _rows("y", check_int_array("y", y, INT16_MIN, INT16_MAX), params.hidden)
    t = {"head_z": _narrow("head_z", int_layernorm(y), np.int32)}
    _norm("head_ln", t["head_z"], params.norm, params.m_bits, t)
    lin = params.linear
    acc = lin.accumulate(t["head_ln"])
    t["head_acc"] = _narrow("head_acc", acc, np.int32)
    t["logits"] = _narrow("logits", requantize(acc, lin.requant.m, lin.requant.e, lo=INT16_MIN,
                                               hi=INT16_MAX, m_bits=params.m_bits), np.int16)
    return t if trace else t["logits"]


def classifier(features, embed_params, encoder, head_params, trace=False):
    """embed -> encoder_stack -> head: int8 features (..., T, K) -> int16
    per-token logits (..., T, N). With ``trace`` a dict of every tensor
    (:data:`CLASSIFIER_TRACE` and encoder_stack's ``blocks.{i}.*``)."""
    if not isinstance(encoder, EncoderParams):
        raise TypeError(f"encoder must be EncoderParams, got {type(encoder).__name__}")
    if embed_params.hidden != encoder.hidden or head_params.hidden != encoder.hidden:
        raise ValueError(f"hidden sizes differ: embed {embed_params.hidden}, encoder "
                         f"{encoder.hidden}, head {head_params.hidden}")
    t = embed(features, embed_params, trace=True)
    t["features"] = np.asarray(features).astype(np.int8)
    t.update(encoder_stack(t["x"], encoder, trace=True))
    t.update(head(t["out"], head_params, trace=True))
    return t if trace else t["logits"]


def pool_logits(logits, params):
    """Class scores: the per-token logits of the class columns summed over the
    tokens (int64, (..., classes)); the predicted class is their argmax."""
    if not isinstance(params, HeadParams):
        raise TypeError(f"params must be HeadParams, got {type(params).__name__}")
    lg = _rows("logits", check_int_array("logits", logits, INT16_MIN, INT16_MAX),
               params.columns)
    return lg[..., list(params.classes)].sum(axis=-2)

