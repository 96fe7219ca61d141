"""Output heads (iprune_tf.workflow.heads): dense, pruned:K_OUT and groupsum, trained, lowered and exported."""
import time

import numpy as np
import pytest

import iprune_tf
from iprune_tf import cli, export
from iprune_tf._keras import keras
from iprune_tf.export import c_verify, lower, to_c
from iprune_tf.export import verilog
from iprune_tf.export import verilog_verify as vv
from iprune_tf.pruning.prune import strip_pruning
from iprune_tf.pruning.wrapper import PruneFanIn
from iprune_tf.workflow import heads, models, recipes
from iprune_tf.workflow.heads import GroupSum

from conftest import need_tool, pixel_data

HEADS = ("dense", "pruned:5", "groupsum")
CLASSES, HIDDEN, SAMPLES = 4, (24, 16), 200


def _data(n, seed):
    return pixel_data(n, seed, CLASSES)


@pytest.fixture(scope="module", params=HEADS)
def trained(request):
    """A fully binary 72-24-16 MLP (thermometer:2 on 6x6 inputs, K=6) with ``head``, pruned by the
    recipe (its skip list and K_OUT) over 30 steps of 20 and stripped; 200 held-out inputs."""
    head = request.param
    config = recipes.RunConfig(flavour="binary", inputs_per_neuron=6, head=head, epochs_dense=0, epochs_prune=1,
                               epochs_retrain=0, frequency=5, batch_size=20, hidden_units=HIDDEN)
    keras.utils.set_random_seed(0)
    model = models.mnist_mlp("binary", hidden_units=HIDDEN, num_classes=CLASSES, input_shape=(6, 6),
                             input_encoding="thermometer:2", head=head)
    x, y = _data(600, 0)
    pruned = recipes.prune(config, model, len(x))
    wrapped = [layer.layer.name for layer in pruned.layers if isinstance(layer, PruneFanIn)]
    recipes.compile_model(pruned, 3e-3, 5e-2)  # the decay layer is found through the pruning wrappers
    pruned.fit(x, y, batch_size=20, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    return head, wrapped, strip_pruning(pruned), _data(SAMPLES, 1)[0]


def test_recipe_prunes_what_the_head_needs(trained):
    head, wrapped, model, _ = trained
    expected = {"dense": ["dense_1", "dense_2"], "pruned:5": ["dense_1", "dense_2", "output"],
                "groupsum": ["dense_1", "dense_2"]}
    assert wrapped == expected[head]
    net = lower(model)
    last = net.layers[-1]
    assert [layer.output for layer in net.layers] == ["threshold", "threshold", "affine"]
    assert (last.kind, last.k, last.units, last.fan_in, last.binary_input) == {
        "dense": ("binary", 16, 4, 16, True), "pruned:5": ("sparse", 5, 4, 16, True),
        "groupsum": ("sparse", 4, 4, 16, True)}[head]
    if head == "groupsum":
        np.testing.assert_array_equal(last.indices, np.arange(16).reshape(4, 4))
        assert np.all(last.signs == 1) and np.all(last.scale == np.float32(0.5)) and np.all(last.offset == 0)


def test_lowered_scores_and_classes_equal_keras(trained):
    head, _, model, x = trained
    keras_scores = model.predict(x, verbose=0)
    lowered = lower(model).predict(x)
    np.testing.assert_array_equal(np.argmax(lowered, axis=1), np.argmax(keras_scores, axis=1))
    if head == "groupsum":  # scale * sum of signs: the same float32 operations
        np.testing.assert_array_equal(lowered, keras_scores)
        tied = np.sum(keras_scores == keras_scores.max(axis=1, keepdims=True), axis=1) > 1
        assert tied.sum() > 10  # popcounts tie often: the exports below must all pick the lowest class


def test_verilog_netlist_equals_keras(trained, tmp_path):
    need_tool("iverilog")
    head, _, model, x = trained
    design = verilog.to_verilog(model, tmp_path)
    assert design.score_order_conflicts == 0
    result = vv.verify(model, design, x, simulator="iverilog")
    keras_classes = np.argmax(model.predict(x, verbose=0), axis=1)
    assert len(set(keras_classes.tolist())) > 1
    assert result["class_agreement"] == SAMPLES and result["hidden_bit_mismatches"] == [0, 0], head


def test_group_sum_wider_than_a_truth_table_is_one_popcount_per_class(tmp_path):
    """Groups of 13 bits (more than a truth table's MAX_K inputs): the head is a popcount, not a table."""
    need_tool("iverilog")
    model = models.mnist_mlp("binary", hidden_units=(24, 52), num_classes=CLASSES, input_shape=(6, 6),
                             input_encoding="thermometer:2", head="groupsum")
    model = iprune_tf.prune_now(model, 6, skip=models.get_preset("mnist").skip("groupsum"))
    x = _data(50, 2)[0]
    assert lower(model).layers[-1].k == 13 > verilog.MAX_K
    result = vv.verify(model, verilog.to_verilog(model, tmp_path), x, simulator="iverilog")
    assert result["class_agreement"] == 50 and result["hidden_bit_mismatches"] == [0, 0]


def test_c_export_equals_keras(trained, tmp_path):
    need_tool("gcc")
    head, _, model, x = trained
    cmodel = to_c(model, "head_net", tmp_path / "c")
    classes, scores, _ = c_verify.run_host(c_verify.build_host(cmodel, tmp_path / "build"), x, CLASSES)
    keras_scores = model.predict(x, verbose=0)
    np.testing.assert_array_equal(classes, np.argmax(keras_scores, axis=1))
    np.testing.assert_allclose(scores, keras_scores, atol=1e-4 if head == "dense" else 1e-5)


@pytest.mark.parametrize("mode", ["sparse", "sparse_int8"])
def test_sparse_tflite_equals_keras(trained, mode):
    head, _, model, x = trained
    if head == "dense" or (head, mode) == ("pruned:5", "sparse"):
        pytest.skip("the generic float chain of a dense or pruned output layer: tests/test_export_tflite_sparse.py")
    tflite = export.to_tflite(model, mode, representative_data=x[:64])
    checks = export.verify(model, tflite, x, mode=mode)
    assert [c.agreement for c in checks] == [1.0, 1.0], (head, checks)


def test_report_counts_each_head_in_both_countings(trained):
    """Per output layer: paper bits (1 per kept ±1 weight, 0 for the group sum's wired +1s), file bits
    (sign + ceil(log2 16) = 4 index bits per kept connection, 2 float32 per class for a non-identity affine)
    and operations (one per connection)."""
    head, _, model, _ = trained
    out = lower(model).cost()["layers"][-1]
    expected = {
        "dense": (64, 64 + 64 * 4, 64),  # 4 x 16 weights, no indices
        "pruned:5": (20, 20 * (1 + 4) + 64 * 4, 20),
        "groupsum": (0, 16 * (1 + 4) + 64 * 4, 16),  # its scale (0.5 = 1/sqrt(4)) is stored per class
    }[head]
    assert (out["paper_bits"], out["file_bits"], out["operations"]) == expected
    hidden = 24 * 6 + 16 * 6  # dense_1 and dense_2 at K=6
    assert lower(model).cost()["memory_bits_paper"] == hidden + expected[0]


def test_group_sum_config_round_trip_and_h5(tmp_path):
    layer = GroupSum(5, scale=0.25, name="g")
    clone = GroupSum.from_config(layer.get_config())
    assert (clone.groups, clone.scale, clone.name) == (5, 0.25, "g")
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(20,)), GroupSum(5)])
    x = np.random.default_rng(0).normal(size=(8, 20)).astype(np.float32)
    model.save(tmp_path / "g.h5")
    loaded = keras.models.load_model(tmp_path / "g.h5")  # registered: no custom-object scope needed
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    signs = np.where(x >= 0, 1.0, -1.0).reshape(8, 5, 4).sum(-1)
    np.testing.assert_array_equal(model.predict(x, verbose=0), (signs * np.float32(0.5)).astype(np.float32))


def test_group_sum_head_decays_the_last_hidden_layer():
    model = models.mnist_mlp("binary", hidden_units=(32, 20), num_classes=10, head="groupsum")
    assert recipes.decay_layer_name(model) == "dense_2"
    assert recipes.decay_kernel(model) is model.get_layer("dense_2").kernel.latent_variable
    assert recipes.decay_layer_name(models.mnist_mlp("binary", hidden_units=(32, 20), head="pruned:3")) == "output"


@pytest.mark.parametrize("spec", ["pruned", "pruned:0", "pruned:x", "pruned:3:4", "group_sum", "", None, 3])
def test_malformed_head_is_refused(spec):
    with pytest.raises(ValueError, match="Unknown head"):
        heads.parse_head(spec)
    with pytest.raises(ValueError, match="Unknown head"):
        recipes.RunConfig(head=spec)


@pytest.mark.parametrize("hidden, head, flavour, message", [
    ((32, 14), "groupsum", "binary", "14 is not a multiple of 4. Make the last hidden width a multiple of 4 (e.g. 12 or 16)"),
    ((32, 2), "groupsum", "binary", "(e.g. 4)"),
    ((32, 16), "groupsum", "binaryconnect_det", "only the fully binary flavour"),
    ((32, 16), "pruned:16", "binary", "K_OUT must be below it"),
    ((), "pruned:2", "binary", "needs a hidden layer"),
])
def test_head_that_does_not_fit_is_refused_at_build(hidden, head, flavour, message):
    with pytest.raises(ValueError) as error:
        models.mnist_mlp(flavour, hidden_units=hidden, num_classes=4, input_shape=(6, 6), head=head)
    assert message in str(error.value)


@pytest.mark.parametrize("extra, message", [
    (["--head", "groupsum", "--hidden-units", "64,63"], "not a multiple of 10"),
    (["--head", "pruned:64", "--hidden-units", "64,64"], "K_OUT must be below it"),
    (["--head", "sum"], "Unknown head 'sum'"),
])
def test_cli_refuses_a_bad_head_before_training(tmp_path, capsys, tiny_mnist_npz, extra, message):
    out = tmp_path / "run"
    start = time.time()
    code = cli.main(["train", "--data", tiny_mnist_npz, "--out", str(out), "--flavour", "binary", *extra])
    printed = capsys.readouterr()
    assert code == 2 and message in printed.err, printed.err
    assert "== dense_fp ==" not in printed.out and time.time() - start < 20 and not out.exists()


def test_cli_trains_and_reports_a_group_sum_head(tmp_path, capsys, tiny_mnist_npz):
    out = str(tmp_path / "run")
    assert cli.main(["train", "--data", tiny_mnist_npz, "--out", out, "--flavour", "binary", "--head", "groupsum",
                     "--hidden-units", "32,20", "--input-encoding", "thermometer:2", "--inputs", "6",
                     "--epochs-dense", "1", "--epochs-prune", "1", "--epochs-retrain", "0",
                     "--limit-train", "200", "--limit-test", "100"]) == 0
    assert cli.main(["report", out, "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Head groupsum: no output layer" in printed
    from iprune_tf.workflow.runs import Run

    run = Run(out)
    assert isinstance(run.load_model("pruned_stripped").layers[-1], GroupSum)
    assert run.load_model("dense_fp").layers[-1].name == "bn_output"  # the FP baseline keeps the paper's head
    costs = lower(run.load_model("pruned_stripped")).cost()["layers"]
    assert [(c["name"], c["k"], c["paper_bits"]) for c in costs] == [
        ("dense_1", 6, 32 * 6), ("dense_2", 6, 20 * 6), ("group_sum", 2, 0)]


def test_group_sum_converts_to_builtin_tflite_ops():
    """The float TFLite export finalizes GroupSum as sign + a Dense of ones per group + its scale: TFLite and
    TFLite Micro give Keras' scores exactly (sums of ±1 times a power-of-two scale)."""
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(24,)), GroupSum(4)])
    x = np.random.default_rng(3).normal(size=(200, 24)).astype(np.float32)
    tflite = export.to_tflite(model, "float")
    assert set(export.tflite_ops(tflite)) == {"FULLY_CONNECTED", "GREATER_EQUAL", "SELECT_V2"}  # scale folded in
    checks = export.verify(model, tflite, x, mode="float")
    assert [(c.agreement, c.max_abs_diff) for c in checks] == [(1.0, 0.0), (1.0, 0.0)]
