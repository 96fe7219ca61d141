"""Input encodings that turn real pixels into ±1 bits, as Keras layers at the front of a model.

A LUT circuit reads bits. The fully binary flavour therefore needs binary *inputs* too, and the
encoding must be the same in training, evaluation and every export. Making it a layer of the
model guarantees that: whatever loads the model (``iprune train/report/export``, ``lower()``)
applies exactly the encoding it was trained with.

* :class:`ThresholdEncoding`: one bit per value, ``+1`` if ``x >= threshold`` else ``-1``.
* :class:`ThermometerEncoding`: T bits per value, bit t is ``+1`` if ``x >= thresholds[t]``
  (ascending thresholds, so the bits of a value read ``+1 ... +1 -1 ... -1``).

Both widen the last axis: an input of shape ``(..., C)`` becomes ``(..., C*T)`` with bit t of
channel c at position ``c*T + t`` (for the MNIST preset, ``(28, 28)`` becomes ``(28, 28*T)`` and
``Flatten`` puts the T bits of each pixel next to each other). Comparisons are float32, in Keras
and in the numpy :meth:`~ThermometerEncoding.encode`, so both give the same bits.
"""
import dataclasses

import numpy as np

from iprune_tf._keras import keras, tf


def uniform_thresholds(levels, low=0.0, high=1.0):
    """``levels`` thresholds splitting ``[low, high]`` into ``levels + 1`` equal bins."""
    return [low + (high - low) * (t + 1) / (levels + 1) for t in range(levels)]


def quantile_thresholds(x, levels):
    """``levels`` thresholds at equally spaced quantiles of the non-minimum values of ``x``.

    A "distributive" thermometer: each bit splits the observed pixel values evenly rather than
    the value range, so few thresholds are spent where few pixels are (e.g. Fashion-MNIST's
    background is exactly 0 and would otherwise take most of the bits' information).
    """
    values = np.asarray(x, dtype=np.float32).ravel()
    values = values[values > values.min()]
    if values.size == 0:
        raise ValueError("quantile_thresholds needs inputs with more than one distinct value.")
    qs = [(t + 1) / (levels + 1) for t in range(levels)]
    return [float(v) for v in np.quantile(values, qs)]


def _validated_thresholds(thresholds):
    values = np.asarray(thresholds, dtype=np.float32)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty list of numbers, got {thresholds!r}.")
    if not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0):
        raise ValueError(f"thresholds must be finite and strictly increasing, got {list(map(float, values))}.")
    return [float(v) for v in values]


@dataclasses.dataclass(frozen=True)
class LoweredEncoding:
    """The encoding as numpy, for the lowered form and the hardware backends (no Keras inside)."""

    kind: str
    thresholds: tuple

    @property
    def bits_per_value(self):
        return len(self.thresholds)

    def encode(self, x):
        """Float32 ±1 of shape ``x.shape[:-1] + (C*T,)``, bit t of value c at ``c*T + t``."""
        x = np.asarray(x, dtype=np.float32)
        above = x[..., None] >= np.asarray(self.thresholds, dtype=np.float32)
        return np.where(above, 1.0, -1.0).astype(np.float32).reshape(x.shape[:-1] + (x.shape[-1] * self.bits_per_value,))

    def output_shape_for(self, input_shape):
        """Shape (no batch axis) of the encoding of one input of ``input_shape``."""
        return tuple(input_shape[:-1]) + (input_shape[-1] * self.bits_per_value,)


class _BitEncoding(keras.layers.Layer):
    """Common part: compare every input value with T float32 thresholds, emit ±1 float32."""

    kind = None

    def __init__(self, thresholds, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.thresholds = tuple(_validated_thresholds(thresholds))

    @property
    def bits_per_value(self):
        return len(self.thresholds)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        above = tf.expand_dims(x, -1) >= tf.constant(self.thresholds, tf.float32)
        bits = tf.where(above, 1.0, -1.0)
        shape = tf.concat([tf.shape(x)[:-1], [tf.shape(x)[-1] * self.bits_per_value]], 0)
        return tf.reshape(bits, shape)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        last = None if shape[-1] is None else shape[-1] * self.bits_per_value
        return tf.TensorShape(shape[:-1] + [last])

    def lowered(self):
        """This encoding as a :class:`LoweredEncoding` (what ``iprune_tf.export.lower`` stores)."""
        return LoweredEncoding(self.kind, self.thresholds)

    def encode(self, x):
        """The same encoding in numpy (see :meth:`LoweredEncoding.encode`)."""
        return self.lowered().encode(x)

    def output_shape_for(self, input_shape):
        return self.lowered().output_shape_for(input_shape)


@keras.utils.register_keras_serializable(package="iprune_tf")
class ThresholdEncoding(_BitEncoding):
    """One bit per input value: ``+1`` if ``x >= threshold`` else ``-1``."""

    kind = "threshold"

    def __init__(self, threshold=0.5, **kwargs):
        kwargs.pop("thresholds", None)
        super().__init__([threshold], **kwargs)
        self.threshold = self.thresholds[0]

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)
        return {**config, "threshold": self.threshold}


@keras.utils.register_keras_serializable(package="iprune_tf")
class ThermometerEncoding(_BitEncoding):
    """T bits per input value: bit t is ``+1`` if ``x >= thresholds[t]``.

    ``thresholds`` default to ``levels`` uniform thresholds over ``[0, 1]`` (pixels scaled to
    [0, 1]); pass them explicitly, e.g. from :func:`quantile_thresholds` of the training set.
    """

    kind = "thermometer"

    def __init__(self, levels=3, thresholds=None, **kwargs):
        if thresholds is None:
            if not isinstance(levels, (int, np.integer)) or levels < 1:
                raise ValueError(f"levels must be an integer >= 1, got {levels!r}.")
            thresholds = uniform_thresholds(levels)
        elif len(thresholds) != levels:
            raise ValueError(f"ThermometerEncoding got levels={levels} but {len(thresholds)} thresholds.")
        super().__init__(thresholds, **kwargs)
        self.levels = len(self.thresholds)

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)
        return {**config, "levels": self.levels, "thresholds": list(self.thresholds)}


ENCODING_LAYERS = (ThresholdEncoding, ThermometerEncoding)


def is_encoding(layer):
    """True for an input-encoding layer of this module."""
    return isinstance(layer, ENCODING_LAYERS)


def from_spec(spec, name="input_encoding"):
    """An encoding layer from a short text spec, or None.

    ``None``/``"none"``: no encoding. ``"threshold"`` or ``"threshold:0.3"``: one bit per value.
    ``"thermometer"`` (3 levels) or ``"thermometer:T"``: T uniform levels over [0, 1].
    An encoding layer is returned as is.
    """
    if spec is None or is_encoding(spec):
        return spec
    kind, _, arg = str(spec).partition(":")
    try:
        if kind == "none" and not arg:
            return None
        if kind == "threshold":
            return ThresholdEncoding(float(arg) if arg else 0.5, name=name)
        if kind == "thermometer":
            return ThermometerEncoding(int(arg) if arg else 3, name=name)
    except ValueError as error:
        raise ValueError(f"Bad input encoding '{spec}': {error}") from None
    raise ValueError(f"Unknown input encoding '{spec}'; use none, threshold[:VALUE] or thermometer[:LEVELS].")
