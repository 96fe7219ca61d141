"""Draw docs/img/overview.svg, the README's figure, from recorded results and the package's own schedule.

    python docs/_tools/overview_figure.py

Left: inputs per neuron of the first hidden layer (fan-in 784) over the 15 pruning epochs of the
main job, for the geometric ``FanInSchedule`` and the main job's ``last_halving=0.6``. Right: test
accuracy of seed 0 after each pruning and retraining epoch (``bench/results/accuracy_seeds_runs/``)
against that seed's dense nets (``bench/results/accuracy_seeds.json``).
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import iprune_tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = os.path.join(ROOT, "bench", "results", "accuracy_seeds_runs")
STEPS_PER_EPOCH, EPOCHS_PRUNE, FAN_IN, K = 600, 15, 784, 8
SCHEDULES = {"geometric": ("s0_k8_p15_f100.json", None), "last halving over 60% (main job)": ("s0_k8_p15_f100_lh0.6.json", 0.6)}


def kept_inputs(last_halving):
    """Epochs and inputs per neuron at each mask update of the main job's schedule."""
    schedule = iprune_tf.FanInSchedule(1, EPOCHS_PRUNE * STEPS_PER_EPOCH, 100, last_halving=last_halving)
    steps = range(1, EPOCHS_PRUNE * STEPS_PER_EPOCH + 1, 100)
    return [s / STEPS_PER_EPOCH for s in steps], [int(schedule(s, FAN_IN, K)[1]) for s in steps]


def accuracy_curve(name):
    with open(os.path.join(RUNS, name)) as f:
        run = json.load(f)
    curve = run["after_pruning"]["curve"] + run["variants"]["cosine"]["curve"]
    return list(range(1, len(curve) + 1)), [100 * a for a in curve]


def dense_accuracies():
    with open(os.path.join(ROOT, "bench", "results", "accuracy_seeds.json")) as f:
        rows = json.load(f)["rows"]
    return rows["full-precision dense"]["values"][0], rows["binary dense"]["values"][0]


def main():
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "iprune_tf", "font.size": 9})
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.9))
    for (label, (run, last_halving)), color in zip(SCHEDULES.items(), ("tab:gray", "tab:blue")):
        left.step(*kept_inputs(last_halving), where="post", color=color, label=label)
        right.plot(*accuracy_curve(run), marker=".", color=color, label=label)
    left.set(yscale="log", xlabel="pruning epoch", ylabel="inputs per neuron (layer 1)",
             title="every neuron keeps its K=8 largest inputs")
    left.set_yticks([8, 16, 64, 256, 784], labels=["8", "16", "64", "256", "784"])
    left.legend(frameon=False)
    full_precision, binary = dense_accuracies()
    right.axhline(full_precision, color="tab:green", ls="--", lw=1, label=f"full precision, dense ({full_precision:.2f}%)")
    right.axhline(binary, color="tab:orange", ls=":", lw=1, label=f"BinaryConnect, dense ({binary:.2f}%)")
    right.axvline(EPOCHS_PRUNE + 0.5, color="black", lw=0.5)
    right.text(EPOCHS_PRUNE + 1, 87.7, "retraining", fontsize=8)
    right.set(xlabel="epoch after the dense binary net", ylabel="test accuracy (%)", ylim=(87.5, 90.6),
              title="Fashion-MNIST, 784-1024-1024-10, seed 0")
    right.legend(frameon=False, fontsize=7, loc="lower left")
    fig.tight_layout()
    out = os.path.join(ROOT, "docs", "img", "overview.svg")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, metadata={"Date": None})
    print(out)


if __name__ == "__main__":
    main()
