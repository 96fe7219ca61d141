"""The exact int8 forms of ``sparse_int8`` (:mod:`iprune_tf.export.tflite_sparse`).

A thresholded sum of K terms ±1 has the parity of K, so ``s >= T`` is compared as
``s >= T'`` with ``T'`` half-way between reachable sums (:func:`iprune_tf.export.tflite_sparse.midpoint_thresholds`), and every
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
"""
import functools

import numpy as np

from iprune_tf._keras import tf
from iprune_tf.export.lowered import LoweredLayer
from iprune_tf.export.tflite_common import gather_sums, pinned, sign_select, signs_and_negations


def exact_form(net, i):
    """The int8 form of step ``i`` of ``net`` (a function ``(layer, x, neurons_per_gather) -> y``), or None
    when the generic chain of :mod:`iprune_tf.export.tflite_sparse` is already exact or rounds as int8 does."""
    step = net.steps[i]
    if not isinstance(step, LoweredLayer):
        return None
    if step is net.steps[-1] and has_integer_scores(step):
        return lambda layer, x, neurons_per_gather: integer_scores(layer, x)
    if has_exact_signs(net, i):
        return signs_of_real_sums
    if has_depthwise_affine(step):
        return depthwise_affine
    return None


PIXEL_LEVELS = 255  # int8 inputs of an encoded net: [0, 1] in steps of 1/255, i.e. 8-bit pixels exactly


def encode_on_pixel_grid(x, encoding):
    """An input encoding's ±1 bits for int8 files, exact for pixels ``k/255``.

    The input and the thresholds are pinned (FakeQuant) to the same int8 grid, scale 1/255 and
    zero point -128, each threshold replaced by the first pixel level that passes it
    (:func:`pixel_level_thresholds`): the quantized comparison then compares two integer codes.
    """
    levels = tf.constant(pixel_level_thresholds(encoding.thresholds) / np.float32(PIXEL_LEVELS))
    bits = sign_select(tf.expand_dims(pinned(x, (0.0, 1.0)), -1) >= pinned(levels, (0.0, 1.0)))
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


BITS_RANGE = (-128 / 127, 1.0)  # int8 scale 1/127, zero point 0: ±1 is ±127 exactly
INTEGERS_RANGE = (-128.0, 127.0)  # int8 scale 1, zero point 0: the integers -128..127 exactly
_CHUNK = 127  # inputs per partial sum of ±1, so that every partial sum is one of those integers


def has_integer_scores(layer):
    """Does ``sparse_int8`` give this last layer exact int32 class scores? Yes for a linear affine
    Dense layer reading ±1 bits (the output layer of a fully binary net)."""
    return (layer.op == "dense" and layer.binary_input and layer.output == "affine" and layer.activation == "linear"
            and layer.signs is not None and (layer.kind == "binary" or layer.k <= _CHUNK))


def integer_scores(layer, x):
    """int32 class scores ``2 * (A * popcount + B)`` (:meth:`LoweredLayer.integer_scores`): exact in int8 files.

    The integer sums of ±1 are computed in int8 without rounding (inputs pinned to ±127, partial
    sums of at most 127 terms pinned to scale 1), then cast to int32 (DEQUANTIZE + CAST of small
    integers), added and scaled in int32: the argmax is Keras' on every input, ties included.
    """
    a, b, _, _ = layer.integer_scores(max_magnitude=2**30 - 1)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    bits, negated = (pinned(v, BITS_RANGE) for v in signs_and_negations(x))
    if layer.kind == "sparse":
        parts, count = [gather_sums(layer, bits, None, negated)], layer.k
    else:
        signs = layer.signs.T.astype(np.float32)
        parts = [tf.matmul(bits[:, i:i + _CHUNK], tf.constant(signs[i:i + _CHUNK])) for i in range(0, layer.fan_in, _CHUNK)]
        count = layer.fan_in
    s = functools.reduce(tf.add, [tf.cast(pinned(part, INTEGERS_RANGE), tf.int32) for part in parts])
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


def uses_depthwise(net):
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


def signs_of_real_sums(layer, x, neurons_per_gather):
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
    return sign_select(pinned(s, (-1.0, 1.0)) >= 0)


def has_depthwise_affine(layer):
    """Does ``sparse_int8`` compute this layer as one DEPTHWISE_CONV_2D? Yes for a pruned Dense layer
    with ±1 weights, real inputs and a real (affine) output: BinaryConnect's hidden layers."""
    return (layer.op == "dense" and layer.kind == "sparse" and layer.signs is not None
            and not layer.binary_input and layer.output == "affine")


def depthwise_affine(layer, x, neurons_per_gather):
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


