"""Knowledge distillation for the binary phases: the run's full-precision net teaches the binary one.

With weight ``w`` (``RunConfig.distill``, ``iprune train --distill W``) the binary phases minimize

    (1 - w) * squared_hinge(y, s) + w * mean((s - clip(t, -1, 1))^2)

per sample, ``s`` the student's class scores, ``y`` the ±1 hinge targets and ``t`` the scores of the
run's ``dense_fp`` net (the teacher, trained first on the same data). The recipe's loss is a square
hinge, not a softmax, so the teacher's "soft labels" are its scores, matched by a squared distance
(Ba & Caruana's logit matching) instead of a KL divergence at a temperature. They are clipped to the
hinge's margin [-1, 1]: beyond it the hinge loss is flat, so the teacher's values there say nothing
(a score of 3 is as right as 1), while inside it they say how sure the teacher is, e.g. a shirt that
also looks like a T-shirt. Keras losses see only ``(y_true, y_pred)``, so the targets carry both:
``y_true = [y, clip(t)]``, two blocks of C columns (:func:`packed_targets`).
"""
import math

import numpy as np

from iprune_tf._keras import keras, tf


def validate_weight(weight):
    """Raise ValueError unless ``weight`` is a number in [0, 1] (0: no distillation, 1: the teacher alone)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 <= weight <= 1:
        raise ValueError(f"distill is the weight of the teacher's term in the loss, a number in [0, 1] (0: off); "
                         f"got {weight!r}.")


def packed_targets(hinge_targets, teacher_scores):
    """``[hinge_targets, clip(teacher_scores, -1, 1)]``: the targets :class:`DistillationLoss` reads."""
    hinge_targets, teacher_scores = np.asarray(hinge_targets), np.asarray(teacher_scores)
    if hinge_targets.shape != teacher_scores.shape:
        raise ValueError(f"The teacher's scores have shape {teacher_scores.shape}, the targets {hinge_targets.shape}: "
                         "the teacher must score the same samples and classes.")
    return np.concatenate([hinge_targets, np.clip(teacher_scores, -1.0, 1.0)], axis=1).astype(np.float32)


def teacher_targets(teacher, x, hinge_targets, batch_size=1000):
    """:func:`packed_targets` with ``teacher``'s scores of ``x``."""
    return packed_targets(hinge_targets, teacher.predict(x, batch_size=batch_size, verbose=0))


@keras.utils.register_keras_serializable(package="iprune_tf")
class DistillationLoss(keras.losses.Loss):
    """``(1 - weight) * squared_hinge + weight * squared distance to the clipped teacher scores``, on packed targets."""

    def __init__(self, weight, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        validate_weight(weight)
        self.weight = weight

    def call(self, y_true, y_pred):
        labels, teacher = split(y_true, y_pred)
        hinge = tf.reduce_mean(tf.square(tf.maximum(1.0 - labels * y_pred, 0.0)), axis=-1)
        match = tf.reduce_mean(tf.square(y_pred - teacher), axis=-1)
        return (1.0 - self.weight) * hinge + self.weight * match

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def split(y_true, y_pred):
    """The hinge targets and the teacher's clipped scores of packed ``y_true``, checked against ``y_pred``'s C classes."""
    classes = y_pred.shape[-1]
    if y_true.shape[-1] != 2 * classes:
        raise ValueError(f"Distillation targets need 2 x {classes} columns (hinge targets, then the teacher's "
                         f"scores; distill.packed_targets), got {y_true.shape[-1]}.")
    y_true = tf.cast(y_true, y_pred.dtype)
    return y_true[..., :classes], y_true[..., classes:]


def label_accuracy(y_true, y_pred):
    """Top-1 accuracy against the labels of packed targets (Keras' categorical_accuracy would read all 2C columns)."""
    labels, _ = split(y_true, y_pred)
    return tf.cast(tf.equal(tf.argmax(labels, -1), tf.argmax(y_pred, -1)), tf.float32)
