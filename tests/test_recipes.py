"""The training recipe and the resumable train -> prune -> retrain pipeline."""
import dataclasses
import os

import numpy as np
import pytest

from conftest import TINY_RUN, kept_per_neuron, write_npz_dataset
from iprune_tf.workflow import models
from iprune_tf.workflow import pipeline
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow import runs as run_lib
from iprune_tf._keras import keras, tf
from iprune_tf.workflow.data import ZCAWhitening, load_dataset


def test_loss_is_square_hinge_on_pm1_targets():
    model = recipes.compile_model(keras.Sequential([keras.layers.InputLayer(input_shape=(3,))]))
    y = np.array([[1.0, -1.0, -1.0]], np.float32)
    scores = np.array([[0.5, 0.2, -2.0]], np.float32)
    expected = np.mean(np.maximum(0.0, 1.0 - y * scores) ** 2)  # (0.25 + 1.44 + 0) / 3
    loss, _ = model.evaluate(scores, y, verbose=0)  # the model is the identity: its outputs are `scores`
    assert loss == pytest.approx(expected)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)


def _small(build, **kwargs):
    if build is models.mnist_mlp:
        return build("binaryconnect_det", hidden_units=(16, 16), **kwargs)
    return build("binaryconnect_det", conv_filters=(4, "M"), dense_units=(8,), **kwargs)


@pytest.mark.parametrize("build", [models.mnist_mlp, models.cifar10_vgg_small])
def test_decoupled_weight_decay_only_on_last_dense_layer(build):
    model = recipes.compile_model(_small(build), weight_decay=5e-2)
    assert not model.losses
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    model.optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])  # Adam moves nothing on 0
    kernel = recipes.decay_kernel(model)
    for variable, old in zip(variables, before):
        expected = old * (1 - 3e-3 * 5e-2) if variable is kernel else old
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=variable.name)
    assert kernel.name.startswith("output/")


@pytest.mark.parametrize("build", [models.mnist_mlp, models.cifar10_vgg_small])
def test_l2_mode_puts_the_loss_term_on_the_last_dense_layer_only(build):
    model = _small(build, output_l2=5e-2)
    regularized = [layer.name for layer in model.layers if getattr(layer, "kernel_regularizer", None) is not None]
    assert regularized == ["output"] and len(model.losses) == 1
    kernel = model.get_layer("output").kernel
    np.testing.assert_allclose(float(model.losses[0]), 5e-2 * float(tf.reduce_sum(tf.square(kernel))), rtol=1e-5)


def test_run_config_chooses_the_weight_decay_form():
    l2 = recipes.RunConfig(weight_decay_mode="l2")
    assert recipes.decoupled_decay(l2) == 0.0
    assert len(recipes.build_model(l2, "binaryconnect_det", (28, 28), 10).losses) == 1
    assert recipes.decoupled_decay(recipes.RunConfig()) == pytest.approx(5e-2)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        recipes.RunConfig(weight_decay_mode="sometimes")
    with pytest.raises(ValueError, match="lacks"):
        recipes.compile_model(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]), weight_decay=1e-2)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="binary flavour"):
        recipes.RunConfig(flavour="full_precision")
    with pytest.raises(ValueError, match="schedule"):
        recipes.RunConfig(schedule="sometimes")
    with pytest.raises(ValueError, match="epochs_prune"):
        recipes.RunConfig(epochs_prune=-1)
    with pytest.raises(ValueError, match="Unknown preset"):
        recipes.RunConfig(preset="imagenet")
    with pytest.raises(ValueError, match="inputs_per_neuron must be >= 1, got 0"):
        recipes.RunConfig(inputs_per_neuron=0)
    with pytest.raises(ValueError, match="hidden_units must be positive ints"):
        recipes.RunConfig(hidden_units=(64, 0))


def test_config_widths_and_skip_list_reach_the_model():
    config = recipes.RunConfig(hidden_units=[24, 12], skip=["dense_1"])
    assert config == recipes.RunConfig(hidden_units=(24, 12), skip=("dense_1",))  # as read back from run.json
    pruned = recipes.prune(config, recipes.build_model(config, "binaryconnect_det", (28, 28), 10), n_train=100)
    wrapped = [layer.layer.name for layer in pruned.layers if hasattr(layer, "pruning_step")]
    assert wrapped == ["dense_2", "output"]  # dense_1 skipped, the output layer pruned: the paper's list replaced
    assert [layer.units for layer in pruned.layers if hasattr(layer, "units")] == [24]
    cifar = recipes.RunConfig(preset="cifar10", hidden_units=(16,))
    dense = [layer.units for layer in recipes.build_model(cifar, "binary", (32, 32, 3), 10).layers if hasattr(layer, "units")]
    assert dense == [16, 10]


def test_check_config_refuses_what_would_fail_after_training(tiny_mnist_npz):
    dataset = load_dataset(tiny_mnist_npz)
    recipes.check_config(recipes.RunConfig(), dataset)
    with pytest.raises(ValueError, match="Skip list names layer 'dense_3'"):
        recipes.check_config(recipes.RunConfig(skip=("dense_3",)), dataset)
    flat = dataclasses.replace(dataset, x_train=dataset.x_train.reshape(300, -1), x_test=dataset.x_test.reshape(200, -1))
    with pytest.raises(ValueError, match=r"needs images \(N, H, W, C\) or \(N, H, W\)"):
        recipes.check_config(recipes.RunConfig(preset="cifar10"), flat)
    with pytest.raises(ValueError, match="0 training"):
        recipes.check_config(recipes.RunConfig(), dataset.limit(0, 10))


def test_epoch_order_depends_only_on_seed_phase_and_epoch():
    order = pipeline.epoch_order(0, "pruned", 3, 1000)
    assert sorted(order) == list(range(1000))
    np.testing.assert_array_equal(order, pipeline.epoch_order(0, "pruned", 3, 1000))
    for other in [(1, "pruned", 3), (0, "dense_fp", 3), (0, "pruned", 4)]:
        assert not np.array_equal(order, pipeline.epoch_order(*other, 1000)), other


def test_gradual_schedule_spans_the_pruning_epochs():
    config = recipes.RunConfig(epochs_prune=3, frequency=50, batch_size=100)
    schedule = recipes.pruning_schedule(config, n_train=1050)
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (1, 33, 50)
    one_shot = recipes.pruning_schedule(dataclasses.replace(config, schedule="oneshot"), 1050)
    assert (one_shot.begin_step, one_shot.end_step) == (1, 1)


def test_pipeline_saves_every_phase(tiny_run):
    run = run_lib.Run(tiny_run.dir)
    assert set(run.phases) == set(run_lib.PHASES)
    assert run.phases["dense_fp"]["epochs"] == 3 and run.phases["dense_binary"]["epochs"] == 1
    for phase in (*run_lib.PHASES, "pruned_stripped"):
        assert os.path.isfile(run.model_path(phase))
    for result in run.phases.values():
        assert 0.0 <= result["test_accuracy"] <= 1.0 and result["wall_time_s"] > 0
    assert run.data["train_samples"] == 300 and run.data["preprocessing"] == "none"
    segment, = run.segments
    assert segment["from"] == {"phase": "dense_fp", "epoch": 0} and segment["to"] == {"phase": "pruned", "epoch": 2}
    assert os.listdir(os.path.join(run.dir, "checkpoints")) == []  # only unfinished phases keep checkpoints


def test_pruned_phase_reaches_k_except_in_skipped_output(tiny_run):
    stripped = tiny_run.load_model("pruned_stripped")
    for name in ("dense_1", "dense_2"):
        assert set(kept_per_neuron(stripped.get_layer(name).kernel.numpy())) == {8}
    assert stripped.get_layer("output").kernel_quantizer is not None  # skipped: still a plain binary layer


def test_snapshots_before_after_pruning_and_after_retraining(tiny_run):
    before = tiny_run.load_snapshot("before_pruning")
    after = tiny_run.load_snapshot("after_pruning")
    retrained = tiny_run.load_snapshot("after_retraining")
    assert set(before) == set(after) == set(retrained) == {"dense_1", "dense_2", "output"}
    assert np.count_nonzero(before["dense_1"]) == before["dense_1"].size
    for snapshot in (after, retrained):
        assert set(kept_per_neuron(snapshot["dense_1"])) == {8}
        assert np.count_nonzero(snapshot["output"]) == snapshot["output"].size
    np.testing.assert_array_equal(after["dense_2"] != 0, retrained["dense_2"] != 0)  # masks fixed in retraining


def test_existing_run_is_never_overwritten_silently(tiny_run):
    with pytest.raises(FileExistsError, match="--resume"):
        run_lib.Run.create(tiny_run.dir, tiny_run.config)
    other = dataclasses.replace(tiny_run.config, inputs_per_neuron=7)
    with pytest.raises(ValueError, match="inputs_per_neuron: 8 -> 7"):
        run_lib.Run.create(tiny_run.dir, other, resume=True)


def test_non_run_directory_with_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run_lib.Run.create(tmp_path, recipes.RunConfig())
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_runs_only_unfinished_phases(tmp_path, tiny_mnist_npz):
    config = recipes.RunConfig(data=tiny_mnist_npz, **dict(TINY_RUN, epochs_prune=0))
    run = pipeline.train(tmp_path / "run", config, verbose=0)
    dense_mtime = os.path.getmtime(run.model_path("dense_binary"))
    del run.phases["pruned"]
    run.save()
    resumed = pipeline.train(tmp_path / "run", config, resume=True, verbose=0)
    assert os.path.getmtime(resumed.model_path("dense_binary")) == dense_mtime
    assert resumed.phases["dense_fp"] == run.phases["dense_fp"]
    assert "pruned" in resumed.phases and resumed.phases["pruned"]["test_accuracy_after_pruning"] is None


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """The full CIFAR-10 preset trained one step per epoch on random arrays of CIFAR-10's shape."""
    path = write_npz_dataset(tmp_path_factory.mktemp("cifar") / "cifar_like.npz", (32, 32, 3), 8, 4)
    config = recipes.RunConfig(preset="cifar10", data=path, epochs_dense=1, epochs_prune=1, epochs_retrain=0,
                               frequency=1, batch_size=8)
    return pipeline.train(tmp_path_factory.mktemp("runs") / "cifar", config, verbose=0), path


def test_cifar10_preset_trains_with_paper_skips(cifar_run):
    run, _ = cifar_run
    stripped = run.load_model("pruned_stripped")
    pruned = {"conv_3", "conv_4", "conv_5", "conv_6", "dense_1", "dense_2"}
    for layer in stripped.layers:
        if hasattr(layer, "kernel"):
            kept = set(kept_per_neuron(layer.kernel.numpy()))
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            assert kept == ({8} if layer.name in pruned else {fan_in}), layer.name
    assert set(run.phases) == set(run_lib.PHASES)


def test_cifar10_zca_is_fitted_on_train_and_applied_to_test(cifar_run):
    run, path = cifar_run
    assert run.data["preprocessing"] == "zca"
    zca = ZCAWhitening.load(os.path.join(run.dir, "zca.npz"))
    raw = load_dataset(path)
    np.testing.assert_allclose(zca.mean, raw.x_train.reshape(len(raw.x_train), -1).mean(axis=0), rtol=1e-6)
    prepared, _ = preparation.prepare_data(run.config, run.dir)
    np.testing.assert_allclose(prepared.x_train, zca.transform(raw.x_train))
    np.testing.assert_allclose(prepared.x_test, zca.transform(raw.x_test))
    assert not np.allclose(prepared.x_test, raw.x_test)
