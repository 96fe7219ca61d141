"""A run directory: where ``iprune train`` keeps its config, results, models and snapshots.

::

    RUN_DIR/run.json                    config, data description, per-phase results
    RUN_DIR/zca.npz                     the training set's ZCA transform (CIFAR-10 preset only)
    RUN_DIR/models/<phase>.h5           the model after each phase
    RUN_DIR/weights/<snapshot>.npz      latent kernels before pruning, after pruning, after retraining

The training itself (what goes into these files) is :mod:`iprune_tf.recipes`.
"""
import dataclasses
import json
import os
import warnings

import numpy as np

from iprune_tf._keras import keras
from iprune_tf.prune import prune_scope

PHASES = ("dense_fp", "dense_binary", "pruned")
SNAPSHOTS = ("before_pruning", "after_pruning", "after_retraining")


def _run_config(fields):
    """The :class:`~iprune_tf.recipes.RunConfig` stored as ``fields`` (recipes imports this module)."""
    from iprune_tf.recipes import RunConfig

    return RunConfig(**fields)


def _model_path(run_dir, name):
    return os.path.join(run_dir, "models", f"{name}.h5")


def _snapshot_path(run_dir, name):
    return os.path.join(run_dir, "weights", f"{name}.npz")


class Run:
    """A run directory: its config, per-phase results, saved models and weight snapshots."""

    def __init__(self, run_dir):
        self.dir = os.fspath(run_dir)
        self.path = os.path.join(self.dir, "run.json")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.dir} is not an iprune_tf run directory: no run.json (run `iprune train` first).")
        with open(self.path) as f:
            state = json.load(f)
        self.config = _run_config(state["config"])
        self.data = state.get("data", {})
        self.phases = state.get("phases", {})

    @classmethod
    def create(cls, run_dir, config, resume=False, overwrite=False):
        """Open ``run_dir`` for training ``config``.

        A new directory is created. An existing run is resumed only with ``resume=True`` and the
        same config, and replaced only with ``overwrite=True``; anything else is an error, so no
        earlier results are lost by accident.
        """
        run_dir = os.fspath(run_dir)
        path = os.path.join(run_dir, "run.json")
        if os.path.exists(path) and not overwrite:
            if not resume:
                raise FileExistsError(f"{run_dir} already holds a run. Pass resume=True (--resume) to continue it "
                                      "or overwrite=True (--overwrite) to replace it.")
            run = cls(run_dir)
            if run.config != config:
                raise ValueError(f"Cannot resume {run_dir}: it was started with a different config "
                                 f"({_config_diff(run.config, config)}). Use another directory or --overwrite.")
            return run
        if os.path.isdir(run_dir) and os.listdir(run_dir) and not overwrite and not os.path.exists(path):
            raise FileExistsError(f"{run_dir} exists and is not empty; choose a new run directory or pass overwrite=True.")
        if overwrite:
            _remove_run_files(run_dir)
        os.makedirs(os.path.join(run_dir, "models"), exist_ok=True)
        os.makedirs(os.path.join(run_dir, "weights"), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"config": dataclasses.asdict(config), "data": {}, "phases": {}}, f, indent=2)
        return cls(run_dir)

    def save(self):
        state = {"config": dataclasses.asdict(self.config), "data": self.data, "phases": self.phases}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self.path)

    def model_path(self, name):
        return _model_path(self.dir, name)

    def snapshot_path(self, name):
        return _snapshot_path(self.dir, name)

    def load_model(self, name):
        """The model saved after phase ``name`` (``dense_fp``, ``dense_binary``, ``pruned``, ``pruned_stripped``)."""
        path = self.model_path(name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: phase '{name}' of this run has not finished.")
        with prune_scope():
            return keras.models.load_model(path, compile=False)  # uncompiled: each use compiles its own

    def save_model(self, name, model):
        """Save ``model`` as ``models/<name>.h5`` (weights and architecture, no optimizer state).

        HDF5 keeps the run readable by every Keras 2 and by h5py; tf_keras' warning that the format
        is "legacy" is silenced here because the choice is deliberate.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            model.save(self.model_path(name), include_optimizer=False)

    def load_snapshot(self, name):
        """``{layer name: kernel}`` saved at ``name`` (one of :data:`SNAPSHOTS`)."""
        with np.load(self.snapshot_path(name)) as arrays:
            return dict(arrays)

    def save_snapshot(self, name, kernels):
        np.savez(self.snapshot_path(name), **kernels)

    def done(self, phase):
        return phase in self.phases and os.path.isfile(self.model_path(phase))


def _config_diff(old, new):
    old, new = dataclasses.asdict(old), dataclasses.asdict(new)
    return ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k])


def _remove_run_files(run_dir):
    """Delete what a previous run wrote (only iprune_tf's own files), for ``overwrite=True``."""
    paths = [_model_path(run_dir, name) for name in (*PHASES, "pruned_stripped")]
    paths += [_snapshot_path(run_dir, name) for name in SNAPSHOTS]
    paths += [os.path.join(run_dir, name) for name in ("run.json", "zca.npz")]
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
