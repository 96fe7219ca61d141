"""Epoch-level resume: a run killed with SIGKILL mid-phase continues from its last finished epoch
and ends exactly where an uninterrupted run ends; half-written files never break a run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from iprune_tf import cli
from iprune_tf.workflow import data
from iprune_tf.workflow import pipeline
from iprune_tf.workflow import recipes
from iprune_tf.workflow.runs import Run

needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(data.DEBIAN_FASHION_MNIST),
    reason="needs the Debian package dataset-fashion-mnist (real Fashion-MNIST in /usr/share/datasets)")

# A few thousand real images and 64-unit hidden layers: about one second per epoch.
ARGS = ["--data", "fashion_mnist", "--limit-train", "2000", "--limit-test", "500", "--hidden-units", "64,64",
        "--inputs", "8", "--epochs-dense", "1", "--epochs-prune", "3", "--epochs-retrain", "1", "--frequency", "5"]
CONFIG = recipes.RunConfig(data="fashion_mnist", limit_train=2000, limit_test=500, hidden_units=(64, 64),
                           inputs_per_neuron=8, epochs_dense=1, epochs_prune=3, epochs_retrain=1, frequency=5)


def _checkpoint_epochs(run_dir, phase):
    names = os.listdir(os.path.join(run_dir, "checkpoints")) if os.path.isdir(os.path.join(run_dir, "checkpoints")) else []
    return sorted(int(n[len(phase) + 2:-4]) for n in names if n.startswith(phase + "-e") and n.endswith(".npz"))


def _train_until_killed(run_dir, phase, after_epoch, timeout=240):
    """Start ``iprune train`` and SIGKILL it once ``phase`` has checkpointed ``after_epoch`` epochs (mid-epoch)."""
    process = subprocess.Popen([sys.executable, "-m", "iprune_tf.cli", "train", *ARGS, "--out", run_dir],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    try:
        while after_epoch not in _checkpoint_epochs(run_dir, phase):
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.time() < deadline, "the run never reached the kill point"
            time.sleep(0.02)
        time.sleep(0.3)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.stdout.read()


def _masks(run):
    model = run.load_model("pruned")
    return [w.numpy() for w in model.weights if "mask" in w.name]


@pytest.mark.slow
@needs_fashion_mnist
def test_sigkill_mid_pruning_then_resume_ends_like_an_uninterrupted_run(tmp_path, capsys):
    killed_dir = str(tmp_path / "killed")
    log = _train_until_killed(killed_dir, "pruned", after_epoch=1)
    assert "\r" not in log and "Epoch 2/5" in log  # stdout is a pipe: one line per epoch, no progress frames
    assert re.search(r"^20/20 - \d+m?s - loss: [\d.]+ - categorical_accuracy: ", log, re.M), log[-2000:]
    state = json.load(open(os.path.join(killed_dir, "run.json")))
    assert set(state["phases"]) == {"dense_fp", "dense_binary"}  # killed inside the pruning phase
    last = _checkpoint_epochs(killed_dir, "pruned")[-1]
    assert 1 <= last < 3, last  # still pruning: not at the phase start nor its end

    assert cli.main(["train", *ARGS, "--out", killed_dir, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"pruned: resumed after epoch {last} of 4" in out
    assert "== dense_fp ==" not in out and f"Epoch {last + 1}/4" in out and f"Epoch {last}/4" not in out
    resumed = Run(killed_dir)
    first, second = resumed.segments
    assert first["to"] == {"phase": "pruned", "epoch": last} and first["finished"] is None
    assert second["from"] == {"phase": "pruned", "epoch": last} and second["finished"] is not None
    assert second["to"] == {"phase": "pruned", "epoch": 4}
    assert os.listdir(os.path.join(killed_dir, "checkpoints")) == []  # deleted once the phase is saved

    uninterrupted = pipeline.train(tmp_path / "uninterrupted", CONFIG, verbose=0)
    assert len(uninterrupted.segments) == 1
    masks, reference = _masks(resumed), _masks(uninterrupted)
    assert len(masks) == 2 and all(np.array_equal(m, r) for m, r in zip(masks, reference))
    assert resumed.phases["pruned"]["mask_sha256"] == uninterrupted.phases["pruned"]["mask_sha256"]
    for phase in ("dense_fp", "dense_binary", "pruned"):
        assert resumed.phases[phase]["test_accuracy"] == uninterrupted.phases[phase]["test_accuracy"], phase
    weights = resumed.load_model("pruned_stripped").get_weights()
    for w, r in zip(weights, uninterrupted.load_model("pruned_stripped").get_weights()):
        np.testing.assert_array_equal(w, r)


def _compiled_mlp():
    model = recipes.build_model(recipes.RunConfig(hidden_units=(6,)), "binaryconnect_det", (4, 4), 3)
    return recipes.compile_model(model, weight_decay=5e-2)


def _trained_checkpoints(run, epochs):
    """A small model trained ``epochs`` single epochs, checkpointed after each; returns its weights per epoch."""
    model, rng, weights = _compiled_mlp(), np.random.default_rng(0), {}
    x, y = rng.random((20, 4, 4), dtype=np.float32), np.sign(rng.normal(size=(20, 3))).astype(np.float32)
    run.begin_segment(None)
    for epoch in range(1, epochs + 1):
        model.fit(x, y, batch_size=10, verbose=0)
        run.save_checkpoint("dense_fp", epoch, model, {"note": epoch})
        weights[epoch] = (model.get_weights(), [v.numpy() for v in model.optimizer.variables])
    return weights


def test_checkpoint_restores_weights_and_optimizer_state_and_keeps_the_last_two(tmp_path):
    run = Run.create(tmp_path / "run", recipes.RunConfig())
    saved = _trained_checkpoints(run, 3)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["dense_fp-e0002.npz", "dense_fp-e0003.npz"]
    checkpoint = run.load_checkpoint("dense_fp")
    assert (checkpoint.epoch, checkpoint.meta["note"]) == (3, 3)
    fresh = _compiled_mlp()
    checkpoint.restore(fresh)
    weights, optimizer = saved[3]
    assert int(fresh.optimizer.iterations.numpy()) == 6  # 3 epochs of 2 steps
    for restored, expected in zip([*fresh.get_weights(), *[v.numpy() for v in fresh.optimizer.variables]],
                                  [*weights, *optimizer]):
        np.testing.assert_array_equal(restored, expected)
    assert run.segments[-1]["to"] == {"phase": "dense_fp", "epoch": 3}


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    run = Run.create(tmp_path / "run", recipes.RunConfig())
    _trained_checkpoints(run, 2)
    newest = tmp_path / "run" / "checkpoints" / "dense_fp-e0002.npz"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    assert run.load_checkpoint("dense_fp").epoch == 1
    assert f"checkpoint {newest} is unreadable" in capsys.readouterr().out


def test_resume_deletes_half_written_files_and_keeps_finished_ones(tmp_path, capsys):
    config = recipes.RunConfig()
    run = Run.create(tmp_path / "run", config)
    _trained_checkpoints(run, 1)
    partial = [tmp_path / "run" / "checkpoints" / "dense_fp-e0002.npz.tmp", tmp_path / "run" / "run.json.tmp",
               tmp_path / "run" / "models" / "dense_fp.h5.tmp"]
    for path in partial:
        path.write_bytes(b"half")
    resumed = Run.create(tmp_path / "run", config, resume=True)
    assert not any(path.exists() for path in partial)
    assert resumed.load_checkpoint("dense_fp").epoch == 1 and len(resumed.segments) == 1
    assert capsys.readouterr().out.count("half written when the previous run was killed") == 3


def test_half_made_or_unreadable_run_directory_is_refused_with_the_way_out(tmp_path):
    half = tmp_path / "half"
    (half / "models").mkdir(parents=True)
    (half / "run.json.tmp").write_text("{")
    with pytest.raises(FileExistsError, match="half-made run.*--overwrite"):
        Run.create(half, recipes.RunConfig(), resume=True)
    assert Run.create(half, recipes.RunConfig(), overwrite=True).phases == {}
    (half / "run.json").write_text('{"config": ')  # damaged after the fact (not by iprune_tf: it writes atomically)
    with pytest.raises(ValueError, match="run.json is unreadable.*--overwrite"):
        Run.create(half, recipes.RunConfig(), resume=True)
