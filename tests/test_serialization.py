"""Saving and reloading pruned and stripped models keeps masks and predictions identical."""
import numpy as np
import pytest

import iprune_tf
from conftest import binary_cnn, binary_mlp, fit_pruned, random_data
from iprune_tf._keras import keras


def masks(model):
    return [layer.mask.numpy() for layer in model.layers if isinstance(layer, iprune_tf.PruneFanIn)]


@pytest.fixture
def trained_pruned_cnn():
    model = binary_cnn()
    schedule = iprune_tf.FanInSchedule(1, 4, frequency=1)
    pruned = iprune_tf.prune_fan_in(model, 5, pruning_schedule=schedule, skip=["output"])
    x, y = random_data(model, n=32)
    fit_pruned(pruned, x, y, epochs=2)
    return pruned, x, y


@pytest.mark.parametrize("filename", ["model.h5", "model.keras", "saved_model"])
def test_pruned_model_round_trip(tmp_path, trained_pruned_cnn, filename):
    pruned, x, y = trained_pruned_cnn
    path = str(tmp_path / filename)
    pruned.save(path)
    with iprune_tf.prune_scope():
        loaded = keras.models.load_model(path)
    for before, after in zip(masks(pruned), masks(loaded)):
        np.testing.assert_array_equal(before, after)
    assert len(masks(loaded)) == 2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    wrapper = loaded.layers[0]
    assert wrapper.inputs_per_neuron == 5 and wrapper.pruning_schedule == iprune_tf.FanInSchedule(1, 4, frequency=1)
    # Training continues from the saved step and keeps exactly K inputs per neuron.
    assert int(wrapper.pruning_step.numpy()) == int(pruned.layers[0].pruning_step.numpy())
    loaded.fit(x, y, epochs=1, batch_size=16, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    kept = np.count_nonzero(wrapper.effective_kernel().numpy().reshape(-1, 6), axis=0)
    assert np.all(kept == 5)


def test_stripped_model_round_trip_needs_no_custom_objects(tmp_path, trained_pruned_cnn):
    pruned, x, _ = trained_pruned_cnn
    stripped = iprune_tf.strip_pruning(pruned)
    path = str(tmp_path / "stripped.h5")
    stripped.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    kernel = loaded.get_layer("conv_2").get_weights()[0]
    assert np.all(np.count_nonzero(kernel.reshape(-1, 10), axis=0) == 5)


def test_wrapper_get_config_from_config():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 3, pruning_schedule=iprune_tf.PolynomialDecay(0.2, 0.99, 0, 50))
    wrapper = pruned.layers[0]
    clone = iprune_tf.PruneFanIn.from_config(wrapper.get_config())
    assert clone.inputs_per_neuron == 3
    assert clone.pruning_schedule.get_config() == wrapper.pruning_schedule.get_config()
    assert clone.layer.get_config() == wrapper.layer.get_config()


def test_stochastic_quantizer_serializes(tmp_path):
    from iprune_tf.workflow.models import mnist_mlp

    model = mnist_mlp("binaryconnect_stoch", hidden_units=(16,))
    path = str(tmp_path / "stoch.h5")
    model.save(path)
    with iprune_tf.prune_scope():
        loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("dense_1").kernel_quantizer).__name__ == "StochasticBinary"


@keras.utils.register_keras_serializable(package="test_iprune")
class LateFanInSchedule(iprune_tf.FanInSchedule):
    """A user's FanInSchedule subclass: linear interpolation, begins two steps late."""

    def __init__(self, begin_step=3, end_step=6, frequency=1, interpolation="linear"):
        super().__init__(begin_step, end_step, frequency, interpolation)


class HalvingSchedule(iprune_tf.pruning.schedules.PruningSchedule):
    """A user's tfmot PruningSchedule: sparsity 0.5 at step 1, 0.95 from step 3 (not registered)."""

    def __call__(self, step):
        sparsity = iprune_tf._keras.tf.where(step >= 3, 0.95, 0.5)
        return iprune_tf._keras.tf.constant(True), sparsity

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {}}


@pytest.mark.parametrize("schedule, scope", [(LateFanInSchedule(), {}), (HalvingSchedule(), {"HalvingSchedule": HalvingSchedule})])
def test_custom_schedule_saves_and_loads(tmp_path, schedule, scope):
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 2, pruning_schedule=schedule, skip=["output"])
    x, y = random_data(model, n=32)
    fit_pruned(pruned, x, y, epochs=3)  # 6 steps: both schedules reach K
    path = str(tmp_path / "custom.h5")
    pruned.save(path)
    if scope:
        with pytest.raises(ValueError, match="Unknown pruning schedule 'HalvingSchedule'.*custom_object_scope"):
            with iprune_tf.prune_scope():
                keras.models.load_model(path)
    with iprune_tf.prune_scope(), keras.utils.custom_object_scope(scope):
        loaded = keras.models.load_model(path)
    assert type(loaded.layers[0].pruning_schedule) is type(schedule)
    for before, after in zip(masks(pruned), masks(loaded)):
        np.testing.assert_array_equal(before, after)
    assert np.count_nonzero(masks(loaded)[0], axis=0).tolist() == [2] * 48
