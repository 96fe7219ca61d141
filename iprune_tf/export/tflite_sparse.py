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

int8 exactness: a thresholded sum of K terms ±1 has the parity of K, so ``s >= T`` is compared as
``s >= T'`` with ``T'`` half-way between reachable sums (:func:`midpoint_thresholds`), and every
such sum is pinned to ``[-K-1, K+1]`` by a FakeQuant range: its int8 step ``(2K+2)/255`` is below
1, so each reachable sum stays on its side of ``T'`` whatever the calibration (K <= 126). An input
encoding compares 8-bit pixels: input and thresholds are pinned to the grid ``k/255`` (scale 1/255,
zero point -128) with each threshold moved to the first pixel level passing it, so the int8 compare
is between integer codes. A last layer reading ±1 bits (the fully binary output layer) gives int32
class scores (:func:`has_integer_scores`): its sums are exact in int8 and scaled in int32, so the
argmax is Keras'. The binary flavour's first layer over real 8-bit pixels (no encoding) gets its
signs from a DEPTHWISE_CONV_2D whose int32 accumulator holds the exact sum of pixel levels
(:func:`has_exact_signs`; an int8 SUM would round it to ~0.06). A fully binary net, with or without
an input encoding, is therefore exact end to end on 8-bit pixels (tested in TFLite and TFLM).
BinaryConnect's real activations are rounded as in any int8 model. Measured in bench/README.md
("Sparse TFLite"); the float ``sparse`` mode is exact for all.

Pruned convolutions are refused: TFLM has no op that gathers a pruned filter's taps without first
materializing every patch (im2col: OH*OW*kh*kw*C_in values in the arena).
"""
import contextlib
import functools
import os
import tempfile
import warnings

import numpy as np

from iprune_tf._keras import tf
from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet, MaxPool
from iprune_tf.export.lowering import lower

SPARSE_MODES = ("sparse", "sparse_int8")


def to_sparse_tflite(model, mode="sparse", representative_data=None, int8_io=False, neurons_per_gather=None):
    """A TFLite flatbuffer (bytes) of ``model`` (Keras, pruned/stripped/plain, or a LoweredNet) in sparse ops.

    ``mode`` is ``"sparse"`` (float32) or ``"sparse_int8"`` (full-integer, calibrated on
    ``representative_data``, inputs of shape ``(N, *input_shape)``). ``int8_io`` makes the int8
    model's input and output int8 (int32 class scores stay int32, see :func:`has_integer_scores`).
    ``neurons_per_gather`` splits each pruned layer's GATHER into
    blocks of that many neurons (smaller TFLM arena, slightly larger file); None: one per layer.
    """
    if mode not in SPARSE_MODES:
        raise ValueError(f"Unknown sparse export mode {mode!r}; choose one of {SPARSE_MODES}.")
    net = model if isinstance(model, LoweredNet) else lower(model)
    int8 = mode == "sparse_int8"
    samples = representative_samples(representative_data, net.input_shape, "sparse_int8") if int8 else None
    function = sparse_function(net, pin_sums=int8, neurons_per_gather=neurons_per_gather,
                               output_range=scores_range(net, samples) if int8 else None)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    if int8 and _uses_depthwise(net):
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
            x = _encode_on_pixel_grid(x, net.input_encoding) if pin_sums else _encode(x, net.input_encoding)
        for i, step in enumerate(net.steps):
            if isinstance(step, Flatten):
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
            elif isinstance(step, MaxPool):
                x = tf.nn.max_pool2d(x, step.pool_size, step.strides, "VALID")
            elif pin_sums and step is net.steps[-1] and has_integer_scores(step):
                x = _integer_scores(step, x)
            elif pin_sums and has_exact_signs(net, i):
                x = _signs_of_real_sums(step, x, neurons_per_gather)
            elif pin_sums and has_depthwise_affine(step):
                x = _depthwise_affine(step, x, neurons_per_gather)
            else:
                x = _layer(step, x, pin_sums, neurons_per_gather)
        return x if output_range is None else _pinned(x, output_range)

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
    bits = _sign_select(tf.expand_dims(x, -1) >= thresholds)
    return tf.reshape(bits, [-1, *x.shape[1:-1], x.shape[-1] * len(encoding.thresholds)])


PIXEL_LEVELS = 255  # int8 inputs of an encoded net: [0, 1] in steps of 1/255, i.e. 8-bit pixels exactly


def _encode_on_pixel_grid(x, encoding):
    """:func:`_encode` for int8 files, exact for pixels ``k/255``.

    The input and the thresholds are pinned (FakeQuant) to the same int8 grid, scale 1/255 and
    zero point -128, each threshold replaced by the first pixel level that passes it
    (:func:`pixel_level_thresholds`): the quantized comparison then compares two integer codes.
    """
    levels = tf.constant(pixel_level_thresholds(encoding.thresholds) / np.float32(PIXEL_LEVELS))
    bits = _sign_select(tf.expand_dims(_pinned(x, (0.0, 1.0)), -1) >= _pinned(levels, (0.0, 1.0)))
    return tf.reshape(bits, [-1, *x.shape[1:-1], x.shape[-1] * len(encoding.thresholds)])


def pixel_level_thresholds(thresholds):
    """For each threshold ``t``, the smallest ``k`` in 0..255 with ``float32(k) / 255 >= t`` (float32, as the data).

    ValueError for a threshold above 1: no 8-bit pixel passes it, so it cannot sit on the grid.
    """
    pixels = np.arange(PIXEL_LEVELS + 1, dtype=np.float32) / np.float32(PIXEL_LEVELS)
    levels = []
    for t in np.asarray(thresholds, np.float32):
        passing = np.flatnonzero(pixels >= t)
        if passing.size == 0:
            raise ValueError(
                f"Input encoding threshold {float(t)} is above 1: sparse_int8 reads inputs as 8-bit pixels "
                "k/255 in [0, 1], and no pixel passes it. Use thresholds in [0, 1] or mode='sparse'."
            )
        levels.append(passing[0])
    return np.asarray(levels, np.float32)


def _sign_select(condition):
    return tf.where(condition, tf.constant(1.0), tf.constant(-1.0))


def _layer(layer, x, pin_sums, neurons_per_gather):
    negated = None
    if layer.binary_input:  # -x of ±1 as a second SELECT_V2: int8 throughout (int8 NEG does not exist)
        positive = x >= 0
        x, negated = _sign_select(positive), tf.where(positive, tf.constant(-1.0), tf.constant(1.0))
    s = _sum(layer, x, neurons_per_gather, negated)
    if layer.output == "threshold":
        if pin_sums:
            bound = float(layer.k + 1)
            s = _pinned(s, (-bound, bound))
        return _sign_select(s >= tf.constant(midpoint_thresholds(layer)))
    if layer.has_affine:
        s = s * tf.constant(layer.scale) + tf.constant(layer.offset)
    return tf.nn.relu(s) if layer.activation == "relu" else s


BITS_RANGE = (-128 / 127, 1.0)  # int8 scale 1/127, zero point 0: ±1 is ±127 exactly
INTEGERS_RANGE = (-128.0, 127.0)  # int8 scale 1, zero point 0: the integers -128..127 exactly
_CHUNK = 127  # inputs per partial sum of ±1, so that every partial sum is one of those integers


def _pinned(x, value_range):
    return tf.quantization.fake_quant_with_min_max_args(x, min=value_range[0], max=value_range[1], num_bits=8)


def has_integer_scores(layer):
    """Does ``sparse_int8`` give this last layer exact int32 class scores? Yes for a linear affine
    Dense layer reading ±1 bits (the output layer of a fully binary net)."""
    return (layer.op == "dense" and layer.binary_input and layer.output == "affine" and layer.activation == "linear"
            and layer.signs is not None and (layer.kind == "binary" or layer.k <= _CHUNK))


def _integer_scores(layer, x):
    """int32 class scores ``2 * (A * popcount + B)`` (:meth:`LoweredLayer.integer_scores`): exact in int8 files.

    The integer sums of ±1 are computed in int8 without rounding (inputs pinned to ±127, partial
    sums of at most 127 terms pinned to scale 1), then cast to int32 (DEQUANTIZE + CAST of small
    integers), added and scaled in int32: the argmax is Keras' on every input, ties included.
    """
    a, b, _, _ = layer.integer_scores(max_magnitude=2**30 - 1)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    positive = x >= 0
    bits = _pinned(_sign_select(positive), BITS_RANGE)
    if layer.kind == "sparse":
        negated = _pinned(tf.where(positive, tf.constant(-1.0), tf.constant(1.0)), BITS_RANGE)
        parts, count = [_sum(layer, bits, None, negated)], layer.k
    else:
        signs = layer.signs.T.astype(np.float32)
        parts = [tf.matmul(bits[:, i:i + _CHUNK], tf.constant(signs[i:i + _CHUNK])) for i in range(0, layer.fan_in, _CHUNK)]
        count = layer.fan_in
    s = functools.reduce(tf.add, [tf.cast(_pinned(part, INTEGERS_RANGE), tf.int32) for part in parts])
    return s * tf.constant(a.astype(np.int32)) + tf.constant((2 * b + a * count).astype(np.int32))


SCORES_MARGIN = 1.5  # int8 real outputs span 1.5x the calibration range: a clipped top score ties others


def scores_range(net, samples):
    """The int8 range of ``net``'s real-valued outputs: the calibration range widened by ``SCORES_MARGIN``
    about its centre (None for ±1 bits and int32 class scores). Calibration alone clips unseen larger
    scores, and two clipped scores tie."""
    last = net.steps[-1] if net.steps else None
    if last is None or isinstance(last, LoweredLayer) and (last.output == "threshold" or has_integer_scores(last)):
        return None
    scores = net.predict(samples)
    centre, half = (scores.max() + scores.min()) / 2, (scores.max() - scores.min()) / 2 * SCORES_MARGIN
    return float(centre - half), float(centre + half)


def _uses_depthwise(net):
    return any(has_exact_signs(net, i) or (isinstance(step, LoweredLayer) and has_depthwise_affine(step))
               for i, step in enumerate(net.steps))


_SIGN_WEIGHT = 64.0  # ±1 weights scaled so that half a pixel level (0.5/255) is 0.125 >> the compare's 1/256


def has_exact_signs(net, i):
    """Does ``sparse_int8`` compute step ``i``'s output signs exactly? Yes for a pruned Dense layer with ±1
    weights over real inputs whose affine output the next layer reads as signs (the binary flavour's
    first layer without an input encoding), when its inputs are 8-bit pixels (int8 scale 1/255)."""
    layer, following = net.steps[i], net.steps[i + 1] if i + 1 < len(net.steps) else None
    return (isinstance(layer, LoweredLayer) and layer.op == "dense" and layer.kind == "sparse"
            and layer.signs is not None and not layer.binary_input and layer.output == "affine"
            and layer.activation == "linear" and isinstance(following, LoweredLayer) and following.binary_input)


def _signs_of_real_sums(layer, x, neurons_per_gather):
    """±1 bits of ``s * scale + offset >= 0`` from int8 inputs, without rounding the sums.

    GATHER (k-major) -> DEPTHWISE_CONV_2D over each neuron's K inputs, weights ``±W`` (per tensor) and
    bias ``-W * (m - 1/2) / 255``: its int32 accumulator holds the exact sum of the K pixel levels,
    ``m`` is the smallest level sum on the positive side, so the output is at least ``W / 510`` away
    from 0 and GREATER_EQUAL resolves it (int8 SUM would round the sum to ~0.06, flipping bits).
    """
    t = -layer.offset.astype(np.float64) / np.where(layer.scale == 0, 1.0, layer.scale) * PIXEL_LEVELS
    flip = layer.scale < 0  # s <= t  <=>  -s >= -t
    first_positive = np.where(flip, np.ceil(-t), np.ceil(t))
    constant = np.where(layer.offset >= 0, -1.0, 1.0) * (layer.k * PIXEL_LEVELS + 1)  # scale 0: the offset's sign
    first_positive = np.where(layer.scale == 0, constant, first_positive)
    signs = (layer.signs * np.where(flip, -1, 1)[:, None]).astype(np.float32)
    bias = (-_SIGN_WEIGHT * (first_positive - 0.5) / PIXEL_LEVELS).astype(np.float32)
    s = _depthwise_sums(layer, x, _SIGN_WEIGHT * signs, bias, neurons_per_gather)
    return _sign_select(_pinned(s, (-1.0, 1.0)) >= 0)


def has_depthwise_affine(layer):
    """Does ``sparse_int8`` compute this layer as one DEPTHWISE_CONV_2D? Yes for a pruned Dense layer
    with ±1 weights, real inputs and a real (affine) output: BinaryConnect's hidden layers."""
    return (layer.op == "dense" and layer.kind == "sparse" and layer.signs is not None
            and not layer.binary_input and layer.output == "affine")


def _depthwise_affine(layer, x, neurons_per_gather):
    """``act(s * scale + offset)`` with one requantization: kernel ``sign * scale``, bias ``offset``.

    The int8 chain SUM -> MUL -> ADD rounds three times and needs ``[x, -x]`` (half the input's
    resolution); this reads ``x`` itself and rounds once (bench/README.md, "Sparse TFLite").
    """
    kernel = (layer.signs * layer.scale[:, None]).astype(np.float32)
    y = _depthwise_sums(layer, x, kernel, layer.offset.astype(np.float32), neurons_per_gather)
    return tf.nn.relu(y) if layer.activation == "relu" else y


def _depthwise_sums(layer, x, kernel, bias, neurons_per_gather):
    """``sum_k kernel[n, k] * x[indices[n, k]] + bias[n]`` as GATHER (k-major) -> DEPTHWISE_CONV_2D over the K inputs."""
    block = neurons_per_gather or layer.units
    parts = []
    for start in range(0, layer.units, block):
        rows = slice(start, start + block)
        n = len(kernel[rows])
        gathered = tf.gather(x, tf.constant(layer.indices[rows].T.astype(np.int32).ravel()), axis=1)
        filters = tf.constant(kernel[rows].T.reshape(1, layer.k, n, 1))
        out = tf.nn.depthwise_conv2d(tf.reshape(gathered, [-1, 1, layer.k, n]), filters, [1, 1, 1, 1], "VALID")
        parts.append(tf.reshape(tf.nn.bias_add(out, tf.constant(bias[rows])), [-1, n]))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def midpoint_thresholds(layer):
    """Float thresholds half-way between reachable sums: ``s >= T`` iff ``s >= T'``, with margin 1 on both sides.

    Sums of K terms ±1 have the parity of K; ``T'`` is the smallest reachable sum ``>= T``, minus 1,
    clipped to ``[-K-1, K+1]`` (a constant neuron stays constant).
    """
    k, t = layer.k, layer.threshold.astype(np.int64)
    first_reachable = t + ((t - k) % 2)
    return np.clip(first_reachable - 1, -k - 1, k + 1).astype(np.float32)


def _sum(layer, x, neurons_per_gather, negated=None):
    if layer.kind != "sparse":
        kernel = layer.kernel if layer.kind == "float" else layer.signs.T.astype(np.float32)
        return _conv(layer, x, kernel) if layer.op == "conv2d" else tf.matmul(x, tf.constant(kernel))
    if layer.signs is not None:
        source = tf.concat([x, -x if negated is None else negated], axis=1)
        indices = layer.indices + np.where(layer.signs < 0, layer.fan_in, 0)
        weights = None
    else:
        source, indices, weights = x, layer.indices, layer.values
    block = neurons_per_gather or layer.units
    sums = []
    for start in range(0, layer.units, block):
        rows = slice(start, start + block)
        n = len(indices[rows])
        block_indices = tf.constant(indices[rows].astype(np.int32).ravel())
        gathered = tf.reshape(tf.gather(source, block_indices, axis=1), [-1, n, layer.k])
        if weights is not None:
            gathered = gathered * tf.constant(weights[rows].astype(np.float32))
        sums.append(tf.reduce_sum(gathered, axis=2))
    return sums[0] if len(sums) == 1 else tf.concat(sums, axis=1)


def _conv(layer, x, kernel):
    """An unpruned Conv2D: explicit constant padding (PADV2 / PAD) then a VALID CONV_2D."""
    top, bottom, left, right = layer.padding
    if any(layer.padding):
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=layer.pad_value)
    kh, kw = layer.kernel_size
    filters = tf.constant(kernel.reshape(kh, kw, layer.input_hwc[2], layer.units))
    return tf.nn.conv2d(x, filters, strides=[1, *layer.strides, 1], padding="VALID")


def representative_samples(data, input_shape, mode):
    """``data`` as float32 model inputs of ``input_shape`` for int8 calibration; ValueError naming the problem."""
    if data is None:
        raise ValueError(
            f"mode={mode!r} needs representative_data: an array of a few hundred real model inputs to "
            "calibrate the int8 activation ranges."
        )
    samples = np.asarray(data, dtype=np.float32)
    if samples.ndim != len(input_shape) + 1 or samples.shape[0] == 0 or samples.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"representative_data must have shape (N, {', '.join(map(str, input_shape))}) with N >= 1, "
            f"got {samples.shape}."
        )
    return samples


@contextlib.contextmanager
def quiet_converter(what="TFLite conversion"):
    """Hide C++ log lines (stderr) and Python warnings of the converter or an interpreter; show them on failure."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception as error:
            os.dup2(saved, 2)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"{what} failed: {error}\nLog:\n{tail}") from error
        finally:
            os.dup2(saved, 2)
            os.close(saved)
