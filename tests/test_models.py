"""Presets: architecture, flavours, skip lists, and the stochastic BinaryConnect quantizer."""
import numpy as np
import pytest

import iprune_tf
import larq as lq
from iprune_tf._keras import keras, tf
from iprune_tf.workflow.models import FLAVOURS, cifar10_vgg_small, get_preset, mnist_mlp
from iprune_tf.workflow.quantizers import StochasticBinary


def kernel_shapes(model):
    return [tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")]


def test_mnist_mlp_is_1024d_1024d_10d_with_bn_after_every_dense():
    model = mnist_mlp("binaryconnect_det")
    assert kernel_shapes(model) == [(784, 1024), (1024, 1024), (1024, 10)]
    names = [layer.name for layer in model.layers]
    for dense in ("dense_1", "dense_2", "output"):
        following = model.layers[names.index(dense) + 1]
        assert isinstance(following, keras.layers.BatchNormalization)
    assert not model.losses  # the recipe's weight decay is the optimizer's (decoupled), not a loss term


def test_cifar_vgg_small_architecture():
    model = cifar10_vgg_small("full_precision")
    assert kernel_shapes(model) == [
        (3, 3, 3, 128), (3, 3, 128, 128), (3, 3, 128, 256), (3, 3, 256, 256),
        (3, 3, 256, 512), (3, 3, 512, 512), (8192, 1024), (1024, 1024), (1024, 10),
    ]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_flavours_quantize_what_they_should(flavour):
    model = mnist_mlp(flavour, hidden_units=(8, 8))
    first, second = model.get_layer("dense_1"), model.get_layer("dense_2")
    if flavour == "full_precision":
        assert type(first) is keras.layers.Dense
        return
    assert type(first) is lq.layers.QuantDense and first.input_quantizer is None
    expected_kernel = StochasticBinary if flavour == "binaryconnect_stoch" else lq.quantizers.SteSign
    assert isinstance(second.kernel_quantizer, expected_kernel)
    assert (second.input_quantizer is not None) == (flavour == "binary")
    has_relu = any(layer.name.startswith("act_") for layer in model.layers)
    assert has_relu == (flavour != "binary")


def test_presets_carry_the_paper_skip_lists():
    mnist = iprune_tf.prune_fan_in(mnist_mlp(hidden_units=(16, 16)), 8, skip=get_preset("mnist").skip())
    assert [l.layer.name for l in mnist.layers if isinstance(l, iprune_tf.PruneFanIn)] == ["dense_1", "dense_2"]
    assert get_preset("cifar10").zca and not get_preset("mnist").zca
    with pytest.raises(ValueError, match="Unknown preset 'imagenet'"):
        get_preset("imagenet")
    with pytest.raises(ValueError, match="Unknown flavour 'ternary'"):
        mnist_mlp("ternary")


def test_stochastic_binary_samples_in_training_and_is_deterministic_at_inference():
    quantizer = StochasticBinary()
    w = tf.constant(np.full(20000, 0.5, dtype="float32"))
    sampled = quantizer(w, training=True).numpy()
    assert set(np.unique(sampled)) == {-1.0, 1.0}
    assert np.mean(sampled == 1.0) == pytest.approx(0.75, abs=0.02)  # hard_sigmoid(0.5) = 0.75
    np.testing.assert_array_equal(quantizer(w, training=False).numpy(), np.ones(20000))
    x = tf.constant([-2.0, -0.5, 0.3, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(quantizer(x, training=True))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 1.0, 1.0, 0.0])


def test_stochastic_flavour_predicts_deterministically():
    model = mnist_mlp("binaryconnect_stoch", hidden_units=(32,))
    x = np.random.default_rng(0).random((8, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not np.array_equal(model(x, training=True).numpy(), model(x, training=True).numpy())
