"""The paper's two architectures, each in four flavours, with the paper's skip lists.

* ``mnist``: MLP 1024D-1024D-10D on 28x28 inputs.
* ``cifar10``: VGG-Small variant 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-1024D-1024D-10D.

Flavours:

* ``full_precision``: plain Keras ``Dense``/``Conv2D``, the dense baseline the gains are measured against.
* ``binaryconnect_det``: BinaryConnect with deterministic binary weights (larq ``ste_sign``).
* ``binaryconnect_stoch``: BinaryConnect with stochastic binary weights (:class:`StochasticBinary`).
* ``binary``: weights *and* hidden activations binary (``ste_sign`` input quantizers on every layer
  after the first), so each pruned neuron is a K-input boolean function: a LUT.

Batch normalization follows every Dense/Conv layer, the output layer included, where BinaryConnect
puts it. ``head`` (:mod:`iprune_tf.workflow.heads`) chooses the output layer: ``"dense"`` (the paper's),
``"pruned:K_OUT"`` (the same layer, pruned to its own K) or ``"groupsum"`` (no output layer: class
scores are popcounts of groups of the last hidden layer's bits; fully binary flavour only).
Real-valued flavours use ReLU; the binary flavour binarizes at the next layer's input.
The recipe's weight decay on the last dense layer (named ``output``; with the groupsum head, which has
none, the last hidden layer) is applied by the optimizer (:func:`iprune_tf.workflow.recipes.compile_model`,
decoupled). ``output_l2`` instead adds a classic L2 loss term (``kernel_regularizer``) to that layer; see
the recipe module for why it is off by default.
"""
from dataclasses import dataclass

import larq as lq

from iprune_tf.workflow import encoding
from iprune_tf.workflow import heads
from iprune_tf._keras import keras
from iprune_tf.workflow.quantizers import StochasticBinary
from iprune_tf.pruning.skip import PrunablePositions, paper_skip

FLAVOURS = ("full_precision", "binaryconnect_det", "binaryconnect_stoch", "binary")


def _require_flavour(flavour):
    if flavour not in FLAVOURS:
        raise ValueError(f"Unknown flavour '{flavour}'; choose one of {FLAVOURS}.")


def _quant_kwargs(flavour, binary_inputs):
    """Keyword arguments that make a larq layer of ``flavour`` (empty for full precision)."""
    if flavour == "full_precision":
        return {}
    kernel_quantizer = StochasticBinary() if flavour == "binaryconnect_stoch" else "ste_sign"
    input_quantizer = "ste_sign" if flavour == "binary" and binary_inputs else None
    return {"kernel_quantizer": kernel_quantizer, "kernel_constraint": "weight_clip", "input_quantizer": input_quantizer}


def _dense(units, flavour, binary_inputs, name, **kwargs):
    if flavour == "full_precision":
        return keras.layers.Dense(units, use_bias=False, name=name, **kwargs)
    return lq.layers.QuantDense(units, use_bias=False, name=name, **_quant_kwargs(flavour, binary_inputs), **kwargs)


def _conv(filters, flavour, binary_inputs, name):
    if flavour == "full_precision":
        return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)
    return lq.layers.QuantConv2D(
        filters, 3, padding="same", use_bias=False, pad_values=1.0 if binary_inputs else 0.0, name=name,
        **_quant_kwargs(flavour, binary_inputs),
    )


def _activation(flavour, name):
    """ReLU for real-valued activations; identity when the next layer binarizes its input."""
    if flavour == "binary":
        return []
    return [keras.layers.Activation("relu", name=name)]


def _bn(name):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4, name=name)


def _input_layers(input_shape, input_encoding):
    """The input layer, then the encoding layer (:func:`iprune_tf.workflow.encoding.from_spec`) if any."""
    encoder = encoding.from_spec(input_encoding)
    return [keras.layers.InputLayer(input_shape=input_shape, name="input")] + ([encoder] if encoder else []), bool(encoder)


def mnist_mlp(flavour="binaryconnect_det", hidden_units=(1024, 1024), num_classes=10, input_shape=(28, 28), output_l2=None,
              input_encoding=None, head="dense"):
    """The paper's MNIST MLP (default 1024D-1024D-10D); ``input_encoding`` binarizes the pixels first."""
    _require_flavour(flavour)
    head = _checked_head(head, hidden_units, num_classes, flavour)
    layers, encoded = _input_layers(input_shape, input_encoding)
    layers.append(keras.layers.Flatten(name="flatten"))
    regularizer = keras.regularizers.l2(output_l2) if output_l2 else None
    for i, units in enumerate(hidden_units, start=1):
        decayed = {} if head.has_output_layer or i < len(hidden_units) else {"kernel_regularizer": regularizer}
        layers += [_dense(units, flavour, binary_inputs=i > 1 or encoded, name=f"dense_{i}", **decayed), _bn(f"bn_{i}")]
        layers += _activation(flavour, f"act_{i}")
    layers += _head_layers(head, num_classes, flavour, bool(hidden_units), regularizer)
    return keras.Sequential(layers, name=f"mnist_mlp_{flavour}")


def _checked_head(head, hidden_units, num_classes, flavour):
    """The parsed ``head``; ValueError when it does not fit the last hidden width (or there is none)."""
    head = heads.parse_head(head)
    if head.kind == "dense":
        return head
    if not hidden_units:
        raise ValueError(f"Head {head.spec!r} needs a hidden layer before the output; hidden_units is empty.")
    return heads.check_head(head, hidden_units[-1], num_classes, flavour)


def _head_layers(head, num_classes, flavour, binary_inputs, regularizer):
    """The output layer and its batch norm, or the GroupSum of the groupsum head."""
    if not head.has_output_layer:
        return [heads.GroupSum(num_classes, name="group_sum")]
    return [_dense(num_classes, flavour, binary_inputs=binary_inputs, name="output", kernel_regularizer=regularizer),
            _bn("bn_output")]


def cifar10_vgg_small(
    flavour="binaryconnect_det",
    conv_filters=(128, 128, "M", 256, 256, "M", 512, 512, "M"),
    dense_units=(1024, 1024),
    num_classes=10,
    input_shape=(32, 32, 3),
    output_l2=None,
    input_encoding=None,
    width=1.0,
    head="dense",
):
    """The paper's VGG-Small variant; ``"M"`` in ``conv_filters`` is a 2x2 max-pool.

    ``input_shape`` is any (H, W, C) image shape (28x28x1 too; each pool halves H and W, floored).
    ``width`` scales every conv filter count and hidden dense width (rounded, at least 1): 0.25
    keeps a quarter of the filters and units, for what 2 CPU cores can train.
    """
    _require_flavour(flavour)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C) for the conv preset, got {tuple(input_shape)}.")
    conv_filters, dense_units = scale_widths(conv_filters, width), scale_widths(dense_units, width)
    head = _checked_head(head, dense_units, num_classes, flavour)
    layers, encoded = _input_layers(input_shape, input_encoding)
    n_conv = 0
    for spec in conv_filters:
        if spec == "M":
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{n_conv}"))
            continue
        n_conv += 1
        layers += [_conv(spec, flavour, binary_inputs=n_conv > 1 or encoded, name=f"conv_{n_conv}"), _bn(f"conv_bn_{n_conv}")]
        layers += _activation(flavour, f"conv_act_{n_conv}")
    layers.append(keras.layers.Flatten(name="flatten"))
    regularizer = keras.regularizers.l2(output_l2) if output_l2 else None
    for i, units in enumerate(dense_units, start=1):
        decayed = {} if head.has_output_layer or i < len(dense_units) else {"kernel_regularizer": regularizer}
        layers += [_dense(units, flavour, binary_inputs=n_conv > 0 or i > 1, name=f"dense_{i}", **decayed),
                   _bn(f"bn_{i}")]
        layers += _activation(flavour, f"act_{i}")
    layers += _head_layers(head, num_classes, flavour, True, regularizer)
    return keras.Sequential(layers, name=f"cifar10_vgg_small_{flavour}")


def scale_widths(widths, width):
    """``widths`` (ints, ``"M"`` kept) times ``width``, rounded, at least 1; ValueError unless ``width > 0``."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0, got {width!r}.")
    return tuple(spec if spec == "M" else max(1, round(spec * width)) for spec in widths)


@dataclass(frozen=True)
class Preset:
    """An experiment of the paper: its model builder, skip list, data and preprocessing."""

    name: str
    build: callable
    skip_experiment: str
    dataset: str
    zca: bool
    images: bool = False  # the model takes (H, W, C) images; (N, H, W) data gets a channel axis

    def skip(self, head="dense"):
        """The paper's skip list for this preset, for ``prune_fan_in(skip=...)``.

        With a ``pruned:K_OUT`` or ``groupsum`` head the last prunable layer is no longer skipped: it
        is the output layer pruned to K_OUT, or the last hidden layer whose bits the groups count.
        """
        skips = paper_skip(self.skip_experiment)
        if heads.parse_head(head).kind == "dense":
            return skips
        return [PrunablePositions(*(p for p in s.positions if p != -1), description=f"{s.description}, "
                                  "except the last prunable layer (LUT-sized head)") for s in skips]


PRESETS = {
    "mnist": Preset("mnist", mnist_mlp, "mnist", "mnist", zca=False),
    "cifar10": Preset("cifar10", cifar10_vgg_small, "cifar10", "cifar10", zca=True, images=True),
}


def get_preset(name):
    """The :class:`Preset` called ``name`` (``'mnist'`` or ``'cifar10'``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset '{name}'; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]
