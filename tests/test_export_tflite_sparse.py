"""Sparse TFLite (modes "sparse" and "sparse_int8"): op chain, sizes, exactness, TFLite and TFLite Micro."""
import functools
import importlib.util

import numpy as np
import pytest

import iprune_tf
import larq as lq
from conftest import BINARY, fit_pruned, random_data
from iprune_tf import export
from iprune_tf._keras import keras
from iprune_tf.export.lowered import LoweredNet
from iprune_tf.workflow import models
from iprune_tf.export.tflite_sparse import midpoint_thresholds, to_sparse_tflite

BINARY_INPUT = dict(BINARY, input_quantizer="ste_sign")
TFLITE = "litert" if importlib.util.find_spec("ai_edge_litert") else "tflite"  # the interpreter verify() uses
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime", reason="pip install tflite-micro to run")


def pruned_mlp(binary_input, inputs=64, hidden=(96, 80), classes=6, k=8, seed=0):
    """A larq MLP pruned to K=8 (output layer skipped), BN with random statistics, briefly fitted."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    quant = BINARY_INPUT if binary_input else BINARY
    layers = [keras.layers.InputLayer(input_shape=(inputs,))]
    for i, units in enumerate(hidden, start=1):
        layers += [lq.layers.QuantDense(units, name=f"dense_{i}", **quant), keras.layers.BatchNormalization(name=f"bn_{i}")]
        if not binary_input:
            layers.append(keras.layers.Activation("relu"))
    layers += [lq.layers.QuantDense(classes, name="output", **quant), keras.layers.BatchNormalization(name="bn_out")]
    model = keras.Sequential(layers)
    pruned = iprune_tf.prune_fan_in(model, k, skip=["output"])
    x, y = random_data(model, n=256, seed=seed)
    if binary_input:  # ±1 data: int8 quantizes real inputs before their first sign (see the module docstring)
        x = np.where(x >= 0, 1.0, -1.0).astype(np.float32)
    fit_pruned(pruned, x, y, epochs=1, batch_size=64)
    return randomize_batch_norms(pruned, np.random.default_rng(seed)), x


def randomize_batch_norms(model, rng, mean_scale=2.0):
    """Random BN statistics (some gamma = 0, some < 0), so that thresholds are non-trivial; returns ``model``."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.normal(size=n) * np.where(rng.random(n) < 0.1, 0.0, 1.0)
            layer.set_weights([gamma, rng.normal(size=n), rng.normal(scale=mean_scale, size=n), rng.uniform(0.5, 4.0, n)])
    return model


@functools.lru_cache(maxsize=None)
def fully_binary():
    return pruned_mlp(binary_input=True)


@functools.lru_cache(maxsize=None)
def binaryconnect():
    return pruned_mlp(binary_input=False)


@functools.lru_cache(maxsize=None)
def sparse_file(net, mode, **options):
    """``to_sparse_tflite`` of the ``binaryconnect`` or ``fully_binary`` net, converted once per session."""
    model, x = {"binaryconnect": binaryconnect, "fully_binary": fully_binary}[net]()
    return to_sparse_tflite(model, mode, representative_data=x[:64], **options)


def gather_indices(tflite_bytes):
    """The int32 index tensor of every GATHER, in op order."""
    interpreter, _ = export.tflite.tflite_interpreter(tflite_bytes)
    interpreter.allocate_tensors()
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == "GATHER"]
    return [interpreter.get_tensor(op["inputs"][1]) for op in ops]


def test_midpoint_thresholds_give_the_same_bits_with_margin_one():
    for k in (1, 2, 7, 8):
        reachable = np.arange(-k, k + 1, 2)
        layer = type("L", (), {"k": k, "threshold": np.arange(-k, k + 2, dtype=np.int32)})()
        midpoints = midpoint_thresholds(layer)
        for t, m in zip(layer.threshold, midpoints):
            np.testing.assert_array_equal(reachable >= t, reachable >= m)
            assert np.min(np.abs(reachable - m)) == 1


def test_sparse_chain_folds_signs_into_gather_indices():
    model, x = binaryconnect()
    net = export.lower(model)
    tflite = sparse_file("binaryconnect", "sparse")
    assert export.tflite_ops(tflite) == ["ADD", "CONCATENATION", "FULLY_CONNECTED", "GATHER", "MUL", "NEG", "RESHAPE", "SUM"]
    for layer, indices in zip(net.layers[:2], gather_indices(tflite)):
        assert indices.dtype == np.int32 and indices.shape == (layer.units * 8,)
        expected = layer.indices + np.where(layer.signs < 0, layer.fan_in, 0)
        np.testing.assert_array_equal(indices.reshape(layer.units, 8), expected)


def test_blocked_gathers_compute_the_same_and_cost_a_little_more():
    model, x = binaryconnect()
    whole, blocked = sparse_file("binaryconnect", "sparse"), sparse_file("binaryconnect", "sparse", neurons_per_gather=32)
    assert len(gather_indices(blocked)) == 3 + 3  # ceil(96/32) + ceil(80/32)
    assert len(whole) < len(blocked) < len(whole) + 4096
    for runtime_name in ("tflite", "tflm"):
        np.testing.assert_array_equal(_run(whole, x, runtime_name), _run(blocked, x, runtime_name))


def test_sparse_float_matches_keras_in_tflite_and_tflm_with_arena():
    model, x = binaryconnect()
    checks = export.verify(model, sparse_file("binaryconnect", "sparse"), x, mode="sparse")
    assert [c.runtime for c in checks] == [TFLITE, "tflm"]
    for check in checks:
        assert check.samples == len(x) and check.agreement == 1.0 and check.max_abs_diff <= 1e-4, check
    assert checks[1].arena_bytes is not None and 0 < checks[1].arena_bytes < 64 * 1024


def test_sparse_int8_of_a_fully_binary_net_reproduces_every_hidden_bit():
    """Cut the net after its last hidden layer: the int8 file outputs ±1 bits, equal to the reference's."""
    model, x = fully_binary()
    net = export.lower(model)
    assert [layer.output for layer in net.layers] == ["threshold", "threshold", "affine"]
    hidden = LoweredNet(net.input_shape, net.steps[:-1])
    tflite = to_sparse_tflite(hidden, "sparse_int8", representative_data=x[:32])
    interpreter, _ = export.tflite.tflite_interpreter(tflite)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert (ops[0], ops[-1], ops.count("QUANTIZE"), ops.count("DEQUANTIZE")) == ("QUANTIZE", "DEQUANTIZE", 1, 1)
    assert set(ops[1:-1]) == {"GREATER_EQUAL", "SELECT_V2", "CONCATENATION", "GATHER", "RESHAPE", "SUM"}  # all int8
    expected = net.activations(x)[-2]
    assert set(np.unique(expected)) == {-1.0, 1.0}
    for check_runtime in ("tflite", "tflm"):
        bits = np.sign(_run(tflite, x, check_runtime))
        np.testing.assert_array_equal(bits, expected, err_msg=check_runtime)


def test_sparse_int8_of_a_fully_binary_net_outputs_exact_integer_class_scores():
    """The output layer's sums of ±1 are exact in int8, then int32: scores 2 * (A * popcount + B), Keras' argmax."""
    model, x = fully_binary()
    net = export.lower(model)
    tflite = export.to_tflite(model, "sparse_int8", representative_data=x[:64])
    ops = export.tflite_ops(tflite)
    assert {"FULLY_CONNECTED", "CAST"} <= set(ops) and "MUL" in ops
    last = net.layers[-1]
    a, b, _, conflicts = last.integer_scores(max_magnitude=2**30 - 1)
    bits = np.where(net.activations(x)[-2] >= 0, 1, -1).astype(np.int64)
    popcount = (bits @ last.signs.T.astype(np.int64) + last.fan_in) // 2
    expected = 2 * (popcount * np.array(a, np.int64) + np.array(b, np.int64))
    keras_classes = np.argmax(model.predict(x, verbose=0), axis=1)
    assert conflicts == 0 and np.array_equal(np.argmax(expected, axis=1), keras_classes)
    for runtime_name in ("tflite", "tflm"):
        scores = _run(tflite, x, runtime_name)
        assert scores.dtype == np.int32, runtime_name
        np.testing.assert_array_equal(scores, expected, err_msg=runtime_name)
    checks = export.verify(model, tflite, x, mode="sparse_int8")
    assert [(c.agreement, c.max_abs_diff) for c in checks] == [(1.0, None), (1.0, None)]


def test_sparse_int8_of_the_binary_flavour_on_8_bit_pixels_is_exact():
    """Real pixels into the first pruned layer: its signs come from a DEPTHWISE_CONV_2D holding the exact level sums."""
    model = iprune_tf.prune_now(models.mnist_mlp("binary", hidden_units=(64, 48)), 8, skip=["output"])
    randomize_batch_norms(model, np.random.default_rng(1), mean_scale=0.5)
    x = (np.random.default_rng(2).integers(0, 256, (300, 28, 28)) / np.float32(255)).astype(np.float32)
    net = export.lower(model)
    tflite = to_sparse_tflite(model, "sparse_int8", representative_data=x[:100])
    assert "DEPTHWISE_CONV_2D" in export.tflite_ops(tflite)
    hidden = to_sparse_tflite(LoweredNet(net.input_shape, net.steps[:-1]), "sparse_int8", representative_data=x[:100])
    expected_bits = net.activations(x)[-2]
    first_bits = np.where(net.activations(x)[-3] >= 0, 1.0, -1.0)
    assert 0.05 < np.mean(first_bits > 0) < 0.95
    keras_classes = np.argmax(model.predict(x, verbose=0), axis=1)
    for runtime_name in ("tflite", "tflm"):
        np.testing.assert_array_equal(np.sign(_run(hidden, x, runtime_name)), expected_bits, err_msg=runtime_name)
        np.testing.assert_array_equal(np.argmax(_run(tflite, x, runtime_name), axis=1), keras_classes, err_msg=runtime_name)


def test_sparse_int8_binaryconnect_layers_are_one_depthwise_each_with_unclipped_scores():
    model, x = binaryconnect()
    tflite = sparse_file("binaryconnect", "sparse_int8")
    ops = export.tflite_ops(tflite)
    assert "DEPTHWISE_CONV_2D" in ops and not {"NEG", "CONCATENATION", "SUM", "MUL"} & set(ops)
    calibration = export.lower(model).predict(x[:64])
    interpreter, _ = export.tflite.tflite_interpreter(tflite)
    (out,) = interpreter.get_output_details()
    assert out["dtype"] == np.float32
    (dequantize,) = [op for op in interpreter._get_ops_details() if op["outputs"][0] == out["index"]]
    int8_scores = interpreter._get_tensor_details(dequantize["inputs"][0], 0)
    span = calibration.max() - calibration.min()
    assert 255 * int8_scores["quantization_parameters"]["scales"][0] == pytest.approx(1.5 * span, rel=0.02)
    for check in export.verify(model, tflite, x, mode="sparse_int8"):
        assert check.agreement >= 0.97, check


def test_sparse_int8_encodes_every_8_bit_pixel_exactly():
    """Thresholds between, on and next to pixel levels k/255: the int8 encoding's bits are the float32 ones."""
    encoding = iprune_tf.workflow.encoding.ThermometerEncoding(4, thresholds=[0.0, 100 / 255, 0.5, 0.999])
    net = LoweredNet((3,), [], encoding.lowered())
    pixels = (np.arange(256, dtype=np.float32) / np.float32(255)).reshape(-1, 1)
    x = np.concatenate([pixels, pixels[::-1], np.roll(pixels, 7)], axis=1)
    tflite = to_sparse_tflite(net, "sparse_int8", representative_data=x[:20])
    expected = encoding.encode(x)
    assert len(np.unique(expected[:, 1])) == 2
    for runtime_name in ("tflite", "tflm"):
        np.testing.assert_array_equal(np.sign(_run(tflite, x, runtime_name)), expected, err_msg=runtime_name)
    with pytest.raises(ValueError, match="threshold 1.5 is above 1"):
        to_sparse_tflite(LoweredNet((3,), [], iprune_tf.workflow.encoding.ThresholdEncoding(1.5).lowered()),
                         "sparse_int8", representative_data=x[:20])


def test_sparse_files_shrink_with_pruning():
    model, x = binaryconnect()
    sizes = {mode: len(export.to_tflite(model, mode, representative_data=x[:32])) for mode in ("float", "int8")}
    sizes.update({mode: len(sparse_file("binaryconnect", mode)) for mode in ("sparse", "sparse_int8")})
    assert sizes["sparse"] < sizes["float"] / 2 and sizes["sparse_int8"] < sizes["int8"]


def test_pruned_float_layers_gather_and_multiply_by_their_values():
    keras.backend.clear_session()
    model = keras.Sequential([
        keras.layers.Dense(48, activation="relu", input_shape=(30,), name="dense_1"),
        keras.layers.Dense(5, name="output"),
    ])
    pruned = iprune_tf.prune_fan_in(model, 6, skip=["output"])
    x, y = random_data(model, n=64)
    fit_pruned(pruned, x, y, epochs=1)
    tflite = to_sparse_tflite(pruned, "sparse")
    (indices,) = gather_indices(tflite)
    np.testing.assert_array_equal(indices.reshape(48, 6), export.lower(pruned).layers[0].indices)
    assert "MUL" in export.tflite_ops(tflite) and "NEG" not in export.tflite_ops(tflite)
    for runtime_name in ("tflite", "tflm"):
        np.testing.assert_allclose(_run(tflite, x, runtime_name), pruned.predict(x, verbose=0), atol=1e-5)


def test_pruned_convolution_is_refused_with_its_name_and_reason():
    keras.backend.clear_session()
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 3)),
        lq.layers.QuantConv2D(6, 3, padding="same", name="conv_1", **BINARY),
        keras.layers.Flatten(),
        lq.layers.QuantDense(4, name="output", **BINARY),
    ])
    pruned = iprune_tf.prune_fan_in(model, 4, skip=["output"])
    fit_pruned(pruned, *random_data(model, n=32), epochs=1)
    with pytest.raises(ValueError, match=r"Layer 'conv_1' is a pruned Conv2D \(4 of 27 inputs.*im2col"):
        to_sparse_tflite(pruned, "sparse")


def test_unpruned_convolutions_stay_conv_2d():
    keras.backend.clear_session()
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 3)),
        lq.layers.QuantConv2D(6, 3, padding="same", name="conv_1", **BINARY),
        keras.layers.BatchNormalization(),
        lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, name="conv_2", **BINARY_INPUT),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        lq.layers.QuantDense(16, name="dense", **BINARY_INPUT),
        lq.layers.QuantDense(4, name="output", **BINARY_INPUT),
    ])
    pruned = iprune_tf.prune_fan_in(model, 8, skip=["conv_1", "conv_2", "output"])
    x, y = random_data(model, n=32)
    fit_pruned(pruned, x, y, epochs=1)
    tflite = to_sparse_tflite(pruned, "sparse")
    assert {"CONV_2D", "PADV2", "MAX_POOL_2D", "GATHER"} <= set(export.tflite_ops(tflite))
    expected = pruned.predict(x, verbose=0)
    for runtime_name in ("tflite", "tflm"):
        np.testing.assert_allclose(_run(tflite, x, runtime_name), expected, atol=1e-4)


def test_bad_arguments_are_named():
    model, x = binaryconnect()
    with pytest.raises(ValueError, match="needs representative_data"):
        to_sparse_tflite(model, "sparse_int8")
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        to_sparse_tflite(model, "sparse_int8", representative_data=x[:, :10])
    with pytest.raises(ValueError, match="neurons_per_gather"):
        to_sparse_tflite(model, "sparse", neurons_per_gather=0)
    with pytest.raises(ValueError, match="Unknown sparse export mode"):
        to_sparse_tflite(model, "sparse_float16")


def test_c_array_of_a_sparse_file():
    tflite = sparse_file("binaryconnect", "sparse")
    header, source = export.to_c_array(tflite, "sparse_model")
    assert f"sparse_model_len = {len(tflite)};" in source and "extern const unsigned char sparse_model[];" in header
    body = source.split("{", 1)[1].split("}", 1)[0]
    assert bytes(int(v, 16) for v in body.replace(",", " ").split()) == tflite


def _run(tflite, x, which):
    """Outputs of a float-io TFLite model in TFLite or TFLite Micro, dequantized."""
    if which == "tflm":
        interpreter = runtime.Interpreter.from_bytes(tflite, arena_size=1 << 20)
        outputs = []
        for sample in x:
            interpreter.set_input(sample[None].astype(np.float32), 0)
            interpreter.invoke()
            outputs.append(interpreter.get_output(0))
        return np.concatenate(outputs)
    interpreter, _ = export.tflite.tflite_interpreter(tflite)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def test_iprune_export_lists_the_sparse_modes_without_library_noise(tiny_run, capfd, recwarn):
    from iprune_tf import cli

    args = ["export", tiny_run.dir, "--mode", "sparse", "--mode", "sparse_int8", "--verify-samples", "50", "--overwrite"]
    assert cli.main(args) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("mode"))
    arena_end = header.index("arena") + len("arena")
    rows = [line.split() + [line[arena_end - 9 : arena_end].strip()] for line in lines if line.startswith("sparse")]
    assert [(row[0], row[1], row[4]) for row in rows] == [
        ("sparse", "pruned_sparse.tflite", TFLITE), ("sparse", "pruned_sparse.tflite", "tflm"),
        ("sparse_int8", "pruned_sparse_int8.tflite", TFLITE), ("sparse_int8", "pruned_sparse_int8.tflite", "tflm"),
    ]
    assert rows[0][5] == rows[1][5] == "100.00%" and rows[0][-1] == "-", out
    assert int(rows[1][-1]) > 0 and int(rows[3][-1]) > 0, out  # TFLM arenas
    printed = out + err + "\n".join(str(warning.message) for warning in recwarn)  # pytest captures warnings
    for noise in ("deprecated", "fully_quantize", "Statistics for quantized", "XNNPACK", "HDF5", "compiled metrics"):
        assert noise not in printed, noise
