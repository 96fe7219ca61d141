"""Data sets for the MNIST-family and CIFAR-10 experiments: :func:`load_dataset` by name or path.

Every loader returns a :class:`Dataset` of numpy arrays in one convention (see
:mod:`~iprune_tf.workflow.data.dataset`), so the training code never has to know where the
data came from: Keras' downloader (needs internet) or, for offline machines, local
files read by :mod:`~iprune_tf.workflow.data.files`. :mod:`~iprune_tf.workflow.data.zca` holds the
CIFAR-10 input preprocessing. Any problem with the data raises :class:`DataError`.
TensorFlow is only imported to download a data set by name.
"""
from __future__ import annotations

import os

from iprune_tf.workflow.data.dataset import DataError, Dataset, _make_dataset, to_hinge_targets
from iprune_tf.workflow.data.files import (
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    IDX_FILES,
    NPZ_KEYS,
    load_cifar10_batches,
    load_idx,
    load_idx_dir,
    load_npz,
)
from iprune_tf.workflow.data.zca import ZCAWhitening

__all__ = [
    "CIFAR10_TEST_BATCH", "CIFAR10_TRAIN_BATCHES", "DEBIAN_FASHION_MNIST", "DataError", "Dataset", "IDX_FILES",
    "KERAS_DATASETS", "NPZ_KEYS", "ZCAWhitening", "load_cifar10_batches", "load_dataset", "load_idx",
    "load_idx_dir", "load_npz", "to_hinge_targets",
]

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
"""Names :func:`load_dataset` downloads through ``keras.datasets``; all have 10 classes."""

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where ``apt-get install dataset-fashion-mnist`` puts the Fashion-MNIST IDX files."""


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
