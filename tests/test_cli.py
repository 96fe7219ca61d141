"""The `iprune` command line: train, report, and its error handling."""
import os

from iprune_tf import cli


def test_train_then_report(tmp_path, tiny_mnist_npz, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--data", tiny_mnist_npz, "--out", out, "--epochs-dense", "1", "--epochs-prune", "0",
            "--epochs-retrain", "1", "--inputs", "7", "--limit-train", "200", "--limit-test", "100"]
    assert cli.main(args) == 0
    assert cli.main(["report", out, "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Pruned binary" in printed and os.path.isfile(os.path.join(out, "report.md"))
    assert cli.main(args) == 2  # exists, neither --resume nor --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0


def test_export_writes_verified_files(tiny_run, capsys):
    assert cli.main(["export", tiny_run.dir, "--mode", "float", "--verify-samples", "50"]) == 0
    table = capsys.readouterr().out
    for name in ("pruned.h5", "pruned_float.tflite", "pruned_sparse.npz"):
        assert os.path.isfile(os.path.join(tiny_run.dir, "export", name))
        assert name in table
    assert "100.00%" in table and "tflm" in table
    assert cli.main(["export", tiny_run.dir, "--mode", "float"]) == 2  # existing exports need --overwrite
    assert "overwrite" in capsys.readouterr().err


def test_report_on_missing_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err
