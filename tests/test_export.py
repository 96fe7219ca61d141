"""Edge export: finalized models, TFLite float/int8/LCE, TFLite Micro, C arrays, verification."""
import importlib.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import iprune_tf
import larq as lq
from conftest import BINARY, fit_pruned, needs_fashion_mnist, random_data, train_pruned_mlp, trained_preset
from iprune_tf import export
from iprune_tf._keras import keras, tf
from iprune_tf.workflow.models import mnist_mlp

BINARY_INPUT = dict(BINARY, input_quantizer="ste_sign")
TFLITE = "litert" if importlib.util.find_spec("ai_edge_litert") else "tflite"  # the interpreter verify() uses


@pytest.fixture(scope="module")
def preset(fashion):
    """:func:`trained_preset` and its float and int8 TFLite exports."""
    pruned = trained_preset()
    files = {
        "float": export.to_tflite(pruned, "float"),
        "int8": export.to_tflite(pruned, "int8", representative_data=fashion.x_train[:300]),
    }
    return pruned, files


def assert_matches(checks, runtimes, samples, min_agreement=0.99, max_diff=None):
    assert [check.runtime for check in checks] == runtimes
    for check in checks:
        assert check.samples == samples
        assert check.agreement >= min_agreement, check
        if max_diff is not None:
            assert check.max_abs_diff <= max_diff, check


def dense_kernels(tflite_bytes):
    """``(int8 kernel, scales)`` of every FULLY_CONNECTED weight tensor, in the file's order of ops."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    kernels = []
    for op in interpreter._get_ops_details():
        if op["op_name"] == "FULLY_CONNECTED":
            weights = tensors[op["inputs"][1]]
            kernels.append((interpreter.get_tensor(weights["index"]), weights["quantization_parameters"]["scales"]))
    return kernels


def tflm_check(checks):
    (check,) = [c for c in checks if c.runtime == "tflm"]
    return check


# ---------------------------------------------------------------- the MNIST preset at K=8


@pytest.mark.slow
@needs_fashion_mnist
def test_finalized_preset_has_constant_ternary_kernels_and_same_outputs(preset, fashion):
    pruned, _ = preset
    finalized = export.finalize_for_tflm(pruned)
    kinds = {type(layer).__module__.split(".")[0] for layer in finalized.layers}
    assert kinds == {"tf_keras"}, "no larq or iprune_tf layer may remain"
    kernel = finalized.get_layer("dense_2").get_weights()[0]
    assert set(np.unique(kernel)) <= {-1.0, 0.0, 1.0}
    assert np.all(np.count_nonzero(kernel, axis=0) == 8)
    x = fashion.x_test[:200]
    np.testing.assert_allclose(finalized.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
@needs_fashion_mnist
def test_float_export_matches_keras_in_tflite_and_tflm(preset, fashion):
    pruned, files = preset
    assert export.tflite_ops(files["float"]) == ["FULLY_CONNECTED", "RESHAPE"]  # no SIGN, no mask op
    checks = export.verify(pruned, files["float"], fashion.x_test, mode="float")
    assert_matches(checks, [TFLITE, "tflm"], 1000, max_diff=1e-4)
    assert checks[0].samples == 1000
    tflm = tflm_check(checks)
    assert tflm.arena_method == "recorded" and 0 < tflm.arena_bytes < 64 * 1024


@pytest.mark.slow
@needs_fashion_mnist
def test_int8_export_matches_keras_in_tflite_and_tflm(preset, fashion):
    pruned, files = preset
    ops = export.tflite_ops(files["int8"])
    assert "SIGN" not in ops and set(ops) <= {"QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED", "RESHAPE"}
    checks = export.verify(pruned, files["int8"], fashion.x_test, mode="int8")
    assert_matches(checks, [TFLITE, "tflm"], 1000)
    tflm = tflm_check(checks)
    # For this model TFLM's recorded total suffices (5,728 bytes in the README's run); every input ran with it.
    assert tflm.arena_method == "recorded" and 4096 < tflm.arena_bytes < 8192
    # Dense kernels are per tensor by default, and each neuron keeps one weight magnitude (ternary).
    kernels = dense_kernels(files["int8"])
    assert [k.shape for k, _ in kernels] == [(1024, 784), (1024, 1024), (10, 1024)]
    for kernel, scales in kernels:
        assert len(scales) == 1
        magnitudes = [np.unique(np.abs(row[row != 0])) for row in kernel.astype(np.int32)]
        assert all(len(m) == 1 and m[0] >= 16 for m in magnitudes)
    # int8 = a quarter of the float weights + int32 biases (as large as the float ones) + structure;
    # see "int8 and sizes" in iprune_tf.export for why it cannot be a quarter of the float file.
    weights = 784 * 1024 + 1024 * 1024 + 1024 * 10
    assert weights + 4 * 2058 < len(files["int8"]) < weights + 4 * 2058 + 8192
    assert len(files["int8"]) <= 0.252 * len(files["float"])


@pytest.mark.slow
@needs_fashion_mnist
def test_int8_io_and_per_channel_dense_kernels(preset, fashion):
    pruned, files = preset
    data = export.to_tflite(
        pruned, "int8", representative_data=fashion.x_train[:200], int8_io=True, per_channel_dense=True
    )
    interpreter = tf.lite.Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    # Per channel, every neuron's weights are +-127 (the BN scale moves to the per-channel scale),
    # at 24 bytes per neuron: a float32 scale and an int64 zero point for the kernel and the bias
    # (int8 I/O saves a few hundred bytes of QUANTIZE/DEQUANTIZE tensors).
    for kernel, scales in dense_kernels(data):
        assert len(scales) == len(kernel) and set(np.unique(kernel)) <= {-127, 0, 127}
    assert len(data) - len(files["int8"]) > 23 * 2058
    checks = export.verify(pruned, data, fashion.x_test[:300], mode="int8")
    assert_matches(checks, [TFLITE, "tflm"], 300, min_agreement=0.98)


@pytest.mark.slow
@needs_fashion_mnist
def test_lce_export_matches_keras_in_lce_interpreter(preset, fashion):
    pruned, _ = preset
    data = export.to_tflite(pruned, "lce")
    assert "SIGN" not in export.tflite_ops(data)
    checks = export.verify(pruned, data, fashion.x_test, mode="lce")
    assert_matches(checks, ["lce"], 1000, min_agreement=0.99, max_diff=1e-4)


@pytest.mark.slow
@needs_fashion_mnist
def test_binary_flavour_runs_in_tflm(fashion):
    pruned = train_pruned_mlp("binary", fashion.limit(640), epochs=1, hidden_units=(256, 256))
    data = export.to_tflite(pruned, "float")
    ops = export.tflite_ops(data)
    assert "SIGN" not in ops and {"GREATER_EQUAL", "SELECT_V2"} <= set(ops)
    x = fashion.x_test[:300]
    assert_matches(export.verify(pruned, data, x, mode="float"), [TFLITE, "tflm"], 300, min_agreement=0.99)


# ---------------------------------------------------------------- small models


def binary_cnn_with_binary_inputs():
    """conv_1 BinaryConnect; conv_2 and conv_3 binary inputs padded with +1 (the binary flavour's convs)."""
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 3)),
            lq.layers.QuantConv2D(8, 3, padding="same", name="conv_1", **BINARY),
            keras.layers.BatchNormalization(name="bn_1"),
            lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, name="conv_2", **BINARY_INPUT),
            keras.layers.BatchNormalization(name="bn_2"),
            lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, strides=2, name="conv_3", **BINARY_INPUT),
            keras.layers.BatchNormalization(name="bn_3"),
            keras.layers.Flatten(name="flatten"),
            lq.layers.QuantDense(4, name="output", **BINARY_INPUT),
        ]
    )


@pytest.fixture(scope="module")
def pruned_cnn():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = binary_cnn_with_binary_inputs()
    pruned = iprune_tf.prune_fan_in(model, 5, skip=["conv_1", "conv_3", "output"])
    x, y = random_data(model, n=64)
    return fit_pruned(pruned, x, y, epochs=1), x


def test_conv_padding_with_ones_is_kept(pruned_cnn):
    pruned, x = pruned_cnn
    finalized = export.finalize_for_tflm(pruned)
    names = [layer.name for layer in finalized.layers]
    assert "conv_2_pad" in names and "conv_2_sign" in names
    assert finalized.get_layer("conv_2").padding == "valid"
    np.testing.assert_allclose(finalized.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-4)
    data = export.to_tflite(pruned, "float")
    assert {"PADV2", "CONV_2D", "SELECT_V2"} <= set(export.tflite_ops(data))
    assert_matches(export.verify(pruned, data, x[:32]), [TFLITE, "tflm"], 32, max_diff=1e-3)


def test_lce_bit_packs_only_unpruned_binary_convs(pruned_cnn):
    pruned, x = pruned_cnn
    data = export.to_tflite(pruned, "lce")
    ops = export.tflite_ops(data)
    # conv_3 (binary inputs, +-1 kernel) is bit-packed; pruned conv_2 (ternary kernel) and
    # BinaryConnect conv_1 (real inputs) stay float convolutions.
    assert "LceBconv2d" in ops and "CONV_2D" in ops
    assert_matches(export.verify(pruned, data, x), ["lce"], len(x), max_diff=1e-3)  # mode detected from LCE's ops


def test_functional_model_is_finalized_with_sign_blocks():
    inputs = keras.Input((12,))
    hidden = keras.layers.BatchNormalization(name="bn")(lq.layers.QuantDense(16, name="dense_1", **BINARY)(inputs))
    outputs = lq.layers.QuantDense(3, name="output", **BINARY_INPUT)(hidden)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(20, 12)).astype("float32")
    finalized = export.finalize_for_tflm(model)
    assert isinstance(finalized.get_layer("output_block"), keras.Sequential)
    np.testing.assert_allclose(finalized.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("flavour", ["full_precision", "binaryconnect_stoch"])
def test_other_flavours_finalize_to_the_same_function(flavour):
    model = mnist_mlp(flavour, hidden_units=(16,), input_shape=(4, 4))
    x, _ = random_data(model, n=32)
    finalized = export.finalize_for_tflm(model)
    assert {type(layer).__name__ for layer in finalized.layers} == {"Flatten", "Dense", "BatchNormalization", "Activation"}
    np.testing.assert_allclose(finalized.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_finalized_model_saves_and_loads(tmp_path, pruned_cnn):
    pruned, x = pruned_cnn
    finalized = export.finalize_for_tflm(pruned)
    path = str(tmp_path / "finalized.h5")
    finalized.save(path)
    loaded = keras.models.load_model(path, custom_objects=export.custom_objects())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), finalized.predict(x, verbose=0), atol=1e-6)


def small_mlp():
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(20,)),
            lq.layers.QuantDense(32, name="dense_1", **BINARY),
            keras.layers.BatchNormalization(name="bn_1"),
            lq.layers.QuantDense(5, name="output", **BINARY_INPUT),
        ]
    )
    x, _ = random_data(model, n=64)
    return model, x


def test_c_array_compiles_and_holds_the_model(tmp_path):
    model, x = small_mlp()
    data = export.to_tflite(model, "int8", representative_data=x)
    header, source = export.to_c_array(data, "small_model", out_dir=str(tmp_path))
    assert (tmp_path / "small_model.h").read_text() == header
    assert "#ifndef SMALL_MODEL_H_" in header and "extern const unsigned int small_model_len;" in header
    assert "alignas(16) const unsigned char small_model[]" in source
    assert f"const unsigned int small_model_len = {len(data)};" in source
    body = source[source.index("{") + 1 : source.index("}")]
    assert bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body)) == data
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "use_model.cc").write_text(
        '#include "small_model.h"\nunsigned int model_size() { return small_model_len + small_model[0] * 0; }\n'
    )
    for unit in ("small_model.cc", "use_model.cc"):
        result = subprocess.run(["gcc", "-c", "-Wall", "-Werror", unit], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_export_run_files_writes_verifies_and_refuses_to_overwrite(tmp_path):
    model, x = small_mlp()
    out = str(tmp_path / "export")
    modes = ["h5", "float", "int8", "lce", "npz"]
    rows = export.export_run_files(model, out, "mlp", modes, x, x, c_array=True)
    assert [(row.mode, row.runtime) for row in rows] == [
        ("h5", "keras"), ("float", TFLITE), ("float", "tflm"), ("int8", TFLITE), ("int8", "tflm"),
        ("lce", "lce"), ("npz", "numpy"),
    ]
    assert sorted(os.listdir(out)) == sorted(
        ["mlp.h5", "mlp_float.tflite", "mlp_float.h", "mlp_float.cc", "mlp_int8.tflite", "mlp_int8.h", "mlp_int8.cc",
         "mlp_lce.tflite", "mlp_sparse.npz"]
    )
    for row in rows:
        assert os.path.getsize(row.file) == row.bytes
        assert row.agreement == 1.0 if row.mode != "int8" else row.agreement >= 0.95, row
        assert (row.arena_bytes is not None) == (row.runtime == "tflm")
        assert (row.payload_bytes is not None) == (row.mode == "npz")
    table = export.format_export_table(rows)
    assert "mlp_int8.tflite" in table and "tflm" in table and "mlp_sparse.npz" in table
    before = {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)}
    with pytest.raises(FileExistsError, match="mlp_sparse.npz already exists"):
        export.export_run_files(model, out, "mlp", ["npz", "float"], x, x)
    assert {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)} == before
    with pytest.raises(ValueError, match="Unknown export mode 'onnx'"):
        export.export_run_files(model, out, "mlp", ["onnx"], x, x)


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise(tmp_path):
    model, x = small_mlp()
    with pytest.raises(ValueError, match="Unknown export mode 'fp16'"):
        export.to_tflite(model, "fp16")
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(model, "int8")
    with pytest.raises(ValueError, match="shape"):
        export.to_tflite(model, "int8", representative_data=np.zeros((4, 7), "float32"))
    with pytest.raises(ValueError, match="Unknown export mode"):
        export.verify(model, b"\0", x, mode="int4")
    for bad in ("1model", "my-model", "int", "", "a b"):
        with pytest.raises(ValueError, match="C identifier"):
            export.to_c_array(b"\1\2", bad)
    with pytest.raises(ValueError, match="empty"):
        export.to_c_array(b"", "empty_model")
    export.to_c_array(b"\1\2", "tiny", out_dir=str(tmp_path))
    with pytest.raises(FileExistsError, match="tiny.h"):
        export.to_c_array(b"\1\2\3", "tiny", out_dir=str(tmp_path))
    export.to_c_array(b"\1\2\3", "tiny", out_dir=str(tmp_path), overwrite=True)
    assert "tiny_len = 3;" in (tmp_path / "tiny.cc").read_text()


def test_unsupported_layers_are_named():
    depthwise = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(6, 6, 2)), lq.layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", name="dw")]
    )
    with pytest.raises(ValueError, match="'dw' \\(QuantDepthwiseConv2D\\)"):
        export.finalize_for_tflm(depthwise)
    heaviside = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(6,)), lq.layers.QuantDense(3, name="step", input_quantizer="ste_heaviside")]
    )
    with pytest.raises(ValueError, match="'step' has input quantizer SteHeaviside"):
        export.to_tflite(heaviside, "float")
