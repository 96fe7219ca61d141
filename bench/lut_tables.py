"""Screen: fine-tune a truth table per LUT neuron of a trained fully binary LUT net (issue 19).

A K-input LUT computes any boolean function of its inputs; the trained net only uses threshold
functions ``sum_i w_i x_i >= T``. Keeping each neuron's K inputs (chosen by iPrune), this replaces
every hidden neuron by a real table ``T[n, 0 .. 2^K - 1]`` initialised so that ``sign(T)`` is the
trained threshold function on all 2^K input patterns (the fine-tuning starts at the trained net's
accuracy exactly: checked before training), then fine-tunes the tables (LogicNets/NeuraLUT/DWN do the
same with other parameterisations) at no extra LUT cost. The ``pruned:K_OUT`` head stays a ±1
weighted popcount with its batch norm (fan-in 32, not one LUT).

Forward on ±1 inputs: the address of the K input bits, then ``sign(T[n, address])``. Backward: the
multilinear extension ``f(x) = sum_j T[n, j] prod_i (1 + s_ij x_i) / 2`` (equal to the table read on
±1 inputs): d f / d T[n, j] is one-hot at the address, d f / d x_i is ``(T[a | bit i] - T[a & ~bit i]) / 2``,
so earlier tables keep learning; the sign's straight-through estimator passes it on (tables clipped
to [-1, 1], where larq's ste_sign passes gradients).

  nice -n 19 python bench/lut_tables.py --model runs/.../s_p32_t7_pr25_val_k6.h5 --validation --epochs 5

Results go to ``bench/results/lut_tables.json`` (one entry per ``--name``).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, fashion_mnist  # noqa: E402

import iprune_tf  # noqa: E402,F401
import larq as lq  # noqa: E402
from iprune_tf._keras import keras, tf  # noqa: E402
from iprune_tf.export.lowering import lower  # noqa: E402
from iprune_tf.workflow import recipes  # noqa: E402

VALIDATION = 5000
BATCH = 100
RESULT = os.path.join(RESULTS, "lut_tables.json")


def patterns(k):
    """(2^K, K) ±1 input patterns: row j has bit i of j as input i (+1 for a set bit)."""
    j = np.arange(2**k)[:, None]
    return np.where((j >> np.arange(k)[None, :]) & 1, 1, -1).astype(np.float32)


def initial_tables(layer, margin):
    """(units, 2^K) tables whose sign is ``layer``'s threshold function (lowered form, bit-exact) on every pattern:
    ``margin * (s - T + 0.5)`` clipped to [-1, 1], so patterns near the threshold flip first."""
    s = patterns(layer.k) @ layer.signs.T.astype(np.float32)  # (2^K, units): the neuron's sum on each pattern
    return np.clip(margin * (s - layer.threshold[None, :] + 0.5), -1, 1).T.astype(np.float32)


class LutTable(keras.layers.Layer):
    """Each of ``units`` neurons reads K fixed inputs (``indices``) and outputs ``sign(T[n, address])``."""

    def __init__(self, indices, tables, **kwargs):
        super().__init__(**kwargs)
        self.indices = np.asarray(indices, np.int32)
        self.units, self.k = self.indices.shape
        self.init_tables = np.asarray(tables, np.float32)

    def build(self, input_shape):
        self.table = self.add_weight("table", (self.units, 2**self.k), initializer=keras.initializers.Constant(
            self.init_tables), constraint=lambda t: tf.clip_by_value(t, -1.0, 1.0))
        super().build(input_shape)

    def call(self, x):
        x = tf.gather(x, self.indices, axis=1)  # (B, units, K), ±1
        weights = tf.constant(2 ** np.arange(self.k), tf.int32)
        address = tf.reduce_sum(tf.cast(x >= 0, tf.int32) * weights, axis=-1)  # (B, units)
        base = tf.constant(np.arange(self.units)[None, :] * 2**self.k, tf.int32)
        flat = tf.reshape(self.table, [-1])
        read = tf.gather(flat, base + address)
        slopes = [(tf.gather(flat, base + tf.bitwise.bitwise_or(address, 1 << i))
                   - tf.gather(flat, base + tf.bitwise.bitwise_and(address, ~(1 << i)))) / 2 for i in range(self.k)]
        # value: the table read; gradient to x: the multilinear extension's slopes (x - stop_gradient(x) is 0)
        f = read + tf.reduce_sum(tf.stack(slopes, -1) * (x - tf.stop_gradient(x)), axis=-1)
        return lq.quantizers.ste_sign(f)


class SparseSign(keras.layers.Layer):
    """The ``pruned:K_OUT`` head: per class the sum of its K_OUT inputs times ±1 weights (latent, ste_sign)."""

    def __init__(self, indices, signs, latent=0.5, **kwargs):
        super().__init__(**kwargs)
        self.indices = np.asarray(indices, np.int32)
        self.init_latent = latent * np.asarray(signs, np.float32)

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", self.init_latent.shape, initializer=keras.initializers.Constant(
            self.init_latent), constraint=lambda w: tf.clip_by_value(w, -1.0, 1.0))
        super().build(input_shape)

    def call(self, x):
        x = tf.gather(lq.quantizers.ste_sign(x), self.indices, axis=1)  # (B, classes, K_OUT)
        return tf.reduce_sum(x * lq.quantizers.ste_sign(self.kernel)[None], axis=-1)


def table_net(stripped, margin, head_latent):
    """The stripped LUT net with every threshold neuron replaced by a LutTable (same inputs), the head kept."""
    net = lower(stripped)
    *hidden, head = net.layers
    if any(layer.kind != "sparse" or layer.output != "threshold" for layer in hidden) or head.kind != "sparse":
        raise ValueError("Expected sparse threshold hidden layers and a sparse (pruned:K_OUT) head.")
    encoder = stripped.layers[0]
    bn_out = stripped.get_layer("bn_output")
    x = keras.Input(stripped.input_shape[1:])
    y = keras.layers.Flatten()(encoder(x))
    for layer in hidden:
        y = LutTable(layer.indices, initial_tables(layer, margin), name=f"{layer.name}_table")(y)
    y = SparseSign(head.indices, head.signs, head_latent, name="output")(y)
    bn = keras.layers.BatchNormalization.from_config(bn_out.get_config())
    y = bn(y)
    bn.set_weights(bn_out.get_weights())
    return keras.Model(x, y, name="lut_tables")


def split(validation):
    x, y, x_test, y_test, labels = fashion_mnist()
    if not validation:
        return x, y, x_test, y_test, labels
    n = len(x) - VALIDATION
    return x[:n], y[:n], x[n:], y[n:], np.argmax(y[n:], axis=1)


def save(name, entry):
    results = json.load(open(RESULT)) if os.path.exists(RESULT) else {"runs": {}}
    results["runs"][name] = entry
    with open(RESULT, "w") as f:
        json.dump(results, f, indent=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a stripped LUT net (.h5) with a pruned:K_OUT head")
    p.add_argument("--name", required=True)
    p.add_argument("--validation", action="store_true", help=f"train on 55,000, evaluate on the last {VALIDATION:,}")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--margin", type=float, default=0.25, help="initial |T| per unit of (sum - threshold)")
    p.add_argument("--head-latent", type=float, default=0.5, help="initial |latent weight| of the head")
    p.add_argument("--weight-decay", type=float, default=5e-2, help="decoupled, on the head's latent weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frozen-tables", action="store_true", help="control: train the head only, tables fixed")
    p.add_argument("--frozen-head", action="store_true", help="keep the head's ±1 weights (its batch norm trains)")
    p.add_argument("--save", help="save the fine-tuned table net's weights here (.h5)")
    args = p.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    x, y, x_eval, y_eval, labels = split(args.validation)
    stripped = keras.models.load_model(args.model, compile=False)
    model = table_net(stripped, args.margin, args.head_latent)
    for layer in model.layers:
        layer.trainable = not (args.frozen_tables and isinstance(layer, LutTable) or
                               args.frozen_head and isinstance(layer, SparseSign))
    before = model.predict(x_eval, batch_size=1000, verbose=0).argmax(1)
    reference = stripped.predict(x_eval, batch_size=1000, verbose=0).argmax(1)
    entry = {"model": args.model, "validation": args.validation, "epochs": args.epochs, "lr": args.lr,
             "margin": args.margin, "head_latent": args.head_latent, "weight_decay": args.weight_decay,
             "frozen_tables": args.frozen_tables, "frozen_head": args.frozen_head,
             "reference_accuracy": float(np.mean(reference == labels)),
             "start_accuracy": float(np.mean(before == labels)),
             "start_equals_reference": f"{int(np.sum(before == reference))}/{len(labels)}"}
    print(entry, flush=True)
    optimizer = keras.optimizers.Adam(args.lr, weight_decay=args.weight_decay or None)
    if args.weight_decay and not args.frozen_head:
        head = model.get_layer("output").kernel
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v is not head])
    model.compile(optimizer, loss=recipes.LOSS, metrics=["categorical_accuracy"])
    steps = args.epochs * int(np.ceil(len(x) / BATCH))
    start = time.time()
    history = model.fit(x, y, batch_size=BATCH, epochs=args.epochs, validation_data=(x_eval, y_eval), verbose=2,
                        callbacks=[recipes.CosineRetraining(args.lr, 0, steps)])
    after = model.predict(x_eval, batch_size=1000, verbose=0).argmax(1)
    flips = [float(np.mean(np.sign(layer.table.numpy()) != np.sign(layer.init_tables)))
             for layer in model.layers if isinstance(layer, LutTable)]
    entry.update({"accuracy": float(np.mean(after == labels)), "wall_time_s": round(time.time() - start, 1),
                  "per_epoch_eval_accuracy": [round(v, 4) for v in history.history["val_categorical_accuracy"]],
                  "per_epoch_train_accuracy": [round(v, 4) for v in history.history["categorical_accuracy"]],
                  "table_entries_flipped": flips})
    entry["gain"] = entry["accuracy"] - entry["reference_accuracy"]
    print(entry, flush=True)
    save(args.name, entry)
    if args.save:
        model.save_weights(args.save)


if __name__ == "__main__":
    main()
