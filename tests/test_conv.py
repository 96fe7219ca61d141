"""The conv preset at any image shape and width: build, train through ``iprune train``, per-filter masks, data,
and the C export's narrow activation storage."""
import os
import pickle
import shutil

import numpy as np
import pytest

import iprune_tf
from iprune_tf import cli
from iprune_tf._keras import keras
from iprune_tf.export import c_verify, lower, to_c
from iprune_tf.export.c_plan import plan_steps
from iprune_tf.workflow import data, models, preparation, recipes
from iprune_tf.workflow import runs as run_lib
from iprune_tf.workflow.data import ZCAWhitening, load_dataset

from conftest import kept_per_neuron, random_data, write_npz_dataset

CONV_SKIP = {"conv_1", "conv_2", "output"}  # the paper's cifar10 skip list


def kernel_shapes(model):
    return [tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")]


def test_conv_preset_takes_any_image_shape_and_a_width():
    model = models.cifar10_vgg_small("binaryconnect_det", input_shape=(28, 28, 1), width=0.125)
    assert kernel_shapes(model) == [
        (3, 3, 1, 16), (3, 3, 16, 16), (3, 3, 16, 32), (3, 3, 32, 32), (3, 3, 32, 64), (3, 3, 64, 64),
        (3 * 3 * 64, 128), (128, 128), (128, 10),  # 28 -> 14 -> 7 -> 3 after the three pools
    ]
    assert model.output_shape == (None, 10)
    assert models.scale_widths((3, "M", 1), 0.1) == (1, "M", 1)  # never below one filter
    for width in (0, -1, True, "0.5"):
        with pytest.raises(ValueError, match="width must be a number > 0"):
            models.cifar10_vgg_small(width=width)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        models.cifar10_vgg_small(input_shape=(28, 28))
    with pytest.raises(ValueError, match="preset 'mnist' takes hidden_units instead"):
        recipes.RunConfig(preset="mnist", width=0.5)
    with pytest.raises(ValueError, match="zca must be True, False or None"):
        recipes.RunConfig(preset="cifar10", zca="off")


def test_zca_whitens_one_channel_images():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4000, 6, 6, 1))
    images = (base + 0.5 * np.roll(base, 1, axis=2)).astype(np.float32)  # neighbouring pixels correlated
    zca = ZCAWhitening(eps=1e-6).fit(images)
    white = zca.transform(images)
    assert white.shape == images.shape
    np.testing.assert_allclose(np.cov(white.reshape(len(white), -1).T), np.eye(36), atol=0.02)


def test_zca_off_is_recorded_with_its_reason_and_on_whitens_grey_images(tmp_path):
    raw = load_dataset(write_npz_dataset(tmp_path / "grey.npz", (10, 10), 40, 8))
    off = recipes.RunConfig(preset="cifar10", data="x", zca=False)
    images, zca = preparation.preprocess(off, raw)
    assert zca is None and images.x_train.shape == (40, 10, 10, 1)
    np.testing.assert_array_equal(images.x_test[..., 0], raw.x_test)
    assert preparation.preprocessing(off).startswith("none: zca=False in the run's config (the paper whitens CIFAR-10 only")
    on = recipes.RunConfig(preset="cifar10", data="x")
    whitened, zca = preparation.preprocess(on, raw, str(tmp_path))
    assert preparation.preprocessing(on) == "zca" and os.path.isfile(tmp_path / "zca.npz")
    np.testing.assert_allclose(whitened.x_test, zca.transform(raw.x_test[..., None]))


def test_iprune_train_conv_preset_on_28x28_grey_images(tmp_path):
    """The full pipeline on (N, 28, 28) data, pruned with last halving and cosine retraining: K taps per filter."""
    path = write_npz_dataset(tmp_path / "fmnist_like.npz", (28, 28), 32, 8)
    out = str(tmp_path / "run")
    argv = ["train", "--preset", "cifar10", "--width", "0.0625", "--zca", "off", "--data", path, "--out", out,
            "--inputs", "8", "--epochs-dense", "1", "--epochs-prune", "2", "--epochs-retrain", "1", "--frequency", "1",
            "--last-halving", "0.6", "--retrain-lr", "cosine", "--batch-size", "8"]
    assert cli.main(argv) == 0
    run = run_lib.Run(out)
    assert run.config.width == 0.0625 and run.config.zca is False
    assert run.data["input_shape"] == [28, 28, 1] and run.data["preprocessing"].startswith("none: zca=False")
    assert not os.path.exists(os.path.join(out, "zca.npz"))
    stripped = run.load_model("pruned_stripped")  # reloaded from the .h5
    assert kernel_shapes(stripped)[:3] == [(3, 3, 1, 8), (3, 3, 8, 8), (3, 3, 8, 16)]
    for layer in stripped.layers:
        if hasattr(layer, "kernel"):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            expected = fan_in if layer.name in CONV_SKIP else 8
            assert set(kept_per_neuron(layer.kernel.numpy())) == {expected}, layer.name


def test_conv_masks_follow_the_schedule_on_the_per_filter_fan_in(tmp_path):
    """Each filter keeps the schedule's count of its kh*kw*c_in taps after every step, then exactly K."""
    model = models.cifar10_vgg_small("binaryconnect_det", conv_filters=(4, 6, "M"), dense_units=(5,),
                                     input_shape=(6, 6, 3), width=1)
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=10, frequency=1, last_halving=0.6)
    pruned = iprune_tf.prune_fan_in(model, 2, schedule, skip=["output"])
    pruned.compile(keras.optimizers.Adam(3e-3), "squared_hinge")
    x, y = random_data(pruned, n=8)
    fan_ins = {"conv_1": 3 * 3 * 3, "conv_2": 3 * 3 * 4, "dense_1": 3 * 3 * 6}
    for step in range(1, 12):
        pruned.fit(x, y, batch_size=8, epochs=1, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
        for layer in pruned.layers:
            if isinstance(layer, iprune_tf.PruneFanIn):
                fan_in = fan_ins[layer.layer.name]
                count = int(schedule(min(step, 10), fan_in, 2)[1])
                assert set(kept_per_neuron(layer.mask.numpy())) == {count}, (layer.layer.name, step)
                if step <= 4:  # the first 40% of the steps end at 2K: the last halving gets the other 60%
                    assert count >= 4
    path = str(tmp_path / "stripped.h5")
    iprune_tf.strip_pruning(pruned).save(path, save_format="h5")
    with iprune_tf.prune_scope():
        reloaded = keras.models.load_model(path, compile=False)
    for name in fan_ins:
        assert set(kept_per_neuron(reloaded.get_layer(name).kernel.numpy())) == {2}, name


def test_cifar10_batches_dir_reads_as_keras_reads_it(tmp_path):
    """A generated ``cifar-10-batches-py`` directory (what ``keras.datasets.cifar10`` unpacks): the loader
    gives keras' own batch reader's images, channels last, and labels."""
    from tf_keras.src.datasets.cifar import load_batch

    rng = np.random.default_rng(0)
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    names = [*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH]
    for name in names:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    ds = load_dataset(str(directory))
    batches = [load_batch(str(directory / name)) for name in names]  # keras' reader: NCHW uint8
    keras_x = np.concatenate([x for x, _ in batches]).transpose(0, 2, 3, 1) / np.float32(255)
    np.testing.assert_array_equal(np.concatenate([ds.x_train, ds.x_test]), keras_x)
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test]), np.concatenate([y for _, y in batches]))


def test_iprune_train_names_a_conv_layer_whose_fan_in_is_at_most_k(tmp_path, tiny_mnist_npz, capsys):
    """The one fan-in check (masking.require_fewer_inputs) covers the conv preset's filters: kh*kw*c_in."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "cifar10", "--width", "0.0078125", "--zca", "off", "--data", tiny_mnist_npz,
            "--out", str(out), "--inputs", "9"]  # filters 1, 1, 2, 2, 4, 4: conv_3 sees 3*3*1 = 9 taps
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "K=9 is at or above the fan-in of 'conv_3' (fan-in 9), 'dense_2' (fan-in 8)" in err and "conv_4" not in err
    assert not out.exists()


def _stored_values(values, tensor):
    """numpy copy of what the C runtime stores and reads back for ``tensor`` (c_plan.Tensor)."""
    values = np.asarray(values, np.float32)
    if tensor.store == "f16":
        return values.astype(np.float16).astype(np.float32)
    q = values * np.float32(1.0 / tensor.scale)  # the C literals: float32 of the scale and of its inverse
    half = np.where(q >= 0, np.float32(0.5), np.float32(-0.5))
    q = np.trunc(q + half) if tensor.signed else np.floor(q + np.float32(0.5))
    q = np.clip(q, -127 if tensor.signed else 0, 127 if tensor.signed else 255).astype(np.float32)
    return q * np.float32(tensor.scale)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian package gcc)")
@pytest.mark.parametrize("storage", ["f16", "q8"])
def test_narrow_activation_storage_is_exactly_the_rounded_model(tmp_path, storage):
    """f16/q8 activation storage: RAM halved/quartered, and the C scores equal (bit for bit) the lowered
    model with each stored tensor rounded as the runtime rounds it: the format helpers are exact."""
    model = models.cifar10_vgg_small("binaryconnect_det", conv_filters=(4, "M", 6, "M"), dense_units=(8,),
                                     input_shape=(8, 8, 1))
    net = lower(iprune_tf.strip_pruning(iprune_tf.prune_now(model, 4, skip=["conv_1", "output"])))
    rng = np.random.default_rng(1)
    magnitudes = np.logspace(-9, 0, 40)[:, None, None, None]  # subnormal halves too
    x = (rng.normal(size=(40, 8, 8, 1)) * magnitudes).astype(np.float32)
    plan = plan_steps(net, storage, x)
    stored = {i: step.tout for i, step in enumerate(plan) if step.out_buffer is not None and not step.tout.bits}
    values, k = (_stored_values(x, stored[0]), 1) if plan[0].kind == "prep" else (x, 0)
    for step in plan[k:-1]:
        values = step.op.forward(values)
        if plan.index(step) in stored and step.kind != "flatten":
            values = _stored_values(values, stored[plan.index(step)])
    expected = plan[-1].op.forward(values)
    wide, narrow = (to_c(net, "m", str(tmp_path / s), activation_storage=s, representative_data=x)
                    for s in ("f32", storage))
    assert (wide.ram_bytes - 40) == {"f16": 2, "q8": 4}[storage] * (narrow.ram_bytes - 40)  # 40: the 10 float scores
    _, scores, _ = c_verify.run_host(c_verify.build_host(narrow, str(tmp_path / "host")), x, 10)
    np.testing.assert_array_equal(scores, expected)
    with pytest.raises(ValueError, match="'q8' needs representative_data"):
        plan_steps(net, "q8")
    with pytest.raises(ValueError, match="activation storage must be one of"):
        plan_steps(net, "bf16")
