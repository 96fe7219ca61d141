"""Training-step overhead of iprune_tf against plain larq and tfmot, measured in one process.

    python bench/train_overhead.py [--steps 100] [--repeats 5] [--batch-size 100]

The MNIST preset MLP (784-1024-1024-10, BN, square hinge, Adam) is trained for ``--steps`` steps
per repeat; the variants are interleaved repeat by repeat and each figure is the median:

* ``larq``: the BinaryConnect model, no pruning (baseline a).
* ``float``: the same architecture in full precision, no pruning.
* ``tfmot_plm``: tfmot ``prune_low_magnitude`` on the float model, each hidden layer at iprune's
  sparsity 1-K/fan_in, masks updated every 100 steps (tfmot refuses larq layers) (b).
* ``tfmot_m_by_n``: tfmot ``sparsity_m_by_n=(fan_in-K, fan_in)`` on the float model (b').
* ``iprune``: iprune_tf on the BinaryConnect model, K=8, masks updated every 100 steps (c).
* ``iprune_float``: iprune_tf on the float model, same settings, the like-for-like tfmot comparison.

The output layer stays dense everywhere (the paper's MNIST skip list). Ratios are computed from
each variant's *fastest* repeat: on the shared 2-core machine this was measured on, repeats of
every variant (plain larq included) were bimodal, ~3 s or ~5.2 s per 100 steps at random, so the
median mostly counts stalls; the minimum is the cost of the code. Medians are reported too.
"""
import argparse
import sys

import numpy as np

import iprune_tf  # first: pins Keras 2 before tensorflow is imported
import tensorflow_model_optimization as tfmot
from common import fashion_mnist, m_by_n_kwargs, median_seconds, print_table, tfmot_pruned, write_result
from iprune_tf.workflow import models
from iprune_tf.workflow import recipes

K = 8
FREQUENCY = 100
LONG = 10**6  # schedules stay active (masks keep updating every FREQUENCY steps) for the whole bench


def variants():
    binary, float_model = models.mnist_mlp("binaryconnect_det"), models.mnist_mlp("full_precision")
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=LONG, frequency=FREQUENCY)
    plm = lambda layer: {"pruning_schedule": tfmot.sparsity.keras.ConstantSparsity(  # noqa: E731
        1 - K / layer.input_shape[-1], begin_step=0, end_step=LONG, frequency=FREQUENCY)}
    return {
        "larq": (binary, []),
        "float": (models.mnist_mlp("full_precision"), []),
        "tfmot_plm": (tfmot_pruned(float_model, plm), [tfmot.sparsity.keras.UpdatePruningStep()]),
        "tfmot_m_by_n": (tfmot_pruned(float_model, lambda layer: m_by_n_kwargs(layer, K)),
                         [tfmot.sparsity.keras.UpdatePruningStep()]),
        "iprune": (iprune_tf.prune_fan_in(binary, K, schedule, skip=iprune_tf.paper_skip("mnist")),
                   [iprune_tf.UpdatePruningStep()]),
        "iprune_float": (iprune_tf.prune_fan_in(float_model, K, schedule, skip=iprune_tf.paper_skip("mnist")),
                         [iprune_tf.UpdatePruningStep()]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    x, y, *_ = fashion_mnist(limit_train=args.steps * args.batch_size)
    runs = variants()
    for model, _ in runs.values():
        recipes.compile_model(model, weight_decay=recipes.WEIGHT_DECAY)

    def fit(name):
        model, callbacks = runs[name]
        return lambda: model.fit(x, y, batch_size=args.batch_size, epochs=1, callbacks=callbacks, verbose=0)

    times = {name: [] for name in runs}
    for name in runs:  # warm-up: tracing and the first mask computation
        fit(name)()
    for _ in range(args.repeats):
        for name in runs:
            times[name].append(median_seconds(fit(name), repeats=1, warmup=0))
    best = {name: args.steps / min(t) for name, t in times.items()}
    median = {name: args.steps / float(np.median(t)) for name, t in times.items()}
    ratio = {
        "iprune_over_larq": best["larq"] / best["iprune"],
        "iprune_over_tfmot_plm": best["tfmot_plm"] / best["iprune"],
        "iprune_float_over_tfmot_plm": best["tfmot_plm"] / best["iprune_float"],
        "iprune_over_tfmot_m_by_n": best["tfmot_m_by_n"] / best["iprune"],
    }
    print_table(("variant", "steps/s (best)", "steps/s (median)", "step time vs larq (best)"),
                [(n, f"{best[n]:.1f}", f"{median[n]:.1f}", f"{best['larq'] / best[n]:.3f}x") for n in times])
    print_table(("ratio (step time, best)", "value"), [(k, f"{v:.3f}") for k, v in ratio.items()])
    write_result("train_overhead", {"steps": args.steps, "repeats": args.repeats, "batch_size": args.batch_size,
                                    "k": K, "mask_frequency": FREQUENCY, "steps_per_s_best": best,
                                    "steps_per_s_median": median,
                                    "step_time_ratios": ratio, "raw_seconds": times},
                 "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
