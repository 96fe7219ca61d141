"""Resume at a realistic size: ``iprune train`` killed (SIGKILL) mid-pruning and resumed, against an
uninterrupted run of the same command.

MNIST preset (784-1024-1024-10), BinaryConnect, K=8, 10,000 Fashion-MNIST training images and all
10,000 test images, 1 + 3 + 1 epochs (5 for the full-precision baseline). Writes
``bench/results/resume_equality.json``: where the run was killed and resumed, whether the masks and
every saved weight are bitwise equal, and each phase's test accuracy in both runs.

    nice -n 15 .venv/bin/python bench/resume_equality.py
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import write_result
from iprune_tf.workflow.runs import Run

ARGS = ["train", "--data", "fashion_mnist", "--limit-train", "10000", "--inputs", "8", "--epochs-dense", "1",
        "--epochs-prune", "3", "--epochs-retrain", "1", "--frequency", "20"]
KILL_AFTER = 1  # pruning epochs checkpointed before the kill


def _cli(out, *extra):
    return [sys.executable, "-m", "iprune_tf.cli", *ARGS, "--out", out, *extra]


def _killed(out):
    """Start the run, SIGKILL it a few seconds into the pruning epoch after KILL_AFTER; return the kill time."""
    process = subprocess.Popen(_cli(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = os.path.join(out, "checkpoints", f"pruned-e{KILL_AFTER:04d}.npz")
    while not os.path.exists(marker):
        if process.poll() is not None:
            raise RuntimeError(f"the run ended before {marker} existed")
        time.sleep(0.05)
    time.sleep(5.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return sorted(os.listdir(os.path.join(out, "checkpoints")))


def _weights(run, name):
    return run.load_model(name).get_weights()


def main():
    root = tempfile.mkdtemp(prefix="resume_equality_")
    reference_dir, killed_dir = os.path.join(root, "uninterrupted"), os.path.join(root, "killed")
    start = time.time()
    subprocess.run(_cli(reference_dir), check=True, stdout=subprocess.DEVNULL)
    uninterrupted_s = time.time() - start
    checkpoints_at_kill = _killed(killed_dir)
    subprocess.run(_cli(killed_dir, "--resume"), check=True, stdout=subprocess.DEVNULL)
    reference, resumed = Run(reference_dir), Run(killed_dir)
    pruned_ref, pruned_res = reference.load_model("pruned"), resumed.load_model("pruned")
    masks_ref = [w.numpy() for w in pruned_ref.weights if "mask" in w.name]
    masks_res = [w.numpy() for w in pruned_res.weights if "mask" in w.name]
    differing = {name: int(sum(np.count_nonzero(a != b) for a, b in zip(_weights(reference, name), _weights(resumed, name))))
                 for name in ("dense_fp", "dense_binary", "pruned", "pruned_stripped")}
    stripped = resumed.load_model("pruned_stripped")
    kept = {name: sorted({int(c) for c in np.count_nonzero(stripped.get_layer(name).kernel.numpy(), axis=0)})
            for name in ("dense_1", "dense_2")}
    result = {
        "checkpoints_at_kill": checkpoints_at_kill,
        "segments": resumed.segments,
        "masks_equal": len(masks_ref) == len(masks_res) and all(np.array_equal(a, b) for a, b in zip(masks_ref, masks_res)),
        "differing_weights": differing,
        "kept_inputs_per_neuron": kept,
        "test_accuracy": {phase: {"uninterrupted": reference.phases[phase]["test_accuracy"],
                                  "resumed": resumed.phases[phase]["test_accuracy"]} for phase in reference.phases},
        "uninterrupted_wall_s": round(uninterrupted_s, 1),
    }
    print(json.dumps(result, indent=2))
    write_result("resume_equality", result, "nice -n 15 .venv/bin/python bench/resume_equality.py")


if __name__ == "__main__":
    main()
