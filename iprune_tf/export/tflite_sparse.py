"""Sparse TFLite: a pruned network as ordinary TFLite Micro ops, so the file shrinks with pruning.

TFLite Micro ignores TFLite's sparsity metadata, so a pruned layer is written as a chain of
builtin ops that TFLM has, built from the lowered form (:func:`iprune_tf.export.lower`). For
one pruned Dense layer with ±1 weights (K kept inputs per neuron)::

    CONCATENATION([x, -x]) -> GATHER(int32 indices, units*K) -> RESHAPE(units, K) -> SUM(K)
        -> GREATER_EQUAL(thresholds) -> SELECT_V2(+1, -1)      # binary activations (integer T)
        |  MUL(scale) -> ADD(offset) [-> RELU]                 # otherwise (BN folded)

The sign of each kept weight is folded into its index (``i + fan_in`` reads ``-x[i]``), so no
sign tensor is stored. ``-x`` is NEG for real-valued ``x`` and a second SELECT_V2 for ±1 inputs.
Pruned layers with real weights gather ``x`` and MUL by their values. In ``sparse_int8`` a layer
over real inputs is instead GATHER (k-major) -> DEPTHWISE_CONV_2D over its K inputs, per-tensor
kernel ``sign * scale`` and bias ``offset`` (one requantization instead of SUM, MUL and ADD, and
``x`` keeps its own int8 scale instead of ``[x, -x]``'s), or, when the next layer reads its signs,
kernel ``±64`` and a bias at the half level, so the signs are exact (:func:`has_exact_signs`).
Alternatives measured (bench/README.md, "Sparse TFLite"): GATHER + MUL by a sign tensor (+32 KB
per 1024x8 layer in float, +8 KB in int8); one GATHER per block of neurons (``neurons_per_gather``:
a few KB larger, the gathered intermediate in the TFLM arena shrinks with the block); per-channel
depthwise kernels (the file ~50% larger). Unpruned
layers stay FULLY_CONNECTED / CONV_2D (after PADV2 for larq's ``pad_values``); MAX_POOL_2D and
RESHAPE keep their meaning.

The int8 forms that keep ``sparse_int8`` exact (pinned sums, pixel-grid encodings, int32 class
scores, depthwise sums) are in :mod:`iprune_tf.export.tflite_sparse_int8`.

Pruned convolutions are refused: TFLM has no op that gathers a pruned filter's taps without first
materializing every patch (im2col: OH*OW*kh*kw*C_in values in the arena).
"""
import numpy as np

from iprune_tf._keras import tf
from iprune_tf.export import tflite_sparse_int8 as int8_forms
from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet, MaxPool
from iprune_tf.export.lowering import lower
from iprune_tf.export.tflite_common import (gather_sums, pinned, quiet_converter, representative_samples, sign_select,
                                            signs_and_negations)

SPARSE_MODES = ("sparse", "sparse_int8")


def to_sparse_tflite(model, mode="sparse", representative_data=None, int8_io=False, neurons_per_gather=None):
    """A TFLite flatbuffer (bytes) of ``model`` (Keras, pruned/stripped/plain, or a LoweredNet) in sparse ops.

    ``mode`` is ``"sparse"`` (float32) or ``"sparse_int8"`` (full-integer, calibrated on
    ``representative_data``, inputs of shape ``(N, *input_shape)``). ``int8_io`` makes the int8
    model's input and output int8 (int32 class scores stay int32, see
    :func:`iprune_tf.export.tflite_sparse_int8.has_integer_scores`).
    ``neurons_per_gather`` splits each pruned layer's GATHER into
    blocks of that many neurons (smaller TFLM arena, slightly larger file); None: one per layer.
    """
    if mode not in SPARSE_MODES:
        raise ValueError(f"Unknown sparse export mode {mode!r}; choose one of {SPARSE_MODES}.")
    net = model if isinstance(model, LoweredNet) else lower(model)
    int8 = mode == "sparse_int8"
    samples = representative_samples(representative_data, net.input_shape, "sparse_int8") if int8 else None
    function = sparse_function(net, pin_sums=int8, neurons_per_gather=neurons_per_gather,
                               output_range=int8_forms.scores_range(net, samples) if int8 else None)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    if int8 and int8_forms.uses_depthwise(net):
        converter._experimental_disable_per_channel = True  # per-channel parameters would double the file
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = converter.inference_output_type = tf.int8
    with quiet_converter():
        return converter.convert()


def sparse_function(net, pin_sums=False, neurons_per_gather=None, output_range=None):
    """A ``tf.function`` (batch of ``net.input_shape`` -> scores) computing ``net`` in TFLM-convertible ops.

    ``pin_sums`` selects the int8 forms (exact sums and compares, see the module docstring);
    ``output_range`` fixes the int8 range of real-valued outputs (FakeQuant).
    """
    _require_supported(net)
    if neurons_per_gather is not None and (not isinstance(neurons_per_gather, int) or neurons_per_gather < 1):
        raise ValueError(f"neurons_per_gather must be a positive integer or None, got {neurons_per_gather!r}.")

    @tf.function(input_signature=[tf.TensorSpec([None, *net.input_shape], tf.float32)], autograph=False)
    def sparse_net(x):  # plain Python loops over the steps: nothing for AutoGraph to convert
        if net.input_encoding is not None:
            x = int8_forms.encode_on_pixel_grid(x, net.input_encoding) if pin_sums else _encode(x, net.input_encoding)
        for i, step in enumerate(net.steps):
            if isinstance(step, Flatten):
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
            elif isinstance(step, MaxPool):
                x = tf.nn.max_pool2d(x, step.pool_size, step.strides, "VALID")
            elif pin_sums and (exact := int8_forms.exact_form(net, i)) is not None:
                x = exact(step, x, neurons_per_gather)
            else:
                x = _layer(step, x, pin_sums, neurons_per_gather)
        return x if output_range is None else pinned(x, output_range)

    return sparse_net


def _require_supported(net):
    for step in net.steps:
        if isinstance(step, LoweredLayer) and step.op == "conv2d" and step.kind == "sparse":
            raise ValueError(
                f"Layer '{step.name}' is a pruned Conv2D ({step.k} of {step.fan_in} inputs per filter): the sparse "
                "TFLite modes lower pruned Dense layers only. TFLite Micro has no op that gathers a filter's kept "
                f"taps without first building every patch (im2col, {np.prod(step.output_hwc[:2]) * step.fan_in:,} "
                "values in the arena). Skip this layer from pruning or export it with mode='float'/'int8'."
            )
        if isinstance(step, (MaxPool, Flatten, LoweredLayer)):
            continue
        raise ValueError(f"The sparse TFLite modes cannot export step {type(step).__name__}.")


def _encode(x, encoding):
    """An input encoding's ±1 bits (GREATER_EQUAL + SELECT_V2), T bits per value next to each other."""
    thresholds = tf.constant(np.asarray(encoding.thresholds, np.float32))
    bits = sign_select(tf.expand_dims(x, -1) >= thresholds)
    return tf.reshape(bits, [-1, *x.shape[1:-1], x.shape[-1] * len(encoding.thresholds)])


def _layer(layer, x, pin_sums, neurons_per_gather):
    negated = None
    if layer.binary_input:  # -x of ±1 as a second SELECT_V2: int8 throughout
        x, negated = signs_and_negations(x)
    s = gather_sums(layer, x, neurons_per_gather, negated)
    if layer.output == "threshold":
        if pin_sums:
            bound = float(layer.k + 1)
            s = pinned(s, (-bound, bound))
        return sign_select(s >= tf.constant(midpoint_thresholds(layer)))
    if layer.has_affine:
        s = s * tf.constant(layer.scale) + tf.constant(layer.offset)
    return tf.nn.relu(s) if layer.activation == "relu" else s


def midpoint_thresholds(layer):
    """Float thresholds half-way between reachable sums: ``s >= T`` iff ``s >= T'``, with margin 1 on both sides.

    Sums of K terms ±1 have the parity of K; ``T'`` is the smallest reachable sum ``>= T``, minus 1,
    clipped to ``[-K-1, K+1]`` (a constant neuron stays constant).
    """
    k, t = layer.k, layer.threshold.astype(np.int64)
    first_reachable = t + ((t - k) % 2)
    return np.clip(first_reachable - 1, -k - 1, k + 1).astype(np.float32)


