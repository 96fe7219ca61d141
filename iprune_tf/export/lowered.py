"""The lowered form of a network: per neuron its kept inputs, their signs and what follows the sum.

Every backend (C, sparse TFLite, Verilog, the ``.npz`` format) reads this one form, built from a
Keras model by :func:`iprune_tf.export.lowering.lower`. A layer (``op`` dense or conv2d) computes,
per neuron ``n`` (per output position for a convolution)::

    x   = sign(x) if binary_input                        # +1 for x >= 0, else -1
    s_n = sum_k signs[n, k] * x[indices[n, k]]           # kind "sparse", binary weights
        | sum_k values[n, k] * x[indices[n, k]]          # kind "sparse", real weights (pruned float)
        | sum_i signs[n, i] * x[i]                       # kind "binary": every input, ±1 weights
        | sum_i kernel[i, n] * x[i]                      # kind "float"
    y_n = +1 if s_n >= threshold[n] else -1              # output "threshold" (binary activations)
        | act(s_n * scale[n] + offset[n])                # output "affine" (bias, scale, BN folded)
        | +1 if tables[n, a_n] else -1                   # kind "table" (output "threshold", no sum):
                                                         #   a_n = sum_k (x[indices[n, k]] >= 0) << k

``x`` is the flattened input vector (dense) or one ``kh*kw*c_in`` patch in ``(i, j, c)`` order
(conv2d, after padding with ``pad_value``). :class:`MaxPool` and :class:`Flatten` steps sit between
layers; an optional input encoding (:mod:`iprune_tf.workflow.encoding`) comes first.
"""
import dataclasses
import math

import numpy as np

FLOAT_BITS = 32
THRESHOLD_BITS = 32
AFFINE_BITS = 2 * FLOAT_BITS
_PREDICT_CHUNK = 64


def index_bits(fan_in):
    """Bits of one input index: ``ceil(log2(fan_in))``, at least 1."""
    return max(1, (int(fan_in) - 1).bit_length())


def binarize(x):
    """larq's sign: +1 for ``x >= 0``, else -1 (float32)."""
    return np.where(x >= 0, np.float32(1), np.float32(-1))


@dataclasses.dataclass
class LoweredLayer:
    """One Dense or Conv2D layer in lowered form (see the module docstring)."""

    name: str
    op: str
    kind: str
    fan_in: int
    units: int
    k: int  # kept inputs per neuron: K for a sparse layer, the fan-in for any other
    binary_input: bool
    output: str = "affine"
    indices: np.ndarray | None = None
    signs: np.ndarray | None = None
    values: np.ndarray | None = None
    kernel: np.ndarray | None = None
    threshold: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    activation: str = "linear"
    input_hwc: tuple | None = None
    kernel_size: tuple | None = None
    strides: tuple | None = None
    padding: tuple | None = None
    pad_value: float = 0.0
    output_hwc: tuple | None = None
    fixed_signs: bool = False  # a group-sum head: every sign +1 by construction, no weight learned or stored
    tables: np.ndarray | None = None  # kind "table": bool (units, 2**k), any boolean function of the k inputs

    @property
    def weight_bits(self):
        """1 for ±1 weights, 32 for real ones, 0 for a table layer (no weights: :meth:`cost` counts its table bits)."""
        if self.kind == "table":
            return 0
        return 1 if self.signs is not None else FLOAT_BITS

    @property
    def pruned(self):
        return self.kind in ("sparse", "table")

    @property
    def connections(self):
        """Weights a neuron set evaluates once: kept connections (sparse) or the whole kernel."""
        return self.units * self.k

    @property
    def positions(self):
        """Output positions per sample: how often each connection is used."""
        return self.output_hwc[0] * self.output_hwc[1] if self.op == "conv2d" else 1

    @property
    def has_affine(self):
        """False for an affine output that is the identity (nothing stored)."""
        if self.output != "affine":
            return False
        return not (np.all(self.scale == 1) and np.all(self.offset == 0))

    def cost(self):
        """Paper bits (1 per binary connection, 32 per real weight), file bits and operations."""
        indices = index_bits(self.fan_in) if self.pruned else 0
        if self.kind == "table":  # a truth table of 2**k bits per neuron replaces its weights and threshold
            paper, file = self.units * 2**self.k, self.units * 2**self.k + self.connections * indices
        else:
            post = THRESHOLD_BITS if self.output == "threshold" else AFFINE_BITS if self.has_affine else 0
            paper = 0 if self.fixed_signs else self.connections * self.weight_bits
            file = self.connections * (self.weight_bits + indices) + post * self.units
        return {
            "name": self.name, "op": self.op, "kind": self.kind, "fan_in": self.fan_in, "neurons": self.units,
            "k": self.k, "connections": self.connections, "weight_bits": self.weight_bits, "pruned": self.pruned,
            "positions": self.positions, "index_bits": indices, "paper_bits": paper, "file_bits": file,
            "operations": self.connections * self.positions,
        }

    def pattern_sums(self):
        """int64 (2**k, units): each neuron's sum over its ±1 weights on input pattern a (input k is bit k of a)."""
        bits = (np.arange(2**self.k)[:, None] >> np.arange(self.k)) & 1
        return (2 * bits - 1) @ self.signs.T.astype(np.int64)

    def truth_tables(self):
        """bool (units, 2**k): neuron n's output bit on input pattern a, of a table or a sparse threshold layer."""
        if self.kind == "table":
            return self.tables
        return (self.pattern_sums() >= self.threshold).T

    def reachable_scores(self):
        """float32 (units, count + 1): each class's score ``s * scale + offset`` at every popcount of its ±1 inputs."""
        count = self.k
        s = (2 * np.arange(count + 1) - count).astype(np.float32)
        return s[None, :] * self.scale[:, None] + self.offset[:, None]

    def integer_scores(self, max_magnitude=None, max_fraction_bits=40):
        """``(A, B, F, conflicts)``: integer class scores ``A * popcount + B`` ordering like the float32 ones.

        For an affine layer reading ±1 bits (the output layer of a fully binary net), whose float32
        score is ``s * scale + offset`` with ``s = 2 * popcount - count``. F (fraction bits of
        ``A = round(2 * scale * 2**F)``, ``B = round((offset - scale * count) * 2**F)``) is the
        smallest whose integer scores order every reachable (class, popcount) pair exactly as the
        float32 scores do (ties included); ``conflicts`` counts the pairs still ordered differently.
        ``max_magnitude`` bounds every ``|A * popcount + B|`` (e.g. for int32 arithmetic), which caps F.
        """
        count = self.k
        p = np.arange(count + 1)
        floats = self.reachable_scores().ravel()
        order = np.lexsort((np.arange(floats.size), floats))
        best = None
        for f in range(8, max_fraction_bits + 1):
            a = np.round(2.0 * self.scale.astype(np.float64) * 2**f).astype(object)
            b = np.round((self.offset.astype(np.float64) - self.scale.astype(np.float64) * count) * 2**f).astype(object)
            ints = (a[:, None] * p[None, :].astype(object) + b[:, None]).ravel()
            if max_magnitude is not None and max(abs(v) for v in ints) > max_magnitude:
                break
            y, z = floats[order], ints[order]
            conflicts = int(np.sum((y[1:] == y[:-1]) != (z[1:] == z[:-1])) + np.sum(z[1:] < z[:-1]))
            if best is None or conflicts < best[3]:
                best = ([int(v) for v in a], [int(v) for v in b], f, conflicts)
            if conflicts == 0:
                break
        if best is None:
            raise ValueError(f"Layer '{self.name}': its class scores need more than {max_magnitude} even with 8 "
                             "fraction bits; its batch-norm scale or offset is too large for integer scores.")
        return best

    def forward(self, x):
        """Outputs of this layer for a batch ``x`` (dense: (N, fan_in); conv2d: (N, H, W, C))."""
        if self.binary_input:
            x = binarize(x)
        if self.op == "conv2d":
            x = self._patches(x)
        if self.kind == "table":
            address = np.sum((x[..., self.indices] >= 0) << np.arange(self.k), axis=-1)
            return np.where(self.tables[np.arange(self.units), address], np.float32(1), np.float32(-1))
        s = self._sums(x)
        if self.output == "threshold":
            return np.where(s >= self.threshold, np.float32(1), np.float32(-1))
        y = (s * self.scale + self.offset).astype(np.float32)
        return np.maximum(y, np.float32(0)) if self.activation == "relu" else y

    def _sums(self, x):
        if self.kind == "sparse":
            return self._sparse_sums(x)
        if self.kind == "binary":
            return x @ self.signs.T.astype(np.float32)
        return x @ self.kernel

    def _sparse_sums(self, x):
        """Sums over each neuron's K inputs in float32, in index order (k = 0, 1, ...).

        A fixed order, so that a backend summing the same way (the C export) reproduces real-valued
        sums bit for bit; integer sums are exact in any order.
        """
        weights = (self.signs if self.signs is not None else self.values).astype(np.float32)
        gathered = x[..., self.indices]
        s = np.zeros(gathered.shape[:-1], np.float32)
        for k in range(self.k):
            s = s + gathered[..., k] * weights[:, k]
        return s

    def _patches(self, x):
        """(N, OH, OW, kh*kw*c_in) patches in (i, j, c) order, after constant padding."""
        top, bottom, left, right = self.padding
        x = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], constant_values=self.pad_value)
        kh, kw = self.kernel_size
        sh, sw = self.strides
        oh, ow, _ = self.output_hwc
        rows = [x[:, i : i + sh * oh : sh, j : j + sw * ow : sw, :] for i in range(kh) for j in range(kw)]
        return np.concatenate(rows, axis=-1)


@dataclasses.dataclass
class MaxPool:
    """A max-pool with valid padding (an OR of bits on ±1 values)."""

    pool_size: tuple
    strides: tuple
    input_hwc: tuple
    output_hwc: tuple

    def forward(self, x):
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        oh, ow, _ = self.output_hwc
        windows = [x[:, i : i + sh * oh : sh, j : j + sw * ow : sw, :] for i in range(ph) for j in range(pw)]
        return np.max(np.stack(windows), axis=0)


@dataclasses.dataclass
class Flatten:
    """Reshape (N, H, W, C) to (N, H*W*C) in C order, as Keras' Flatten does."""

    def forward(self, x):
        return x.reshape(len(x), -1)


@dataclasses.dataclass
class LoweredNet:
    """A network as lowered steps: optional input encoding, then layers, pools and flattens."""

    input_shape: tuple
    steps: list
    input_encoding: object = None

    @property
    def layers(self):
        return [step for step in self.steps if isinstance(step, LoweredLayer)]

    @property
    def num_classes(self):
        return self.layers[-1].units

    def activations(self, x):
        """The output of the encoding (if any) and of every step, for a batch ``x``, as numpy arrays."""
        x = self._check_input(x)
        outputs = []
        if self.input_encoding is not None:
            x = self.input_encoding.encode(x)
            outputs.append(x)
        for step in self.steps:
            x = step.forward(x)
            outputs.append(x)
        return outputs

    def predict(self, x):
        """Output scores (float32) for a batch ``x`` of shape ``(N, *input_shape)``, in numpy."""
        x = self._check_input(x)
        chunks = [self.activations(x[i : i + _PREDICT_CHUNK])[-1] for i in range(0, len(x), _PREDICT_CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes), np.float32)

    def _check_input(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"Expected inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}.")
        return x

    def cost(self):
        """Memory (paper and file counting, in bits) and operations, in total and per layer."""
        layers = [layer.cost() for layer in self.layers]
        return {
            "memory_bits_paper": sum(c["paper_bits"] for c in layers),
            "memory_bits_file": sum(c["file_bits"] for c in layers),
            "operations": sum(c["operations"] for c in layers),
            "layers": layers,
        }

    def payload_bytes(self):
        """File-counted memory in bytes (rounded up)."""
        return math.ceil(self.cost()["memory_bits_file"] / 8)
