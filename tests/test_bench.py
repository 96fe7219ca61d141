"""The bench scripts' own baselines compute what they claim (the benchmarks compare against them)."""
import os
import sys

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from iprune_tf.workflow import models
from iprune_tf.pruning.masking import per_neuron_topk_mask

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "bench"))
from common import m_by_n_kwargs, tfmot_pruned  # noqa: E402
from lut_accuracy import training_data  # noqa: E402
from lut_pareto import rows as lut_pareto_rows  # noqa: E402
from mask_speed import numpy_argsort_mask  # noqa: E402


@pytest.mark.parametrize("shape", [(40, 12), (3, 3, 5, 7)])
def test_numpy_argsort_baseline_equals_iprune_mask(shape):
    kernel = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(numpy_argsort_mask(kernel, 4), per_neuron_topk_mask(kernel, 4).numpy())


def test_tfmot_m_by_n_baseline_keeps_k_inputs_per_neuron():
    model = tfmot_pruned(models.mnist_mlp("full_precision", hidden_units=(16, 12)), lambda layer: m_by_n_kwargs(layer, 3))
    model.compile("adam", "squared_hinge")
    x = np.random.default_rng(0).random((8, 28, 28)).astype(np.float32)
    y = np.where(np.eye(10)[np.arange(8)] > 0, 1.0, -1.0)
    model.fit(x, y, epochs=1, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    for name in ("dense_1", "dense_2"):
        kernel = stripped.get_layer(name).kernel.numpy()
        assert set(np.count_nonzero(kernel, axis=0)) == {3}, name
    assert np.count_nonzero(stripped.get_layer("output").kernel.numpy()) == 12 * 10


def test_training_data_mirrors_or_adds_fresh_pixel_noise():
    x = np.linspace(0, 1, 4 * 3 * 4, dtype=np.float32).reshape(4, 3, 4)
    y = np.eye(4)[[0, 1, 2, 3]] * 2 - 1
    plain, count = training_data({}, x, y)
    assert plain["x"] is x and count == 4
    flipped, count = training_data({"augment": "flip"}, x, y)
    assert count == 8
    np.testing.assert_array_equal(flipped["x"][:4], x)
    np.testing.assert_array_equal(flipped["x"][4:, :, 0], x[:, :, 3])  # the last column comes first
    np.testing.assert_array_equal(flipped["y"], np.concatenate([y, y]))
    noisy, count = training_data({"augment": "noise:0.1"}, x, y)
    assert count == 4
    epochs = [np.concatenate([images.numpy() for images, _ in noisy["x"]]) for _ in range(2)]
    for images in epochs:
        assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
        assert 0 < np.abs(np.sort(images.ravel()) - np.sort(x.ravel())).max() < 0.6
    assert not np.array_equal(np.sort(epochs[0].ravel()), np.sort(epochs[1].ravel()))  # fresh noise each epoch
    targets = np.concatenate([t.numpy() for _, t in noisy["x"]])
    np.testing.assert_array_equal(np.sort(targets.argmax(1)), [0, 1, 2, 3])  # every image once, with a label
    for bad in ("shift", "noise", "noise:0", "noise:-1", "noise:x"):
        with pytest.raises(ValueError, match="augment must be 'flip' or 'noise:STD'"):
            training_data({"augment": bad}, x, y)


def _lut_entry(k, accuracy, lut6=None, check=None, **config):
    entry = {f"k{k}": {"keras_test_accuracy": accuracy}}
    if lut6 is not None:
        entry[f"k{k}_hardware"] = {"lut6": {"total": {"luts": lut6}}, "netlist_equals_keras": check}
    return dict(entry, config=config) if config else entry


def test_lut_pareto_groups_seeds_and_marks_the_front():
    """Seeds grouped under their configuration, screens left out, the front and the K=6 target as defined."""
    configs = {
        "a": _lut_entry(6, 0.87, 2900, "10000/10000", head="pruned:32", hidden=[512, 500]),
        "a_s1": _lut_entry(6, 0.88, 2950, "10000/10000"), "a_s2": _lut_entry(6, 0.86, 3010, "9998/10000"),
        "b": _lut_entry(6, 0.85, 1800, "10000/10000", head="groupsum"),
        "c": _lut_entry(6, 0.86, 4000, "10000/10000"),  # dominated by a: less accurate, more LUTs
        "d": _lut_entry(6, 0.90),  # no LUT figure: never on the front
        "s_a_val": _lut_entry(6, 0.99, 10), "a_val": _lut_entry(6, 0.99, 10),  # validation screens
    }
    table = {r["config"]: r for r in lut_pareto_rows(configs)}
    assert sorted(table) == ["a", "b", "c", "d"]
    a = table["a"]
    assert a["seeds"] == [0, 1, 2] and a["lut6"] == [2900, 2950, 3010] and a["netlists_equal"] == 2
    assert abs(a["accuracy_mean"] - 87.0) < 1e-9 and abs(a["accuracy_std"] - 1.0) < 1e-9
    assert {name: r["pareto"] for name, r in table.items()} == {"a": True, "b": True, "c": False, "d": False}
    assert a["meets_accuracy_target"] and not a["meets_k6_target"]  # one seed's circuit is above 3,000 LUT6
    assert not table["d"]["meets_accuracy_target"]  # one seed only
    configs["a_s2"] = _lut_entry(6, 0.86, 2990, "10000/10000")
    assert {r["config"]: r["meets_k6_target"] for r in lut_pareto_rows(configs)} == {"a": True, "b": False, "c": False, "d": False}
