"""`iprune train/report/export` on a convolutional run; the report's file bits are what the .npz stores."""
import dataclasses
import functools
import json
import os

import numpy as np
import pytest

from conftest import write_npz_dataset
from iprune_tf import cli
from iprune_tf.workflow import models
from iprune_tf.export import load_sparse

pytestmark = pytest.mark.slow  # trains a CIFAR-10-preset run


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """A CIFAR-10-preset run with narrow convolutions (the preset's layers, skip list and ZCA), 2 steps per phase."""
    tmp = tmp_path_factory.mktemp("conv_run")
    data = write_npz_dataset(tmp / "cifar.npz", (32, 32, 3), 64, 40)
    narrow = dataclasses.replace(models.PRESETS["cifar10"], build=functools.partial(
        models.cifar10_vgg_small, conv_filters=(8, 8, "M", 16, 16, "M", 16, 16, "M")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models.PRESETS, "cifar10", narrow)
        out = str(tmp / "run")
        assert cli.main(["train", "--preset", "cifar10", "--data", data, "--out", out, "--inputs", "8",
                         "--hidden-units", "32,32", "--epochs-dense", "1", "--epochs-prune", "1",
                         "--epochs-retrain", "1", "--frequency", "1", "--batch-size", "32"]) == 0
    return out


def test_export_of_a_convolutional_run(conv_run, capsys):
    assert cli.main(["report", conv_run, "--no-plots"]) == 0
    assert cli.main(["export", conv_run, "--mode", "float", "--verify-samples", "40"]) == 0
    table = capsys.readouterr().out
    for name in ("pruned.h5", "pruned_float.tflite", "pruned_sparse.npz"):
        assert name in table and os.path.isfile(os.path.join(conv_run, "export", name))
    net = load_sparse(os.path.join(conv_run, "export", "pruned_sparse.npz"))
    assert [layer.op for layer in net.layers] == ["conv2d"] * 6 + ["dense"] * 3
    assert [layer.kind for layer in net.layers] == ["binary", "binary"] + ["sparse"] * 6 + ["binary"]


def test_report_file_bits_are_what_the_npz_stores(conv_run):
    if not os.path.isfile(os.path.join(conv_run, "export", "pruned_sparse.npz")):
        assert cli.main(["export", conv_run, "--mode", "float", "--verify-samples", "10"]) == 0
    with open(os.path.join(conv_run, "report.json")) as f:
        (row,) = [r for r in json.load(f)["table"] if r["phase"] == "pruned_stripped"]
    reported_bits = round(row["memory_kib_file"] * 8 * 1024)
    with np.load(os.path.join(conv_run, "export", "pruned_sparse.npz")) as data:
        arrays = {key: data[key] for key in data.files if key != "header"}
    stored_bytes = sum(array.nbytes for array in arrays.values())
    # Packed index and sign arrays round up to whole bytes: at most 7 bits of padding per array.
    assert reported_bits <= 8 * stored_bytes < reported_bits + 8 * len(arrays)
