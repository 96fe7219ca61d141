"""Accuracy at equal fan-in (K=8) on Fashion-MNIST: iprune_tf's gradual schedule vs tfmot's m_by_n.

    python bench/accuracy_equal_fanin.py [--epochs-dense 5] [--epochs-prune 5] [--epochs-retrain 5]

Every variant gets the same budget: ``epochs_dense`` epochs dense, then ``epochs_prune +
epochs_retrain`` epochs with masks, on the MNIST preset MLP (784-1024-1024-10, output layer dense):

* ``iprune_binary``: BinaryConnect, pruned by iprune_tf's gradual per-neuron schedule (the product).
* ``iprune_float``: the same on the full-precision flavour.
* ``tfmot_m_by_n_float``: tfmot ``sparsity_m_by_n=(fan_in-K, fan_in)`` on the full-precision flavour
  (tfmot cannot wrap larq layers), which masks once at the first pruned step.

Both flavours start from dense models trained once (shared by the variants of that flavour).
"""
import argparse
import sys
import time

import iprune_tf  # first: pins Keras 2 before tensorflow is imported
import tensorflow_model_optimization as tfmot
from common import fashion_mnist, m_by_n_kwargs, print_table, tfmot_pruned, write_result
from iprune_tf.workflow import models
from iprune_tf.workflow import recipes
from iprune_tf._keras import keras

K = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-dense", type=int, default=5)
    parser.add_argument("--epochs-prune", type=int, default=5)
    parser.add_argument("--epochs-retrain", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--frequency", type=int, default=100)
    parser.add_argument("--limit-train", type=int, default=None)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x, y, x_test, y_test, labels = fashion_mnist(args.limit_train)
    fit = dict(batch_size=args.batch_size, verbose=2)
    masked_epochs = args.epochs_prune + args.epochs_retrain
    steps = -(-len(x) // args.batch_size)
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=max(1, args.epochs_prune * steps), frequency=args.frequency)

    dense = {}
    for flavour in ("binaryconnect_det", "full_precision"):
        model = recipes.compile_model(models.mnist_mlp(flavour), weight_decay=recipes.WEIGHT_DECAY)
        model.fit(x, y, epochs=args.epochs_dense, **fit)
        dense[flavour] = model

    variants = {
        name: (iprune_tf.prune_fan_in(dense[flavour], K, schedule, skip=iprune_tf.paper_skip("mnist")),
               iprune_tf.UpdatePruningStep(), iprune_tf.strip_pruning)
        for name, flavour in (("iprune_binary", "binaryconnect_det"), ("iprune_float", "full_precision"))
    }
    variants |= {
        "tfmot_m_by_n_float": (tfmot_pruned(dense["full_precision"], lambda layer: m_by_n_kwargs(layer, K)),
                               tfmot.sparsity.keras.UpdatePruningStep(), tfmot.sparsity.keras.strip_pruning),
    }
    results = {f"dense_{flavour}": {"test_accuracy": recipes.top1_accuracy(m, x_test, labels)} for flavour, m in dense.items()}
    for name, (model, callback, strip) in variants.items():
        print(f"== {name} ==", flush=True)
        start = time.time()
        recipes.compile_model(model, weight_decay=recipes.WEIGHT_DECAY)
        model.fit(x, y, epochs=masked_epochs, callbacks=[callback], validation_data=(x_test, y_test), **fit)
        final = strip(model)
        kept = {s.name: s.kept_histogram for s in iprune_tf.inspect_pruning(final)}
        results[name] = {"test_accuracy": recipes.top1_accuracy(final, x_test, labels), "kept_inputs": kept,
                         "wall_time_s": round(time.time() - start, 1)}
    print_table(("model", "test accuracy", "kept inputs per neuron"),
                [(n, f"{r['test_accuracy']:.4f}", r.get("kept_inputs", "dense")) for n, r in results.items()])
    write_result("accuracy_equal_fanin", {"k": K, "epochs": vars(args), "results": results}, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
