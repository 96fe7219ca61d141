"""TFLite conversion: float32, full-integer int8 and larq-compute-engine (see bench/README.md for sizes).

int8 dense kernels are quantized per tensor by default (``per_channel_dense=False``): each neuron
of a BN-folded binary kernel keeps one magnitude, and per-channel scales would add 24 bytes per
neuron. Convolutions stay per channel. LCE bit-packs only convolutions whose input and kernel are
both ±1 (never a pruned, ternary kernel, never ``QuantDense`` in LCE 0.16); LCE models need LCE's
runtime, not TFLite Micro.
"""

from iprune_tf._keras import tf
from iprune_tf.export.finalize import finalize_for_lce, finalize_for_tflm
from iprune_tf.export.tflite_common import quiet_converter, representative_samples
from iprune_tf.export.tflite_sparse import SPARSE_MODES, to_sparse_tflite
from iprune_tf.workflow.lut_table import LutTable

MODES = ("float", "int8", "lce", *SPARSE_MODES)
"""The modes of :func:`to_tflite`: dense float32, full-integer int8, larq-compute-engine, and the sparse ones."""
_PER_TENSOR_DENSE_FLAG = "_experimental_disable_per_channel_quantization_for_dense_layers"


def to_tflite(model, mode="float", representative_data=None, int8_io=False, per_channel_dense=False):
    """Convert ``model`` (pruned, stripped or plain) to a TFLite flatbuffer; returns its bytes.

    Args:
      model: a Keras 2 Sequential or functional model.
      mode: ``"float"`` (float32), ``"int8"`` (full-integer quantization; runs in TFLite Micro),
        ``"lce"`` (larq-compute-engine; needs LCE's runtime, see the module docstring), or
        ``"sparse"``/``"sparse_int8"``: pruned layers as GATHER/SUM chains that shrink with pruning
        (:mod:`iprune_tf.export.tflite_sparse`; runs in TFLite Micro).
      representative_data: for ``"int8"``, an array of model inputs ``(N, *input_shape)`` from the
        user's data (a few hundred samples) used to calibrate activation ranges.
      int8_io: for ``"int8"``, make the model's input and output tensors int8 too (else float32,
        with QUANTIZE/DEQUANTIZE at the ends).
      per_channel_dense: for ``"int8"``, quantize dense (FULLY_CONNECTED) kernels per output
        channel instead of per tensor: exact BN scales, but 24 more bytes per neuron (see
        "int8 and sizes" in the module docstring). Convolutions are always per channel.
    """
    _require_mode(mode, MODES)
    _refuse_tables(model)
    if mode in SPARSE_MODES:
        return to_sparse_tflite(model, mode, representative_data, int8_io)
    if mode == "lce":
        return _lce().convert_keras_model(finalize_for_lce(model))
    converter = tf.lite.TFLiteConverter.from_keras_model(finalize_for_tflm(model))
    if mode == "int8":
        samples = representative_samples(representative_data, tuple(model.input_shape[1:]), "int8")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        _set_per_channel_dense(converter, per_channel_dense)
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with quiet_converter():
        return converter.convert()


def _refuse_tables(model):
    """ValueError for truth-table neurons: no TFLite (Micro) kernel reads a bit of a per-neuron table."""
    tables = [layer.name for layer in model.layers if isinstance(layer, LutTable)]
    if tables:
        raise ValueError(f"Layers {tables} are truth-table neurons (LutTable): each reads a bit of its own table at the "
                         "address of its K input bits, which no TFLite or TFLite Micro op does. Export the model with "
                         "to_c (mode 'c') or to_verilog instead.")


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


def tflite_interpreter(tflite_bytes, num_threads=None):
    """``(interpreter, name)``: LiteRT's interpreter (``"litert"``, ai-edge-litert) when installed, else
    ``tf.lite.Interpreter`` (``"tflite"``, deprecated in favour of LiteRT; its warning is silenced)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        name = "litert"
    except ImportError:
        Interpreter, name = tf.lite.Interpreter, "tflite"
    with quiet_converter("Loading the TFLite model"):
        return Interpreter(model_content=tflite_bytes, num_threads=num_threads), name


def tflite_ops(tflite_bytes):
    """Sorted names of the operators in a TFLite flatbuffer (custom ops by their custom name)."""
    interpreter, _ = tflite_interpreter(tflite_bytes)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})

