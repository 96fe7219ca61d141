"""The .npz sparse format of the lowered form: exact payload, round trip, inference equal to Keras, bad input."""
import json
import os

import numpy as np
import pytest

import iprune_tf
import larq as lq
from conftest import BINARY, fashion_data, fit_pruned, needs_fashion_mnist, random_data, trained_preset
from iprune_tf.export import lower, npz as sf
from iprune_tf._keras import keras
from iprune_tf.workflow.models import mnist_mlp


def round_trip(model, tmp_path, name="model.npz"):
    path = str(tmp_path / name)
    sf.save_sparse(lower(model), path)
    return sf.load_sparse(path), path


@pytest.mark.slow
@needs_fashion_mnist
def test_preset_k8_payload_and_predictions(tmp_path):
    pruned = trained_preset()
    x = fashion_data().x_test
    loaded, path = round_trip(pruned, tmp_path)
    assert [(l.name, l.kind, l.fan_in, l.units, l.k) for l in loaded.layers] == [
        ("dense_1", "sparse", 784, 1024, 8), ("dense_2", "sparse", 1024, 1024, 8), ("output", "binary", 1024, 10, 1024),
    ]
    # Hand count: K=8 indices of ceil(log2(784)) = ceil(log2(1024)) = 10 bits and one sign bit per
    # kept weight; the dense output layer's 1024 x 10 sign bits; BN folded to two float32 per neuron.
    by_hand = 1024 * 8 * (10 + 1) + 1024 * 8 * (10 + 1) + 1024 * 10 + (1024 + 1024 + 10) * 2 * 32
    assert loaded.cost()["memory_bits_file"] == by_hand == 322176
    assert loaded.payload_bytes() == 40272
    assert [row["file_bits"] for row in loaded.cost()["layers"]] == [90112 + 65536, 90112 + 65536, 10240 + 640]
    assert loaded.payload_bytes() < os.path.getsize(path) < loaded.payload_bytes() + 8192
    with np.load(path) as data:
        assert data["L0_indices"].nbytes == 1024 * 8 * 10 // 8 and data["L0_signs"].nbytes == 1024 * 8 // 8
    expected = pruned.predict(x, verbose=0)
    outputs = loaded.predict(x)
    np.testing.assert_array_equal(outputs.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    # The stored indices and signs are exactly the pruned layer's non-zero weights.
    kernel = iprune_tf.effective_kernel(pruned.get_layer("prune_fan_in_dense_2"))
    rebuilt = np.zeros_like(kernel)
    layer = loaded.layers[1]
    np.put_along_axis(rebuilt.T, layer.indices, layer.signs, axis=1)
    np.testing.assert_array_equal(rebuilt, kernel)


def test_binary_flavour_with_sign_activations(tmp_path):
    model = mnist_mlp("binary", hidden_units=(64, 48), input_shape=(6, 5))
    pruned = iprune_tf.prune_fan_in(model, 4, skip=iprune_tf.paper_skip("mnist"))
    x, y = random_data(model, n=256)
    fit_pruned(pruned, x, y, epochs=2)
    loaded, _ = round_trip(pruned, tmp_path)
    assert [(l.kind, l.binary_input, l.output, l.k) for l in loaded.layers] == [
        ("sparse", False, "affine", 4), ("sparse", True, "threshold", 4), ("binary", True, "affine", 48),
    ]
    assert [c["index_bits"] for c in loaded.cost()["layers"][:2]] == [5, 6]  # ceil(log2(30)), ceil(log2(64))
    expected = pruned.predict(x, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x).argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-4)


def test_float_kernels_bias_relu_and_scaled_binary_kernels(tmp_path):
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(12,)),
            keras.layers.Dense(16, activation="relu", name="float_relu"),
            lq.layers.QuantDense(8, kernel_quantizer="magnitude_aware_sign", use_bias=True, name="scaled"),
            keras.layers.ReLU(name="relu"),
            lq.layers.QuantDense(3, kernel_quantizer="ste_sign", use_bias=False, name="plain"),
        ]
    )
    x = np.random.default_rng(3).normal(size=(64, 12)).astype("float32")
    model.get_layer("scaled").bias.assign(np.linspace(-0.5, 0.5, 8))
    loaded, _ = round_trip(model, tmp_path)
    kinds = [(l.kind, l.activation, l.has_affine) for l in loaded.layers]
    # A magnitude-aware (scaled) binary kernel is stored as float; the bias goes to the offset;
    # identity pairs (zero bias, no BN) are not stored.
    assert kinds == [("float", "relu", False), ("float", "relu", True), ("binary", "linear", False)]
    assert loaded.layers[2].cost()["file_bits"] == 8 * 3
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=1e-4)


def test_uneven_fan_in_falls_back_to_float():
    layer = keras.layers.Dense(3, use_bias=False, name="uneven")
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), layer])
    layer.set_weights([np.array([[1, 0, -1], [0, 0, 1], [-1, 1, 0], [0, 0, 1]], np.float32)])  # 2, 1, 3 inputs
    (stored,) = lower(model).layers
    assert stored.kind == "float"
    x = np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(lower(model).predict(x), model.predict(x, verbose=0))


def test_unsupported_models_are_refused():
    bn_after_relu = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, activation="relu"),
         keras.layers.BatchNormalization(name="late_bn")]
    )
    with pytest.raises(ValueError, match="'late_bn'.*after the activation"):
        lower(bn_after_relu)
    heaviside = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(4,)), lq.layers.QuantDense(3, input_quantizer="ste_heaviside", name="h")]
    )
    with pytest.raises(ValueError, match="'h' has input quantizer SteHeaviside"):
        lower(heaviside)
    inputs = keras.Input((4,))
    branch = keras.layers.Dense(2, name="d")(inputs)
    two_paths = keras.Model(inputs, keras.layers.Add(name="add")([branch, keras.layers.Dense(2)(inputs)]))
    with pytest.raises(ValueError, match="not a single chain"):
        lower(two_paths)


def test_conv_net_round_trips(tmp_path):
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 3)),
        lq.layers.QuantConv2D(6, 3, padding="same", name="conv_1", **BINARY), keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(2),
        lq.layers.QuantConv2D(10, 3, strides=2, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              name="conv_2", **BINARY),
        keras.layers.BatchNormalization(), keras.layers.Flatten(),
        lq.layers.QuantDense(4, input_quantizer="ste_sign", name="output", **BINARY),
    ])
    pruned = fit_pruned(iprune_tf.prune_fan_in(model, 5, skip=["output"]), *random_data(model), epochs=1)
    loaded, _ = round_trip(pruned, tmp_path)
    conv_2 = loaded.layers[1]
    assert (conv_2.op, conv_2.kind, conv_2.k, conv_2.output, conv_2.padding, conv_2.pad_value) == (
        "conv2d", "sparse", 5, "threshold", (0, 1, 0, 1), 1.0)
    x, _ = random_data(model, n=100, seed=5)
    np.testing.assert_array_equal(loaded.predict(x), lower(pruned).predict(x))
    np.testing.assert_array_equal(loaded.predict(x).argmax(1), pruned.predict(x, verbose=0).argmax(1))


@pytest.fixture(scope="module")
def small_pruned():
    keras.backend.clear_session()
    model = mnist_mlp("binaryconnect_det", hidden_units=(16,), input_shape=(4, 4))
    pruned = iprune_tf.prune_fan_in(model, 3, skip=iprune_tf.paper_skip("mnist"))
    x, y = random_data(model, n=32)
    return fit_pruned(pruned, x, y, epochs=1), x


@pytest.fixture
def saved(tmp_path, small_pruned):
    pruned, x = small_pruned
    path = str(tmp_path / "small.npz")
    return sf.save_sparse(lower(pruned), path), path, x


def test_overwrite_is_refused(saved):
    sparse, path, _ = saved
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError, match="already exists"):
        sf.save_sparse(sparse, path)
    assert open(path, "rb").read() == before
    sf.save_sparse(sparse, path, overwrite=True)


def rewrite(path, **changes):
    """Rewrite the npz at ``path`` with some arrays replaced (None removes one)."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def header_with(path, **fields):
    with np.load(path) as data:
        header = json.loads(str(data["header"][()]))
    header.update(fields)
    return np.array(json.dumps(header))


def test_bad_files_raise_clear_errors(saved, tmp_path):
    sparse, path, x = saved
    np.testing.assert_allclose(sf.load_sparse(path).predict(x), sparse.predict(x))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        sf.load_sparse(str(tmp_path / "missing.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(sf.SparseFormatError, match="garbage.npz"):
        sf.load_sparse(str(garbage))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(path, "rb").read()[:-200])
    with pytest.raises(sf.SparseFormatError):
        sf.load_sparse(str(truncated))
    with pytest.raises(ValueError, match="shape"):
        sparse.predict(np.zeros((2, 16), np.float32))

    rewrite(path, header=header_with(path, version=99))
    with pytest.raises(sf.SparseFormatError, match="version 99; this iprune_tf reads version 2"):
        sf.load_sparse(path)
    rewrite(path, header=header_with(path, version=sf.VERSION, format="something_else"))
    with pytest.raises(sf.SparseFormatError, match="format 'something_else'"):
        sf.load_sparse(path)
    rewrite(path, header=header_with(path, format=sf.FORMAT))
    assert sf.load_sparse(path).cost() == sparse.cost()
    with np.load(path) as data:
        header = json.loads(str(data["header"][()]))
    output = next(spec for spec in header["steps"] if spec.get("kind") == "binary")
    output["k"] = output["fan_in"] // 2
    rewrite(path, header=np.array(json.dumps(header)))
    with pytest.raises(sf.SparseFormatError, match="only a sparse layer keeps fewer inputs than its fan-in"):
        sf.load_sparse(path)
    output["k"] = output["fan_in"]
    rewrite(path, header=np.array(json.dumps(header)))
    with np.load(path) as data:
        scale = data["L0_scale"].copy()
    scale[[0, 2]] = [np.nan, np.inf]
    rewrite(path, L0_scale=scale)
    with pytest.raises(sf.SparseFormatError, match="'L0_scale' holds 2 non-finite values"):
        sf.load_sparse(path)
    rewrite(path, L0_scale=np.where(np.isfinite(scale), scale, 1).astype(np.float32))
    rewrite(path, L0_signs=np.zeros(1, np.uint8))
    with pytest.raises(sf.SparseFormatError, match="sign array holds 8 bits, expected 48"):
        sf.load_sparse(path)
    rewrite(path, L0_signs=None)
    with pytest.raises(sf.SparseFormatError, match="dense_1.*lacks its weight arrays"):
        sf.load_sparse(path)
    rewrite(path, header=None)
    with pytest.raises(sf.SparseFormatError, match="no 'header'"):
        sf.load_sparse(path)
