"""The lowered form against Keras on 1,000 inputs: MNIST preset (4 flavours) and CIFAR-10 preset (2 flavours), K=8.

Uses the test suite's model builders (tests/test_lowered.py: pruned to K=8 with the paper's skip
lists, trained a few steps on noise, batch-norm statistics randomized so thresholds are
non-trivial); the tests run the CIFAR-10 preset on fewer inputs to stay fast.
Writes bench/results/lowered_check.json.  Usage: python bench/lowered_check.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from common import write_result  # noqa: E402
from test_lowered import keras_outputs, pruned_preset  # noqa: E402

from iprune_tf.export import lower  # noqa: E402

CASES = [("mnist", f) for f in ("full_precision", "binaryconnect_det", "binaryconnect_stoch", "binary")] + [
    ("cifar10", "binary"), ("cifar10", "binaryconnect_det")]
SAMPLES = 1000


def hidden_bit_agreement(model, net, x):
    """Fraction of equal bits over every threshold layer's output (before any max-pool), vs sign(Keras BN)."""
    equal = total = 0
    outputs = net.activations(x)
    offset = len(outputs) - len(net.steps)
    for i, step in enumerate(net.steps):
        if getattr(step, "output", None) != "threshold":
            continue
        bn_name = model.layers[[layer.name for layer in model.layers].index(step.name) + 1].name
        keras_bits = np.where(keras_outputs(model, [bn_name], x)[0] >= 0, 1, -1)
        equal += int(np.sum(keras_bits == outputs[i + offset]))
        total += keras_bits.size
    return None if total == 0 else equal / total, total


def main():
    rows = []
    for preset, flavour in CASES:
        rng = np.random.default_rng(0)
        model = pruned_preset(preset, flavour, rng, train_steps=2, batch=16)
        x = rng.normal(size=(SAMPLES, *model.input_shape[1:])).astype("f4")
        start = time.perf_counter()
        net = lower(model)
        lower_s = time.perf_counter() - start
        expected = model.predict(x, batch_size=100, verbose=0)
        scores = np.concatenate([net.predict(x[i : i + 100]) for i in range(0, SAMPLES, 100)])
        bits, n_bits = hidden_bit_agreement(model, net, x[:200])
        rows.append({
            "preset": preset, "flavour": flavour, "samples": SAMPLES, "lower_seconds": round(lower_s, 2),
            "class_agreement": float(np.mean(scores.argmax(1) == expected.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(scores - expected))),
            "max_abs_output": float(np.max(np.abs(expected))),
            "hidden_bit_agreement": bits, "hidden_bits_checked_on_200": n_bits,
            "layers": [(layer.name, layer.kind, layer.k, layer.output) for layer in net.layers],
        })
        print(rows[-1], flush=True)
    write_result("lowered_check", {"rows": rows}, "python bench/lowered_check.py")


if __name__ == "__main__":
    main()
