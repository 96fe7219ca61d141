"""Export sizes and inference latency of the MNIST preset pruned to K=8 (issue #4, item 4).

    python bench/export_latency.py [--limit-train 10000] [--epochs-dense 2] [--epochs-prune 2] [--epochs-retrain 1]
    python bench/export_latency.py --from-run RUN_DIR

Model: ``mnist_mlp("binaryconnect_det")`` (784-1024-1024-10) trained on Fashion-MNIST with the
recipe (square hinge, Adam 3e-3, decoupled weight decay on 'output'): ``epochs_dense`` epochs dense,
then pruned to K=8 inputs per neuron by iprune_tf's gradual schedule over ``epochs_prune`` epochs
(paper skip list: 'output' stays dense), retrained ``epochs_retrain`` epochs with fixed masks (so
BN statistics match the final masks), stripped. ``--from-run`` instead loads
``RUN_DIR/models/pruned_stripped.h5`` (train with ``iprune train``; its own data and preprocessing are used).

Files (written by :func:`iprune_tf.export.export_run_files` to a temporary directory, each verified
against Keras on the first 1,000 test images): the stripped Keras ``.h5``, TFLite float, TFLite int8
(full-integer, dense kernels per tensor, float I/O, calibrated on 300 training images), LCE, and
the sparse format (its exact payload and its ``.npz`` file).

Latency: median of ``--repeats`` calls (after one warm-up) for one sample and for a batch of 256,
every runtime single-threaded (the machine is shared; the numbers are comparable, not peak):
Keras ``predict_on_batch``; TFLite's interpreter on the float and int8 files (input resized to
the batch; set input + invoke + read output); LCE's interpreter (its batch is fixed at 1, so a
batch is one invoke per sample, as its ``predict`` does); the sparse format's numpy reference
(``SparseModel.predict``).

Size checks of issue #4: int8 TFLite at most 1/4 of the float TFLite file, and the sparse format
at least 100x smaller than the float Keras weights, meaning every weight (kernels and BN
parameters and statistics, float32) of the full-precision flavour of the same MLP; its ``.h5``
file size is reported too.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import iprune_tf  # noqa: E402  (pins Keras 2 before tensorflow is imported)
import larq_compute_engine as lce  # noqa: E402
from common import fashion_mnist, median_seconds, print_table, write_result  # noqa: E402
from iprune_tf import export  # noqa: E402
from iprune_tf.workflow import models
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow import runs as run_lib
from iprune_tf._keras import keras, tf  # noqa: E402

K = 8
NAME = "mnist_k8"
FILE_MODES = ("h5", "float", "int8", "lce", "npz")
BATCHES = (1, 256)
CALIBRATION = 300
VERIFY = 1000


def train_pruned(args, x, y):
    """The preset trained dense, pruned gradually to K=8, retrained and stripped; returns the stripped model."""
    keras.utils.set_random_seed(args.seed)
    model = recipes.compile_model(models.mnist_mlp("binaryconnect_det"), weight_decay=recipes.WEIGHT_DECAY)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs_dense, verbose=2)
    steps = args.epochs_prune * -(-len(x) // args.batch_size)
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=max(1, steps), frequency=args.frequency)
    pruned = iprune_tf.prune_fan_in(model, K, schedule, skip=iprune_tf.paper_skip("mnist"))
    recipes.compile_model(pruned, weight_decay=recipes.WEIGHT_DECAY)
    pruned.fit(x, y, batch_size=args.batch_size, epochs=args.epochs_prune + args.epochs_retrain,
               callbacks=[iprune_tf.UpdatePruningStep()], verbose=2)
    return iprune_tf.strip_pruning(pruned)


def from_run(run_dir):
    """The run's stripped pruned model and its (preprocessed) data: train inputs, test inputs and labels."""
    run = run_lib.Run(run_dir)
    if run.config.preset != "mnist":
        raise ValueError(f"{run_dir} is a '{run.config.preset}' run; this benchmark measures the MNIST preset.")
    data, _ = preparation.prepare_data(run.config, run.dir)
    return run.load_model("pruned_stripped"), data.x_train, data.x_test[:VERIFY], data.y_test[:VERIFY]


def float_keras_reference(tmp_dir):
    """Weight bytes and ``.h5`` bytes of the full-precision flavour of the same MLP (what 100x is measured against)."""
    model = models.mnist_mlp("full_precision")
    path = os.path.join(tmp_dir, "full_precision.h5")
    model.save(path)
    return {"weight_bytes": int(sum(w.numpy().nbytes for w in model.weights)), "h5_bytes": os.path.getsize(path),
            "parameters": int(model.count_params())}


def tflite_runner(tflite_bytes, batch):
    """``run(x)``: one TFLite interpreter call (set input, invoke, read output) on a batch of ``batch``."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    interpreter.allocate_tensors()

    def run(x):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def runners(model, files, batch):
    """``{runtime: run(x)}`` for inputs of ``batch`` samples."""
    return {
        "keras": model.predict_on_batch,
        "tflite_float": tflite_runner(files["float"], batch),
        "tflite_int8": tflite_runner(files["int8"], batch),
        "lce": lce.testing.Interpreter(files["lce"], num_threads=1).predict,
        "numpy_sparse": files["sparse"].predict,
    }


def latencies(model, files, x, repeats):
    """``{runtime: {"1": seconds, "256": seconds}}``, each the median of ``repeats`` calls."""
    results = {}
    for batch in BATCHES:
        inputs = np.ascontiguousarray(x[:batch])
        for runtime, run in runners(model, files, batch).items():
            if np.argmax(run(inputs), axis=-1).shape != (batch,):
                raise RuntimeError(f"{runtime} returned outputs of the wrong shape for a batch of {batch}.")
            results.setdefault(runtime, {})[str(batch)] = median_seconds(lambda: run(inputs), repeats)
    return results


def load_files(rows):
    """The exported artifacts by mode: TFLite bytes, and the loaded sparse model."""
    paths = {row.mode: row.file for row in rows}
    files = {mode: open(paths[mode], "rb").read() for mode in ("float", "int8", "lce")}
    files["sparse"] = export.load_sparse(paths["npz"])
    return files


def size_results(rows, reference):
    sizes = {row.mode: row.bytes for row in rows}
    payload = next(row.payload_bytes for row in rows if row.mode == "npz")
    checks = {
        "int8_over_float_tflite": sizes["int8"] / sizes["float"],
        "int8_at_most_quarter_of_float": sizes["int8"] <= sizes["float"] / 4,
        "float_weights_over_sparse_payload": reference["weight_bytes"] / payload,
        "float_weights_over_sparse_file": reference["weight_bytes"] / sizes["npz"],
        "float_h5_over_sparse_file": reference["h5_bytes"] / sizes["npz"],
        "sparse_at_least_100x_smaller": reference["weight_bytes"] / sizes["npz"] >= 100,
    }
    return {"bytes": sizes, "sparse_payload_bytes": payload, "full_precision_reference": reference, "checks": checks}


def print_results(sizes, rows, times):
    print_table(
        ("file", "bytes", "runtime", "top-1 agreement", "max |diff|", "TFLM arena"),
        [(os.path.basename(r.file), r.bytes, r.runtime, f"{r.agreement:.2%}", f"{r.max_abs_diff:.3g}",
          "-" if r.arena_bytes is None else r.arena_bytes) for r in rows],
    )
    ref = sizes["full_precision_reference"]
    print(f"\nsparse payload {sizes['sparse_payload_bytes']} bytes; full-precision Keras weights {ref['weight_bytes']} "
          f"bytes (.h5 file {ref['h5_bytes']})")
    print_table(("check", "value"), [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in sizes["checks"].items()])
    print()
    print_table(("runtime", "1 sample (ms)", "batch 256 (ms)", "batch 256 per sample (us)"),
                [(name, f"{t['1'] * 1e3:.3f}", f"{t['256'] * 1e3:.2f}", f"{t['256'] / 256 * 1e6:.1f}")
                 for name, t in times.items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", help="use RUN_DIR/models/pruned_stripped.h5 instead of training")
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--epochs-dense", type=int, default=2)
    parser.add_argument("--epochs-prune", type=int, default=2, help="epochs over which the fan-in shrinks to K")
    parser.add_argument("--epochs-retrain", type=int, default=1, help="epochs with fixed masks after pruning")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--frequency", type=int, default=20, help="steps between mask updates while pruning")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.from_run:
        model, x, x_test, labels = from_run(args.from_run)
    else:
        x, y, x_test, _, labels = fashion_mnist(args.limit_train, VERIFY)
        model = train_pruned(args, x, y)
    accuracy = recipes.top1_accuracy(model, x_test, labels)
    stats = {s.name: [s.kept_min, s.kept_max] for s in iprune_tf.inspect_pruning(model) if s.pruned}
    print(f"test accuracy {accuracy:.4f} on {len(x_test)} images; kept inputs per neuron {stats}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = export.export_run_files(model, tmp, NAME, FILE_MODES, x[:CALIBRATION], x_test)
        sizes = size_results(rows, float_keras_reference(tmp))
        files = load_files(rows)
    times = latencies(model, files, x_test, args.repeats)
    print_results(sizes, rows, times)
    source = {"from_run": args.from_run} if args.from_run else {
        "trained": {k: getattr(args, k) for k in ("limit_train", "epochs_dense", "epochs_prune", "epochs_retrain",
                                                    "batch_size", "frequency", "seed")}}
    write_result("export_latency", {
        "model": "mnist_mlp binaryconnect_det 784-1024-1024-10, K=8, output dense", **source,
        "test_accuracy": accuracy, "kept_inputs_min_max": stats, "sizes": sizes,
        "verification": [r.as_dict() | {"file": os.path.basename(r.file)} for r in rows],
        "latency_seconds": times, "latency_repeats": args.repeats, "threads": 1,
        "notes": {"lce": "LCE's interpreter has a fixed batch of 1: batch 256 = 256 invokes (its predict).",
                  "int8": "full-integer, dense kernels per tensor (to_tflite default), float32 input/output",
                  "int8_size": "the int8 weights are exactly 1/4 of the float ones, but the int32 biases (folded BN "
                               "shift) are as large as the float biases: see 'int8 and sizes' in iprune_tf.export"},
    }, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
