"""Prune your own Keras CNN to 8 inputs per neuron inside model.fit, then run it as C on a Cortex-M3 in QEMU.

    python examples/keras_cnn_to_cortex_m.py [--epochs 3] [--limit-train 20000] [--out out/cnn_c]
    python examples/keras_cnn_to_cortex_m.py --tiny     # a few seconds of training: checks the path

A plain Keras CNN (no larq, no preset) is wrapped by ``iprune_tf.prune_fan_in``, trained with
``model.fit`` and ``iprune_tf.UpdatePruningStep``, stripped, and exported by ``iprune_tf.export.to_c``
to one ``.c``/``.h`` pair without dependencies. The export is compiled by the host's gcc and, with
``arm-none-eabi-gcc``, as firmware for QEMU's lm3s6965evb (a Cortex-M3 with 256 KB flash and 64 KB
RAM) that reads the test images from the host; both runs are compared with Keras. Needs the Debian
packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (without them only the gcc row).
"""
import argparse
import os

import iprune_tf  # first: pins tf.keras to Keras 2 for larq and tfmot
from iprune_tf import export
from iprune_tf._keras import keras
from iprune_tf.workflow.data import load_dataset

K = 8


def small_cnn():
    """Conv(8) - pool - Conv(16) - pool - Dense(32) - Dense(10): float32, ReLU, logits out."""
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv_1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv_2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", name="dense"),
        keras.layers.Dense(10, name="logits"),
    ])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--verify-samples", type=int, default=200, help="test images run in Keras, gcc and QEMU")
    parser.add_argument("--data", default="fashion_mnist", help="fashion_mnist, or a path load_dataset reads")
    parser.add_argument("--out", default="out/cnn_c", help="where the .c/.h pair is written (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--tiny", action="store_true", help="1 epoch on 1,000 images, 20 verified: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.epochs, args.limit_train, args.verify_samples = 1, 1000, 20
    return args


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    data = load_dataset(args.data, limit_train=args.limit_train, limit_test=args.verify_samples)
    x_train, x_test = data.x_train[..., None], data.x_test[..., None]
    steps = -(-len(x_train) // 64)

    # conv_1 has 9 inputs per neuron (3x3x1): at K=8 pruning would barely touch it, so it stays dense,
    # as does the output layer (the paper's skips). The fan-in of the others shrinks to 8 over epoch 1.
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=steps, frequency=max(1, steps // 10))
    model = iprune_tf.prune_fan_in(small_cnn(), inputs_per_neuron=K, pruning_schedule=schedule,
                                   skip=["conv_1", "logits"])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, data.y_train, batch_size=64, epochs=args.epochs, verbose=2,
              callbacks=[iprune_tf.UpdatePruningStep()])

    stripped = iprune_tf.strip_pruning(model)
    print(iprune_tf.format_inspection(iprune_tf.inspect_pruning(stripped)))
    rows = export.export_run_files(stripped, args.out, "fmnist_cnn", ["c"], x_test, x_test, overwrite=True)
    print(export.format_export_table(rows))
    accuracy = float((stripped.predict(x_test, verbose=0).argmax(1) == data.y_test).mean())
    print(f"Keras test accuracy on {len(x_test)} images: {accuracy:.2%}")
    print(f"C model: {os.path.join(args.out, 'fmnist_cnn.c')} and .h ({rows[0].payload_bytes} bytes of model data)")


if __name__ == "__main__":
    main()
