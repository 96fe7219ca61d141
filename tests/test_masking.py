"""The per-neuron top-K policy against a numpy reference."""
import numpy as np
import pytest

from iprune_tf.pruning import masking


def numpy_reference_mask(kernel, k):
    """Keep each neuron's k largest |w|; among ties the lower flat input index wins."""
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    mask = np.zeros_like(flat)
    for neuron in range(flat.shape[1]):
        order = np.argsort(-flat[:, neuron], kind="stable")
        mask[order[:k], neuron] = 1
    return mask.reshape(kernel.shape)


@pytest.mark.parametrize("shape", [(300, 20), (3, 3, 16, 12)])
@pytest.mark.parametrize("k", [1, 7, 8])
def test_mask_keeps_largest_magnitudes_per_neuron(shape, k):
    kernel = np.random.default_rng(1).normal(size=shape).astype("float32")
    mask = masking.per_neuron_topk_mask(kernel, k).numpy()
    np.testing.assert_array_equal(mask, numpy_reference_mask(kernel, k))
    assert np.all(masking.kept_inputs_per_neuron(mask).numpy() == k)


def test_ties_keep_the_lower_input_index():
    kernel = np.ones((6, 2), dtype="float32")
    kernel[4, 1] = 2.0
    mask = masking.per_neuron_topk_mask(kernel, 3).numpy()
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(mask[:, 1], [1, 1, 0, 0, 1, 0])


def test_previously_pruned_inputs_are_never_revived():
    kernel = np.array([[0.1], [5.0], [0.2], [0.3]], dtype="float32")
    previous = np.array([[1], [0], [1], [1]], dtype="float32")
    mask = masking.per_neuron_topk_mask(kernel, 2, previous_mask=previous).numpy()
    np.testing.assert_array_equal(mask[:, 0], [0, 0, 1, 1])


def test_keep_at_or_above_fan_in_keeps_everything():
    kernel = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(masking.per_neuron_topk_mask(kernel, 50).numpy(), np.ones((5, 3)))


def test_fan_in_of_dense_and_conv_kernels():
    assert masking.fan_in((784, 1024)) == 784
    assert masking.fan_in((3, 3, 128, 256)) == 1152
    with pytest.raises(ValueError, match="rank-2.*rank-4.*\\(3, 4, 5\\)"):
        masking.fan_in((3, 4, 5))


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True, None])
def test_inputs_per_neuron_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="inputs_per_neuron"):
        masking.validate_inputs_per_neuron(bad)
