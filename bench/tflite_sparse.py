"""Sparse TFLite (issue 10): sizes, agreement in TFLite and TFLite Micro, TFLM arenas and latency, MNIST preset at K=8.

    python bench/tflite_sparse.py [--from-run runs/fashion_mnist_k8] [--binary-epochs 2] [--repeats 200]

Models: the BinaryConnect run's ``pruned_stripped`` model (Fashion-MNIST, K=8, output layer dense;
trained here briefly like the others when the run has not produced it yet), and two fully binary
flavours trained here briefly (one-shot pruning to K=8, ``--binary-epochs`` on
``--binary-train`` images): ``binary`` (real pixels into the first layer) and ``binary_threshold``
(pixels encoded as one bit each, ``x >= 0.5``, so every layer reads ±1 bits).

For every model and mode (sparse, sparse_int8; float and int8 for the BinaryConnect model): file bytes; top-1 agreement with
Keras and max |diff| of the outputs on 1,000 test images in TFLite (LiteRT's interpreter when
installed) and in TFLite Micro; the TFLM arena; whether file and arena fit a 256 KB-flash /
64 KB-RAM part (file <= 256 KB, arena <= 64 KB; TFLM's own code is not counted); latency per
sample at batch 1 in TFLite (median of ``--repeats`` invokes, one thread). Also the sparse
modes with one GATHER per block of 128 neurons, and the chain alternatives on the run's first
layer (signs folded into the indices vs a MUL by a sign tensor).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import iprune_tf  # noqa: E402  (pins Keras 2 before tensorflow is imported)
from common import fashion_mnist, median_seconds, print_table, write_result  # noqa: E402
from iprune_tf import export  # noqa: E402
from iprune_tf.workflow import models  # noqa: E402
from iprune_tf._keras import keras, tf  # noqa: E402
from iprune_tf.workflow.encoding import ThresholdEncoding  # noqa: E402
from iprune_tf.export.lowered import LoweredNet  # noqa: E402
from iprune_tf.export.tflite_common import quiet_converter  # noqa: E402
from iprune_tf.export.tflite_sparse import SPARSE_MODES, to_sparse_tflite  # noqa: E402
from iprune_tf.export.tflite import tflite_interpreter  # noqa: E402
from iprune_tf.workflow.runs import Run  # noqa: E402

K = 8
MODES = ("float", "int8", "sparse", "sparse_int8")
CALIBRATION = 300
VERIFY = 1000
FLASH, RAM = 256 * 1024, 64 * 1024
BLOCK = 128
CHAIN = {"sparse": "signs folded into the indices, SUM", "sparse_int8": "GATHER -> DEPTHWISE_CONV_2D"}


def quick_model(args, x, y, flavour, encoding=None):
    """The preset of ``flavour`` pruned one-shot to K=8 and trained ``args.binary_epochs`` (stripped)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    model = models.mnist_mlp(flavour, input_encoding=encoding)
    pruned = iprune_tf.prune_fan_in(model, K, skip=iprune_tf.paper_skip("mnist"))
    pruned.compile(keras.optimizers.Adam(3e-3), "squared_hinge")
    pruned.fit(x[: args.binary_train], y[: args.binary_train], batch_size=100, epochs=args.binary_epochs,
               callbacks=[iprune_tf.UpdatePruningStep()], verbose=2)
    return iprune_tf.strip_pruning(pruned)


def latency_batch1(tflite_bytes, x, repeats):
    """Median seconds of one invoke on one sample (set input, invoke, read output), one thread."""
    interpreter, _ = tflite_interpreter(tflite_bytes, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    sample = x[:1].astype(np.float32)

    def run():
        interpreter.set_tensor(inp["index"], sample)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return median_seconds(run, repeats, warmup=5)


def measure(name, model, x_cal, x_test, repeats, modes, block=None):
    """Rows (one per mode and runtime) for ``model``: bytes, agreement, diff, arena, fit, latency."""
    rows = []
    for mode in modes:
        if block is None:
            tflite = export.to_tflite(model, mode, representative_data=x_cal)
        else:
            tflite = to_sparse_tflite(model, mode, representative_data=x_cal, neurons_per_gather=block)
        latency = latency_batch1(tflite, x_test, repeats)
        for check in export.verify(model, tflite, x_test, mode=mode):
            arena = check.arena_bytes
            rows.append({
                "model": name, "mode": mode if block is None else f"{mode} (gather per {block})", "bytes": len(tflite),
                "runtime": check.runtime, "agreement": check.agreement, "max_abs_diff": check.max_abs_diff,
                "tflm_arena_bytes": arena, "latency_batch1_ms": latency * 1e3,
                "fits_256k_flash_64k_ram": None if arena is None else bool(len(tflite) <= FLASH and arena <= RAM),
            })
        print(f"{name} {rows[-1]['mode']}: {len(tflite)} bytes", flush=True)
    return rows


def chain_alternatives(model, x_cal):
    """File bytes of the run's first pruned layer alone, in the kept chain and in the MUL-by-signs chain."""
    net = export.lower(model)
    first = net.layers[0]
    alone = LoweredNet(net.input_shape, net.steps[: net.steps.index(first) + 1])
    sizes = {f"the module's chain ({CHAIN[mode]}), {mode}": len(to_sparse_tflite(alone, mode, representative_data=x_cal))
             for mode in ("sparse", "sparse_int8")}
    for int8 in (False, True):
        sizes[f"GATHER + MUL by signs, {'sparse_int8' if int8 else 'sparse'}"] = len(_mul_signs_chain(first, x_cal, int8))
    return {"layer": f"{first.name} ({first.fan_in}->{first.units}, K={first.k})", "bytes": sizes}


def _mul_signs_chain(layer, x_cal, int8):
    """The alternative measured against: GATHER of x, RESHAPE, MUL by a (units, K) sign tensor, SUM."""
    @tf.function(input_signature=[tf.TensorSpec([None, *x_cal.shape[1:]], tf.float32)])
    def chain(x):
        x = tf.reshape(x, [-1, layer.fan_in])
        gathered = tf.reshape(tf.gather(x, tf.constant(layer.indices.ravel()), axis=1), [-1, layer.units, layer.k])
        return tf.reduce_sum(gathered * tf.constant(layer.signs.astype(np.float32)), 2) * layer.scale + layer.offset

    converter = tf.lite.TFLiteConverter.from_concrete_functions([chain.get_concrete_function()], chain)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in x_cal)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with quiet_converter():
        return converter.convert()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", default="runs/fashion_mnist_k8", help="BinaryConnect run directory")
    parser.add_argument("--binary-epochs", type=int, default=2, help="epochs of the models trained here")
    parser.add_argument("--binary-train", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x, y, x_test, _, labels = fashion_mnist(None, VERIFY)
    x_cal = x[:CALIBRATION]
    run_model = os.path.join(args.from_run, "models", "pruned_stripped.h5")
    if os.path.exists(run_model):
        nets = {"binaryconnect": Run(args.from_run).load_model("pruned_stripped")}
    else:
        print(f"{run_model} not found: training a quick BinaryConnect model instead", flush=True)
        nets = {"binaryconnect": quick_model(args, x, y, "binaryconnect_det")}
    nets["binary"] = quick_model(args, x, y, "binary")
    nets["binary_threshold"] = quick_model(args, x, y, "binary", ThresholdEncoding(0.5))
    rows = []
    for name, model in nets.items():
        modes = MODES if name == "binaryconnect" else SPARSE_MODES  # dense files: the BinaryConnect model only
        rows += measure(name, model, x_cal, x_test, args.repeats, modes)
        rows += measure(name, model, x_cal, x_test, args.repeats, SPARSE_MODES, block=BLOCK)
    alternatives = chain_alternatives(nets["binaryconnect"], x_cal)
    print_table(("model", "mode", "bytes", "runtime", "top-1 agree", "max |diff|", "arena", "fits", "ms/sample"),
                [(r["model"], r["mode"], r["bytes"], r["runtime"], f"{r['agreement']:.2%}", "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}",
                  r["tflm_arena_bytes"] or "-", r["fits_256k_flash_64k_ram"], f"{r['latency_batch1_ms']:.3f}")
                 for r in rows])
    print_table(("chain for one layer", "bytes"), list(alternatives["bytes"].items()))
    write_result("tflite_sparse", {
        "models": {"binaryconnect": run_model if os.path.exists(run_model) else
                   f"mnist_mlp('binaryconnect_det'), one-shot K={K}, {args.binary_epochs} epochs on {args.binary_train} "
                   f"images ({run_model} did not exist yet)",
                   "binary": f"mnist_mlp('binary'), one-shot K={K}, {args.binary_epochs} epochs on {args.binary_train} images",
                   "binary_threshold": "the same with ThresholdEncoding(0.5) on the pixels (every layer reads bits)"},
        "rows": rows, "chain_alternatives": alternatives,
        "test_accuracy": {name: float(np.mean(np.argmax(m.predict(x_test, verbose=0), 1) == labels))
                          for name, m in nets.items()},
        "targets": {"sparse_max_bytes": 200_000, "sparse_int8_max_bytes": 120_000},
        "latency": f"batch 1, median of {args.repeats} invokes, 1 thread, TFLite interpreter of the 'tflite' rows",
    }, "python bench/tflite_sparse.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()))


if __name__ == "__main__":
    main()
