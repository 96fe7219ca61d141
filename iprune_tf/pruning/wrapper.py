"""``PruneFanIn``: tfmot's pruning wrapper with the iPrune per-neuron policy, for binary layers too.

The wrapper subclasses tfmot's ``PruneLowMagnitude`` so tfmot's ``UpdatePruningStep`` and
``PruningSummaries`` callbacks drive it unchanged, but replaces its global-threshold masks with
per-neuron top-K masks (:mod:`iprune_tf.pruning.masking`) and applies the mask where a binary layer
needs it: to the *quantized* kernel. larq's ``ste_sign(0) == +1``, so zeroing a latent weight
alone would turn a pruned connection into a +1; the wrapper instead feeds the inner layer the
effective kernel ``quantize(latent) * mask``, ternary {-1, 0, +1} with exactly the kept inputs
non-zero. Pruned connections also get no gradient through it, and their latent weights are
zeroed whenever the mask changes and at every epoch end, as tfmot does.
"""
import contextlib
import inspect

import larq as lq
import numpy as np
from tensorflow_model_optimization.python.core.keras import utils as tfmot_utils
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from iprune_tf.pruning import masking
from iprune_tf.pruning import schedules as sched
from iprune_tf._keras import keras, tf
from iprune_tf.pruning.layers import is_kernel, kernel_precision, latent_kernel, require_supported_layer


class PruneFanIn(pruning_wrapper.PruneLowMagnitude):
    """Prune a Dense/Conv2D (plain Keras or larq) layer to ``inputs_per_neuron`` inputs per neuron.

    Args:
      layer: a ``Dense``, ``Conv2D``, ``larq.layers.QuantDense`` or ``larq.layers.QuantConv2D``.
      inputs_per_neuron: K, the number of inputs every neuron keeps (a LUT's fan-in). K at or
        above the layer's fan-in leaves the layer dense (``iprune_tf.prune_fan_in`` refuses that
        unless asked for by name: ``refuse_full_fan_in`` makes ``build`` check it).
      pruning_schedule: an :class:`iprune_tf.FanInSchedule` or a tfmot ``PruningSchedule``;
        defaults to one-shot pruning to K at the first training step.
    """

    _PRUNE_CALLBACK_ERROR_MSG = pruning_wrapper.PruneLowMagnitude._PRUNE_CALLBACK_ERROR_MSG

    def __init__(self, layer, inputs_per_neuron=8, pruning_schedule=None, **kwargs):
        require_supported_layer(layer)
        self.inputs_per_neuron = masking.validate_inputs_per_neuron(inputs_per_neuron)
        self.pruning_schedule = pruning_schedule if pruning_schedule is not None else sched.FanInSchedule()
        sched.require_schedule(self.pruning_schedule)
        self.pruning_obj = None
        self.pruning_vars = []
        self.refuse_full_fan_in = False
        kwargs.setdefault("name", f"prune_fan_in_{layer.name}")
        keras.layers.Wrapper.__init__(self, layer, **kwargs)
        if not hasattr(self, "_batch_input_shape") and hasattr(layer, "_batch_input_shape"):
            self._batch_input_shape = layer._batch_input_shape

    def build(self, input_shape):
        keras.layers.Wrapper.build(self, input_shape)
        latent = latent_kernel(self.layer)
        self.fan_in = masking.fan_in(latent.shape)
        if self.refuse_full_fan_in:
            masking.require_fewer_inputs({self.layer.name: self.fan_in}, self.inputs_per_neuron)
        sched.check_schedule_reaches_k(self.pruning_schedule, self.fan_in, self.inputs_per_neuron, self.layer.name)
        self.mask = self.add_weight(
            "mask",
            shape=latent.shape,
            initializer=keras.initializers.get("ones"),
            dtype=latent.dtype,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        # Sits in tfmot's "threshold" slot so PruningSummaries logs the current input count.
        self.kept_inputs = self.add_weight(
            "kept_inputs",
            shape=[],
            initializer=keras.initializers.Constant(self.fan_in),
            dtype=latent.dtype,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.pruning_step = self.add_weight(
            "pruning_step",
            shape=[],
            initializer=keras.initializers.Constant(-1),
            dtype=tf.int64,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        # Untracked: the latent variable is already saved as the layer's kernel, and a second
        # reference through larq's QuantizedVariable breaks the SavedModel format.
        object.__setattr__(self, "pruning_vars", [(latent, self.mask, self.kept_inputs)])
        self.pruning_obj = FanInPruning(self)

    @property
    def final_inputs_per_neuron(self):
        """K clipped to the layer's fan-in: the input count each neuron ends with."""
        return min(self.inputs_per_neuron, self.fan_in)

    def effective_kernel(self):
        """The kernel the layer computes with: ``quantize(latent) * mask``."""
        quantizer = getattr(self.layer, "kernel_quantizer", None)
        latent = tf.convert_to_tensor(latent_kernel(self.layer))
        values = quantizer(latent) if quantizer is not None else latent
        return values * tf.cast(self.mask, values.dtype)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        update = tfmot_utils.smart_cond(training, self._advance_step_and_update_mask, tf.no_op)
        with tf.control_dependencies([update] if update is not None else []):
            kernel = self.effective_kernel()
        with _kernel_replaced(self.layer, kernel):
            if "training" in inspect.getfullargspec(self.layer.call).args:
                return self.layer.call(inputs, training=training, **kwargs)
            return self.layer.call(inputs, **kwargs)

    def _advance_step_and_update_mask(self):
        with tf.control_dependencies([self.pruning_step.assign_add(1)]):
            with tf.control_dependencies(
                [tf.debugging.assert_greater_equal(self.pruning_step, np.int64(1), message=self._PRUNE_CALLBACK_ERROR_MSG)]
            ):
                return tf.group(self.pruning_obj.conditional_mask_update())

    def get_config(self):
        config = keras.layers.Wrapper.get_config(self)
        config["inputs_per_neuron"] = self.inputs_per_neuron
        config["pruning_schedule"] = sched.serialize(self.pruning_schedule)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["pruning_schedule"] = sched.deserialize(config["pruning_schedule"])
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)

    def folded_layer(self):
        """A fresh, unwrapped copy of the inner layer whose kernel is the fixed effective kernel.

        A quantized layer's kernel quantizer becomes larq's ``NoOp`` of the same precision (the
        kernel is already ternary, and its precision stays readable) and its constraint goes; its
        input quantizer stays. Returns ``(layer, weights)``: the layer is unbuilt, the caller sets
        ``weights`` once it is built.
        """
        config = self.layer.get_config()
        if getattr(self.layer, "kernel_quantizer", None) is not None:
            config["kernel_quantizer"] = lq.quantizers.NoOp(precision=kernel_precision(self.layer))
            config["kernel_constraint"] = None
        if hasattr(self, "_batch_input_shape"):
            config.setdefault("batch_input_shape", self._batch_input_shape)
        layer = type(self.layer).from_config(config)
        effective = self.effective_kernel().numpy()
        weights = [effective if is_kernel(w) else w.numpy() for w in self.layer.weights]
        return layer, weights


class FanInPruning:
    """The mask-update and weight-masking ops of one :class:`PruneFanIn`, in tfmot's ``pruning_obj`` role.

    Under a ``tf.distribute`` strategy the update runs once, in cross-replica context, from the
    (mirrored, identical) weights, and is written to every replica, as tfmot's ``Pruning`` does;
    so all replicas hold the same mask.
    """

    def __init__(self, wrapper):
        self.wrapper = wrapper

    def conditional_mask_update(self):
        """Recompute the mask when the schedule says so at the current step."""
        return _in_cross_replica_context(self._conditional_mask_update)

    def weight_mask_op(self):
        """Zero the latent weights of pruned connections (called by ``UpdatePruningStep`` per epoch)."""
        return _in_cross_replica_context(self._mask_latent_weights)

    def _conditional_mask_update(self, strategy):
        w = self.wrapper
        update, keep = sched.schedule_step(w.pruning_schedule, w.pruning_step, w.fan_in, w.inputs_per_neuron)

        def recompute():
            latent = latent_kernel(w.layer)
            mask = masking.per_neuron_topk_mask(latent, keep, previous_mask=w.mask)
            return _assign(
                strategy,
                [(w.mask, mask), (latent, latent * mask), (w.kept_inputs, tf.cast(keep, w.kept_inputs.dtype))],
            )

        return tf.cond(update, recompute, tf.no_op)

    def _mask_latent_weights(self, strategy):
        latent = latent_kernel(self.wrapper.layer)
        return _assign(strategy, [(latent, latent * self.wrapper.mask)])


def _in_cross_replica_context(fn):
    """Run ``fn(strategy)`` once for all replicas (``strategy`` is None without distribution)."""
    if not tf.distribute.has_strategy():
        return fn(None)
    replica = tf.distribute.get_replica_context()
    if replica is None:
        return fn(tf.distribute.get_strategy())
    return replica.merge_call(fn)


def _assign(strategy, pairs):
    """Assign each ``(variable, value)`` pair, on every replica when a strategy is given."""
    if strategy is None:
        return tf.group([variable.assign(value) for variable, value in pairs])
    return tf.group(
        [strategy.extended.update(variable, lambda v, x: v.assign(x), args=(value,), group=True) for variable, value in pairs]
    )


@contextlib.contextmanager
def _kernel_replaced(layer, kernel):
    """Let ``layer`` read ``kernel`` as its ``kernel`` attribute for the duration of one call.

    ``object.__setattr__`` bypasses Keras' attribute tracking, which would otherwise untrack the
    kernel variable and re-append it at the end of the layer's weight list.
    """
    original = layer.__dict__["kernel"]
    object.__setattr__(layer, "kernel", kernel)
    try:
        yield
    finally:
        object.__setattr__(layer, "kernel", original)
