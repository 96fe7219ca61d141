"""Which layers iprune_tf can prune, and how to reach their kernels.

iPrune's neuron is one output of a Dense layer or one filter of a Conv2D layer. Both plain
Keras layers (the full-precision baseline) and larq's quantized ones (BinaryConnect, fully
binary) are supported. Subclasses with other kernel layouts (``Conv2DTranspose`` derives from
``Conv2D`` but its kernel is ``(kh, kw, out, in)``) are refused, so types are matched exactly.
"""
import larq as lq

from iprune_tf._keras import keras

SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv2D,
    lq.layers.QuantDense,
    lq.layers.QuantConv2D,
)

# Layers with weights that are not fan-in kernels; pruning a model passes them through untouched.
_PASS_THROUGH_WITH_WEIGHTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
)

KERAS3_MODEL_MESSAGE = (
    "{what} was built with Keras 3 (`import keras`), but iprune_tf, like larq and "
    "tensorflow-model-optimization, works on Keras 2 models. Rebuild it with `tf.keras` after "
    "`import iprune_tf` (which sets TF_USE_LEGACY_KERAS=1) or with `import tf_keras as keras`."
)


def is_supported(layer):
    """True for the exact layer types iprune_tf knows how to prune."""
    return type(layer) in SUPPORTED_LAYERS


def supported_names():
    return ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)


def require_keras2(obj, what="The object to prune"):
    """Raise TypeError for Keras 3 layers/models and for anything that is not a Keras 2 layer."""
    if isinstance(obj, keras.layers.Layer):
        return obj
    if type(obj).__module__.split(".")[0] == "keras":
        raise TypeError(KERAS3_MODEL_MESSAGE.format(what=f"{what} ({type(obj).__name__})"))
    raise TypeError(f"{what} must be a Keras 2 (tf_keras) Model or Layer, got {type(obj).__name__}.")


def require_supported_layer(layer):
    """Raise a ValueError naming the layer and the supported types when it cannot be pruned."""
    require_keras2(layer, "The layer to prune")
    if not is_supported(layer):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by iprune_tf; "
            f"supported layers: {supported_names()}. Add it to the skip list to leave it dense."
        )
    return layer


def needs_pruning_decision(layer):
    """True for a layer that must be either pruned or explicitly skipped (it has kernel-like weights)."""
    if is_supported(layer):
        return True
    if isinstance(layer, _PASS_THROUGH_WITH_WEIGHTS) or isinstance(layer, keras.layers.InputLayer):
        return False
    return bool(layer.weights)


def kernel_variable(layer):
    """The layer's ``kernel`` attribute as stored (a larq ``QuantizedVariable`` for larq layers)."""
    return layer.__dict__["kernel"]


def latent_kernel(layer):
    """The real-valued kernel variable, under larq's quantizing view if there is one."""
    kernel = kernel_variable(layer)
    return getattr(kernel, "latent_variable", kernel)


def is_kernel(variable):
    """True for a layer's ``kernel`` weight, whether Keras hands back the variable or larq's view of it."""
    return variable.name.rsplit("/", 1)[-1].startswith("kernel")


def kernel_precision(layer):
    """Bits per weight of the kernel ``layer`` computes with: its kernel quantizer's precision, else 32.

    Stripping keeps it: a folded binary kernel carries ``lq.quantizers.NoOp(precision=1)``.
    """
    inner = getattr(layer, "layer", layer)
    precision = getattr(getattr(inner, "kernel_quantizer", None), "precision", None)
    return int(precision) if precision else 32
