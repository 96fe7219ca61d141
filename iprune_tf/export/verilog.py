"""A fully binary pruned network as synthesizable Verilog-2001: one LUT per neuron.

``to_verilog(model_or_lowered, out_dir)`` writes ``net.v`` (the design, top module ``lut_net``),
``tb.v`` (a testbench that reads input vectors from ``inputs.hex`` and writes ``outputs.txt``) and
``design.json`` (what the verification needs). Read from the lowered form (:func:`lower`):

* a pruned layer with binary inputs and a threshold output: per neuron the ``2**K``-entry truth
  table of ``s >= T`` over its K input bits (bit k of the table address is input ``indices[n, k]``);
* an unpruned binary layer with a threshold output: ``popcount(~(x ^ w)) >= ceil((T + fan_in) / 2)``
  (``s = 2 * popcount - fan_in``);
* the last layer (any head: dense, pruned or a group sum): per class the popcount of the agreement
  bits of its kept connections, the integer score ``A * popcount + B`` of
  :meth:`~iprune_tf.export.lowered.LoweredLayer.integer_scores` (the popcount itself when every class
  has the same ``A > 0`` and ``B``) or, ``scores="ranks"``, the rank of its float32 score read from a
  per-class table, then an argmax (lowest class wins ties, as numpy's).

Bits are 1 for +1 and 0 for -1. With ``pipeline=True`` every layer's output is registered and one
input is accepted per clock; ``tree_levels=L`` also registers the output head's adder and argmax
trees every L levels (a level: one 6-bit popcount, one addition, one comparison or one selection), so no
stage is much deeper than a hidden layer (``compare_bits`` and ``input_copies`` shorten the head's
comparisons and wires further, ``input_registers`` the wires into the hidden layers' neurons).
``io="stream"`` adds the top ``lut_stream``: ``bus_width`` input bits per clock with a valid flag,
the class index with a valid flag out.
"""
import dataclasses
import json
import os

import numpy as np

from iprune_tf.export import verilog_tops as tops
from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet
from iprune_tf.export.verilog_layers import SCORES, popcount_threshold_layer, score_layer, table_layer

MAX_K = 12
IO_MODES = ("parallel", "stream")
FILES = ("net.v", "tb.v", "design.json")


@dataclasses.dataclass
class VerilogDesign:
    """What ``to_verilog`` wrote: files, ports, latency and per-layer widths.

    ``latency``: clocks from ``x`` to ``class_idx`` of ``lut_net`` (registered layers plus the output
    head's ``head_registers``); for ``io="stream"`` an image takes ``words`` clocks of ``bus_width``
    bits, and ``stream_latency`` clocks pass from its first word to its class.
    """

    out_dir: str
    input_bits: int
    class_bits: int
    num_classes: int
    latency: int
    pipeline: bool
    granularity: str
    layers: list
    score_fraction_bits: int | None
    score_order_conflicts: int
    tree_levels: int | None = None
    head_registers: int = 0
    io: str = "parallel"
    bus_width: int | None = None
    scores: str = "affine"
    score_bits: int | None = None
    compare_bits: int | None = None
    input_copies: int | None = None
    input_registers: list | None = None

    @property
    def top(self):
        return tops.STREAM_TOP if self.io == "stream" else tops.TOP

    @property
    def words(self):
        """Bus words per image (stream top): ``ceil(input_bits / bus_width)``."""
        return -(-self.input_bits // self.bus_width) if self.io == "stream" else None

    @property
    def stream_latency(self):
        return self.words + self.latency if self.io == "stream" else None

    def clocks_to(self, i):
        """Clocks from ``x`` to hidden layer i's output register ``h<i>`` (1-based): one per layer, one per input register."""
        return clocks_to_layer(i, self.input_registers)

    def path(self, name):
        return os.path.join(self.out_dir, name)

    @classmethod
    def load(cls, out_dir):
        with open(os.path.join(out_dir, "design.json")) as f:
            return cls(**{**json.load(f), "out_dir": os.fspath(out_dir)})


def clocks_to_layer(i, input_registers):
    """Clocks from ``x`` to layer i's output register (1-based) of a pipelined net: one per layer, one per input register."""
    return i + sum(j <= i for j in input_registers or ())


def lowered_of(model_or_lowered):
    if isinstance(model_or_lowered, LoweredNet):
        return model_or_lowered
    from iprune_tf.export.lowering import lower

    return lower(model_or_lowered)


def check_lut_net(net):
    """Raise ValueError unless ``net`` is a chain of binary-input layers a LUT netlist can implement."""
    for step in net.steps:
        if not isinstance(step, (Flatten, LoweredLayer)):
            raise ValueError(f"The Verilog backend implements MLPs only; {type(step).__name__} is not supported.")
    last = net.layers[-1]
    for layer in net.layers:
        if layer.op != "dense":
            raise ValueError(f"Layer '{layer.name}' is a {layer.op}; the Verilog backend implements Dense layers only.")
        if not layer.binary_input or layer.kind == "float":
            what = "real-valued activations" if not layer.binary_input else "a real-valued kernel"
            raise ValueError(
                f"Layer '{layer.name}' reads {what}, so its neurons are not boolean functions of their inputs. "
                "Use the fully binary flavour (flavour='binary') with an input encoding "
                "(input_encoding='thermometer:3' or 'threshold') so every layer reads ±1 bits."
            )
        if layer.pruned and layer.k > MAX_K and layer is not last:  # the last layer is a popcount
            raise ValueError(
                f"Layer '{layer.name}' keeps K={layer.k} inputs per neuron: a {2 ** layer.k}-entry truth table per "
                f"neuron. The Verilog backend builds tables up to K={MAX_K}; prune to K <= {MAX_K} (6 fills one LUT6)."
            )
        if layer is not last and layer.output != "threshold":
            raise ValueError(f"Hidden layer '{layer.name}' has a real-valued output; its next layer must binarize it.")
    if last.output != "affine":
        raise ValueError(f"The last layer '{last.name}' must give class scores (affine output), not bits.")
    return net


def input_bits(net, x):
    """The netlist's input vectors for raw inputs ``x``: uint8 (N, bits), 1 for +1."""
    x = np.asarray(x, dtype=np.float32)
    if net.input_encoding is not None:
        x = net.input_encoding.encode(x)
    return (x.reshape(len(x), -1) >= 0).astype(np.uint8)


def _require_writable(out_dir, overwrite):
    existing = [name for name in FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass overwrite=True to replace them.")
    os.makedirs(out_dir, exist_ok=True)


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_options(granularity, pipeline, tree_levels, io, bus_width, scores, compare_bits=None, input_copies=None,
                   input_registers=None):
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {tuple(SCORES)}, got {scores!r}.")
    if granularity not in ("layer", "neuron"):
        raise ValueError(f"granularity must be 'layer' or 'neuron', got {granularity!r}.")
    if io not in IO_MODES:
        raise ValueError(f"io must be one of {IO_MODES}, got {io!r}.")
    if tree_levels is not None and not _positive_int(tree_levels):
        raise ValueError(f"tree_levels must be a positive int (levels per pipeline stage) or None, got {tree_levels!r}.")
    if compare_bits is not None and not _positive_int(compare_bits):
        raise ValueError(f"compare_bits must be a positive int (bits per comparison chunk) or None, got {compare_bits!r}.")
    if input_copies is not None and not _positive_int(input_copies):
        raise ValueError(f"input_copies must be a positive int (copies of the head's input) or None, got {input_copies!r}.")
    if compare_bits and not tree_levels:
        raise ValueError("compare_bits splits comparisons over pipeline levels: it needs tree_levels.")
    if input_registers is not None and (isinstance(input_registers, (str, bool, int)) or not input_registers
                                        or not all(_positive_int(i) for i in input_registers)):
        raise ValueError("input_registers must be a non-empty collection of hidden layer numbers (1 for the first), "
                         f"got {input_registers!r}.")
    if (tree_levels or io == "stream" or input_copies or input_registers) and not pipeline:
        raise ValueError("tree_levels, input_copies, input_registers and io='stream' need pipeline=True "
                         "(they add clocked registers).")
    if io == "stream" and not _positive_int(bus_width):
        raise ValueError(f"io='stream' needs bus_width, a positive int (input bits per clock), got {bus_width!r}.")


def _check_input_registers(net, input_registers):
    """The sorted layer numbers of ``input_registers``; ValueError unless each names a pruned hidden layer of ``net``."""
    hidden = len(net.layers) - 1
    for i in input_registers:
        if i > hidden:
            raise ValueError(f"input_registers names layer {i}, but the net has {hidden} hidden layers (numbered from 1); "
                             "the output head's input is copied by input_copies.")
        if not net.layers[i - 1].pruned:
            raise ValueError(f"input_registers: hidden layer {i} ('{net.layers[i - 1].name}') is not pruned; a register per "
                             f"neuron input would be {net.layers[i - 1].fan_in * net.layers[i - 1].units:,} flip-flops.")
    return sorted(set(input_registers))


def to_verilog(model_or_lowered, out_dir, pipeline=True, overwrite=False, granularity="layer", tree_levels=None,
               io="parallel", bus_width=None, scores="affine", compare_bits=None, input_copies=None,
               input_registers=None):
    """Write the Verilog netlist, its testbench and ``design.json``; returns the :class:`VerilogDesign`.

    ``granularity``: ``"layer"`` (one module per layer, the tables as constants inside) or
    ``"neuron"`` (one module per neuron, instantiated by its layer's module). ``tree_levels``:
    pipeline the output head, a register every that many tree levels. ``io="stream"``: also the
    streaming top ``lut_stream`` reading ``bus_width`` bits per clock (the testbench drives it).
    ``scores``: the output head's class scores, ``"affine"`` (``A * popcount + B``) or ``"ranks"``
    (per class a table from popcount to the rank of its float32 score: narrow comparisons, exact; a
    block RAM read on a registered level). ``compare_bits``: the argmax's comparisons in chunks of at
    most that many bits, "greater" and "equal" per chunk registered and combined on the next level (a
    round takes 3 levels instead of 2: shorter carry chains). ``input_copies=G``: the head's classes
    fall into G groups, each reading its own registered copy of the head's input (one more clock; G =
    classes gives every class its own), placed beside their popcount trees instead of one register
    fanning out across the part. ``input_registers``: the numbers of pruned hidden layers (1 for the
    first) whose every neuron reads its K inputs through its own register (one more clock per layer,
    K flip-flops per neuron), so that a long wire from a previous layer takes two clocks.
    """
    _check_options(granularity, pipeline, tree_levels, io, bus_width, scores, compare_bits, input_copies,
                   input_registers)
    net = check_lut_net(lowered_of(model_or_lowered))
    input_registers = _check_input_registers(net, input_registers) if input_registers else None
    out_dir = os.fspath(out_dir)
    _require_writable(out_dir, overwrite)
    class_bits = max(1, (net.num_classes - 1).bit_length())
    lines, modules, info = [f"// {tops.TOP}: generated by iprune_tf.export.verilog", "`default_nettype none"], [], []
    fraction_bits = conflicts = head_registers = score_bits = 0
    for i, layer in enumerate(net.layers, start=1):
        module = f"layer_{i}_{layer.name}"
        modules.append(module)
        if layer is net.layers[-1]:
            body, fraction_bits, conflicts, head_registers, score_bits = score_layer(
                layer, module, class_bits, tree_levels, scores, compare_bits, input_copies)
            style = "popcount_argmax"
        elif layer.pruned:  # a sparse threshold layer's truth tables, or a table layer's own
            body, style = table_layer(layer, module, granularity, i in (input_registers or ())), "truth_tables"
        else:
            body, style = popcount_threshold_layer(layer, module), "popcount_threshold"
        lines += body
        info.append({"name": layer.name, "module": module, "style": style, "kind": layer.kind, "k": layer.k,
                     "fan_in": layer.fan_in, "units": layer.units})
    latency = clocks_to_layer(len(net.layers), input_registers) + head_registers if pipeline else 0
    design = VerilogDesign(out_dir, net.layers[0].fan_in, class_bits, net.num_classes, latency, pipeline, granularity,
                           info, fraction_bits, conflicts, tree_levels, head_registers, io,
                           bus_width if io == "stream" else None, scores, score_bits, compare_bits, input_copies,
                           input_registers)
    clocked = set(input_registers or ()) | ({len(net.layers)} if head_registers else set())
    lines += tops.top_module(net, modules, class_bits, pipeline, clocked)
    lines += (tops.stream_top(design) if io == "stream" else []) + ["`default_nettype wire", ""]
    with open(design.path("net.v"), "w") as f:
        f.write("\n".join(lines))
    with open(design.path("tb.v"), "w") as f:
        f.write(tops.stream_testbench(design) if io == "stream" else tops.testbench(design))
    with open(design.path("design.json"), "w") as f:
        json.dump({k: v for k, v in dataclasses.asdict(design).items() if k != "out_dir"}, f, indent=2)
    return design
