"""Input encodings (iprune_tf.workflow.encoding): exact bits, Keras == numpy, saved with the model, presets."""
import numpy as np
import pytest

from iprune_tf.workflow import encoding
from iprune_tf.workflow import models
from iprune_tf._keras import keras


def test_thermometer_bits_are_exact_at_and_around_thresholds():
    enc = encoding.ThermometerEncoding(3)
    assert enc.thresholds == (0.25, 0.5, 0.75)
    x = np.array([[0.0, 0.25, 0.2499, 0.5, 0.74, 1.0]], dtype=np.float32)
    expected = [[-1, -1, -1], [1, -1, -1], [-1, -1, -1], [1, 1, -1], [1, 1, -1], [1, 1, 1]]
    out = enc(x).numpy()
    assert out.shape == (1, 18)
    np.testing.assert_array_equal(out.reshape(6, 3), expected)
    np.testing.assert_array_equal(enc.encode(x), out)


def test_threshold_encoding_keeps_shape_and_matches_numpy_on_random_images():
    enc = encoding.ThresholdEncoding(0.3)
    x = np.random.default_rng(1).random((50, 8, 8, 3)).astype(np.float32)
    out = enc(x).numpy()
    assert out.shape == (50, 8, 8, 3)
    np.testing.assert_array_equal(out, np.where(x >= np.float32(0.3), 1.0, -1.0))
    np.testing.assert_array_equal(enc.encode(x), out)


def test_channels_interleave_levels_pixel_major():
    enc = encoding.ThermometerEncoding(2, thresholds=[0.1, 0.9])
    x = np.array([[[0.5, 1.0]]], dtype=np.float32)  # one pixel row, two channels
    np.testing.assert_array_equal(enc(x).numpy(), [[[1, -1, 1, 1]]])
    assert enc.output_shape_for((4, 4, 2)) == (4, 4, 4)


def test_preset_with_encoding_saves_and_loads_with_identical_outputs(tmp_path):
    model = models.mnist_mlp("binary", hidden_units=(16, 8), input_encoding="thermometer:4")
    assert model.get_layer("flatten").output_shape == (None, 28 * 28 * 4)
    assert model.get_layer("dense_1").input_quantizer is not None  # ±1 inputs: binary first layer
    path = str(tmp_path / "m.h5")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    enc = loaded.get_layer("input_encoding")
    assert isinstance(enc, encoding.ThermometerEncoding)
    np.testing.assert_array_equal(np.float32(enc.thresholds), np.float32([0.2, 0.4, 0.6, 0.8]))
    x = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_preset_without_encoding_is_unchanged():
    model = models.mnist_mlp("binary", hidden_units=(16,))
    assert [layer.name for layer in model.layers][:2] == ["flatten", "dense_1"]
    assert model.get_layer("dense_1").input_quantizer is None


def test_cifar_preset_encoding_pads_first_conv_with_plus_one():
    model = models.cifar10_vgg_small("binary", conv_filters=(4, "M"), dense_units=(8,), input_encoding="threshold:0.5")
    assert model.get_layer("conv_1").pad_values == 1.0
    assert model.get_layer("input_encoding").output_shape == (None, 32, 32, 3)


def test_from_spec():
    assert encoding.from_spec(None) is None and encoding.from_spec("none") is None
    assert encoding.from_spec("threshold").threshold == 0.5
    assert encoding.from_spec("thermometer:7").levels == 7
    assert encoding.from_spec("thermometer").levels == 3


@pytest.mark.parametrize("spec, message", [
    ("thermometer:0", "levels must be an integer >= 1"),
    ("thermometer:x", "Bad input encoding 'thermometer:x'"),
    ("gray", "Unknown input encoding 'gray'"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        encoding.from_spec(spec)


def test_thresholds_must_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        encoding.ThermometerEncoding(2, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="levels=3 but 2 thresholds"):
        encoding.ThermometerEncoding(3, thresholds=[0.1, 0.5])


def test_quantile_thresholds_split_nonzero_values_evenly():
    x = np.concatenate([np.zeros(1000), np.arange(1, 101) / 100.0]).astype(np.float32)
    thresholds = encoding.quantile_thresholds(x, 3)
    np.testing.assert_allclose(thresholds, [0.2575, 0.505, 0.7525], atol=1e-6)
