"""C code of a layer of the C export (see :mod:`iprune_tf.export.c`) and the helpers every step uses.

A layer loops over output positions (one for Dense) and neurons; per neuron it either counts the
mismatches ``c`` between ±1 input bits and weight bits (integer path: ``s = k - 2c``) or sums
float32 values in input order (float path), then writes a threshold bit or ``s * scale + offset``;
a truth-table neuron (kind ``table``) reads the bit of its table at the address of its K input bits.
"""
import math

import numpy as np

from iprune_tf.export import c_layout
from iprune_tf.export.c_plan import ROWS

_MAX_BLOCK = 12  # at most this many accumulators (x86-64 has 16 vector registers)
_UNROLL = 32  # a popcount neuron with at most this many kept inputs gathers them in straight-line code


def layer_function(fn, step, data, tag, index_format):
    """(C function, facts dict) for a :class:`~iprune_tf.export.lowered.LoweredLayer` step."""
    layer, tin = step.op, step.tin
    int_path = tin.bits and layer.signs is not None
    before = data.bytes
    geometry = _geometry(layer, tin)
    block = _block(layer, int_path)
    geometry["block"] = block
    sum_code, facts = _SUMS[layer.kind](layer, step, geometry, data, tag, int_path, index_format)
    kk = layer.k
    words = step.tout.bits and layer.units % 32 == 0  # whole output words, no read-modify-write
    out_code = _output(layer, step, data, tag, int_path, kk, words)
    if block > 1:  # the sums of `block` neurons at once, each in its own order: independent float chains
        neurons = [f"for (uint32_t n0 = 0; n0 < {layer.units}u; n0 += {block}u) {{", indent(sum_code, 4),
                   f"    for (uint32_t n = n0; n < n0 + {block}u; ++n) {{", "        const float s = acc[n - n0];",
                   indent(out_code, 8), "    }", "}"]
    else:
        neurons = [f"for (uint32_t n = 0; n < {layer.units}u; ++n) {{", indent(sum_code, 4), indent(out_code, 4), "}"]
    neurons = (["uint32_t word = 0u;"] if words else []) + neurons
    oh, ow, _ = layer.output_hwc if layer.op == "conv2d" else (1, 1, 0)
    rows = step.out_buffer == ROWS  # output rows oy0, oy0 + 1, ... into the rows buffer (c_plan.pooled_rows)
    row_loop = (f"for (uint32_t r = 0u, oy = oy0; r < {step.tout.hwc[0]}u; ++r, ++oy)" if rows
                else f"for (uint32_t oy = 0; oy < {oh}u; ++oy)")
    body = [
        fill_padding(step),
        f"    {row_loop}",
        f"        for (uint32_t ox = 0; ox < {ow}u; ++ox) {{",
        f"            const uint32_t base = {geometry['base']}, obase = {step.tout.at('r' if rows else 'oy', 'ox')};",
        indent("\n".join(neurons), 12), "        }",
    ]
    facts.update(name=layer.name, op=layer.op, kind=layer.kind, k=int(layer.k), fan_in=int(layer.fan_in),
                 units=int(layer.units), path="table" if layer.kind == "table" else "popcount" if int_path else "float",
                 data_bytes=data.bytes - before)
    return c_function(fn, step, body, ", uint32_t oy0" if rows else ""), facts


def _block(layer, int_path):
    """Neurons summed together on the float path (1: one at a time; the popcount path stays at 1).

    A float sum is a chain of dependent adds (K of them for a pruned neuron, a whole row for an
    unpruned one); summing several neurons at once keeps the adder busy (each neuron still adds
    in its own order, so the results do not change).
    """
    if int_path or layer.kind == "table":
        return 1
    candidates = (layer.units,) if layer.units <= _MAX_BLOCK else (8, 4, 2)
    return next((b for b in candidates if layer.units % b == 0), 1)


def _geometry(layer, tin):
    """Input rows of one neuron's receptive field: kh rows of ``row`` values, ``rowstep`` apart."""
    if layer.op == "dense":
        return dict(kh=1, row=layer.fan_in, rowstep=0, base="0u", channels=layer.fan_in)
    (kh, kw), (sh, sw), channels = layer.kernel_size, layer.strides, tin.hwc[2]
    wp = tin.padded_hw[1]
    return dict(kh=kh, kw=kw, row=kw * channels, rowstep=wp * channels, channels=channels, wp=wp,
                base=f"(oy * {sh * wp}u + ox * {sw}u) * {channels}u")


def _sparse(layer, step, g, data, tag, int_path, index_format):
    k, block = layer.k, g["block"]
    offsets = _offsets(layer, g)
    if block > 1:  # K-major within each block of neurons: the block's k-th indices are adjacent
        offsets = offsets.reshape(-1, block, k).transpose(0, 2, 1).reshape(layer.units, k)
        return _sparse_block(layer, step, data, tag, index_format, offsets, block)
    setup, idx_fmt, facts = c_layout.index_code(offsets, data, tag, k, index_format)
    idx = idx_fmt.format(k="k", b=0)
    if layer.signs is None:
        values = data.array(f"{tag}_val", "float", layer.values)
        return "\n".join([
            setup, "float s = 0.0f;", f"for (uint32_t k = 0; k < {k}u; ++k)",
            f"    s += {read_in(step, 'base + ' + idx)} * {values}[n * {k}u + k];",
        ]), facts
    bw, nw, sg = _signs(layer, data, tag)
    if int_path and k <= _UNROLL:  # written out: no loop counter, constant shifts
        words = [" | ".join(f"IPR_BIT(in, base + {idx_fmt.format(k=f'{j}u', b=0)}) << {j - w * bw}u"
                            for j in range(w * bw, min(k, (w + 1) * bw))) for w in range(nw)]
        return "\n".join([setup, "int32_t c = 0;", *(f"c += (int32_t)ipr_popcount(({g}) ^ {sg}[n * {nw}u + {w}u]);"
                                                      for w, g in enumerate(words))]), facts
    if int_path:
        return "\n".join([
            setup, "int32_t c = 0;", f"for (uint32_t k0 = 0; k0 < {k}u; k0 += {bw}u) {{",
            "    uint32_t g = 0u;",
            f"    for (uint32_t k = k0; k < {k}u && k < k0 + {bw}u; ++k)",
            f"        g |= IPR_BIT(in, base + {idx}) << (k - k0);",
            f"    c += (int32_t)ipr_popcount(g ^ {sg}[n * {nw}u + k0 / {bw}u]);", "}",
        ]), facts
    return "\n".join([
        setup, "float s = 0.0f;", f"for (uint32_t k = 0; k < {k}u; ++k) {{",
        f"    const float v = {read_in(step, 'base + ' + idx)};",
        f"    s += ipr_signed(v, {sg}[n * {nw}u + k / {bw}u] >> (k % {bw}u) & 1u);", "}",
    ]), facts


def _table(layer, step, g, data, tag, int_path, index_format):
    """A table neuron's address ``a``: bit j is its j-th kept input's sign bit (1 for >= 0)."""
    setup, idx, facts = c_layout.index_code(_offsets(layer, g), data, tag, layer.k, index_format)
    bits = [f"IPR_BIT(in, base + {idx.format(k=f'{j}u', b=0)})" if step.tin.bits else
            f"({read_in(step, 'base + ' + idx.format(k=f'{j}u', b=0))} >= 0.0f)" for j in range(layer.k)]
    return "\n".join([setup, "const uint32_t a = " + " | ".join(f"(uint32_t){b} << {j}u" for j, b in enumerate(bits)) + ";"]), facts


def _signs(layer, data, tag):
    """(bits per word, words per neuron, array name) of the sign bits of a pruned binary layer."""
    bw = 8 if layer.k <= 8 else 16 if layer.k <= 16 else 32
    return bw, math.ceil(layer.k / bw), data.array(f"{tag}_sg", f"uint{bw}_t", c_layout.pack_rows(layer.signs > 0, bw))


def _sparse_block(layer, step, data, tag, index_format, offsets, block):
    """Float sums of ``block`` pruned neurons at once, each over k in ascending order."""
    k = layer.k
    setup, idx, facts = c_layout.index_code(offsets, data, tag, k, index_format, row="n0", block=block)
    value = [read_in(step, "base + " + idx.format(k="k", b=b)) for b in range(block)]
    if layer.signs is None:
        values = data.array(f"{tag}_val", "float", layer.values)
        update = [f"s{b} += {v} * {values}[(n0 + {b}u) * {k}u + k];" for b, v in enumerate(value)]
    else:
        bw, nw, sg = _signs(layer, data, tag)
        update = [f"s{b} += ipr_signed({v}, {sg}[(n0 + {b}u) * {nw}u + k / {bw}u] >> (k % {bw}u) & 1u);"
                  for b, v in enumerate(value)]
    return "\n".join([setup, _accumulators(block), f"for (uint32_t k = 0; k < {k}u; ++k) {{",
                      *("    " + u for u in update), "}", _collect(block)]), facts


def _offsets(layer, g):
    """Sparse indices as offsets from the receptive field's first value (conv: in the padded input)."""
    idx = np.asarray(layer.indices, np.int64)
    if layer.op == "dense":
        return idx
    return idx // g["row"] * g["rowstep"] + idx % g["row"]


def _binary(layer, step, g, data, tag, int_path, index_format):
    kh, row, rowstep = g["kh"], g["row"], g["rowstep"]
    rw = math.ceil(row / 32)
    w = data.array(f"{tag}_w", "uint32_t", c_layout.pack_rows(np.asarray(layer.signs).reshape(-1, row) > 0, 32))
    head = [f"for (uint32_t i = 0; i < {kh}u; ++i) {{", f"    const uint32_t *wr = {w} + (n * {kh}u + i) * {rw}u;"]
    facts = dict(index_format=None, index_bits=0)
    if int_path and (layer.op == "dense" or g["channels"] % 32 == 0):
        full, tail = divmod(row, 32)
        lines = ["int32_t c = 0;", *head, f"    const uint32_t *xr = in + (base + i * {rowstep}u) / 32u;"]
        if full:
            lines.append(f"    for (uint32_t w = 0; w < {full}u; ++w) c += (int32_t)ipr_popcount(xr[w] ^ wr[w]);")
        if tail:
            lines.append(f"    c += (int32_t)ipr_popcount((xr[{full}] ^ wr[{full}]) & {(1 << tail) - 1}u);")
        return "\n".join([*lines, "}"]), facts
    rb = f"    const uint32_t rb = base + i * {rowstep}u;"
    if g["block"] > 1:
        head = [_accumulators(g["block"]), f"for (uint32_t i = 0; i < {kh}u; ++i) {{",
                f"    const uint32_t *wr = {w} + (n0 * {kh}u + i) * {rw}u;", rb]
        update = [f"s{b} += ipr_signed(v, IPR_BIT(wr + {b * kh * rw}u, r));" for b in range(g["block"])]
        return "\n".join([*head, *_blocked_row(step, row, update), "}", _collect(g["block"])]), facts
    if int_path:
        update = "c += (int32_t)(IPR_BIT(in, rb + r) ^ IPR_BIT(wr, r));"
        return "\n".join(["int32_t c = 0;", *head, rb, f"    for (uint32_t r = 0; r < {row}u; ++r) {update}", "}"]), facts
    update = f"s += ipr_signed({read_in(step, 'rb + r')}, IPR_BIT(wr, r));"
    return "\n".join(["float s = 0.0f;", *head, rb, f"    for (uint32_t r = 0; r < {row}u; ++r) {update}", "}"]), facts


def _float(layer, step, g, data, tag, int_path, index_format):
    kh, row, rowstep = g["kh"], g["row"], g["rowstep"]
    fk = data.array(f"{tag}_fk", "float", np.asarray(layer.kernel, np.float32).reshape(-1, layer.units).T)
    facts = dict(index_format=None, index_bits=0)
    if g["block"] > 1:
        head = [_accumulators(g["block"]), f"for (uint32_t i = 0; i < {kh}u; ++i) {{",
                f"    const float *wr = {fk} + (n0 * {kh}u + i) * {row}u;",
                f"    const uint32_t rb = base + i * {rowstep}u;"]
        update = [f"s{b} += v * wr[{b * kh * row}u + r];" for b in range(g["block"])]
        return "\n".join([*head, *_blocked_row(step, row, update), "}", _collect(g["block"])]), facts
    return "\n".join([
        "float s = 0.0f;", f"for (uint32_t i = 0; i < {kh}u; ++i) {{",
        f"    const float *wr = {fk} + (n * {kh}u + i) * {row}u;",
        f"    const uint32_t rb = base + i * {rowstep}u;",
        f"    for (uint32_t r = 0; r < {row}u; ++r) s += {read_in(step, 'rb + r')} * wr[r];", "}",
    ]), facts


def _blocked_row(step, row, updates):
    """Inner loop over one input row, adding each value to the ``block`` accumulators (``updates``)."""
    return [f"    for (uint32_t r = 0; r < {row}u; ++r) {{", f"        const float v = {read_in(step, 'rb + r')};",
            *("        " + u for u in updates), "    }"]


def _accumulators(block):
    """Scalar accumulators s0, s1, ... (registers; an array would stay in memory)."""
    return "float " + ", ".join(f"s{b} = 0.0f" for b in range(block)) + ";"


def _collect(block):
    return f"const float acc[{block}] = {{" + ", ".join(f"s{b}" for b in range(block)) + "};"


_SUMS = {"sparse": _sparse, "binary": _binary, "float": _float, "table": _table}


def _output(layer, step, data, tag, int_path, kk, words=False):
    """Threshold bit, or y = s * scale + offset (then ReLU), written in the output layout."""
    pos = "obase + n"
    write = _word_write if words else write_out
    if layer.kind == "table":  # 32 table bits per word, the neuron's 2**k bits in ceil(2**k / 32) words
        n_words = math.ceil(2**layer.k / 32)
        tables = data.array(f"{tag}_tb", "uint32_t", c_layout.pack_rows(layer.tables, 32))
        return write(step, pos, cond=f"{tables}[n * {n_words}u + (a >> 5)] >> (a & 31u) & 1u")
    if layer.output == "threshold":
        threshold = np.asarray(layer.threshold, np.int64)
        if int_path:
            mismatches = np.clip((kk - threshold) // 2, -1, kk)  # s = kk - 2c >= T  <=>  c <= (kk - T) / 2
            bound = data.array(f"{tag}_p", _int_type(mismatches), mismatches)
            return write(step, pos, cond=f"c <= {bound}[n]")
        t = data.array(f"{tag}_t", _int_type(threshold), threshold)
        return write(step, pos, cond=f"s >= (float){t}[n]")
    s = f"(float)({kk} - 2 * c)" if int_path else "s"
    if layer.has_affine:
        sc = data.array(f"{tag}_sc", "float", layer.scale)
        of = data.array(f"{tag}_of", "float", layer.offset)
        s = f"{s} * {sc}[n] + {of}[n]"
    lines = [f"float y = {s};"]
    if layer.activation == "relu":
        lines.append("y = y >= 0.0f ? y : 0.0f;")
    result = dict(cond="y >= 0.0f") if step.tout.pm1 else dict(value="y")
    return "\n".join([*lines, write(step, pos, **result)])


def _int_type(values):
    lo, hi = int(np.min(values)), int(np.max(values))
    return next(f"int{b}_t" for b in (8, 16, 32) if -(2 ** (b - 1)) <= lo and hi < 2 ** (b - 1))


def read_in(step, pos):
    """C expression of input value ``pos`` as a float (±1 for bits)."""
    if step.in_buffer is None:
        return f"in[{pos}]"
    return f"ipr_signed(1.0f, IPR_BIT(in, {pos}))" if step.tin.bits else step.tin.load("in", pos)


def _word_write(step, pos, cond=None, value=None):
    """Collect condition bits in ``word`` and store it whole every 32 neurons (``pos`` 32-aligned at n = 0)."""
    return "\n".join([f"word |= (uint32_t)({cond}) << (n & 31u);",
                      f"if ((n & 31u) == 31u) {{ out[({pos}) >> 5] = word; word = 0u; }}"])


def write_out(step, pos, cond=None, value=None):
    """C statement storing a condition (as a bit or ±1) or a float value at ``pos`` of the output."""
    if step.tout.bits:
        return f"ipr_put(out, {pos}, {cond});"
    value = value if cond is None else f"({cond}) ? 1.0f : -1.0f"
    return f"out[{pos}] = {value};" if step.out_buffer is None else step.tout.store_value("out", pos, value)


def fill_padding(step):
    tout = step.tout
    if not any(tout.pad):
        return ""
    if tout.bits:
        return f"    ipr_fill_w(out, {tout.words}u, {'0xFFFFFFFFu' if tout.pad_value > 0 else '0u'});"
    return "    " + tout.fill("out")


def c_function(fn, step, body, extra_parameters=""):
    tin = "const float *in" if step.in_buffer is None else "const uint32_t *in"
    tout = "float *out" if step.out_buffer is None else "uint32_t *out"
    return "\n".join([f"static void {fn}({tin}, {tout}{extra_parameters})", "{", *[line for line in body if line],
                      "}", ""])


def indent(code, spaces):
    """``code`` (a string, or a list of lines) indented by ``spaces``, as one string."""
    lines = code.splitlines() if isinstance(code, str) else code
    return "\n".join(" " * spaces + line for line in lines)
