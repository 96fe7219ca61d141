"""Warm-starting the dense binary net from the trained full-precision net (``--binary-init fp``), a recipe option."""
import dataclasses

import numpy as np
import pytest

from iprune_tf import cli
from iprune_tf.workflow import binary_init, models, pipeline, recipes
from iprune_tf.workflow.runs import Run


def test_binary_init_is_checked_reaches_the_config_and_survives_run_json(tmp_path):
    with pytest.raises(ValueError, match="binary_init must be one of"):
        recipes.RunConfig(binary_init="pretrained")
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--binary-init", "fp"])
    assert cli._run_config(args).binary_init == "fp"
    assert cli._run_config(cli.parser().parse_args(["train", "--out", "runs/x"])).binary_init == "random"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["train", "--out", "runs/x", "--binary-init", "pretrained"])
    with pytest.raises(ValueError, match="epochs_fp must be >= 1"):
        recipes.RunConfig(epochs_fp=0)
    assert recipes.RunConfig(epochs_dense=2, epochs_prune=8, epochs_retrain=8, epochs_fp=9).fp_epochs == 9
    assert recipes.RunConfig(epochs_dense=1, epochs_prune=4, epochs_retrain=4).fp_epochs == 9  # the same budget
    config = recipes.RunConfig(binary_init="fp")
    Run.create(tmp_path / "run", config)
    assert Run(tmp_path / "run").config == config


def test_warm_start_names_the_layer_it_cannot_fill():
    binary = models.mnist_mlp("binaryconnect_det", hidden_units=(16, 16))
    with pytest.raises(ValueError, match=r"layer 'dense_2' \(weight shapes \[\(16, 16\)\]\).*shapes \[\(16, 8\)\]"):
        binary_init.warm_start(binary, models.mnist_mlp("full_precision", hidden_units=(16, 8)))


def test_dense_binary_phase_starts_from_the_full_precision_weights(tiny_run, tmp_path):
    config = dataclasses.replace(tiny_run.config, binary_init="fp", epochs_dense=0, epochs_prune=1, epochs_retrain=2)
    run = pipeline.train(tmp_path / "warm", config, verbose=0)
    fp, binary = run.load_model("dense_fp"), run.load_model("dense_binary")  # 0 binary epochs: the initial net
    assert [w.name for w in binary.weights] == [w.name for w in fp.weights]
    assert all(np.array_equal(a, b) for a, b in zip(fp.get_weights(), binary.get_weights()))
    assert np.array_equal(run.load_snapshot("before_pruning")["dense_1"], fp.get_layer("dense_1").kernel.numpy())
    same_budget = tiny_run.load_model("dense_fp").get_weights()  # the option leaves the FP phase as it was
    assert all(np.array_equal(a, b) for a, b in zip(same_budget, fp.get_weights()))


def test_bench_fork_copies_the_full_precision_phase_only_under_the_same_fp_config(tiny_run, tmp_path):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "bench"))
    from conv_fork import fork

    argv = ["train", "--data", tiny_run.config.data, "--epochs-prune", "1", "--epochs-retrain", "1", "--frequency", "1",
            "--binary-init", "fp"]
    with pytest.raises(ValueError, match=r"another config \(fp_epochs: 3 -> 12\)"):
        fork(tiny_run.dir, [*argv, "--out", str(tmp_path / "longer")])
    longer = fork(tiny_run.dir, [*argv, "--epochs-fp", "3", "--out", str(tmp_path / "longer")])  # FP fixed, 12 binary
    assert (longer.config.fp_epochs, longer.config.total_epochs) == (3, 12) and longer.done("dense_fp")
    run = fork(tiny_run.dir, [*argv, "--epochs-dense", "1", "--out", str(tmp_path / "fork")])
    assert run.config == dataclasses.replace(tiny_run.config, binary_init="fp")
    assert Run(run.dir).phases == {"dense_fp": {**tiny_run.phases["dense_fp"], "copied_from": tiny_run.dir}}
    assert open(run.model_path("dense_fp"), "rb").read() == open(tiny_run.model_path("dense_fp"), "rb").read()
    assert run.done("dense_fp") and not run.done("dense_binary")
