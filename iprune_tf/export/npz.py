"""The ``.npz`` sparse format: a :class:`LoweredNet` serialized, bit-packed, and read back.

File layout (an uncompressed ``.npz``, read with ``allow_pickle=False``):

* ``header``: a 0-d unicode array of JSON: ``{"format": "iprune_tf.sparse", "version": 2,
  "input_shape": [...], "steps": [...]}``, one entry per step: ``{"type": "flatten"}``,
  ``{"type": "maxpool", ...geometry}`` or ``{"type": "layer", ...}`` with every scalar field of
  :class:`LoweredLayer` (name, op, kind, fan_in, units, k, binary_input, output, activation,
  conv geometry) and ``affine`` (False when the affine output is the identity and not stored).
* per layer ``i`` (``L{i}_`` prefix): ``indices`` (sparse: ``np.packbits`` of the ``units*k``
  indices, neuron by neuron, each ``index_bits(fan_in)`` bits, most significant first),
  ``signs`` (sparse/binary with ±1 weights: one bit per weight, 1 = +1), ``values`` (sparse with
  real weights, float32), ``kernel`` (float, float32 ``(fan_in, units)``), ``threshold`` (int32),
  ``scale`` and ``offset`` (float32, when ``affine``).

The payload, the bits of that content, is exactly :meth:`LoweredNet.cost`'s ``memory_bits_file``;
the file adds the zip and JSON headers and the padding of packed arrays to whole bytes.
"""
import dataclasses
import json
import os
import zipfile

import numpy as np

from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet, MaxPool, index_bits

FORMAT = "iprune_tf.sparse"
VERSION = 2
_SCALARS = ("name", "op", "kind", "fan_in", "units", "k", "binary_input", "output", "activation",
            "input_hwc", "kernel_size", "strides", "padding", "pad_value", "output_hwc", "fixed_signs")
_FLOAT_ARRAYS = ("values", "kernel", "scale", "offset")


class SparseFormatError(ValueError):
    """A sparse-format file is corrupt, incomplete, of another format or of another version."""


def save_sparse(net, path, overwrite=False):
    """Write a :class:`LoweredNet` to ``path``; FileExistsError for an existing file unless ``overwrite``."""
    if net.input_encoding is not None:
        raise ValueError("The .npz sparse format does not store input encodings; encode the inputs before it.")
    tables = [layer.name for layer in net.layers if layer.kind == "table"]
    if tables:
        raise ValueError(f"The .npz sparse format stores no truth tables, and layers {tables} are truth-table neurons "
                         "(LutTable); export them with to_c or to_verilog.")
    arrays = {"header": np.array(json.dumps(_header(net)))}
    for i, layer in enumerate(net.layers):
        arrays.update(_layer_arrays(i, layer))
    try:
        with open(path, "wb" if overwrite else "xb") as f:
            np.savez(f, **arrays)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.") from None
    return net


def _header(net):
    steps = []
    for step in net.steps:
        if isinstance(step, Flatten):
            steps.append({"type": "flatten"})
        elif isinstance(step, MaxPool):
            steps.append({"type": "maxpool", **dataclasses.asdict(step)})
        else:
            steps.append({"type": "layer", "affine": step.has_affine, **{key: getattr(step, key) for key in _SCALARS}})
    return {"format": FORMAT, "version": VERSION, "input_shape": list(net.input_shape), "steps": steps}


def _layer_arrays(i, layer):
    arrays = {}
    if layer.indices is not None:
        arrays["indices"] = _pack_unsigned(layer.indices.ravel(), index_bits(layer.fan_in))
    if layer.signs is not None:
        arrays["signs"] = np.packbits(layer.signs.ravel() > 0)
    for key in ("values", "kernel"):
        if getattr(layer, key) is not None:
            arrays[key] = getattr(layer, key).astype(np.float32)
    if layer.output == "threshold":
        arrays["threshold"] = layer.threshold.astype(np.int32)
    elif layer.has_affine:
        arrays["scale"], arrays["offset"] = layer.scale.astype(np.float32), layer.offset.astype(np.float32)
    return {f"L{i}_{key}": value for key, value in arrays.items()}


def _pack_unsigned(values, bits):
    """``np.packbits`` of each value written as ``bits`` bits, most significant first."""
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel())


def _unpack_unsigned(packed, bits, count):
    flat = np.unpackbits(packed)[: count * bits]
    if flat.size != count * bits:
        raise SparseFormatError(f"index array holds {flat.size} bits, expected {count * bits}")
    return (flat.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))).astype(np.int32)


def load_sparse(path):
    """Read a file written by :func:`save_sparse` as a :class:`LoweredNet`.

    FileNotFoundError for a missing file, :class:`SparseFormatError` (a ValueError) for anything
    that is not a readable sparse file of this version.
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
        raise SparseFormatError(f"sparse format version {header.get('version')!r}; this iprune_tf reads version {VERSION}")
    steps, n_layers = [], 0
    for spec in header["steps"]:
        kind = spec.pop("type")
        if kind == "flatten":
            steps.append(Flatten())
        elif kind == "maxpool":
            steps.append(MaxPool(**{key: tuple(value) for key, value in spec.items()}))
        else:
            steps.append(_layer_from_arrays(n_layers, spec, arrays))
            n_layers += 1
    if not n_layers:
        raise SparseFormatError("the file holds no layer")
    return LoweredNet(tuple(int(d) for d in header["input_shape"]), steps)


def _layer_from_arrays(i, spec, arrays):
    affine = spec.pop("affine")
    layer = LoweredLayer(**{key: tuple(value) if isinstance(value, list) else value for key, value in spec.items()})
    units, k = layer.units, layer.k
    if layer.kind not in ("sparse", "binary", "float") or not 0 < k <= layer.fan_in or (
            layer.kind != "sparse" and k != layer.fan_in):
        raise SparseFormatError(f"layer '{layer.name}' has kind {layer.kind!r}, k={k}, fan-in {layer.fan_in} "
                                "(only a sparse layer keeps fewer inputs than its fan-in)")
    get = lambda key: arrays[f"L{i}_{key}"]  # noqa: E731
    if layer.kind == "sparse":
        layer.indices = _unpack_unsigned(get("indices"), index_bits(layer.fan_in), units * k).reshape(units, k)
        if layer.indices.max() >= layer.fan_in:
            raise SparseFormatError(f"layer '{layer.name}' has an input index >= its fan-in {layer.fan_in}")
    if f"L{i}_signs" in arrays:
        bits = np.unpackbits(get("signs"))[: units * k]
        if bits.size != units * k:
            raise SparseFormatError(f"layer '{layer.name}' sign array holds {bits.size} bits, expected {units * k}")
        layer.signs = np.where(bits > 0, 1, -1).astype(np.int8).reshape(units, k)
    for key, shape in (("values", (units, k)), ("kernel", (layer.fan_in, units))):
        if f"L{i}_{key}" in arrays:
            setattr(layer, key, _float_array(get(key), f"L{i}_{key}", shape))
    if layer.output == "threshold":
        layer.threshold = get("threshold").astype(np.int32).reshape(units)
    elif affine:
        layer.scale = _float_array(get("scale"), f"L{i}_scale", (units,))
        layer.offset = _float_array(get("offset"), f"L{i}_offset", (units,))
    else:
        layer.scale, layer.offset = np.ones(units, np.float32), np.zeros(units, np.float32)
    weights = layer.kernel if layer.kind == "float" else layer.signs if layer.kind == "binary" else (
        layer.signs if layer.signs is not None else layer.values)
    if weights is None:
        raise SparseFormatError(f"layer '{layer.name}' ({layer.kind}) lacks its weight arrays")
    return layer


def _float_array(array, key, shape):
    if array.dtype != np.float32 or array.shape != shape:
        raise SparseFormatError(f"'{key}' is {array.dtype} {array.shape}, expected float32 {shape}")
    if not np.all(np.isfinite(array)):
        raise SparseFormatError(f"'{key}' holds {np.count_nonzero(~np.isfinite(array))} non-finite values (NaN or inf)")
    return array
