"""Verilog LUT netlist (iprune_tf.export.verilog): simulated bit-exactly, synthesized with Yosys."""
import os
import re
import subprocess

import numpy as np
import pytest

import iprune_tf
from iprune_tf.workflow import models
from iprune_tf.export import lower
from iprune_tf.export import verilog, verilog_layers, verilog_tops, verilog_trees
from iprune_tf.export import tools
from iprune_tf.export import verilog_verify as vv
from iprune_tf.export.lowered import LoweredLayer, LoweredNet

from conftest import need_tool


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
    np.testing.assert_array_equal(layer.truth_tables(), [[True, True, False, True]])


@pytest.mark.parametrize("simulator, pipeline", [("iverilog", True), ("iverilog", False), ("verilator", True)])
def test_netlist_simulation_equals_keras_and_lowered_bits(trained, tmp_path, simulator, pipeline):
    need_tool(simulator)
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
    need_tool("iverilog")
    model, x = _trained(skip=["dense_2"])  # dense_2 dense binary (popcount >= threshold), output pruned to K=6
    design = verilog.to_verilog(model, tmp_path)
    assert [layer["style"] for layer in design.layers] == ["truth_tables", "popcount_threshold", "popcount_argmax"]
    result = vv.verify(model, design, x)
    assert result["class_agreement"] == 200 and result["hidden_bit_mismatches"] == [0, 0]
    with pytest.raises(ValueError, match=r"hidden layer 2 \('dense_2'\) is not pruned; .* 288 flip-flops"):
        verilog.to_verilog(model, tmp_path / "registered", input_registers=[2])  # 24 inputs x 12 neurons


def test_yosys_luts_within_hand_computed_bounds(trained, tmp_path):
    need_tool("yosys")
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


def _popcount_module(counts, registered=frozenset()):
    """A module ``pc`` whose output ``y<n>`` is the popcount of ``x[:counts[n]]`` by :meth:`Levels.count_ones`."""
    levels = verilog_trees.Levels(registered)
    items = levels.count_ones("p", [[f"x[{i}]" for i in range(count)] for count in counts])
    ports = ", ".join(f"output wire [{count.bit_length() - 1}:0] y{n}" for n, count in enumerate(counts))
    return "\n".join([f"module pc (input wire clk, input wire [{max(counts) - 1}:0] x, {ports});", *levels.lines,
                      *(f"  assign y{n} = {wire};" for n, (wire, _) in enumerate(items)), "endmodule", ""]), levels.level


@pytest.mark.parametrize("registered", [frozenset(), frozenset({0, 1, 2, 3})])
def test_carry_save_popcount_counts_exactly(tmp_path, registered):
    need_tool("iverilog")
    counts = list(range(1, 71))
    module, depth = _popcount_module(counts, registered)
    rng = np.random.default_rng(4)
    vectors = rng.random((40, 70)) < rng.random((40, 1))  # densities from empty to full
    vectors[0], vectors[1] = False, True
    clocks = len(registered & set(range(depth)))
    bench = ["module tb; reg clk = 0; reg [69:0] x;", *(f"  wire [{c.bit_length() - 1}:0] y{n};" for n, c in
                                                         enumerate(counts)),
             "  pc dut (.clk(clk), .x(x), " + ", ".join(f".y{n}(y{n})" for n in range(len(counts))) + ");",
             "  initial begin"]
    for v in vectors:
        bits = "".join("1" if b else "0" for b in reversed(v))
        bench += [f"    x = 70'b{bits};", *["    #1 clk = 1; #1 clk = 0;"] * clocks, "    #1;",
                  f"    $display(\"{' '.join(['%0d'] * len(counts))}\", {', '.join(f'y{n}' for n in range(len(counts)))});"]
    bench += ["  end", "endmodule"]
    (tmp_path / "pc.v").write_text(module)
    (tmp_path / "tb.v").write_text("\n".join(bench))
    subprocess.run(["iverilog", "-o", str(tmp_path / "sim"), str(tmp_path / "pc.v"), str(tmp_path / "tb.v")], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    got = np.array([[int(v) for v in line.split()] for line in out.strip().splitlines()])
    expected = np.stack([vectors[:, :c].sum(axis=1) for c in counts], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_carry_save_popcount_of_64_bits_is_small_and_shallow(tmp_path):
    need_tool("yosys")
    module, depth = _popcount_module([64])
    (tmp_path / "pc.v").write_text(module)
    stat = subprocess.run(["yosys", "-p", f"read_verilog {tmp_path / 'pc.v'}; synth -lut 6 -top pc; stat"],
                          check=True, capture_output=True, text=True).stdout
    luts = int(re.search(r"\$lut\s+(\d+)", stat).group(1))
    # four levels of counters of up to 6 bits (a LUT6 per output bit), then one adder level: the adder tree of 6-bit
    # sums it replaced took as many levels and 104 LUT6
    assert luts <= 80 and depth == 5


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
    need_tool("iverilog")
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


def _hand_net(rng, head_k=5, scale=None, offset=None, units=16, classes=5, fan_in=30):
    """A K=3 hidden layer and a pruned (sparse) output layer built by hand: the generic output path."""
    indices = np.sort(np.stack([rng.choice(fan_in, 3, replace=False) for _ in range(units)]), axis=1)
    hidden = LoweredLayer("dense_1", "dense", "sparse", fan_in=fan_in, units=units, k=3, binary_input=True,
                          output="threshold", indices=indices, signs=rng.choice([-1, 1], (units, 3)).astype(np.int8),
                          threshold=rng.integers(-1, 2, units).astype(np.int32))
    head = np.sort(np.stack([rng.choice(units, head_k, replace=False) for _ in range(classes)]), axis=1)
    signs = rng.choice([-1, 1], (classes, head_k)).astype(np.int8)
    scores = LoweredLayer("output", "dense", "sparse", fan_in=units, units=classes, k=head_k, binary_input=True,
                          indices=head, signs=signs,
                          scale=rng.normal(0, 1, classes).astype(np.float32) if scale is None else scale,
                          offset=rng.normal(0, 2, classes).astype(np.float32) if offset is None else offset)
    return LoweredNet((fan_in,), [hidden, scores])


@pytest.mark.parametrize("tree_levels, io, scores", [(1, "parallel", "affine"), (2, "stream", "affine"),
                                                     (None, "stream", "affine"), (1, "stream", "ranks"),
                                                     (None, "parallel", "ranks")])
def test_sparse_head_with_negative_scales_equals_lowered_argmax(tmp_path, tree_levels, io, scores):
    need_tool("iverilog")
    rng = np.random.default_rng(1)
    net = _hand_net(rng, scale=np.array([0.71, -0.93, 0.52, -0.37, 1.09], np.float32),
                    offset=np.array([0.05, 0.33, -0.21, 0.12, -0.47], np.float32))
    design = verilog.to_verilog(net, tmp_path, tree_levels=tree_levels, io=io, bus_width=7, scores=scores)
    assert design.score_order_conflicts == 0 and design.scores == scores
    if scores == "ranks":  # 5 classes x 6 popcounts, all scores distinct: ranks 0..29
        assert design.score_bits == 5 and design.score_fraction_bits is None
        assert ("always @(posedge clk) r0q <= r0q_rom[" in (tmp_path / "net.v").read_text()) == bool(tree_levels)
    x = rng.normal(size=(300, 30)).astype(np.float32)
    expected = np.argmax(net.predict(x), axis=1)
    assert len(set(expected.tolist())) > 2
    classes = vv.simulate(design, verilog.input_bits(net, x)).classes
    np.testing.assert_array_equal(classes, expected)
    assert design.latency == 2 + design.head_registers
    if io == "stream":
        assert design.words == 5 and design.stream_latency == 5 + design.latency  # ceil(30 / 7) words


@pytest.mark.parametrize("simulator, io", [("verilator", "parallel"), ("verilator", "stream"), ("iverilog", "parallel")])
def test_inputs_wider_than_verilators_fscanf_limit_are_read_in_chunks(tmp_path, simulator, io):
    """9,000 input bits (15 thermometer levels of 28x28 are 11,760): Verilator reads at most 8,192 bits at once."""
    need_tool(simulator)
    rng = np.random.default_rng(3)
    net = _hand_net(rng, fan_in=9000)
    design = verilog.to_verilog(net, tmp_path, io=io, bus_width=1000 if io == "stream" else None)
    assert verilog_tops.input_chunks(design) == (4096, 3)
    assert net.layers[0].indices.max() >= 2 * 4096  # the net reads bits of the last chunk
    x = rng.normal(size=(60, 9000)).astype(np.float32)
    expected = np.argmax(net.predict(x), axis=1)
    assert len(set(expected.tolist())) > 1
    np.testing.assert_array_equal(vv.simulate(design, verilog.input_bits(net, x), simulator).classes, expected)


def test_group_sum_head_compares_popcounts_without_a_score_adder(tmp_path):
    need_tool("iverilog")
    rng = np.random.default_rng(2)
    ones = np.ones(5, np.float32)
    net = _hand_net(rng, head_k=3, scale=0.5 * ones, offset=0.25 * ones)  # one scale > 0 and offset: score = popcount
    net.layers[-1].signs[:] = 1
    net.layers[-1].indices = np.arange(15).reshape(5, 3)  # class c reads hidden units 3c..3c+2
    design = verilog.to_verilog(net, tmp_path, tree_levels=1)
    text = (tmp_path / "net.v").read_text()
    assert " s0_" not in text and ") > (" in text  # no score tree, an argmax tree (its comparisons)
    x = rng.normal(size=(300, 30)).astype(np.float32)
    expected = np.argmax(net.predict(x), axis=1)
    assert len(set(expected.tolist())) > 2  # ties included: the lowest class wins, as numpy's argmax
    np.testing.assert_array_equal(vv.simulate(design, verilog.input_bits(net, x)).classes, expected)


def test_score_ranks_order_like_float32_scores_and_tie_equal_scores():
    scale = np.array([0.5, 0.25, 0.5], np.float32)  # classes 0 and 2 score alike: tied ranks
    layer = LoweredLayer("output", "dense", "sparse", fan_in=4, units=3, k=2, binary_input=True,
                         indices=np.array([[0, 1], [2, 3], [1, 2]]), signs=np.ones((3, 2), np.int8),
                         scale=scale, offset=np.array([0.0, 0.25, 0.0], np.float32))
    # scores: class 0 and 2 at popcount 0, 1, 2: -1, 0, 1; class 1: -0.25, 0.25, 0.75
    np.testing.assert_array_equal(verilog_layers.score_ranks(layer), [[0, 2, 5], [1, 3, 4], [0, 2, 5]])


def test_tied_rank_scores_go_to_the_lowest_class(tmp_path):
    need_tool("iverilog")
    rng = np.random.default_rng(3)
    net = _hand_net(rng, head_k=4, scale=np.array([0.5, 0.5, -0.25, 0.5, 0.75], np.float32),
                    offset=np.array([0.25, 0.25, 0.5, -0.25, 0.0], np.float32))  # classes 0 and 1 score alike
    design = verilog.to_verilog(net, tmp_path, tree_levels=1, scores="ranks")
    x = rng.normal(size=(300, 30)).astype(np.float32)
    scores = net.predict(x)
    expected = np.argmax(scores, axis=1)
    assert np.sum((scores[:, 0] == scores[:, 1]) & (expected == 0)) > 10 and len(set(expected.tolist())) > 2
    np.testing.assert_array_equal(vv.simulate(design, verilog.input_bits(net, x)).classes, expected)


@pytest.mark.parametrize("scores", ["affine", "ranks"])
def test_split_comparisons_and_input_copies_keep_the_argmax_and_its_ties(tmp_path, scores):
    need_tool("iverilog")
    rng = np.random.default_rng(3)
    net = _hand_net(rng, head_k=4, scale=np.array([0.5, 0.5, -0.25, 0.5, 0.75], np.float32),
                    offset=np.array([0.25, 0.25, 0.5, -0.25, 0.0], np.float32))  # classes 0 and 1 score alike
    plain = verilog.to_verilog(net, tmp_path / "plain", tree_levels=1, scores=scores)
    design = verilog.to_verilog(net, tmp_path, tree_levels=1, io="stream", bus_width=7, scores=scores, compare_bits=2,
                                input_copies=5)
    text = (tmp_path / "net.v").read_text()
    assert design.score_bits > 4 and "_g2 <= " in text and "_e2 <= " in text  # at least 3 chunks of 2 bits
    assert text.count("(* keep *) always @(posedge clk) xg") == 5  # a copy of the head's input per class
    assert design.latency == plain.latency + 3 + 1  # 3 argmax rounds (5 -> 3 -> 2 -> 1) one level longer, the copies
    x = rng.normal(size=(300, 30)).astype(np.float32)
    scores_ = net.predict(x)
    expected = np.argmax(scores_, axis=1)
    assert np.sum((scores_[:, 0] == scores_[:, 1]) & (expected == 0)) > 10 and len(set(expected.tolist())) > 2
    np.testing.assert_array_equal(vv.simulate(design, verilog.input_bits(net, x)).classes, expected)


def test_pipelined_dense_head_keeps_keras_classes_and_hidden_bits(trained, tmp_path):
    need_tool("iverilog")
    model, x = trained
    design = verilog.to_verilog(model, tmp_path, tree_levels=1)
    # 12 inputs per class: level 0 two 6-bit sums, level 1 their sum; score terms; a 4-way argmax (2 levels)
    assert design.head_registers >= 3 and design.latency == 3 + design.head_registers
    result = vv.verify(model, design, x)
    assert result["class_agreement"] == 200 and result["hidden_bit_mismatches"] == [0, 0]


def test_input_registers_add_a_clock_per_layer_and_keep_keras_classes_and_hidden_bits(trained, tmp_path):
    need_tool("iverilog")
    model, x = trained  # 72 -> 24 (K=8) -> 12 (K=6) -> 4
    plain = verilog.to_verilog(model, tmp_path / "plain", tree_levels=1)
    design = verilog.to_verilog(model, tmp_path, tree_levels=1, input_registers=[2, 1])
    text = (tmp_path / "net.v").read_text()
    assert design.input_registers == [1, 2] and design.latency == plain.latency + 2
    assert [design.clocks_to(i) for i in (1, 2)] == [2, 4]
    assert text.count("(* keep *) always @(posedge clk) a") == 24 + 12  # one register per neuron
    assert "  reg [7:0] a0 = 0;" in text and "  reg [5:0] a11 = 0;" in text  # K bits each
    result = vv.verify(model, design, x)
    assert result["class_agreement"] == 200 and result["hidden_bit_mismatches"] == [0, 0]
    streamed = verilog.to_verilog(model, tmp_path / "stream", tree_levels=1, io="stream", bus_width=8,
                                  input_registers=[2], granularity="neuron")
    assert streamed.latency == plain.latency + 1 and streamed.stream_latency == 9 + streamed.latency
    assert vv.verify(model, streamed, x[:60])["class_agreement"] == 60


def test_stream_top_with_one_word_per_image(trained, tmp_path):
    need_tool("iverilog")
    model, x = trained
    design = verilog.to_verilog(model, tmp_path, io="stream", bus_width=72, tree_levels=2)
    assert design.words == 1 and design.top == "lut_stream"
    result = vv.verify(model, design, x[:50])
    assert result["class_agreement"] == 50


@pytest.mark.parametrize("options, message", [
    (dict(tree_levels=0), "tree_levels must be a positive int"),
    (dict(io="serial"), "io must be one of"),
    (dict(io="stream"), "needs bus_width"),
    (dict(io="stream", bus_width=8, pipeline=False), "need pipeline=True"),
    (dict(tree_levels=1, compare_bits=0), "compare_bits must be a positive int"),
    (dict(compare_bits=8), "compare_bits splits comparisons over pipeline levels: it needs tree_levels"),
    (dict(input_copies=2, pipeline=False), "need pipeline=True"),
    (dict(input_copies=True), "input_copies must be a positive int"),
    (dict(input_registers=[1], pipeline=False), "need pipeline=True"),
    (dict(input_registers=2), "input_registers must be a non-empty collection of hidden layer numbers"),
    (dict(input_registers=[0]), "input_registers must be a non-empty collection"),
    (dict(input_registers=[3]), "names layer 3, but the net has 2 hidden layers .* copied by input_copies"),
])
def test_bad_pipeline_and_stream_options_are_refused(trained, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        verilog.to_verilog(trained[0], tmp_path, **options)
