"""The built-in digits model through the integer pipeline.

The host embeds the 16 patch tokens and applies the classifier head (both
small and float); the encoder blocks run in integers: the golden model here,
the accelerator once it runs whole blocks (both compute the same integers).
"""
from functools import cached_property

import numpy as np

from ....golden.encoder import EncoderConfig, encoder_stack, float_encoder_stack, float_layernorm
from ...quantize import dequantize_output, dequantized_weights, quantize_encoder, quantize_input
from . import load_config, load_weights
from .data import load_digits_split, patchify

CALIBRATION_IMAGES = 512        # first training images used to calibrate activation scales


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
        pooled = float_layernorm(hidden, w["head_ln.weight"], w["head_ln.bias"], 1e-5)[1]
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
