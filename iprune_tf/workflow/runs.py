"""A run directory: where ``iprune train`` keeps its config, results, models and checkpoints.

::

    RUN_DIR/run.json                      config, data description, per-phase results, segments
    RUN_DIR/zca.npz                       the training set's ZCA transform (CIFAR-10 preset only)
    RUN_DIR/models/<phase>.h5             the model after each phase
    RUN_DIR/weights/<snapshot>.npz        latent kernels before pruning, after pruning, after retraining
    RUN_DIR/checkpoints/<phase>-eNNNN.npz the unfinished phase after NNNN epochs (the last two are kept)

Every file is written to ``<name>.tmp`` and renamed into place, so a process killed at any moment
(SIGKILL included) leaves each file either complete or absent; leftover ``.tmp`` files are deleted
on resume. ``run.json`` holds one *segment* per ``train`` call (where it started, the last
checkpoint it wrote, when it finished). The training itself is :mod:`iprune_tf.workflow.pipeline`.
"""
import dataclasses
import glob
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
import zipfile

import numpy as np

from iprune_tf._keras import keras, tf
from iprune_tf.workflow.checkpoints import atomic_write, read_checkpoint
from iprune_tf.pruning.prune import prune_scope
from iprune_tf.workflow.recipes import PHASES, TABLES, RunConfig

SNAPSHOTS = ("before_pruning", "after_pruning", "after_retraining")
KEPT_CHECKPOINTS = 2
_OWN_ENTRIES = {"run.json", "zca.npz", "models", "weights", "checkpoints", "export", "plots", "report.md", "report.json"}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Run:
    """A run directory: its config, per-phase results, saved models, snapshots and checkpoints."""

    def __init__(self, run_dir, state=None):
        self.dir = os.fspath(run_dir)
        self.path = os.path.join(self.dir, "run.json")
        state = state if state is not None else _read_state(self.path)
        self.config = RunConfig(**state["config"])
        self.data = state.get("data", {})
        self.phases = state.get("phases", {})
        self.segments = state.get("segments", [])

    @staticmethod
    def check(run_dir, config, resume=False, overwrite=False):
        """Raise unless ``create`` with these arguments can proceed; creates and changes nothing."""
        run_dir = os.fspath(run_dir)
        if os.path.exists(os.path.join(run_dir, "run.json")) and not overwrite:
            if not resume:
                raise FileExistsError(f"{run_dir} already holds a run. Pass resume=True (--resume) to continue it "
                                      "or overwrite=True (--overwrite) to replace it.")
            old = RunConfig(**_read_state(os.path.join(run_dir, "run.json"))["config"])
            if old != config:
                raise ValueError(f"Cannot resume {run_dir}: it was started with a different config "
                                 f"({_config_diff(old, config)}). Use another directory or --overwrite.")
            return
        if os.path.isdir(run_dir) and os.listdir(run_dir) and not overwrite:
            entries = {name.removesuffix(".tmp") for name in os.listdir(run_dir)}
            if entries <= _OWN_ENTRIES:
                raise FileExistsError(f"{run_dir} holds a half-made run (killed before its run.json was written; "
                                      "nothing in it finished). Pass overwrite=True (--overwrite) to start it again.")
            raise FileExistsError(f"{run_dir} exists and is not empty; choose a new run directory or pass overwrite=True.")
        _check_writable(run_dir)

    @classmethod
    def create(cls, run_dir, config, resume=False, overwrite=False):
        """Open ``run_dir`` for training ``config``.

        A new directory is created. An existing run is resumed only with ``resume=True`` and the
        same config, and replaced only with ``overwrite=True``; anything else is an error, so no
        earlier results are lost by accident.
        """
        run_dir = os.fspath(run_dir)
        cls.check(run_dir, config, resume, overwrite)
        if os.path.exists(os.path.join(run_dir, "run.json")) and not overwrite:
            run = cls(run_dir)
            run.remove_partial_files()
            return run
        if overwrite:
            _remove_run_files(run_dir)
        for sub in ("models", "weights", "checkpoints"):
            os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
        run = cls(run_dir, {"config": dataclasses.asdict(config)})
        run.save()
        return run

    @classmethod
    def scratch(cls, run_dir, config, resume=False):
        """A run in a new temporary directory, for a worker that must not write ``run_dir``.

        A non-chief worker of a multi-worker run saves exactly what the chief saves (saving reads
        variables, which are collective operations that every worker must join) but into this
        directory, which the caller deletes. With ``resume=True`` the chief's run is copied in
        first (``run_dir`` must then be on a filesystem every worker sees).
        """
        scratch = tempfile.mkdtemp(prefix="iprune-worker-")
        if resume and os.path.isfile(os.path.join(run_dir, "run.json")):
            shutil.copytree(run_dir, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tmp"))
            return cls.create(scratch, config, resume=True)
        return cls.create(scratch, config)

    def save(self):
        state = {"config": dataclasses.asdict(self.config), "data": self.data, "phases": self.phases,
                 "segments": self.segments}
        atomic_write(self.path, lambda f: f.write(json.dumps(state, indent=2).encode()))

    def remove_partial_files(self):
        """Delete the ``.tmp`` files a killed process left behind (each is a write that never finished)."""
        for path in glob.glob(os.path.join(self.dir, "**", "*.tmp"), recursive=True):
            os.remove(path)
            print(f"removed {path}: half written when the previous run was killed", flush=True)

    def begin_segment(self, start, **info):
        """Record that this process trains from ``start`` (``{"phase", "epoch"}``)."""
        self.segments.append({"started": _now(), "from": start, "to": None, "finished": None, **info})
        self.save()

    def end_segment(self):
        self.segments[-1]["finished"] = _now()
        self.save()

    def model_path(self, name):
        return _model_path(self.dir, name)

    def snapshot_path(self, name):
        return _snapshot_path(self.dir, name)

    def load_model(self, name):
        """The model saved after phase ``name`` (``dense_fp``, ``dense_binary``, ``pruned``, ``pruned_stripped``,
        ``tables``)."""
        path = self.model_path(name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: phase '{name}' of this run has not finished.")
        with prune_scope():
            return keras.models.load_model(path, compile=False)  # uncompiled: each use compiles its own

    def save_model(self, name, model):
        """Save ``model`` as ``models/<name>.h5`` (weights and architecture, no optimizer state).

        HDF5 keeps the run readable by every Keras 2 and by h5py; tf_keras' warning that the format
        is "legacy" is silenced here because the choice is deliberate, and so is its note that a
        stripped copy of a compiled model has no built metrics (none are saved).
        """
        path = self.model_path(name)
        quiet = _DropMessage("compiled metrics have yet to be built")
        tf.get_logger().addFilter(quiet)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
                model.save(path + ".tmp", include_optimizer=False, save_format="h5")
        finally:
            tf.get_logger().removeFilter(quiet)
        os.replace(path + ".tmp", path)

    def load_snapshot(self, name):
        """``{layer name: kernel}`` saved at ``name`` (one of :data:`SNAPSHOTS`)."""
        with np.load(self.snapshot_path(name)) as arrays:
            return dict(arrays)

    def save_snapshot(self, name, kernels):
        atomic_write(self.snapshot_path(name), lambda f: np.savez(f, **kernels))

    def done(self, phase):
        return phase in self.phases and os.path.isfile(self.model_path(phase))

    def save_checkpoint(self, phase, epoch, model, meta=None):
        """Checkpoint ``phase`` after ``epoch`` finished epochs; keeps the last :data:`KEPT_CHECKPOINTS`."""
        arrays = {f"model_{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
        arrays["meta"] = np.array(json.dumps({"phase": phase, "epoch": epoch, **(meta or {})}))
        atomic_write(self._checkpoint_path(phase, epoch), lambda f: np.savez(f, **arrays))
        for old in self._checkpoint_paths(phase)[KEPT_CHECKPOINTS:]:
            os.remove(old)
        self.segments[-1]["to"] = {"phase": phase, "epoch": epoch}
        self.save()

    def load_checkpoint(self, phase):
        """The newest readable :class:`Checkpoint` of ``phase``, or None.

        A checkpoint that cannot be read (damaged after it was written) is reported and the one
        before it is used: the run repairs itself at the cost of one epoch.
        """
        for path in self._checkpoint_paths(phase):
            try:
                return read_checkpoint(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                print(f"warning: checkpoint {path} is unreadable ({error}); trying the one before", flush=True)
        return None

    def clear_checkpoints(self, phase):
        """Delete ``phase``'s checkpoints once its model is saved (they are only resume points)."""
        for path in self._checkpoint_paths(phase):
            os.remove(path)

    def _checkpoint_path(self, phase, epoch):
        return os.path.join(self.dir, "checkpoints", f"{phase}-e{epoch:04d}.npz")

    def _checkpoint_paths(self, phase):
        """Existing checkpoints of ``phase``, newest first."""
        return sorted(glob.glob(os.path.join(self.dir, "checkpoints", f"{phase}-e[0-9][0-9][0-9][0-9].npz")), reverse=True)


class _DropMessage(logging.Filter):
    """A logging filter that drops records containing ``text``."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


def _read_state(path):
    run_dir = os.path.dirname(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} is not an iprune_tf run directory: no run.json (run `iprune train` first).")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}); the run cannot be resumed. "
                         "Start it again with --overwrite.") from error


def _check_writable(run_dir):
    """Raise PermissionError unless ``run_dir`` exists writable or can be created."""
    existing = os.path.abspath(run_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"cannot create run directory {run_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create run directory {run_dir}: {existing} is not writable")


def _model_path(run_dir, name):
    return os.path.join(run_dir, "models", f"{name}.h5")


def _snapshot_path(run_dir, name):
    return os.path.join(run_dir, "weights", f"{name}.npz")


def _config_diff(old, new):
    old, new = dataclasses.asdict(old), dataclasses.asdict(new)
    return ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k])


def _remove_run_files(run_dir):
    """Delete what a previous run wrote (only iprune_tf's own files), for ``overwrite=True``."""
    paths = [_model_path(run_dir, name) for name in (*PHASES, "pruned_stripped", TABLES)]
    paths += [_snapshot_path(run_dir, name) for name in SNAPSHOTS]
    paths += glob.glob(os.path.join(run_dir, "checkpoints", "*.npz*"))
    paths += [os.path.join(run_dir, name) for name in ("run.json", "zca.npz")]
    paths += glob.glob(os.path.join(run_dir, "**", "*.tmp"), recursive=True)
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
