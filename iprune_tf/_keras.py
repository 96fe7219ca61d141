"""The one place iprune_tf imports TensorFlow, pinned to Keras 2 (``tf_keras``).

larq and tensorflow-model-optimization only work with Keras 2. Since TF 2.16
``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is in the environment
*before* TensorFlow is first imported, so this module sets it and then checks
that it took effect.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

KERAS3_MESSAGE = (
    "iprune_tf needs Keras 2 (tf_keras), but `tf.keras` is Keras 3 in this process. "
    "TensorFlow was imported before iprune_tf without TF_USE_LEGACY_KERAS=1. "
    "Import iprune_tf before tensorflow, or set TF_USE_LEGACY_KERAS=1 in the environment."
)


def check_legacy_keras():
    """Raise ImportError when ``tf.keras`` resolves to Keras 3 instead of tf_keras.

    Both spellings are checked: ``tf.keras`` (resolved lazily, on each access) and the module
    path ``tensorflow.keras`` that larq imports from, which is bound when TensorFlow is first
    imported. The second is Keras 3 when TensorFlow (or tfmot, which sets the variable only after
    importing TensorFlow) was imported before iprune_tf, and larq would then fail inside its import.
    """
    from tensorflow.keras import Model as module_path_model

    if tf.keras.Model is not keras.Model or module_path_model is not keras.Model:
        raise ImportError(KERAS3_MESSAGE)


check_legacy_keras()
