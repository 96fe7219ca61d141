"""ZCA whitening, the CIFAR-10 input preprocessing, with its fitted statistics saved for export."""
from __future__ import annotations

import os

import numpy as np

from iprune_tf.workflow.data.files import _read_npz


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
