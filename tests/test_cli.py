"""The `iprune` command line: train, report, and its error handling."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from iprune_tf import _keras, cli


def test_train_then_report(tmp_path, tiny_mnist_npz, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--data", tiny_mnist_npz, "--out", out, "--epochs-dense", "1", "--epochs-prune", "0",
            "--epochs-retrain", "1", "--inputs", "7", "--limit-train", "200", "--limit-test", "100"]
    assert cli.main(args) == 0
    trained = capsys.readouterr().out  # stdout is not a terminal here: one line per epoch, no progress frames
    assert "\r" not in trained and "Epoch 2/2" in trained and "pruned: resumed" not in trained
    assert cli.main(["report", out, "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Pruned binary" in printed and os.path.isfile(os.path.join(out, "report.md"))
    assert cli.main(args) == 2  # exists, neither --resume nor --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0


def test_export_writes_verified_files(tiny_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")  # its own copy: other tests export into the shared run with --overwrite
    shutil.copytree(tiny_run.dir, run_dir, ignore=shutil.ignore_patterns("export"))
    assert cli.main(["export", run_dir, "--mode", "float", "--verify-samples", "50"]) == 0
    table = capsys.readouterr().out
    for name in ("pruned.h5", "pruned_float.tflite", "pruned_sparse.npz"):
        assert os.path.isfile(os.path.join(run_dir, "export", name))
        assert name in table
    assert "100.00%" in table and "tflm" in table
    assert cli.main(["export", run_dir, "--mode", "float"]) == 2  # existing exports need --overwrite
    assert "overwrite" in capsys.readouterr().err


def test_export_fpga_with_a_missing_yosys_fails_naming_it_and_writes_nothing(tiny_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run.dir, run_dir, ignore=shutil.ignore_patterns("export"))
    assert cli.main(["export", run_dir, "--mode", "fpga", "--yosys", "no-such-yosys"]) == 2
    assert "'no-such-yosys' is not installed" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(run_dir, "export"))


def test_report_on_missing_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err


def _fails_fast(tmp_path, capsys, extra, message, data):
    """``iprune train`` with ``extra`` exits 2 within seconds, naming the problem, with no epoch and no run dir."""
    out = tmp_path / "run"
    start = time.time()
    code = cli.main(["train", "--data", data, "--out", str(out), *extra])
    elapsed = time.time() - start
    printed = capsys.readouterr()
    assert code == 2 and message in printed.err, printed.err
    assert "Epoch" not in printed.out and "== dense_fp ==" not in printed.out
    assert elapsed < 20, elapsed
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--inputs", "0"], "inputs_per_neuron must be >= 1, got 0"),
    (["--skip", "output,dense_9"], "Skip list names layer 'dense_9', which is not in the model"),
    (["--preset", "imagenet"], "Unknown preset 'imagenet'"),
    (["--hidden-units", "64,0"], "hidden_units must be positive ints"),
    (["--strategy", "multiworker"], "TF_CONFIG"),
])
def test_bad_configuration_fails_before_training_and_leaves_no_run_dir(tmp_path, tiny_mnist_npz, capsys, monkeypatch,
                                                                      extra, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _fails_fast(tmp_path, capsys, extra, message, tiny_mnist_npz)


def test_corrupt_or_missing_data_fails_before_training_and_leaves_no_run_dir(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    _fails_fast(tmp_path, capsys, [], f"{corrupt}: cannot read .npz file", str(corrupt))
    _fails_fast(tmp_path, capsys, [], "neither a known data set", str(tmp_path / "missing.npz"))


def test_unwritable_output_fails_before_training(tmp_path, tiny_mnist_npz, capsys):
    (tmp_path / "file").write_text("mine")
    assert cli.main(["train", "--data", tiny_mnist_npz, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


def test_tensorflow_start_up_lines_only_with_verbose(tmp_path, capsys):
    """Without --verbose stderr holds just the error; --verbose replays what TensorFlow logged at import."""
    result = subprocess.run([sys.executable, "-m", "iprune_tf.cli", "train", "--inputs", "0", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == "iprune train: error: inputs_per_neuron must be >= 1, got 0.\n"
    assert cli.main(["train", "--verbose", "--inputs", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "".join(_keras.STARTUP_LOG) + "iprune train: error: inputs_per_neuron must be >= 1, got 0.\n"
    if not _keras.tf.config.list_physical_devices("GPU"):
        assert any("cuda" in line.lower() for line in _keras.STARTUP_LOG)  # this CPU-only TF says so at import
