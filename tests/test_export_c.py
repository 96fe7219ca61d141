"""C export (export.to_c): host gcc and QEMU Cortex-M3 runs against the lowered model and Keras."""
import dataclasses
import re
import shutil

import larq as lq
import numpy as np
import pytest

import iprune_tf
from iprune_tf.workflow import models
from iprune_tf._keras import keras
from iprune_tf.export import LoweredNet, lower, to_c
from iprune_tf.export import c_verify

CIFAR_SAMPLES = 12
BINARY = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian package gcc)")
needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs arm-none-eabi-gcc and qemu-system-arm (Debian packages gcc-arm-none-eabi, "
           "libnewlib-arm-none-eabi, qemu-system-arm)",
)


def pruned(model, k=8, skip=None, seed=0):
    """``model`` pruned one-shot to ``k`` inputs per neuron (random latent weights), random BN statistics."""
    model = iprune_tf.prune_now(model, k, skip=skip)
    rng = np.random.default_rng(seed)
    for bn in model.layers:
        if isinstance(bn, keras.layers.BatchNormalization):
            n = bn.gamma.shape[0]
            bn.set_weights([rng.normal(size=n), rng.normal(size=n), rng.normal(scale=3, size=n), rng.uniform(0.1, 5, n)])
    return model


@pytest.fixture(scope="module")
def bc_mlp():
    """BinaryConnect MNIST preset with 64/32 hidden units, K=8."""
    return pruned(models.mnist_mlp("binaryconnect_det", hidden_units=(64, 32)), skip=models.get_preset("mnist").skip())


@pytest.fixture(scope="module")
def tiny_net():
    """Lowered binary MLP 784-16-10 (K=8 hidden layer), for the error tests."""
    return lower(pruned(models.mnist_mlp("binary", hidden_units=(16,)), skip=["output"]))


def small_cnn(binary, pad_value):
    """Conv 'same' (float input), conv + max-pool, strided conv, valid strided conv, two dense layers."""
    iq = dict(input_quantizer="ste_sign") if binary else {}
    act = [] if binary else [keras.layers.Activation("relu")]
    bn = keras.layers.BatchNormalization
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(12, 10, 3)),
        lq.layers.QuantConv2D(8, 3, padding="same", name="conv_1", **BINARY), bn(), *act,
        lq.layers.QuantConv2D(32, 3, padding="same", pad_values=pad_value, name="conv_2", **iq, **BINARY), bn(), *act,
        keras.layers.MaxPooling2D(2),
        lq.layers.QuantConv2D(64, (3, 2), strides=(2, 1), padding="same", pad_values=pad_value, name="conv_3", **iq,
                              **BINARY), bn(), *act,
        lq.layers.QuantConv2D(16, 3, strides=2, name="conv_4", **iq, **BINARY), bn(), *act,
        keras.layers.Flatten(),
        lq.layers.QuantDense(20, name="dense_1", **iq, **BINARY), bn(), *act,
        lq.layers.QuantDense(5, name="output", **iq, **BINARY), bn(),
    ])


def host_outputs(model_or_net, x, tmp_path, name="net", **kwargs):
    cmodel = to_c(model_or_net, name, tmp_path / "src", **kwargs)
    classes, scores, _ = c_verify.run_host(c_verify.build_host(cmodel, tmp_path / "build"), x, cmodel.num_classes)
    return cmodel, classes, scores


def keras_classes(model, x):
    return model.predict(x, verbose=0, batch_size=100).argmax(1)


@needs_gcc
def test_fully_binary_mlp_is_bit_exact_on_host(tmp_path):
    model = pruned(models.mnist_mlp("binary", hidden_units=(64, 32), input_encoding="thermometer:3"),
                   skip=models.get_preset("mnist").skip())
    x = np.random.default_rng(1).random((300, 28, 28), dtype=np.float32)
    net = lower(model)
    thresholds = np.asarray(net.input_encoding.thresholds, np.float32)
    x[:, 0, : len(thresholds)] = thresholds  # on a threshold: v >= t as an integer compare of ipr_fkey keys
    x[:, 1, :4] = [-0.0, 0.0, -1e-40, 1e-40]
    cmodel, classes, scores = host_outputs(net, x, tmp_path)
    assert [layer["path"] for layer in cmodel.layers] == ["popcount"] * 3
    assert np.array_equal(scores, net.predict(x))  # every score bit-identical: integer sums, same float32 affine
    assert np.array_equal(classes, keras_classes(model, x))
    assert np.array_equal(classes, scores.argmax(1))


@needs_gcc
def test_binaryconnect_mlp_index_formats(tmp_path, bc_mlp):
    model = bc_mlp
    x = np.random.default_rng(2).random((300, 28, 28), dtype=np.float32)
    net = lower(model)
    auto, classes, scores = host_outputs(net, x, tmp_path / "auto")
    natural, _, natural_scores = host_outputs(net, x, tmp_path / "natural", index_format="natural")
    assert [(f["index_format"], f["index_bits"]) for f in auto.layers] == [("packed", 10), ("packed", 6), (None, 0)]
    assert [f["index_format"] for f in natural.layers] == ["uint16", "uint8", None]
    assert natural.data_bytes - auto.data_bytes == 64 * 8 * (16 - 10) // 8 + 32 * 8 * (8 - 6) // 8 - 2 * 3
    assert np.array_equal(scores, natural_scores)
    assert np.array_equal(classes, keras_classes(model, x))
    np.testing.assert_allclose(scores, net.predict(x), rtol=1e-5, atol=1e-5)


@needs_gcc
@pytest.mark.parametrize("binary, pad_value, paths", [
    (True, 1.0, ["float", "popcount", "popcount", "popcount", "popcount", "popcount"]),
    (True, 0.0, ["float", "float", "float", "popcount", "popcount", "popcount"]),  # zero padding is not a bit
    (False, 0.0, ["float"] * 6),
])
def test_cnn_on_host(tmp_path, binary, pad_value, paths):
    model = pruned(small_cnn(binary, pad_value), skip=["conv_1", "output"])
    x = np.random.default_rng(3).normal(size=(100, 12, 10, 3)).astype("float32")
    net = lower(model)
    cmodel, classes, scores = host_outputs(model, x, tmp_path, index_format="packed")
    _, _, natural_scores = host_outputs(net, x, tmp_path / "natural", index_format="natural")
    assert [layer["path"] for layer in cmodel.layers] == paths
    assert np.array_equal(scores, natural_scores)
    assert np.array_equal(classes, keras_classes(model, x))
    if binary:
        assert np.array_equal(scores, net.predict(x))
    else:
        np.testing.assert_allclose(scores, net.predict(x), rtol=1e-4, atol=1e-3)


@needs_gcc
@pytest.mark.parametrize("binary, pad_value, ram", [
    # float: conv_2's 12x10x32 output (3,840 words, buffer 0) becomes 2 rows of 10x32 (640) and buffer 0
    # then holds the pooled, padded 7x6x32 (1,344): 4 * (3,840 + 1,344) + 20 -> 4 * (1,344 + 1,344 + 640) + 20
    (False, 0.0, {False: 20756, True: 13332, "auto": 13332}),
    # bits: conv_2's output (120 words) is smaller than the padded input in its buffer (504): rows add 20 words
    (True, 1.0, {False: 2204, True: 2284, "auto": 2204}),
])
def test_pooled_rows_keep_the_scores_and_lower_the_ram_where_they_can(tmp_path, binary, pad_value, ram):
    """conv_2 + max-pool computed one pooled row at a time: every score bit-identical to the plan that
    writes conv_2's whole output, the RAM counted by hand, and ``auto`` keeps the smaller plan."""
    net = lower(pruned(small_cnn(binary, pad_value), skip=["conv_1", "output"]))
    x = np.random.default_rng(4).normal(size=(100, 12, 10, 3)).astype("float32")
    results = {rows: host_outputs(net, x, tmp_path / str(rows), pooled_rows=rows) for rows in ram}
    assert {rows: cmodel.ram_bytes for rows, (cmodel, _, _) in results.items()} == ram
    assert "_rows" in open(results[True][0].source).read() and "_rows" not in open(results[False][0].source).read()
    for rows in (True, "auto"):
        assert np.array_equal(results[rows][2], results[False][2])
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match=f"pooled_rows must be 'auto', True or False, got {bad!r}"):
            to_c(net, "net", tmp_path / "bad", pooled_rows=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@needs_gcc
@pytest.mark.parametrize("flavour, paths", [
    ("binary", ["float"] + ["popcount"] * 8),
    ("binaryconnect_det", ["float"] * 9),
])
def test_cifar10_preset_on_host(tmp_path, flavour, paths):
    """The full VGG-Small preset, random weights, K=8 (bench/c_export.py runs 200 inputs)."""
    model = pruned(models.cifar10_vgg_small(flavour), skip=models.get_preset("cifar10").skip())
    x = np.random.default_rng(6).normal(size=(CIFAR_SAMPLES, 32, 32, 3)).astype("float32")
    net = lower(model)
    cmodel, classes, scores = host_outputs(net, x, tmp_path)
    assert [layer["path"] for layer in cmodel.layers] == paths
    assert np.array_equal(classes, keras_classes(model, x))
    if flavour == "binary":
        assert np.array_equal(scores, net.predict(x))


@needs_gcc
@needs_arm
def test_small_mlp_in_qemu_matches_host(tmp_path, bc_mlp):
    model = bc_mlp
    x = np.random.default_rng(4).random((40, 28, 28), dtype=np.float32)
    cmodel = to_c(model, "mlp", tmp_path / "src")
    fw_classes, fw_scores = c_verify.run_firmware(cmodel, x, tmp_path / "fw")
    _, host_scores, _ = c_verify.run_host(c_verify.build_host(cmodel, tmp_path / "host"), x, cmodel.num_classes)
    assert np.array_equal(fw_scores, host_scores)  # soft-float on the Cortex-M3 == SSE on the host, bit for bit
    assert np.array_equal(fw_classes, keras_classes(model, x))
    sizes = c_verify.firmware_sizes(cmodel, tmp_path / "fw")
    assert sizes["model_object"]["bss"] == cmodel.ram_bytes  # the header's RAM figure is all the static memory
    assert sizes["model_object"]["data"] == 0
    assert cmodel.data_bytes < sizes["model_flash_bytes"] < cmodel.data_bytes + 4096
    assert sizes["firmware"]["flash"] == sizes["harness_and_newlib"]["flash"] + sizes["model_flash_bytes"]
    assert sizes["fits"]


def test_bad_identifier_is_refused(tmp_path, tiny_net):
    net = tiny_net
    for name in ("1net", "my-net", "net.c", "", "static"):
        with pytest.raises(ValueError, match=re.escape(f"'{name}' is not a valid C identifier")):
            to_c(net, name, tmp_path)
    assert not list(tmp_path.iterdir())


def test_existing_files_need_overwrite(tmp_path, tiny_net):
    net = tiny_net
    (tmp_path / "net.c").write_text("/* mine */")
    with pytest.raises(FileExistsError, match="net.c exists; pass overwrite=True"):
        to_c(net, "net", tmp_path)
    assert (tmp_path / "net.c").read_text() == "/* mine */" and not (tmp_path / "net.h").exists()
    cmodel = to_c(net, "net", tmp_path, overwrite=True)
    assert "void net_forward(const float *input, float *scores);" in open(cmodel.header).read()
    assert f"#define NET_RAM_BYTES {cmodel.ram_bytes}" in open(cmodel.header).read()


def test_unsupported_layers_name_themselves(tmp_path, tiny_net):
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8, 3)),
                              keras.layers.Conv2D(4, 3, name="conv"), keras.layers.GlobalAveragePooling2D(name="gap"),
                              keras.layers.Dense(3, name="out")])
    with pytest.raises(ValueError, match="'gap'"):
        to_c(model, "net", tmp_path)
    net = dataclasses.replace(tiny_net, steps=[dataclasses.replace(step) for step in tiny_net.steps])
    net.layers[0].op = "conv1d"
    with pytest.raises(ValueError, match="layer 'dense_1' \\(op conv1d"):
        to_c(net, "net", tmp_path)
    with pytest.raises(ValueError, match="step 'pool3d'"):
        to_c(LoweredNet(net.input_shape, ["pool3d", *net.steps]), "net", tmp_path)
    assert not list(tmp_path.iterdir())


@needs_gcc
@needs_arm
def test_export_run_files_c_mode(tmp_path):
    from iprune_tf.export import export_run_files, format_export_table

    model = pruned(models.mnist_mlp("binary", hidden_units=(32,)), skip=["output"])
    x = np.random.default_rng(5).random((30, 28, 28), dtype=np.float32)
    rows = export_run_files(model, str(tmp_path), "mlp", ["c"], x, x)
    assert [(row.mode, row.runtime) for row in rows] == [("c", "gcc"), ("c", "qemu-m3")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.c", "mlp.h"]
    header = (tmp_path / "mlp.h").read_text()
    for row in rows:
        assert row.agreement == 1.0 and row.bytes == (tmp_path / "mlp.c").stat().st_size
        assert f"#define MLP_DATA_BYTES {row.payload_bytes}" in header
    assert f"#define MLP_RAM_BYTES {rows[0].arena_bytes}" in header and rows[1].arena_bytes == rows[0].arena_bytes
    assert rows[0].flash_bytes is None and rows[1].payload_bytes < rows[1].flash_bytes
    assert rows[0].instructions is None and 784 < rows[1].instructions < 100_000  # the input step reads 784 pixels
    assert "qemu-m3" in format_export_table(rows) and "instr/inf" in format_export_table(rows)
    with pytest.raises(FileExistsError, match="mlp.c already exists"):
        export_run_files(model, str(tmp_path), "mlp", ["c"], x, x)


@needs_arm
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an385"])
def test_systick_counts_a_known_loop(tmp_path, board):
    """Under -icount, SysTick reads a loop of 2n instructions within one tick, the same on every run."""
    iterations = [1000, 4000, 100_000]
    ticks = c_verify.calibrate_systick(tmp_path / "a", board, iterations)
    per_tick = c_verify.BOARDS[board].tick_instructions
    for n, t in zip(iterations, ticks):
        assert abs(int(t) * per_tick - 2 * n) <= per_tick, (n, t)
    assert np.array_equal(ticks, c_verify.calibrate_systick(tmp_path / "b", board, iterations))


@needs_gcc
def test_fixed_point_builds_on_host(tmp_path, bc_mlp):
    x = np.random.default_rng(7).random((300, 28, 28), dtype=np.float32)
    calibration = np.random.default_rng(8).random((200, 28, 28), dtype=np.float32)
    expected = bc_mlp.predict(x, verbose=0)
    spread = float(np.ptp(expected))
    for activations, agreement, error in (("int16", 0.99, 1e-3), ("int8", 0.9, 0.02)):
        fixed = dict(activations=activations, representative_data=calibration)
        cmodel, classes, scores = host_outputs(bc_mlp, x, tmp_path / activations, **fixed)
        _, _, natural = host_outputs(bc_mlp, x, tmp_path / f"{activations}_n", index_format="natural", **fixed)
        assert [f["path"] for f in cmodel.layers] == [f"fixed {activations}"] * 3
        assert [f["index_format"] for f in cmodel.layers] == ["packed", "uint8", "uint8 list"]  # into q and -q
        assert np.array_equal(scores, natural)  # integer sums: the index layout changes nothing
        assert np.mean(classes == expected.argmax(1)) >= agreement
        assert np.mean(np.abs(scores - expected)) <= error * spread  # a few clamp where calibration saw less
        assert cmodel.ram_bytes == 2 * (1 if activations == "int8" else 2) * (784 + 64) + 4 * 10


@needs_gcc
def test_fixed_point_build_of_an_unpruned_hidden_layer(tmp_path):
    """A hidden layer with every input (minority-sign lists, the layer's total) then BN and ReLU."""
    model = pruned(models.mnist_mlp("binaryconnect_det", hidden_units=(64, 32)), skip=["dense_2", "output"])
    x = np.random.default_rng(7).random((300, 28, 28), dtype=np.float32)
    calibration = np.random.default_rng(8).random((200, 28, 28), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    cmodel, classes, scores = host_outputs(model, x, tmp_path, activations="int16", representative_data=calibration)
    assert [f["index_format"] for f in cmodel.layers] == ["packed", "uint8 list", "uint8 list"]
    assert np.mean(classes == expected.argmax(1)) >= 0.99
    assert np.mean(np.abs(scores - expected)) <= 1e-3 * np.ptp(expected)


def test_requantization_arithmetic():
    """(s * 2**L * M + B) >> F rounds s * ratio + bias: the high word when s * 2**L fits 31 bits, else a shift."""
    from iprune_tf.export.c_fixed import _requant

    ratio, bias = np.array([0.003, -0.7, 40.0]), np.array([5.5, -3.25, 100.0])
    for smax, high_word in ((2**10, True), (2**28, False)):
        m, b, shift, f = _requant(ratio, bias, smax)
        assert (f == 32) == high_word and np.all(np.abs(m) < 2**31)
        s = np.random.default_rng(0).integers(-smax, smax, (1000, 1))
        t = (s * 2**shift * m + b) >> f
        assert np.all(np.abs(t - (s * ratio + bias)) <= 0.5 + np.abs(s) * 2.0 ** (shift - f - 1))  # M's rounding


def test_fixed_point_build_refuses_what_it_cannot_run(tmp_path, bc_mlp, tiny_net):
    x = np.zeros((4, 28, 28), np.float32)
    with pytest.raises(ValueError, match="needs representative_data"):
        to_c(bc_mlp, "net", tmp_path, activations="int16")
    with pytest.raises(ValueError, match="activations must be 'float' or one of \\('int8', 'int16'\\), got 'int4'"):
        to_c(bc_mlp, "net", tmp_path, activations="int4", representative_data=x)
    with pytest.raises(ValueError, match="layer 'output' has kind binary, binary input True"):
        to_c(tiny_net, "net", tmp_path, activations="int8", representative_data=x)
    assert not list(tmp_path.iterdir())


@needs_gcc
@needs_arm
def test_fixed_point_build_in_qemu_counts_fewer_instructions(tmp_path, bc_mlp):
    """The same scores as on the host; on the FPU-less Cortex-M3 a fraction of the float build's instructions."""
    x = np.random.default_rng(9).random((3, 28, 28), dtype=np.float32)
    fixed = to_c(bc_mlp, "fixed", tmp_path / "fixed", activations="int16", representative_data=x, index_format="natural")
    fw_classes, fw_scores = c_verify.run_firmware(fixed, x, tmp_path / "fw")
    _, host_scores, _ = c_verify.run_host(c_verify.build_host(fixed, tmp_path / "host"), x, fixed.num_classes)
    assert np.array_equal(fw_scores, host_scores)
    classes, counts = c_verify.count_instructions(fixed, x, tmp_path / "count", "lm3s6965evb")
    assert np.array_equal(classes, fw_classes) and counts.min() > 3 * fixed.operations
    _, float_counts = c_verify.count_instructions(to_c(bc_mlp, "flt", tmp_path / "flt"), x, tmp_path / "count_f",
                                                  "lm3s6965evb")
    assert float_counts.min() > 2 * counts.max()  # here mostly the 784-pixel input step: see bench/mcu_instructions.py
