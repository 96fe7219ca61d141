"""Folding what follows a layer's sum into the lowered layer (FINN's threshold folding for binary neurons).

A layer whose inputs and weights are ±1 computes an integer sum ``s`` in ``[-k, k]``. When the
next thing that reads its output is a sign, ``sign(BN(s + bias))`` is replaced by ``s >= T``: T is
found by evaluating Keras' own float32 bias add and batch-norm layer on every integer in
``[-k, k]``, so the integer model is bit-exact by construction (gamma < 0: the signs are negated;
gamma = 0: a constant). Otherwise bias and batch norm become one float32 affine map.
"""

import numpy as np

from iprune_tf._keras import tf


def _post_sum(step, s):
    """What Keras computes after the integer sum ``s`` (a numpy grid): bias add, then batch norm, in float32."""
    layer = step.layer
    y = tf.constant(s, tf.float32)
    if layer.use_bias:
        y = tf.nn.bias_add(y, layer.bias)
    if step.batch_norm is not None:
        y = step.batch_norm(y, training=False)
    return y.numpy()


def set_threshold(lowered, step):
    """Integer thresholds from Keras' own float32 post-sum ops on every integer sum in [-k, k]."""
    k, units = lowered.k, lowered.units
    sums = np.arange(-k, k + 1, dtype=np.float32)
    grid = np.repeat(sums[:, None], units, axis=1)
    if lowered.op == "conv2d":
        grid = grid[:, None, None, :]
    bits = _post_sum(step, grid).reshape(len(sums), units) >= 0
    threshold = np.empty(units, np.int32)
    for n in range(units):
        threshold[n], negate = threshold_of(bits[:, n], k, step.layer.name, n)
        if negate:
            lowered.signs[n] = -lowered.signs[n]
    lowered.output, lowered.threshold = "threshold", threshold


def threshold_of(bits, k, name, neuron):
    """``(T, negate)`` with ``bit(s) == (s' >= T)``, ``s' = -s`` when ``negate``; bits over s = -k..k."""
    on = np.flatnonzero(bits)
    if on.size == 0:
        return k + 1, False
    if on.size == len(bits):
        return -k, False
    if np.all(bits[on[0] :]):
        return on[0] - k, False
    if np.all(bits[: on[-1] + 1]):
        return -(on[-1] - k), True
    raise ValueError(f"Layer '{name}' neuron {neuron}: its batch norm is not monotonic in the sum; cannot threshold it.")


def set_affine(lowered, step):
    """Scale and offset: the bias and batch norm folded into one float32 affine map."""
    layer, bn = step.layer, step.batch_norm
    bias = layer.bias.numpy().astype(np.float32) if layer.use_bias else np.zeros(lowered.units, np.float32)
    scale, offset = np.ones(lowered.units, np.float32), bias
    if bn is not None:
        a, b = _batch_norm_affine(bn, lowered.units)
        scale, offset = a, bias * a + b
    lowered.output, lowered.scale, lowered.offset = "affine", scale, offset.astype(np.float32)
    lowered.activation = step.activation


def _batch_norm_affine(bn, units):
    """Inference batch norm as ``y = x * a + b`` (float32), as Keras computes it."""
    weights = {w.name.rsplit("/", 1)[-1].split(":")[0]: w.numpy() for w in bn.weights}
    gamma = weights.get("gamma", np.ones(units, np.float32))
    beta = weights.get("beta", np.zeros(units, np.float32))
    a = (gamma / np.sqrt(weights["moving_variance"] + np.float32(bn.epsilon))).astype(np.float32)
    return a, (beta - weights["moving_mean"] * a).astype(np.float32)
