"""Host speed of the C export against TFLite's int8 interpreter, several builds in one run, with repeats.

For the MNIST preset trained on Fashion-MNIST (``--model``, default ``runs/fashion_mnist_k8`` of
``scripts/main_job.sh``): each C build (``--builds``; see BUILDS) is compiled once with the host's
gcc, then ``--rounds`` rounds each time the C builds and TFLite int8 (XNNPACK, one thread, batch 1)
on the first ``--samples`` test images: CPU time per inference, best of TIMING_REPEATS passes
(``bench/c_export.py``'s timing). Per build: min/median/max over the rounds of the time and of the
ratio TFLite / C (each round's ratio from the same round), its agreement with Keras and its model
data bytes; the load average before and after. Needs a quiet machine (no training or synthesis
running): a loaded machine evicts TFLite's 1.9 MB model from the caches and flatters the C model.

    .venv/bin/python bench/c_speed.py [--model runs/fashion_mnist_k8] [--rounds 3] [--out c_speed]
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_export import load_trained, tflite_ns_per_inference  # noqa: E402
from common import write_result  # noqa: E402

from iprune_tf.export import c_verify, lower, to_c, to_tflite  # noqa: E402

# name: to_c keyword arguments (the int builds calibrate on training images)
BUILDS = {
    "default": {},
    "natural": {"index_format": "natural"},
    "int16": {"activations": "int16"},
    "int16_natural": {"activations": "int16", "index_format": "natural"},
    "int8": {"activations": "int8"},
    "int8_natural": {"activations": "int8", "index_format": "natural"},
}
CALIBRATION_SAMPLES = 1000


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def build(net, name, kwargs, x_train, work):
    if "activations" in kwargs:
        kwargs = dict(kwargs, representative_data=x_train[:CALIBRATION_SAMPLES])
    cmodel = to_c(net, name, os.path.join(work, name), overwrite=True, **kwargs)
    return cmodel, c_verify.build_host(cmodel, os.path.join(work, name, "host"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/fashion_mnist_k8")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--builds", nargs="+", default=list(BUILDS), choices=list(BUILDS))
    p.add_argument("--out", default="c_speed", help="result name under bench/results/")
    args = p.parse_args()
    model, dataset = load_trained(args.model)
    x = dataset.x_test[: args.samples].astype("f4")
    expected = model.predict(x, batch_size=250, verbose=0).argmax(1)
    net = lower(model)
    int8 = to_tflite(model, "int8", representative_data=dataset.x_train[:500])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        built = {b: build(net, f"fmnist_{b}", BUILDS[b], dataset.x_train, work) for b in args.builds}
        times = {b: [] for b in args.builds}
        ratios = {b: [] for b in args.builds}
        agreement, tflite_times = {}, []
        for _ in range(args.rounds):
            tflite_ns, tflite_classes = tflite_ns_per_inference(int8, x)
            tflite_times.append(tflite_ns)
            for b, (cmodel, exe) in built.items():
                classes, _, ns = c_verify.run_host(exe, x, cmodel.num_classes, repeats=7)
                times[b].append(ns)
                ratios[b].append(tflite_ns / ns)
                agreement[b] = float(np.mean(classes == expected))
        result = {
            "model": args.model, "samples": len(x), "rounds": args.rounds,
            "connections_per_inference": net.cost()["operations"],
            "timing": "CPU time per inference (batch 1, one thread), best of 7 passes over the samples, per round",
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "tflite_int8": {"bytes": len(int8), "ns_per_inference": spread(tflite_times),
                            "agreement_with_keras": float(np.mean(tflite_classes == expected))},
            "builds": {b: {"to_c": BUILDS[b], "data_bytes": built[b][0].data_bytes,
                           "layers": [(f["name"], f["path"], f["index_format"]) for f in built[b][0].layers],
                           "ns_per_inference": spread(times[b]), "speedup_vs_tflite_int8": spread(ratios[b]),
                           "host_agreement_with_keras": agreement[b]} for b in args.builds},
        }
    for b in args.builds:
        r = result["builds"][b]
        print(f"{b:>14}: {r['ns_per_inference']['median']:8.0f} ns  x{r['speedup_vs_tflite_int8']['median']:.2f} "
              f"(min {r['speedup_vs_tflite_int8']['min']:.2f}, max {r['speedup_vs_tflite_int8']['max']:.2f})  "
              f"agreement {r['host_agreement_with_keras']:.4f}  data {r['data_bytes']} B")
    write_result(args.out, result, " ".join(sys.argv))


if __name__ == "__main__":
    main()
