"""A compact file format for pruned MLPs on LUT accelerators, its loader and a pure-numpy reference inference.

After pruning, every neuron of a binary layer is a function of K inputs: K input indices, K sign
bits, and its batch-norm folded into one threshold-like affine map. That is what a LUT
accelerator needs and what the paper's memory gain counts; this module stores exactly that and
nothing else, and :meth:`SparseModel.predict` recomputes the Keras model's outputs from it.

Supported models: Sequential (pruned, stripped or plain) of ``Flatten`` (before the first dense
layer), ``Dense``/``QuantDense`` (pruned or not, binary or float kernels, any bias),
``BatchNormalization``, ``Activation("relu" | "linear")``/``ReLU()``, and larq sign input
quantizers (``ste_sign``, ``approx_sign``, ``swish_sign``: ``+1`` for ``x >= 0`` else ``-1``).
Convolutions are not supported (ValueError naming the layer).

Each dense layer is stored as one *stored layer*, computing, per neuron ``j``::

    x   = sign(x) if binary_input else x               # +1 for x >= 0, else -1
    z_j = sum_k sign_jk * x[index_jk]   (sparse)        # K inputs per neuron
        | sum_i sign_ji * x[i]          (binary)        # all inputs, +-1 weights
        | sum_i kernel_ij * x[i]        (float)         # anything else
    y_j = scale_j * z_j + offset_j                      # bias, kernel scale and BN folded
    y_j = max(y_j, 0) if activation == "relu"

The kernel kind is chosen from the effective (quantized, masked) kernel: ``sparse`` when every
neuron has the same number K < fan_in of non-zeros, all of one magnitude per neuron; ``binary``
when no weight is zero and each neuron's weights share one magnitude; ``float`` otherwise (e.g.
full precision). A per-neuron weight magnitude other than 1 (a kernel scale) is folded into
``scale``. Bias and ``BatchNormalization`` (``gamma / sqrt(var + eps)``, ``beta - mean * a``) are
folded into ``scale``/``offset`` as float32; the pair is omitted when it is the identity.

File layout (an uncompressed ``.npz``; every array is read with ``allow_pickle=False``)
----------------------------------------------------------------------------------------
* ``header``: a 0-d unicode array holding JSON::

      {"format": "iprune_tf.sparse", "version": 1, "input_shape": [28, 28],
       "layers": [{"name": "dense_1", "kind": "sparse", "fan_in": 784, "units": 1024, "k": 8,
                   "index_bits": 10, "binary_input": false, "activation": "relu",
                   "affine": true}, ...]}

* for stored layer ``i`` (``L{i}_`` prefix), depending on its kind:

  - ``L{i}_indices`` (sparse): uint8, ``np.packbits`` of the ``units * k`` input indices, neuron
    by neuron, each in ascending order, each written as ``index_bits = ceil(log2(fan_in))``
    bits, most significant bit first.
  - ``L{i}_signs`` (sparse, binary): uint8, ``np.packbits`` of one bit per kept weight
    (1 = +1, 0 = -1), neuron by neuron: ``units * k`` bits (sparse, in the order of the
    indices) or ``units * fan_in`` bits (binary).
  - ``L{i}_kernel`` (float): float32 ``(fan_in, units)``.
  - ``L{i}_scale``, ``L{i}_offset`` (when ``affine``): float32 ``(units,)``.

The *payload* (:meth:`SparseModel.payload_bits`) is the exact number of bits of that content:
``units * k * (index_bits + 1)`` per sparse layer, ``units * fan_in`` per binary layer,
``32 * fan_in * units`` per float layer, plus ``64 * units`` per affine pair. The file adds the
npz/zip headers, the JSON header and the padding of each packed array to whole bytes.
"""
import dataclasses
import json
import math
import os
import zipfile

import larq as lq
import numpy as np

from iprune_tf._keras import keras
from iprune_tf.inspect import effective_kernel
from iprune_tf.layers import require_keras2
from iprune_tf.prune import strip_pruning
from iprune_tf.wrapper import PruneFanIn

FORMAT = "iprune_tf.sparse"
VERSION = 1
KINDS = ("sparse", "binary", "float")
ACTIVATIONS = ("linear", "relu")
_DENSE_TYPES = (keras.layers.Dense, lq.layers.QuantDense)
_SUPPORTED = "Flatten, Dense/QuantDense, BatchNormalization, Activation relu/linear"
_PREDICT_CHUNK = 256
_SIGN_QUANTIZERS = (lq.quantizers.SteSign, lq.quantizers.ApproxSign, lq.quantizers.SwishSign)
_SIGN_FUNCTIONS = (lq.quantizers.ste_sign, lq.quantizers.approx_sign, lq.quantizers.swish_sign, lq.math.sign)


class SparseFormatError(ValueError):
    """A sparse-format file is corrupt, incomplete, of another format or of another version."""


@dataclasses.dataclass
class SparseLayer:
    """One stored dense layer (see the module docstring for what each field means)."""

    name: str
    kind: str
    fan_in: int
    units: int
    binary_input: bool = False
    activation: str = "linear"
    indices: np.ndarray | None = None  # sparse: (units, k) int
    signs: np.ndarray | None = None  # sparse: (units, k), binary: (units, fan_in); int8 +-1
    kernel: np.ndarray | None = None  # float: (fan_in, units) float32
    scale: np.ndarray | None = None  # (units,) float32, with offset; None = identity
    offset: np.ndarray | None = None

    @property
    def k(self):
        """Inputs per neuron: K for sparse layers, the fan-in otherwise."""
        return self.indices.shape[1] if self.kind == "sparse" else self.fan_in

    @property
    def index_bits(self):
        """Bits per stored input index: ``ceil(log2(fan_in))``, at least 1."""
        return max(1, (self.fan_in - 1).bit_length())

    def payload_bits(self):
        """Exact bits of this layer's stored content: signs, indices, float kernel, scale/offset."""
        weights = {
            "sparse": self.units * self.k * (self.index_bits + 1),
            "binary": self.units * self.fan_in,
            "float": 32 * self.fan_in * self.units,
        }[self.kind]
        return weights + (64 * self.units if self.scale is not None else 0)

    def forward(self, x):
        if self.binary_input:
            x = np.where(x >= 0, np.float32(1), np.float32(-1))
        if self.kind == "sparse":
            z = np.einsum("nuk,uk->nu", x[:, self.indices], self.signs.astype(np.float32))
        elif self.kind == "binary":
            z = x @ self.signs.T.astype(np.float32)
        else:
            z = x @ self.kernel
        if self.scale is not None:
            z = z * self.scale + self.offset
        return np.maximum(z, np.float32(0)) if self.activation == "relu" else z


@dataclasses.dataclass
class SparseModel:
    """A model in the sparse format: the input shape and the stored layers, in order."""

    input_shape: tuple
    layers: list

    def predict(self, x):
        """Outputs (float32) of the model for a batch ``x`` of shape ``(N, *input_shape)``, in numpy."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"Expected inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}.")
        flat = x.reshape(len(x), -1)
        chunks = [self._forward(flat[start : start + _PREDICT_CHUNK]) for start in range(0, len(flat), _PREDICT_CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.layers[-1].units), np.float32)

    def _forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def payload_bits(self):
        """Exact number of bits of the stored content (signs + index bits + kernels + BN params)."""
        return sum(layer.payload_bits() for layer in self.layers)

    def payload_bytes(self):
        """:meth:`payload_bits` in bytes (rounded up): the memory the paper's gain counts."""
        return math.ceil(self.payload_bits() / 8)

    def size_table(self):
        """Per-layer rows: name, kind, fan-in, units, K, index bits, payload bits."""
        return [
            {"name": l.name, "kind": l.kind, "fan_in": l.fan_in, "units": l.units, "k": l.k,
             "index_bits": l.index_bits if l.kind == "sparse" else 0, "payload_bits": l.payload_bits()}
            for l in self.layers
        ]


# --------------------------------------------------------------------------- from Keras


def has_sign_input(layer):
    """True if larq ``layer`` binarizes its input with a sign (+1 for x >= 0, else -1).

    Raises ValueError naming the layer for any other input quantizer, which neither the sparse
    format nor the TFLite export can express.
    """
    quantizer = getattr(layer, "input_quantizer", None)
    if quantizer is None:
        return False
    if isinstance(quantizer, _SIGN_QUANTIZERS) or quantizer in _SIGN_FUNCTIONS:
        return True
    name = getattr(quantizer, "__name__", type(quantizer).__name__)
    raise ValueError(
        f"Layer '{layer.name}' has input quantizer {name}, which iprune_tf cannot export; "
        "supported: none, ste_sign, approx_sign, swish_sign."
    )


def from_keras(model):
    """The :class:`SparseModel` of a Sequential Keras 2 MLP (pruned, stripped or plain)."""
    require_keras2(model, "The model to store")
    if not isinstance(model, keras.Sequential):
        raise ValueError(f"The sparse format supports Sequential MLPs; '{model.name}' is a {type(model).__name__}.")
    if any(isinstance(layer, PruneFanIn) for layer in model.layers):
        model = strip_pruning(model)
    layers = []
    for layer in model.layers:
        _add_layer(layers, layer)
    if not layers:
        raise ValueError(f"Model '{model.name}' has no Dense/QuantDense layer to store.")
    for layer in layers:
        if np.all(layer.scale == 1) and np.all(layer.offset == 0):
            layer.scale = layer.offset = None
    return SparseModel(tuple(int(d) for d in model.input_shape[1:]), layers)


def _add_layer(layers, layer):
    if type(layer) in _DENSE_TYPES:
        layers.append(_dense_layer(layer))
    elif isinstance(layer, keras.layers.InputLayer):
        return
    elif type(layer) is keras.layers.Flatten:
        if layers:
            raise _unsupported(layer, "Flatten is only supported before the first dense layer")
    elif type(layer) is keras.layers.BatchNormalization:
        _fold_batch_norm(_current(layers, layer), layer)
    elif type(layer) in (keras.layers.Activation, keras.layers.ReLU):
        _set_activation(_current(layers, layer), layer)
    else:
        raise _unsupported(layer, "this layer type is not supported" + (
            "; convolutions are not implemented" if "Conv" in type(layer).__name__ else ""))


def _unsupported(layer, reason):
    return ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}): the sparse format supports MLPs ({_SUPPORTED}); {reason}."
    )


def _current(layers, layer):
    if not layers:
        raise _unsupported(layer, "it must follow a Dense/QuantDense layer")
    return layers[-1]


def _dense_layer(layer):
    activation = _activation_name(layer.activation, layer)
    kernel = np.asarray(effective_kernel(layer), dtype=np.float32)
    fan_in, units = kernel.shape
    bias = layer.bias.numpy().astype(np.float32) if layer.use_bias else np.zeros(units, np.float32)
    stored = SparseLayer(layer.name, "float", fan_in, units, binary_input=has_sign_input(layer), activation=activation)
    magnitude = _neuron_magnitudes(kernel)
    counts = np.count_nonzero(kernel, axis=0)
    if magnitude is None or counts.min() != counts.max() or counts[0] == 0:
        stored.kernel = kernel
        scale = np.ones(units, np.float32)
    elif counts[0] == fan_in:
        stored.kind = "binary"
        stored.signs = np.where(kernel.T > 0, 1, -1).astype(np.int8)
        scale = magnitude
    else:
        stored.kind = "sparse"
        # np.nonzero on the transposed kernel walks neuron by neuron, inputs ascending.
        _, inputs = np.nonzero(kernel.T)
        stored.indices = inputs.reshape(units, counts[0])
        stored.signs = np.where(np.take_along_axis(kernel.T, stored.indices, axis=1) > 0, 1, -1).astype(np.int8)
        scale = magnitude
    stored.scale, stored.offset = scale, bias
    return stored


def _neuron_magnitudes(kernel):
    """Each neuron's single non-zero weight magnitude, or None if some neuron mixes magnitudes."""
    magnitudes = np.abs(kernel)
    top = magnitudes.max(axis=0)
    if np.all((magnitudes == 0) | (magnitudes == top)):
        return top.astype(np.float32)
    return None


def _fold_batch_norm(stored, bn):
    if stored.activation != "linear":
        raise _unsupported(bn, f"BatchNormalization after the activation of '{stored.name}' cannot be folded")
    if bn.axis not in ([-1], [1]):
        raise _unsupported(bn, f"BatchNormalization must normalize the last axis, not {bn.axis}")
    weights = dict(zip((w.name.rsplit("/", 1)[-1].split(":")[0] for w in bn.weights), bn.get_weights()))
    units = stored.units
    gamma = weights.get("gamma", np.ones(units, np.float32))
    beta = weights.get("beta", np.zeros(units, np.float32))
    a = (gamma / np.sqrt(weights["moving_variance"] + bn.epsilon)).astype(np.float32)
    b = (beta - weights["moving_mean"] * a).astype(np.float32)
    stored.scale, stored.offset = stored.scale * a, stored.offset * a + b


def _activation_name(activation, layer):
    name = getattr(activation, "__name__", str(activation))
    if name not in ACTIVATIONS:
        raise _unsupported(layer, f"activation '{name}' is not supported (only relu, linear)")
    return name


def _set_activation(stored, layer):
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise _unsupported(layer, "only a plain ReLU (no max_value, negative_slope or threshold) is supported")
        name = "relu"
    else:
        name = _activation_name(layer.activation, layer)
    if name == "linear":
        return
    if stored.activation != "linear":
        raise _unsupported(layer, f"'{stored.name}' already has activation {stored.activation}")
    stored.activation = name


# --------------------------------------------------------------------------- files


def save_sparse(model, path, overwrite=False):
    """Write ``model`` (a Keras MLP or a :class:`SparseModel`) to ``path`` in the sparse format.

    Returns the :class:`SparseModel` written. Refuses (FileExistsError) to replace an existing
    file unless ``overwrite=True``. The file is written exactly at ``path`` (no suffix added).
    """
    sparse = model if isinstance(model, SparseModel) else from_keras(model)
    arrays = {"header": np.array(json.dumps(_header(sparse)))}
    for i, layer in enumerate(sparse.layers):
        arrays.update(_layer_arrays(i, layer))
    try:
        with open(path, "wb" if overwrite else "xb") as f:
            np.savez(f, **arrays)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.") from None
    return sparse


def _header(sparse):
    return {
        "format": FORMAT,
        "version": VERSION,
        "input_shape": list(sparse.input_shape),
        "layers": [
            {"name": l.name, "kind": l.kind, "fan_in": l.fan_in, "units": l.units, "k": l.k,
             "index_bits": l.index_bits, "binary_input": l.binary_input, "activation": l.activation,
             "affine": l.scale is not None}
            for l in sparse.layers
        ],
    }


def _layer_arrays(i, layer):
    arrays = {}
    if layer.kind == "sparse":
        arrays[f"L{i}_indices"] = _pack_unsigned(layer.indices.ravel(), layer.index_bits)
    if layer.kind in ("sparse", "binary"):
        arrays[f"L{i}_signs"] = np.packbits(layer.signs.ravel() > 0)
    if layer.kind == "float":
        arrays[f"L{i}_kernel"] = layer.kernel.astype(np.float32)
    if layer.scale is not None:
        arrays[f"L{i}_scale"] = layer.scale.astype(np.float32)
        arrays[f"L{i}_offset"] = layer.offset.astype(np.float32)
    return arrays


def _pack_unsigned(values, bits):
    """``np.packbits`` of each value written as ``bits`` bits, most significant first."""
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel())


def _unpack_unsigned(packed, bits, count):
    flat = np.unpackbits(packed)[: count * bits]
    if flat.size != count * bits:
        raise SparseFormatError(f"index array holds {flat.size} bits, expected {count * bits}")
    return flat.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))


def load_sparse(path):
    """Read a sparse-format file written by :func:`save_sparse`; returns a :class:`SparseModel`.

    Raises FileNotFoundError for a missing file and :class:`SparseFormatError` (a ValueError)
    for a file that is not a readable sparse-format file of this version.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Sparse model file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise SparseFormatError(f"{path} is not a readable iprune_tf sparse file (.npz): {error}") from error
    try:
        return _from_arrays(arrays)
    except SparseFormatError as error:
        raise SparseFormatError(f"{path}: {error}") from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise SparseFormatError(f"{path} is corrupt: {type(error).__name__}: {error}") from error


def _from_arrays(arrays):
    if "header" not in arrays:
        raise SparseFormatError("no 'header' entry; not an iprune_tf sparse file")
    header = json.loads(str(arrays["header"][()]))
    if header.get("format") != FORMAT:
        raise SparseFormatError(f"format {header.get('format')!r} is not {FORMAT!r}")
    if header.get("version") != VERSION:
        raise SparseFormatError(
            f"sparse format version {header.get('version')!r}; this iprune_tf reads version {VERSION}"
        )
    layers = [_layer_from_arrays(i, spec, arrays) for i, spec in enumerate(header["layers"])]
    if not layers:
        raise SparseFormatError("the file holds no layer")
    fan_in = int(np.prod(header["input_shape"]))
    for layer in layers:
        if layer.fan_in != fan_in:
            raise SparseFormatError(f"layer '{layer.name}' has fan-in {layer.fan_in} but receives {fan_in} values")
        fan_in = layer.units
    return SparseModel(tuple(int(d) for d in header["input_shape"]), layers)


def _layer_from_arrays(i, spec, arrays):
    kind, fan_in, units = spec["kind"], int(spec["fan_in"]), int(spec["units"])
    if kind not in KINDS or spec["activation"] not in ACTIVATIONS:
        raise SparseFormatError(f"layer {i} has unknown kind {kind!r} or activation {spec['activation']!r}")
    layer = SparseLayer(spec["name"], kind, fan_in, units, bool(spec["binary_input"]), spec["activation"])
    k = int(spec["k"])
    if kind == "sparse":
        if int(spec["index_bits"]) != layer.index_bits or not 0 < k < fan_in:
            raise SparseFormatError(f"layer '{layer.name}' has inconsistent k={k} or index_bits={spec['index_bits']}")
        layer.indices = _unpack_unsigned(arrays[f"L{i}_indices"], layer.index_bits, units * k).reshape(units, k)
        if layer.indices.max() >= fan_in:
            raise SparseFormatError(f"layer '{layer.name}' has an input index >= its fan-in {fan_in}")
    if kind in ("sparse", "binary"):
        count = units * (k if kind == "sparse" else fan_in)
        bits = np.unpackbits(arrays[f"L{i}_signs"])[:count]
        if bits.size != count:
            raise SparseFormatError(f"layer '{layer.name}' sign array holds {bits.size} bits, expected {count}")
        layer.signs = np.where(bits > 0, 1, -1).astype(np.int8).reshape(units, -1)
    if kind == "float":
        layer.kernel = _float_array(arrays, f"L{i}_kernel", (fan_in, units))
    if spec["affine"]:
        layer.scale = _float_array(arrays, f"L{i}_scale", (units,))
        layer.offset = _float_array(arrays, f"L{i}_offset", (units,))
    return layer


def _float_array(arrays, key, shape):
    array = arrays[key]
    if array.dtype != np.float32 or array.shape != shape:
        raise SparseFormatError(f"'{key}' is {array.dtype} {array.shape}, expected float32 {shape}")
    return array
