"""Binary weight quantizers for the BinaryConnect flavours of the presets.

larq ships the deterministic BinaryConnect quantizer (``ste_sign``) but not the stochastic
one, which samples each weight to +1 with probability ``hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)``
during training and binarizes deterministically at inference (Courbariaux et al., 2015).
"""
import larq as lq

from iprune_tf._keras import tf


def _clipped_straight_through(x, dy, clip_value):
    """Straight-through gradient, zeroed where ``|x| > clip_value`` (as larq's ``ste_sign``)."""
    if clip_value is None:
        return dy
    return tf.where(tf.abs(x) <= clip_value, dy, tf.zeros_like(dy))


def stochastic_sign(x, clip_value=1.0, seed=None):
    """Sample ``x`` to +1 with probability ``hard_sigmoid(x)``, else -1; straight-through gradient."""

    @tf.custom_gradient
    def _call(x):
        probability = tf.clip_by_value((x + 1.0) / 2.0, 0.0, 1.0)
        draw = tf.random.uniform(tf.shape(x), dtype=x.dtype, seed=seed)
        sampled = tf.where(draw < probability, tf.ones_like(x), -tf.ones_like(x))

        def grad(dy):
            return _clipped_straight_through(x, dy, clip_value)

        return sampled, grad

    return _call(x)


@lq.utils.register_keras_custom_object
class StochasticBinary(lq.quantizers._BaseQuantizer):
    """Stochastic BinaryConnect weight quantizer: random ±1 in training, ``ste_sign`` at inference.

    As a Keras layer it inherits the ``training`` flag from the layer that calls it, so
    ``model.fit`` samples and ``model.predict``/``evaluate`` are deterministic.
    """

    precision = 1

    def __init__(self, clip_value=1.0, **kwargs):
        self.clip_value = clip_value
        super().__init__(**kwargs)

    def call(self, inputs, training=None):
        if training is None:
            training = False
        outputs = tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: stochastic_sign(inputs, clip_value=self.clip_value),
            lambda: lq.quantizers.ste_sign(inputs, clip_value=self.clip_value),
        )
        return super().call(outputs)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}
