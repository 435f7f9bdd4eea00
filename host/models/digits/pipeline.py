"""The built-in digits model through the integer pipeline.

Two integer paths beside the float reference (:meth:`DigitsPipeline.classify_float`):

* all-integer (:meth:`DigitsPipeline.logits`, :meth:`~DigitsPipeline.classify_integer`;
  what ``trilut demo`` runs on the accelerator): the host turns an image into
  16 int8 feature rows, the device (or golden) computes the embedding, the
  encoder blocks and the classifier head, and returns int16 logits per token;
  the host sums them over the tokens and takes the argmax;
* encoder only (:meth:`~DigitsPipeline.classify_golden`): the host embeds
  the tokens and applies the head in float, the encoder runs in integers.

Feature rows (:meth:`DigitsPipeline.features`): token t's 4 pixels as
sklearn's integers 0..16, then a one-hot position scaled to 16 (16 columns),
all at one scale 1/16 (:data:`FEATURE_SCALE`): one int8 LINEAR then computes
``patch @ embed.weight + pos[t] + embed.bias`` exactly as the model does (the
positional table becomes 16 weight rows).
"""
from functools import cached_property

import numpy as np

from ....golden.classifier import classifier, pool_logits
from ....golden.encoder import EncoderConfig, encoder_stack, float_encoder_stack, float_layernorm
from ...quantize import dequantize_output, dequantized_weights, quantize_classifier, \
    quantize_encoder, quantize_input
from . import load_config, load_weights
from .data import IMAGE_SIZE, PIXEL_MAX, TOKENS, load_digits_split, patchify

CALIBRATION_IMAGES = 512        # first training images used to calibrate activation scales
LN_EPS = 1e-5                   # the model's LayerNorm epsilon (train.py)
FEATURE_SCALE = 1.0 / PIXEL_MAX  # float value of one unit of the int8 features


class DigitsPipeline:
    """Loads the shipped model, its split, and the integer constants.

    ``gelu_mode`` picks ShiftGELU's mode ("ivit" or "accurate")."""

    def __init__(self, gelu_mode="ivit"):
        self.config = load_config()
        self.weights = load_weights(config=self.config)
        c = self.config
        self.encoder_config = EncoderConfig(hidden=c["hidden"], heads=c["heads"], ffn=c["ffn"],
                                            layers=c["layers"], gelu_mode=gelu_mode,
                                            max_seq=c["tokens"])
        split = c["split"]
        self.x_train, self.y_train, self.x_test, self.y_test = \
            load_digits_split(split["seed"], split["test_fraction"])

    def embed(self, images):
        """(n, 8, 8) images in [0, 1] -> (n, 16, hidden) float tokens."""
        w = self.weights
        return patchify(np.asarray(images, np.float64)) @ w["embed.weight"] + w["embed.bias"] \
            + w["pos"]

    def head(self, hidden):
        """(n, 16, hidden) final hidden state -> (n,) predicted classes."""
        w = self.weights
        pooled = float_layernorm(hidden, w["head_ln.weight"], w["head_ln.bias"], LN_EPS)[1]
        return (pooled.mean(axis=-2) @ w["head.weight"] + w["head.bias"]).argmax(-1)

    @cached_property
    def params(self):
        """Integer encoder constants, calibrated on training images only."""
        return quantize_encoder(self.weights, self.encoder_config,
                                self.embed(self.x_train[:CALIBRATION_IMAGES]))

    def encoder_input(self, images):
        """The int16 tensor the encoder (golden or hardware) receives."""
        return quantize_input(self.embed(images), self.params)

    def classify_float(self, images):
        """Float activations, the model's ternary weights (the reference)."""
        deq = dequantized_weights(self.weights, self.encoder_config)
        return self.head(float_encoder_stack(self.embed(images), deq, self.encoder_config))

    def classify_from_encoder_output(self, y):
        """Classes from the int16 output of the encoder stack."""
        return self.head(dequantize_output(y, self.params))

    def classify_golden(self, images):
        y = encoder_stack(self.encoder_input(images), self.params)
        return self.classify_from_encoder_output(y)

    # --- all-integer: embedding, encoder and head on the device ----------------

    def features(self, images):
        """(n, 8, 8) images in [0, 1] -> int8 feature rows (n, 16, 4 + 16):
        the pixels as integers 0..16 and 16 times the token's one-hot position
        (scale :data:`FEATURE_SCALE`). ValueError for other shapes or pixels
        that are not multiples of 1/16 in [0, 1]."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must have shape (n, 8, 8), got {x.shape}")
        pix = patchify(x) * PIXEL_MAX
        q = np.round(pix)
        if not np.isfinite(pix).all() or np.abs(pix - q).max(initial=0) > 1e-6 \
                or q.min(initial=0) < 0 or q.max(initial=0) > PIXEL_MAX:
            raise ValueError("images: pixels must be sklearn digits values k / 16, k in 0..16")
        pos = np.broadcast_to(PIXEL_MAX * np.eye(TOKENS), (len(x), TOKENS, TOKENS))
        return np.concatenate([q, pos], axis=-1).astype(np.int8)

    @cached_property
    def classifier_params(self):
        """(EmbedParams, EncoderParams, HeadParams) of the all-integer path,
        calibrated on the first CALIBRATION_IMAGES training images
        (:func:`trilut.host.quantize.quantize_classifier`)."""
        w = self.weights
        return quantize_classifier(
            w, self.encoder_config, np.concatenate([w["embed.weight"], w["pos"]]),
            w["embed.bias"], FEATURE_SCALE, self.features(self.x_train[:CALIBRATION_IMAGES]),
            (w["head_ln.weight"], w["head_ln.bias"], w["head.weight"], w["head.bias"]),
            eps=LN_EPS)

    def logits(self, images):
        """int16 per-token logits (n, 16, N) of the all-integer golden model
        (what the accelerator returns)."""
        return classifier(self.features(images), *self.classifier_params)

    def classify_logits(self, logits):
        """Classes from per-token logits: their sum over the tokens, argmax."""
        return pool_logits(logits, self.classifier_params[2]).argmax(-1)

    def classify_integer(self, images):
        return self.classify_logits(self.logits(images))
