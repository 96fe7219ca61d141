"""Run an exported TFLite file in TensorFlow Lite, TFLite Micro or LCE and compare it with Keras.

TFLite Micro's arena is measured: the total its RecordingMicroAllocator reports, or, when that is
too small (int8 kernels allocate temporaries while preparing), the smallest working size, found by
:mod:`iprune_tf.export.tflm_arena` in a separate process (a much too small arena can crash TFLM).
"""
import dataclasses
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from iprune_tf.export.tflite import MODES, _lce, _require_mode, _tflm_runtime, tflite_interpreter, tflite_ops
from iprune_tf.export.tflite_common import quiet_converter

_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_TFLM_PROBE_ARENA = 8 << 20
_ALIGNMENT = 16


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
    max_abs_diff: float | None  # None for integer class scores
    arena_bytes: int | None = None
    arena_method: str | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def verify(model, tflite_bytes, x, mode=None):
    """Run ``tflite_bytes`` on inputs ``x`` in every runtime that supports it and compare with ``model.predict``.

    ``mode`` is the export mode (``"float"``, ``"int8"``, ``"lce"``); None detects it (LCE's
    custom ops mean ``"lce"``). Float, int8 and sparse models run in TensorFlow Lite (LiteRT's
    interpreter when ai-edge-litert is installed: runtime ``"litert"``, else ``"tflite"``) and TFLite Micro,
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
    outputs, interpreter_name = _run_tflite(tflite_bytes, x)
    checks = [_compare(interpreter_name, expected, outputs)]
    outputs, arena, method = _run_tflm(tflite_bytes, x)
    checks.append(_compare("tflm", expected, outputs, arena, method))
    return checks


def _compare(runtime, expected, outputs, arena_bytes=None, arena_method=None):
    """Top-1 agreement and max |diff|; no diff for integer class scores (another scale than Keras' outputs)."""
    outputs = np.asarray(outputs).reshape(expected.shape)
    agreement = float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(expected, axis=-1)))
    diff = None if outputs.dtype == np.float64 else float(np.max(np.abs(outputs - expected)))
    return RuntimeCheck(runtime, len(expected), agreement, diff, arena_bytes, arena_method)


def _quantize(x, details):
    """``x`` as the input tensor's dtype: quantized with its scale/zero point when it is integer."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero_point = _scale_zero_point(details)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, details):
    """Real outputs of ``y``; unquantized integers (int32 class scores of ``sparse_int8``) as they are."""
    if np.dtype(details["dtype"]).kind == "f" or not len(details["quantization_parameters"]["scales"]):
        return y.astype(np.float32) if np.dtype(details["dtype"]).kind == "f" else y.astype(np.float64)
    scale, zero_point = _scale_zero_point(details)
    return (y.astype(np.float32) - zero_point) * scale


def _scale_zero_point(details):
    params = details["quantization_parameters"]
    return float(params["scales"][0]), int(params["zero_points"][0])


def _run_tflite(tflite_bytes, x):
    """Outputs in LiteRT's interpreter (or tf.lite's, see ``tflite_interpreter``) and its name."""
    interpreter, name = tflite_interpreter(tflite_bytes)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    with quiet_converter("Running the TFLite model"):  # LiteRT logs its XNNPACK delegate on stderr
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], _quantize(x, inp))
        interpreter.invoke()
    return _dequantize(interpreter.get_tensor(out["index"]), out), name


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
                [sys.executable, "-m", "iprune_tf.export.tflm_arena", self.path],
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
