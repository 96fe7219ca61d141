"""connectivity="regrow": pruned connections keep learning and replace kept ones that fall behind."""
import numpy as np
import pytest

import iprune_tf
from conftest import binary_mlp, fit_pruned, kept_per_neuron, random_data
from iprune_tf._keras import keras, tf
from iprune_tf.pruning import schedules
from iprune_tf.pruning.layers import latent_kernel
from iprune_tf.workflow import recipes


def hidden_wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, iprune_tf.PruneFanIn)]


def pruned_mlp(connectivity, k=3, schedule=None):
    model = binary_mlp()
    schedule = schedule or iprune_tf.FanInSchedule(1, 1, frequency=2)
    return model, iprune_tf.prune_fan_in(model, k, schedule, skip=["output"], connectivity=connectivity)


def test_pruned_latent_weights_get_the_gradient_of_their_connection():
    _, pruned = pruned_mlp("regrow")
    x, y = random_data(pruned, n=32)
    fit_pruned(pruned, x, y, epochs=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(pruned(x, training=False) - y))
    wrappers = hidden_wrappers(pruned)
    gradients = tape.gradient(loss, [latent_kernel(w.layer) for w in wrappers])
    for wrapper, gradient in zip(wrappers, gradients):
        pruned_entries = wrapper.mask.numpy() == 0
        assert np.count_nonzero(gradient.numpy()[pruned_entries]) > 0.5 * pruned_entries.sum()
        # The forward pass is the masked one all the same: exactly K ternary inputs per neuron.
        kernel = wrapper.effective_kernel().numpy()
        assert set(np.unique(kernel)) <= {-1.0, 0.0, 1.0}
        assert np.all(kept_per_neuron(kernel) == 3)


def test_latent_weights_of_pruned_connections_survive_epoch_ends():
    _, pruned = pruned_mlp("regrow")
    fit_pruned(pruned, *random_data(pruned), epochs=2)
    for wrapper in hidden_wrappers(pruned):
        latent = wrapper.layer.kernel.latent_variable.numpy()
        assert np.count_nonzero(latent[wrapper.mask.numpy() == 0]) > 0


@pytest.mark.parametrize("connectivity, revived", [("regrow", True), ("magnitude", False)])
def test_a_pruned_connection_that_outgrows_a_kept_one_comes_back_only_under_regrow(connectivity, revived):
    _, pruned = pruned_mlp(connectivity)
    x, y = random_data(pruned, n=16)
    fit_pruned(pruned, x, y, epochs=1, batch_size=16)  # step 1: masks to K=3
    wrapper = hidden_wrappers(pruned)[0]
    latent = latent_kernel(wrapper.layer)
    values = latent.numpy()
    row = int(np.flatnonzero(wrapper.mask.numpy()[:, 0] == 0)[0])
    values[row, 0] = 0.999  # above every kept weight of neuron 0 unless a kept one sits at the clip
    latent.assign(values)
    pruned.compile(keras.optimizers.SGD(0.0), "squared_hinge")  # lr 0: the weights stay as set
    pruned.fit(x, y, batch_size=16, epochs=2, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)  # steps 2, 3
    mask = wrapper.mask.numpy()
    assert bool(mask[row, 0]) is revived
    assert np.all(kept_per_neuron(mask) == 3)
    if revived:  # the refresh at step 3 is the top 3 of every neuron's latent weights
        top3 = np.argsort(-np.abs(values), axis=0, kind="stable")[:3]
        expected = np.zeros_like(mask)
        np.put_along_axis(expected, top3, 1.0, axis=0)
        np.testing.assert_array_equal(mask, expected)


def test_masks_are_refreshed_every_frequency_steps_after_the_schedule_ends():
    schedule = iprune_tf.FanInSchedule(1, 2, frequency=3)
    refreshed = [s for s in range(1, 12) if bool(schedules.refresh_after_end(schedule, s))]
    assert refreshed == [4, 7, 10]
    never_ends = iprune_tf.ConstantSparsity(0.9, begin_step=0, end_step=-1, frequency=2)
    assert not any(bool(schedules.refresh_after_end(never_ends, s)) for s in range(10))


def test_regrow_survives_get_config_and_the_run_config():
    _, pruned = pruned_mlp("regrow")
    wrapper = hidden_wrappers(pruned)[0]
    clone = iprune_tf.PruneFanIn.from_config(wrapper.get_config())
    assert clone.connectivity == "regrow"
    config = recipes.RunConfig(connectivity="regrow", hidden_units=(32, 32))
    model = recipes.build_model(config, "binaryconnect_det", (28, 28), 10)
    assert all(w.regrows for w in hidden_wrappers(recipes.prune(config, model, n_train=1000)))


@pytest.mark.parametrize("make", [
    lambda: iprune_tf.prune_fan_in(binary_mlp(), 3, connectivity="random"),
    lambda: iprune_tf.PruneFanIn(keras.layers.Dense(4), 3, connectivity="Regrow"),
    lambda: recipes.RunConfig(connectivity="grow"),
])
def test_an_unknown_connectivity_is_refused_with_the_choices(make):
    with pytest.raises(ValueError, match=r"connectivity must be one of \('magnitude', 'regrow'\)"):
        make()
