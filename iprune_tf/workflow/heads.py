"""Output heads: how the presets turn the last hidden layer into class scores.

* ``dense``: one binary neuron per class reading every unit of the last hidden layer, batch norm
  folded after it; the paper's choice (its skip list leaves this layer dense).
* ``pruned:K_OUT``: the same layer pruned like the others, to its own fan-in ``K_OUT`` (the skip
  list then no longer skips it).
* ``groupsum``: no output layer. The last hidden layer's units are split into one contiguous group
  per class and the class score is the number of +1 bits in its group (DWN's GroupSum, Bacellar et
  al., ICML 2024): a popcount and an argmax, no weights.

A LUT circuit pays for a dense head with a popcount over every hidden bit per class; the other two
are LUT-sized. :class:`GroupSum` is the Keras layer of the third head.
"""
import dataclasses
import math
import re

import larq as lq
import numpy as np

from iprune_tf._keras import keras, tf

HEADS = ("dense", "pruned:K_OUT", "groupsum")
_PRUNED = re.compile(r"pruned:(\d+)")


@dataclasses.dataclass(frozen=True)
class Head:
    """A parsed head spec: ``kind`` is ``dense``, ``pruned`` (with ``k_out``) or ``groupsum``."""

    kind: str
    k_out: int | None = None

    @property
    def spec(self):
        return f"pruned:{self.k_out}" if self.kind == "pruned" else self.kind

    @property
    def has_output_layer(self):
        return self.kind != "groupsum"


def parse_head(spec):
    """The :class:`Head` of ``spec`` (a Head or a string ``dense``, ``pruned:K_OUT``, ``groupsum``)."""
    if isinstance(spec, Head):
        return spec
    if spec in ("dense", "groupsum"):
        return Head(spec)
    match = _PRUNED.fullmatch(spec) if isinstance(spec, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"Unknown head {spec!r}; choose one of {', '.join(HEADS)} (K_OUT a positive int, "
                         "e.g. 'pruned:6').")
    return Head("pruned", int(match.group(1)))


def check_head(spec, last_units, num_classes, flavour="binary"):
    """Raise ValueError when ``spec`` cannot sit on a last hidden layer of ``last_units`` units; returns the Head."""
    head = parse_head(spec)
    if head.kind == "groupsum":
        if flavour != "binary":
            raise ValueError(f"The groupsum head counts +1 bits of the last hidden layer, which only the fully binary "
                             f"flavour has; flavour {flavour!r} has real activations. Use flavour 'binary' or another "
                             "head.")
        if last_units % num_classes:
            lower, upper = last_units - last_units % num_classes, last_units + num_classes - last_units % num_classes
            examples = " or ".join(str(w) for w in (lower, upper) if w > 0)
            raise ValueError(f"The groupsum head splits the last hidden layer's {last_units} units into {num_classes} "
                             f"equal groups (one per class), but {last_units} is not a multiple of {num_classes}. Make "
                             f"the last hidden width a multiple of {num_classes} (e.g. {examples}).")
    if head.kind == "pruned" and head.k_out >= last_units:
        raise ValueError(f"Head {head.spec!r} keeps {head.k_out} inputs per class, but the output layer's fan-in is "
                         f"the last hidden width, {last_units}: K_OUT must be below it (the 'dense' head keeps all).")
    return head


def describe(spec):
    """One line for reports: what the head is and how it departs from the paper's skip list."""
    head = parse_head(spec)
    if head.kind == "dense":
        return "Head dense: the output layer reads every hidden unit (left dense by the paper's skip list)."
    if head.kind == "pruned":
        return (f"Head {head.spec}: the output layer is pruned to {head.k_out} inputs per class; the paper's skip "
                "list no longer skips it.")
    return ("Head groupsum: no output layer; each class scores the popcount of its group of the last hidden "
            "layer's bits, and that layer is pruned (the paper's skip list skips the last layer).")


@keras.utils.register_keras_serializable(package="iprune_tf")
class GroupSum(keras.layers.Layer):
    """Class scores from the signs of the last hidden layer: ``scale * sum(sign(x))`` over each class's group.

    Unit ``u`` of the ``C * G`` inputs belongs to class ``u // G``. The sum of ``G`` signs ±1 is
    ``2 * popcount - G``, so the scores order as the popcounts do (lowest class first on ties, as
    argmax). ``scale`` only sizes the scores for the square hinge loss: the default, the power of two
    nearest ``1 / sqrt(G)``, makes the margin of 1 ask a class for about ``sqrt(G)`` more +1 than -1
    votes, and keeps ``scale * sum`` exact in float32 and a shift of the popcount in integer hardware. The sign is
    larq's ``ste_sign`` (+1 for ``x >= 0``, straight-through gradient), like a binary layer's input.
    """

    def __init__(self, groups, scale=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"GroupSum needs a positive int number of groups, got {groups!r}.")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"GroupSum's scale must be a positive number (it must keep the order), got {scale!r}.")
        self.groups, self.scale = groups, scale
        self.input_quantizer = lq.quantizers.SteSign()

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"GroupSum '{self.name}' reads a flat (batch, units) input, got shape {input_shape}; "
                             "put it after a Dense layer (or a Flatten).")
        units = int(input_shape[-1])
        check_head("groupsum", units, self.groups)
        self.group_size = units // self.groups
        super().build(input_shape)

    @property
    def score_scale(self):
        """The float32 factor applied to each group's sum of signs."""
        default = 2.0 ** -round(math.log2(self.group_size) / 2)
        return float(np.float32(self.scale if self.scale is not None else default))

    def call(self, inputs):
        signs = self.input_quantizer(inputs)
        sums = tf.reduce_sum(tf.reshape(signs, [-1, self.groups, self.group_size]), axis=-1)
        return sums * tf.constant(self.score_scale, tf.float32)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.groups])

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "scale": self.scale}
