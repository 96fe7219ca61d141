"""Accuracy over seeds, and retraining levers compared on the same pruned start point.

    iprune train --seed N ... --out runs/seeds/sN_k8          # per seed: the pipeline (dense phases + K=8)
    python bench/accuracy_seeds.py dense runs/seeds/sN_k8 --seed N   # or: its dense binary phase first
    python bench/accuracy_seeds.py prune runs/seeds/sN_k8 --inputs 6 [--variants constant cosine]
    python bench/accuracy_seeds.py table runs/fashion_mnist_k8 runs/seeds/s1_k8 runs/seeds/s2_k8

``dense`` starts the run of ``iprune train --seed N`` (the main job's recipe) with its dense binary
phase, so that pruning can start before the 35-epoch full-precision baseline is trained;
``iprune train --resume`` on the same directory trains the remaining phases later. (That phase draws
its own random numbers, so it is a sample of the seed's recipe, not ``iprune train``'s bit for bit.)

``prune`` reuses a run's dense binary net (its seed's dense phases are shared between K=8 and
K=6), prunes it to ``--inputs`` over the run's ``epochs_prune`` epochs (or ``--epochs-prune``,
keeping the total budget; ``--frequency``, ``--last-halving`` and ``--interpolation`` change how the masks move) and
then retrains once per variant, every variant from the same
after-pruning state (weights, masks and Adam state restored), so the levers are compared paired:

* ``constant``: the paper's recipe, Adam at a constant rate (what ``iprune train`` does);
* ``cosine``: the rate decays from its value to 0 along a half cosine over the retraining steps.

Every variant is also evaluated with batch-norm statistics re-estimated on the training set
(:func:`reestimate_batchnorm`): training uses batch statistics, so re-estimating them after the
last mask change changes nothing but the evaluation, and doing it at the end measures the lever.
Results go to ``bench/results/accuracy_seeds_runs/`` per (seed, K); ``table`` gathers them with the
runs' own phases into ``bench/results/accuracy_seeds.json`` as mean ± std over seeds.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

import iprune_tf  # noqa: F401  (pins Keras 2 before tensorflow is imported)
from common import RESULTS, write_result
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow import runs as run_lib
from iprune_tf._keras import keras
from iprune_tf.workflow.data import to_hinge_targets
from iprune_tf.pruning.layers import is_kernel
from iprune_tf.pruning.masking import fan_in
from iprune_tf.pruning.prune import prune_fan_in, strip_pruning
from iprune_tf.pruning.schedules import FanInSchedule, PolynomialDecay
from iprune_tf.workflow.runs import Run

RUNS_RESULTS = os.path.join(RESULTS, "accuracy_seeds_runs")
VARIANTS = ("constant", "cosine")


class TestCurve(keras.callbacks.Callback):
    """Top-1 test accuracy after every epoch (the mask is applied inside the wrappers)."""

    def __init__(self, x, labels):
        super().__init__()
        self.x, self.labels, self.curve = x, labels, []

    def on_epoch_end(self, epoch, logs=None):
        self.curve.append(round(recipes.top1_accuracy(self.model, self.x, self.labels), 4))


def reestimate_batchnorm(model, x, batch_size=1000):
    """Set every BatchNormalization layer's moving mean and variance to its input's statistics on ``x``.

    Layers are visited in order, each with the earlier layers already re-estimated. Returns ``model``.
    """
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, layer.input)
        total, total_sq, n = 0.0, 0.0, 0
        for start in range(0, len(x), batch_size):
            h = probe(x[start:start + batch_size], training=False).numpy().astype(np.float64)
            h = h.reshape(-1, h.shape[-1])
            total, total_sq, n = total + h.sum(0), total_sq + (h * h).sum(0), n + len(h)
        mean = total / n
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / n - mean * mean, 0).astype(np.float32))
    return model


def dense_binary_first(run_dir, seed, verbose=2):
    """Create ``run_dir`` for the default recipe at ``seed`` and train only its dense binary phase."""
    config = recipes.RunConfig(epochs_retrain=15, seed=seed)
    run = Run.create(run_dir, config)
    keras.utils.set_random_seed(seed)
    data, _ = preparation.prepare_data(config, run.dir)
    run.data = {"name": data.name, "train_samples": len(data.x_train), "test_samples": len(data.x_test),
                "num_classes": data.num_classes, "input_shape": list(data.x_train.shape[1:]), "preprocessing": "none"}
    start = time.time()
    model = recipes.build_model(config, config.flavour, data.x_train.shape[1:], data.num_classes)
    recipes.compile_model(model, config.learning_rate, recipes.decoupled_decay(config))
    model.fit(data.x_train, to_hinge_targets(data.y_train, data.num_classes), batch_size=config.batch_size,
              epochs=config.epochs_dense, verbose=verbose)
    run.save_model("dense_binary", model)
    run.phases["dense_binary"] = {"test_accuracy": recipes.top1_accuracy(model, data.x_test, data.y_test),
                                  "epochs": config.epochs_dense, "flavour": config.flavour,
                                  "wall_time_s": round(time.time() - start, 1), "trained_first_by": "bench/accuracy_seeds.py dense"}
    run.save()
    print("dense_binary", run.phases["dense_binary"], flush=True)


def _state(model):
    optimizer = model.optimizer
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    return list(model.weights) + list(variables)


def prune(run_dir, inputs, variants, epochs_prune=None, frequency=None, interpolation="geometric", last_halving=None,
          verbose=2):
    """Prune ``run_dir``'s dense binary net to ``inputs`` and retrain it once per variant; returns the result dict."""
    run = Run(run_dir)
    base = run.config
    epochs_prune = base.epochs_prune if epochs_prune is None else epochs_prune
    total = base.epochs_prune + base.epochs_retrain
    config = dataclasses.replace(base, inputs_per_neuron=inputs, epochs_prune=epochs_prune,
                                 epochs_retrain=total - epochs_prune, frequency=frequency or base.frequency,
                                 last_halving=last_halving)
    keras.utils.set_random_seed(config.seed)
    data, _ = preparation.prepare_data(config, run.dir)
    y_train = to_hinge_targets(data.y_train, data.num_classes)
    fit = dict(batch_size=config.batch_size, verbose=verbose)
    start = time.time()
    dense = run.load_model("dense_binary")
    schedule = _schedule(recipes.pruning_schedule(config, len(data.x_train)), interpolation, inputs, dense)
    model = prune_fan_in(dense, inputs, schedule, skip=recipes.skip_list(config))
    recipes.compile_model(model, config.learning_rate, recipes.decoupled_decay(config))
    curve = TestCurve(data.x_test, data.y_test)
    model.fit(data.x_train, y_train, epochs=epochs_prune, callbacks=[iprune_tf.UpdatePruningStep(), curve], **fit)
    result = {"run": run.dir, "seed": config.seed, "config": dict(dataclasses.asdict(config), interpolation=interpolation),
              "after_pruning": {"test_accuracy": recipes.top1_accuracy(model, data.x_test, data.y_test),
                                "curve": curve.curve, "wall_time_s": round(time.time() - start, 1)},
              "variants": {}}
    saved = [v.numpy() for v in _state(model)]
    for variant in variants:
        result["variants"][variant] = retrain_branch(model, saved, dataclasses.replace(config, retrain_lr=variant),
                                                     data, y_train, verbose=verbose)
        _save_branches(result)
        print(variant, result["variants"][variant], flush=True)
    return result


def retrain_branch(model, saved, config, data, y_train, prepare=None, verbose=2):
    """Restore the after-pruning state ``saved`` (see :func:`_state`), call ``prepare()`` if given, and
    retrain to the end of ``config``'s budget at its rate; returns the branch's test accuracy, also
    with BN statistics re-estimated, its per-epoch curve and wall time."""
    start = time.time()
    for variable, value in zip(_state(model), saved):
        variable.assign(value)
    if prepare is not None:
        prepare()
    keras.backend.set_value(model.optimizer.learning_rate, config.learning_rate)
    curve = TestCurve(data.x_test, data.y_test)
    callbacks = [iprune_tf.UpdatePruningStep(), curve, *recipes.retraining_callbacks(config, len(data.x_train))]
    model.fit(data.x_train, y_train, epochs=config.epochs_prune + config.epochs_retrain,
              initial_epoch=config.epochs_prune, callbacks=callbacks, batch_size=config.batch_size, verbose=verbose)
    final = strip_pruning(model)
    accuracy = recipes.top1_accuracy(final, data.x_test, data.y_test)
    reestimate_batchnorm(final, data.x_train)
    return {"test_accuracy": accuracy, "test_accuracy_bn_reestimated": recipes.top1_accuracy(final, data.x_test, data.y_test),
            "curve": curve.curve, "wall_time_s": round(time.time() - start, 1)}


def _schedule(default, interpolation, inputs, model):
    """The run's schedule (geometric) over the same steps, or FanInSchedule's linear interpolation, or
    tfmot's cubic PolynomialDecay (Zhu & Gupta) to the sparsity that leaves K of the widest fan-in."""
    if interpolation == "geometric":
        return default
    if interpolation == "linear":
        return FanInSchedule(default.begin_step, default.end_step, default.frequency, interpolation)
    widest = max(fan_in(w.shape) for w in model.trainable_weights if is_kernel(w))
    return PolynomialDecay(0.0, 1.0 - inputs / widest, default.begin_step, default.end_step, power=3,
                           frequency=default.frequency)


def _branch_name(config):
    subset = f"_n{config['limit_train']}" if config["limit_train"] else ""
    interpolation = config.get("interpolation", "geometric")
    suffix = "" if interpolation == "geometric" else f"_{interpolation}"
    suffix += f"_lh{config['last_halving']}" if config.get("last_halving") else ""
    return f"s{config['seed']}{subset}_k{config['inputs_per_neuron']}_p{config['epochs_prune']}_f{config['frequency']}{suffix}"


def _save_branches(result):
    os.makedirs(RUNS_RESULTS, exist_ok=True)
    with open(os.path.join(RUNS_RESULTS, _branch_name(result["config"]) + ".json"), "w") as f:
        json.dump(result, f, indent=2)


def mean_std(values):
    """``{"mean", "std", "n", "values"}`` in percent; std is the sample standard deviation (n-1)."""
    values = [100 * v for v in values]
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": round(statistics.mean(values), 2), "std": None if std is None else round(std, 2),
            "n": len(values), "values": [round(v, 2) for v in values]}


def table(run_dirs):
    """Rows of mean ± std over the seeds of ``run_dirs`` (one run per seed) and their branch results."""
    runs = [Run(d) for d in run_dirs]
    seeds = [r.config.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"one run per seed expected, got seeds {seeds}")
    rows = {}

    def add(name, per_seed):
        found = {s: v for s, v in per_seed.items() if v is not None}
        if found:
            rows[name] = dict(mean_std(list(found.values())), seeds=sorted(found))

    for phase, label in (("dense_fp", "full-precision dense"), ("dense_binary", "binary dense")):
        add(label, {r.config.seed: r.phases.get(phase, {}).get("test_accuracy") for r in runs})
    add(f"pruned K={runs[0].config.inputs_per_neuron}, iprune train ({runs[0].config.retrain_lr} rate)",
        {r.config.seed: r.phases.get("pruned", {}).get("test_accuracy") for r in runs})
    branches, settings = {}, {}
    for name in sorted(os.listdir(RUNS_RESULTS)) if os.path.isdir(RUNS_RESULTS) else []:
        with open(os.path.join(RUNS_RESULTS, name)) as f:
            result = json.load(f)
        config = result["config"]
        if os.path.normpath(result["run"]) not in [os.path.normpath(r.dir) for r in runs]:
            continue
        schedule = (config["epochs_prune"], config["epochs_retrain"], config["frequency"],
                    config.get("interpolation", "geometric"), config.get("last_halving"))
        for variant, v in result["variants"].items():
            key = _branch_key(config["inputs_per_neuron"], schedule, variant)
            settings[key] = (config["inputs_per_neuron"], schedule, variant)
            branches.setdefault(key, {})[config["seed"]] = v["test_accuracy"]
            branches.setdefault(key + ", BN re-estimated", {})[config["seed"]] = v["test_accuracy_bn_reestimated"]
    for key, per_seed in branches.items():
        add(key, per_seed)
    base_config = runs[0].config
    default_schedule = (base_config.epochs_prune, base_config.epochs_retrain, base_config.frequency, "geometric",
                        base_config.last_halving)
    # The runs' own pruned phase is the default-schedule branch of their K and rate.
    pipeline_key = _branch_key(base_config.inputs_per_neuron, default_schedule, base_config.retrain_lr)
    pipeline = {r.config.seed: r.phases.get("pruned", {}).get("test_accuracy") for r in runs}

    def paired(key, base_key):
        per_seed = branches[key]
        base = branches.get(base_key) or (pipeline if base_key == pipeline_key else {})
        base = {s: v for s, v in base.items() if v is not None}
        common = sorted(set(per_seed) & set(base))
        return dict(mean_std([per_seed[s] - base[s] for s in common]), seeds=common) if common and key != base_key else None

    rate_levers = {key: paired(key, key.replace("cosine rate", "constant rate").replace(", BN re-estimated", ""))
                   for key in branches}
    def reference(k, schedule, variant):
        """The same split of epochs with the run's frequency and geometric schedule, if measured; else the run's schedule."""
        same_split = _branch_key(k, (*schedule[:2], base_config.frequency, "geometric", None), variant)
        return same_split if same_split in branches and same_split != _branch_key(k, schedule, variant) else \
            _branch_key(k, default_schedule, variant)

    schedule_levers = {f"{key} minus {reference(*setting)}": paired(key, reference(*setting))
                       for key, setting in settings.items() if setting[1] != default_schedule}
    fp = rows.get("full-precision dense", {}).get("mean")
    for row in rows.values():
        row["gap_to_fp_points"] = None if fp is None else round(row["mean"] - fp, 2)
    wall = {phase: round(statistics.mean(r.phases[phase]["wall_time_s"] for r in runs if phase in r.phases), 1)
            for phase in run_lib.PHASES if any(phase in r.phases for r in runs)}
    return {"seeds": seeds, "runs": [r.dir for r in runs], "config": dataclasses.asdict(runs[0].config),
            "rows": rows, "lever_minus_constant_points": {k: v for k, v in rate_levers.items() if v},
            "lever_minus_default_schedule_points": {k: v for k, v in schedule_levers.items() if v},
            "mean_wall_time_s": wall}


def _branch_key(k, schedule, variant):
    epochs_prune, epochs_retrain, frequency, interpolation, last_halving = schedule
    if last_halving:
        interpolation = f"{interpolation} (last halving over {last_halving:.0%} of pruning)"
    return (f"pruned K={k}, prune {epochs_prune} + retrain {epochs_retrain} epochs, masks every {frequency} steps, "
            f"{interpolation} schedule, {variant} rate")


def format_row(row):
    std = "" if row["std"] is None else f" ± {row['std']:.2f}"
    return f"{row['mean']:.2f}%{std} (n={row['n']})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="prune a run's dense binary net to K and retrain once per variant")
    p.add_argument("run_dir")
    p.add_argument("--inputs", type=int, required=True)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--epochs-prune", type=int, default=None, help="default: the run's; the total budget is kept")
    p.add_argument("--frequency", type=int, default=None, help="steps between mask updates; default: the run's")
    p.add_argument("--interpolation", default="geometric", choices=("geometric", "linear", "polynomial"),
                   help="how the fan-in moves to K: FanInSchedule's geometric or linear, or tfmot's cubic PolynomialDecay")
    p.add_argument("--last-halving", type=float, default=None,
                   help="FanInSchedule's last_halving: fraction of the pruning steps spent on 2K -> K")
    d = sub.add_parser("dense", help="create a run (default recipe) and train its dense binary phase first")
    d.add_argument("run_dir")
    d.add_argument("--seed", type=int, required=True)
    t = sub.add_parser("table", help="mean ± std over seeds of runs (one per seed) and their branch results")
    t.add_argument("run_dirs", nargs="+")
    t.add_argument("--name", default="accuracy_seeds", help="result file: bench/results/NAME.json")
    args = parser.parse_args()
    if args.command == "dense":
        dense_binary_first(args.run_dir, args.seed)
        return
    if args.command == "prune":
        prune(args.run_dir, args.inputs, args.variants, args.epochs_prune, args.frequency, args.interpolation,
              args.last_halving)
        return
    result = table(args.run_dirs)
    for name, row in result["rows"].items():
        gap = "" if row["gap_to_fp_points"] is None else f"  ({row['gap_to_fp_points']:+.2f} pts vs FP)"
        print(f"{name}: {format_row(row)}{gap}")
    for levers, against in (("lever_minus_constant_points", " minus constant rate"),
                            ("lever_minus_default_schedule_points", "")):
        for name, row in result[levers].items():
            std = "" if row["std"] is None else f" ± {row['std']:.2f}"
            print(f"paired, {name}{against}: {row['mean']:+.2f}{std} pts (n={row['n']})")
    write_result(args.name, result, f"python bench/accuracy_seeds.py table {' '.join(args.run_dirs)} --name {args.name}")


if __name__ == "__main__":
    sys.exit(main())
