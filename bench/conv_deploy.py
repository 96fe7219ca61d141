"""Deploy a trained run's pruned net as C: agreement with Keras on the host and in QEMU, flash and RAM,
for each activation storage of the float build (f32, f16, q8).

    python bench/conv_deploy.py RUN_DIR [--samples 1000] [--storage f32 f16 q8] [--qemu-samples 1000 100 1000]
                                [--board auto] [--name conv_deploy]

Host: gcc on the first ``--samples`` test images (the run's own preprocessing). Firmware: the
lm3s6965evb (Cortex-M3, 256 KB flash, 64 KB RAM) if the build fits there, else the mps2-an386
(Cortex-M4F) (``--board`` forces one), on the first ``--qemu-samples`` images (one count, or one per
storage: QEMU takes about a second per image on the Cortex-M3's soft float), wall time measured;
model flash and RAM from ``arm-none-eabi-size`` (the firmware minus the same harness around an empty
model); the static RAM also without pooled rows (each convolution's whole output kept, as
``to_c(..., pooled_rows=False)``). Writes ``bench/results/<name>.json``.
"""
import argparse
import os
import sys
import tempfile
import time

import dataclasses

import numpy as np

from common import print_table, write_result
from iprune_tf.export import c_verify, to_c
from iprune_tf.workflow import preparation
from iprune_tf.workflow.runs import Run

CALIBRATION_SAMPLES = 500  # training images that set the q8 scales


def deploy(model, data, storage, samples, qemu_samples, board, work):
    """One storage's row: sizes, host and QEMU agreement with Keras, QEMU wall time."""
    x = data.x_test[:samples]
    keras_classes = np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1)
    cmodel = to_c(model, "conv", os.path.join(work, storage), activation_storage=storage,
                  representative_data=data.x_train[:CALIBRATION_SAMPLES])
    host_classes, _, _ = c_verify.run_host(c_verify.build_host(cmodel, os.path.join(work, f"host_{storage}")), x,
                                           cmodel.num_classes)
    m3 = c_verify.firmware_sizes(cmodel, os.path.join(work, f"m3_{storage}"))
    board = board if board != "auto" else "lm3s6965evb" if m3["fits"] else "mps2-an386"
    sizes = m3 if board == "lm3s6965evb" else c_verify.firmware_sizes(cmodel, os.path.join(work, f"fw_{storage}"),
                                                                      board)
    start = time.perf_counter()
    fw_classes, _ = c_verify.run_firmware(cmodel, x[:qemu_samples], os.path.join(work, f"qemu_{storage}"), board,
                                          timeout=7200)
    seconds = time.perf_counter() - start
    return {
        "storage": storage, "static_ram_bytes": cmodel.ram_bytes,
        "static_ram_bytes_without_pooled_rows": to_c(
            model, "conv", os.path.join(work, f"{storage}_whole"), activation_storage=storage,
            representative_data=data.x_train[:CALIBRATION_SAMPLES], pooled_rows=False).ram_bytes,
        "data_bytes": cmodel.data_bytes,
        "fits_lm3s6965evb": m3["fits"], "board": board, "sizes": sizes,
        "host_samples": len(x), "host_agreement": float(np.mean(host_classes == keras_classes)),
        "keras_accuracy": float(np.mean(keras_classes == data.y_test[:samples])),
        "qemu_samples": len(fw_classes),
        "qemu_agreement": float(np.mean(fw_classes == keras_classes[:len(fw_classes)])),
        "qemu_seconds": seconds, "qemu_seconds_per_image": seconds / max(1, len(fw_classes)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--qemu-samples", type=int, nargs="+", default=[1000])
    parser.add_argument("--storage", nargs="+", default=["f32", "f16", "q8"])
    parser.add_argument("--board", default="auto", choices=["auto", *c_verify.BOARDS])
    parser.add_argument("--name", default="conv_deploy")
    args = parser.parse_args()
    run = Run(args.run_dir)
    model = run.load_model("pruned_stripped")
    data, _ = preparation.prepare_data(run.config, run.dir)
    with tempfile.TemporaryDirectory() as work:
        counts = args.qemu_samples * len(args.storage) if len(args.qemu_samples) == 1 else args.qemu_samples
        rows = [deploy(model, data, storage, args.samples, n, args.board, work)
                for storage, n in zip(args.storage, counts)]
    print_table(("storage", "static RAM", "model flash", "model RAM", "board", "host agree", "qemu agree", "s/image"),
                [(r["storage"], r["static_ram_bytes"], r["sizes"]["model_flash_bytes"], r["sizes"]["model_ram_bytes"],
                  r["board"], f"{r['host_agreement']:.4f}", f"{r['qemu_agreement']:.4f} ({r['qemu_samples']})",
                  f"{r['qemu_seconds_per_image']:.3f}") for r in rows])
    write_result(args.name, {"run": run.dir, "config": dataclasses.asdict(run.config), "rows": rows},
                 "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
