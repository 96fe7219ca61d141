"""Readers for local data files, for offline machines, in the usual distribution formats.

IDX files (MNIST, Fashion-MNIST; Debian's ``dataset-fashion-mnist`` installs
them), Keras' ``.npz`` layout and the python-pickle ``cifar-10-batches-py``
directory. A missing, truncated or corrupt file raises :class:`DataError` naming
the file and what is wrong, instead of a bare numpy or zlib error.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zipfile
import zlib

import numpy as np

from iprune_tf.workflow.data.dataset import DataError, Dataset, _is_one_hot_shape, _make_dataset

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
"""File names (each optionally with ``.gz``) of an MNIST-format IDX directory."""

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_IDX_UBYTE = 0x08


# --------------------------------------------------------------------------- IDX


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one MNIST-format IDX file (plain, or gzip when the name ends in ``.gz``).

    The format is two zero bytes, a dtype code, the number of dimensions, each
    dimension as a big-endian uint32, then the row-major data. Only dtype code
    ``0x08`` (unsigned byte), the one MNIST and Fashion-MNIST use, is supported.
    Returns the raw ``uint8`` array with the stored shape.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: IDX file too short for a header ({len(raw)} bytes)")
    if raw[:2] != b"\x00\x00":
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex()} (must start with 0000)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _IDX_UBYTE:
        raise DataError(
            f"{path}: unsupported IDX dtype code 0x{dtype_code:02x}; only 0x08 (unsigned byte)"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header (needs {header_len} bytes, has {len(raw)})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected, found = int(np.prod(shape)), len(raw) - header_len
    if found != expected:
        problem = "truncated" if found < expected else "has trailing data"
        raise DataError(
            f"{path}: IDX payload {problem}: shape {shape} needs {expected} bytes, found {found}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def _read_bytes(path: str | os.PathLike) -> bytes:
    """Whole content of ``path``, gunzipped if it ends in ``.gz``; DataError on failure."""
    compressed = os.fspath(path).endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (OSError, EOFError, zlib.error) as err:
        what = "corrupt or truncated gzip file" if compressed else "cannot read file"
        raise DataError(f"{path}: {what}: {err}") from err


def load_idx_dir(directory: str | os.PathLike, name: str | None = None) -> Dataset:
    """Load an MNIST-like data set from a directory of the four IDX files.

    The directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or
    ``.gz`` (plain wins if both exist). ``name`` defaults to the directory's
    base name; the class count is inferred from the largest label.
    """
    paths = _find_idx_files(directory)
    arrays = {key: load_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        _check_idx_pair(paths[f"x_{split}"], arrays[f"x_{split}"],
                        paths[f"y_{split}"], arrays[f"y_{split}"])
    name = name or os.path.basename(os.path.normpath(directory))
    return _make_dataset(name, source=os.fspath(directory), **arrays)


def _check_idx_pair(images_path: str, images: np.ndarray,
                    labels_path: str, labels: np.ndarray) -> None:
    """DataError unless ``images`` is (N, H, W) and ``labels`` is (N,) for the same N."""
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected 3-D images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected 1-D labels, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but "
                        f"{labels_path} has {len(labels)} labels")


def _find_idx_files(directory: str | os.PathLike) -> dict[str, str]:
    """Map each split key to its existing IDX file in ``directory``; DataError if any is missing."""
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [os.path.join(directory, stem + ext) for ext in ("", ".gz")]
        existing = [path for path in candidates if os.path.isfile(path)]
        if existing:
            found[key] = existing[0]
        else:
            missing.append(stem)
    if missing:
        raise DataError(
            f"{directory}: missing IDX file(s) {', '.join(missing)} (each may end in .gz); "
            f"an IDX directory needs {', '.join(IDX_FILES.values())}"
        )
    return found


# --------------------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Load an ``.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    This is the layout of Keras' ``mnist.npz``. Integer images (normally uint8)
    must lie in ``[0, 255]`` and are divided by 255; float images must already be
    in ``[0, 1]``. Labels may be class indices (``(N,)`` or ``(N, 1)``) or one-hot
    ``(N, C)`` rows of 0/1, which are converted to indices with ``C`` classes.
    ``name`` defaults to the file name without extension.
    """
    arrays = _read_npz(path, NPZ_KEYS)
    one_hot_width = arrays["y_train"].shape[1] if _is_one_hot_shape(arrays["y_train"]) else None
    name = name or os.path.splitext(os.path.basename(path))[0]
    return _make_dataset(name, source=os.fspath(path), num_classes=one_hot_width, **arrays)


def _read_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` at ``path``; DataError if unreadable or any is missing."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:  # a broken zip is BadZipFile
        raise DataError(f"{path}: cannot read .npz file: {err}") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive (a single .npy array?)")
    with npz:
        files = npz.files
        try:
            arrays = {key: npz[key] for key in keys if key in files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{path}: corrupt .npz member: {err}") from err
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} "
                        f"(has {', '.join(files) or 'none'})")
    return arrays


# --------------------------------------------------------------------------- CIFAR-10


def load_cifar10_batches(directory: str | os.PathLike) -> Dataset:
    """Load the python-pickle ``cifar-10-batches-py`` directory as channels-last images.

    Reads ``data_batch_1`` .. ``data_batch_5`` (train) and ``test_batch``. Each is
    a pickled dict with ``b'data'``, ``(N, 3072)`` uint8 rows holding the red,
    green and blue 32x32 planes in turn, and ``b'labels'``. Unpickling executes
    code from the file, so only use trusted copies (as with Keras' own loader).
    """
    paths = [os.path.join(directory, batch)
             for batch in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,)]
    missing = [os.path.basename(path) for path in paths if not os.path.isfile(path)]
    if missing:
        raise DataError(f"{directory}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
    batches = [_read_cifar_batch(path) for path in paths]
    x_train = np.concatenate([x for x, _ in batches[:-1]])
    y_train = np.concatenate([y for _, y in batches[:-1]])
    x_test, y_test = batches[-1]
    return _make_dataset("cifar10", x_train, y_train, x_test, y_test,
                         source=os.fspath(directory), num_classes=10)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as ``(uint8 images (N, 32, 32, 3), labels (N,))``."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # unpickling corrupt data can raise almost anything
        raise DataError(f"{path}: cannot unpickle CIFAR-10 batch: {err!r}") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 batch (need a dict with b'data' and b'labels')")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
