"""When masks are updated and how many inputs each neuron keeps at a training step.

Two kinds of schedule drive the per-neuron masks:

* tfmot's own ``PruningSchedule`` objects (``ConstantSparsity``, ``PolynomialDecay``, or a user
  subclass). A schedule sparsity ``s`` maps to keeping ``max(K, ceil((1 - s) * fan_in))``
  inputs per neuron, so a schedule whose final sparsity is at least ``1 - K / fan_in`` ends at
  exactly K inputs. The mapping also updates at ``end_step``, which tfmot skips when
  ``end_step - begin_step`` is not a multiple of ``frequency``, so the final count is reached.
* :class:`FanInSchedule`, native to iprune_tf, which steps the input count itself from the
  full fan-in down to K between ``begin_step`` and ``end_step``.

Steps count training batches as tfmot's wrapper does: the first batch is step 1.
"""
import math

from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

from iprune_tf._keras import keras, tf

ConstantSparsity = tfmot_schedule.ConstantSparsity
PolynomialDecay = tfmot_schedule.PolynomialDecay
PruningSchedule = tfmot_schedule.PruningSchedule

_INTERPOLATIONS = ("geometric", "linear")
_FLOAT32_SLACK = 1e-6  # relative: float32 sparsities are off by up to ~6e-8


class FanInSchedule:
    """Shrink every neuron's input count from its fan-in to K over ``[begin_step, end_step]``.

    The count at step ``t`` follows ``p = (t - begin_step) / (end_step - begin_step)``:
    ``geometric`` (default) interpolates in log space, ``fan_in * (K / fan_in) ** p``, which
    spends equal time halving 1024 -> 512 as 16 -> 8, so the last, hardest cuts get as
    much retraining as the first; ``linear`` interpolates the count itself. ``last_halving``
    (geometric only) gives the last halving, 2K -> K, that fraction of the steps, the earlier
    halvings sharing the rest geometrically: the last cut costs the most accuracy, and a slow one
    lets the kept weights adapt as inputs leave one by one. Masks are recomputed every
    ``frequency`` steps and at ``end_step``. ``begin_step == end_step`` prunes to K in one shot.
    """

    def __init__(self, begin_step=1, end_step=1, frequency=100, interpolation="geometric", last_halving=None):
        for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"FanInSchedule {name} must be an int, got {value!r}.")
        if begin_step < 0 or end_step < begin_step:
            raise ValueError(
                f"FanInSchedule needs 0 <= begin_step <= end_step, got begin_step={begin_step}, end_step={end_step}."
            )
        if frequency < 1:
            raise ValueError(f"FanInSchedule frequency must be >= 1, got {frequency}.")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"FanInSchedule interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}.")
        last_halving = validate_last_halving(last_halving)
        if last_halving is not None and interpolation != "geometric":
            raise ValueError(f"FanInSchedule last_halving needs interpolation='geometric', got {interpolation!r}.")
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.interpolation = interpolation
        self.last_halving = last_halving

    def __call__(self, step, fan_in, inputs_per_neuron):
        """Return ``(update_mask, inputs_to_keep)`` tensors for ``step``."""
        step = tf.cast(step, tf.int64)
        update = _should_update(step, self.begin_step, self.end_step, self.frequency)
        progress = self._progress(step)
        target = float(min(inputs_per_neuron, fan_in))
        if self.last_halving is not None:
            count = self._slow_last_halving(progress, fan_in, target)
        elif self.interpolation == "geometric":
            count = fan_in * tf.pow(tf.constant(target / fan_in, tf.float64), progress)
        else:
            count = fan_in + progress * (target - fan_in)
        return update, tf.cast(tf.round(count), tf.int32)

    def _slow_last_halving(self, progress, fan_in, target):
        """Geometric from fan_in to 2K over the first ``1 - last_halving`` of the progress, then 2K to K."""
        knee = 1.0 - self.last_halving
        middle = min(2 * target, float(fan_in))
        first = fan_in * tf.pow(tf.constant(middle / fan_in, tf.float64), tf.minimum(progress / knee, 1.0))
        second = middle * tf.pow(tf.constant(target / middle, tf.float64),
                                 tf.maximum((progress - knee) / self.last_halving, 0.0))
        return tf.where(progress < knee, first, second)

    def _progress(self, step):
        """0 before ``begin_step``, 1 from ``end_step`` on, linear in between."""
        if self.end_step == self.begin_step:
            return tf.cast(step >= self.end_step, tf.float64)
        span = float(self.end_step - self.begin_step)
        return tf.clip_by_value(tf.cast(step - self.begin_step, tf.float64) / span, 0.0, 1.0)

    def get_config(self):
        """tfmot's format; ``last_halving`` only when set, so subclasses written without it still load."""
        config = {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "interpolation": self.interpolation,
        }
        if self.last_halving is not None:
            config["last_halving"] = self.last_halving
        return {"class_name": type(self).__name__, "config": config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


def validate_last_halving(last_halving):
    """``last_halving`` as a float in (0, 1), or None; ValueError otherwise."""
    if last_halving is None:
        return None
    if isinstance(last_halving, bool) or not isinstance(last_halving, (int, float)) or not 0 < last_halving < 1:
        raise ValueError(f"last_halving must be a fraction in (0, 1) or None, got {last_halving!r}.")
    return float(last_halving)


def _should_update(step, begin_step, end_step, frequency):
    """True within ``[begin_step, end_step]`` every ``frequency`` steps, and at ``end_step``."""
    in_range = tf.logical_and(step >= begin_step, step <= end_step)
    on_turn = tf.logical_or(tf.math.floormod(step - begin_step, frequency) == 0, step == end_step)
    return tf.logical_and(in_range, on_turn)


def inputs_for_sparsity(sparsity, fan_in, inputs_per_neuron):
    """Inputs per neuron for a tfmot sparsity: ``max(K, ceil((1 - s) * fan_in))``, at most fan_in.

    tfmot's sparsities are float32 (0.95 is 0.94999999), so the product is rounded down within
    float32 precision before the ceiling: 0.95 of 40 inputs keeps 2, not 3.
    """
    kept = tf.math.ceil((1.0 - tf.cast(sparsity, tf.float64)) * fan_in - _FLOAT32_SLACK * fan_in)
    return tf.cast(tf.clip_by_value(tf.maximum(kept, float(inputs_per_neuron)), 1.0, float(fan_in)), tf.int32)


def final_sparsity(schedule):
    """The last sparsity a tfmot schedule asks for, or None for a schedule that does not say."""
    for attribute in ("final_sparsity", "target_sparsity"):
        if hasattr(schedule, attribute):
            return float(getattr(schedule, attribute))
    return None


def schedule_step(schedule, step, fan_in, inputs_per_neuron):
    """``(update_mask, inputs_to_keep)`` at ``step`` for either kind of schedule."""
    if isinstance(schedule, FanInSchedule):
        return schedule(step, fan_in, inputs_per_neuron)
    update, sparsity = schedule(step)
    end_step = getattr(schedule, "end_step", -1)
    if end_step is not None and end_step >= 0:
        update = tf.logical_or(update, tf.cast(step, tf.int64) == end_step)
    return update, inputs_for_sparsity(sparsity, fan_in, inputs_per_neuron)


def require_schedule(schedule):
    """Raise TypeError unless ``schedule`` is a FanInSchedule or a tfmot PruningSchedule."""
    if not isinstance(schedule, (FanInSchedule, PruningSchedule)):
        raise TypeError(
            f"pruning_schedule must be an iprune_tf.FanInSchedule or a tfmot PruningSchedule, got {type(schedule).__name__}."
        )
    return schedule


def check_schedule_reaches_k(schedule, fan_in, inputs_per_neuron, layer_name):
    """Raise ValueError when a tfmot schedule would stop above K inputs per neuron for this layer."""
    if isinstance(schedule, FanInSchedule):
        return
    sparsity = final_sparsity(schedule)
    if sparsity is None:
        return
    final = max(inputs_per_neuron, math.ceil((1.0 - sparsity) * fan_in - _FLOAT32_SLACK * fan_in))
    target = min(inputs_per_neuron, fan_in)
    if final > target:
        needed = 1.0 - target / fan_in
        raise ValueError(
            f"Layer '{layer_name}': {type(schedule).__name__} ends at sparsity {sparsity}, which keeps "
            f"{final} of {fan_in} inputs per neuron, not inputs_per_neuron={inputs_per_neuron}. "
            f"Use a final sparsity >= {needed:.6f} (1 - K / fan_in) or an iprune_tf.FanInSchedule."
        )


def serialize(schedule):
    """Config dict ``{'class_name', 'config'}`` in tfmot's format, named as Keras' registry knows the class.

    A user's schedule class (a FanInSchedule or tfmot PruningSchedule subclass) is stored under
    its registered name (``package>Name`` with ``keras.utils.register_keras_serializable``), so
    :func:`deserialize` finds it again, as Keras does for layers.
    """
    return dict(schedule.get_config(), class_name=keras.utils.get_registered_name(type(schedule)))


_BUILT_IN = {cls.__name__: cls for cls in (FanInSchedule, ConstantSparsity, PolynomialDecay)}


def deserialize(config):
    """Rebuild a schedule from :func:`serialize`'s output: built-in, registered or in a custom-object scope."""
    name = config["class_name"]
    cls = _BUILT_IN.get(name) or keras.utils.get_registered_object(name)
    if cls is None:
        raise ValueError(
            f"Unknown pruning schedule '{name}'. Built in: {sorted(_BUILT_IN)}. For your own schedule class, "
            "decorate it with @keras.utils.register_keras_serializable(package=...) or load the model inside "
            f"keras.utils.custom_object_scope({{'{name}': YourSchedule}})."
        )
    return cls.from_config(config["config"])
