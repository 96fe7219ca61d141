"""Per-layer pruning statistics of a model: fan-in before and after, kept-input histogram, binary-ness.

Works on pruned (wrapped), stripped and plain models alike, by reading each layer's *effective*
kernel: the weights the layer actually computes with (quantized and masked). The latent kernels
(before quantization) are what the weight plots show.
"""
import collections
from dataclasses import asdict, dataclass, field

import numpy as np

from iprune_tf.pruning import masking
from iprune_tf._keras import tf
from iprune_tf.pruning.layers import is_supported, kernel_precision, latent_kernel
from iprune_tf.pruning.wrapper import PruneFanIn


@dataclass
class LayerStats:
    """What one Dense/Conv2D layer looks like after pruning."""

    name: str
    layer_type: str
    pruned: bool
    neurons: int
    fan_in: int
    kept_min: int
    kept_max: int
    nonzero_weights: int
    total_weights: int
    binary: bool
    kept_histogram: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


def effective_kernel(layer):
    """The kernel ``layer`` computes with, as numpy: quantized and masked where that applies."""
    if isinstance(layer, PruneFanIn):
        return layer.effective_kernel().numpy()
    quantizer = getattr(layer, "kernel_quantizer", None)
    latent = tf.convert_to_tensor(latent_kernel(layer))
    return (quantizer(latent) if quantizer is not None else latent).numpy()


def latent_kernels(model):
    """``{layer name: latent kernel * mask}`` for every prunable layer: what the plots show."""
    kernels = {}
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            kernels[layer.layer.name] = (tf.convert_to_tensor(latent_kernel(layer.layer)) * layer.mask).numpy()
        elif is_supported(layer):
            kernels[layer.name] = tf.convert_to_tensor(latent_kernel(layer)).numpy()
    return kernels


def one_shot_masked(model, kernels):
    """``kernels`` with each pruned layer's per-neuron top-K mask applied: the weights right after
    a one-shot pruning, before any retraining step."""
    masked = dict(kernels)
    for layer in model.layers:
        if isinstance(layer, PruneFanIn):
            name = layer.layer.name
            mask = masking.per_neuron_topk_mask(tf.constant(kernels[name]), layer.final_inputs_per_neuron)
            masked[name] = kernels[name] * mask.numpy()
    return masked


def inspect_pruning(model):
    """``LayerStats`` for every Dense/Conv2D layer of ``model`` (wrapped or not), in model order."""
    return [_layer_stats(layer) for layer in model.layers if isinstance(layer, PruneFanIn) or is_supported(layer)]


def _layer_stats(layer):
    inner = layer.layer if isinstance(layer, PruneFanIn) else layer
    kernel = effective_kernel(layer)
    n_inputs = masking.fan_in(kernel.shape)
    kept = np.count_nonzero(kernel.reshape(n_inputs, -1), axis=0)
    nonzero = kernel[kernel != 0]
    return LayerStats(
        name=inner.name,
        layer_type=type(inner).__name__,
        pruned=bool(kept.max() < n_inputs),
        neurons=int(kept.size),
        fan_in=n_inputs,
        kept_min=int(kept.min()),
        kept_max=int(kept.max()),
        nonzero_weights=int(nonzero.size),
        total_weights=int(kernel.size),
        binary=kernel_precision(layer) == 1,
        kept_histogram=dict(sorted(collections.Counter(kept.tolist()).items())),
    )


def format_inspection(stats):
    """A fixed-width text table of :func:`inspect_pruning`'s rows."""
    header = f"{'layer':<22}{'type':<13}{'pruned':>7}{'neurons':>9}{'fan-in':>8}{'kept':>11}{'non-zero':>11}{'of':>11}{'binary':>8}"
    lines = [header, "-" * len(header)]
    for s in stats:
        kept = f"{s.kept_min}" if s.kept_min == s.kept_max else f"{s.kept_min}-{s.kept_max}"
        lines.append(
            f"{s.name:<22}{s.layer_type:<13}{'yes' if s.pruned else 'no':>7}{s.neurons:>9}{s.fan_in:>8}"
            f"{kept:>11}{s.nonzero_weights:>11}{s.total_weights:>11}{'yes' if s.binary else 'no':>8}"
        )
    return "\n".join(lines)
