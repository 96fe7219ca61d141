"""Instructions per inference of the C export on an emulated Cortex-M3, against a dense int8 reference.

QEMU models no cycles, but under ``-icount shift=0`` each executed instruction advances the
virtual clock by 1 ns, so SysTick read around each ``predict`` call counts instructions, the same
on every run and host (``c_verify.count_instructions``; the tick factor per board is checked by
``tests/test_export_c_timing.py``). Everything runs on QEMU's ``mps2-an385`` (Cortex-M3, 4 MB
flash): the dense int8 reference (1.9 MB of weights) does not fit the lm3s6965evb's 256 KB.

For the MNIST preset at K=8 trained on Fashion-MNIST (``--model``): each C build of
``bench/c_speed.py``'s BUILDS and the dense int8 reference (``bench/dense_int8_reference.py``: the
model's full-integer TFLite file as TFLite Micro reference kernels) get instructions per inference
on ``--samples`` test images, measured twice (two QEMU runs, which must agree exactly), per kept
connection, their agreement with Keras (host gcc, same arithmetic, ``--agreement-samples`` images)
and their flash. Also the fully binary preset (random weights, popcount path). Writes
``bench/results/mcu_instructions.json``.

    .venv/bin/python bench/mcu_instructions.py [--model runs/fashion_mnist_k8] [--samples 5]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_export import load_trained, random_pruned, tflite_ns_per_inference  # noqa: E402
from c_speed import BUILDS, build  # noqa: E402
from common import write_result  # noqa: E402
from dense_int8_reference import dense_int8_c  # noqa: E402

from iprune_tf.export import c_verify, lower, to_c, to_tflite  # noqa: E402
from iprune_tf.workflow import data, models  # noqa: E402

BOARD = "mps2-an385"
LM3S = c_verify.BOARDS["lm3s6965evb"]


def measure(cmodel, exe, x_time, x_agree, expected, work, connections):
    """Instructions (two QEMU runs), host agreement and flash of one build."""
    runs = [c_verify.count_instructions(cmodel, x_time, os.path.join(work, "qemu"), BOARD)[1] for _ in range(2)]
    classes, _, _ = c_verify.run_host(exe, x_agree, cmodel.num_classes)
    sizes = c_verify.firmware_sizes(cmodel, os.path.join(work, "sizes"), BOARD)
    median = float(np.median(runs[0]))
    return {
        "instructions_per_inference": median, "instructions_per_sample": runs[0].tolist(),
        "identical_across_two_runs": bool(np.array_equal(*runs)),
        "instructions_per_connection": median / connections, "connections_per_inference": int(connections),
        "host_agreement_with_keras": float(np.mean(classes == expected)), "agreement_samples": len(x_agree),
        "model_flash_bytes": sizes["model_flash_bytes"], "model_ram_bytes": sizes["model_ram_bytes"],
        "data_bytes": cmodel.data_bytes, "firmware": sizes["firmware"],
        "fits_lm3s6965evb": sizes["firmware"]["flash"] <= LM3S.flash_bytes and sizes["firmware"]["ram"] <= LM3S.ram_bytes,
    }


def trained(args, work):
    model, dataset = load_trained(args.model)
    x_agree = dataset.x_test[: args.agreement_samples].astype("f4")
    x_time = x_agree[: args.samples]
    expected = model.predict(x_agree, batch_size=250, verbose=0).argmax(1)
    net = lower(model)
    connections = net.cost()["operations"]
    result = {}
    for b in args.builds:
        cmodel, exe = build(net, f"fmnist_{b}", BUILDS[b], dataset.x_train, work)
        result[b] = dict(measure(cmodel, exe, x_time, x_agree, expected, os.path.join(work, b), connections),
                         to_c=BUILDS[b], layers=[(f["name"], f["path"], f["index_format"]) for f in cmodel.layers])
        print(b, result[b]["instructions_per_inference"], result[b]["host_agreement_with_keras"], flush=True)
    int8 = to_tflite(model, "int8", representative_data=dataset.x_train[:500])
    dense = dense_int8_c(int8, "fmnist_dense_int8", os.path.join(work, "dense"))
    exe = c_verify.build_host(dense, os.path.join(work, "dense", "host"))
    result["dense_int8_reference"] = measure(dense, exe, x_time, x_agree, expected, os.path.join(work, "dense"),
                                             dense.operations)
    _, tflite_classes = tflite_ns_per_inference(int8, x_agree)
    dense_classes, _, _ = c_verify.run_host(exe, x_agree, dense.num_classes)
    result["dense_int8_reference"]["agreement_with_tflite_int8"] = float(np.mean(dense_classes == tflite_classes))
    reference = result["dense_int8_reference"]["instructions_per_inference"]
    for b in args.builds:
        result[b]["fewer_instructions_than_dense_int8"] = reference / result[b]["instructions_per_inference"]
    print("dense", reference, result["dense_int8_reference"]["host_agreement_with_keras"], flush=True)
    return result


def fully_binary(args, work):
    """The fully binary MNIST preset (thermometer input, random weights, K=8): the popcount path, per index format."""
    model = random_pruned(models.mnist_mlp("binary", input_encoding="thermometer:3"), models.get_preset("mnist").skip())
    x = data.load_dataset("fashion_mnist", None, args.agreement_samples).x_test[: args.agreement_samples].astype("f4")
    net = lower(model)
    expected = model.predict(x, batch_size=250, verbose=0).argmax(1)
    result = {}
    for index_format in ("auto", "natural"):
        cmodel = to_c(net, f"binary_{index_format}", os.path.join(work, index_format), overwrite=True,
                      index_format=index_format)
        exe = c_verify.build_host(cmodel, os.path.join(work, index_format, "host"))
        result[index_format] = dict(measure(cmodel, exe, x[: args.samples], x, expected, os.path.join(work, index_format),
                                            net.cost()["operations"]),
                                    layers=[(f["name"], f["path"], f["index_format"]) for f in cmodel.layers])
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/fashion_mnist_k8")
    p.add_argument("--samples", type=int, default=5, help="test images timed in QEMU")
    p.add_argument("--agreement-samples", type=int, default=1000)
    p.add_argument("--builds", nargs="+", default=list(BUILDS), choices=list(BUILDS))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = {"board": BOARD, "tick_instructions": c_verify.BOARDS[BOARD].tick_instructions,
                  "timed_samples": args.samples, "model": args.model,
                  "mnist_k8_fashion_mnist": trained(args, work),
                  "mnist_k8_fully_binary_random": fully_binary(args, os.path.join(work, "binary"))}
    write_result("mcu_instructions", result, " ".join(sys.argv))


if __name__ == "__main__":
    main()
