"""The paper's training recipe: configuration, models, compile, schedules (data preparation: :mod:`~iprune_tf.workflow.preparation`).

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

The train -> prune -> retrain pipeline that uses it is :mod:`iprune_tf.workflow.pipeline`; the run
directory it fills is :mod:`iprune_tf.workflow.runs`.
"""
import dataclasses
import math

import numpy as np

from iprune_tf.workflow import binary_init as binary_init_lib
from iprune_tf.workflow import distill as distill_lib
from iprune_tf.workflow import encoding
from iprune_tf.workflow import heads
from iprune_tf.pruning import masking
from iprune_tf.workflow import models
from iprune_tf.workflow import preparation
from iprune_tf._keras import keras
from iprune_tf.pruning.layers import is_supported, latent_kernel
from iprune_tf.pruning.prune import prune_fan_in
from iprune_tf.pruning.schedules import FanInSchedule, validate_last_halving

LOSS = "squared_hinge"
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 5e-2
WEIGHT_DECAY_MODES = ("decoupled", "l2")
DECAY_LAYER = "output"
SCHEDULES = ("gradual", "oneshot")
RETRAIN_LR = ("constant", "cosine")
_WIDTH_ARGUMENT = {"mnist": "hidden_units", "cifar10": "dense_units"}
PHASES = ("dense_fp", "dense_binary", "pruned")  # the paper's pipeline, in order
TABLES = "tables"  # the optional phase after them (RunConfig.epochs_tables): the pruned net's truth tables fine-tuned
ALL_PHASES = (*PHASES, TABLES)


@dataclasses.dataclass
class RunConfig:
    """Everything that determines a run; stored in ``run.json`` and checked on resume."""

    preset: str = "mnist"
    flavour: str = "binaryconnect_det"
    inputs_per_neuron: int = 8
    data: str = "fashion_mnist"
    limit_train: int | None = None
    limit_test: int | None = None
    epochs_fp: int | None = None  # the full-precision baseline's epochs (None: total_epochs, the same budget)
    epochs_dense: int = 10
    epochs_prune: int = 10
    epochs_retrain: int = 10
    schedule: str = "gradual"
    frequency: int = 100
    last_halving: float | None = None  # FanInSchedule: fraction of the pruning steps spent on 2K -> K (None: geometric)
    batch_size: int = 100
    learning_rate: float = LEARNING_RATE
    binary_lr: float | None = None  # Adam's rate in the binary phases (None: learning_rate, the paper's one rate)
    weight_decay: float = WEIGHT_DECAY
    weight_decay_mode: str = "decoupled"
    seed: int = 0
    hidden_units: tuple | None = None  # the preset's hidden dense widths (None: the paper's)
    skip: tuple | None = None  # layer names left dense (None: the preset's paper skip list)
    input_encoding: str | None = None  # e.g. "thermometer:3" (iprune_tf.workflow.encoding.from_spec); None: raw inputs
    retrain_lr: str = "constant"  # "cosine": the rate decays to 0 over the retraining epochs (bench/accuracy_seeds.py)
    head: str = "dense"  # output head of the binary nets: dense | pruned:K_OUT | groupsum (iprune_tf.workflow.heads)
    width: float = 1.0  # conv preset: filters and hidden units times this (models.scale_widths)
    zca: bool | None = None  # ZCA whitening of the inputs (None: the preset's choice); False records why in run.json
    distill: float = 0.0  # weight of the dense_fp teacher's term in the binary phases' loss (workflow.distill); 0: off
    binary_init: str = "random"  # the dense binary net's start: "random" (the paper's) or "fp" (workflow.binary_init)
    epochs_tables: int = 0  # after retraining, epochs fine-tuning each LUT neuron's truth table (workflow.tables); 0: off
    tables_lr: float | None = None  # Adam's rate in the tables phase (None: the binary phases' rate)
    tables_distill: float | None = None  # the teacher's weight in the tables phase (None: distill's)

    def __post_init__(self):
        models.get_preset(self.preset)
        masking.validate_inputs_per_neuron(self.inputs_per_neuron)
        encoding.from_spec(self.input_encoding)  # ValueError for a bad spec, before any training
        self.head = heads.parse_head(self.head).spec  # ValueError for a malformed head; its width fit: check_config
        for name in ("hidden_units", "skip"):  # tuples, also when read back from run.json's lists
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        if self.hidden_units is not None and not all(isinstance(u, int) and u >= 1 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive ints, got {self.hidden_units}.")
        if self.flavour not in models.FLAVOURS or self.flavour == "full_precision":
            binary = [f for f in models.FLAVOURS if f != "full_precision"]
            raise ValueError(f"flavour must be a binary flavour, one of {binary}; got '{self.flavour}'.")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}; got '{self.weight_decay_mode}'.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got '{self.schedule}'.")
        validate_last_halving(self.last_halving)
        distill_lib.validate_weight(self.distill)
        models.scale_widths((1,), self.width)  # ValueError unless width > 0
        if self.width != 1.0 and not models.get_preset(self.preset).images:
            raise ValueError(f"width scales the conv preset; preset {self.preset!r} takes hidden_units instead.")
        if self.zca is not None and not isinstance(self.zca, bool):
            raise ValueError(f"zca must be True, False or None (the preset's choice), got {self.zca!r}.")
        if self.retrain_lr not in RETRAIN_LR:
            raise ValueError(f"retrain_lr must be one of {RETRAIN_LR}; got '{self.retrain_lr}'.")
        binary_init_lib.validate(self.binary_init)
        if self.binary_lr is not None and not self.binary_lr > 0:
            raise ValueError(f"binary_lr must be > 0 (or None: learning_rate), got {self.binary_lr}.")
        if self.epochs_fp is not None and self.epochs_fp < 1:
            raise ValueError(f"epochs_fp must be >= 1 (or None: the binary pipeline's total), got {self.epochs_fp}.")
        if self.epochs_tables and self.flavour != "binary":
            raise ValueError(f"epochs_tables fine-tunes the truth tables of LUT neurons (±1 inputs and outputs), which "
                             f"only the fully binary flavour has; flavour is {self.flavour!r}. Use flavour 'binary' or "
                             "epochs_tables=0.")
        if self.epochs_tables and models.get_preset(self.preset).images:
            raise ValueError(f"epochs_tables turns Dense neurons into truth tables (LutTable); preset {self.preset!r} has "
                             "convolutions, which it cannot. Use the mnist preset or epochs_tables=0.")
        if self.tables_lr is not None and not self.tables_lr > 0:
            raise ValueError(f"tables_lr must be > 0 (or None: the binary rate), got {self.tables_lr}.")
        if self.tables_lr is not None and not self.epochs_tables:
            raise ValueError("tables_lr sets the rate of the tables phase, but epochs_tables=0 leaves no tables "
                             "phase. Set epochs_tables (e.g. 10) or leave tables_lr unset.")
        if self.tables_distill is not None:
            distill_lib.validate_weight(self.tables_distill, "tables_distill")
            if not self.epochs_tables:
                raise ValueError("tables_distill sets the teacher's weight in the tables phase, but epochs_tables=0 "
                                 "leaves no tables phase. Set epochs_tables (e.g. 10) or leave tables_distill unset.")
        for name in ("epochs_dense", "epochs_prune", "epochs_retrain", "epochs_tables"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.epochs_prune + self.epochs_retrain < 1:
            raise ValueError("epochs_prune + epochs_retrain must be >= 1: the pruned net needs training steps.")
        if self.frequency < 1 or self.batch_size < 1:
            raise ValueError("frequency and batch_size must be >= 1.")

    @property
    def total_epochs(self):
        """The training budget of the binary pipeline."""
        return self.epochs_dense + self.epochs_prune + self.epochs_retrain

    def rate(self, phase):
        """Adam's rate in ``phase``: ``tables_lr`` in the tables phase when set, ``binary_lr`` in the binary phases
        when set, else ``learning_rate``."""
        if phase == TABLES and self.tables_lr is not None:
            return self.tables_lr
        return self.learning_rate if phase == "dense_fp" or self.binary_lr is None else self.binary_lr

    def distill_weight(self, phase):
        """The teacher's weight in ``phase``'s loss: none in ``dense_fp`` (the teacher itself), ``tables_distill`` in the
        tables phase when set, else ``distill``."""
        if phase == "dense_fp":
            return 0.0
        if phase == TABLES and self.tables_distill is not None:
            return self.tables_distill
        return self.distill

    @property
    def fp_epochs(self):
        """The full-precision baseline's epochs: ``epochs_fp``, by default the binary pipeline's total (the same budget)."""
        return self.total_epochs if self.epochs_fp is None else self.epochs_fp


def compile_model(model, learning_rate=LEARNING_RATE, weight_decay=0.0, decay_layer=None, distill=0.0):
    """Compile with the recipe: Adam at a constant rate, square hinge loss, top-1 accuracy.

    ``weight_decay > 0`` adds decoupled weight decay (``w -= lr * weight_decay * w`` each step) to
    the kernel of the layer named ``decay_layer`` only (default: :func:`decay_layer_name`), every
    other variable excluded. ``distill > 0`` mixes a teacher's scores into the loss
    (:class:`~iprune_tf.workflow.distill.DistillationLoss`; fit on :func:`~iprune_tf.workflow.distill.packed_targets`).
    """
    optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)
    if weight_decay:
        kernel = decay_kernel(model, decay_layer)
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v is not kernel])
    if distill:
        model.compile(optimizer, loss=distill_lib.DistillationLoss(distill), metrics=[distill_lib.label_accuracy])
    else:
        model.compile(optimizer, loss=LOSS, metrics=["categorical_accuracy"])
    return model


def decay_layer_name(model):
    """Where the recipe's weight decay goes: the output layer (``output``), whose hinge-loss scores make
    it BinaryConnect's L2-SVM; with a group-sum head, which has no weights, the last hidden layer, whose
    bits the groups count (the layer right before :class:`~iprune_tf.workflow.heads.GroupSum`)."""
    inner = [getattr(layer, "layer", layer) for layer in model.layers]  # pruning wrappers by their layer's name
    sums = [i for i, layer in enumerate(inner) if isinstance(layer, heads.GroupSum)]
    if not sums:
        return DECAY_LAYER
    kernels = [layer.name for layer in inner[: sums[0]] if is_supported(layer)]
    if not kernels:
        raise ValueError(f"Model '{model.name}' has a GroupSum but no Dense/Conv2D layer before it.")
    return kernels[-1]


def decay_kernel(model, name=None):
    """The latent kernel variable of layer ``name`` (default :func:`decay_layer_name`), pruned or not: the
    one variable the recipe's weight decay touches."""
    name = name or decay_layer_name(model)
    inner = {getattr(layer, "layer", layer).name: getattr(layer, "layer", layer) for layer in model.layers}
    if name not in inner:
        raise ValueError(f"Weight decay goes to the layer named '{name}', which this model lacks; layers: "
                         f"{list(inner)}.")
    return latent_kernel(inner[name])


def steps_per_epoch(config, n_train):
    return -(-n_train // config.batch_size)


def pruning_schedule(config, n_train):
    """The run's schedule: gradual over ``epochs_prune`` epochs, or one shot at step 1."""
    if config.schedule == "oneshot" or config.epochs_prune == 0:
        return FanInSchedule()
    end = config.epochs_prune * steps_per_epoch(config, n_train)
    return FanInSchedule(begin_step=1, end_step=end, frequency=config.frequency, last_halving=config.last_halving)


class CosineRetraining(keras.callbacks.Callback):
    """Before each step, sets the rate to ``base * (1 + cos(pi * t)) / 2``, ``t`` the fraction of the
    ``steps`` retraining steps done after ``start`` (the rate stays ``base`` before). ``t`` comes from
    the optimizer's step count, so a run resumed from a checkpoint continues the same curve."""

    def __init__(self, base, start, steps):
        super().__init__()
        self.base, self.start, self.steps = base, start, steps

    def rate(self, step):
        t = min(max(step - self.start, 0) / self.steps, 1.0)
        return self.base * 0.5 * (1 + math.cos(math.pi * t))

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        keras.backend.set_value(optimizer.learning_rate, self.rate(int(optimizer.iterations.numpy())))


def retraining_callbacks(config, n_train):
    """The pruned phase's learning-rate callbacks: none for the paper's constant rate."""
    if config.retrain_lr == "constant":
        return []
    per_epoch = steps_per_epoch(config, n_train)
    gradual = config.schedule == "gradual" and config.epochs_prune > 0
    start = config.epochs_prune * per_epoch if gradual else 0
    return [CosineRetraining(config.rate("pruned"), start, (config.epochs_prune + config.epochs_retrain) * per_epoch - start)]


def build_model(config, flavour, input_shape, num_classes):
    """The preset's model in ``flavour`` for data of ``input_shape`` and ``num_classes``."""
    preset = models.get_preset(config.preset)
    l2 = config.weight_decay if config.weight_decay_mode == "l2" else None
    widths = {} if config.hidden_units is None else {_WIDTH_ARGUMENT[preset.name]: config.hidden_units}
    if config.width != 1.0:
        widths["width"] = config.width
    head = "dense" if flavour == "full_precision" else config.head  # the FP baseline is the paper's dense net
    return preset.build(flavour, num_classes=num_classes, input_shape=tuple(input_shape), output_l2=l2,
                        input_encoding=config.input_encoding, head=head, **widths)


def skip_list(config):
    """What ``prune_fan_in`` leaves dense: the config's layer names, or the preset's paper skip list for its head."""
    return models.get_preset(config.preset).skip(config.head) if config.skip is None else list(config.skip)


def prune(config, model, n_train):
    """``model`` wrapped for pruning with the run's K (K_OUT for a pruned head's output layer), schedule and skip list."""
    head = heads.parse_head(config.head)
    overrides = {"output": head.k_out} if head.kind == "pruned" else None
    return prune_fan_in(model, config.inputs_per_neuron, pruning_schedule(config, n_train), skip=skip_list(config),
                        inputs_per_layer=overrides)


def check_config(config, dataset):
    """Raise ValueError for anything that would fail only after training started.

    The data must suit the preset, and the binary model built for it must accept the run's K and
    skip list: :func:`prune` is run on it here, seconds instead of two phases before it is needed.
    """
    if len(dataset.x_train) == 0 or len(dataset.x_test) == 0:
        raise ValueError(f"data {dataset.name!r} has {len(dataset.x_train)} training and {len(dataset.x_test)} "
                         "test samples after the limits; both must be >= 1.")
    dataset = preparation.as_images(config, dataset)
    if models.get_preset(config.preset).images and dataset.x_train.ndim != 4:
        raise ValueError(f"preset {config.preset!r} needs images (N, H, W, C) or (N, H, W); data {dataset.name!r} "
                         f"has shape {dataset.x_train.shape}.")
    model = build_model(config, config.flavour, dataset.x_train.shape[1:], dataset.num_classes)
    if config.binary_init == "fp":
        binary_init_lib.warm_start(model, build_model(config, "full_precision", dataset.x_train.shape[1:], dataset.num_classes))
    prune(config, model, len(dataset.x_train))


def decoupled_decay(config):
    """The optimizer's weight decay for ``config``: its rate in decoupled mode, else 0 (L2 is in the model)."""
    return config.weight_decay if config.weight_decay_mode == "decoupled" else 0.0


def top1_accuracy(model, x, labels):
    """Top-1 accuracy of ``model`` on ``x``: the argmax of its outputs against class ``labels``."""
    scores = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(scores, axis=1) == labels))
