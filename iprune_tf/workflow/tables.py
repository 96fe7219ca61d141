"""Truth-table neurons: a pruned fully binary net's hidden neurons as fine-tunable K-input LUTs.

A hidden neuron of a fully binary net pruned to K inputs is one K-input LUT in hardware, which can
compute *any* boolean function of its inputs; training only reaches threshold functions
``sum_i w_i x_i >= T`` with ±1 weights. :func:`to_table_net` keeps every hidden neuron's K inputs
(chosen by iPrune) and replaces the neuron by a real table ``T[n, 0 .. 2^K - 1]`` (a
:class:`~iprune_tf.workflow.lut_table.LutTable` layer) whose signs are its trained threshold function on all 2^K input patterns,
so the table net starts at the pruned net's outputs exactly; fine-tuning the tables (as LogicNets,
NeuraLUT and DWN train LUT contents) then costs no extra LUT: still one K-input LUT per neuron.
The output layer and its batch norm are kept as they are (a ``pruned:K_OUT`` head's fan-in is not
a LUT), its ±1 weights frozen, its batch norm trained.
"""
import numpy as np

from iprune_tf._keras import keras
from iprune_tf.export.lowering import lower
from iprune_tf.workflow.lut_table import LutTable

DEFAULT_MARGIN = 0.05  # the best of the screens (bench/README.md, issue 19)


def threshold_tables(layer, margin=DEFAULT_MARGIN):
    """float32 (units, 2^K) tables of a lowered sparse threshold layer: ``margin * (s - T + 1/2)`` clipped to
    [-1, 1] for the neuron's sum s on each input pattern, so their signs are its truth tables and patterns
    near the threshold are the first to flip."""
    distance = layer.pattern_sums().T - layer.threshold[:, None] + 0.5
    return np.clip(margin * distance, -1, 1).astype(np.float32)


def to_table_net(model, margin=DEFAULT_MARGIN):
    """A copy of a stripped, pruned fully binary Sequential net whose hidden layers are :class:`LutTable` layers
    starting from their trained truth tables (``margin``: :func:`threshold_tables`); the encoding, flatten,
    output layer (±1 weights frozen) and its batch norm are copied. ValueError naming what does not fit."""
    if not isinstance(model, keras.Sequential):
        raise ValueError(f"to_table_net needs a Sequential model, got {type(model).__name__} '{model.name}'.")
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (the tables' distance per unit of the sum), got {margin!r}.")
    lowered = {layer.name: layer for layer in lower(model).layers}
    layers, copied, tables = [keras.layers.InputLayer(input_shape=model.input_shape[1:], name="input")], [], []
    for layer in model.layers:
        step = lowered.get(layer.name)
        if step is not None and step.output == "threshold":
            tables.append((_table_layer(step), threshold_tables(step, margin)))
            layers.append(tables[-1][0])
        elif not (isinstance(layer, keras.layers.BatchNormalization) and tables and layers[-1] is tables[-1][0]):
            layers.append(_copy(layer, copied, trainable=step is None))  # the output layer's weights stay
        # else: a hidden layer's batch norm, folded into its threshold and so into its table
    if not tables:
        raise ValueError(f"Model '{model.name}' has no hidden layer of ±1 inputs and outputs (a LUT neuron each); "
                         "to_table_net needs the fully binary flavour, pruned and stripped.")
    net = keras.Sequential(layers, name=f"{model.name}_tables")
    for table, values in tables:
        table.table.assign(values)
    for original, copy in copied:
        copy.set_weights(original.get_weights())
    return net


def _table_layer(step):
    if step.kind != "sparse" or not step.binary_input or step.op != "dense":
        raise ValueError(f"Layer '{step.name}' is a {step.kind} {step.op} layer; a LUT neuron needs a Dense layer "
                         "pruned to K inputs (prune the model, then strip it).")
    return LutTable(step.indices, name=f"{step.name}_table")


def _copy(layer, copied, trainable=True):
    """A fresh copy of ``layer`` (its weights set once the net is built)."""
    copy = layer.__class__.from_config(layer.get_config())
    copy.trainable = trainable
    copied.append((layer, copy))
    return copy
