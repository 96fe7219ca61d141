"""Epoch checkpoints of a phase, and the atomic file writes every run file goes through."""
import dataclasses
import json
import os

import numpy as np


def atomic_write(path, write):
    """``write(file)`` into ``path + '.tmp'``, then rename it to ``path``: never a half-written ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclasses.dataclass
class Checkpoint:
    """A phase after ``epoch`` finished epochs: model weights, optimizer variables and ``meta``."""

    phase: str
    epoch: int
    model_weights: list
    optimizer_values: list
    meta: dict

    def restore(self, model):
        """Put the weights (masks, pruning steps, BN statistics included) and optimizer state into ``model``."""
        model.set_weights(self.model_weights)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        if len(optimizer.variables) != len(self.optimizer_values):
            raise ValueError(f"checkpoint of '{self.phase}' holds {len(self.optimizer_values)} optimizer variables, "
                             f"the model's optimizer has {len(optimizer.variables)}")
        for variable, value in zip(optimizer.variables, self.optimizer_values):
            variable.assign(value)


def read_checkpoint(path):
    """The :class:`Checkpoint` in ``path`` (written by ``Run.save_checkpoint``)."""
    with np.load(path) as arrays:
        meta = json.loads(str(arrays["meta"]))
        n_model = sum(key.startswith("model_") for key in arrays.files)
        n_optimizer = sum(key.startswith("optimizer_") for key in arrays.files)
        model = [arrays[f"model_{i}"] for i in range(n_model)]
        optimizer = [arrays[f"optimizer_{i}"] for i in range(n_optimizer)]
    phase, epoch = meta.pop("phase"), meta.pop("epoch")
    return Checkpoint(phase, epoch, model, optimizer, meta)
