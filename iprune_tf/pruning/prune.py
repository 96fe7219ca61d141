"""Public pruning API in tfmot's style: functions that take and return Keras models.

``prune_fan_in`` is iprune_tf's ``prune_low_magnitude``; ``strip_pruning`` its finalizer. Both
return new, independent models: the user's model and its weights are never modified.
"""
import numpy as np

from iprune_tf.pruning import masking
from iprune_tf.pruning import schedules as sched
from iprune_tf._keras import keras
from iprune_tf.pruning.layers import is_supported, latent_kernel, require_keras2, supported_names
from iprune_tf.workflow.heads import GroupSum
from iprune_tf.workflow.lut_table import LutTable
from iprune_tf.workflow.quantizers import StochasticBinary
from iprune_tf.pruning.skip import prunable_layers, resolve_skip
from iprune_tf.pruning.wrapper import PruneFanIn


def custom_objects():
    """Every class a saved iprune_tf model may name, for ``keras.models.load_model``."""
    return {
        "PruneFanIn": PruneFanIn,
        "FanInSchedule": sched.FanInSchedule,
        "StochasticBinary": StochasticBinary,
        "GroupSum": GroupSum,
        "LutTable": LutTable,
    }


def prune_scope():
    """``with iprune_tf.prune_scope(): keras.models.load_model(path)`` loads pruned models."""
    return keras.utils.custom_object_scope(custom_objects())


def prune_fan_in(to_prune, inputs_per_neuron=8, pruning_schedule=None, skip=None, inputs_per_layer=None):
    """Prune every supported layer of a model (or one layer) to K inputs per neuron.

    Args:
      to_prune: a built Sequential or functional Keras 2 model, or a single supported layer.
      inputs_per_neuron: K for every pruned layer.
      pruning_schedule: :class:`iprune_tf.FanInSchedule` or a tfmot ``PruningSchedule``
        (default: one-shot to K at the first training step).
      skip: layers to leave dense: names, ``model.layers`` indices, predicates, or
        ``iprune_tf.paper_skip('mnist' | 'cifar10')``.
      inputs_per_layer: ``{layer_name: K}`` overrides of ``inputs_per_neuron``; a K at or above
        the layer's fan-in leaves it dense on purpose.

    A layer that ``inputs_per_neuron`` would leave dense (fan-in at most K, not skipped, no
    override) is a ValueError naming it, its fan-in and K: otherwise nothing is pruned there, silently.

    Returns:
      A new model whose pruned layers are :class:`PruneFanIn` wrappers, with the original
      weights copied in; train it with ``iprune_tf.UpdatePruningStep()`` among the callbacks.
    """
    masking.validate_inputs_per_neuron(inputs_per_neuron)
    require_keras2(to_prune, "The object to prune")
    if pruning_schedule is not None:
        sched.require_schedule(pruning_schedule)
    if not isinstance(to_prune, keras.Model):
        k = (inputs_per_layer or {}).get(to_prune.name, inputs_per_neuron)
        wrapper = PruneFanIn(to_prune, inputs_per_neuron=k, pruning_schedule=pruning_schedule)
        wrapper.refuse_full_fan_in = to_prune.name not in (inputs_per_layer or {})  # checked when built
        return wrapper
    model = _require_clonable(to_prune)
    skipped = resolve_skip(model, skip)
    overrides = _validated_overrides(model, inputs_per_layer)
    _require_all_decided(model, skipped)
    masking.require_fewer_inputs({layer.name: masking.fan_in(latent_kernel(layer).shape) for layer in model.layers
                                  if is_supported(layer) and layer.name not in skipped | set(overrides)},
                                 inputs_per_neuron)

    def wrap(layer):
        fresh = _fresh_copy(layer)
        if layer.name in skipped or not is_supported(layer):
            return fresh
        k = overrides.get(layer.name, inputs_per_neuron)
        return PruneFanIn(fresh, inputs_per_neuron=k, pruning_schedule=pruning_schedule)

    return _clone_with_weights(model, wrap)


def prune_now(model, inputs_per_neuron=8, skip=None):
    """``model`` pruned one shot, without training: each neuron keeps its K largest-magnitude inputs.

    The schedule's first step is run on one zero batch (the masks move to K there) and the result
    is stripped. For models whose weights are already trained, or to export a net's pruned shape.
    """
    pruned = prune_fan_in(model, inputs_per_neuron, pruning_schedule=sched.FanInSchedule(1, 1, frequency=1), skip=skip)
    for layer in pruned.layers:
        if isinstance(layer, PruneFanIn):
            layer.pruning_step.assign(0)  # what UpdatePruningStep does before the first batch
    pruned(np.zeros((1,) + tuple(model.input_shape[1:]), np.float32), training=True)
    return strip_pruning(pruned)


def strip_pruning(model):
    """Remove the wrappers; each pruned layer keeps its effective (masked, quantized) kernel.

    The kernels are folded: a larq layer's kernel becomes the fixed ternary {-1, 0, +1} kernel
    with exactly K non-zeros per neuron and no kernel quantizer, so the stripped model computes
    what the pruned one did, needs no iprune_tf class to load, and converts to TFLite without a
    ``SIGN`` op for its weights. Unlike tfmot's ``strip_pruning``, which would hand larq back
    latent zeros that ``ste_sign`` maps to +1.
    """
    require_keras2(model, "The model to strip")
    folded = {}

    def unwrap(layer):
        if isinstance(layer, PruneFanIn):
            fresh, weights = layer.folded_layer()
            folded[id(fresh)] = weights
            return fresh
        return _fresh_copy(layer)

    return _clone_with_weights(_require_clonable(model), unwrap, weights_of=folded)


def as_stripped(model):
    """``model`` without pruning wrappers: stripped once if it has any, returned as is otherwise."""
    if any(isinstance(layer, PruneFanIn) for layer in model.layers):
        return strip_pruning(model)
    return model


def _fresh_copy(layer):
    """An unbuilt copy of ``layer`` from its config, so the original's weights are never shared."""
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Nested model '{layer.name}' is not supported; prune it separately or flatten it into the outer model."
        )
    return layer.__class__.from_config(layer.get_config())


def _clone_with_weights(model, clone_layer, weights_of=None):
    """``clone_model`` with ``clone_layer``, then copy each original layer's weights into its clone."""
    weights_of = {} if weights_of is None else weights_of
    pairs = []

    def clone(layer):
        new = clone_layer(layer)
        pairs.append((layer, new))
        return new

    cloned = keras.models.clone_model(model, clone_function=clone)
    for original, new in pairs:
        new.set_weights(weights_of.get(id(new), original.get_weights()))
    return cloned


def _require_clonable(model):
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ValueError(
            f"Model '{model.name}' is a subclassed model, which cannot be cloned; build it as a Sequential or "
            "functional model, or wrap its layers one by one with iprune_tf.prune_fan_in(layer)."
        )
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; give it an input shape or call it once before pruning.")
    return model


def _validated_overrides(model, inputs_per_layer):
    overrides = dict(inputs_per_layer or {})
    names = {layer.name for layer in model.layers if is_supported(layer)}
    for name, k in overrides.items():
        if name not in names:
            listing = ", ".join(f"'{n}'" for n in sorted(names))
            raise ValueError(f"inputs_per_layer names '{name}', which is not a prunable layer. Prunable layers: {listing}.")
        masking.validate_inputs_per_neuron(k, f"inputs_per_layer['{name}']")
    return overrides


def _require_all_decided(model, skipped):
    for layer in prunable_layers(model):
        if not is_supported(layer) and layer.name not in skipped:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has weights but is not supported by iprune_tf "
                f"(supported: {supported_names()}). Add '{layer.name}' to skip to leave it dense."
            )
