"""Fixed-point build of the C export: ``to_c(..., activations="int8" | "int16")`` for BinaryConnect MLPs.

The default float build sums float32 values and matches the lowered model bit for bit; on a core
without an FPU (Cortex-M0/M3) every add is a soft-float call. This build stores the real
activations as integers instead (per-tensor step sizes calibrated on ``representative_data``:
the largest magnitude seen maps to the largest integer), so a neuron's sum over ±1 weights is an
integer sum, exact in any order. What changes:

* the input is quantized from its IEEE bits (``ipr_quantize``: an integer multiply and shift per
  value, no float operation);
* every activation tensor is stored twice, as ``q`` then ``-q``: a negative weight's index points
  into the second half, so a kept connection is one index load, one value load and one add;
  an unpruned layer lists per neuron the inputs of its minority weight sign (``_binary_sum``);
* a hidden neuron's batch norm and ReLU become ``q = clamp((s * M + B) >> F, 0, qmax)`` (int64);
  the last layer computes float scores ``s * a + b``.

It approximates the float model (agreement is measured, not guaranteed); dense layers only, each
with ±1 weights on real inputs (a BinaryConnect MLP such as the MNIST preset).
"""
import math

import numpy as np

from iprune_tf.export.c_layout import index_code
from iprune_tf.export.lowered import Flatten, LoweredLayer

ACTIVATIONS = {"int8": ("int8_t", 127), "int16": ("int16_t", 32767)}
_UNROLL = 16  # sparse sums with at most this many terms are written out, one line per term


def check_fixed(net, activations, representative_data):
    """ValueError naming what keeps ``net`` from the fixed-point build."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be 'float' or one of {tuple(ACTIVATIONS)}, got {activations!r}.")
    if representative_data is None or len(representative_data) == 0:
        raise ValueError(f"activations={activations!r} needs representative_data (model inputs) to calibrate "
                         "the activation step sizes.")
    if net.input_encoding is not None:
        raise ValueError("the fixed-point C build reads real inputs; this network has an input encoding (use "
                         "the default activations='float', whose binary layers already use integer popcounts).")
    for step in net.steps:
        if isinstance(step, Flatten):
            continue
        if not isinstance(step, LoweredLayer) or step.op != "dense":
            raise ValueError(f"the fixed-point C build supports dense layers only, not {getattr(step, 'name', step)!r}.")
        if step.signs is None or step.binary_input or step.output != "affine" or step.kind not in ("sparse", "binary"):
            raise ValueError(f"the fixed-point C build needs ±1 weights on real inputs (BinaryConnect); layer "
                             f"'{step.name}' has kind {step.kind}, binary input {step.binary_input}, output "
                             f"{step.output}.")


def _peaks(layers, x):
    """Per layer: the largest magnitude of its input in a forward pass on ``x``."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    peaks = []
    for layer in layers:
        peaks.append(float(np.max(np.abs(x))) or 1.0)
        x = layer.forward(x)
    return peaks


def _affine(layer):
    scale = layer.scale if layer.scale is not None else np.ones(layer.units, np.float32)
    offset = layer.offset if layer.offset is not None else np.zeros(layer.units, np.float32)
    return np.asarray(scale, np.float64), np.asarray(offset, np.float64)


def _requant(ratio, bias, smax):
    """(M, B, L, F): ``s * ratio + bias ≈ (s * 2**L * M + B) >> F`` (int64), |M| < 2**31, B rounding.

    ``F = 32`` (the high word of one multiply-accumulate, no 64-bit shift) with ``s * 2**L`` still
    an int32 for ``|s| <= smax``; else ``L = 0`` and the largest ``F`` that keeps M an int32.
    """
    top = float(np.max(np.abs(ratio))) or 1.0
    shift = max(0, math.floor(math.log2(top)) + 2)
    if smax * 2**shift < 2**31:
        f = 32
    else:
        shift, f = 0, max(0, min(46, 30 - math.ceil(math.log2(top))))
    m = np.round(ratio * 2.0 ** (f - shift)).astype(np.int64)
    b = np.round(bias * 2.0**f).astype(np.int64) + (1 << f >> 1)
    return m, b, shift, f


def fixed_steps(net, name, data, index_format, activations, representative_data):
    """(buffer declarations, step functions, forward's calls, static RAM bytes, per-layer facts)."""
    check_fixed(net, activations, representative_data)
    itype, qmax = ACTIVATIONS[activations]
    layers = net.layers
    deltas = [p / qmax for p in _peaks(layers, representative_data)]
    sizes = [layer.fan_in for layer in layers]
    buffers = [max(sizes[0::2]), max(sizes[1::2], default=0)]
    functions = [_quantize_input(name, sizes[0], 1.0 / deltas[0], qmax, itype)]
    calls = [f"    {name}_input(input, {name}_buf0);"]
    facts = []
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        out_delta = None if last else deltas[i + 1]
        code, layer_facts = _layer(f"{name}_layer{i}", layer, data, f"L{i}", index_format, deltas[i], out_delta,
                                   itype, qmax)
        functions.append(code)
        facts.append(layer_facts)
        target = "scores" if last else f"{name}_buf{(i + 1) % 2}"
        calls.append(f"    {name}_layer{i}({name}_buf{i % 2}, {target});")
    decls = "".join(f"static {itype} {name}_buf{b}[{2 * n}];\n" for b, n in enumerate(buffers) if n)
    item = 1 if itype == "int8_t" else 2
    return decls, functions, calls, 2 * item * sum(buffers) + 4 * net.num_classes, facts


def _quantize_input(name, size, scale, qmax, itype):
    """The input step: each float as round(v * scale), clamped, then its negation."""
    f = 14 - math.ceil(math.log2(scale))
    mult = int(round(scale * 2.0**f))  # < 2**15
    return "\n".join([
        f"static void {name}_input(const float *in, {itype} *out)", "{",
        f"    for (uint32_t i = 0; i < {size}u; ++i) {{",
        f"        const int32_t q = ipr_quantize(in[i], {mult}u, {f}, {qmax}u);",
        f"        out[i] = ({itype})q;", f"        out[{size}u + i] = ({itype})-q;", "    }", "}", "",
    ])


def _layer(fn, layer, data, tag, index_format, delta, out_delta, itype, qmax):
    scale, offset = _affine(layer)
    if layer.kind == "sparse":
        doubled = np.where(np.asarray(layer.signs) > 0, 0, layer.fan_in) + np.asarray(layer.indices, np.int64)
        setup, idx, facts = index_code(doubled, data, tag, layer.k, index_format)
        sum_code = _sparse_sum(setup, idx, layer.k)
    else:
        sum_code, facts = _binary_sum(layer, data, tag)
    if out_delta is None:
        a = data.array(f"{tag}_a", "float", (scale * delta).astype(np.float32))
        b = data.array(f"{tag}_b", "float", offset.astype(np.float32))
        out = [f"float y = (float)s * {a}[n] + {b}[n];"]
        if layer.activation == "relu":
            out.append("y = y >= 0.0f ? y : 0.0f;")
        out.append("out[n] = y;")
        signature = f"IPR_SCALAR static void {fn}(const {itype} *in, float *out)"
    else:
        smax = layer.k * qmax
        m, b, shift, f = _requant(scale * delta / out_delta, offset / out_delta, smax)
        mn = data.array(f"{tag}_m", "int32_t", m)
        bn = data.array(f"{tag}_b", "int64_t", b)
        low = 0 if layer.activation == "relu" else -qmax
        out = [*_scaled(f"(int64_t)(s * {1 << shift}) * {mn}[n] + {bn}[n]", f, low, qmax),
               *_clamp(low, qmax),
               f"out[n] = ({itype})q;", f"out[{layer.units}u + n] = ({itype})-q;"]
        signature = f"IPR_SCALAR static void {fn}(const {itype} *in, {itype} *out)"
    total = [] if layer.kind == "sparse" else [
        "int32_t total = 0;", f"for (uint32_t i = 0; i < {layer.fan_in}u; ++i)", "    total += in[i];"]
    body = [*total, f"for (uint32_t n = 0; n < {layer.units}u; ++n) {{",
            *("    " + line for line in sum_code + out), "}"]
    facts.update(name=layer.name, op=layer.op, kind=layer.kind, k=int(layer.k), fan_in=int(layer.fan_in),
                 units=int(layer.units), path=f"fixed {itype[:-2]}")
    return "\n".join([signature, "{", *("    " + line for line in body), "}", ""]), facts


def _scaled(expression, f, low, qmax):
    """Lines setting int32 ``t`` to ``expression >> f`` (int64), clamped to [low, qmax] if it may not fit.

    With ``f == 32`` it is the high word: one multiply-accumulate, no 64-bit shift, no clamp needed.
    """
    if f == 32:
        return [f"const int32_t t = (int32_t)(({expression}) >> 32);"]
    return [f"const int64_t w = ({expression}) >> {f};",
            f"const int32_t t = w < {low} ? {low} : w > {qmax} ? {qmax} : (int32_t)w;"]


def _clamp(low, qmax):
    """Lines clamping int32 ``t`` to [low, qmax] as ``q``, in a form compilers make branch-free (a ReLU's
    sign is a coin toss: a branch would mispredict half the time)."""
    return [f"const int32_t r = t < {low} ? {low} : t;", f"const int32_t q = r > {qmax} ? {qmax} : r;"]


def _sparse_sum(setup, idx, k):
    """The neuron's sum over its kept inputs (indices already point at q or -q)."""
    if k <= _UNROLL:
        return [setup, "const int32_t s = " + "\n        + ".join(f"in[{idx.format(k=f'{j}u', b=0)}]" for j in range(k)) + ";"]
    return [setup, "int32_t s = 0;", f"for (uint32_t k = 0; k < {k}u; ++k)", f"    s += in[{idx.format(k='k', b=0)}];"]


def _binary_sum(layer, data, tag):
    """(sum lines, facts) of an unpruned layer: ``s = c * (2 * p - total)``, ``p`` summed over a list.

    Per neuron the list holds the inputs of its minority weight sign (+1 with ``c = 1``, else -1
    with ``c = -1``): at most half the inputs, one index load, one value load and one add each;
    ``total``, the sum of all inputs, is computed once per layer.
    """
    signs = np.asarray(layer.signs).reshape(layer.units, -1) > 0
    plus = 2 * signs.sum(1) <= signs.shape[1]
    lists = [np.flatnonzero(row == p) for row, p in zip(signs, plus)]
    starts = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    width = _uint(layer.fan_in - 1)
    ix = data.array(f"{tag}_ix", width, np.concatenate(lists))
    st = data.array(f"{tag}_st", _uint(starts[-1]), starts)
    c = data.array(f"{tag}_c", "int8_t", np.where(plus, 1, -1))
    lines = ["int32_t p = 0;", f"uint32_t j = {st}[n];", f"const uint32_t end = {st}[n + 1];",
             "for (; j + 4u <= end; j += 4u)",
             f"    p += in[{ix}[j]] + in[{ix}[j + 1u]] + in[{ix}[j + 2u]] + in[{ix}[j + 3u]];",
             "for (; j < end; ++j)", f"    p += in[{ix}[j]];", f"const int32_t s = {c}[n] * (2 * p - total);"]
    return lines, dict(index_format=f"{width[:-2]} list", index_bits=int(width[4:-2]))


def _uint(top):
    return next(f"uint{b}_t" for b in (8, 16, 32) if top < 2**b)
