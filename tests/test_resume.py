"""Epoch-level resume: a run killed with SIGKILL mid-phase continues from its last finished epoch
and ends exactly where an uninterrupted run ends; half-written files never break a run."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from iprune_tf import cli, data, pipeline, recipes
from iprune_tf.runs import Run

needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(data.DEBIAN_FASHION_MNIST),
    reason="needs the Debian package dataset-fashion-mnist (real Fashion-MNIST in /usr/share/datasets)")

# A few thousand real images and 64-unit hidden layers: about one second per epoch.
ARGS = ["--data", "fashion_mnist", "--limit-train", "2000", "--limit-test", "1000", "--hidden-units", "64,64",
        "--inputs", "8", "--epochs-dense", "1", "--epochs-prune", "4", "--epochs-retrain", "1", "--frequency", "5"]
CONFIG = recipes.RunConfig(data="fashion_mnist", limit_train=2000, limit_test=1000, hidden_units=(64, 64),
                           inputs_per_neuron=8, epochs_dense=1, epochs_prune=4, epochs_retrain=1, frequency=5)


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


@needs_fashion_mnist
def test_sigkill_mid_pruning_then_resume_ends_like_an_uninterrupted_run(tmp_path, capsys):
    killed_dir = str(tmp_path / "killed")
    _train_until_killed(killed_dir, "pruned", after_epoch=1)
    state = json.load(open(os.path.join(killed_dir, "run.json")))
    assert set(state["phases"]) == {"dense_fp", "dense_binary"}  # killed inside the pruning phase
    last = _checkpoint_epochs(killed_dir, "pruned")[-1]
    assert 1 <= last < 4, last  # still pruning: not at the phase start nor its end

    assert cli.main(["train", *ARGS, "--out", killed_dir, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"pruned: resumed after epoch {last} of 5" in out
    assert "== dense_fp ==" not in out and f"Epoch {last + 1}/5" in out and f"Epoch {last}/5" not in out
    resumed = Run(killed_dir)
    first, second = resumed.segments
    assert first["to"] == {"phase": "pruned", "epoch": last} and first["finished"] is None
    assert second["from"] == {"phase": "pruned", "epoch": last} and second["finished"] is not None
    assert second["to"] == {"phase": "pruned", "epoch": 5}
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
