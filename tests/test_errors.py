"""Bad input gets a clear error naming the problem."""
import os
import subprocess
import sys
import textwrap

import pytest

import iprune_tf
from conftest import binary_mlp
from iprune_tf._keras import keras


def test_unknown_skip_name_lists_the_prunable_layers():
    with pytest.raises(ValueError, match="'dense_9', which is not in the model. Prunable layers: 'dense_1', 'dense_2', 'output'"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, skip=["dense_9"])


def test_out_of_range_skip_index_is_an_error():
    with pytest.raises(ValueError, match="index 40 is out of range.*Prunable layers"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, skip=[40])
    with pytest.raises(ValueError, match="position 5 is out of range: the model has 3 prunable layers"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, skip=[iprune_tf.PrunablePositions(5)])


def test_skip_by_index_and_predicate():
    pruned = iprune_tf.prune_fan_in(binary_mlp(), 8, skip=[0, lambda layer: layer.name == "output"])
    wrapped = [layer.layer.name for layer in pruned.layers if isinstance(layer, iprune_tf.PruneFanIn)]
    assert wrapped == ["dense_2"]


def test_cifar_paper_skip_list_picks_first_two_convs_and_last_dense():
    from iprune_tf.workflow.models import cifar10_vgg_small

    model = cifar10_vgg_small("binaryconnect_det", conv_filters=(4, 4, "M", 8, 8, "M"), dense_units=(16,))
    pruned = iprune_tf.prune_fan_in(model, 8, skip=iprune_tf.paper_skip("cifar10"))
    wrapped = [layer.layer.name for layer in pruned.layers if isinstance(layer, iprune_tf.PruneFanIn)]
    assert wrapped == ["conv_3", "conv_4", "dense_1"]
    with pytest.raises(ValueError, match="No paper skip list for 'imagenet'"):
        iprune_tf.paper_skip("imagenet")


@pytest.mark.parametrize("k", [0, -1, 7.5, "8"])
def test_bad_inputs_per_neuron(k):
    with pytest.raises(ValueError, match="inputs_per_neuron"):
        iprune_tf.prune_fan_in(binary_mlp(), k)


def test_bad_per_layer_override():
    with pytest.raises(ValueError, match="inputs_per_layer names 'bn_1', which is not a prunable layer"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, inputs_per_layer={"bn_1": 4})
    with pytest.raises(ValueError, match=r"inputs_per_layer\['dense_1'\] must be >= 1"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, inputs_per_layer={"dense_1": 0})


def test_unsupported_layer_with_weights_must_be_skipped():
    model = keras.Sequential([keras.layers.Conv1D(4, 3, input_shape=(10, 2), name="c1"), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'c1' \\(Conv1D\\) has weights but is not supported.*skip"):
        iprune_tf.prune_fan_in(model, 2)
    pruned = iprune_tf.prune_fan_in(model, 2, skip=["c1"])
    assert type(pruned.get_layer("c1")) is keras.layers.Conv1D
    with pytest.raises(ValueError, match="Conv2DTranspose.*not supported"):
        iprune_tf.PruneFanIn(keras.layers.Conv2DTranspose(3, 3))


def test_schedule_that_cannot_reach_k_fails_at_build():
    with pytest.raises(ValueError, match="Layer 'dense_1': ConstantSparsity ends at sparsity 0.5"):
        iprune_tf.prune_fan_in(binary_mlp(), 8, pruning_schedule=iprune_tf.ConstantSparsity(0.5, 0))


def test_subclassed_and_unbuilt_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(keras.Input((3,)))
    with pytest.raises(ValueError, match="subclassed model"):
        iprune_tf.prune_fan_in(net, 2)
    with pytest.raises(ValueError, match="is not built"):
        iprune_tf.prune_fan_in(keras.Sequential([keras.layers.Dense(2)]), 2)


def test_non_keras_objects_are_refused():
    with pytest.raises(TypeError, match="must be a Keras 2"):
        iprune_tf.prune_fan_in("model.h5", 8)


def _run(code):
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_keras3_model_gets_an_explicit_error():
    result = _run(
        """
        import iprune_tf, keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        try:
            iprune_tf.prune_fan_in(model, 2)
        except TypeError as error:
            print("ERROR:", error)
        """
    )
    assert "ERROR: The object to prune (Sequential) was built with Keras 3 (`import keras`)" in result.stdout, result.stderr
    assert "tf_keras" in result.stdout


def test_importing_tensorflow_first_without_legacy_keras_is_explained():
    result = _run("import tensorflow as tf\ntf.keras.layers\nimport iprune_tf\n")
    assert result.returncode != 0
    assert "iprune_tf needs Keras 2 (tf_keras), but `tf.keras` is Keras 3" in result.stderr


def test_importing_tfmot_first_is_explained():
    """tfmot sets TF_USE_LEGACY_KERAS only after importing TensorFlow: `tensorflow.keras` stays Keras 3."""
    result = _run("import tensorflow_model_optimization\nimport iprune_tf\n")
    assert result.returncode != 0
    assert "iprune_tf needs Keras 2 (tf_keras)" in result.stderr and "larq" not in result.stderr.splitlines()[-1]
