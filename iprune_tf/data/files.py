"""Data sets for the MNIST-family and CIFAR-10 experiments, and their preprocessing.

Every loader returns a :class:`Dataset` of numpy arrays in one convention, so the
training code never has to know where the data came from:

* images are ``float32`` in ``[0, 1]``; MNIST-like images stay 2-D ``(N, 28, 28)``
  (the models flatten them), CIFAR-10 images are channels-last ``(N, 32, 32, 3)``;
* labels are ``int64`` class indices of shape ``(N,)``.

The data can come from Keras' downloader (needs internet) or, for offline
machines, from local files in the usual distribution formats: IDX files (MNIST,
Fashion-MNIST; Debian's ``dataset-fashion-mnist`` installs them), Keras'
``.npz`` layout, and the python-pickle ``cifar-10-batches-py`` directory.
:func:`load_dataset` picks the right loader from a name or a path.

Any problem with the data (missing file, bad header, truncated or corrupt
file, inconsistent shapes) raises :class:`DataError`, whose message names the
file and what is wrong, instead of a bare numpy or zlib error.

The loaders are pure numpy; TensorFlow is only imported to download a data set
by name. :class:`ZCAWhitening` is the CIFAR-10 input preprocessing and
:func:`to_hinge_targets` makes the ``±1`` targets of the square hinge loss.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import zipfile
import zlib

import numpy as np

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
"""Names :func:`load_dataset` downloads through ``keras.datasets``; all have 10 classes."""

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where ``apt-get install dataset-fashion-mnist`` puts the Fashion-MNIST IDX files."""

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


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent; the message names the file."""


@dataclasses.dataclass(eq=False)
class Dataset:
    """Train and test split of one data set, in the conventions of this module.

    ``x_*`` are float32 images in ``[0, 1]`` (``(N, H, W)`` or ``(N, H, W, C)``),
    ``y_*`` int64 class indices in ``[0, num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int

    def limit(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """Return a copy keeping only the first ``n_train``/``n_test`` samples (None: all).

        Meant for quick runs and smoke tests; the class count is unchanged.
        """
        for n in (n_train, n_test):
            if n is not None and n < 0:
                raise ValueError(f"sample limits must be non-negative, got {n}")
        return dataclasses.replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )


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
    except (OSError, EOFError, ValueError) as err:
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


# --------------------------------------------------------------------------- by name or path


def load_dataset(
    name_or_path: str | os.PathLike,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Load a data set by name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``) or path.

    Names are downloaded by ``keras.datasets`` (cached in ``~/.keras/datasets``),
    except ``"fashion_mnist"``, which is read offline from
    :data:`DEBIAN_FASHION_MNIST` when that directory exists. A path may be a
    directory of IDX files, a ``cifar-10-batches-py`` directory (recognised by
    its ``data_batch_1``) or an ``.npz`` file. ``limit_train``/``limit_test``
    keep only the first N samples of each split, for quick runs.
    """
    return _load_full(os.fspath(name_or_path)).limit(limit_train, limit_test)


def _load_full(name_or_path: str) -> Dataset:
    """Dispatch :func:`load_dataset` to the loader for a name or a path."""
    if name_or_path == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST):
        return load_idx_dir(DEBIAN_FASHION_MNIST, name="fashion_mnist")
    if name_or_path in KERAS_DATASETS:
        return _download(name_or_path)
    if os.path.isdir(name_or_path):
        if os.path.isfile(os.path.join(name_or_path, CIFAR10_TRAIN_BATCHES[0])):
            return load_cifar10_batches(name_or_path)
        return load_idx_dir(name_or_path)
    if os.path.isfile(name_or_path) and name_or_path.endswith(".npz"):
        return load_npz(name_or_path)
    raise DataError(
        f"{name_or_path!r} is neither a known data set ({', '.join(KERAS_DATASETS)}) nor an "
        "IDX directory, a cifar-10-batches-py directory or an .npz file"
    )


def _download(name: str) -> Dataset:
    """Load ``keras.datasets.<name>``, turning a download failure into a DataError."""
    try:
        (x_train, y_train), (x_test, y_test) = _keras_loader(name)()
    except Exception as err:  # keras raises a bare Exception when the URL fetch fails
        hint = "pass a local path instead (IDX directory, cifar-10-batches-py directory or .npz)"
        if name == "fashion_mnist":
            hint += (f", or run `apt-get install dataset-fashion-mnist` to get "
                     f"{DEBIAN_FASHION_MNIST}, which is used automatically")
        raise DataError(f"could not load {name!r} through keras.datasets ({err}); {hint}") from err
    return _make_dataset(name, x_train, y_train, x_test, y_test,
                         source=f"keras.datasets.{name}", num_classes=10)


def _keras_loader(name: str):
    """The ``load_data`` function of ``keras.datasets.<name>`` (imports TensorFlow)."""
    from iprune_tf._keras import keras

    return getattr(keras.datasets, name).load_data


# --------------------------------------------------------------------------- conversion


def _make_dataset(name, x_train, y_train, x_test, y_test, source, num_classes=None) -> Dataset:
    """Convert raw arrays to the module's conventions and check they are consistent.

    ``num_classes`` defaults to the largest label + 1.
    """
    x_train, x_test = (_to_unit_float(x, f"{source}: {key}")
                       for x, key in ((x_train, "x_train"), (x_test, "x_test")))
    y_train, y_test = (_to_class_indices(y, f"{source}: {key}")
                       for y, key in ((y_train, "y_train"), (y_test, "y_test")))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"{source}: {len(x)} {split} images but {len(y)} {split} labels")
    if num_classes is None:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and y.max() >= num_classes:
            raise DataError(f"{source}: {key} has label {y.max()} >= num_classes {num_classes}")
    return Dataset(x_train, y_train, x_test, y_test, name, num_classes)


def _to_unit_float(x: np.ndarray, what: str) -> np.ndarray:
    """Images as float32 in [0, 1]: integers in [0, 255] are divided by 255."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        low, high, scale = 0, 255, 255.0
    elif np.issubdtype(x.dtype, np.floating):
        low, high, scale = 0.0, 1.0, 1.0
    else:
        raise DataError(f"{what}: images must be integer or float, got {x.dtype}")
    if x.size and (x.min() < low or x.max() > high):
        raise DataError(f"{what}: {x.dtype} images must lie in [{low}, {high}], "
                        f"got [{x.min()}, {x.max()}]")
    unit = x.astype(np.float32)
    unit /= scale
    return unit


def _is_one_hot_shape(y: np.ndarray) -> bool:
    """True for 2-D label arrays with more than one column."""
    return y.ndim == 2 and y.shape[1] > 1


def _to_class_indices(y: np.ndarray, what: str) -> np.ndarray:
    """Labels as int64 indices ``(N,)`` from indices ``(N,)``/``(N, 1)`` or 0/1 one-hot rows."""
    y = np.asarray(y)
    if _is_one_hot_shape(y):
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(f"{what}: 2-D labels must be one-hot rows of 0/1 with a single 1")
        return y.argmax(axis=1).astype(np.int64)
    if y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be (N,), (N, 1) or one-hot (N, C), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and not (y == np.round(y)).all():
        raise DataError(f"{what}: labels must be whole numbers")
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be non-negative, got {y.min()}")
    return y.astype(np.int64)


def to_hinge_targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices ``(N,)`` to float32 ``(N, num_classes)`` targets: +1 at the class, -1 elsewhere.

    These are the targets of the square hinge loss used to train the binary nets.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    targets = np.full((len(y), num_classes), -1.0, dtype=np.float32)
    targets[np.arange(len(y)), y] = 1.0
    return targets


# --------------------------------------------------------------------------- ZCA


class ZCAWhitening:
    """ZCA whitening of images, fitted on the training set and reused everywhere else.

    ``fit`` flattens the images, subtracts the per-pixel mean and builds
    ``W = U diag(1 / sqrt(s + eps)) U^T`` from the eigendecomposition ``U diag(s) U^T``
    of the pixel covariance; ``transform`` maps ``x -> (x - mean) W``. Unlike PCA
    whitening this keeps the result close to the original image, so convolutions
    still see images. ``eps`` (default ``1e-2``, for pixels in ``[0, 1]``) is added
    to every eigenvalue so that directions of near-zero variance (pixel noise,
    the span lost to mean subtraction) are not blown up: with ``eps = 0`` they
    would be scaled by ``1 / sqrt(~0)``. Smaller ``eps`` whitens more exactly.

    Test and exported inputs must get the training set's transform: ``save``
    stores mean, matrix and eps in an ``.npz`` and ``load`` restores them.
    """

    _CHUNK = 4096  # rows per covariance block: bounds the float64 copy of the data

    def __init__(self, eps: float = 1e-2):
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = float(eps)
        self.mean: np.ndarray | None = None
        self.matrix: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> "ZCAWhitening":
        """Fit mean and whitening matrix on images ``x`` of shape ``(N, ...)`` (in float64)."""
        flat = np.asarray(x).reshape(len(x), -1)
        if len(flat) < 2:
            raise ValueError("ZCA needs at least two samples to estimate a covariance")
        mean = flat.mean(axis=0, dtype=np.float64)
        cov = np.zeros((flat.shape[1], flat.shape[1]))
        for start in range(0, len(flat), self._CHUNK):
            centered = flat[start:start + self._CHUNK].astype(np.float64) - mean
            cov += centered.T @ centered
        eigvals, eigvecs = np.linalg.eigh(cov / len(flat))
        scale = 1.0 / np.sqrt(np.clip(eigvals, 0.0, None) + self.eps)
        self.mean, self.matrix = mean, (eigvecs * scale) @ eigvecs.T
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Whiten images ``x`` with the fitted statistics; float32, same shape as ``x``.

        Computed in float32 to keep memory at one copy of the data set.
        """
        if self.matrix is None:
            raise RuntimeError("ZCAWhitening must be fitted (or loaded) before transform")
        x = np.asarray(x)
        flat = x.reshape(len(x), -1).astype(np.float32)
        if flat.shape[1] != len(self.mean):
            raise ValueError(f"images have {flat.shape[1]} values each, "
                             f"the whitening was fitted on {len(self.mean)}")
        white = (flat - self.mean.astype(np.float32)) @ self.matrix.astype(np.float32)
        return white.reshape(x.shape)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def save(self, path: str | os.PathLike) -> None:
        """Store mean, matrix and eps in an ``.npz`` (numpy appends ``.npz`` if missing)."""
        if self.matrix is None:
            raise RuntimeError("ZCAWhitening must be fitted before save")
        np.savez(path, mean=self.mean, matrix=self.matrix, eps=np.float64(self.eps))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ZCAWhitening":
        """Restore a whitening written by :meth:`save`."""
        arrays = _read_npz(path, ("mean", "matrix", "eps"))
        zca = cls(float(arrays["eps"]))
        zca.mean, zca.matrix = arrays["mean"], arrays["matrix"]
        return zca
