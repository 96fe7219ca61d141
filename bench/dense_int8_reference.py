"""The dense int8 reference of a network: its full-integer TFLite file as plain C, written like TFLite Micro's reference kernels.

The baseline of the Cortex-M instruction counts (bench/mcu_instructions.py): the same network with
every weight stored and multiplied (no pruning), as TFLite Micro would run it on a core without
an optimized kernel library. ``dense_int8_c(tflite_bytes, name, out_dir)`` reads the operators of
an int8 ``.tflite`` (QUANTIZE, FULLY_CONNECTED with per-tensor or per-channel scales, RESHAPE,
DEQUANTIZE; anything else is refused) and writes ``NAME.h``/``NAME.c`` with the same API as
``iprune_tf.export.to_c`` (``NAME_forward``, ``NAME_predict``), so the same firmware harness runs
it. The arithmetic is TFLite Micro's: ``AffineQuantize`` (``round(x / scale) + zero_point``),
``reference_integer_ops::FullyConnected`` (int32 sums of ``(w + w_offset) * (x + x_offset)``,
``MultiplyByQuantizedMultiplier`` with gemmlowp's rounding, clamp to the fused activation) and
``Dequantize``.
"""
import math
import os

import numpy as np

from iprune_tf._keras import tf  # noqa: F401  (TensorFlow before its schema module)
from iprune_tf.export.c import CModel
from tensorflow.lite.python import schema_py_generated as schema

_OPS = {getattr(schema.BuiltinOperator, n): n for n in ("QUANTIZE", "FULLY_CONNECTED", "RESHAPE", "DEQUANTIZE")}
_RUNTIME = r"""
#include <stdint.h>

/* TFLite Micro's reference arithmetic (tensorflow/lite/kernels/internal/common.h). */
static int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    const int overflow = a == b && a == INT32_MIN;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    const int32_t high = (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    return overflow ? INT32_MAX : high;
}

static int32_t rounding_divide_by_pot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((1ll << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift)
{
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x * (1 << left_shift), multiplier),
                                  right_shift);
}

/* reference_ops::AffineQuantize, float input to int8. */
static void quantize(const float *in, int8_t *out, int n, float scale, int32_t zero_point)
{
    for (int i = 0; i < n; ++i) {
        const float r = in[i] / scale;
        int32_t q = (int32_t)(r >= 0.0f ? r + 0.5f : r - 0.5f) + zero_point;
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        out[i] = (int8_t)q;
    }
}

/* reference_integer_ops::FullyConnected (per-channel when the multipliers differ per output), batch 1. */
static void fully_connected(const int8_t *input, const int8_t *filter, const int32_t *bias, int8_t *output,
                            int accum_depth, int output_depth, int32_t input_offset, int32_t filter_offset,
                            int32_t output_offset, const int32_t *multiplier, const int8_t *shift, int per_channel,
                            int32_t act_min, int32_t act_max)
{
    for (int out_c = 0; out_c < output_depth; ++out_c) {
        int32_t acc = 0;
        for (int d = 0; d < accum_depth; ++d) {
            const int32_t input_val = input[d];
            const int32_t filter_val = filter[out_c * accum_depth + d];
            acc += (filter_val + filter_offset) * (input_val + input_offset);
        }
        if (bias)
            acc += bias[out_c];
        const int c = per_channel ? out_c : 0;
        acc = multiply_by_quantized_multiplier(acc, multiplier[c], shift[c]);
        acc += output_offset;
        acc = acc < act_min ? act_min : acc;
        acc = acc > act_max ? act_max : acc;
        output[out_c] = (int8_t)acc;
    }
}

static void dequantize(const int8_t *in, float *out, int n, float scale, int32_t zero_point)
{
    for (int i = 0; i < n; ++i)
        out[i] = (float)(in[i] - zero_point) * scale;
}
"""


def quantize_multiplier(m):
    """TFLite's QuantizeMultiplier: (int32 multiplier, shift) with m = multiplier * 2**(shift - 31)."""
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    fixed = round(q * (1 << 31))
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    if shift < -31:
        return 0, 0
    return fixed, shift


class _Graph:
    """Tensors, constant buffers and operators of the first subgraph of a ``.tflite``."""

    def __init__(self, tflite_bytes):
        model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
        self.graph, self.buffers = model.subgraphs[0], model.buffers
        self.codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]

    def ops(self):
        for op in self.graph.operators:
            code = self.codes[op.opcodeIndex]
            if code not in _OPS:
                raise ValueError(f"dense int8 reference: operator {code} is not one of {sorted(_OPS.values())}.")
            yield _OPS[code], op

    def tensor(self, i):
        return self.graph.tensors[i]

    def quant(self, i):
        q = self.tensor(i).quantization
        return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)

    def constant(self, i, dtype):
        return np.frombuffer(bytes(self.buffers[self.tensor(i).buffer].data), dtype)

    def size(self, i):
        return int(np.prod(self.tensor(i).shape))


def _array(ctype, name, values):
    items = [str(int(v)) for v in np.asarray(values).ravel()]
    lines = ",\n".join("    " + ", ".join(items[i : i + 16]) for i in range(0, len(items), 16))
    return f"static const {ctype} {name}[{len(items)}] = {{\n{lines}\n}};\n"


def _activation_bounds(options, scale, zero_point):
    """The int8 clamp of a fused activation (CalculateActivationRangeQuantized)."""
    lo, hi = -128, 127
    fused = options.fusedActivationFunction if options is not None else 0
    if fused == schema.ActivationFunctionType.RELU:
        lo = max(lo, int(zero_point))
    elif fused == schema.ActivationFunctionType.RELU6:
        lo, hi = max(lo, int(zero_point)), min(hi, int(zero_point + round(6 / scale)))
    elif fused != schema.ActivationFunctionType.NONE:
        raise ValueError(f"dense int8 reference: fused activation {fused} is not supported.")
    return lo, hi


def dense_int8_c(tflite_bytes, name, out_dir):
    """Write ``out_dir/NAME.h`` and ``NAME.c`` for the int8 ``.tflite``; returns a :class:`CModel`."""
    g = _Graph(tflite_bytes)
    data, calls, buffers, data_bytes, macs = [], [], {}, 0, 0
    (x_in,), (x_out,) = g.graph.inputs, g.graph.outputs

    def buf(i):
        if i == x_in:
            return "input"
        if i == x_out:
            return "scores"
        buffers.setdefault(i, f"{name}_t{i}")
        return buffers[i]

    for n, (kind, op) in enumerate(g.ops()):
        a, out = op.inputs[0], op.outputs[0]
        if kind == "RESHAPE":
            buffers[out] = buf(a)
        elif kind == "QUANTIZE":
            (s,), (z,) = g.quant(out)
            calls.append(f"    quantize({buf(a)}, {buf(out)}, {g.size(a)}, {float(np.float32(s)).hex()}f, {z});")
        elif kind == "DEQUANTIZE":
            if out != x_out:
                raise ValueError("dense int8 reference: a DEQUANTIZE inside the graph is not supported.")
            (s,), (z,) = g.quant(a)
            calls.append(f"    dequantize({buf(a)}, {buf(out)}, {g.size(a)}, {float(np.float32(s)).hex()}f, {z});")
        else:
            w, bias = op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else -1
            (s_in,), (z_in,) = g.quant(a)
            s_w, z_w = g.quant(w)
            (s_out,), (z_out,) = g.quant(out)
            units, depth = (int(d) for d in g.tensor(w).shape)
            mults = [quantize_multiplier(float(s_in) * float(sw) / float(s_out)) for sw in s_w]
            lo, hi = _activation_bounds(op.builtinOptions, s_out, z_out)
            data.append(_array("int8_t", f"{name}_w{n}", g.constant(w, np.int8)))
            data.append(_array("int32_t", f"{name}_m{n}", [m for m, _ in mults]))
            data.append(_array("int8_t", f"{name}_s{n}", [s for _, s in mults]))
            data_bytes += depth * units + 5 * len(mults)
            bias_name = "0"
            if bias >= 0:
                data.append(_array("int32_t", f"{name}_b{n}", g.constant(bias, np.int32)))
                bias_name, data_bytes = f"{name}_b{n}", data_bytes + 4 * units
            macs += depth * units
            calls.append(f"    fully_connected({buf(a)}, {name}_w{n}, {bias_name}, {buf(out)}, {depth}, {units}, "
                         f"{-z_in}, {-int(z_w[0])}, {z_out}, {name}_m{n}, {name}_s{n}, {int(len(mults) > 1)}, "
                         f"{lo}, {hi});")
    own = {i: b for i, b in buffers.items() if b == f"{name}_t{i}"}  # not the RESHAPE aliases
    decls = [f"static int8_t {b}[{g.size(i)}];\n" for i, b in own.items()]
    classes = g.size(x_out)
    source = "\n".join([
        f'/* {name}: dense int8 reference (TFLite Micro reference kernels), see bench/dense_int8_reference.py. */',
        f'#include "{name}.h"', _RUNTIME, *data, *decls,
        f"void {name}_forward(const float *input, float *scores)\n{{", *calls, "}\n",
        f"int {name}_predict(const float *input)\n{{", f"    static float scores[{classes}];", "    int best = 0;",
        f"    {name}_forward(input, scores);", f"    for (int i = 1; i < {classes}; ++i)",
        "        if (scores[i] > scores[best])", "            best = i;", "    return best;\n}\n",
    ])
    header = (f"#ifndef {name.upper()}_H\n#define {name.upper()}_H\n"
              f"void {name}_forward(const float *input, float *scores);\nint {name}_predict(const float *input);\n"
              "#endif\n")
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("h", "c")]
    for path, text in zip(paths, (header, source)):
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
    return CModel(name, paths[0], paths[1], data_bytes, sum(g.size(i) for i in own) + 4 * classes, tuple(g.tensor(x_in).shape[1:]), classes,
                  [], macs)
