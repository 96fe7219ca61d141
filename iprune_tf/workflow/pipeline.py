"""The train -> prune -> retrain -> evaluate pipeline over a run directory, resumable at every epoch.

Phases, each saved to the run directory (:mod:`iprune_tf.workflow.runs`) as soon as it ends:

1. ``dense_fp``: the full-precision dense baseline, trained for the same total number of
   epochs as the binary pipeline (the "same budget"), or ``epochs_fp`` epochs when set.
2. ``dense_binary``: the binary flavour, dense, ``epochs_dense`` epochs; from random weights, or with
   ``binary_init="fp"`` from the ``dense_fp`` net's weights (:func:`~iprune_tf.workflow.binary_init.warm_start`).
3. ``pruned``: the binary net pruned from full fan-in to K inputs per neuron over the first
   ``epochs_prune`` epochs (geometric :class:`~iprune_tf.FanInSchedule`, its last halving slowed
   by ``last_halving``, masks recomputed every ``frequency`` steps; ``schedule="oneshot"`` prunes
   to K at the first step instead), then
   retrained with fixed masks for ``epochs_retrain`` epochs; stripped to ``pruned_stripped``.

4. ``tables`` (only with ``epochs_tables > 0``): the pruned net's hidden neurons as truth tables of
   their K inputs (:func:`~iprune_tf.workflow.tables.to_table_net`, starting at the pruned net's
   outputs), fine-tuned for ``epochs_tables`` epochs at ``tables_lr`` (default the binary rate) with a cosine
   decay to 0, no weight decay (the output layer's ±1 weights stay).

With ``distill > 0`` the binary phases learn from the ``dense_fp`` net's scores too
(:mod:`~iprune_tf.workflow.distill`); ``tables_distill`` sets the tables phase's weight apart.

Every epoch ends with a checkpoint: all model weights (masks, pruning steps and batch-norm
statistics included) and the optimizer's state. Each phase starts from a seed derived from
``(seed, phase)`` and each epoch visits the training set in an order derived from
``(seed, phase, epoch)`` alone, so a run resumed after a kill sees the same initial weights and
batches as one that was never interrupted.

Before anything is written, :func:`validate` checks the whole configuration (run directory, data,
K and skip list against the preset's model), so a mistake costs seconds, not phases, and leaves no
run directory. Under a ``tf.distribute`` strategy the models are built and compiled in its scope and
only the chief writes files.
"""
import hashlib
import shutil
import time

import numpy as np

from iprune_tf.workflow import binary_init
from iprune_tf.workflow import data as data_lib
from iprune_tf.workflow import distill
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow import strategies
from iprune_tf.workflow import tables
from iprune_tf._keras import keras, tf
from iprune_tf.pruning import inspection
from iprune_tf.pruning.prune import strip_pruning
from iprune_tf.workflow.recipes import ALL_PHASES, PHASES, TABLES
from iprune_tf.workflow.runs import Run
from iprune_tf.pruning.wrapper import PruneFanIn
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep


def validate(run_dir, config, resume=False, overwrite=False, check_dir=True):
    """Everything :func:`train` would fail on later, checked now; returns the loaded (raw) data set.

    Raises ValueError (``DataError`` for data), FileExistsError or PermissionError; writes nothing.
    """
    if check_dir:
        Run.check(run_dir, config, resume, overwrite)
    dataset = data_lib.load_dataset(config.data, config.limit_train, config.limit_test)
    recipes.check_config(config, dataset)
    return dataset


def train(run_dir, config, resume=False, overwrite=False, verbose=1, strategy=None):
    """Run (or, with ``resume=True``, continue) the whole pipeline in ``run_dir``; returns the :class:`Run`.

    ``verbose`` is Keras' (1: progress bars, 2: one line per epoch). ``strategy``: a
    ``tf.distribute`` strategy (default: the current one), created before calling. Only its chief
    writes ``run_dir``; another worker works in a temporary directory, deleted before returning.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = strategies.is_chief(strategy)
    raw = validate(run_dir, config, resume, overwrite, check_dir=chief)
    run = Run.create(run_dir, config, resume, overwrite) if chief else Run.scratch(run_dir, config, resume)
    try:
        _train(run, raw, strategy, verbose)
    finally:
        if not chief:
            shutil.rmtree(run.dir, ignore_errors=True)
    return run


def _train(run, raw, strategy, verbose):
    config = run.config
    dataset, _ = preparation.preprocess(config, raw, run.dir)
    run.data = {
        "name": dataset.name, "train_samples": len(dataset.x_train), "test_samples": len(dataset.x_test),
        "num_classes": dataset.num_classes, "input_shape": list(dataset.x_train.shape[1:]),
        "preprocessing": preparation.preprocessing(config),
    }
    for phase in ALL_PHASES:
        if run.done(phase):
            run.clear_checkpoints(phase)  # left over when killed between saving the phase and this cleanup
    run.begin_segment(None, **strategies.describe(strategy))
    _Pipeline(run, dataset, strategy, verbose).run_phases()
    run.end_segment()


def mask_digest(model):
    """SHA-256 of every pruned layer's mask (this process's copy), in layer order: equal digests, equal masks."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            digest.update(layer.layer.name.encode() + np.ascontiguousarray(layer.mask.numpy()).tobytes())
    return digest.hexdigest()


def epoch_order(seed, phase, epoch, n):
    """The order in which ``epoch`` of ``phase`` visits the ``n`` training samples: a function of these alone."""
    return np.random.default_rng([seed, ALL_PHASES.index(phase), epoch]).permutation(n)


class _PhaseProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress output with epochs counted over the phase ("Epoch 3/5"), not over one ``fit`` call."""

    def __init__(self, epochs):
        super().__init__(count_mode="steps")
        self.phase_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.phase_epochs


class _Pipeline:
    """Trains, checkpoints and saves the phases of one run on its preprocessed data set."""

    def __init__(self, run, dataset, strategy, verbose):
        self.run, self.config, self.dataset = run, run.config, dataset
        self.strategy, self.verbose = strategy, verbose
        self.y_train = data_lib.to_hinge_targets(dataset.y_train, dataset.num_classes)
        self.y_test = data_lib.to_hinge_targets(dataset.y_test, dataset.num_classes)
        self.phase_start = time.time()
        self.distilled = None  # the binary phases' targets with the teacher's scores, made once

    def run_phases(self):
        config, dense_binary = self.config, None
        if not self.run.done("dense_fp"):
            self._phase("dense_fp", lambda: self._dense("dense_fp", "full_precision", config.fp_epochs))
        if not self.run.done("dense_binary"):
            dense_binary = self._phase("dense_binary", lambda: self._dense("dense_binary", config.flavour,
                                                                           config.epochs_dense))
        if not self.run.done("pruned"):
            self._phase("pruned", lambda: self._pruned(dense_binary or self.run.load_model("dense_binary")))
        if config.epochs_tables and not self.run.done(TABLES):
            self._phase(TABLES, self._tables)

    def _phase(self, name, train_fn):
        """Train phase ``name`` from its seed, then save its model and results at once (the resume point)."""
        print(f"\n== {name} ==", flush=True)
        keras.utils.set_random_seed(self.config.seed * len(PHASES) + ALL_PHASES.index(name))
        self.phase_start = time.time()
        model, result = train_fn()
        result["wall_time_s"] = round(time.time() - self.phase_start, 1)
        self.run.save_model(name, model)
        if name == "pruned":
            self.run.save_model("pruned_stripped", strip_pruning(model))
        self.run.phases[name] = result
        self.run.save()
        self.run.clear_checkpoints(name)
        print(f"{name}: test accuracy {result['test_accuracy']:.4f} ({result['wall_time_s']} s)", flush=True)
        return model

    def _fit_epochs(self, name, model, epochs, callbacks=(), at_epoch_end=None):
        """Train ``model`` to ``epochs`` epochs of phase ``name``, from its newest checkpoint if any.

        Each epoch ends with ``at_epoch_end(epochs_done)`` (its dict goes into the checkpoint's
        metadata) and a checkpoint. Returns the metadata.
        """
        start, meta, checkpoint = 0, {}, self.run.load_checkpoint(name)
        if checkpoint is not None:
            with self.strategy.scope():
                checkpoint.restore(model)
            start, meta = checkpoint.epoch, checkpoint.meta
            self.phase_start -= meta.get("wall_time_s", 0.0)
            print(f"{name}: resumed after epoch {start} of {epochs}", flush=True)
        if self.run.segments[-1]["from"] is None:
            self.run.segments[-1]["from"] = {"phase": name, "epoch": start}
        (y, y_test), x, batch = self._targets(name), self.dataset.x_train, self.config.batch_size
        callbacks = [*callbacks, _PhaseProgress(epochs)]
        for epoch in range(start, epochs):
            order = epoch_order(self.config.seed, name, epoch, len(x))
            model.fit(x[order], y[order], batch_size=batch, epochs=epoch + 1, initial_epoch=epoch, shuffle=False,
                      validation_data=(self.dataset.x_test, y_test), callbacks=callbacks, verbose=self.verbose)
            meta.update(at_epoch_end(epoch + 1) if at_epoch_end else {})
            meta["wall_time_s"] = time.time() - self.phase_start
            self.run.save_checkpoint(name, epoch + 1, model, meta)
        return meta

    def _targets(self, phase):
        """Training and test targets of ``phase``: the ±1 hinge targets, packed with the ``dense_fp`` teacher's
        scores (:mod:`~iprune_tf.workflow.distill`) in the phases the run distills (``RunConfig.distill_weight``)."""
        if not self.config.distill_weight(phase):
            return self.y_train, self.y_test
        if self.distilled is None:
            teacher, ds = self.run.load_model("dense_fp"), self.dataset
            self.distilled = (distill.teacher_targets(teacher, ds.x_train, self.y_train),
                              distill.teacher_targets(teacher, ds.x_test, self.y_test))
        return self.distilled

    def _build_compiled(self, build, phase):
        with self.strategy.scope():
            return recipes.compile_model(build(), self.config.rate(phase), recipes.decoupled_decay(self.config),
                                         distill=self.config.distill_weight(phase))

    def evaluate(self, model):
        return recipes.top1_accuracy(model, self.dataset.x_test, self.dataset.y_test)

    def _dense(self, name, flavour, epochs):
        ds = self.dataset
        model = self._build_compiled(lambda: recipes.build_model(self.config, flavour, ds.x_train.shape[1:],
                                                                 ds.num_classes), name)
        if name == "dense_binary" and self.config.binary_init == "fp":
            binary_init.warm_start(model, self.run.load_model("dense_fp"))
        self._fit_epochs(name, model, epochs)
        return model, {"test_accuracy": self.evaluate(model), "epochs": epochs, "flavour": flavour}

    def _tables(self):
        config, pruned = self.config, self.run.load_model("pruned_stripped")
        with self.strategy.scope():
            model = recipes.compile_model(tables.to_table_net(pruned), config.rate(TABLES),
                                          distill=config.distill_weight(TABLES))
        steps = config.epochs_tables * recipes.steps_per_epoch(config, len(self.dataset.x_train))
        start = self.evaluate(model)
        self._fit_epochs(TABLES, model, config.epochs_tables, [recipes.CosineRetraining(config.rate(TABLES), 0, steps)])
        return model, {"test_accuracy": self.evaluate(model), "test_accuracy_at_start": start,
                       "epochs": config.epochs_tables}

    def _pruned(self, dense):
        config, run = self.config, self.run
        before = inspection.latent_kernels(dense)
        run.save_snapshot("before_pruning", before)
        n_train = len(self.dataset.x_train)
        model = self._build_compiled(lambda: recipes.prune(config, dense, n_train), "pruned")
        gradual = config.schedule == "gradual" and config.epochs_prune > 0
        if not gradual:
            run.save_snapshot("after_pruning", inspection.one_shot_masked(model, before))

        def at_epoch_end(epoch):
            if not (gradual and epoch == config.epochs_prune):
                return {}
            run.save_snapshot("after_pruning", inspection.latent_kernels(model))
            return {"test_accuracy_after_pruning": self.evaluate(model)}

        total = config.epochs_prune + config.epochs_retrain
        callbacks = [UpdatePruningStep(), *recipes.retraining_callbacks(config, n_train)]
        meta = self._fit_epochs("pruned", model, total, callbacks, at_epoch_end)
        run.save_snapshot("after_retraining", inspection.latent_kernels(model))
        digest = mask_digest(model)
        print(f"pruned: masks sha256 {digest}", flush=True)  # equal on every worker, and after a resume
        return model, {
            "test_accuracy": self.evaluate(strip_pruning(model)),
            "test_accuracy_after_pruning": meta.get("test_accuracy_after_pruning"),
            "epochs": total,
            "inputs_per_neuron": config.inputs_per_neuron,
            "schedule": recipes.pruning_schedule(config, n_train).get_config(),
            "mask_sha256": digest,
        }
