"""The truth-table neuron layer: ``units`` K-input LUTs, each reading its own table at the address
of its K input signs (the layer :func:`iprune_tf.workflow.tables.to_table_net` builds; the export
wing lowers it to a kind ``table`` layer)."""
import larq as lq
import numpy as np

from iprune_tf._keras import keras, tf


@keras.utils.register_keras_serializable(package="iprune_tf")
class LutTable(keras.layers.Layer):
    """``units`` K-input LUTs: neuron n reads inputs ``indices[n]`` and outputs ``sign(table[n, address])``.

    The address is ``sum_i bit_i 2^i`` over the signs of its K inputs (bit i set for input
    ``indices[n, i] >= 0``, larq's sign). Gradients follow the table's multilinear extension
    ``f(x) = sum_j T[n, j] prod_i (1 + s_ij x_i) / 2``, which equals the table read on ±1 inputs:
    one-hot at the address for the table, ``(T[a with bit i] - T[a without bit i]) / 2`` for input i,
    so the layers before keep learning; the output sign is larq's ``ste_sign`` (straight-through
    where ``|f| <= 1``: the table is clipped to [-1, 1]).
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.shape[1] < 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"LutTable needs a (units, K) int array of input indices, got shape {indices.shape} "
                             f"({indices.dtype}).")
        if indices.min() < 0:
            raise ValueError(f"LutTable '{self.name}': input indices must be >= 0, got {int(indices.min())}.")
        self.indices = indices.astype(np.int32)
        self.units, self.k = self.indices.shape
        self.input_quantizer = lq.quantizers.SteSign()

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None or int(input_shape[-1]) <= int(self.indices.max()):
            raise ValueError(f"LutTable '{self.name}' reads inputs up to index {int(self.indices.max())} of a flat "
                             f"(batch, units) input, got shape {tuple(input_shape)}.")
        self.table = self.add_weight("table", (self.units, 2**self.k), initializer="zeros",
                                     constraint=lambda t: tf.clip_by_value(t, -1.0, 1.0))
        super().build(input_shape)

    def call(self, inputs):
        x = tf.gather(self.input_quantizer(inputs), self.indices, axis=1)  # (batch, units, K), ±1
        address = tf.reduce_sum(tf.cast(x >= 0, tf.int32) * tf.constant(2 ** np.arange(self.k), tf.int32), axis=-1)
        base = tf.constant(np.arange(self.units)[None, :] * 2**self.k, tf.int32)
        flat = tf.reshape(self.table, [-1])
        slopes = tf.stack([tf.gather(flat, base + tf.bitwise.bitwise_or(address, 1 << i))
                           - tf.gather(flat, base + tf.bitwise.bitwise_and(address, ~(1 << i)))
                           for i in range(self.k)], axis=-1) / 2
        # the value is the table read (x - stop_gradient(x) is 0); the gradient to x the extension's slopes
        f = tf.gather(flat, base + address) + tf.reduce_sum(slopes * (x - tf.stop_gradient(x)), axis=-1)
        return lq.quantizers.ste_sign(f)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.units])

    def get_config(self):
        return {**super().get_config(), "indices": self.indices.tolist()}
