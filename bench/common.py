"""Helpers shared by the bench scripts: timing, result files and the Fashion-MNIST data."""
import json
import os
import platform
import statistics
import time

import iprune_tf  # noqa: F401  (pins Keras 2 before tensorflow)
import tensorflow_model_optimization as tfmot
from iprune_tf._keras import keras, tf
from iprune_tf.workflow.data import load_dataset, to_hinge_targets

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median_seconds(fn, repeats, warmup=1):
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fashion_mnist(limit_train=None, limit_test=None):
    """Fashion-MNIST (offline from Debian's package) with ±1 hinge targets: (x, y, x_test, y_test, labels)."""
    data = load_dataset("fashion_mnist", limit_train, limit_test)
    return (data.x_train, to_hinge_targets(data.y_train, 10), data.x_test, to_hinge_targets(data.y_test, 10),
            data.y_test)


def write_result(name, result, command):
    """Write ``bench/results/<name>.json`` with the machine, versions and the command that made it."""
    os.makedirs(RESULTS, exist_ok=True)
    result = dict(result, command=command, machine={
        "cpus": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    })
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")
    return path


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def tfmot_pruned(model, prune_kwargs):
    """A copy of ``model`` (weights included) whose hidden Dense layers are wrapped by tfmot's
    ``prune_low_magnitude`` with ``prune_kwargs(layer)``; the layer named 'output' stays dense
    (the paper's MNIST skip list). tfmot refuses larq layers, so ``model`` must be float."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())

    def wrap(layer):
        if isinstance(layer, keras.layers.Dense) and layer.name != "output":
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **prune_kwargs(layer))
        return layer

    return keras.models.clone_model(copy, clone_function=wrap)


def m_by_n_kwargs(layer, k):
    """tfmot's closest built-in to a per-neuron fan-in limit: (fan_in - k) zeros in each block of fan_in."""
    fan_in = int(layer.input_shape[-1])
    return {"sparsity_m_by_n": (fan_in - k, fan_in)}
