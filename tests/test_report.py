"""Table 1 arithmetic against hand counts, the Markdown/JSON report and the plots."""
import json
import os

import larq as lq
import pytest

import iprune_tf
from conftest import BINARY, fit_pruned, random_data
from iprune_tf.workflow import report
from iprune_tf._keras import keras


def _mlp(binary):
    dense = (lambda n, name: lq.layers.QuantDense(n, name=name, **BINARY)) if binary else (
        lambda n, name: keras.layers.Dense(n, use_bias=False, name=name))
    return keras.Sequential([keras.layers.InputLayer(input_shape=(6,)), dense(4, "hidden"),
                             keras.layers.BatchNormalization(name="bn"), dense(3, "output")])


@pytest.fixture
def pruned_small_mlp():
    model = iprune_tf.prune_fan_in(_mlp(binary=True), inputs_per_neuron=2, skip=["output"])
    return iprune_tf.strip_pruning(fit_pruned(model, *random_data(model), epochs=1))


def test_costs_of_small_mlp_match_hand_count(pruned_small_mlp):
    fp = report.model_costs(_mlp(binary=False))
    pruned = report.model_costs(pruned_small_mlp)
    bn_bits = 4 * 2 * 32  # 4 channels, folded scale + offset, float32
    assert fp["memory_bits_paper"] == (6 * 4 + 4 * 3) * 32 == 1152
    assert fp["memory_bits_file"] == 1152 + bn_bits
    assert fp["operations"] == 36
    assert pruned["memory_bits_paper"] == 4 * 2 * 1 + 4 * 3 * 1 == 20
    assert pruned["memory_bits_file"] == 4 * 2 * (1 + 3) + 12 + bn_bits  # 3 index bits address 6 inputs
    assert pruned["operations"] == 4 * 2 + 12


def test_conv_operations_count_output_positions():
    conv = keras.Sequential([keras.layers.InputLayer(input_shape=(5, 5, 2)),
                             lq.layers.QuantConv2D(4, 3, name="conv", **BINARY), keras.layers.Flatten(),
                             lq.layers.QuantDense(2, name="output", **BINARY)])
    pruned = iprune_tf.prune_fan_in(conv, 5, skip=["output"])
    cost, _ = report.model_costs(iprune_tf.strip_pruning(fit_pruned(pruned, *random_data(conv), epochs=1)))["layers"]
    assert (cost["fan_in"], cost["connections"], cost["positions"], cost["weight_bits"]) == (18, 20, 9, 1)
    assert cost["operations"] == 180 and cost["file_bits"] == 20 * (1 + 5)


def test_table1_gains_against_full_precision(pruned_small_mlp):
    rows = report.table1({"dense_fp": _mlp(False), "dense_binary": _mlp(True), "pruned_stripped": pruned_small_mlp},
                         {"dense_fp": 0.9, "dense_binary": 0.8, "pruned_stripped": 0.7})
    assert [r["phase"] for r in rows] == ["dense_fp", "dense_binary", "pruned_stripped"]
    assert rows[1]["memory_gain_paper"] == pytest.approx(32.0)
    assert rows[2]["memory_gain_paper"] == pytest.approx(1152 / 20)
    assert rows[2]["computation_gain"] == pytest.approx(36 / 20)
    assert rows[2]["memory_gain_file"] == pytest.approx((1152 + 256) / (32 + 12 + 256))
    markdown = report.format_markdown(rows)
    assert "| Pruned binary | 70.00% |" in markdown and "57.6x" in markdown


def test_paper_mnist_arithmetic(tiny_run):
    """The MNIST preset at K=8 reproduces the paper's ~2200x memory and ~70x computation gains."""
    rows = {r["phase"]: r for r in report.table1(
        {p: tiny_run.load_model(p) for p in ("dense_fp", "pruned_stripped")}, {})}
    assert rows["pruned_stripped"]["memory_gain_paper"] == pytest.approx(1_861_632 * 32 / 26_624)
    assert rows["pruned_stripped"]["computation_gain"] == pytest.approx(1_861_632 / 26_624)


def test_write_report_writes_markdown_json_and_plots(tiny_run):
    markdown = report.write_report(tiny_run.dir)
    assert "2,237.5x" in markdown and "69.9x" in markdown
    with open(os.path.join(tiny_run.dir, "report.json")) as f:
        table = json.load(f)["table"]
    assert [r["phase"] for r in table] == ["dense_fp", "dense_binary", "pruned_stripped"]
    assert table[0]["test_accuracy"] == tiny_run.phases["dense_fp"]["test_accuracy"]
    for name in ("weight_distributions.png", "kept_inputs.png"):
        with open(os.path.join(tiny_run.dir, "plots", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_needs_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        report.write_report(tmp_path)
