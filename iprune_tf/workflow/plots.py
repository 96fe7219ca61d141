"""Headless PNG plots of a run: weight distributions (the paper's Figures 2 and 4) and kept inputs.

matplotlib's Agg backend is selected here, so the plots work on machines without a display.
"""
import numpy as np

STAGES = {
    "before_pruning": "before pruning",
    "after_pruning": "after pruning",
    "after_retraining": "after retraining",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def weight_distributions(snapshots, path, bins=80):
    """Histogram of each layer's latent weights at each stage; returns ``path``.

    ``snapshots`` maps a stage (keys of :data:`STAGES`) to ``{layer name: kernel}``. Pruned
    weights are zero from "after pruning" on; they are left out of the histogram (their count is in
    the panel title) so the kept weights' distribution stays visible, as in the paper's figures.
    """
    stages = [s for s in STAGES if s in snapshots]
    layers = list(snapshots[stages[0]])
    plt = _pyplot()
    fig, axes = plt.subplots(len(layers), len(stages), figsize=(4 * len(stages), 2.6 * len(layers)), squeeze=False)
    for row, layer in enumerate(layers):
        for col, stage in enumerate(stages):
            weights = np.asarray(snapshots[stage][layer]).ravel()
            kept = weights[weights != 0] if stage != "before_pruning" else weights
            ax = axes[row, col]
            ax.hist(kept, bins=bins, color="tab:blue" if stage == "before_pruning" else "tab:orange")
            _label(ax, f"{layer}: {STAGES[stage]}\n{kept.size:,} of {weights.size:,} weights", "latent weight")
    return _save(plt, fig, path)


def kept_inputs(stats, path):
    """Bar chart per layer: how many neurons keep how many inputs; returns ``path``.

    ``stats`` are :func:`iprune_tf.inspect_pruning` rows.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 2.8), squeeze=False)
    for ax, s in zip(axes[0], stats):
        counts = {int(k): v for k, v in s.kept_histogram.items()}
        ax.bar([str(k) for k in counts], list(counts.values()), color="tab:green" if s.pruned else "tab:gray")
        _label(ax, f"{s.name} ({'pruned' if s.pruned else 'dense'}, fan-in {s.fan_in})", "inputs kept per neuron",
               "neurons")
    return _save(plt, fig, path)


def _label(ax, title, xlabel, ylabel=None):
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
