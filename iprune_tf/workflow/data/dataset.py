"""The :class:`Dataset` conventions every loader converts to, and :class:`DataError`.

* images are ``float32`` in ``[0, 1]``; MNIST-like images stay 2-D ``(N, 28, 28)``
  (the models flatten them), CIFAR-10 images are channels-last ``(N, 32, 32, 3)``;
* labels are ``int64`` class indices of shape ``(N,)``.

:func:`to_hinge_targets` makes the ``±1`` targets of the square hinge loss.
"""
from __future__ import annotations

import dataclasses

import numpy as np


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
