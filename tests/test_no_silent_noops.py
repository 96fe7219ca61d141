"""Nothing that does nothing passes silently: fan-in <= K, non-finite weights into lower(), inapplicable table columns."""
import time

import larq as lq
import numpy as np
import pytest

import iprune_tf
from iprune_tf import cli
from iprune_tf._keras import keras
from iprune_tf.export import lower, to_c
from iprune_tf.export.run_files import ExportRow, format_export_table


def test_export_table_prints_a_dash_where_a_column_does_not_apply():
    rows = [
        ExportRow("verilog", "/x/verilog/net.v", 5000, "iverilog", 1.0, None),
        ExportRow("npz", "/x/pruned_sparse.npz", 900, "numpy", 1.0, 2.5e-7, payload_bytes=640),
        ExportRow("c", "/x/pruned.c", 7000, "qemu-m3", 1.0, 0.0, 1024, 640, 40000),
    ]
    table = format_export_table(rows)
    assert "nan" not in table.lower()
    cells = {line.split()[0]: line.split()[2:] for line in table.splitlines()[2:]}
    assert len({len(row) for row in cells.values()}) == 1  # every row fills every column
    # bytes, payload, runtime, agreement, max |diff|, arena, flash, then columns later issues add (all "-" here)
    assert cells["verilog"][:7] == ["5000", "-", "iverilog", "100.00%", "-", "-", "-"]
    assert cells["npz"][:7] == ["900", "640", "numpy", "100.00%", "2.5e-07", "-", "-"]
    assert cells["c"][:7] == ["7000", "640", "qemu-m3", "100.00%", "0", "1024", "40000"]
    assert set(cells["verilog"][7:] + cells["npz"][7:]) <= {"-"}


@pytest.mark.parametrize("layer_name, weight, value", [("dense_1", 0, np.nan), ("bn_1", 3, np.inf), ("bn_1", 2, np.nan)])
def test_lower_refuses_non_finite_weights_and_batch_norm_statistics(tmp_path, layer_name, weight, value):
    """A NaN kernel, or an inf/NaN BN statistic (which thresholding would turn into a silent constant)."""
    model = keras.Sequential([
        keras.layers.Flatten(input_shape=(4, 4)),
        lq.layers.QuantDense(8, name="dense_1", input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False),
        keras.layers.BatchNormalization(name="bn_1"),
        lq.layers.QuantDense(2, name="dense_2", input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False),
    ])
    lower(model)  # finite: lowers
    weights = model.get_layer(layer_name).get_weights()
    weights[weight].flat[3] = value
    model.get_layer(layer_name).set_weights(weights)
    name = model.get_layer(layer_name).weights[weight].name.rsplit("/", 1)[-1].split(":")[0]
    with pytest.raises(ValueError, match=f"Layer '{layer_name}' has 1 non-finite value.*'{name}'"):
        lower(model)
    with pytest.raises(ValueError, match=f"Layer '{layer_name}' has 1 non-finite"):
        to_c(model, "net", tmp_path)
    assert not list(tmp_path.iterdir())


def _binary_dense(units, name):
    return lq.layers.QuantDense(units, name=name, kernel_quantizer="ste_sign", use_bias=False)


@pytest.mark.parametrize("first, fan_in", [
    (lambda: _binary_dense(6, "hidden"), 5),
    (lambda: keras.layers.Dense(6, name="hidden"), 5),
    (lambda: lq.layers.QuantConv2D(6, 2, name="hidden", kernel_quantizer="ste_sign", use_bias=False), 2 * 2 * 5),
    (lambda: keras.layers.Conv2D(6, 2, name="hidden"), 2 * 2 * 5),
], ids=["QuantDense", "Dense", "QuantConv2D", "Conv2D"])
def test_prune_fan_in_refuses_a_global_k_at_or_above_a_layers_fan_in(first, fan_in):
    """Dense and Conv2D, plain and larq: one check; the layer stays dense only when asked for by name."""
    def model():
        shape = (5,) if "Dense" in type(first()).__name__ else (4, 4, 5)
        return keras.Sequential([keras.layers.InputLayer(input_shape=shape), first(), keras.layers.Flatten(),
                                 _binary_dense(3, "output")])

    for k in (fan_in, fan_in + 1, 2000):
        with pytest.raises(ValueError, match=rf"K={k} is at or above the fan-in of 'hidden' \(fan-in {fan_in}\).*"
                                             rf"K below {fan_in}.*skip=\['hidden'\].*inputs_per_layer=\{{'hidden': {fan_in}\}}"):
            iprune_tf.prune_fan_in(model(), k, skip=["output"])
    assert iprune_tf.prune_fan_in(model(), fan_in - 1, skip=["output"])  # K below the fan-in prunes
    assert iprune_tf.prune_fan_in(model(), fan_in, skip=["hidden", "output"])  # left dense on purpose: skipped
    dense = iprune_tf.prune_fan_in(model(), 2, inputs_per_layer={"hidden": fan_in}, skip=["output"])  # or by name
    assert dense.layers[0].final_inputs_per_neuron == fan_in


def test_every_layer_left_dense_is_named_at_once():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(16,)), _binary_dense(12, "dense_1"),
                              _binary_dense(8, "dense_2"), _binary_dense(3, "output")])
    with pytest.raises(ValueError, match=r"K=16 is at or above the fan-in of 'dense_1' \(fan-in 16\), 'dense_2' "
                                         r"\(fan-in 12\), 'output' \(fan-in 8\).*K below 8"):
        iprune_tf.prune_fan_in(model, 16)


def test_a_single_wrapped_layer_is_checked_when_built():
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match=r"K=10 is at or above the fan-in of 'hidden' \(fan-in 3\)"):
        iprune_tf.prune_fan_in(_binary_dense(4, "hidden"), inputs_per_neuron=10)(inputs)
    wrapper = iprune_tf.prune_fan_in(_binary_dense(4, "hidden"), 2, inputs_per_layer={"hidden": 10})
    wrapper(inputs)
    assert wrapper.final_inputs_per_neuron == 3


def test_iprune_train_refuses_k_at_or_above_fan_in_before_any_training(tmp_path, tiny_mnist_npz, capsys):
    out = tmp_path / "run"
    start = time.time()
    code = cli.main(["train", "--data", tiny_mnist_npz, "--out", str(out), "--hidden-units", "64,32", "--inputs", "64"])
    printed = capsys.readouterr()
    assert code == 2, printed.err
    assert "K=64 is at or above the fan-in of 'dense_2' (fan-in 64): pruning would keep every input" in printed.err
    assert "--skip dense_2" in printed.err and "Epoch" not in printed.out and not out.exists()
    assert time.time() - start < 20
