"""Knowledge distillation for the binary phases: the run's full-precision net teaches the binary one.

With weight ``w`` (``RunConfig.distill``, ``iprune train --distill W``) the binary phases minimize

    (1 - w) * mean(max(1 - y * s, 0)^2) + w * mean(max(|t| - sign(t) * s, 0)^2),   t = clip(teacher, -1, 1)

per sample, ``s`` the student's class scores, ``y`` the ±1 hinge targets and ``teacher`` the scores of
the run's ``dense_fp`` net (trained first on the same data). The recipe's loss is a square hinge, not
a softmax, so the teacher speaks through its scores, and the second term is a square hinge too: on
the teacher's side of each class, with the teacher's confidence ``|t|`` as the margin. Clipped to
the hinge's margin [-1, 1] (beyond it the hinge loss is flat, so a teacher's 3 means no more than
1), a confident teacher asks what the labels ask, while an unsure one (a shirt that also looks like
a T-shirt, ``t = -0.3``) asks the student for less there, leaving its few binary weights to the
rest. Like the hinge, it does not punish a student more sure than its teacher. Keras losses see only
``(y_true, y_pred)``, so the targets carry both: ``y_true = [y, t]``, two blocks of C columns
(:func:`packed_targets`).
"""
import math

import numpy as np

from iprune_tf._keras import keras, tf


def validate_weight(weight, name="distill"):
    """Raise ValueError unless ``weight`` (the setting ``name``) is a number in [0, 1] (0: no distillation, 1: the
    teacher alone)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 <= weight <= 1:
        raise ValueError(f"{name} is the weight of the teacher's term in the loss, a number in [0, 1] (0: off); "
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
    """``(1 - weight) *`` square hinge on the labels ``+ weight *`` square hinge on the teacher's side with its
    clipped score's size as the margin, on packed targets (the module's formula)."""

    def __init__(self, weight, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        validate_weight(weight)
        self.weight = weight

    def call(self, y_true, y_pred):
        labels, teacher = split(y_true, y_pred)
        hinge = tf.reduce_mean(tf.square(tf.maximum(1.0 - labels * y_pred, 0.0)), axis=-1)
        soft = tf.reduce_mean(tf.square(tf.maximum(tf.abs(teacher) - tf.sign(teacher) * y_pred, 0.0)), axis=-1)
        return (1.0 - self.weight) * hinge + self.weight * soft

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
