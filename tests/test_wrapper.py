"""PruneFanIn inside model.fit: exact K per neuron, ternary kernels, pruned weights stay pruned."""
import numpy as np
import pytest

import iprune_tf
import larq as lq
from conftest import BINARY, binary_cnn, binary_mlp, fit_pruned, kept_per_neuron, random_data
from iprune_tf._keras import keras, tf
from iprune_tf.pruning.layers import latent_kernel


def wrappers(model):
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, iprune_tf.PruneFanIn)}


@pytest.mark.parametrize("build", [binary_mlp, binary_cnn])
def test_effective_kernels_have_exactly_k_ternary_inputs_per_neuron(build):
    model = build()
    pruned = iprune_tf.prune_fan_in(model, 8, pruning_schedule=iprune_tf.FanInSchedule(1, 6, frequency=2), skip=["output"])
    x, y = random_data(model)
    fit_pruned(pruned, x, y)
    assert set(wrappers(pruned)) == {l.name for l in model.layers if l.name.startswith(("dense", "conv"))}
    for name, wrapper in wrappers(pruned).items():
        kernel = wrapper.effective_kernel().numpy()
        assert set(np.unique(kernel)) <= {-1.0, 0.0, 1.0}
        assert np.all(kept_per_neuron(kernel) == min(8, wrapper.fan_in)), name
        # The latent weights of pruned connections are zero as well (tfmot's convention).
        latent = wrapper.layer.kernel.latent_variable.numpy()
        assert np.all(latent[wrapper.mask.numpy() == 0] == 0)


def test_masks_keep_the_largest_latent_weights_at_pruning_time():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 5, skip=["output"])
    latent_before = model.get_layer("dense_1").kernel.latent_variable.numpy()
    x, y = random_data(model, n=16)
    pruned.compile(keras.optimizers.SGD(0.0), "squared_hinge")  # lr 0: weights stay as they were
    pruned.fit(x, y, batch_size=16, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    mask = wrappers(pruned)["dense_1"].mask.numpy()
    top5 = np.argsort(-np.abs(latent_before), axis=0, kind="stable")[:5]
    expected = np.zeros_like(mask)
    np.put_along_axis(expected, top5, 1.0, axis=0)
    np.testing.assert_array_equal(mask, expected)


def test_skipped_layers_stay_dense_and_unwrapped():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 4, skip=iprune_tf.paper_skip("mnist"))
    fit_pruned(pruned, *random_data(model), epochs=1)
    output = pruned.get_layer("output")
    assert type(output) is lq.layers.QuantDense
    assert np.count_nonzero(iprune_tf.effective_kernel(output)) == output.kernel.shape.num_elements()


def test_pruned_weights_stay_zero_through_further_epochs():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 3, skip=["output"])
    x, y = random_data(model)
    fit_pruned(pruned, x, y, epochs=1)
    masks = {name: w.mask.numpy().copy() for name, w in wrappers(pruned).items()}
    pruned.fit(x, y, epochs=3, batch_size=8, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    for name, wrapper in wrappers(pruned).items():
        np.testing.assert_array_equal(wrapper.mask.numpy(), masks[name])
        kernel = wrapper.effective_kernel().numpy()
        assert np.all(kernel[masks[name] == 0] == 0)
        assert np.all(kept_per_neuron(kernel) == 3)


def test_kept_inputs_follow_the_schedule_during_fit():
    model = binary_mlp(hidden=(16,), inputs=64)
    schedule = iprune_tf.FanInSchedule(1, 4, frequency=1)  # geometric: 64, 32, 16, 8 at steps 1..4
    pruned = iprune_tf.prune_fan_in(model, 8, pruning_schedule=schedule, skip=["output"])
    wrapper = wrappers(pruned)["dense_1"]
    x, y = random_data(model, n=8)
    pruned.compile(keras.optimizers.Adam(1e-3), "squared_hinge")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(int(kept_per_neuron(wrapper.mask.numpy()).max()))
    )
    pruned.fit(x, y, batch_size=8, epochs=6, callbacks=[iprune_tf.UpdatePruningStep(), record], verbose=0)
    assert seen == [64, 32, 16, 8, 8, 8]


def test_original_model_is_not_modified():
    model = binary_mlp()
    before = [w.copy() for w in model.get_weights()]
    pruned = iprune_tf.prune_fan_in(model, 2, skip=["output"])
    fit_pruned(pruned, *random_data(model), epochs=1)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_training_without_update_pruning_step_is_an_error():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 2)
    pruned.compile("adam", "squared_hinge")
    with pytest.raises(Exception, match="UpdatePruningStep"):
        pruned.fit(*random_data(model, n=8), verbose=0)


def test_k_at_or_above_fan_in_leaves_the_layer_dense():
    model = binary_mlp(hidden=(6,), inputs=5)  # asked for by name: the global K alone is refused (test_no_silent_noops)
    pruned = iprune_tf.prune_fan_in(model, 3, inputs_per_layer={"dense_1": 8}, skip=["output"])
    fit_pruned(pruned, *random_data(model), epochs=1)
    assert np.all(kept_per_neuron(wrappers(pruned)["dense_1"].effective_kernel().numpy()) == 5)


def test_per_layer_override_and_float_layers():
    model = keras.Sequential(
        [keras.layers.Dense(12, input_shape=(30,), name="a"), keras.layers.Dense(6, name="b"), keras.layers.Dense(3, name="c")]
    )
    pruned = iprune_tf.prune_fan_in(model, 4, inputs_per_layer={"b": 2}, skip=["c"])
    fit_pruned(pruned, *random_data(model), epochs=1)
    kernels = {name: w.effective_kernel().numpy() for name, w in wrappers(pruned).items()}
    assert np.all(kept_per_neuron(kernels["a"]) == 4) and np.all(kept_per_neuron(kernels["b"]) == 2)


def test_strip_folds_the_ternary_kernel_and_matches_predictions():
    model = binary_cnn()
    pruned = iprune_tf.prune_fan_in(model, 8, skip=["output"])
    x, y = random_data(model)
    fit_pruned(pruned, x, y, epochs=1)
    stripped = iprune_tf.strip_pruning(pruned)
    assert not any(isinstance(layer, iprune_tf.PruneFanIn) for layer in stripped.layers)
    for name in ("conv_1", "conv_2"):
        layer = stripped.get_layer(name)
        # The folded kernel is not re-binarized (sign(0) would be +1) but keeps its precision readable.
        assert type(layer.kernel_quantizer) is lq.quantizers.NoOp and layer.kernel_quantizer.precision == 1
        kernel = layer.get_weights()[0]
        assert set(np.unique(kernel)) <= {-1.0, 0.0, 1.0}
        assert np.all(kept_per_neuron(kernel) == 8)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_single_layer_wrapping_in_a_functional_model():
    inputs = keras.Input((20,))
    hidden = iprune_tf.prune_fan_in(lq.layers.QuantDense(10, name="hidden", **BINARY), 3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    fit_pruned(model, *random_data(model), epochs=1)
    wrapper = model.layers[1]
    assert isinstance(wrapper, iprune_tf.PruneFanIn)
    assert np.all(kept_per_neuron(wrapper.effective_kernel().numpy()) == 3)


def test_pruning_summaries_log_sparsity_and_kept_inputs(tmp_path):
    from iprune_tf._keras import tf

    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 4, skip=["output"])
    pruned.compile("adam", "squared_hinge")
    callbacks = [iprune_tf.UpdatePruningStep(), iprune_tf.PruningSummaries(log_dir=str(tmp_path))]
    pruned.fit(*random_data(model), epochs=2, batch_size=16, callbacks=callbacks, verbose=0)
    logged = {}
    for event_file in (tmp_path / "metrics").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                logged[value.tag] = float(tf.make_ndarray(value.tensor))
    sparsity = next(v for t, v in logged.items() if "dense_1" in t and t.endswith("mask:0/sparsity"))
    kept = next(v for t, v in logged.items() if "dense_1" in t and t.endswith("kept_inputs:0/threshold"))
    assert sparsity == pytest.approx(1 - 4 / 40)
    assert kept == 4


def test_pruned_latent_weights_get_zero_gradient():
    model = binary_mlp()
    pruned = iprune_tf.prune_fan_in(model, 3, skip=["output"])
    x, y = random_data(model, n=32)
    fit_pruned(pruned, x, y, epochs=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(pruned(x, training=False) - y))
    wrappers = [layer for layer in pruned.layers if isinstance(layer, iprune_tf.PruneFanIn)]
    latents = [latent_kernel(w.layer) for w in wrappers]
    for wrapper, gradient in zip(wrappers, tape.gradient(loss, latents)):
        mask = wrapper.mask.numpy()
        gradient = gradient.numpy()
        assert np.all(gradient[mask == 0] == 0)
        assert np.count_nonzero(gradient[mask == 1]) > 0.5 * np.count_nonzero(mask)  # kept inputs do learn


def test_tfmot_polynomial_decay_reaches_exactly_k_inside_fit():
    model = binary_mlp()  # fan-ins 40 and 48
    schedule = iprune_tf.PolynomialDecay(0.0, 0.96, begin_step=0, end_step=6, frequency=4)  # 0.96: 1.6, 1.92 -> 2
    pruned = iprune_tf.prune_fan_in(model, 2, pruning_schedule=schedule, skip=["output"])
    x, y = random_data(model, n=32)
    fit_pruned(pruned, x, y, epochs=4)  # 8 steps
    for wrapper in pruned.layers[:3:2]:
        kept = np.count_nonzero(wrapper.effective_kernel().numpy(), axis=0)
        assert kept.tolist() == [2] * wrapper.layer.units  # end_step 6 is not a multiple of frequency 4


def test_prune_now_keeps_each_neurons_k_largest_latent_weights_without_training():
    model = binary_mlp()
    dense = [layer.name for layer in model.layers if isinstance(layer, lq.layers.QuantDense)]
    latent = {name: tf.convert_to_tensor(latent_kernel(model.get_layer(name))).numpy() for name in dense}
    stripped = iprune_tf.prune_now(model, 5, skip=["output"])
    hidden = [stripped.get_layer(name) for name in dense if name != "output"]
    assert len(hidden) == 2
    for layer in hidden:
        kernel = layer.get_weights()[0]
        assert np.all(kept_per_neuron(kernel) == 5)
        top5 = np.argsort(-np.abs(latent[layer.name]), axis=0, kind="stable")[:5]
        expected = np.zeros_like(kernel)
        np.put_along_axis(expected, top5, 1.0, axis=0)
        np.testing.assert_array_equal(kernel != 0, expected == 1)
        np.testing.assert_array_equal(kernel[kernel != 0], np.where(latent[layer.name] >= 0, 1.0, -1.0)[kernel != 0])
    assert np.all(kept_per_neuron(stripped.get_layer("output").get_weights()[0]) == model.get_layer("output").input_shape[-1])
