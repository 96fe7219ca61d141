"""Prune a larq BinaryConnect MLP to 8 inputs per neuron with model.fit, then run it in TensorFlow Lite Micro.

    python examples/prune_binaryconnect_mlp.py [--epochs 6] [--limit-train 20000] [--out out/tflm]
    python examples/prune_binaryconnect_mlp.py --tiny     # a few seconds of training: checks the path

After training, the stripped model is converted to the *sparse* TFLite format
(``iprune_tf.export.to_tflite(model, "sparse")``: each pruned layer as GATHER/SUM ops over only its
kept inputs, so the file shrinks with K, using only ops TFLite Micro has), run in TensorFlow Lite and
in TFLite Micro's Python interpreter (with the tensor arena it needs) against Keras, and written as a
C array (``.h``/``.cc``) to compile into a TFLM firmware. The plain float TFLite file is converted
too, for its size. Uses the real Fashion-MNIST installed by Debian's dataset-fashion-mnist
(offline), or keras' download elsewhere.
"""
import argparse
import os

import iprune_tf  # first: pins tf.keras to Keras 2 for larq and tfmot
import larq as lq
from iprune_tf import export
from iprune_tf._keras import keras
from iprune_tf.workflow.data import load_dataset, to_hinge_targets


def binaryconnect_mlp():
    """784-256-256-10 BinaryConnect MLP: binary weights (ste_sign), real activations, BN after each layer."""
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    return keras.Sequential(
        [
            keras.layers.Flatten(input_shape=(28, 28)),
            lq.layers.QuantDense(256, name="dense_1", **binary),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            lq.layers.QuantDense(256, name="dense_2", **binary),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            lq.layers.QuantDense(10, name="output", **binary),
            keras.layers.BatchNormalization(momentum=0.9),
        ]
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--verify-samples", type=int, default=1000, help="test images run in TFLite and TFLM")
    parser.add_argument("--data", default="fashion_mnist", help="fashion_mnist, or a path load_dataset reads")
    parser.add_argument("--out", default="out/tflm", help="where the .tflite files and the C array go (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--tiny", action="store_true", help="1 epoch on 1,000 images, 50 verified: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.epochs, args.limit_train, args.verify_samples = 1, 1000, 50
    return args


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    data = load_dataset(args.data, limit_train=args.limit_train, limit_test=args.verify_samples)
    y_train, y_test = (to_hinge_targets(y, data.num_classes) for y in (data.y_train, data.y_test))
    steps_per_epoch = -(-len(data.x_train) // 100)

    # Shrink every hidden neuron from its full fan-in to 8 inputs over the first half of training,
    # recomputing masks every 50 steps; the output layer stays dense as in the paper.
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=max(1, args.epochs * steps_per_epoch // 2), frequency=50)
    model = iprune_tf.prune_fan_in(
        binaryconnect_mlp(), inputs_per_neuron=8, pruning_schedule=schedule, skip=iprune_tf.paper_skip("mnist")
    )
    model.compile(keras.optimizers.Adam(3e-3), loss="squared_hinge", metrics=["categorical_accuracy"])
    model.fit(data.x_train, y_train, batch_size=100, epochs=args.epochs, verbose=2,
              callbacks=[iprune_tf.UpdatePruningStep()])
    final = iprune_tf.strip_pruning(model)
    final.compile(loss="squared_hinge", metrics=["categorical_accuracy"])
    _, accuracy = final.evaluate(data.x_test, y_test, verbose=0)
    print(iprune_tf.format_inspection(iprune_tf.inspect_pruning(final)))
    print(f"test accuracy after stripping: {accuracy:.4f}")

    sparse, dense = export.to_tflite(final, "sparse"), export.to_tflite(final, "float")
    os.makedirs(args.out, exist_ok=True)
    for name, flatbuffer in (("fmnist_mlp_sparse", sparse), ("fmnist_mlp_float", dense)):
        with open(os.path.join(args.out, f"{name}.tflite"), "wb") as f:
            f.write(flatbuffer)
    print(f"sparse TFLite: {len(sparse)} bytes (ops: {', '.join(export.tflite_ops(sparse))}); "
          f"dense float TFLite: {len(dense)} bytes")
    for check in export.verify(final, sparse, data.x_test, mode="sparse"):
        arena = f", tensor arena {check.arena_bytes} bytes" if check.arena_bytes else ""
        print(f"{check.runtime}: {check.agreement:.2%} of {check.samples} classes agree with Keras, "
              f"max |diff| {check.max_abs_diff:.2g}{arena}")
    export.to_c_array(sparse, "fmnist_mlp_sparse", args.out, overwrite=True)
    print(f"C array for TFLM firmware: {os.path.join(args.out, 'fmnist_mlp_sparse.h')} and .cc")


if __name__ == "__main__":
    main()
