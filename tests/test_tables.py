"""Truth-table neurons (iprune_tf.workflow.tables, .lut_table): exact start, gradients, lowering and the C/Verilog exports."""
import os

import numpy as np
import pytest

import iprune_tf
from iprune_tf import cli, export
from iprune_tf._keras import keras, tf
from iprune_tf.export import c_verify, lower, save_sparse, to_c, verilog
from iprune_tf.export import verilog_verify as vv
from iprune_tf.pruning.prune import strip_pruning
from iprune_tf.workflow import models, recipes
from iprune_tf.workflow.lut_table import LutTable
from iprune_tf.workflow.tables import to_table_net

from conftest import need_tool, pixel_data

CLASSES, HIDDEN, SAMPLES = 4, (24, 16), 200


def _data(n, seed):
    return pixel_data(n, seed, CLASSES)


@pytest.fixture(scope="module")
def pruned():
    """A fully binary 72-24-16 MLP (thermometer:2 on 6x6 inputs, K=6, head pruned:5), pruned over 30 steps, stripped."""
    config = recipes.RunConfig(flavour="binary", inputs_per_neuron=6, head="pruned:5", epochs_dense=0, epochs_prune=1,
                               epochs_retrain=0, frequency=5, batch_size=20, hidden_units=HIDDEN)
    keras.utils.set_random_seed(0)
    model = models.mnist_mlp("binary", hidden_units=HIDDEN, num_classes=CLASSES, input_shape=(6, 6),
                             input_encoding="thermometer:2", head="pruned:5")
    x, y = _data(600, 0)
    model = recipes.prune(config, model, len(x))
    recipes.compile_model(model, 3e-3, 5e-2)
    model.fit(x, y, batch_size=20, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    return strip_pruning(model)


@pytest.fixture(scope="module")
def tables(pruned):
    """The table net of ``pruned`` with random tables (any boolean functions), and 200 held-out inputs."""
    net = to_table_net(pruned)
    rng = np.random.default_rng(4)
    for layer in net.layers:
        if isinstance(layer, LutTable):
            layer.table.assign(rng.uniform(-1, 1, layer.table.shape).astype(np.float32))
    return net, _data(SAMPLES, 1)[0]


def test_table_net_starts_at_the_pruned_net_exactly(pruned):
    net = to_table_net(pruned)
    x = _data(SAMPLES, 1)[0]
    assert [type(layer).__name__ for layer in net.layers] == [
        "ThermometerEncoding", "Flatten", "LutTable", "LutTable", "QuantDense", "BatchNormalization"]
    np.testing.assert_array_equal(net.predict(x, verbose=0), pruned.predict(x, verbose=0))
    before, after = lower(pruned).layers, lower(net).layers
    for threshold, table in zip(before[:2], after[:2]):
        assert table.kind == "table" and np.array_equal(table.indices, threshold.indices)
        np.testing.assert_array_equal(table.truth_tables(), threshold.truth_tables())
    assert not net.get_layer("output").trainable and net.get_layer("bn_output").trainable


def test_fine_tuning_changes_tables_but_not_the_head_weights(pruned):
    net = to_table_net(pruned)
    head = net.get_layer("output").kernel.numpy()
    start = lower(net).layers[0].truth_tables()
    x, y = _data(600, 0)
    net.compile(keras.optimizers.Adam(0.05), loss=recipes.LOSS)
    net.fit(x, y, batch_size=20, epochs=2, verbose=0)
    assert np.count_nonzero(lower(net).layers[0].truth_tables() != start) > 0
    np.testing.assert_array_equal(net.get_layer("output").kernel.numpy(), head)
    assert np.all(np.abs(net.get_layer("dense_1_table").table.numpy()) <= 1)


def test_table_reads_and_gradients_follow_the_multilinear_extension():
    """One neuron on inputs 2 and 0: output sign(T[a]), a = bit(x2) + 2 bit(x0); d out / d x0 = (T[a|2] - T[a&~2]) / 2."""
    layer = LutTable([[2, 0]])
    layer.build((None, 3))
    table = np.array([[0.5, -0.25, -0.5, 0.125]], np.float32)
    layer.table.assign(table)
    x = tf.constant([[1.0, 5.0, -1.0], [-1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    np.testing.assert_array_equal(y.numpy()[:, 0], [-1, -1, 1])  # addresses 2, 1, 3 (larq's sign(0) = +1)
    grad = tape.gradient(y, x).numpy()
    t0, t1, t2, t3 = table[0]
    np.testing.assert_allclose(grad[:, 0], [(t2 - t0) / 2, (t3 - t1) / 2, (t3 - t1) / 2])  # x0 is address bit 1
    np.testing.assert_allclose(grad[:, 2], [(t3 - t2) / 2, (t1 - t0) / 2, (t3 - t2) / 2])  # x2 is address bit 0
    assert np.all(grad[:, 1] == 0)


def test_lowered_table_net_equals_keras(tables):
    net, x = tables
    lowered = lower(net)
    assert [layer.kind for layer in lowered.layers] == ["table", "table", "sparse"]
    np.testing.assert_allclose(lowered.predict(x), net.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(np.argmax(lowered.predict(x), 1), np.argmax(net.predict(x, verbose=0), 1))


def test_verilog_netlist_equals_keras(tables, tmp_path):
    need_tool("iverilog")
    net, x = tables
    design = verilog.to_verilog(net, tmp_path)
    assert [layer["style"] for layer in design.layers] == ["truth_tables", "truth_tables", "popcount_argmax"]
    result = vv.verify(net, design, x, simulator="iverilog")
    assert len(set(np.argmax(net.predict(x, verbose=0), 1).tolist())) > 1
    assert result["class_agreement"] == SAMPLES and result["hidden_bit_mismatches"] == [0, 0]


def test_c_export_equals_keras(tables, tmp_path):
    need_tool("gcc")
    net, x = tables
    cmodel = to_c(net, "table_net", tmp_path / "c")
    classes, scores, _ = c_verify.run_host(c_verify.build_host(cmodel, tmp_path / "build"), x, CLASSES)
    keras_scores = net.predict(x, verbose=0)
    np.testing.assert_array_equal(classes, np.argmax(keras_scores, axis=1))
    np.testing.assert_allclose(scores, keras_scores, atol=1e-5)


@pytest.mark.parametrize("mode", ["float", "sparse", "sparse_int8"])
def test_tflite_refuses_truth_tables(tables, mode):
    with pytest.raises(ValueError, match=r"truth-table neurons \(LutTable\).*to_c .*to_verilog"):
        export.to_tflite(tables[0], mode, representative_data=tables[1][:8])


def test_sparse_file_refuses_truth_tables(tables, tmp_path):
    net = lower(tables[0])
    net.input_encoding = None
    with pytest.raises(ValueError, match="stores no truth tables"):
        save_sparse(net, tmp_path / "t.npz")


def test_cost_counts_a_table_per_neuron(tables):
    """Paper bits: 2^6 table bits per neuron; file bits: the table and 6 indices of ceil(log2 fan-in) bits each."""
    layers = lower(tables[0]).cost()["layers"]
    assert [(c["paper_bits"], c["file_bits"], c["operations"]) for c in layers[:2]] == [
        (24 * 64, 24 * 64 + 24 * 6 * 7, 24 * 6),  # fan-in 72: 7 index bits
        (16 * 64, 16 * 64 + 16 * 6 * 5, 16 * 6)]  # fan-in 24: 5 index bits


def test_lut_table_config_round_trip_and_h5(tables, tmp_path):
    net, x = tables
    clone = LutTable.from_config(net.get_layer("dense_2_table").get_config())
    np.testing.assert_array_equal(clone.indices, net.get_layer("dense_2_table").indices)
    net.save(tmp_path / "t.h5")
    loaded = keras.models.load_model(tmp_path / "t.h5", compile=False)  # registered: no custom-object scope needed
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), net.predict(x, verbose=0))


@pytest.mark.parametrize("indices, message", [
    ([1, 2], r"\(units, K\) int array"), ([[0.5, 1.0]], r"\(units, K\) int array"), ([[0, -1]], "must be >= 0")])
def test_bad_indices_are_refused(indices, message):
    with pytest.raises(ValueError, match=message):
        LutTable(indices)


@pytest.mark.parametrize("flavour, k, message", [
    ("binaryconnect_det", 3, "has no hidden layer of ±1 inputs and outputs"),
    ("binary", None, "is a binary dense layer; a LUT neuron needs a Dense layer pruned to K inputs")])
def test_table_net_refuses_what_is_not_a_lut_net(flavour, k, message):
    model = models.mnist_mlp(flavour, hidden_units=(8, 8), num_classes=CLASSES, input_shape=(6, 6),
                             input_encoding="thermometer:2")
    model = iprune_tf.prune_now(model, k) if k else model
    with pytest.raises(ValueError, match=message):
        to_table_net(model)


def test_cli_trains_reports_and_exports_truth_tables(tmp_path, capsys, tiny_mnist_npz):
    """``--epochs-tables``: a ``tables`` phase after retraining from the pruned net's outputs, its row in the report
    (table bits counted) and the export of the table net (its C and Verilog files: the tests above)."""
    out = str(tmp_path / "run")
    assert cli.main(["train", "--data", tiny_mnist_npz, "--out", out, "--flavour", "binary", "--head", "pruned:8",
                     "--hidden-units", "32,20", "--input-encoding", "thermometer:2", "--inputs", "6",
                     "--epochs-dense", "1", "--epochs-prune", "1", "--epochs-retrain", "0", "--epochs-tables", "1",
                     "--tables-lr", "1e-2", "--limit-train", "200", "--limit-test", "100"]) == 0
    from iprune_tf.workflow.runs import Run

    run = Run(out)
    assert run.config.tables_lr == 1e-2 and run.config.rate("tables") == 1e-2  # read back from run.json
    assert run.phases["tables"]["epochs"] == 1
    assert run.phases["tables"]["test_accuracy_at_start"] == run.phases["pruned"]["test_accuracy"]
    assert [type(layer).__name__ for layer in run.load_model("tables").layers][2:4] == ["LutTable", "LutTable"]
    assert cli.main(["report", out, "--no-plots"]) == 0
    assert "| Pruned binary, truth tables |" in capsys.readouterr().out
    costs = lower(run.load_model("tables")).cost()["layers"]
    assert [(c["kind"], c["paper_bits"]) for c in costs] == [("table", 32 * 64), ("table", 20 * 64), ("sparse", 80)]
    need_tool("iverilog")
    assert cli.main(["export", out, "--mode", "verilog", "--verify-samples", "20"]) == 0
    exported = keras.models.load_model(os.path.join(out, "export", "pruned.h5"), compile=False)
    assert sum(isinstance(layer, LutTable) for layer in exported.layers) == 2
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    assert set(rows) == {"h5", "verilog"} and rows["verilog"][4:6] == ["iverilog", "100.00%"], rows


@pytest.mark.parametrize("extra, message", [
    (["--flavour", "binaryconnect_det"], "only the fully binary flavour has"),
    (["--flavour", "binary", "--preset", "cifar10"], "has convolutions"),
    (["--flavour", "binary", "--epochs-tables", "-1"], "epochs_tables must be >= 0"),
    (["--flavour", "binary", "--tables-lr", "0"], "tables_lr must be > 0"),
    (["--flavour", "binary", "--epochs-tables", "0", "--tables-lr", "1e-2"], "leaves no tables")])
def test_cli_refuses_tables_that_cannot_be_trained(tmp_path, capsys, tiny_mnist_npz, extra, message):
    out = tmp_path / "run"
    code = cli.main(["train", "--data", tiny_mnist_npz, "--out", str(out), "--epochs-tables", "2", *extra])
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


def test_tables_lr_is_the_tables_phase_rate_only():
    """``--tables-lr``: Adam's rate (and the cosine decay's start) in the tables phase; the other phases keep theirs."""
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--flavour", "binary", "--binary-lr", "1e-3",
                                    "--epochs-tables", "2", "--tables-lr", "1e-2"])
    config = cli._run_config(args)
    assert [config.rate(p) for p in ("dense_fp", "dense_binary", "pruned", "tables")] == [3e-3, 1e-3, 1e-3, 1e-2]
    unset = recipes.RunConfig(flavour="binary", epochs_tables=2, binary_lr=1e-3)
    assert unset.rate("tables") == 1e-3  # the binary phases' rate
