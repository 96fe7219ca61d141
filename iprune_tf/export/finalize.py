"""Finalize a model for TFLite: constant folded kernels and TFLite-Micro-friendly ops.

:func:`finalize_for_tflm` turns a pruned, stripped or plain model into a plain Keras model with
constant kernels: every larq ``QuantDense``/``QuantConv2D`` becomes a Keras ``Dense``/``Conv2D``
whose kernel is the layer's effective kernel ({-1, 0, +1}); no ``SIGN`` op (which TFLite Micro
lacks) and no mask op remains. Binary activations (larq sign input quantizers, ``+1`` for
``x >= 0``) become :class:`BinarySign`, ``tf.where(x >= 0, 1, -1)``, which converts to
``GREATER_EQUAL`` + ``SELECT_V2``. A ``QuantConv2D`` with ``padding="same"`` and ``pad_values != 0``
gets an explicit :class:`ConstantPadding2D` (``PADV2``) and a ``"valid"`` convolution.
:func:`finalize_for_lce` keeps binary-input larq layers (folded kernels) for larq-compute-engine.
"""
import larq as lq
import numpy as np

from iprune_tf._keras import keras, tf
from iprune_tf.export.lowering import has_sign_input
from iprune_tf.pruning.inspection import effective_kernel
from iprune_tf.pruning.layers import is_kernel, require_keras2
from iprune_tf.pruning.prune import as_stripped
from iprune_tf.workflow.heads import GroupSum

_LARQ_TO_KERAS = {lq.layers.QuantDense: keras.layers.Dense, lq.layers.QuantConv2D: keras.layers.Conv2D}
_LARQ_ONLY_KEYS = ("input_quantizer", "kernel_quantizer", "metrics", "pad_values")


@keras.utils.register_keras_serializable(package="iprune_tf")
class BinarySign(keras.layers.Layer):
    """larq's inference-time sign of activations, ``+1`` for ``x >= 0`` else ``-1``, in TFLM-supported ops.

    Converts to ``GREATER_EQUAL`` + ``SELECT_V2`` (no ``SIGN``, which TFLite Micro lacks).
    """

    def call(self, inputs):
        one = tf.constant(1.0, inputs.dtype)
        return tf.where(inputs >= 0, one, -one)


@keras.utils.register_keras_serializable(package="iprune_tf")
class ConstantPadding2D(keras.layers.Layer):
    """Pad the spatial axes of an NHWC tensor with a constant (``PADV2``); larq pads binary convs with +1."""

    def __init__(self, padding, value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.value = float(value)

    def call(self, inputs):
        return tf.pad(inputs, [[0, 0], *self.padding, [0, 0]], constant_values=self.value)

    def compute_output_shape(self, input_shape):
        shape = list(tf.TensorShape(input_shape).as_list())
        for axis, (before, after) in enumerate(self.padding, start=1):
            if shape[axis] is not None:
                shape[axis] += before + after
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def custom_objects():
    """The layer classes a finalized model may contain, for ``keras.models.load_model``."""
    return {"BinarySign": BinarySign, "ConstantPadding2D": ConstantPadding2D}


# --------------------------------------------------------------------------- finalization


def finalize_for_tflm(model):
    """A plain Keras model computing what ``model`` does, with constant kernels and TFLM-friendly ops.

    ``model`` may be pruned (``PruneFanIn`` wrappers), stripped or never pruned. Returns a new
    model; ``model`` is not modified. Raises ValueError naming the first layer that cannot be
    exported (larq layers other than QuantDense/QuantConv2D, non-sign input quantizers, custom
    layers).
    """
    return _finalize(model, keep_binary_input_larq=False)


def finalize_for_lce(model):
    """Like :func:`finalize_for_tflm`, but larq layers with binary inputs stay larq layers (folded kernel).

    That is what ``larq_compute_engine.convert_keras_model`` needs to recognize binary layers.
    """
    return _finalize(model, keep_binary_input_larq=True)


def _finalize(model, keep_binary_input_larq):
    require_keras2(model, "The model to export")
    if not isinstance(model, keras.Model):
        raise TypeError(f"The model to export must be a Keras Model, got {type(model).__name__}.")
    model = as_stripped(model)
    weights = {}

    def convert(layer):
        replacement = _convert_layer(layer, keep_binary_input_larq)
        for new, values in replacement:
            weights[id(new)] = (new, values)
        return [new for new, _ in replacement]

    if isinstance(model, keras.Sequential):
        layers = [new for layer in model.layers for new in convert(layer)]
        finalized = keras.Sequential([keras.Input(batch_shape=model.input_shape), *layers], name=model.name)
    elif getattr(model, "_is_graph_network", False):
        finalized = keras.models.clone_model(model, clone_function=lambda layer: _as_one_layer(layer, convert(layer)))
    else:
        raise ValueError(f"Model '{model.name}' is a subclassed model; only Sequential and functional models can be exported.")
    for new, values in weights.values():
        new.set_weights(values)
    return finalized


def _as_one_layer(layer, replacement):
    if len(replacement) == 1:
        return replacement[0]
    return keras.Sequential(replacement, name=f"{layer.name}_block")


def _convert_layer(layer, keep_binary_input_larq):
    """``[(new_layer, weights), ...]`` replacing ``layer`` (unbuilt layers; set weights once built)."""
    if type(layer) in _LARQ_TO_KERAS:
        return _convert_larq(layer, keep_binary_input_larq)
    if isinstance(layer, GroupSum):
        return _convert_group_sum(layer)
    if isinstance(layer, keras.Model):
        raise ValueError(f"Layer '{layer.name}' is a nested model; flatten it into the outer model before export.")
    module = type(layer).__module__
    if module.startswith("tf_keras.") or type(layer) in (BinarySign, ConstantPadding2D):
        return [(layer.__class__.from_config(layer.get_config()), layer.get_weights())]
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be exported: export supports Keras built-in "
        f"layers and larq QuantDense/QuantConv2D."
    )


def _convert_larq(layer, keep_binary_input_larq):
    binary_input = has_sign_input(layer)
    values = [effective_kernel(layer) if is_kernel(w) else w.numpy() for w in layer.weights]
    config = layer.get_config()
    config["kernel_constraint"] = None
    if keep_binary_input_larq and binary_input:
        config["kernel_quantizer"] = None
        return [(type(layer).from_config(config), values)]
    blocks = [(BinarySign(name=f"{layer.name}_sign"), [])] if binary_input else []
    pad_values = float(config.get("pad_values", 0.0))
    if config.get("padding") == "same" and pad_values != 0.0:
        blocks.append((ConstantPadding2D(_same_padding(layer), pad_values, name=f"{layer.name}_pad"), []))
        config["padding"] = "valid"
    for key in _LARQ_ONLY_KEYS:
        config.pop(key, None)
    return blocks + [(_LARQ_TO_KERAS[type(layer)].from_config(config), values)]


def _convert_group_sum(layer):
    """A GroupSum as Keras built-ins: the signs, a Dense with a block of ones per class (exact integer sums),
    then its scale (``Rescaling``: ``sum * scale`` as GroupSum computes it)."""
    units = layer.groups * layer.group_size
    ones = (np.arange(units)[:, None] // layer.group_size == np.arange(layer.groups)[None, :]).astype(np.float32)
    return [(BinarySign(name=f"{layer.name}_sign"), []),
            (keras.layers.Dense(layer.groups, use_bias=False, name=f"{layer.name}_sum"), [ones]),
            (keras.layers.Rescaling(layer.score_scale, name=f"{layer.name}_scale"), [])]


def _same_padding(layer):
    """larq's ``(before, after)`` padding per spatial axis for ``padding="same"`` with ``pad_values``."""
    if layer.data_format != "channels_last":
        raise ValueError(f"Layer '{layer.name}' uses {layer.data_format}; export needs channels_last (NHWC) convolutions.")
    return layer._get_spatial_padding_same(layer.input_shape[1:-1])

