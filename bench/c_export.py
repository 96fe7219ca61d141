"""C export (``export.to_c``) of the paper's presets: sizes on a Cortex-M3, QEMU and host agreement, latency.

1. MNIST preset at K=8 trained on Fashion-MNIST (``--model``: a run directory, default
   ``runs/fashion_mnist_k8`` of ``scripts/main_job.sh``, or a stripped ``.h5``): flash/RAM of the model alone and of harness + newlib on QEMU's
   lm3s6965evb (arm-none-eabi-size), its predictions in QEMU on the first ``--samples`` test
   images against Keras, host predictions, host time per inference (batch 1) against TFLite's
   int8 interpreter on the same model (one round: ratios with repeats, on a quiet machine, are
   ``bench/c_speed.py``'s), both index formats;
2. the fully binary MNIST preset (thermometer input code, random weights pruned to K=8, random
   batch-norm statistics): every output score of the C code (host and QEMU) against the lowered
   integer model, bit for bit, on Fashion-MNIST test images;
3. the CIFAR-10 preset (random weights, K=8), binary and BinaryConnect: host agreement with Keras
   on ``--cifar-samples`` inputs, sizes; in QEMU's lm3s6965evb if it fits, else in mps2-an386.

    .venv/bin/python bench/c_export.py [--model runs/fashion_mnist_k8] [--samples 1000] [--cifar-samples 200]

Writes ``bench/results/c_export.json`` (sections skipped with ``--skip`` keep their earlier results).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, write_result  # noqa: E402

import iprune_tf  # noqa: E402
from iprune_tf.workflow import data, models, preparation, recipes  # noqa: E402
from iprune_tf.workflow import runs as run_lib  # noqa: E402
from iprune_tf._keras import keras, tf  # noqa: E402
from iprune_tf.export import c_verify, lower, to_c, to_tflite  # noqa: E402
from iprune_tf.pruning.prune import prune_scope  # noqa: E402

TIMING_REPEATS = 7
CIFAR_QEMU_SAMPLES = 5  # the BinaryConnect VGG runs ~150M soft float operations per image in QEMU


def random_pruned(model, skip, seed=0, k=8):
    """``model`` pruned one-shot to ``k`` inputs per neuron (random latent weights), random BN statistics."""
    stripped = iprune_tf.prune_now(model, k, skip=skip)
    rng = np.random.default_rng(seed)
    for layer in stripped.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.normal(size=n), rng.normal(size=n), rng.normal(scale=3, size=n),
                               rng.uniform(0.5, 30, n)])
    return stripped


def tflite_ns_per_inference(tflite_bytes, x):
    """Best over repeats of the mean CPU time of one TFLite interpreter call (batch 1, 1 thread, default
    delegates, i.e. XNNPACK), with the classes it predicts. CPU time, like the C harness: robust to a
    loaded machine."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.allocate_tensors()
    assert inp["dtype"] == np.float32, "the int8 file keeps float32 input and output"
    samples = [s[None] for s in x]
    best, predicted = float("inf"), []
    for r in range(TIMING_REPEATS):
        start = time.process_time()
        for s in samples:
            interpreter.set_tensor(inp["index"], s)
            interpreter.invoke()
            if r == 0:
                predicted.append(int(interpreter.get_tensor(out["index"]).argmax()))
        best = min(best, (time.process_time() - start) / len(samples))
    return best * 1e9, np.asarray(predicted)


def export_and_run(net, name, x, work, index_format="auto", qemu_board=None, qemu_samples=None, repeats=TIMING_REPEATS):
    """to_c + host run (classes, scores, time) + sizes on lm3s6965evb (+ QEMU run on ``qemu_board``)."""
    cmodel = to_c(net, name, os.path.join(work, name), overwrite=True, index_format=index_format)
    exe = c_verify.build_host(cmodel, os.path.join(work, name, "host"))
    classes, scores, ns = c_verify.run_host(exe, x, cmodel.num_classes, repeats=repeats)
    sizes = c_verify.firmware_sizes(cmodel, os.path.join(work, name, "lm3s6965evb"))
    result = {"data_bytes": cmodel.data_bytes, "ram_bytes": cmodel.ram_bytes, "layers": cmodel.layers,
              "host_ns_per_inference": ns, "sizes_lm3s6965evb": sizes}
    if qemu_board == "auto":
        qemu_board = "lm3s6965evb" if sizes["fits"] else "mps2-an386"
    if qemu_board:
        xq = x[:qemu_samples]
        start = time.perf_counter()
        fw_classes, fw_scores = c_verify.run_firmware(cmodel, xq, os.path.join(work, name, qemu_board), qemu_board)
        result["qemu"] = {"board": qemu_board, "samples": len(xq), "seconds": round(time.perf_counter() - start, 1),
                          "scores_bit_identical_to_host": bool(np.array_equal(fw_scores, scores[: len(xq)])),
                          "classes": fw_classes, "scores": fw_scores}
        if qemu_board != "lm3s6965evb":
            result["sizes_" + qemu_board] = c_verify.firmware_sizes(cmodel, os.path.join(work, name, qemu_board),
                                                                     qemu_board)
    return result, classes, scores


def agreement(a, b):
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def load_trained(source):
    """(model, Fashion-MNIST-like data set) from a run directory or a stripped ``.h5`` (Fashion-MNIST)."""
    if os.path.isdir(source):
        run = run_lib.Run(source)
        return run.load_model("pruned_stripped"), preparation.prepare_data(run.config, run.dir)[0]
    with prune_scope():
        model = keras.models.load_model(source, compile=False)
    return model, data.load_dataset("fashion_mnist")


def mnist_run(source, samples, work):
    model, dataset = load_trained(source)
    x = dataset.x_test[:samples].astype("f4")
    expected = model.predict(x, batch_size=250, verbose=0).argmax(1)
    net = lower(model)
    operations = net.cost()["operations"]
    auto, classes, _ = export_and_run(net, "fmnist_k8", x, work, qemu_board="lm3s6965evb")
    qemu_classes, _ = auto["qemu"].pop("classes"), auto["qemu"].pop("scores")
    auto["qemu"]["agreement_with_keras"] = agreement(qemu_classes, expected)
    auto["host_agreement_with_keras"] = agreement(classes, expected)
    formats = {}
    for index_format in ("natural", "packed"):
        r, c, _ = export_and_run(net, f"fmnist_k8_{index_format}", x, work, index_format)
        formats[index_format] = {"data_bytes": r["data_bytes"], "host_ns_per_inference": r["host_ns_per_inference"],
                                 "model_flash_bytes": r["sizes_lm3s6965evb"]["model_flash_bytes"],
                                 "host_agreement_with_keras": agreement(c, expected)}
    int8 = to_tflite(model, "int8", representative_data=dataset.x_train[:500])
    tflite_ns, tflite_classes = tflite_ns_per_inference(int8, x)
    return {
        "model": source, "samples": len(x), "connections_per_inference": operations, **auto,
        "index_formats": formats,
        "tflite_int8": {"bytes": len(int8), "ns_per_inference": tflite_ns,
                        "agreement_with_keras": agreement(tflite_classes, expected)},
        "speedup_vs_tflite_int8": tflite_ns / auto["host_ns_per_inference"],
        "timing": f"CPU time per inference (batch 1, one thread), best of {TIMING_REPEATS} passes over the samples",
        "ns_per_connection": auto["host_ns_per_inference"] / operations,
    }


def binary_mnist(samples, work):
    model = random_pruned(models.mnist_mlp("binary", input_encoding="thermometer:3"), models.get_preset("mnist").skip())
    x = data.load_dataset("fashion_mnist", None, samples).x_test[:samples].astype("f4")
    net = lower(model)
    reference = net.predict(x)
    result, classes, scores = export_and_run(net, "binary_k8", x, work, qemu_board="lm3s6965evb")
    result["qemu"].pop("classes")
    result["qemu"]["scores_bit_identical_to_lowered"] = bool(np.array_equal(result["qemu"].pop("scores"), reference))
    result.update(samples=len(x), host_scores_bit_identical_to_lowered=bool(np.array_equal(scores, reference)),
                  score_values_compared=int(scores.size), equal_score_values=int(np.sum(scores == reference)),
                  host_agreement_with_keras=agreement(classes, model.predict(x, verbose=0).argmax(1)))
    return result


def cifar(flavour, samples, work):
    model = random_pruned(models.cifar10_vgg_small(flavour), models.get_preset("cifar10").skip())
    x = np.random.default_rng(1).normal(size=(samples, 32, 32, 3)).astype("f4")
    expected = model.predict(x, batch_size=50, verbose=0).argmax(1)
    net = lower(model)
    result, classes, _ = export_and_run(net, f"cifar_{flavour}", x, work, qemu_board="auto",
                                        qemu_samples=CIFAR_QEMU_SAMPLES, repeats=0)
    qemu_classes, _ = result["qemu"].pop("classes"), result["qemu"].pop("scores")
    result["qemu"]["agreement_with_keras"] = agreement(qemu_classes, expected[: len(qemu_classes)])
    result.update(samples=samples, host_agreement_with_keras=agreement(classes, expected))
    return result


def _previous_sections():
    """Sections of an earlier result file (``--skip`` keeps them), without its command and machine."""
    path = os.path.join(RESULTS, "c_export.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if k not in ("command", "machine")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/fashion_mnist_k8",
                   help="a run directory, or a stripped .h5 of the MNIST preset trained on Fashion-MNIST")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--cifar-samples", type=int, default=200)
    p.add_argument("--skip", action="append", default=[], choices=["mnist", "binary", "cifar"])
    args = p.parse_args()
    result = _previous_sections()
    with tempfile.TemporaryDirectory() as work:
        if "mnist" not in args.skip:
            result["mnist_k8_fashion_mnist"] = mnist_run(args.model, args.samples, work)
        if "binary" not in args.skip:
            result["mnist_k8_fully_binary_random"] = binary_mnist(args.samples, work)
        if "cifar" not in args.skip:
            for flavour in ("binary", "binaryconnect_det"):
                result[f"cifar10_k8_{flavour}_random"] = cifar(flavour, args.cifar_samples, work)
    write_result("c_export", result, " ".join(sys.argv))


if __name__ == "__main__":
    main()
