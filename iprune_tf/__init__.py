"""iprune_tf: iPrune per-neuron fan-in pruning for binary (larq) and float Keras networks.

Importing iprune_tf pins ``tf.keras`` to Keras 2 (``TF_USE_LEGACY_KERAS=1``), which larq and
tensorflow-model-optimization need; import it before tensorflow.
"""
from iprune_tf._keras import check_legacy_keras  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import (  # noqa: E402
    PruningSummaries,
    UpdatePruningStep,
)

from iprune_tf.workflow.encoding import ThermometerEncoding, ThresholdEncoding  # noqa: E402
from iprune_tf.workflow.heads import GroupSum  # noqa: E402
from iprune_tf.workflow.lut_table import LutTable  # noqa: E402
from iprune_tf.workflow.tables import to_table_net  # noqa: E402
from iprune_tf.pruning.inspection import LayerStats, effective_kernel, format_inspection, inspect_pruning  # noqa: E402
from iprune_tf.pruning.masking import per_neuron_topk_mask  # noqa: E402
from iprune_tf.pruning.prune import custom_objects, prune_fan_in, prune_now, prune_scope, strip_pruning  # noqa: E402
from iprune_tf.workflow.quantizers import StochasticBinary  # noqa: E402
from iprune_tf.pruning.schedules import ConstantSparsity, FanInSchedule, PolynomialDecay  # noqa: E402
from iprune_tf.pruning.skip import PrunablePositions, paper_skip  # noqa: E402
from iprune_tf.pruning.wrapper import PruneFanIn  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ConstantSparsity",
    "FanInSchedule",
    "GroupSum",
    "LayerStats",
    "LutTable",
    "PolynomialDecay",
    "PrunablePositions",
    "PruneFanIn",
    "PruningSummaries",
    "StochasticBinary",
    "ThermometerEncoding",
    "ThresholdEncoding",
    "UpdatePruningStep",
    "custom_objects",
    "effective_kernel",
    "format_inspection",
    "inspect_pruning",
    "paper_skip",
    "per_neuron_topk_mask",
    "prune_fan_in",
    "prune_scope",
    "strip_pruning",
    "to_table_net",
]
