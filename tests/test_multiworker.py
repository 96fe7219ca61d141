"""``iprune train --strategy multiworker``: two MultiWorkerMirroredStrategy workers on 127.0.0.1.

Each worker is its own process (as on separate machines), given the cluster through TF_CONFIG.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import kept_per_neuron
from iprune_tf.workflow.pipeline import mask_digest
from iprune_tf.workflow.runs import Run

TIMEOUT_S = 300


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _digest(output):
    lines = [line for line in output.splitlines() if line.startswith("pruned: masks sha256 ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0].split()[-1]


@pytest.mark.slow
def test_two_workers_prune_identically_and_only_the_chief_writes(tmp_path, tiny_mnist_npz):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    args = ["train", "--strategy", "multiworker", "--data", tiny_mnist_npz, "--limit-test", "100",
            "--hidden-units", "32,32", "--inputs", "8", "--epochs-dense", "0", "--epochs-prune", "1",
            "--epochs-retrain", "0", "--frequency", "1"]
    processes = []
    try:
        for index in range(2):
            scratch = tmp_path / f"tmp{index}"
            scratch.mkdir()
            env = dict(os.environ, TMPDIR=str(scratch),
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            command = [sys.executable, "-m", "iprune_tf.cli", *args, "--out", str(tmp_path / f"out{index}")]
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True))
        outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [process.returncode for process in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert _digest(outputs[0]) == _digest(outputs[1])  # both workers' masks are equal
    assert not (tmp_path / "out1").exists() and os.listdir(tmp_path / "tmp1") == []  # worker 1 wrote nothing

    run = Run(tmp_path / "out0")  # worker 0 is the chief
    segment, = run.segments
    assert (segment["strategy"], segment["workers"], segment["replicas"]) == ("MultiWorkerMirroredStrategy", 2, 2)
    pruned = run.load_model("pruned")
    assert mask_digest(pruned) == _digest(outputs[0])
    steps = {int(layer.pruning_step.numpy()) for layer in pruned.layers if hasattr(layer, "pruning_step")}
    assert steps == {3}  # 300 samples / global batch 100: one mask schedule step per global batch
    stripped = run.load_model("pruned_stripped")
    for name in ("dense_1", "dense_2"):
        assert set(kept_per_neuron(stripped.get_layer(name).kernel.numpy())) == {8}, name
    output_kernel = stripped.get_layer("output").kernel.numpy()
    assert np.count_nonzero(output_kernel) == output_kernel.size  # the paper's skip list: the output layer stays dense
