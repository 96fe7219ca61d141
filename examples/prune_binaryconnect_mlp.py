"""Prune a larq BinaryConnect MLP to 8 inputs per neuron with model.fit, then inspect it.

    python examples/prune_binaryconnect_mlp.py [--epochs 3] [--limit-train 20000]

Uses the real Fashion-MNIST installed by Debian's dataset-fashion-mnist (offline), or keras'
download elsewhere.
"""
import argparse

import iprune_tf  # first: pins tf.keras to Keras 2 for larq and tfmot
import larq as lq
from iprune_tf._keras import keras
from iprune_tf.workflow.data import load_dataset, to_hinge_targets


def binaryconnect_mlp():
    """784-256-256-10 BinaryConnect MLP: binary weights (ste_sign), real activations, BN after each layer."""
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    return keras.Sequential(
        [
            keras.layers.Flatten(input_shape=(28, 28)),
            lq.layers.QuantDense(256, name="dense_1", **binary),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            lq.layers.QuantDense(256, name="dense_2", **binary),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            lq.layers.QuantDense(10, name="output", **binary),
            keras.layers.BatchNormalization(),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=20000)
    args = parser.parse_args()

    data = load_dataset("fashion_mnist", limit_train=args.limit_train)
    y_train, y_test = (to_hinge_targets(y, data.num_classes) for y in (data.y_train, data.y_test))
    steps_per_epoch = -(-len(data.x_train) // 100)

    # Shrink every hidden neuron from its full fan-in to 8 inputs over the first two epochs,
    # recomputing masks every 50 steps; the output layer stays dense as in the paper.
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=2 * steps_per_epoch, frequency=50)
    model = iprune_tf.prune_fan_in(
        binaryconnect_mlp(), inputs_per_neuron=8, pruning_schedule=schedule, skip=iprune_tf.paper_skip("mnist")
    )
    model.compile(keras.optimizers.Adam(3e-3), loss="squared_hinge", metrics=["categorical_accuracy"])
    model.fit(
        data.x_train, y_train, batch_size=100, epochs=args.epochs,
        validation_data=(data.x_test, y_test), callbacks=[iprune_tf.UpdatePruningStep()],
    )
    final = iprune_tf.strip_pruning(model)
    final.compile(loss="squared_hinge", metrics=["categorical_accuracy"])
    _, accuracy = final.evaluate(data.x_test, y_test, verbose=0)
    print(iprune_tf.format_inspection(iprune_tf.inspect_pruning(final)))
    print(f"test accuracy after stripping: {accuracy:.4f}")


if __name__ == "__main__":
    main()
