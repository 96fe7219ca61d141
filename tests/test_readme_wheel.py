"""The README's first quick start runs end to end from the built wheel, in a fresh virtual environment.

The wheel is built from a copy of the sources (``pip wheel --no-deps``; metadata from pyproject.toml) and installed without its
dependencies into a new venv that reuses this environment's packages (a ``.pth`` file; nothing is
downloaded). Then the README's first two Python blocks (prune your own model, export it to C) run
there verbatim, and so does ``iprune --help``.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING_FILES = ("setup.py", "pyproject.toml", "setup.cfg", "MANIFEST.in", "README.md")


def readme_python_blocks():
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def _start(cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{process.args} failed:\n{out[-3000:]}\n{err[-6000:]}"
    return out


def _run(cmd, cwd):
    return _finish(_start(cmd, cwd))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv holding the built wheel of iprune_tf, and this environment's packages on its path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "project"  # not "src": setuptools would take it for a src-layout directory
    shutil.copytree(ROOT / "iprune_tf", src / "iprune_tf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGING_FILES:
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("iprune_tf-*.whl")
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir], tmp)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (site / "test_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp)
    return env_dir


@pytest.fixture(scope="module")
def iprune_help(venv):
    """``iprune --help`` of the installed console script, started at once to overlap with the quick start."""
    process = _start([venv / "bin" / "iprune", "--help"], venv)
    yield process
    if process.poll() is None:
        process.kill()


def test_readme_quick_start_runs_from_the_wheel(venv, iprune_help, tmp_path):
    prune, to_c = readme_python_blocks()[:2]
    assert "prune_fan_in" in prune and ".fit(" in prune
    assert "export.to_c(" in to_c
    check = "\nimport iprune_tf as _package\nprint('package file:', _package.__file__)\n"
    (tmp_path / "quick_start.py").write_text(prune + to_c + check)
    out = _run([venv / "bin" / "python", "quick_start.py"], tmp_path)

    assert f"package file: {venv}" in out, out  # the wheel's copy, not the source tree
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.5, out  # 10 classes: well above chance after 3 epochs on 2,000 real images
    data_bytes = int(re.search(r"(\d+) bytes of model data", out).group(1))
    header = (tmp_path / "build" / "c" / "fmnist_net.h").read_text()
    assert f"#define FMNIST_NET_DATA_BYTES {data_bytes}" in header
    if shutil.which("gcc"):
        _run(["gcc", "-std=c99", "-Wall", "-Werror", "-c", "fmnist_net.c", "-o", "fmnist_net.o"], tmp_path / "build" / "c")


def test_iprune_command_from_the_wheel(iprune_help):
    out = _finish(iprune_help)
    assert all(command in out for command in ("train", "report", "export")), out
