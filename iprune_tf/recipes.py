"""The paper's training recipe and its train -> prune -> retrain -> evaluate pipeline.

Recipe (iPrune, following BinaryConnect): square hinge loss on ±1 targets, Adam with a constant
learning rate of 3e-3, weight decay 5e-2 on the last dense layer only (with the hinge loss it
makes that layer an L2-SVM), ZCA whitening fitted on the training set for CIFAR-10 and no
preprocessing for MNIST-like data.

Weight decay is *decoupled* by default (``weight_decay_mode="decoupled"``, AdamW's form: each step
multiplies the layer's latent kernel by ``1 - lr * 5e-2``). The coupled form (``"l2"``: a
``5e-2 * sum(w^2)`` loss term, what ``kernel_regularizer=l2(5e-2)`` does) is measured to break the
binary nets: the last layer is binary too, the L2 gradient pulls its latent weights to ~1e-3,
below the size of one Adam step (~lr), so their signs flip nearly every step. On Fashion-MNIST at
K=8 that cost 6-7 points of test accuracy (bench/results/fashion_mnist_k8.json); decoupled decay
shrinks the latent weights by only 1.5e-4 per step and loses nothing measurable.

A run lives in a directory::

    RUN_DIR/run.json                    config, data description, per-phase results
    RUN_DIR/zca.npz                     the training set's ZCA transform (CIFAR-10 preset only)
    RUN_DIR/models/<phase>.h5           the model after each phase
    RUN_DIR/weights/<snapshot>.npz      latent kernels before pruning, after pruning, after retraining

Phases, each saved as soon as it ends so an interrupted run resumes where it stopped:

1. ``dense_fp``: the full-precision dense baseline, trained for the same total number of
   epochs as the binary pipeline (the "same budget").
2. ``dense_binary``: the binary flavour, dense, ``epochs_dense`` epochs.
3. ``pruned``: the binary net pruned from full fan-in to K inputs per neuron over the first
   ``epochs_prune`` epochs (geometric :class:`~iprune_tf.FanInSchedule`, masks recomputed every
   ``frequency`` steps; ``schedule="oneshot"`` prunes to K at the first step instead), then
   retrained with fixed masks for ``epochs_retrain`` epochs; stripped to ``pruned_stripped``.
"""
import dataclasses
import json
import os
import time
import warnings

import numpy as np

from iprune_tf import data as data_lib
from iprune_tf import masking, models
from iprune_tf._keras import keras, tf
from iprune_tf.layers import is_supported, latent_kernel
from iprune_tf.prune import prune_fan_in, prune_scope, strip_pruning
from iprune_tf.schedules import FanInSchedule
from iprune_tf.wrapper import PruneFanIn
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep

LOSS = "squared_hinge"
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 5e-2
WEIGHT_DECAY_MODES = ("decoupled", "l2")
DECAY_LAYER = "output"
PHASES = ("dense_fp", "dense_binary", "pruned")
SCHEDULES = ("gradual", "oneshot")
SNAPSHOTS = ("before_pruning", "after_pruning", "after_retraining")


@dataclasses.dataclass
class RunConfig:
    """Everything that determines a run; stored in ``run.json`` and checked on resume."""

    preset: str = "mnist"
    flavour: str = "binaryconnect_det"
    inputs_per_neuron: int = 8
    data: str = "fashion_mnist"
    limit_train: int | None = None
    limit_test: int | None = None
    epochs_dense: int = 10
    epochs_prune: int = 10
    epochs_retrain: int = 10
    schedule: str = "gradual"
    frequency: int = 100
    batch_size: int = 100
    learning_rate: float = LEARNING_RATE
    weight_decay: float = WEIGHT_DECAY
    weight_decay_mode: str = "decoupled"
    seed: int = 0

    def __post_init__(self):
        models.get_preset(self.preset)
        if self.flavour not in models.FLAVOURS or self.flavour == "full_precision":
            binary = [f for f in models.FLAVOURS if f != "full_precision"]
            raise ValueError(f"flavour must be a binary flavour, one of {binary}; got '{self.flavour}'.")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}; got '{self.weight_decay_mode}'.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got '{self.schedule}'.")
        for name in ("epochs_dense", "epochs_prune", "epochs_retrain"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.epochs_prune + self.epochs_retrain < 1:
            raise ValueError("epochs_prune + epochs_retrain must be >= 1: the pruned net needs training steps.")
        if self.frequency < 1 or self.batch_size < 1:
            raise ValueError("frequency and batch_size must be >= 1.")

    @property
    def total_epochs(self):
        """The training budget of the binary pipeline, also given to the full-precision baseline."""
        return self.epochs_dense + self.epochs_prune + self.epochs_retrain


def compile_model(model, learning_rate=LEARNING_RATE, weight_decay=0.0, decay_layer=DECAY_LAYER):
    """Compile with the recipe: Adam at a constant rate, square hinge loss, top-1 accuracy.

    ``weight_decay > 0`` adds decoupled weight decay (``w -= lr * weight_decay * w`` each step) to
    the kernel of the layer named ``decay_layer`` only, every other variable excluded.
    """
    optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)
    if weight_decay:
        kernel = decay_kernel(model, decay_layer)
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v is not kernel])
    model.compile(optimizer, loss=LOSS, metrics=["categorical_accuracy"])
    return model


def decay_kernel(model, name=DECAY_LAYER):
    """The latent kernel variable of layer ``name``: the one variable the recipe's weight decay touches."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(f"Weight decay goes to the layer named '{name}', which this model lacks; layers: {names}.")
    return latent_kernel(model.get_layer(name))


def prepare_data(config, run_dir=None):
    """Load the run's data and apply its preprocessing (ZCA for presets that use it).

    The ZCA transform is fitted on the training set once and stored as ``RUN_DIR/zca.npz``;
    later calls (resume, report, export) load it, so every input sees the same transform.
    Returns ``(dataset, zca or None)`` with ``x_*`` preprocessed and ``y_*`` as class indices.
    """
    dataset = data_lib.load_dataset(config.data, config.limit_train, config.limit_test)
    if not models.get_preset(config.preset).zca:
        return dataset, None
    zca_path = os.path.join(run_dir, "zca.npz") if run_dir else None
    if zca_path and os.path.exists(zca_path):
        zca = data_lib.ZCAWhitening.load(zca_path)
    else:
        zca = data_lib.ZCAWhitening().fit(dataset.x_train)
        if zca_path:
            zca.save(zca_path)
    whitened = dataclasses.replace(dataset, x_train=zca.transform(dataset.x_train), x_test=zca.transform(dataset.x_test))
    return whitened, zca


def steps_per_epoch(config, n_train):
    return -(-n_train // config.batch_size)


def pruning_schedule(config, n_train):
    """The run's schedule: gradual over ``epochs_prune`` epochs, or one shot at step 1."""
    if config.schedule == "oneshot" or config.epochs_prune == 0:
        return FanInSchedule()
    end = config.epochs_prune * steps_per_epoch(config, n_train)
    return FanInSchedule(begin_step=1, end_step=end, frequency=config.frequency)


def build_model(config, flavour, input_shape, num_classes):
    """The preset's model in ``flavour`` for data of ``input_shape`` and ``num_classes``."""
    preset = models.get_preset(config.preset)
    l2 = config.weight_decay if config.weight_decay_mode == "l2" else None
    return preset.build(flavour, num_classes=num_classes, input_shape=tuple(input_shape), output_l2=l2)


def decoupled_decay(config):
    """The optimizer's weight decay for ``config``: its rate in decoupled mode, else 0 (L2 is in the model)."""
    return config.weight_decay if config.weight_decay_mode == "decoupled" else 0.0


def top1_accuracy(model, x, labels):
    """Top-1 accuracy of ``model`` on ``x``: the argmax of its outputs against class ``labels``."""
    scores = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def _model_path(run_dir, name):
    return os.path.join(run_dir, "models", f"{name}.h5")


def _snapshot_path(run_dir, name):
    return os.path.join(run_dir, "weights", f"{name}.npz")


def latent_kernels(model):
    """``{layer name: latent kernel * mask}`` for every prunable layer: what the plots show."""
    kernels = {}
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            kernels[layer.layer.name] = (tf.convert_to_tensor(latent_kernel(layer.layer)) * layer.mask).numpy()
        elif is_supported(layer):
            kernels[layer.name] = tf.convert_to_tensor(latent_kernel(layer)).numpy()
    return kernels


class Run:
    """A run directory: its config, per-phase results, saved models and weight snapshots."""

    def __init__(self, run_dir):
        self.dir = os.fspath(run_dir)
        self.path = os.path.join(self.dir, "run.json")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.dir} is not an iprune_tf run directory: no run.json (run `iprune train` first).")
        with open(self.path) as f:
            state = json.load(f)
        self.config = RunConfig(**state["config"])
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


def train(run_dir, config, resume=False, overwrite=False, verbose=1):
    """Run (or resume) the whole pipeline in ``run_dir``; returns the :class:`Run`.

    ``verbose`` is Keras' (1: progress bars). Each phase's test accuracy, epochs and wall time
    go to ``run.json`` as soon as the phase ends.
    """
    run = Run.create(run_dir, config, resume=resume, overwrite=overwrite)
    keras.utils.set_random_seed(config.seed)
    dataset, _ = prepare_data(config, run.dir)
    run.data = {
        "name": dataset.name, "train_samples": len(dataset.x_train), "test_samples": len(dataset.x_test),
        "num_classes": dataset.num_classes, "input_shape": list(dataset.x_train.shape[1:]),
        "preprocessing": "zca" if models.get_preset(config.preset).zca else "none",
    }
    run.save()
    targets = (data_lib.to_hinge_targets(dataset.y_train, dataset.num_classes),
               data_lib.to_hinge_targets(dataset.y_test, dataset.num_classes))
    fit = _Fitter(config, dataset, targets, verbose)
    if not run.done("dense_fp"):
        _phase(run, "dense_fp", lambda: fit.dense("full_precision", config.total_epochs))
    if not run.done("dense_binary"):
        _phase(run, "dense_binary", lambda: fit.dense(config.flavour, config.epochs_dense))
    if not run.done("pruned"):
        _phase(run, "pruned", lambda: fit.pruned(run))
    return run


def _phase(run, name, train_fn):
    """Train one phase, then save its model and results at once (the resume point)."""
    print(f"\n== {name} ==", flush=True)
    start = time.time()
    model, result = train_fn()
    result["wall_time_s"] = round(time.time() - start, 1)
    _save_h5(model, run.model_path(name))
    if name == "pruned":
        _save_h5(strip_pruning(model), run.model_path("pruned_stripped"))
    run.phases[name] = result
    run.save()
    print(f"{name}: test accuracy {result['test_accuracy']:.4f} ({result['wall_time_s']} s)", flush=True)


def _save_h5(model, path):
    """Save weights and architecture to ``.h5`` (no optimizer state: a phase restarts from its model).

    HDF5 keeps the run readable by every Keras 2 and by h5py; tf_keras' warning that the format
    is "legacy" is silenced here because the choice is deliberate.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        model.save(path, include_optimizer=False)


class _Fitter:
    """Trains and evaluates the phases of one run on one preprocessed data set."""

    def __init__(self, config, dataset, targets, verbose):
        self.config, self.dataset, self.verbose = config, dataset, verbose
        self.y_train, self.y_test = targets

    def _build(self, flavour):
        ds = self.dataset
        return build_model(self.config, flavour, ds.x_train.shape[1:], ds.num_classes)

    def _fit(self, model, epochs, initial_epoch=0, callbacks=()):
        if epochs > initial_epoch:
            model.fit(self.dataset.x_train, self.y_train, batch_size=self.config.batch_size, epochs=epochs,
                      initial_epoch=initial_epoch, validation_data=(self.dataset.x_test, self.y_test),
                      callbacks=list(callbacks), verbose=self.verbose)

    def evaluate(self, model):
        return top1_accuracy(model, self.dataset.x_test, self.dataset.y_test)

    def dense(self, flavour, epochs):
        model = compile_model(self._build(flavour), self.config.learning_rate, decoupled_decay(self.config))
        self._fit(model, epochs)
        return model, {"test_accuracy": self.evaluate(model), "epochs": epochs, "flavour": flavour}

    def pruned(self, run):
        config = self.config
        dense = run.load_model("dense_binary")
        before = latent_kernels(dense)
        run.save_snapshot("before_pruning", before)
        schedule = pruning_schedule(config, len(self.dataset.x_train))
        model = prune_fan_in(dense, config.inputs_per_neuron, schedule, skip=models.get_preset(config.preset).skip())
        compile_model(model, config.learning_rate, decoupled_decay(config))
        callbacks = [UpdatePruningStep()]
        total = config.epochs_prune + config.epochs_retrain
        if config.schedule == "gradual" and config.epochs_prune:
            self._fit(model, config.epochs_prune, callbacks=callbacks)
            after_pruning, accuracy_after_pruning = latent_kernels(model), self.evaluate(model)
            start = config.epochs_prune
        else:
            after_pruning, accuracy_after_pruning = _one_shot_masked(model, before), None
            start = 0
        run.save_snapshot("after_pruning", after_pruning)
        self._fit(model, total, initial_epoch=start, callbacks=callbacks)
        run.save_snapshot("after_retraining", latent_kernels(model))
        return model, {
            "test_accuracy": self.evaluate(strip_pruning(model)),
            "test_accuracy_after_pruning": accuracy_after_pruning,
            "epochs": total,
            "inputs_per_neuron": config.inputs_per_neuron,
            "schedule": schedule.get_config(),
        }


def _one_shot_masked(model, kernels):
    """``kernels`` with each pruned layer's per-neuron top-K mask applied: the weights right after
    a one-shot pruning, before any retraining step."""
    masked = dict(kernels)
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            name = layer.layer.name
            mask = masking.per_neuron_topk_mask(tf.constant(kernels[name]), layer.final_inputs_per_neuron)
            masked[name] = kernels[name] * mask.numpy()
    return masked
