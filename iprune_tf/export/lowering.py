"""``lower(model)``: a Keras model (pruned, stripped or plain) as a :class:`LoweredNet`.

Supported chains (Sequential or functional, one path): ``Flatten``, ``Dense``/``QuantDense``,
``Conv2D``/``QuantConv2D`` (stride, padding, larq ``pad_values``), ``MaxPooling2D`` (valid),
``BatchNormalization`` right after a Dense/Conv2D, ReLU/linear activations, larq sign input
quantizers, the input encodings of :mod:`iprune_tf.workflow.encoding`, the group-sum head
(:class:`~iprune_tf.workflow.heads.GroupSum`: a sparse layer over the signs of its input, class c's
indices its group, every sign +1, scaled by its positive factor) and truth-table neurons
(:class:`~iprune_tf.workflow.lut_table.LutTable`: a kind ``table`` layer, the signs of its tables).

What follows each layer's sum (bias, batch norm) is folded by :mod:`~iprune_tf.export.folding`:
into an integer threshold when a sign reads the output, else into a float32 affine map.
"""
import larq as lq
import numpy as np

from iprune_tf._keras import keras
from iprune_tf.export import folding
from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet, MaxPool
from iprune_tf.pruning.inspection import effective_kernel
from iprune_tf.pruning.layers import kernel_precision, require_keras2
from iprune_tf.pruning.prune import as_stripped
from iprune_tf.workflow.heads import GroupSum
from iprune_tf.workflow.lut_table import LutTable

_DENSE = (keras.layers.Dense, lq.layers.QuantDense)
_CONV = (keras.layers.Conv2D, lq.layers.QuantConv2D)
_SIGN_QUANTIZERS = (lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign)
_SIGN_FUNCTIONS = (lq.quantizers.ste_sign, lq.quantizers.approx_sign, lq.quantizers.swish_sign, lq.math.sign)
SUPPORTED = ("Flatten, Dense/QuantDense, Conv2D/QuantConv2D, MaxPooling2D, BatchNormalization, "
             "ReLU/linear activations, larq sign input quantizers, iprune_tf input encodings, GroupSum, LutTable")


def lower(model):
    """The :class:`LoweredNet` of a Keras 2 model; ValueError naming the first unsupported layer."""
    model = as_stripped(model)
    chain = _layer_chain(model)
    _require_finite(chain)
    encoding, chain = _split_encoding(chain)
    steps, pending = [], []
    for layer in chain:
        _add(layer, steps, pending)
    if not any(isinstance(step, _Pending) for step in steps):
        raise ValueError(f"Model '{model.name}' has no Dense/Conv2D layer to lower.")
    return LoweredNet(tuple(int(d) for d in model.input_shape[1:]), _finish(steps, encoding), encoding)


def has_sign_input(layer):
    """True if larq ``layer`` binarizes its input with a sign; ValueError for other input quantizers."""
    quantizer = getattr(layer, "input_quantizer", None)
    if quantizer is None:
        return False
    if isinstance(quantizer, _SIGN_QUANTIZERS) or quantizer in _SIGN_FUNCTIONS:
        return True
    name = getattr(quantizer, "__name__", type(quantizer).__name__)
    raise ValueError(
        f"Layer '{layer.name}' has input quantizer {name}, which iprune_tf cannot export; "
        "supported: none, ste_sign, approx_sign, swish_sign."
    )


def unsupported(layer, reason):
    return ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) cannot be lowered: {reason}. Supported: {SUPPORTED}.")


def _layer_chain(model):
    """The model's layers in order, InputLayers dropped; ValueError unless they form one path."""
    require_keras2(model, "The model to lower")
    if isinstance(model, keras.Sequential):
        return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not getattr(model, "_is_graph_network", False):
        raise ValueError(f"Model '{model.name}' is subclassed; only Sequential and functional chains can be lowered.")
    chain, previous = [], None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            previous = layer.output
            continue
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            raise unsupported(layer, "the model is not a single chain of layers (branches or shared layers)")
        chain.append(layer)
        previous = layer.output
    return chain


def _require_finite(chain):
    """ValueError naming the first weight or batch-norm statistic with a NaN or inf: no backend can export it."""
    for layer in chain:
        for weight in layer.weights:
            bad = np.count_nonzero(~np.isfinite(weight.numpy()))
            if bad:
                short = weight.name.rsplit("/", 1)[-1].split(":")[0]
                raise ValueError(
                    f"Layer '{layer.name}' has {bad} non-finite value(s) (NaN or inf) in '{short}', which no export "
                    "accepts; the training diverged or the weights were corrupted: retrain or restore a checkpoint."
                )


def _split_encoding(chain):
    """``(encoding, rest)``: the input encoding layer at the front of the chain, if any."""
    try:
        from iprune_tf.workflow.encoding import ENCODING_LAYERS
    except ImportError:  # the encodings module arrives with the Verilog backend
        return None, chain
    if chain and isinstance(chain[0], ENCODING_LAYERS):
        return chain[0].lowered(), chain[1:]
    return None, chain


class _Pending:
    """A Dense/Conv2D layer whose batch norm and activation are still being collected."""

    def __init__(self, layer):
        self.layer, self.batch_norm, self.activation = layer, None, _activation_of(layer)


def _add(layer, steps, pending):
    if type(layer) in _DENSE + _CONV or isinstance(layer, (GroupSum, LutTable)):
        steps.append(_Pending(layer))
    elif type(layer) is keras.layers.Flatten:
        steps.append(Flatten())
    elif type(layer) is keras.layers.MaxPooling2D:
        steps.append(_max_pool(layer))
    elif type(layer) is keras.layers.BatchNormalization:
        _last_pending(steps, layer).batch_norm = _checked_batch_norm(_last_pending(steps, layer), layer)
    elif type(layer) in (keras.layers.Activation, keras.layers.ReLU):
        _set_activation(_last_pending(steps, layer), layer)
    elif type(layer) is keras.layers.Dropout:
        return
    else:
        raise unsupported(layer, "this layer type is not supported")


def _last_pending(steps, layer):
    if not steps or not isinstance(steps[-1], _Pending):
        raise unsupported(layer, "it must directly follow a Dense/Conv2D layer")
    return steps[-1]


def _checked_batch_norm(pending, bn):
    if isinstance(pending.layer, GroupSum):
        raise unsupported(bn, f"a batch norm after the group sum '{pending.layer.name}' could reorder the classes")
    if isinstance(pending.layer, LutTable):
        raise unsupported(bn, f"the truth tables of '{pending.layer.name}' output bits; nothing is left to normalize")
    if pending.activation != "linear":
        raise unsupported(bn, f"a batch norm after the activation of '{pending.layer.name}' cannot be folded")
    if pending.batch_norm is not None:
        raise unsupported(bn, f"'{pending.layer.name}' already has a batch norm")
    if bn.axis not in ([-1], [len(bn.input_shape) - 1]):
        raise unsupported(bn, f"it must normalize the last axis, not {bn.axis}")
    return bn


def _activation_of(layer):
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation)) if activation is not None else "linear"
    if name not in ("linear", "relu"):
        raise unsupported(layer, f"activation '{name}' (only relu and linear)")
    return name


def _set_activation(pending, layer):
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            raise unsupported(layer, "only a plain ReLU (no max_value, negative_slope or threshold)")
        name = "relu"
    else:
        name = _activation_of(layer)
    if name == "relu":
        if pending.activation == "relu":
            raise unsupported(layer, f"'{pending.layer.name}' already has a relu")
        pending.activation = "relu"


def _max_pool(layer):
    if layer.padding != "valid" or layer.data_format != "channels_last":
        raise unsupported(layer, "only valid-padded, channels_last max-pooling")
    _, h, w, c = layer.input_shape
    _, oh, ow, _ = layer.output_shape
    return MaxPool(tuple(layer.pool_size), tuple(layer.strides), (h, w, c), (oh, ow, c))


def _finish(steps, encoding):
    """Turn each pending layer into a :class:`LoweredLayer`, knowing whether a sign reads its output."""
    lowered, inputs_binary = [], encoding is not None
    for i, step in enumerate(steps):
        if not isinstance(step, _Pending):
            lowered.append(step)
            continue
        if isinstance(step.layer, GroupSum):
            lowered.append(_group_sum_layer(step))
            inputs_binary = False
            continue
        if isinstance(step.layer, LutTable):
            lowered.append(_table_layer(step.layer))
            inputs_binary = True
            continue
        layer = _lowered_layer(step.layer, inputs_binary or has_sign_input(step.layer))
        if _sign_reads_output(steps[i + 1 :], step) and layer.kind != "float" and layer.binary_input:
            folding.set_threshold(layer, step)
            inputs_binary = True
        else:
            folding.set_affine(layer, step)
            inputs_binary = False
        lowered.append(layer)
    return lowered


def _sign_reads_output(rest, step):
    """True when the next layer binarizes this layer's output (only pools and flattens between)."""
    if step.activation != "linear":
        return False
    for following in rest:
        if isinstance(following, _Pending):
            return has_sign_input(following.layer)
    return False


def _lowered_layer(layer, binary_input):
    kernel = np.asarray(effective_kernel(layer), dtype=np.float32)
    fan_in, units = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])
    flat = kernel.reshape(fan_in, units)
    counts = np.count_nonzero(flat, axis=0)
    binary = kernel_precision(layer) == 1 and np.all(np.isin(np.abs(flat), (0.0, 1.0)))
    lowered = LoweredLayer(layer.name, "conv2d" if type(layer) in _CONV else "dense", "float", fan_in, units,
                           fan_in, binary_input)
    if type(layer) in _CONV:
        _set_conv_geometry(lowered, layer)
    if counts.max() < fan_in and counts.min() == counts.max():  # else dense, or zeros that are not K-pruning
        lowered.kind, lowered.k = "sparse", int(counts[0])
        _, inputs = np.nonzero(flat.T)  # neuron by neuron, inputs ascending
        lowered.indices = inputs.reshape(units, lowered.k).astype(np.int32)
        kept = np.take_along_axis(flat.T, lowered.indices, axis=1)
        if binary:
            lowered.signs = kept.astype(np.int8)
        else:
            lowered.values = kept.astype(np.float32)
    elif binary and counts.min() == fan_in:
        lowered.kind, lowered.signs = "binary", flat.T.astype(np.int8)
    else:
        lowered.kernel = flat
    return lowered


def _group_sum_layer(step):
    """A GroupSum as a sparse layer over its input's signs: class c keeps units ``c*G .. c*G+G-1``, signs +1,
    then the float32 scale (offset 0), so ``s * scale`` is Keras' ``scale * sum(sign(x))`` bit for bit."""
    layer = step.layer
    fan_in, groups, size = int(layer.input_shape[-1]), layer.groups, layer.group_size
    return LoweredLayer(layer.name, "dense", "sparse", fan_in, groups, size, True, output="affine",
                        indices=np.arange(fan_in, dtype=np.int32).reshape(groups, size),
                        signs=np.ones((groups, size), np.int8), scale=np.full(groups, layer.score_scale, np.float32),
                        offset=np.zeros(groups, np.float32), activation=step.activation, fixed_signs=True)


def _table_layer(layer):
    """A LutTable as a kind ``table`` layer: its indices, and its tables' signs (larq's: +1 for >= 0) as bits."""
    return LoweredLayer(layer.name, "dense", "table", int(layer.input_shape[-1]), layer.units, layer.k, True,
                        output="threshold", indices=layer.indices.copy(), tables=layer.table.numpy() >= 0)


def _set_conv_geometry(lowered, layer):
    if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        raise unsupported(layer, "only channels_last, undilated, ungrouped convolutions")
    _, h, w, c = layer.input_shape
    _, oh, ow, units = layer.output_shape
    lowered.input_hwc, lowered.output_hwc = (h, w, c), (oh, ow, units)
    lowered.kernel_size, lowered.strides = tuple(layer.kernel_size), tuple(layer.strides)
    lowered.pad_value = float(getattr(layer, "pad_values", 0.0))
    if layer.padding == "valid":
        lowered.padding = (0, 0, 0, 0)
    else:
        (top, bottom), (left, right) = (_same_padding(n, o, k, s) for n, o, k, s in
                                        zip((h, w), (oh, ow), layer.kernel_size, layer.strides))
        lowered.padding = (top, bottom, left, right)


def _same_padding(size, out, kernel, stride):
    """TensorFlow's (and larq's) 'same' padding: the extra pixel goes after."""
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
