"""C code of the steps that are not layers: the input step (encoded, binarized or padded into the
first layer's layout), valid max-pooling (max of floats, OR of bits), and a convolution and its
max-pool fused into pooled rows (:mod:`iprune_tf.export.c_plan`)."""
import numpy as np

from iprune_tf.export.c_kernels import c_function, fill_padding, indent, read_in, write_out
from iprune_tf.export.c_plan import ROWS


def pool_function(fn, step):
    """C function of a valid max-pool: max of floats, OR of bits. Reading the rows buffer, it makes
    one output row ``oy`` (a parameter) from the pool's input rows held there."""
    pool, tin, tout = step.op, step.tin, step.tout
    (ph, pw), (sh, sw) = pool.pool_size, pool.strides
    oh, ow, ch = pool.output_hwc
    rows = step.in_buffer == ROWS
    top = "0u" if rows else f"oy * {sh}u"
    pos = f"{tin.at(f'{top} + i', f'ox * {sw}u + j')} + ch"
    if tin.bits:
        init, update, result = "uint32_t m = 0u;", f"m |= IPR_BIT(in, {pos});", dict(cond="m")
    else:
        first = read_in(step, tin.at(top, f"ox * {sw}u") + " + ch")
        init = f"float m = {first};"
        update = f"{{ const float v = {read_in(step, pos)}; m = v > m ? v : m; }}"
        result = dict(cond="m >= 0.0f") if tout.pm1 else dict(value="m")
    row = [
        f"for (uint32_t ox = 0; ox < {ow}u; ++ox)",
        f"    for (uint32_t ch = 0; ch < {ch}u; ++ch) {{",
        f"        {init}",
        f"        for (uint32_t i = 0; i < {ph}u; ++i)",
        f"            for (uint32_t j = 0; j < {pw}u; ++j)",
        f"                {update}",
        "        " + write_out(step, f"{tout.at('oy', 'ox')} + ch", **result),
        "    }",
    ]
    if rows:
        return c_function(fn, step, [indent(row, 4)], ", uint32_t oy")
    body = [fill_padding(step), f"    for (uint32_t oy = 0; oy < {oh}u; ++oy)", indent(row, 8)]
    return c_function(fn, step, body)


def pooled_rows_function(fn, step, layer_fn, pool_fn, rows_buffer):
    """C function of a convolution and its max-pool (``step``: the pool reading the convolution's
    input buffer): per output row, the convolution writes the pool's input rows into
    ``rows_buffer``, the pool reduces them into its output."""
    body = [
        fill_padding(step),
        f"    for (uint32_t oy = 0; oy < {step.op.output_hwc[0]}u; ++oy) {{",
        f"        {layer_fn}(in, {rows_buffer}, oy * {step.op.strides[0]}u);",
        f"        {pool_fn}({rows_buffer}, out, oy);",
        "    }",
    ]
    return c_function(fn, step, body)


def prep_function(fn, step, data, tag, encoding):
    """C function copying the raw input into the first layer's layout: encoded, binarized or padded."""
    tin, tout = step.tin, step.tout
    h, w, c = tin.hwc
    levels = len(encoding.thresholds) if encoding is not None else 1
    th = data.array(f"{tag}_th", "uint32_t", float_keys(encoding.thresholds)) if encoding else None
    if tout.bits and not any(tout.pad):
        cond = f"ipr_fkey(v) >= {th}[t]" if th else f"ipr_fkey(v) >= {float_keys([0.0])[0]}u"
        return _prep_bits_in_order(fn, step, h * w * c, levels, cond)
    if encoding is not None:
        inner = [f"for (uint32_t t = 0; t < {levels}u; ++t)",
                 "    " + write_out(step, f"{tout.at('y', 'x')} + ch * {levels}u + t", cond=f"ipr_fkey(v) >= {th}[t]")]
    else:
        result = dict(cond="v >= 0.0f") if tout.pm1 else dict(value="v")
        inner = [write_out(step, f"{tout.at('y', 'x')} + ch", **result)]
    body = [
        fill_padding(step),
        f"    for (uint32_t y = 0; y < {h}u; ++y)",
        f"        for (uint32_t x = 0; x < {w}u; ++x)",
        f"            for (uint32_t ch = 0; ch < {c}u; ++ch) {{",
        f"                const float v = in[(y * {w}u + x) * {c}u + ch];",
        *("                " + line for line in inner),
        "            }",
    ]
    return c_function(fn, step, body)


def float_keys(values):
    """``ipr_fkey`` of float32 ``values`` (thresholds): unsigned integers ordered like the floats, so
    ``v >= t`` is an integer compare (no soft-float call on a core without an FPU); a threshold 0
    takes the key of -0.0, so that -0.0 >= 0 holds as it does in float."""
    u = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    keys = np.where(u >> 31, u ^ 0xFFFFFFFF, u | 0x80000000)
    return np.where(np.asarray(values, np.float32) == 0, 0x7FFFFFFF, keys).astype(np.uint32)


def _prep_bits_in_order(fn, step, size, levels, cond):
    """The input step writing bits in memory order: 32 at a time, no read-modify-write."""
    body = [
        "    uint32_t word = 0u, pos = 0u;",
        f"    for (uint32_t i = 0; i < {size}u; ++i) {{",
        "        const float v = in[i];",
        f"        for (uint32_t t = 0; t < {levels}u; ++t, ++pos) {{",
        f"            word |= (uint32_t)({cond}) << (pos & 31u);",
        "            if ((pos & 31u) == 31u) { out[pos >> 5] = word; word = 0u; }",
        "        }",
        "    }",
        "    if (pos & 31u) out[pos >> 5] = word;",
    ]
    return c_function(fn, step, body)
