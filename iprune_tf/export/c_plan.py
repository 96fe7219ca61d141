"""Memory plan of the C export: the layout of every activation tensor and which buffer holds it.

Each step reads one tensor and writes the next, alternating between two static word buffers (the
raw input is read in place, the last layer writes the caller's scores). A tensor is float32 or
packed bits; it is bits when its values are ±1 and its padding (if any) is ±1 too. A producer
writes its output already binarized when the next layer binarizes its input (sign commutes with
max-pool), and already padded when the next step is a padded convolution.

A convolution followed by a max-pool whose stride is at least its height may write *pooled rows*
(``pooled_rows``): it computes the pool's input rows of one pooled row at a time into a small third
buffer (:data:`ROWS`), and the pool reads them from there, so the convolution's whole output never
exists. Max-pooling commutes with the rounding of the narrow storages, so the result is unchanged.

A float tensor kept in a buffer may be stored narrower (``storage``), to lower the activation RAM:
``f16`` (IEEE half, rounded to nearest) or ``q8`` (8 bits, value = q * scale, the scale calibrated on
representative inputs: uint8 for tensors never negative there, int8 otherwise). Arithmetic stays
float32; the stored values are approximations, so such a build's agreement must be measured.
"""
import dataclasses
import math

import numpy as np

from iprune_tf.export.lowered import Flatten, LoweredLayer, MaxPool

STORAGE = ("f32", "f16", "q8")
ROWS = "rows"  # the buffer of a convolution's pooled rows (see pooled_rows)
_STORE_BYTES = {"f32": 4, "f16": 2, "q8": 1}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """Layout of one activation: (H, W, C) channels last, padded by (top, bottom, left, right)."""

    hwc: tuple
    bits: bool = False
    pm1: bool = False
    pad: tuple = (0, 0, 0, 0)
    pad_value: float = 0.0
    store: str = "f32"  # a float tensor's element format in its buffer (see STORAGE)
    scale: float = 1.0  # q8: the value of one quantization step
    signed: bool = False  # q8: int8 (else uint8)

    @property
    def padded_hw(self):
        top, bottom, left, right = self.pad
        return self.hwc[0] + top + bottom, self.hwc[1] + left + right

    @property
    def elements(self):
        hp, wp = self.padded_hw
        return hp * wp * self.hwc[2]

    @property
    def words(self):
        """32-bit words of the buffer: the bits, or the stored floats, rounded up."""
        return math.ceil(self.elements / 32) if self.bits else math.ceil(self.elements * _STORE_BYTES[self.store] / 4)

    def load(self, buffer, pos):
        """C expression: float element ``pos`` of ``buffer`` holding this (non-bit) tensor."""
        if self.store == "f16":
            return f"ipr_ldh({buffer}, {pos})"
        if self.store == "q8":
            return f"ipr_ld{'s' if self.signed else 'u'}8({buffer}, {pos}, {_c_float(self.scale)})"
        return f"ipr_ldf({buffer}, {pos})"

    def store_value(self, buffer, pos, value):
        """C statement: store float ``value`` as element ``pos`` of ``buffer``."""
        if self.store == "f16":
            return f"ipr_sth({buffer}, {pos}, {value});"
        if self.store == "q8":
            return f"ipr_st{'s' if self.signed else 'u'}8({buffer}, {pos}, {value}, {_c_float(1.0 / self.scale)});"
        return f"ipr_stf({buffer}, {pos}, {value});"

    def fill(self, buffer):
        """C statement: every element of ``buffer`` (padding included) set to the pad value."""
        if self.store == "f32":
            return f"ipr_fill_f({buffer}, {self.elements}u, {_c_float(self.pad_value)});"
        return (f"for (uint32_t i = 0; i < {self.elements}u; ++i) "
                + self.store_value(buffer, "i", _c_float(self.pad_value)))

    def at(self, y, x):
        """C expression: offset of channel 0 of pixel (y, x) (unpadded coordinates) in this layout."""
        if self.hwc[:2] == (1, 1) and not any(self.pad):
            return "0u"
        top, _, left, _ = self.pad
        _, wp = self.padded_hw
        return f"((({y}) + {top}u) * {wp}u + ({x}) + {left}u) * {self.hwc[2]}u"


@dataclasses.dataclass
class Step:
    """One C function: ``kind`` prep (input copy/encoding), layer, pool or flatten."""

    kind: str
    op: object
    tin: Tensor
    tout: Tensor
    in_buffer: int | None
    out_buffer: int | None


def input_hwc(shape):
    """The input shape as (H, W, C): (N,) -> (1, 1, N); (H, W) -> (1, H, W) (same C order)."""
    shape = tuple(int(d) for d in shape)
    return {1: (1, 1) + shape, 2: (1,) + shape, 3: shape}.get(len(shape)) or _unsupported_shape(shape)


def _unsupported_shape(shape):
    raise ValueError(f"C export supports inputs of 1 to 3 dimensions, got input shape {shape}.")


def plan_steps(net, storage="f32", representative_data=None, pooled_rows="auto"):
    """The list of :class:`Step` of ``net``; ValueError naming a step the C export cannot run.

    ``storage``: the element format of the float tensors kept in buffers (:data:`STORAGE`); ``q8``
    calibrates each tensor's scale on ``representative_data`` (model inputs). ``pooled_rows``:
    ``True``: each convolution followed by a max-pool it can feed row by row writes pooled rows (see
    the module); ``False``: none does; ``auto``: ``True`` where that needs fewer buffer words (a
    convolution's output may already be smaller than the largest tensor in its buffer).
    """
    check_pooled_rows(pooled_rows)
    _check_steps(list(net.steps))
    ranges = _storage_ranges(net, storage, representative_data)  # once: q8 runs the net on the data
    if pooled_rows == "auto":
        plans = [_plan(net, storage, ranges, fused) for fused in (False, True)]
        return min(plans, key=lambda plan: sum(buffer_words(plan).values()))
    return _plan(net, storage, ranges, pooled_rows)


def check_pooled_rows(value):
    """``value`` if it is a ``pooled_rows`` choice ('auto', True or False), else ValueError."""
    if not any(value is choice for choice in (True, False)) and value != "auto":
        raise ValueError(f"pooled_rows must be 'auto', True or False, got {value!r}.")
    return value


def buffer_words(plan):
    """32-bit words of each buffer of ``plan`` (0, 1 and :data:`ROWS`): the largest tensor it holds."""
    words = {0: 0, 1: 0, ROWS: 0}
    for step in plan:
        if step.out_buffer is not None:
            words[step.out_buffer] = max(words[step.out_buffer], step.tout.words)
    return words


def _plan(net, storage, ranges, pooled_rows):
    steps = list(net.steps)
    hwc = input_hwc(net.input_shape)
    tensor, buffer, plan = Tensor(hwc), None, []
    if _needs_prep(net, steps):
        levels = len(net.input_encoding.thresholds) if net.input_encoding is not None else 1
        out = _output_tensor(steps, -1, (hwc[0], hwc[1], hwc[2] * levels), net.input_encoding is not None)
        plan.append(Step("prep", net.input_encoding, tensor, _stored(out, storage, ranges[0]), None, 0))
        tensor, buffer = plan[-1].tout, 0
    for i, op in enumerate(steps):
        step = _step(steps, i, op, tensor, buffer)
        if step.out_buffer is not None and step.kind != "flatten":
            step.tout = _stored(step.tout, storage, ranges[i + 1])
        plan.append(step)
        if pooled_rows and _feeds_pool_by_rows(plan[-2:]):
            _write_pooled_rows(*plan[-2:])
        tensor, buffer = step.tout, step.out_buffer
    return plan


def _feeds_pool_by_rows(pair):
    """A convolution writing a buffer, then a max-pool whose windows do not overlap vertically."""
    if len(pair) < 2 or pair[0].kind != "layer" or pair[0].op.op != "conv2d" or pair[1].kind != "pool":
        return False
    return pair[0].out_buffer is not None and pair[1].op.strides[0] >= pair[1].op.pool_size[0]


def _write_pooled_rows(layer, pool):
    """The convolution writes the pool's input rows into :data:`ROWS`; the pool takes its buffer."""
    rows = dataclasses.replace(layer.tout, hwc=(pool.op.pool_size[0], *layer.tout.hwc[1:]))
    pool.tin, pool.in_buffer, pool.out_buffer = rows, ROWS, layer.out_buffer
    layer.tout, layer.out_buffer = rows, ROWS


def _storage_ranges(net, storage, representative_data):
    """(min, max) of the input and of every step's output on the representative data (q8 only)."""
    if storage not in STORAGE:
        raise ValueError(f"activation storage must be one of {STORAGE}, got {storage!r}.")
    if storage != "q8":
        return [None] * (len(net.steps) + 1)
    if representative_data is None or len(representative_data) == 0:
        raise ValueError("activation storage 'q8' needs representative_data (model inputs) to calibrate its scales.")
    x = np.asarray(representative_data, np.float32)
    outputs = [x] + net.activations(x)[1 if net.input_encoding is not None else 0:]
    return [(float(np.min(a)), float(np.max(a))) for a in outputs]


def _stored(tensor, storage, value_range):
    """``tensor`` in ``storage`` when it holds floats; q8's scale maps the calibrated range onto 8 bits."""
    if tensor.bits or storage == "f32":
        return tensor
    if storage == "f16":
        return dataclasses.replace(tensor, store="f16")
    low, high = value_range
    signed = low < 0 or tensor.pad_value < 0
    pad = abs(tensor.pad_value)
    top = max(abs(low), abs(high), pad)
    scale = top / (127 if signed else 255) if top > 0 else 1.0
    if pad:  # the padding must read back exactly: scale = pad / 2^k
        scale = pad * 2.0 ** math.ceil(math.log2(scale / pad))
        if scale > pad:
            raise ValueError(f"activation storage 'q8': a tensor of shape {tensor.hwc} reaches {top:g}, beyond 8 "
                             f"bits of steps that hold its padding value {tensor.pad_value:g} exactly; use 'f16'.")
    return dataclasses.replace(tensor, store="q8", scale=scale, signed=signed)


def _c_float(value):
    return float(np.float32(value)).hex() + "f"


def _check_steps(steps):
    for op in steps:
        if not isinstance(op, (LoweredLayer, MaxPool, Flatten)):
            raise ValueError(f"C export cannot run step {op!r} ({type(op).__name__}); supported: LoweredLayer, "
                             "MaxPool, Flatten.")
        if isinstance(op, LoweredLayer) and (op.op not in ("dense", "conv2d")
                                             or op.kind not in ("sparse", "binary", "float", "table")):
            raise ValueError(f"C export cannot run layer '{op.name}' (op {op.op}, kind {op.kind}).")
    if not steps or not isinstance(steps[-1], LoweredLayer):
        raise ValueError("C export needs a network whose last step is a Dense/Conv2D layer (the scores).")


def _needs_prep(net, steps):
    """An input step: for the encoding, or to binarize or pad the input for the first layer."""
    first = next((op for op in steps if not isinstance(op, Flatten)), None)
    if net.input_encoding is not None:
        return True
    return isinstance(first, LoweredLayer) and (first.binary_input or (first.op == "conv2d" and any(first.padding)))


def _next_layer(steps, start):
    return next((op for op in steps[start:] if isinstance(op, LoweredLayer)), None)


def _output_tensor(steps, i, hwc, pm1):
    """Layout of the output of position ``i`` for whatever reads it (``steps[i + 1:]``)."""
    nxt = steps[i + 1] if i + 1 < len(steps) else None
    conv = isinstance(nxt, LoweredLayer) and nxt.op == "conv2d"
    pad = tuple(int(p) for p in nxt.padding) if conv else (0, 0, 0, 0)
    pad_value = float(nxt.pad_value) if conv else 0.0
    consumer = _next_layer(steps, i + 1)
    pm1 = pm1 or (consumer is not None and consumer.binary_input)
    bits = pm1 and (not any(pad) or pad_value in (1.0, -1.0))
    return Tensor(tuple(int(d) for d in hwc), bits, pm1, pad, pad_value)


def _step(steps, i, op, tin, buffer):
    out_buffer = 0 if buffer is None else 1 - buffer
    if isinstance(op, Flatten):
        if any(tin.pad):
            raise ValueError("C export: a Flatten right before a padded convolution is not supported.")
        flat = dataclasses.replace(tin, hwc=(1, 1, math.prod(tin.hwc)))
        return Step("flatten", op, tin, flat, buffer, buffer)
    if isinstance(op, MaxPool):
        _check_hwc(f"max-pool before step {i + 1}", op.input_hwc, tin.hwc)
        return Step("pool", op, tin, _output_tensor(steps, i, op.output_hwc, tin.pm1), buffer, out_buffer)
    _check_layer_input(op, tin)
    if i == len(steps) - 1:
        scores = Tensor((1, 1, op.units), False, op.output == "threshold")
        return Step("layer", op, tin, scores, buffer, None)
    hwc = tuple(op.output_hwc) if op.op == "conv2d" else (1, 1, op.units)
    return Step("layer", op, tin, _output_tensor(steps, i, hwc, op.output == "threshold"), buffer, out_buffer)


def _check_layer_input(layer, tin):
    if layer.op == "conv2d":
        _check_hwc(f"layer '{layer.name}'", layer.input_hwc, tin.hwc)
        if tuple(tin.pad) != tuple(int(p) for p in layer.padding):
            raise ValueError(f"C export: layer '{layer.name}' reads an input padded differently from its padding.")
    elif tin.hwc[:2] != (1, 1) or tin.hwc[2] != layer.fan_in:
        raise ValueError(f"C export: dense layer '{layer.name}' has fan-in {layer.fan_in} but reads a tensor of "
                         f"shape {tin.hwc} (a Flatten is missing?).")


def _check_hwc(what, expected, actual):
    if tuple(int(d) for d in expected) != tuple(actual):
        raise ValueError(f"C export: {what} expects an input of shape {tuple(expected)}, gets {tuple(actual)}.")
