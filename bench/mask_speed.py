"""Per-neuron top-K mask computation: iprune_tf (tf.math.top_k) vs a numpy argsort baseline.

    python bench/mask_speed.py [--repeats 5] [--k 8]
    python bench/mask_speed.py --conv [--repeats 3] [--k 8]

Shapes: Dense 4096x4096 and Conv2D 3x3x512x512. Checks both give the same mask (random normal
weights have no ties), reports median seconds and the speed-up baseline/iprune.

``--conv`` instead times the full-width conv preset (VGG-Small on 28x28x1, BinaryConnect, the
paper's skip list: per-filter fan-ins up to 3*3*512 = 4,608): one mask update of every pruned layer
against one training step (batch 100), measured two ways: the update ops alone (at keep = fan-in / 2
and keep = K), and the training step with an update at every step against the same step without
one. It writes ``results/mask_speed_conv.json``.
"""
import argparse
import sys

import numpy as np

from common import median_seconds, print_table, write_result
from iprune_tf._keras import keras, tf
from iprune_tf.pruning.masking import fan_in, per_neuron_topk_mask
from iprune_tf.pruning.prune import prune_fan_in
from iprune_tf.pruning.schedules import FanInSchedule
from iprune_tf.pruning.wrapper import PruneFanIn
from iprune_tf.workflow import models, recipes
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep

SHAPES = {"dense_4096x4096": (4096, 4096), "conv_3x3x512x512": (3, 3, 512, 512)}


def numpy_argsort_mask(kernel, k):
    """The straightforward baseline: per neuron, argsort |w| descending and keep the first k."""
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    order = np.argsort(-flat, axis=0, kind="stable")[:k]
    mask = np.zeros_like(flat)
    np.put_along_axis(mask, order, 1.0, axis=0)
    return mask.reshape(kernel.shape)


def conv_update_against_step(k, repeats):
    """Seconds of one mask update of every pruned layer and of one training step, full-width conv preset."""
    rng = np.random.default_rng(0)
    x = rng.random((100, 28, 28, 1), dtype=np.float32)
    y = np.where(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 100)] > 0, 1.0, -1.0).astype(np.float32)
    never = FanInSchedule(begin_step=1, end_step=1)  # one shot to K at step 1, then no update
    every = FanInSchedule(begin_step=1, end_step=10**6, frequency=1)  # keep ~ fan-in: top_k sorts all inputs
    step_s, kernels = {}, {}
    for name, schedule in (("no_update", never), ("update_every_step", every)):
        keras.backend.clear_session()
        model = models.cifar10_vgg_small("binaryconnect_det", input_shape=(28, 28, 1))
        pruned = recipes.compile_model(prune_fan_in(model, k, schedule, skip=models.get_preset("cifar10").skip()))
        fit = lambda: pruned.fit(x, y, batch_size=100, epochs=1, callbacks=[UpdatePruningStep()], verbose=0)
        step_s[name] = median_seconds(fit, repeats)
        kernels = {l.layer.name: l.layer.kernel.numpy() for l in pruned.layers if isinstance(l, PruneFanIn)}
    ops_s = {}
    for label, keep in (("keep_half_fan_in", lambda n: n // 2), ("keep_k", lambda n: k)):
        variables = [(tf.Variable(w), keep(fan_in(w.shape))) for w in kernels.values()]
        update = tf.function(lambda: [per_neuron_topk_mask(v, n) for v, n in variables])
        ops_s[label] = median_seconds(lambda: [m.numpy() for m in update()], repeats)
    return {"pruned_layers": {name: {"shape": list(w.shape), "fan_in": fan_in(w.shape)} for name, w in kernels.items()},
            "train_step_s": step_s, "mask_update_ops_s": ops_s,
            "update_in_step_s": step_s["update_every_step"] - step_s["no_update"],
            "update_over_step": ops_s["keep_half_fan_in"] / step_s["no_update"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--conv", action="store_true", help="time the full-width conv preset's update against its step")
    args = parser.parse_args()
    if args.conv:
        conv = conv_update_against_step(args.k, args.repeats)
        print(f"full-width conv: step {conv['train_step_s']}, update ops {conv['mask_update_ops_s']}, "
              f"update/step {conv['update_over_step']:.3f}")
        write_result("mask_speed_conv", conv, "python " + " ".join(sys.argv))
        return
    rng = np.random.default_rng(0)
    mask_fn = tf.function(lambda w: per_neuron_topk_mask(w, args.k))
    results, rows = {}, []
    for name, shape in SHAPES.items():
        kernel = rng.normal(size=shape).astype(np.float32)
        variable = tf.Variable(kernel)
        same = np.array_equal(mask_fn(variable).numpy(), numpy_argsort_mask(kernel, args.k))
        t_iprune = median_seconds(lambda: mask_fn(variable).numpy(), args.repeats)
        t_numpy = median_seconds(lambda: numpy_argsort_mask(kernel, args.k), args.repeats)
        results[name] = {"shape": shape, "k": args.k, "iprune_s": t_iprune, "numpy_argsort_s": t_numpy,
                         "speedup": t_numpy / t_iprune, "same_mask": bool(same)}
        rows.append((name, f"{t_iprune * 1e3:.1f}", f"{t_numpy * 1e3:.1f}", f"{t_numpy / t_iprune:.1f}x", same))
    print_table(("kernel", "iprune ms", "numpy argsort ms", "speed-up", "same mask"), rows)
    write_result("mask_speed", {"repeats": args.repeats, "results": results}, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
