"""Verilog LUT netlist (iprune_tf.export.verilog): simulated bit-exactly, synthesized with Yosys."""
import os
import shutil

import numpy as np
import pytest

import iprune_tf
from iprune_tf.workflow import models
from iprune_tf.export import lower
from iprune_tf.export import verilog
from iprune_tf.export import tools
from iprune_tf.export import verilog_verify as vv
from iprune_tf.export.lowered import LoweredLayer, LoweredNet


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package {tools.PACKAGES[tool]})")


def _trained(k_first=8, k_second=6, steps=30, flavour="binary", encoding="thermometer:2", skip=None):
    """A small fully binary MLP on 6x6 inputs (72 input bits), 4 classes, pruned and trained a few steps."""
    model = models.mnist_mlp(flavour, hidden_units=(24, 12), num_classes=4, input_shape=(6, 6), input_encoding=encoding)
    pruned = iprune_tf.prune_fan_in(model, k_second, inputs_per_layer={"dense_1": k_first},
                                    skip=iprune_tf.paper_skip("mnist") if skip is None else skip)
    rng = np.random.default_rng(0)
    x = rng.random((steps * 20, 6, 6)).astype(np.float32)
    labels = np.argmax(x.reshape(len(x), -1) @ rng.normal(size=(36, 4)), axis=1)
    y = np.where(np.eye(4)[labels] > 0, 1.0, -1.0).astype(np.float32)
    pruned.compile("adam", "squared_hinge")
    pruned.fit(x, y, batch_size=20, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    return iprune_tf.strip_pruning(pruned), rng.random((200, 6, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    return _trained()


def test_truth_table_of_a_hand_made_neuron():
    layer = LoweredLayer("l", "dense", "sparse", fan_in=4, units=1, k=2, binary_input=True, output="threshold",
                         indices=np.array([[0, 3]]), signs=np.array([[1, -1]], np.int8), threshold=np.array([0]))
    # address a: bit0 = x[0], bit1 = x[3]; s = (2*b0-1) - (2*b1-1) >= 0
    np.testing.assert_array_equal(verilog.truth_tables(layer), [[True, True, False, True]])


@pytest.mark.parametrize("simulator, pipeline", [("iverilog", True), ("iverilog", False), ("verilator", True)])
def test_netlist_simulation_equals_keras_and_lowered_bits(trained, tmp_path, simulator, pipeline):
    _need(simulator)
    model, x = trained
    design = verilog.to_verilog(model, tmp_path, pipeline=pipeline)
    assert design.input_bits == 72 and design.latency == (3 if pipeline else 0)
    assert [layer["style"] for layer in design.layers] == ["truth_tables", "truth_tables", "popcount_argmax"]
    assert design.score_order_conflicts == 0
    result = vv.verify(model, design, x, simulator=simulator)
    assert result["class_agreement"] == 200
    assert result["hidden_bit_mismatches"] == [0, 0]
    keras_classes = np.argmax(model.predict(x, verbose=0), axis=1)
    assert len(set(keras_classes.tolist())) > 1  # the check compares more than one constant class
    np.testing.assert_array_equal(result["classes"], keras_classes)


def test_unpruned_hidden_layer_and_pruned_output_layer(tmp_path):
    _need("iverilog")
    model, x = _trained(skip=["dense_2"])  # dense_2 dense binary (popcount >= threshold), output pruned to K=6
    design = verilog.to_verilog(model, tmp_path)
    assert [layer["style"] for layer in design.layers] == ["truth_tables", "popcount_threshold", "popcount_argmax"]
    result = vv.verify(model, design, x)
    assert result["class_agreement"] == 200 and result["hidden_bit_mismatches"] == [0, 0]


def test_yosys_luts_within_hand_computed_bounds(trained, tmp_path):
    _need("yosys")
    model, _ = trained
    design = verilog.to_verilog(model, tmp_path)
    figures = vv.synthesize(design, "lut6")
    layers = figures["layers"]
    # an 8-input function is at most 4 LUT6 cofactors + one LUT6 4:1 mux; a 6-input one is one LUT6
    assert 0 < layers["dense_1"]["luts"] <= 5 * 24
    assert 0 < layers["dense_2"]["luts"] <= 12
    assert layers["dense_2"]["depth"] == 1 and layers["dense_1"]["depth"] <= 2
    assert layers["output"]["luts"] > 0
    assert figures["total"]["flip_flops"] == 24 + 12 + 2  # the pipeline registers: two layers and the class
    assert figures["total"]["luts"] == sum(layer["luts"] for layer in layers.values())


def test_real_valued_activations_are_refused(tmp_path):
    model = models.mnist_mlp("binaryconnect_det", hidden_units=(8,), input_shape=(6, 6))
    with pytest.raises(ValueError, match="reads real-valued activations.*flavour='binary'.*input_encoding"):
        verilog.to_verilog(model, tmp_path)
    assert not (tmp_path / "net.v").exists()


def test_k_above_12_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    indices = np.sort(np.stack([rng.choice(40, 13, replace=False) for _ in range(4)]), axis=1)
    hidden = LoweredLayer("dense_1", "dense", "sparse", fan_in=40, units=4, k=13, binary_input=True,
                          output="threshold", indices=indices, signs=np.ones((4, 13), np.int8),
                          threshold=np.zeros(4, np.int32))
    scores = LoweredLayer("output", "dense", "binary", fan_in=4, units=2, k=4, binary_input=True,
                          signs=np.ones((2, 4), np.int8), scale=np.ones(2, np.float32), offset=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="K=13 inputs per neuron: a 8192-entry truth table.*K <= 12"):
        verilog.to_verilog(LoweredNet((40,), [hidden, scores]), tmp_path)


def test_existing_files_are_kept_without_overwrite(trained, tmp_path):
    model, _ = trained
    (tmp_path / "net.v").write_text("// mine")
    with pytest.raises(FileExistsError, match="net.v"):
        verilog.to_verilog(model, tmp_path)
    assert (tmp_path / "net.v").read_text() == "// mine"
    verilog.to_verilog(lower(model), tmp_path, overwrite=True)
    assert "module lut_net" in (tmp_path / "net.v").read_text()


def test_missing_tool_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(tools.ToolMissing, match="apt-get install iverilog"):
        tools.require_tool("vvp")


def test_cli_trains_with_input_encoding_and_exports_verilog(tmp_path, tiny_mnist_npz, capsys):
    _need("iverilog")
    from iprune_tf import cli

    out = str(tmp_path / "run")
    assert cli.main(["train", "--data", tiny_mnist_npz, "--out", out, "--flavour", "binary", "--input-encoding",
                     "thermometer:2", "--hidden-units", "16,8", "--inputs", "6", "--epochs-dense", "1",
                     "--epochs-prune", "0", "--epochs-retrain", "1", "--limit-train", "200", "--limit-test", "100"]) == 0
    capsys.readouterr()
    assert cli.main(["export", out, "--mode", "verilog", "--verify-samples", "100"]) == 0
    table = capsys.readouterr().out
    assert "verilog" in table and "iverilog" in table and "100.00%" in table
    design = verilog.VerilogDesign.load(os.path.join(out, "export", "verilog"))
    assert design.input_bits == 28 * 28 * 2 and [layer["units"] for layer in design.layers] == [16, 8, 10]
