"""Per-neuron top-K mask computation: iprune_tf (tf.math.top_k) vs a numpy argsort baseline.

    python bench/mask_speed.py [--repeats 5] [--k 8]

Shapes: Dense 4096x4096 and Conv2D 3x3x512x512. Checks both give the same mask (random normal
weights have no ties), reports median seconds and the speed-up baseline/iprune.
"""
import argparse
import sys

import numpy as np

from common import median_seconds, print_table, write_result
from iprune_tf._keras import tf
from iprune_tf.pruning.masking import per_neuron_topk_mask

SHAPES = {"dense_4096x4096": (4096, 4096), "conv_3x3x512x512": (3, 3, 512, 512)}


def numpy_argsort_mask(kernel, k):
    """The straightforward baseline: per neuron, argsort |w| descending and keep the first k."""
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    order = np.argsort(-flat, axis=0, kind="stable")[:k]
    mask = np.zeros_like(flat)
    np.put_along_axis(mask, order, 1.0, axis=0)
    return mask.reshape(kernel.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
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
