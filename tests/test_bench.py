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
