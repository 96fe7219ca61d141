"""Accuracy and hardware cost of the fully binary MNIST preset as a LUT network, on Fashion-MNIST.

Stages, each its own process (they can run in parallel on a shared machine):

  nice -n 15 python bench/lut_accuracy.py train --config w512_t3 [--k 8]   # dense once, then each K
  nice -n 15 python bench/lut_accuracy.py simulate --config w512_t3        # netlist on 10,000 images
  nice -n 15 python bench/lut_accuracy.py lut6 --config w512_t3            # Yosys synth -lut 6
  nice -n 15 python bench/lut_accuracy.py ice40 --config w512_t3           # Yosys synth_ice40

``train`` trains the binary dense net once, prunes it to each K (gradual geometric schedule, or the
configuration's ``last_halving``) with the configuration's output ``head`` (iprune_tf.workflow.heads;
default the paper's dense one) and retrains; the stripped models go to
``runs/lut_accuracy/<config>[_s<seed>]_k<K>.h5``. ``--seed`` trains another seed of a configuration;
``--validation`` trains on the first 55,000 training images and evaluates on the last 5,000 (for
choosing levers without the test set; results under ``<config>_val``). The other stages write
each model's Verilog netlist once (``runs/lut_accuracy/verilog/``), simulate it on all 10,000 test
images (classes must equal Keras' on every one, hidden bits the lowered model's) and synthesize it
with Yosys (LUTs, flip-flops, depth). The configurations are in ``bench/lut_configs.py``; every one tried is
kept in ``bench/results/lut_accuracy.json``.
"""
import argparse
import fcntl
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, fashion_mnist  # noqa: E402
from lut_configs import CONFIGS  # noqa: E402

import iprune_tf  # noqa: E402  (before tensorflow: it selects Keras 2)
import tensorflow as tf  # noqa: E402
from iprune_tf.workflow import distill, encoding, models  # noqa: E402
from iprune_tf.workflow import recipes  # noqa: E402
from iprune_tf._keras import keras  # noqa: E402
from iprune_tf.export import to_verilog  # noqa: E402
from iprune_tf.workflow.tables import to_table_net  # noqa: E402
from iprune_tf.export import verilog_verify as vv  # noqa: E402

WORK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "lut_accuracy")
RESULT = os.path.join(RESULTS, "lut_accuracy.json")

VALIDATION = 5000  # --validation: the last 5,000 training images, never trained on
BATCH = 100
FREQUENCY = 100
WEIGHT_DECAY = 5e-2


def model_path(name, what):
    return os.path.join(WORK, f"{name}_{what}.h5")


def load_results():
    if os.path.exists(RESULT):
        with open(RESULT) as f:
            return json.load(f)
    return {"configs": {}}


def save_entry(name, entry, key=None):
    """Merge ``entry`` into configuration ``name`` (or its sub-dict ``key``) of the results file, under a
    lock: the stages of one configuration run in parallel processes."""
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "results.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results()
        config = results["configs"].setdefault(name, {})
        (config.setdefault(key, {}) if key else config).update(entry)
        results["machine_note"] = "2 CPU cores shared with other jobs; training run with nice -n 15"
        tmp = f"{RESULT}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, RESULT)


def pruning_recipe(cfg, k):
    """The pipeline's config of ``cfg``'s pruned phase at ``k`` (``lr_decay`` is its ``retrain_lr``), whose
    schedule, skip list, K_OUT and rate callbacks :func:`train` uses as ``iprune train`` does."""
    return recipes.RunConfig(flavour="binary", inputs_per_neuron=k, epochs_prune=cfg["epochs_prune"],
                             epochs_retrain=cfg["epochs_retrain"], frequency=FREQUENCY, batch_size=BATCH,
                             learning_rate=cfg["lr"], retrain_lr=cfg["lr_decay"], head=cfg.get("head", "dense"),
                             last_halving=cfg.get("last_halving"))


def hidden_units(cfg):
    return tuple(cfg["hidden"]) if isinstance(cfg["hidden"], (tuple, list)) else (cfg["hidden"],) * 2


def run_name(config, seed=0, validation=False):
    """Where a configuration's run is stored: ``config``, ``config_s<seed>``, with ``_val`` on the validation split."""
    return config + (f"_s{seed}" if seed else "") + ("_val" if validation else "")


def split_data(validation):
    """``fashion_mnist()``, or with ``validation`` its first 55,000 training images against the last 5,000."""
    data = fashion_mnist()
    if not validation:
        return data
    x, y = data[0], data[1]
    n = len(x) - VALIDATION
    return x[:n], y[:n], x[n:], y[n:], np.argmax(y[n:], axis=1)


def input_encoding(cfg, x):
    """``cfg``'s encoding spec, or for ``quantile:T`` a T-level thermometer at quantiles of the training pixels ``x``."""
    kind, _, levels = cfg["encoding"].partition(":")
    if kind != "quantile":
        return cfg["encoding"]
    thresholds = encoding.quantile_thresholds(x, int(levels))
    return encoding.ThermometerEncoding(int(levels), thresholds=thresholds, name="input_encoding")


def training_data(cfg, x, y):
    """The training images of the phases ``cfg`` trains, as ``fit`` keyword arguments, and how many there are per
    epoch: as given; with ``augment="flip"`` each one and its left-right mirror (a mirrored garment is the same class);
    with ``augment="noise:STD"`` shuffled batches whose pixels get fresh Gaussian noise of that std every epoch,
    clipped to [0, 1] (the thermometer bits of pixels near a threshold flip)."""
    spec = cfg.get("augment")
    kind, _, value = (spec or "").partition(":")
    if spec is None:
        return dict(x=x, y=y, batch_size=BATCH), len(x)
    if spec == "flip":
        return dict(x=np.concatenate([x, x[:, :, ::-1]]), y=np.concatenate([y, y]), batch_size=BATCH), 2 * len(x)
    if kind == "noise" and value.replace(".", "", 1).isdigit() and float(value) > 0:
        def noisy(images, targets):
            noise = tf.random.normal(tf.shape(images), stddev=float(value))
            return tf.clip_by_value(images + noise, 0.0, 1.0), targets
        batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(BATCH).map(noisy)
        return dict(x=batches), len(x)
    raise ValueError(f"augment must be 'flip' or 'noise:STD' with STD > 0, got {spec!r}")


def _teacher(name, cfg, data, evaluated="test", epochs=None):
    """The full-precision net of run ``name`` (the pipeline's ``dense_fp``: the paper's dense head, the run's input
    code and widths, ``epochs`` or the whole epoch budget), loaded or trained and saved: the distillation teacher."""
    path = model_path(name, "fp")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    x, y, x_test, y_test, labels = data
    fp = recipes.compile_model(models.mnist_mlp("full_precision", hidden_units=hidden_units(cfg),
                                                input_encoding=input_encoding(cfg, x)), cfg["lr"], WEIGHT_DECAY)
    start, epochs = time.time(), epochs or cfg["epochs_dense"] + cfg["epochs_prune"] + cfg["epochs_retrain"]
    fp.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=(x_test, y_test), verbose=2)
    save_entry(name, {"dense_fp": {f"{evaluated}_accuracy": recipes.top1_accuracy(fp, x_test, labels),
                                   "epochs": epochs, "wall_time_s": round(time.time() - start, 1)}})
    fp.save(path, include_optimizer=False)
    return fp


def _targets(cfg, data, teacher):
    """``data``'s hinge targets, packed with ``teacher``'s scores when ``cfg`` distills (weight ``cfg["distill"]``)."""
    x, y, x_test, y_test, _ = data
    if not cfg.get("distill"):
        return y, y_test
    return distill.teacher_targets(teacher, x, y), distill.teacher_targets(teacher, x_test, y_test)


def _dense(name, cfg, data, evaluated="test", teacher=None):
    """The binary dense net of run ``name``: loaded if already trained, else trained (distilled from ``teacher`` when
    ``cfg`` says so) and saved (its accuracy on the ``evaluated`` split recorded)."""
    path = model_path(name, "dense")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    x, _, x_test, _, labels = data
    y, y_test = _targets(cfg, data, teacher)
    dense = recipes.compile_model(models.mnist_mlp("binary", hidden_units=hidden_units(cfg),
                                                   input_encoding=input_encoding(cfg, x), head=cfg.get("head", "dense")),
                                  cfg["lr"], WEIGHT_DECAY, distill=cfg.get("distill", 0.0))
    start = time.time()
    dense.fit(x, y, batch_size=BATCH, epochs=cfg["epochs_dense"], validation_data=(x_test, y_test), verbose=2)
    save_entry(name, {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                      "dense_binary": {f"{evaluated}_accuracy": recipes.top1_accuracy(dense, x_test, labels),
                                       "wall_time_s": round(time.time() - start, 1)}})
    dense.save(path, include_optimizer=False)
    return dense


def _dense_run(config, seed, validation):
    """The run name and configuration of ``config``'s dense net: its ``dense_from`` configuration's, else its own."""
    dense_config = CONFIGS[config].get("dense_from", config)
    return run_name(dense_config, seed, validation), CONFIGS[dense_config]


def train(config, ks=None, seed=0, validation=False):
    """Train (or load) the dense net of ``config`` (its ``dense_from`` configuration's if any), then prune and
    retrain it to each K of ``ks`` that has no saved model yet (a killed run resumes at the next model). A
    configuration with ``distill`` learns from the full-precision net of its dense net's run in every phase it trains
    (with ``dense_from``, only the pruned one)."""
    cfg = CONFIGS[config]
    if cfg.get("tables_from"):
        return train_tables(config, ks, seed, validation)
    name = run_name(config, seed, validation)
    os.makedirs(WORK, exist_ok=True)
    keras.utils.set_random_seed(seed)
    data = split_data(validation)
    x, _, x_test, _, labels = data
    evaluated = "validation" if validation else "test"
    dense_name, dense_cfg = _dense_run(config, seed, validation)
    teacher = _teacher(dense_name, dense_cfg, data, evaluated) if cfg.get("distill") or dense_cfg.get("distill") else None
    keras.utils.set_random_seed(seed)  # the binary nets' draws as without a teacher
    dense = _dense(dense_name, dense_cfg, data, evaluated, teacher)
    y, y_test = _targets(cfg, data, teacher)
    fit_data, count = training_data(cfg, x, y)
    for k in ks or cfg["ks"]:
        if os.path.exists(model_path(name, f"k{k}")):
            continue
        start = time.time()
        recipe = pruning_recipe(cfg, k)
        pruned = recipes.prune(recipe, dense, count)
        recipes.compile_model(pruned, cfg["lr"], WEIGHT_DECAY, distill=cfg.get("distill", 0.0))
        pruned.fit(**fit_data, epochs=cfg["epochs_prune"] + cfg["epochs_retrain"],
                   validation_data=(x_test, y_test), verbose=2,
                   callbacks=[iprune_tf.UpdatePruningStep(), *recipes.retraining_callbacks(recipe, count)])
        stripped = iprune_tf.strip_pruning(pruned)
        stripped.save(model_path(name, f"k{k}"), include_optimizer=False)
        save_entry(name, {f"k{k}": {f"keras_{evaluated}_accuracy": recipes.top1_accuracy(stripped, x_test, labels),
                                    "wall_time_s": round(time.time() - start, 1), "seed": seed},
                          "config": {key: list(v) if isinstance(v, tuple) else v for key, v in cfg.items()}})
        print(f"{name} K={k}: {load_results()['configs'][name][f'k{k}']}", flush=True)


def train_tables(config, ks=None, seed=0, validation=False):
    """Fine-tune the truth tables (:func:`iprune_tf.workflow.tables.to_table_net`) of each K net of ``config``'s
    ``tables_from`` run; the table net must start at that net's classes on every evaluated image. With ``distill``
    the tables learn from the full-precision net of the source's dense run too (trained once for ``teacher_epochs``,
    then loaded)."""
    cfg = CONFIGS[config]
    name, source = run_name(config, seed, validation), run_name(cfg["tables_from"], seed, validation)
    data = split_data(validation)
    x, _, x_test, _, labels = data
    evaluated = "validation" if validation else "test"
    teacher = (_teacher(*_dense_run(cfg["tables_from"], seed, validation), data, evaluated, cfg.get("teacher_epochs"))
               if cfg.get("distill") else None)
    y, y_test = _targets(cfg, data, teacher)
    fit_data, count = training_data(cfg, x, y)
    for k in ks or cfg["ks"]:
        if os.path.exists(model_path(name, f"k{k}")):
            continue
        keras.utils.set_random_seed(seed)
        pruned = _load(source, k)
        net = recipes.compile_model(to_table_net(pruned, cfg["table_margin"]), cfg["table_lr"],
                                    distill=cfg.get("distill", 0.0))
        before = net.predict(x_test, batch_size=1000, verbose=0).argmax(1)
        reference = pruned.predict(x_test, batch_size=1000, verbose=0).argmax(1)
        if not np.array_equal(before, reference):
            raise AssertionError(f"{name}: the table net starts on other classes than {source} on "
                                 f"{int(np.sum(before != reference))} images")
        steps = cfg["table_epochs"] * -(-count // BATCH)
        start = time.time()
        net.fit(**fit_data, epochs=cfg["table_epochs"], validation_data=(x_test, y_test), verbose=2,
                callbacks=[recipes.CosineRetraining(cfg["table_lr"], 0, steps)])
        net.save(model_path(name, f"k{k}"), include_optimizer=False)
        save_entry(name, {f"k{k}": {f"keras_{evaluated}_accuracy": recipes.top1_accuracy(net, x_test, labels),
                                    f"start_{evaluated}_accuracy": float(np.mean(before == labels)),
                                    "wall_time_s": round(time.time() - start, 1), "seed": seed, "source": source},
                          "config": {key: list(v) if isinstance(v, tuple) else v for key, v in cfg.items()}})
        print(f"{name} K={k}: {load_results()['configs'][name][f'k{k}']}", flush=True)


def _load(name, k):
    return keras.models.load_model(model_path(name, f"k{k}"), compile=False)


def _design(name, k, model=None, scores="affine"):
    """The netlist of the K model with the head's ``scores`` (to_verilog's), written once (the stages of one K may
    run in parallel processes)."""
    out_dir = os.path.join(WORK, "verilog", f"{name}_k{k}" + ("" if scores == "affine" else f"_{scores}"))
    if os.path.exists(os.path.join(out_dir, "design.json")):
        return vv.VerilogDesign.load(out_dir)
    return to_verilog(model or _load(name, k), out_dir, scores=scores)


def hardware_key(k, scores):
    """Where a K net's netlist figures go: ``k<K>_hardware``, ``k<K>_hardware_ranks`` for rank-table scores."""
    return f"k{k}_hardware" + ("" if scores == "affine" else f"_{scores}")


def simulate(name, k, simulator="verilator", scores="affine"):
    """Netlist classes on all 10,000 test images against Keras' and the labels; hidden bits against lower()."""
    _, _, x_test, _, labels = fashion_mnist()
    model = _load(name, k)
    design = _design(name, k, model, scores)
    start = time.time()
    check = vv.verify(model, design, x_test, simulator=simulator)
    save_entry(name, {"netlist_test_accuracy": float(np.mean(check["classes"] == labels)),
                      "netlist_equals_keras": f"{check['class_agreement']}/{check['samples']}",
                      "hidden_bit_mismatches": check["hidden_bit_mismatches"], "simulator": simulator,
                      "simulation_wall_s": round(time.time() - start, 1),
                      "score_fraction_bits": design.score_fraction_bits,
                      "score_order_conflicts": design.score_order_conflicts}, key=hardware_key(k, scores))


def synthesize(name, k, target, granularity_study=False, scores="affine"):
    """Yosys figures of the K net for ``target``; with ``granularity_study``, also one module per neuron."""
    model = _load(name, k)
    design = _design(name, k, model, scores)
    figures = vv.synthesize(design, target)
    save_entry(name, {target: figures}, key=hardware_key(k, scores))
    if granularity_study:
        save_entry(name, {"granularity": granularity(model, os.path.join(WORK, "verilog", f"{name}_k{k}_neuron"),
                                                     figures)}, key=f"k{k}_hardware")


def granularity(model, out_dir, lut6):
    """LUT6 figures of one module per layer (flattened, the default) vs one module per neuron."""
    design = to_verilog(model, out_dir, overwrite=True, granularity="neuron")
    def row(figures):
        last = list(figures["layers"].values())[-1]  # the output module: the same in every variant
        return {**figures["total"], "hidden_layer_luts": figures["total"]["luts"] - last["luts"], "cpu_s": figures["cpu_s"]}

    rows = {"layer_modules": row(lut6)}
    for flatten in (True, False):
        rows[f"neuron_modules_{'flattened' if flatten else 'kept'}"] = row(vv.synthesize(design, "lut6", flatten=flatten))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["train", "simulate", "lut6", "ice40"])
    p.add_argument("--config", required=True, choices=sorted(CONFIGS))
    p.add_argument("--seed", type=int, default=0, help="train: the seed (other than 0: a run of its own)")
    p.add_argument("--validation", action="store_true",
                   help=f"train: hold out the last {VALIDATION:,} training images and evaluate on them")
    p.add_argument("--k", type=int, action="append", help="only these K (default: the configuration's)")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "iverilog"])
    p.add_argument("--granularity-study", action="store_true", help="lut6: also synthesize one module per neuron")
    p.add_argument("--scores", default="affine", choices=["affine", "ranks"],
                   help="simulate/lut6/ice40: the head's class scores in the netlist (to_verilog's scores)")
    args = p.parse_args(argv)
    if args.stage == "train":
        return train(args.config, args.k, args.seed, args.validation)
    name = run_name(args.config, args.seed)
    for k in args.k or CONFIGS[args.config]["ks"]:
        if args.stage == "simulate":
            simulate(name, k, args.simulator, args.scores)
        else:
            synthesize(name, k, args.stage, args.granularity_study, args.scores)


if __name__ == "__main__":
    main()
