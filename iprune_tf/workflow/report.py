"""The paper's Table 1 for a run: accuracy, memory and computation, with gains over the FP dense net.

Two countings of memory, both in bits and per layer (Dense/Conv2D, pruned or not):

* **paper** (LUT hardware, as iPrune counts it): one bit per kept binary connection, 32 bits per
  full-precision weight. The connectivity (which inputs each neuron reads) is wired into the
  circuit, so it costs nothing; skipped layers count at their own precision (a skipped binary
  layer still costs one bit per weight); batch norm is not counted.
* **file** (what the ``.npz`` of :mod:`iprune_tf.export.npz` stores): every kept connection's
  sign bit (or 32-bit value) plus ``ceil(log2(fan_in))`` index bits saying which input it reads,
  for pruned layers; full kernels of unpruned layers at their precision; and per neuron two
  float32s (bias and BN folded to a scale and an offset) or one int32 threshold.

Computation counts one operation per connection evaluated in an inference (a multiply-accumulate
for float weights, an XNOR/add for binary ones, as the paper does): a Dense layer costs its kept
connections, a Conv2D layer its kept connections times its output positions.

Output heads (:mod:`iprune_tf.workflow.heads`): a ``pruned:K_OUT`` output layer counts like any pruned
layer (K_OUT bits per class, K_OUT operations); a ``groupsum`` head's connections carry no weight (all
+1, wired): 0 paper bits, one operation (an add) per last-hidden unit, and in the file counting the
index and sign bits its sparse layer stores, as for any other.

Gains are ratios against the *full-precision dense* net of the same architecture.
Worked check against the paper (MNIST, 784-1024-1024-10, K=8, last layer dense binary):
dense FP = (784*1024 + 1024*1024 + 1024*10) * 32 bits = 59,572,224 bits; pruned =
1024*8 + 1024*8 + 1024*10 = 26,624 bits; memory gain 2237.5x; computation gain
1,861,632 / 26,624 = 69.9x (the paper's ~2200x and ~70x).
"""
import dataclasses
import json
import os
import statistics

from iprune_tf.pruning import inspection
from iprune_tf.workflow import heads
from iprune_tf.export.lowering import lower
from iprune_tf.workflow.runs import Run

ROWS = (
    ("dense_fp", "Full-precision dense"),
    ("dense_binary", "Binary dense"),
    ("pruned_stripped", "Pruned binary"),
    ("tables", "Pruned binary, truth tables"),
)


def model_costs(model):
    """Totals and per-layer figures of one model, from its lowered form (:meth:`LoweredNet.cost`)."""
    return lower(model).cost()


def table1(models_by_phase, accuracies):
    """Table 1 rows from ``{phase: model}`` and ``{phase: test accuracy}``; gains vs ``dense_fp``."""
    costs = {phase: model_costs(model) for phase, model in models_by_phase.items()}
    base = costs["dense_fp"]
    rows = []
    for phase, label in ROWS:
        if phase not in costs:
            continue
        c = costs[phase]
        rows.append({
            "phase": phase,
            "model": label,
            "test_accuracy": accuracies.get(phase),
            "memory_kib_paper": c["memory_bits_paper"] / 8 / 1024,
            "memory_gain_paper": base["memory_bits_paper"] / c["memory_bits_paper"],
            "memory_kib_file": c["memory_bits_file"] / 8 / 1024,
            "memory_gain_file": base["memory_bits_file"] / c["memory_bits_file"],
            "operations": c["operations"],
            "computation_gain": base["operations"] / c["operations"],
            "layers": c["layers"],
        })
    return rows


def format_markdown(rows, title="Table 1"):
    """The rows as a Markdown table (accuracy in %, memory in KiB, gains as ``x``)."""
    lines = [
        f"### {title}",
        "",
        "| model | test acc. | memory (KiB, paper) | memory gain | memory (KiB, file) | file gain | operations | computation gain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = accuracy_text(list(r["test_accuracy_seeds"].values()) if "test_accuracy_seeds" in r else r["test_accuracy"])
        lines.append(
            f"| {r['model']} | {acc} | {r['memory_kib_paper']:,.2f} | {r['memory_gain_paper']:,.1f}x "
            f"| {r['memory_kib_file']:,.2f} | {r['memory_gain_file']:,.1f}x | {r['operations']:,} "
            f"| {r['computation_gain']:,.1f}x |"
        )
    return "\n".join(lines)


def accuracy_text(accuracy):
    """``89.39%`` for one run; ``89.41% ± 0.15 (n=3)`` for a list of runs (sample std over seeds)."""
    if accuracy is None:
        return "n/a"
    if isinstance(accuracy, (int, float)):
        return f"{100 * accuracy:.2f}%"
    values = [100 * a for a in accuracy]
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}%{spread} (n={len(values)})"


def _phase_accuracy(run, phase):
    return run.phases.get(phase.replace("_stripped", ""), {}).get("test_accuracy")


def seeds_report(run_dirs):
    """Table 1 over runs that differ only in their seed: accuracy as mean ± std with the seed count.

    Returns ``(rows, markdown)``; each row has ``test_accuracy`` (the mean) and ``test_accuracy_seeds``
    (``{seed: accuracy}``). Memory and operations are the first run's (the same config has the same
    counts). Only phases finished in every run are shown.
    """
    runs = [Run(d) for d in run_dirs]
    seeds = [r.config.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"one run per seed expected; seeds of {list(run_dirs)}: {seeds}")
    for r in runs[1:]:
        if dataclasses.replace(r.config, seed=0) != dataclasses.replace(runs[0].config, seed=0):
            raise ValueError(f"{r.dir} and {runs[0].dir} differ in more than the seed; they are not one recipe.")
    phases = [phase for phase, _ in ROWS if all(os.path.isfile(r.model_path(phase)) for r in runs)]
    if "dense_fp" not in phases:
        raise FileNotFoundError(f"not every run of {list(run_dirs)} has a finished dense_fp phase.")
    rows = table1({phase: runs[0].load_model(phase) for phase in phases}, {})
    for row in rows:
        row["test_accuracy_seeds"] = {r.config.seed: _phase_accuracy(r, row["phase"]) for r in runs}
        row["test_accuracy"] = statistics.mean(row["test_accuracy_seeds"].values())
    config = runs[0].config
    samples = runs[0].data.get("train_samples")
    title = (f"Table 1: {config.preset} preset, {config.flavour}, K={config.inputs_per_neuron}, "
             f"data {runs[0].data.get('name', config.data)}" + (f" ({samples:,} training images)" if samples else "")
             + f", seeds {sorted(seeds)}")
    return rows, format_markdown(rows, title) + "\n\n" + heads.describe(config.head)


def write_report(run_dir, plots=True):
    """Write ``report.md``, ``report.json`` and (``plots=True``) ``plots/*.png`` for a run.

    Returns the Markdown text. Needs the ``dense_fp`` phase; later phases appear once done.
    """
    run = Run(run_dir)
    phases = [phase for phase, _ in ROWS if os.path.isfile(run.model_path(phase))]
    if "dense_fp" not in phases:
        raise FileNotFoundError(f"{run.dir} has no finished dense_fp phase: nothing to compare against.")
    models = {phase: run.load_model(phase) for phase in phases}
    accuracies = {phase: _phase_accuracy(run, phase) for phase in phases}
    rows = table1(models, accuracies)
    config = run.config
    title = (f"Table 1: {config.preset} preset, {config.flavour}, K={config.inputs_per_neuron}, "
             f"data {run.data.get('name', config.data)}")
    markdown = format_markdown(rows, title) + "\n\n" + heads.describe(config.head)
    with open(os.path.join(run.dir, "report.md"), "w") as f:
        f.write(markdown + "\n")
    with open(os.path.join(run.dir, "report.json"), "w") as f:
        json.dump({"config": dataclasses.asdict(config), "data": run.data, "phases": run.phases, "table": rows}, f, indent=2)
    if plots:
        written = _write_plots(run, models)
        markdown += "\n\nplots: " + ", ".join(written)
    return markdown


def _write_plots(run, models):
    from iprune_tf.workflow import plots

    out = os.path.join(run.dir, "plots")
    os.makedirs(out, exist_ok=True)
    written = []
    snapshots = {name: run.load_snapshot(name) for name in ("before_pruning", "after_pruning", "after_retraining")
                 if os.path.isfile(run.snapshot_path(name))}
    if snapshots:
        written.append(plots.weight_distributions(snapshots, os.path.join(out, "weight_distributions.png")))
    if "pruned_stripped" in models:
        stats = inspection.inspect_pruning(models["pruned_stripped"])
        written.append(plots.kept_inputs(stats, os.path.join(out, "kept_inputs.png")))
    return written
