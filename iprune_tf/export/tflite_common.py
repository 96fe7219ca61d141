"""Pieces shared by the TFLite converters: TF graph primitives of the sparse forms, converter helpers."""
import contextlib
import os
import tempfile
import warnings

import numpy as np

from iprune_tf._keras import tf


def sign_select(condition):
    """+1 where ``condition``, else -1 (SELECT_V2)."""
    return tf.where(condition, tf.constant(1.0), tf.constant(-1.0))


def signs_and_negations(x):
    """``(+1 where x >= 0 else -1, its negation)``, both SELECT_V2: int8 has no NEG."""
    positive = x >= 0
    return sign_select(positive), tf.where(positive, tf.constant(-1.0), tf.constant(1.0))


def pinned(x, value_range):
    """``x`` with its int8 range fixed to ``value_range`` (FakeQuant): the converter keeps that scale."""
    return tf.quantization.fake_quant_with_min_max_args(x, min=value_range[0], max=value_range[1], num_bits=8)


def gather_sums(layer, x, neurons_per_gather, negated=None):
    """A layer's sums: GATHER -> RESHAPE -> SUM over the kept inputs of a pruned layer (the sign folded into
    the index, ``negated`` the -x to read), or one FULLY_CONNECTED / CONV_2D for an unpruned one."""
    if layer.kind != "sparse":
        kernel = layer.kernel if layer.kind == "float" else layer.signs.T.astype(np.float32)
        return conv(layer, x, kernel) if layer.op == "conv2d" else tf.matmul(x, tf.constant(kernel))
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


def conv(layer, x, kernel):
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
