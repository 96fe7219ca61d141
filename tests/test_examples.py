"""The scripts in examples/ run end to end at their --tiny size, and what they print is checked."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from iprune_tf.workflow.data import DEBIAN_FASHION_MNIST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _need(*tools):
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                    "qemu-system-arm iverilog)")


@pytest.fixture(scope="module")
def data(tiny_mnist_npz):
    """Real Fashion-MNIST when Debian's package is installed, else the random tiny set."""
    return DEBIAN_FASHION_MNIST if os.path.isdir(DEBIAN_FASHION_MNIST) else tiny_mnist_npz


def run_example(script, out, data):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--tiny", "--data", data,
                             "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_keras_cnn_to_cortex_m(tmp_path, data):
    _need("gcc", "arm-none-eabi-gcc", "qemu-system-arm")
    printed = run_example("keras_cnn_to_cortex_m.py", tmp_path, data)
    rows = {line.split()[0] + " " + line.split()[4]: line.split() for line in printed.splitlines()
            if line.startswith("c ") and "fmnist_cnn.c" in line}
    assert set(rows) == {"c gcc", "c qemu-m3"}, printed
    for row in rows.values():
        assert row[5] == "100.00%", printed  # every class of the 20 test images, host and Cortex-M3
    assert "conv_2" in printed and sorted(p.name for p in tmp_path.iterdir()) == ["fmnist_cnn.c", "fmnist_cnn.h"]


def test_lut_net_to_verilog(tmp_path, data):
    _need("iverilog", "vvp")
    printed = run_example("lut_net_to_verilog.py", tmp_path, data)
    assert "Icarus Verilog: 50/50 classes agree with Keras, hidden bits differing: [0, 0]" in printed, printed
    assert {"net.v", "tb.v", "design.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "module lut_net" in (tmp_path / "net.v").read_text()


def test_binaryconnect_mlp_in_tflite_micro(tmp_path, data):
    printed = run_example("prune_binaryconnect_mlp.py", tmp_path, data)
    assert re.search(r"^tflm: 100\.00% of 50 classes agree with Keras, .*tensor arena \d+ bytes$", printed, re.M), printed
    sparse, dense = (int(n) for n in re.search(r"sparse TFLite: (\d+) bytes .* dense float TFLite: (\d+) bytes",
                                               printed).groups())
    assert sparse < dense / 2
    assert (tmp_path / "fmnist_mlp_sparse.tflite").stat().st_size == sparse
    assert f"const unsigned int fmnist_mlp_sparse_len = {sparse};" in (tmp_path / "fmnist_mlp_sparse.cc").read_text()
