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

A run lives in a directory (:mod:`iprune_tf.runs`).

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
import os
import time

import numpy as np

from iprune_tf import data as data_lib
from iprune_tf import masking, models
from iprune_tf._keras import keras, tf
from iprune_tf.layers import is_supported, latent_kernel
from iprune_tf.prune import prune_fan_in, strip_pruning
from iprune_tf.runs import PHASES, SNAPSHOTS, Run  # noqa: F401  (re-exported: recipes.Run, recipes.PHASES)
from iprune_tf.schedules import FanInSchedule
from iprune_tf.wrapper import PruneFanIn
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep

LOSS = "squared_hinge"
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 5e-2
WEIGHT_DECAY_MODES = ("decoupled", "l2")
DECAY_LAYER = "output"
SCHEDULES = ("gradual", "oneshot")


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


def latent_kernels(model):
    """``{layer name: latent kernel * mask}`` for every prunable layer: what the plots show."""
    kernels = {}
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            kernels[layer.layer.name] = (tf.convert_to_tensor(latent_kernel(layer.layer)) * layer.mask).numpy()
        elif is_supported(layer):
            kernels[layer.name] = tf.convert_to_tensor(latent_kernel(layer)).numpy()
    return kernels


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
    run.save_model(name, model)
    if name == "pruned":
        run.save_model("pruned_stripped", strip_pruning(model))
    run.phases[name] = result
    run.save()
    print(f"{name}: test accuracy {result['test_accuracy']:.4f} ({result['wall_time_s']} s)", flush=True)


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
