"""Edge export: TFLite for TensorFlow Lite Micro, larq-compute-engine models, C arrays, verification.

A pruned binary network is meant for small hardware, so export is a verified path:

1. :func:`finalize_for_tflm` turns a pruned, stripped or plain model into a plain Keras model
   with constant kernels. Pruning wrappers are stripped; every larq ``QuantDense``/``QuantConv2D``
   becomes a Keras ``Dense``/``Conv2D`` whose kernel is the layer's effective kernel (binarized
   and masked: {-1, 0, +1} times any scale). No ``SIGN`` op and no mask op remains for weights;
   TFLite Micro has no ``SIGN`` kernel.
2. Binary activations (larq input quantizers ``ste_sign``, ``approx_sign``, ``swish_sign``, all
   ``+1`` for ``x >= 0`` and ``-1`` otherwise at inference) become a :class:`BinarySign` layer,
   ``tf.where(x >= 0, 1, -1)``, which converts to ``GREATER_EQUAL`` + ``SELECT_V2``: both have
   float32 and int8 kernels in TFLite Micro. A ``QuantConv2D`` with ``padding="same"`` and
   ``pad_values != 0`` (the binary flavour pads with +1) gets an explicit
   :class:`ConstantPadding2D` (``PADV2``) followed by a ``"valid"`` convolution.
3. :func:`to_tflite` converts to float32, full-integer int8, or larq-compute-engine (LCE).
4. :func:`to_c_array` writes the ``.h``/``.cc`` pair a TFLite Micro firmware compiles in.
5. :func:`verify` runs the exported bytes in TensorFlow Lite, in TFLite Micro (float, int8) or in
   LCE's interpreter (lce) and compares them with Keras: top-1 agreement, max abs difference of
   the outputs, and the TFLM arena the model needs.
6. :func:`export_run_files` writes and checks all of that (plus the stripped ``.h5`` and the
   sparse format of :mod:`iprune_tf.sparse_format`) for a run; :func:`format_export_table` prints it.

What larq-compute-engine bit-packs (LCE 0.16, checked on this package's models)
--------------------------------------------------------------------------------
LCE replaces a convolution by its bit-packed ``LceBconv2d`` only when *both* its input and its
kernel are binary:

* ``QuantConv2D`` with a binary input quantizer and a kernel whose values are all ``±1`` (times a
  per-channel scale): bit-packed (``LceBconv2d``), including with ``pad_values=1``.
* ``QuantConv2D`` with binary inputs but a *pruned* kernel: the folded kernel is ternary
  {-1, 0, +1} and a bit has no room for 0, so LCE keeps a float32 ``CONV_2D`` between
  ``LceQuantize``/``LceDequantize``. (Leaving ``ste_sign`` on a latent kernel with zeros would
  "bit-pack" it, but as ``+1`` where the mask says 0: a different network.)
* BinaryConnect layers (binary weights, real-valued inputs) are never bit-packed; they stay
  float32 ``FULLY_CONNECTED``/``CONV_2D``.
* ``QuantDense`` is never bit-packed by LCE 0.16, even fully binary: it becomes a float32
  ``FULLY_CONNECTED`` whose binary input goes through ``LceQuantize``/``LceDequantize``.

So for the MNIST MLP, LCE produces no bit-packed layer at all and its file is about as large as
float TFLite; LCE pays off for unpruned binary convolutions (e.g. the CIFAR-10 preset's skipped
layers would not qualify either, as their inputs are real). The ``lce`` mode therefore exports
the stripped model with its binary-input larq layers kept (kernels folded to constants) so LCE
bit-packs whatever it can, and plain Keras layers elsewhere. LCE models need LCE's runtime;
TFLite Micro cannot run ``Lce*`` ops.

int8 and sizes (measured on the MNIST preset at K=8)
-----------------------------------------------------
* The converter folds each BatchNormalization into the preceding kernel and bias. In float the
  kernel is then no longer {-1, 0, +1}; in int8 each neuron's weights still share one magnitude,
  so the int8 kernel stays ternary per neuron ({-q_j, 0, q_j}) and a firmware may exploit it.
* Dense weights are quantized per tensor by default (``per_channel_dense=False``): one scale for
  the whole kernel, so neuron ``j``'s magnitude ``q_j = round(127 * a_j / max(a))`` carries the
  folded BN scale ``a_j`` with a relative error of at most ``0.5 / q_j`` (``q_j >= 25`` on the
  preset, so under 2%; top-1 agreement with Keras matched per channel within a disagreement or
  two in 1,000 over 5 seeds). Per channel (``per_channel_dense=True``) stores the BN scale exactly (``q_j = 127``)
  but adds a float32 scale and an int64 zero point per output channel, for the weights and again
  for the int32 biases: 24 bytes per neuron, 49 KB on the preset. Convolutions always stay per
  channel (per-tensor BN-folded convolution kernels are a known accuracy trap).
* Sizes on the preset: float 7,457,368 bytes; int8 per tensor 1,873,160 (25.12%); per channel
  1,922,504 (25.78%). The int8 weights are exactly a quarter of the float weights, but TFLite's
  int8 FULLY_CONNECTED needs int32 biases (the folded BN shift, 4 bytes per neuron, as in float),
  so the int8 file is ``W/4 + 4 * neurons + overhead`` against ``(W + 4 * neurons + overhead) / 4``:
  it cannot reach a quarter of the float file. Keeping BN out of the kernel does not help: the
  converter fuses a following per-channel MUL/ADD back into the FULLY_CONNECTED; even with BN
  removed altogether the int8 file is 24.996% of the float file. TFLite's sparse weight encoding
  (``Optimize.EXPERIMENTAL_SPARSITY``) shrinks the preset to ~0.33 MB, float or int8, but TFLite
  Micro ignores the sparsity metadata and computes wrong outputs, so it is not offered here; the
  sparse format of :mod:`iprune_tf.sparse_format` (40 KB) is the compact file for this model.
* int8 outputs are quantized per tensor (logit step = range / 255, 0.025-0.035 for the preset),
  so two logits closer than a step can round to the same int8 value; argmax then picks the lower
  class. Nearly all int8 disagreements with Keras are such exact ties (at most one real flip per
  1,000 inputs measured). Top-1 agreement on 1,000 Fashion-MNIST test images of a briefly
  trained preset (4,000 images, 2 epochs) is 99.4-99.9% over seeds 0-5. Training longer or with a
  gradual schedule did not reduce the ties: the fraction of inputs whose top-2 margin is below
  the step stayed 1-3% in every variant measured.
* The fully binary flavour converts and runs in int8 too, but its pre-activations are rounded
  to int8 before the sign, so values near the threshold flip (65-90% agreement measured on
  briefly trained models). For binary activations prefer float TFLite, LCE or the sparse format.

A binarized activation that is *exactly* zero may binarize differently across runtimes (larq
maps 0 to +1; a reordered float sum can land on -0.0 or a tiny negative); on trained models
this is rare, and :func:`verify` measures it.
"""
import dataclasses
import os
import re
import subprocess
import sys
import tempfile

import larq as lq
import numpy as np

from iprune_tf import sparse_format
from iprune_tf._keras import keras, tf
from iprune_tf.inspect import effective_kernel
from iprune_tf.layers import is_kernel, require_keras2
from iprune_tf.prune import prune_scope, strip_pruning
from iprune_tf.sparse_format import has_sign_input
from iprune_tf.wrapper import PruneFanIn

MODES = ("float", "int8", "lce")
TFLM_MODES = ("float", "int8")
FILE_MODES = ("h5", *MODES, "sparse")

_LARQ_TO_KERAS = {lq.layers.QuantDense: keras.layers.Dense, lq.layers.QuantConv2D: keras.layers.Conv2D}
_LARQ_ONLY_KEYS = ("input_quantizer", "kernel_quantizer", "metrics", "pad_values")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_TFLM_PROBE_ARENA = 8 << 20
_ALIGNMENT = 16
_PER_TENSOR_DENSE_FLAG = "_experimental_disable_per_channel_quantization_for_dense_layers"


@keras.utils.register_keras_serializable(package="iprune_tf")
class BinarySign(keras.layers.Layer):
    """larq's inference-time sign of activations, ``+1`` for ``x >= 0`` else ``-1``, in TFLM-supported ops.

    Converts to ``GREATER_EQUAL`` + ``SELECT_V2`` (no ``SIGN``, which TFLite Micro lacks).
    """

    def call(self, inputs):
        one = tf.constant(1.0, inputs.dtype)
        return tf.where(inputs >= 0, one, -one)


@keras.utils.register_keras_serializable(package="iprune_tf")
class ConstantPadding2D(keras.layers.Layer):
    """Pad the spatial axes of an NHWC tensor with a constant (``PADV2``); larq pads binary convs with +1."""

    def __init__(self, padding, value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.value = float(value)

    def call(self, inputs):
        return tf.pad(inputs, [[0, 0], *self.padding, [0, 0]], constant_values=self.value)

    def compute_output_shape(self, input_shape):
        shape = list(tf.TensorShape(input_shape).as_list())
        for axis, (before, after) in enumerate(self.padding, start=1):
            if shape[axis] is not None:
                shape[axis] += before + after
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def custom_objects():
    """The layer classes a finalized model may contain, for ``keras.models.load_model``."""
    return {"BinarySign": BinarySign, "ConstantPadding2D": ConstantPadding2D}


# --------------------------------------------------------------------------- finalization


def finalize_for_tflm(model):
    """A plain Keras model computing what ``model`` does, with constant kernels and TFLM-friendly ops.

    ``model`` may be pruned (``PruneFanIn`` wrappers), stripped or never pruned. Returns a new
    model; ``model`` is not modified. Raises ValueError naming the first layer that cannot be
    exported (larq layers other than QuantDense/QuantConv2D, non-sign input quantizers, custom
    layers).
    """
    return _finalize(model, keep_binary_input_larq=False)


def finalize_for_lce(model):
    """Like :func:`finalize_for_tflm`, but larq layers with binary inputs stay larq layers (folded kernel).

    That is what ``larq_compute_engine.convert_keras_model`` needs to recognize binary layers.
    """
    return _finalize(model, keep_binary_input_larq=True)


def _finalize(model, keep_binary_input_larq):
    require_keras2(model, "The model to export")
    if not isinstance(model, keras.Model):
        raise TypeError(f"The model to export must be a Keras Model, got {type(model).__name__}.")
    if any(isinstance(layer, PruneFanIn) for layer in model.layers):
        model = strip_pruning(model)
    weights = {}

    def convert(layer):
        replacement = _convert_layer(layer, keep_binary_input_larq)
        for new, values in replacement:
            weights[id(new)] = (new, values)
        return [new for new, _ in replacement]

    if isinstance(model, keras.Sequential):
        layers = [new for layer in model.layers for new in convert(layer)]
        finalized = keras.Sequential([keras.Input(batch_shape=model.input_shape), *layers], name=model.name)
    elif getattr(model, "_is_graph_network", False):
        finalized = keras.models.clone_model(model, clone_function=lambda layer: _as_one_layer(layer, convert(layer)))
    else:
        raise ValueError(f"Model '{model.name}' is a subclassed model; only Sequential and functional models can be exported.")
    for new, values in weights.values():
        new.set_weights(values)
    return finalized


def _as_one_layer(layer, replacement):
    if len(replacement) == 1:
        return replacement[0]
    return keras.Sequential(replacement, name=f"{layer.name}_block")


def _convert_layer(layer, keep_binary_input_larq):
    """``[(new_layer, weights), ...]`` replacing ``layer`` (unbuilt layers; set weights once built)."""
    if type(layer) in _LARQ_TO_KERAS:
        return _convert_larq(layer, keep_binary_input_larq)
    if isinstance(layer, keras.Model):
        raise ValueError(f"Layer '{layer.name}' is a nested model; flatten it into the outer model before export.")
    module = type(layer).__module__
    if module.startswith("tf_keras.") or type(layer) in (BinarySign, ConstantPadding2D):
        return [(layer.__class__.from_config(layer.get_config()), layer.get_weights())]
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be exported: export supports Keras built-in "
        f"layers and larq QuantDense/QuantConv2D."
    )


def _convert_larq(layer, keep_binary_input_larq):
    binary_input = has_sign_input(layer)
    values = [effective_kernel(layer) if is_kernel(w) else w.numpy() for w in layer.weights]
    config = layer.get_config()
    config["kernel_constraint"] = None
    if keep_binary_input_larq and binary_input:
        config["kernel_quantizer"] = None
        return [(type(layer).from_config(config), values)]
    blocks = [(BinarySign(name=f"{layer.name}_sign"), [])] if binary_input else []
    pad_values = float(config.get("pad_values", 0.0))
    if config.get("padding") == "same" and pad_values != 0.0:
        blocks.append((ConstantPadding2D(_same_padding(layer), pad_values, name=f"{layer.name}_pad"), []))
        config["padding"] = "valid"
    for key in _LARQ_ONLY_KEYS:
        config.pop(key, None)
    return blocks + [(_LARQ_TO_KERAS[type(layer)].from_config(config), values)]


def _same_padding(layer):
    """larq's ``(before, after)`` padding per spatial axis for ``padding="same"`` with ``pad_values``."""
    if layer.data_format != "channels_last":
        raise ValueError(f"Layer '{layer.name}' uses {layer.data_format}; export needs channels_last (NHWC) convolutions.")
    return layer._get_spatial_padding_same(layer.input_shape[1:-1])


# --------------------------------------------------------------------------- conversion


def to_tflite(model, mode="float", representative_data=None, int8_io=False, per_channel_dense=False):
    """Convert ``model`` (pruned, stripped or plain) to a TFLite flatbuffer; returns its bytes.

    Args:
      model: a Keras 2 Sequential or functional model.
      mode: ``"float"`` (float32), ``"int8"`` (full-integer quantization; runs in TFLite Micro)
        or ``"lce"`` (larq-compute-engine; needs LCE's runtime, see the module docstring).
      representative_data: for ``"int8"``, an array of model inputs ``(N, *input_shape)`` from the
        user's data (a few hundred samples) used to calibrate activation ranges.
      int8_io: for ``"int8"``, make the model's input and output tensors int8 too (else float32,
        with QUANTIZE/DEQUANTIZE at the ends).
      per_channel_dense: for ``"int8"``, quantize dense (FULLY_CONNECTED) kernels per output
        channel instead of per tensor: exact BN scales, but 24 more bytes per neuron (see
        "int8 and sizes" in the module docstring). Convolutions are always per channel.
    """
    _require_mode(mode, MODES)
    if mode == "lce":
        return _lce().convert_keras_model(finalize_for_lce(model))
    converter = tf.lite.TFLiteConverter.from_keras_model(finalize_for_tflm(model))
    if mode == "int8":
        samples = _representative_samples(representative_data, model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        _set_per_channel_dense(converter, per_channel_dense)
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def _set_per_channel_dense(converter, per_channel_dense):
    """Set the converter's experimental switch between per-tensor and per-channel dense kernels."""
    if not hasattr(converter, _PER_TENSOR_DENSE_FLAG):
        raise RuntimeError(
            f"This TensorFlow ({tf.__version__}) has no TFLiteConverter.{_PER_TENSOR_DENSE_FLAG}; "
            "iprune_tf's int8 export needs a TensorFlow whose converter has it (2.21 has)."
        )
    setattr(converter, _PER_TENSOR_DENSE_FLAG, not per_channel_dense)


def _require_mode(mode, allowed):
    if mode not in allowed:
        raise ValueError(f"Unknown export mode {mode!r}; choose one of {allowed}.")


def _representative_samples(data, model):
    if data is None:
        raise ValueError(
            "mode='int8' needs representative_data: an array of a few hundred real model inputs to calibrate "
            "the int8 activation ranges."
        )
    samples = np.asarray(data, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if samples.ndim != len(expected) + 1 or samples.shape[0] == 0 or samples.shape[1:] != expected:
        raise ValueError(
            f"representative_data must have shape (N, {', '.join(map(str, expected))}) with N >= 1, got {samples.shape}."
        )
    return samples


def _lce():
    try:
        import larq_compute_engine
    except ImportError as error:
        raise ImportError(
            "mode='lce' needs larq-compute-engine: pip install 'iprune_tf[export]' (larq-compute-engine>=0.16)."
        ) from error
    return larq_compute_engine


def _tflm_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as error:
        raise ImportError("Verifying in TFLite Micro needs the tflite-micro package: pip install 'iprune_tf[export]'.") from error
    return runtime


def tflite_ops(tflite_bytes):
    """Sorted names of the operators in a TFLite flatbuffer (custom ops by their custom name)."""
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


# --------------------------------------------------------------------------- C arrays

_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_C_KEYWORDS = frozenset(
    "alignas alignof auto bool break case char class const constexpr continue default delete do double else "
    "enum extern false float for goto if inline int long namespace new nullptr private protected public "
    "register return short signed sizeof static struct switch template this true typedef union unsigned "
    "using virtual void volatile while".split()
)


def to_c_array(tflite_bytes, name, out_dir=None, overwrite=False):
    """The TFLite model as a C/C++ array for a TFLite Micro firmware: returns ``(header_text, source_text)``.

    The source defines ``alignas(16) const unsigned char name[]`` (TFLM reads the flatbuffer in
    place, which needs 16-byte alignment) and ``const unsigned int name_len``; the header declares
    both behind an include guard. With ``out_dir``, also writes ``name.h`` and ``name.cc`` there,
    refusing to replace existing files unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not _C_IDENTIFIER.match(name) or name in _C_KEYWORDS:
        raise ValueError(f"C array name {name!r} is not a valid C identifier (letters, digits, '_', not a keyword).")
    data = bytes(tflite_bytes)
    if not data:
        raise ValueError("tflite_bytes is empty.")
    guard = f"{name.upper()}_H_"
    header = (
        f"// TFLite model '{name}' ({len(data)} bytes), generated by iprune_tf.export.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {name}[];\nextern const unsigned int {name}_len;\n\n"
        f"#endif  // {guard}\n"
    )
    rows = ",\n".join(
        "  " + ", ".join(f"0x{byte:02x}" for byte in data[start : start + 12]) for start in range(0, len(data), 12)
    )
    source = (
        f'// TFLite model \'{name}\', generated by iprune_tf.export.\n#include "{name}.h"\n\n'
        f"alignas(16) const unsigned char {name}[] = {{\n{rows}\n}};\n"
        f"const unsigned int {name}_len = {len(data)};\n"
    )
    if out_dir is not None:
        paths = [os.path.join(out_dir, f"{name}{ext}") for ext in (".h", ".cc")]
        for path in paths:
            _refuse_overwrite(path, overwrite)
        os.makedirs(out_dir, exist_ok=True)
        for path, text in zip(paths, (header, source)):
            with open(path, "w", encoding="ascii") as f:
                f.write(text)
    return header, source


def _refuse_overwrite(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")


# --------------------------------------------------------------------------- verification


@dataclasses.dataclass
class RuntimeCheck:
    """How one runtime's outputs compare with Keras on the same inputs.

    ``arena_bytes`` is the TFLite Micro tensor arena the model needs (None for other runtimes),
    and every input was run in an interpreter given exactly that arena. ``arena_method`` says how
    it was found: ``"recorded"`` (the total TFLM's ``RecordingMicroAllocator`` reports, which
    suffices) or ``"searched"`` (that total was too small, as for int8 models, so the smallest
    working size was searched to 16 bytes).
    """

    runtime: str
    samples: int
    agreement: float
    max_abs_diff: float
    arena_bytes: int | None = None
    arena_method: str | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def verify(model, tflite_bytes, x, mode=None):
    """Run ``tflite_bytes`` on inputs ``x`` in every runtime that supports it and compare with ``model.predict``.

    ``mode`` is the export mode (``"float"``, ``"int8"``, ``"lce"``); None detects it (LCE's
    custom ops mean ``"lce"``). Float and int8 models run in TensorFlow Lite and TFLite Micro,
    LCE models in larq-compute-engine's interpreter. int8 inputs are quantized and int8 outputs
    dequantized with the tensors' scale and zero point. Returns a list of :class:`RuntimeCheck`.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("verify needs a non-empty batch of inputs x.")
    if mode is None:
        mode = "lce" if any(op.startswith("Lce") for op in tflite_ops(tflite_bytes)) else "float"
    _require_mode(mode, MODES)
    expected = model.predict(x, batch_size=256, verbose=0)
    if mode == "lce":
        outputs = _lce().testing.Interpreter(tflite_bytes).predict(x)
        return [_compare("lce", expected, outputs)]
    checks = [_compare("tflite", expected, _run_tflite(tflite_bytes, x))]
    outputs, arena, method = _run_tflm(tflite_bytes, x)
    checks.append(_compare("tflm", expected, outputs, arena, method))
    return checks


def _compare(runtime, expected, outputs, arena_bytes=None, arena_method=None):
    outputs = np.asarray(outputs, dtype=np.float32).reshape(expected.shape)
    agreement = float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(expected, axis=-1)))
    return RuntimeCheck(runtime, len(expected), agreement, float(np.max(np.abs(outputs - expected))), arena_bytes, arena_method)


def _quantize(x, details):
    """``x`` as the input tensor's dtype: quantized with its scale/zero point when it is integer."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero_point = _scale_zero_point(details)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, details):
    if np.dtype(details["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero_point = _scale_zero_point(details)
    return (y.astype(np.float32) - zero_point) * scale


def _scale_zero_point(details):
    params = details["quantization_parameters"]
    return float(params["scales"][0]), int(params["zero_points"][0])


def _run_tflite(tflite_bytes, x):
    interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], _quantize(x, inp))
    interpreter.invoke()
    return _dequantize(interpreter.get_tensor(out["index"]), out)


def _run_tflm(tflite_bytes, x):
    """Outputs of every sample in TFLite Micro, the arena bytes it needs and how they were found."""
    runtime = _tflm_runtime()
    probe_arena = max(_TFLM_PROBE_ARENA, 2 * len(tflite_bytes))
    try:
        probe = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=probe_arena)
    except RuntimeError as error:
        raise RuntimeError(
            f"TFLite Micro cannot run this model (ops: {', '.join(tflite_ops(tflite_bytes))}); see the TFLM log above."
        ) from error
    _tflm_invoke(probe, x[:1])
    arena, method = _needed_arena(tflite_bytes, _recorded_arena(probe), probe_arena)
    interpreter = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=arena)
    return np.concatenate([_tflm_invoke(interpreter, sample[None]) for sample in x]), arena, method


def _tflm_invoke(interpreter, sample):
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    interpreter.set_input(_quantize(sample.reshape(inp["shape"]), inp), 0)
    interpreter.invoke()
    return _dequantize(interpreter.get_output(0), out)


def _recorded_arena(interpreter):
    """The arena total TFLM's RecordingMicroAllocator prints (to the C stderr), or None if absent."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        match = _ARENA_TOTAL.search(capture.read().decode(errors="replace"))
    return int(match.group(1)) if match else None


def _needed_arena(tflite_bytes, recorded, known_good):
    """The smallest arena (to TFLM's 16-byte alignment) that runs the model, and how it was found.

    TFLM's python API has no "arena used" getter; its RecordingMicroAllocator prints a total,
    which suffices for float models but can miss the temporary allocations int8 kernels make while
    preparing. So the recorded total is tried first ("recorded"); if it is too small, the smallest
    working size above it is searched ("searched"). Trials run in a separate Python process,
    because TFLM can crash the process when an arena is much too small.
    """
    with tempfile.TemporaryDirectory() as tmp, _ArenaProbe(tflite_bytes, tmp) as works:
        if recorded is not None and works(recorded):
            return recorded, "recorded"
        low = recorded or 0
        step = max(_ALIGNMENT, _round_up(low // 8))
        high = min(_round_up(low + step), known_good)
        while high < known_good and not works(high):
            low, step = high, 2 * step
            high = min(_round_up(low + step), known_good)
        while high - low > _ALIGNMENT:
            middle = _round_up((low + high) // 2)
            if middle >= high:
                break
            low, high = (low, middle) if works(middle) else (middle, high)
        return high, "searched"


def _round_up(size):
    return -(-size // _ALIGNMENT) * _ALIGNMENT


_PROBE_WORKER = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
with open(sys.argv[1], "rb") as f:
    data = f.read()
for line in sys.stdin:
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(line))
        details = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
        interpreter.invoke()
        print("ok", flush=True)
    except RuntimeError:
        print("fail", flush=True)
"""


class _ArenaProbe:
    """``works(arena_size)``: does TFLM run the model with that arena? Asked of a worker process.

    The worker answers one size per line; if TFLM crashes it, the size counts as too small and
    the next question starts a new worker.
    """

    def __init__(self, tflite_bytes, tmp_dir):
        self.path = os.path.join(tmp_dir, "model.tflite")
        with open(self.path, "wb") as f:
            f.write(tflite_bytes)
        self.worker = None

    def __enter__(self):
        return self.works

    def __exit__(self, *exc_info):
        self._stop()

    def works(self, arena_size):
        if self.worker is None:
            self.worker = subprocess.Popen(
                [sys.executable, "-c", _PROBE_WORKER, self.path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        try:
            self.worker.stdin.write(f"{arena_size}\n")
            self.worker.stdin.flush()
            answer = self.worker.stdout.readline().strip()
        except BrokenPipeError:
            answer = ""
        if answer not in ("ok", "fail"):
            self._stop()
        return answer == "ok"

    def _stop(self):
        if self.worker is None:
            return
        try:
            self.worker.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
        self.worker.stdout.close()
        self.worker = None


# --------------------------------------------------------------------------- run files


@dataclasses.dataclass
class ExportRow:
    """One exported file checked in one runtime (a file checked in two runtimes gives two rows).

    ``bytes`` is the file size; ``payload_bytes`` is, for the sparse format, the exact size of its
    stored content (what the paper's memory counts), None for other files.
    """

    mode: str
    file: str
    bytes: int
    runtime: str
    agreement: float
    max_abs_diff: float
    arena_bytes: int | None = None
    payload_bytes: int | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def export_run_files(
    model, out_dir, name, modes, representative_x, verify_x, c_array=False, overwrite=False, int8_io=False
):
    """Export ``model`` in each of ``modes`` to ``out_dir``, verify each file, return :class:`ExportRow` rows.

    Modes (:data:`FILE_MODES`): ``"h5"`` (the stripped Keras model, ``{name}.h5``, reloaded and
    compared), ``"float"``/``"int8"``/``"lce"`` (``{name}_{mode}.tflite``, see :func:`to_tflite`
    and :func:`verify`), ``"sparse"`` (``{name}_sparse.npz``, :mod:`iprune_tf.sparse_format`, run
    by its numpy inference). With ``c_array``, the TFLM modes (float, int8) also get the
    ``{name}_{mode}.h/.cc`` pair. Every file is built in memory and every target path checked
    before anything is written; existing files are never replaced unless ``overwrite=True``.
    ``representative_x`` calibrates int8; ``verify_x`` are the inputs compared against Keras.
    """
    modes = list(dict.fromkeys([modes] if isinstance(modes, str) else modes))
    if not modes:
        raise ValueError(f"No export mode given; choose from {FILE_MODES}.")
    for mode in modes:
        _require_mode(mode, FILE_MODES)
    if c_array and not _C_IDENTIFIER.match(f"{name}_float"):
        raise ValueError(f"Export name {name!r} must make a valid C identifier for c_array.")
    planned = {mode: _planned_paths(out_dir, name, mode, c_array) for mode in modes}
    for path in (p for paths in planned.values() for p in paths):
        _refuse_overwrite(path, overwrite)
    built = {mode: _build(model, mode, representative_x, int8_io) for mode in modes}
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for mode in modes:
        path = planned[mode][0]
        _write(built[mode], mode, path)
        if c_array and mode in TFLM_MODES:
            to_c_array(built[mode], f"{name}_{mode}", out_dir, overwrite=overwrite)
        rows += _check_file(model, built[mode], mode, path, verify_x)
    return rows


def _build(model, mode, representative_x, int8_io):
    if mode == "h5":
        return strip_pruning(model) if any(isinstance(layer, PruneFanIn) for layer in model.layers) else model
    if mode == "sparse":
        return sparse_format.from_keras(model)
    return to_tflite(model, mode, representative_data=representative_x, int8_io=int8_io)


def _write(artifact, mode, path):
    if mode == "h5":
        artifact.save(path, overwrite=True)  # the caller already refused existing files
    elif mode == "sparse":
        sparse_format.save_sparse(artifact, path, overwrite=True)
    else:
        with open(path, "wb") as f:
            f.write(artifact)


def _check_file(model, artifact, mode, path, x):
    size = os.path.getsize(path)
    if mode in MODES:
        return [
            ExportRow(mode, path, size, c.runtime, c.agreement, c.max_abs_diff, c.arena_bytes)
            for c in verify(model, artifact, x, mode=mode)
        ]
    x = np.asarray(x, dtype=np.float32)
    expected = model.predict(x, batch_size=256, verbose=0)
    if mode == "h5":
        with prune_scope():
            reloaded = keras.models.load_model(path, compile=False)
        check = _compare("keras", expected, reloaded.predict(x, batch_size=256, verbose=0))
        return [ExportRow(mode, path, size, check.runtime, check.agreement, check.max_abs_diff)]
    check = _compare("numpy", expected, sparse_format.load_sparse(path).predict(x))
    return [ExportRow(mode, path, size, check.runtime, check.agreement, check.max_abs_diff, None, artifact.payload_bytes())]


def _planned_paths(out_dir, name, mode, c_array):
    stem = os.path.join(out_dir, name if mode == "h5" else f"{name}_{mode}")
    extension = {"h5": ".h5", "sparse": ".npz"}.get(mode, ".tflite")
    extras = [f"{stem}.h", f"{stem}.cc"] if c_array and mode in TFLM_MODES else []
    return [stem + extension, *extras]


def format_export_table(rows):
    """A fixed-width text table of :func:`export_run_files` rows."""
    header = (
        f"{'mode':<8}{'file':<30}{'bytes':>11}{'payload':>10}{'runtime':>9}"
        f"{'top-1 agree':>13}{'max |diff|':>12}{'arena':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        arena = "-" if row.arena_bytes is None else str(row.arena_bytes)
        payload = "-" if row.payload_bytes is None else str(row.payload_bytes)
        lines.append(
            f"{row.mode:<8}{os.path.basename(row.file):<30}{row.bytes:>11}{payload:>10}{row.runtime:>9}"
            f"{row.agreement:>12.2%} {row.max_abs_diff:>11.3g} {arena:>8}"
        )
    return "\n".join(lines)
