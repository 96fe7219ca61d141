"""The one place iprune_tf imports TensorFlow, pinned to Keras 2 (``tf_keras``).

larq and tensorflow-model-optimization only work with Keras 2. Since TF 2.16
``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is in the environment
*before* TensorFlow is first imported, so this module sets it and then checks
that it took effect.

TensorFlow 2.21 writes C++ start-up lines (CUDA drivers, cuInit, CPU features) to stderr before
absl logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. Unless that
variable is 0, they are captured at import (file descriptor 2 redirected around the import and
the first device query) into :data:`STARTUP_LOG`; every other line is passed on to stderr.
"""
import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STARTUP_LOG = []
"""TensorFlow's C++ start-up lines captured at import (``iprune --verbose`` prints them)."""

_STARTUP_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|To enable the following)")


@contextlib.contextmanager
def _startup_lines_captured():
    """Redirect fd 2 to a file meanwhile; then keep TF's start-up lines and pass the rest to stderr."""
    if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                keep = _STARTUP_LINE.match(line) and not failed  # a failed import shows everything
                (STARTUP_LOG.append if keep else sys.stderr.write)(line)


with _startup_lines_captured():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # initialises the GPU platform now (its cuInit line is start-up noise)

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
