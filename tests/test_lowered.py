"""The lowered form against Keras: presets of every flavour, thresholds, cost, the .npz round trip."""
import numpy as np
import pytest

import iprune_tf
import larq as lq
from conftest import BINARY, kept_per_neuron
from iprune_tf.workflow import models
from iprune_tf._keras import keras
from iprune_tf.export import load_sparse, lower, save_sparse
from iprune_tf.export.folding import threshold_of

SAMPLES = 1000
CIFAR_SAMPLES = 24  # the full-size VGG in numpy and Keras; bench/lowered_check.py runs 1,000


def _randomize_batch_norms(model, rng):
    """BN statistics far from the identity (negative gammas included), so thresholds are non-trivial."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.normal(size=n).astype("f4"), rng.normal(size=n).astype("f4"),
                               rng.normal(scale=3, size=n).astype("f4"), rng.uniform(0.5, 30, n).astype("f4")])


def pruned_preset(preset, flavour, rng, train_steps, batch=50, **build):
    """A preset pruned to K=8 (paper skip list), trained ``train_steps`` on noise, BN statistics randomized."""
    spec = models.get_preset(preset)
    model = spec.build(flavour, **build)
    pruned = iprune_tf.prune_fan_in(model, 8, skip=spec.skip())
    pruned.compile(keras.optimizers.Adam(3e-3), "squared_hinge")
    x = rng.normal(size=(batch * train_steps, *model.input_shape[1:])).astype("f4")
    y = np.where(rng.random((len(x), 10)) < 0.1, 1, -1).astype("f4")
    pruned.fit(x, y, batch_size=batch, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    stripped = iprune_tf.strip_pruning(pruned)
    _randomize_batch_norms(stripped, rng)
    return stripped


def keras_outputs(model, names, x):
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    outputs = probe.predict(x, batch_size=250, verbose=0)
    return outputs if isinstance(outputs, list) else [outputs]


def check_against_keras(model, x):
    """Lower ``model``; its predicted classes must equal Keras' on ``x``."""
    net = lower(model)
    expected = model.predict(x, batch_size=250, verbose=0)
    scores = net.predict(x)
    assert np.array_equal(scores.argmax(1), expected.argmax(1))
    return net, expected, scores


@pytest.mark.parametrize("flavour", models.FLAVOURS)
def test_mnist_preset_lowered_equals_keras(flavour):
    rng = np.random.default_rng(1)
    model = pruned_preset("mnist", flavour, rng, train_steps=3)
    x = rng.normal(size=(SAMPLES, 28, 28)).astype("f4")
    net, expected, scores = check_against_keras(model, x)
    kinds = [(layer.kind, layer.k) for layer in net.layers]
    assert kinds == [("sparse", 8), ("sparse", 8), ("float" if flavour == "full_precision" else "binary", 1024)]
    assert np.max(np.abs(scores - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))
    if flavour == "binary":
        hidden = keras_outputs(model, ["bn_1", "bn_2"], x)
        steps = net.activations(x)[1:3]
        assert net.layers[1].output == "threshold"
        for keras_out, lowered_out in zip(hidden, steps):
            assert np.array_equal(np.where(keras_out >= 0, 1, -1), np.where(lowered_out >= 0, 1, -1))


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["binary", "binaryconnect_det"])
def test_cifar10_preset_random_weights_lowered_equals_keras(flavour):
    rng = np.random.default_rng(2)
    model = pruned_preset("cifar10", flavour, rng, train_steps=1, batch=8)
    x = rng.normal(size=(CIFAR_SAMPLES, 32, 32, 3)).astype("f4")
    net, expected, scores = check_against_keras(model, x)
    layers = net.layers
    assert [layer.kind for layer in layers] == ["binary", "binary"] + ["sparse"] * 6 + ["binary"]
    assert all(layer.k == 8 for layer in layers[2:8])
    if flavour == "binary":
        assert [layer.output for layer in layers] == ["affine"] + ["threshold"] * 7 + ["affine"]
        names = [f"conv_bn_{i}" for i in range(2, 7)] + ["bn_1", "bn_2"]
        pools = {"conv_bn_2": "pool_2", "conv_bn_4": "pool_4", "conv_bn_6": "pool_6"}
        keras_bits = keras_outputs(model, [pools.get(name, name) for name in names], x)
        lowered = {id(step): out for step, out in zip(net.steps, net.activations(x))}
        index = {step.name: i for i, step in enumerate(net.steps) if hasattr(step, "name")}
        for name, keras_out in zip(names, keras_bits):
            i = index[name.replace("conv_bn_", "conv_").replace("bn_", "dense_")]
            after_pool = net.steps[i + 1] if name in pools else net.steps[i]
            assert np.array_equal(np.where(keras_out >= 0, 1, -1), lowered[id(after_pool)]), name
    else:
        assert np.max(np.abs(scores - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))


def test_threshold_covers_decreasing_and_constant_neurons():
    k = 3  # sums -3..3
    assert threshold_of(np.array([0, 0, 0, 1, 1, 1, 1], bool), k, "l", 0) == (0, False)
    assert threshold_of(np.array([1, 1, 0, 0, 0, 0, 0], bool), k, "l", 0) == (2, True)  # s <= -2  <=>  -s >= 2
    assert threshold_of(np.ones(7, bool), k, "l", 0) == (-3, False)
    assert threshold_of(np.zeros(7, bool), k, "l", 0) == (4, False)
    with pytest.raises(ValueError, match="not monotonic"):
        threshold_of(np.array([1, 0, 1, 0, 0, 0, 0], bool), k, "l", 0)


def test_negative_and_zero_gamma_are_exact():
    binary_in = dict(BINARY, input_quantizer="ste_sign")
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(12,)),
        lq.layers.QuantDense(6, name="a", **BINARY), keras.layers.BatchNormalization(name="bn_a"),
        lq.layers.QuantDense(5, name="b", **binary_in), keras.layers.BatchNormalization(name="bn_b"),
        lq.layers.QuantDense(3, name="out", **binary_in),
    ])
    bn = model.get_layer("bn_b")
    bn.set_weights([np.array([-1.0, 0.0, 0.0, 2.0, -0.5], "f4"), np.array([0.3, 1.0, -1.0, 0.0, 0.1], "f4"),
                    np.array([1.0, 0, 0, -1.0, 0.5], "f4"), np.ones(5, "f4")])
    x = np.random.default_rng(3).normal(size=(500, 12)).astype("f4")
    net = lower(model)
    keras_bits = np.where(keras_outputs(model, ["bn_b"], x)[0] >= 0, 1, -1)
    assert np.array_equal(net.activations(x)[1], keras_bits)
    assert list(net.layers[1].threshold[1:3]) == [-6, 7]  # gamma 0: beta 1 -> always on, beta -1 -> never


def test_cost_counts_one_formula_and_npz_payload_matches(tmp_path):
    rng = np.random.default_rng(4)
    model = pruned_preset("mnist", "binary", rng, train_steps=1, hidden_units=(64, 32))
    net = lower(model)
    cost = net.cost()
    # 784->64 sparse (affine), 64->32 sparse (threshold), 32->10 dense binary (affine)
    assert cost["memory_bits_paper"] == 64 * 8 + 32 * 8 + 32 * 10
    assert cost["memory_bits_file"] == 64 * 8 * (1 + 10) + 64 * 64 + 32 * 8 * (1 + 6) + 32 * 32 + 320 + 10 * 64
    assert cost["operations"] == 64 * 8 + 32 * 8 + 320
    path = tmp_path / "net.npz"
    save_sparse(net, path)
    loaded = load_sparse(path)
    x = rng.normal(size=(100, 28, 28)).astype("f4")
    assert np.array_equal(loaded.predict(x), net.predict(x))
    assert loaded.cost() == cost
    with pytest.raises(FileExistsError):
        save_sparse(net, path)


def test_lower_refuses_unsupported_layers_by_name():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, name="d"),
                              keras.layers.LayerNormalization(name="ln"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'ln' .*LayerNormalization"):
        lower(model)
    tanh = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, activation="tanh", name="t")])
    with pytest.raises(ValueError, match="'t'.*tanh"):
        lower(tanh)


def test_pruned_and_stripped_lower_identically():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(20,)), lq.layers.QuantDense(6, name="h", **BINARY),
                              keras.layers.BatchNormalization(), lq.layers.QuantDense(2, name="out", **BINARY)])
    pruned = iprune_tf.prune_fan_in(model, 4, skip=["out"])
    pruned.compile("adam", "mse")
    pruned.fit(np.ones((8, 20), "f4"), np.ones((8, 2), "f4"), verbose=0, callbacks=[iprune_tf.UpdatePruningStep()])
    a, b = lower(pruned), lower(iprune_tf.strip_pruning(pruned))
    assert np.array_equal(a.layers[0].indices, b.layers[0].indices) and a.layers[0].k == 4
    assert kept_per_neuron(iprune_tf.effective_kernel(pruned.layers[0])).tolist() == [4] * 6
