"""The binary phases' learning rate: the cosine decay of the retraining phase (``--retrain-lr cosine``) and a
rate of their own (``--binary-lr``), recipe options."""
import math

import numpy as np
import pytest

from iprune_tf import cli
from iprune_tf._keras import keras
from iprune_tf.workflow import recipes


def test_cosine_rate_is_base_until_retraining_then_half_cosine_to_zero():
    schedule = recipes.CosineRetraining(3e-3, start=100, steps=200)
    assert [schedule.rate(s) for s in (0, 100, 200, 300, 400)] == [3e-3, 3e-3, pytest.approx(1.5e-3), 0.0, 0.0]
    assert schedule.rate(250) == pytest.approx(3e-3 * 0.5 * (1 + math.cos(0.75 * math.pi)))


def test_retraining_callbacks_span_the_retraining_steps():
    config = recipes.RunConfig(epochs_prune=3, epochs_retrain=2, batch_size=100, retrain_lr="cosine")
    (gradual,) = recipes.retraining_callbacks(config, n_train=1050)  # 11 steps per epoch
    assert (gradual.base, gradual.start, gradual.steps) == (3e-3, 33, 22)
    (oneshot,) = recipes.retraining_callbacks(recipes.RunConfig(**{**config.__dict__, "schedule": "oneshot"}), 1050)
    assert (oneshot.start, oneshot.steps) == (0, 55)
    assert recipes.retraining_callbacks(recipes.RunConfig(), 1050) == []


def test_callback_sets_the_optimizer_rate_from_its_step_count():
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    recipes.compile_model(model, learning_rate=3e-3)
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: seen.append(float(model.optimizer.learning_rate)))
    x, y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[recipes.CosineRetraining(3e-3, 1, 2), record])
    assert seen == pytest.approx([3e-3, 3e-3, 1.5e-3, 0.0])


def test_retrain_lr_option_is_checked_and_reaches_the_config():
    with pytest.raises(ValueError, match="retrain_lr"):
        recipes.RunConfig(retrain_lr="linear")
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--retrain-lr", "cosine"])
    assert cli._run_config(args).retrain_lr == "cosine"
    assert cli._run_config(cli.parser().parse_args(["train", "--out", "runs/x"])).retrain_lr == "constant"


def test_pipeline_with_cosine_retraining_shares_the_dense_phases_and_changes_the_pruned_net(tiny_run, tmp_path):
    import dataclasses

    from iprune_tf.workflow import pipeline

    config = dataclasses.replace(tiny_run.config, retrain_lr="cosine")
    cosine = pipeline.train(tmp_path / "cosine", config, verbose=0)
    assert cosine.config.retrain_lr == "cosine"
    for phase in ("dense_fp", "dense_binary"):  # seeded per phase: the option touches only the pruned phase
        assert all(np.array_equal(a, b) for a, b in zip(tiny_run.load_model(phase).get_weights(),
                                                         cosine.load_model(phase).get_weights()))
    pruned = zip(tiny_run.load_model("pruned").get_weights(), cosine.load_model("pruned").get_weights())
    assert not all(np.array_equal(a, b) for a, b in pruned)


def test_binary_lr_is_the_binary_phases_rate_and_leaves_the_full_precision_phase(tiny_run, tmp_path):
    import dataclasses

    from iprune_tf.workflow import pipeline

    with pytest.raises(ValueError, match="binary_lr must be > 0"):
        recipes.RunConfig(binary_lr=0.0)
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--binary-lr", "1e-3", "--retrain-lr", "cosine"])
    config = cli._run_config(args)
    assert [config.rate(p) for p in ("dense_fp", "dense_binary", "pruned")] == [3e-3, 1e-3, 1e-3]
    assert recipes.retraining_callbacks(config, n_train=1050)[0].base == 1e-3
    assert recipes.RunConfig().rate("pruned") == 3e-3
    slow = pipeline.train(tmp_path / "slow", dataclasses.replace(tiny_run.config, binary_lr=1e-4), verbose=0)
    same = lambda phase: all(np.array_equal(a, b) for a, b in zip(tiny_run.load_model(phase).get_weights(),
                                                                  slow.load_model(phase).get_weights()))
    assert same("dense_fp") and not same("dense_binary")


def test_bench_batchnorm_reestimation_sets_population_statistics_layer_by_layer():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "bench"))
    from accuracy_seeds import mean_std, reestimate_batchnorm

    model = keras.Sequential([keras.layers.Dense(6, input_shape=(4,)), keras.layers.BatchNormalization(),
                              keras.layers.Dense(3), keras.layers.BatchNormalization()])
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(250, 4)).astype(np.float32)
    reestimate_batchnorm(model, x, batch_size=64)
    first = model.layers[0](x).numpy().astype(np.float64)
    np.testing.assert_allclose(model.layers[1].moving_mean.numpy(), first.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.layers[1].moving_variance.numpy(), first.var(0), rtol=1e-4)
    second = model.layers[2](model.layers[1](first.astype(np.float32), training=False)).numpy().astype(np.float64)
    np.testing.assert_allclose(model.layers[3].moving_mean.numpy(), second.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.layers[3].moving_variance.numpy(), second.var(0), rtol=1e-4)
    assert mean_std([0.85, 0.86, 0.87]) == {"mean": 86.0, "std": 1.0, "n": 3, "values": [85.0, 86.0, 87.0]}
