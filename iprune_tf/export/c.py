"""``to_c(model, name, out_dir)``: a pruned network as dependency-free C99 (``NAME.h``/``NAME.c``).

Reads only the lowered form (:mod:`iprune_tf.export.lowered`). Everything is ``static const`` data
and static buffers, no dynamic memory, no library call but an inlined ``memcpy``:

* ±1 activations travel as bits packed in 32-bit words (+1 = 1). A layer with ±1 weights on bits
  sums with XOR + popcount (K gathered bits for a sparse neuron, whole words for an unpruned one)
  and compares the mismatch count ``c`` with an integer bound (``s = k - 2c >= T``);
* real activations stay float32; sparse sums run over k in ascending order, as the reference does;
* per pruned neuron K indices at the smallest unsigned width holding them, or bit-packed
  (``index_format``), and K sign bits; unpruned binary kernels bit-packed per row;
* a convolution's input is written padded (with ``pad_value``) by its producer, so the conv loops
  have no bounds checks; its sparse indices are offsets into that padded input.
"""
import dataclasses
import os
import re
from importlib import resources

import numpy as np

from iprune_tf.export.c_fixed import check_fixed, fixed_steps
from iprune_tf.export.c_kernels import layer_function
from iprune_tf.export.c_plan import ROWS, buffer_words, check_pooled_rows, plan_steps
from iprune_tf.export.c_steps import pool_function, pooled_rows_function, prep_function

INDEX_FORMATS = ("auto", "natural", "packed")
_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary".split()
)


@dataclasses.dataclass
class CModel:
    """What :func:`to_c` wrote: paths, model data bytes (flash), static RAM bytes, per-layer facts,
    connections evaluated per inference."""

    name: str
    header: str
    source: str
    data_bytes: int
    ram_bytes: int
    input_shape: tuple
    num_classes: int
    layers: list
    operations: int = 0


def check_identifier(name):
    """``name`` if it is a valid C identifier (and not a keyword), else ValueError."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in _C_KEYWORDS:
        raise ValueError(f"'{name}' is not a valid C identifier (letters, digits, _; not starting with a digit).")
    return name


def to_c(model_or_lowered, name, out_dir, overwrite=False, index_format="auto", activations="float",
         representative_data=None, activation_storage="f32", pooled_rows="auto"):
    """Write ``out_dir/NAME.h`` and ``out_dir/NAME.c``; returns a :class:`CModel`.

    ``model_or_lowered``: a Keras model (lowered with :func:`iprune_tf.export.lower`) or a
    :class:`~iprune_tf.export.LoweredNet`. Existing files are refused unless ``overwrite``.
    ``index_format``: how pruned neurons' input indices are stored: ``natural`` (uint8/16/32,
    the smallest that holds them), ``packed`` (a little-endian stream of ``bit_length`` bits per
    index) or ``auto`` (packed when it saves at least a quarter of the index bytes); ``natural``
    takes more flash and decodes faster (one load per index): see docs/results/speed.md.
    ``activations``: ``float`` (default: bit-exact with the lowered model) or ``int8``/``int16``,
    the fixed-point build of a BinaryConnect MLP (:mod:`iprune_tf.export.c_fixed`): integer sums,
    no float operation but in the input step and the scores, activation step sizes calibrated on
    ``representative_data`` (model inputs); it approximates the model (check its agreement).
    ``activation_storage`` (float build): ``f32`` (default), or ``f16``/``q8`` to keep the float
    activations in 2 or 1 bytes and lower the RAM (:mod:`iprune_tf.export.c_plan`; q8 is calibrated
    on ``representative_data``); the arithmetic stays float32, the result approximates the model.
    ``pooled_rows`` (float build): ``True`` makes each convolution followed by a max-pool compute one
    pooled row at a time into a small row buffer instead of writing its whole output (the same
    results; :mod:`iprune_tf.export.c_plan`), ``False`` never, ``auto`` (default) where it needs
    less RAM.
    """
    check_identifier(name)
    if index_format not in INDEX_FORMATS:
        raise ValueError(f"index_format must be one of {INDEX_FORMATS}, got {index_format!r}.")
    check_pooled_rows(pooled_rows)
    net = _lowered(model_or_lowered)
    if activations != "float":
        check_fixed(net, activations, representative_data)
        if activation_storage != "f32":
            raise ValueError(f"activation_storage={activation_storage!r} is for the float build, "
                             f"not activations={activations!r}.")
    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("h", "c")]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it.")
    source, data_bytes, ram_bytes, layers = _source(net, name, index_format, activations, representative_data,
                                                    activation_storage, pooled_rows)
    header = _header(net, name, data_bytes, ram_bytes)
    os.makedirs(out_dir, exist_ok=True)
    for path, text in zip(paths, (header, source)):
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
    return CModel(name, paths[0], paths[1], data_bytes, ram_bytes, tuple(net.input_shape), net.num_classes, layers,
                  net.cost()["operations"])


def _lowered(obj):
    from iprune_tf.export.lowered import LoweredNet
    from iprune_tf.export.lowering import lower

    return obj if isinstance(obj, LoweredNet) else lower(obj)


class _Data:
    """The ``static const`` arrays of the model, counted in bytes as they are emitted."""

    def __init__(self, prefix):
        self.prefix, self.parts, self.bytes = prefix, [], 0

    def array(self, suffix, ctype, values):
        values = np.asarray(values).ravel()
        name = f"{self.prefix}_{suffix}"
        if ctype == "float":  # finite: lower() refuses non-finite weights
            items = [float(v).hex() + "f" for v in values.astype(np.float32)]
        else:
            items = [str(int(v)) for v in values]
        lines = ",\n".join("    " + ", ".join(items[i : i + 12]) for i in range(0, len(items), 12))
        self.parts.append(f"static const {ctype} {name}[{len(items)}] = {{\n{lines}\n}};\n")
        self.bytes += len(items) * _CTYPE_BYTES[ctype]
        return name


_CTYPE_BYTES = {"uint8_t": 1, "uint16_t": 2, "uint32_t": 4, "int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8,
                "float": 4}


def _template(filename):
    return resources.files("iprune_tf.export").joinpath("c_templates", filename).read_text(encoding="ascii")


def _source(net, name, index_format, activations, representative_data, storage="f32", pooled_rows="auto"):
    data = _Data(name)
    if activations == "float":
        decls, functions, calls, ram_bytes, layers = _float_steps(net, name, data, index_format, storage,
                                                                  representative_data, pooled_rows)
    else:
        decls, functions, calls, ram_bytes, layers = fixed_steps(net, name, data, index_format, activations,
                                                                 representative_data)
    text = "\n".join([
        f"/* {name}: generated by iprune_tf.export.to_c (activations={activations}); see {name}.h. */",
        f'#include "{name}.h"', _template("runtime.c"), *data.parts, decls, *functions,
        _entry_points(name, calls, net.num_classes),
    ])
    return text, data.bytes, ram_bytes, layers


def _float_steps(net, name, data, index_format, storage="f32", representative_data=None, pooled_rows="auto"):
    """(buffer declarations, step functions, forward's calls, static RAM bytes, per-layer facts)."""
    plan = plan_steps(net, storage, representative_data, pooled_rows)
    functions, calls, layers = [], [], []
    for i, step in enumerate(plan):
        fn = f"{name}_step{i}"
        if step.kind == "layer":
            code, facts = layer_function(fn + ("_rows" if step.out_buffer == ROWS else ""), step, data, f"L{i}",
                                         index_format)
            layers.append(facts)
        elif step.kind == "pool" and step.in_buffer == ROWS:  # called as one step with the convolution before it
            fused, fused_fn = dataclasses.replace(step, in_buffer=plan[i - 1].in_buffer), f"{name}_step{i - 1}"
            code = pool_function(fn, step) + pooled_rows_function(fused_fn, fused, f"{fused_fn}_rows", fn,
                                                                  _pointer(name, ROWS, None))
            fn, step = fused_fn, fused
        elif step.kind == "pool":
            code = pool_function(fn, step)
        elif step.kind == "prep":
            code = prep_function(fn, step, data, f"P{i}", net.input_encoding)
        else:  # flatten: the same memory, read as a vector
            continue
        functions.append(code)
        if step.out_buffer != ROWS:
            calls.append(f"    {fn}({_pointer(name, step.in_buffer, 'input')}, "
                         f"{_pointer(name, step.out_buffer, 'scores')});")
    buffers = buffer_words(plan)
    buffer_decls = "".join(
        f"static uint32_t {_pointer(name, b, None)}[{words}];\n" for b, words in buffers.items() if words
    )
    return buffer_decls, functions, calls, 4 * sum(buffers.values()) + 4 * net.num_classes, layers


def _pointer(name, buffer, io_name):
    return io_name if buffer is None else f"{name}_rows" if buffer == ROWS else f"{name}_buf{buffer}"


def _entry_points(name, calls, classes):
    return "\n".join([
        f"void {name}_forward(const float *input, float *scores)\n{{", *calls, "}\n",
        f"int {name}_predict(const float *input)\n{{",
        f"    static float scores[{classes}];",
        "    int best = 0;",
        f"    {name}_forward(input, scores);",
        f"    for (int i = 1; i < {classes}; ++i)",
        "        if (scores[i] > scores[best])",
        "            best = i;",
        "    return best;\n}\n",
    ])


def _header(net, name, data_bytes, ram_bytes):
    shape = tuple(net.input_shape)
    size = int(np.prod(shape))
    guard = f"{name.upper()}_H"
    encoding = net.input_encoding
    enc_doc = (
        f" * The model's input encoding ({getattr(encoding, 'kind', type(encoding).__name__)}, thresholds "
        f"{[float(t) for t in encoding.thresholds]}) is\n"
        " * applied inside: pass the values the Keras model receives, before its encoding layer.\n"
        if encoding is not None else ""
    )
    return "\n".join([
        f"/* {name}: {len(net.layers)}-layer network exported by iprune_tf.export.to_c (plain C99, no dependencies).",
        " *",
        f" * Input: {size} floats, shape {shape} in C order (row-major; images H, W, C with channels last),",
        " * exactly the values the Keras model receives (no scaling is applied here: apply the same",
        " * preprocessing as in training, e.g. pixels / 255, or the run's ZCA whitening for CIFAR-10).",
        enc_doc +
        f" * Output: {net.num_classes} scores (the Keras model's outputs); predict returns the index of the largest.",
        f" * Flash: {data_bytes} bytes of model data (static const) plus the code.",
        f" * RAM: {ram_bytes} bytes of static buffers (activations and predict's scores); stack: a few dozen words.",
        " * Not reentrant: one inference at a time.",
        " */",
        f"#ifndef {guard}", f"#define {guard}", "",
        f"#define {name.upper()}_INPUT_SIZE {size}",
        f"#define {name.upper()}_NUM_CLASSES {net.num_classes}",
        f"#define {name.upper()}_DATA_BYTES {data_bytes}",
        f"#define {name.upper()}_RAM_BYTES {ram_bytes}", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        "/* Writes the output scores into scores[NUM_CLASSES]. */",
        f"void {name}_forward(const float *input, float *scores);", "",
        "/* The predicted class: index of the largest score (the first one on ties). */",
        f"int {name}_predict(const float *input);", "",
        "#ifdef __cplusplus", "}", "#endif", "",
        f"#endif /* {guard} */", "",
    ])
