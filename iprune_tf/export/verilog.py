"""A fully binary pruned network as synthesizable Verilog-2001: one LUT per neuron.

``to_verilog(model_or_lowered, out_dir)`` writes ``net.v`` (the design, top module ``lut_net``),
``tb.v`` (a testbench that reads input vectors from ``inputs.hex`` and writes ``outputs.txt``) and
``design.json`` (what the verification needs). Read from the lowered form (:func:`lower`):

* a pruned layer with binary inputs and a threshold output: per neuron the ``2**K``-entry truth
  table of ``s >= T`` over its K input bits (bit k of the table address is input ``indices[n, k]``);
* an unpruned binary layer with a threshold output: ``popcount(~(x ^ w)) >= ceil((T + fan_in) / 2)``
  (``s = 2 * popcount - fan_in``);
* the last layer: the popcount per class, its float32 affine map (batch norm) as an integer
  ``A * popcount + B`` scaled by ``2**F``, then an argmax (lowest class wins ties, as numpy's).

Bits are 1 for +1 and 0 for -1. With ``pipeline=True`` every layer's output is registered: the
latency is the number of layers and one input is accepted per clock.
"""
import dataclasses
import json
import os

import numpy as np

from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet

MAX_K = 12
TOP = "lut_net"
FILES = ("net.v", "tb.v", "design.json")
KEEP = "(* keep_hierarchy *)"  # layer modules survive Yosys' flatten: per-layer figures from one synthesis


@dataclasses.dataclass
class VerilogDesign:
    """What ``to_verilog`` wrote: files, ports, latency and per-layer widths."""

    out_dir: str
    input_bits: int
    class_bits: int
    num_classes: int
    latency: int
    pipeline: bool
    granularity: str
    layers: list
    score_fraction_bits: int
    score_order_conflicts: int

    def path(self, name):
        return os.path.join(self.out_dir, name)

    @classmethod
    def load(cls, out_dir):
        with open(os.path.join(out_dir, "design.json")) as f:
            return cls(**{**json.load(f), "out_dir": os.fspath(out_dir)})


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
        if layer.kind == "sparse" and layer.k > MAX_K and layer is not last:  # the last layer is a popcount
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


def truth_tables(layer):
    """bool (units, 2**K): entry a of neuron n is ``s >= T[n]`` for input bits ``(a >> k) & 1``."""
    k = layer.k
    bits = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
    sums = (2 * bits - 1) @ layer.signs.T.astype(np.int64)  # (2**K, units)
    return (sums >= layer.threshold).T


def _hex(bits):
    """Verilog hex digits of a bit sequence, bits[0] the least significant."""
    value = int("".join("1" if b else "0" for b in reversed(list(bits))), 2)
    return f"{len(bits)}'h{value:0{-(-len(bits) // 4)}x}"


def _address(indices):
    return "{" + ", ".join(f"x[{i}]" for i in reversed(indices.tolist())) + "}"


def _table_layer(layer, module, granularity):
    """A pruned layer: one truth table per neuron, in one module or one module per neuron."""
    tables, lines, neurons = truth_tables(layer), [], []
    header = f"{KEEP}\nmodule {module} (input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"
    for n in range(layer.units):
        if granularity == "neuron":
            neurons += [f"module {module}_n{n} (input wire [{layer.k - 1}:0] a, output wire y);",
                        f"  localparam [{2 ** layer.k - 1}:0] T = {_hex(tables[n])};", "  assign y = T[a];", "endmodule"]
            lines.append(f"  {module}_n{n} n{n} (.a({_address(layer.indices[n])}), .y(y[{n}]));")
        else:
            lines += [f"  localparam [{2 ** layer.k - 1}:0] T{n} = {_hex(tables[n])};",
                      f"  assign y[{n}] = T{n}[{_address(layer.indices[n])}];"]
    return neurons + [header, *lines, "endmodule"]


def _terms(layer, n):
    """(Verilog bit vector of a neuron's inputs, its weight bits, count) for a popcount of agreements."""
    if layer.kind == "sparse":
        return _address(layer.indices[n]), layer.signs[n] > 0, layer.k
    return "x", layer.signs[n] > 0, layer.fan_in


def _popcount(name, vector, weight_bits, count):
    """Lines computing ``name`` = number of bits of ``vector`` equal to ``weight_bits``, as an adder tree."""
    lines = [f"  wire [{count - 1}:0] {name}_t = ~({vector} ^ {_hex(weight_bits)});"]
    level = []
    for g, start in enumerate(range(0, count, 6)):
        size = min(6, count - start)
        width = size.bit_length()
        terms = " + ".join(f"{name}_t[{i}]" for i in range(start, start + size))
        lines.append(f"  wire [{width - 1}:0] {name}_0_{g} = {terms};")
        level.append((f"{name}_0_{g}", size))
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for g in range(0, len(level), 2):
            pair = level[g : g + 2]
            total = sum(m for _, m in pair)
            wire = f"{name}_{depth}_{g // 2}"
            lines.append(f"  wire [{total.bit_length() - 1}:0] {wire} = " + " + ".join(w for w, _ in pair) + ";")
            nxt.append((wire, total))
        level = nxt
    lines.append(f"  wire [{count.bit_length() - 1}:0] {name} = {level[0][0]};")
    return lines


def _popcount_threshold_layer(layer, module):
    lines = [KEEP, f"module {module} (input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"]
    for n in range(layer.units):
        vector, weights, count = _terms(layer, n)
        lines += _popcount(f"p{n}", vector, weights, count)
        need = -(-(int(layer.threshold[n]) + count) // 2)  # s >= T  <=>  popcount >= ceil((T + count) / 2)
        lines.append(f"  assign y[{n}] = {'1' if need <= 0 else '0' if need > count else f'p{n} >= {need}'};")
    return lines + ["endmodule"]


def _score_layer(layer, module, class_bits):
    a, b, f, conflicts = layer.integer_scores()
    count = layer.k if layer.kind == "sparse" else layer.fan_in
    width = max(max(abs(v) * count + abs(w) for v, w in zip(a, b)).bit_length() + 2, count.bit_length() + 2)
    lines = [f"// class score = A * popcount + B, scaled by 2**{f} ({conflicts} reachable pairs ordered differently)",
             KEEP, f"module {module} (input wire [{layer.fan_in - 1}:0] x, output wire [{class_bits - 1}:0] class_idx);"]
    for n in range(layer.units):
        vector, weights, _ = _terms(layer, n)
        lines += _popcount(f"p{n}", vector, weights, count)
        lines.append(f"  wire signed [{width - 1}:0] s{n} = $signed({{1'b0, p{n}}}) * {_signed(a[n], width)} "
                     f"+ {_signed(b[n], width)};")
    level = [(f"s{n}", f"{class_bits}'d{n}") for n in range(layer.units)]
    depth = 0
    while len(level) > 1:  # argmax tree: the right (higher classes) wins only if strictly greater
        depth += 1
        nxt = []
        for g in range(0, len(level), 2):
            if g + 1 == len(level):
                nxt.append(level[g])
                continue
            (sa, ia), (sb, ib) = level[g], level[g + 1]
            name = f"m{depth}_{g // 2}"
            lines += [f"  wire {name}_r = {sb} > {sa};",
                      f"  wire signed [{width - 1}:0] {name}_s = {name}_r ? {sb} : {sa};",
                      f"  wire [{class_bits - 1}:0] {name}_i = {name}_r ? {ib} : {ia};"]
            nxt.append((f"{name}_s", f"{name}_i"))
        level = nxt
    lines += [f"  assign class_idx = {level[0][1]};", "endmodule"]
    return lines, f, conflicts


def _signed(value, width):
    return f"-{width}'sd{-value}" if value < 0 else f"{width}'sd{value}"


def _top(net, modules, class_bits, pipeline):
    n_in = net.layers[0].fan_in
    ports = ["input wire clk"] if pipeline else []
    lines = [f"module {TOP} ({', '.join(ports + [f'input wire [{n_in - 1}:0] x', f'output wire [{class_bits - 1}:0] class_idx'])});"]
    previous = "x"
    for i, (layer, module) in enumerate(zip(net.layers, modules), start=1):
        last = layer is net.layers[-1]
        width, port, reg = (class_bits, "class_idx", "c") if last else (layer.units, "y", f"h{i}")
        lines.append(f"  wire [{width - 1}:0] {reg}_d;")
        lines.append(f"  {module} u{i} (.x({previous}), .{port}({reg}_d));")
        if pipeline:
            lines += [f"  reg [{width - 1}:0] {reg} = 0;", f"  always @(posedge clk) {reg} <= {reg}_d;"]
        else:
            lines.append(f"  wire [{width - 1}:0] {reg} = {reg}_d;")
        previous = reg
    return lines + ["  assign class_idx = c;", "endmodule"]


def _testbench(design):
    hidden = [f"h{i}" for i in range(1, len(design.layers))]
    formats, dump = " %h" * len(hidden), "".join(f", dut.{h}" for h in hidden)
    clock = ".clk(clk), " if design.pipeline else ""
    step = "#1 clk = 1; #1 clk = 0;" if design.pipeline else "#1;"
    extra = design.latency - 1 if design.pipeline else 0
    return "\n".join([
        "`timescale 1ns/1ps", "module tb;",
        "  reg clk = 0;", f"  reg [{design.input_bits - 1}:0] x = 0, xin = 0;", f"  wire [{design.class_bits - 1}:0] c;",
        "  integer fin, fout, n, i, r, hidden;",
        f"  {TOP} dut ({clock}.x(x), .class_idx(c));",
        "  initial begin",
        '    fin = $fopen("inputs.hex", "r"); fout = $fopen("outputs.txt", "w");',
        '    if (!$value$plusargs("hidden=%d", hidden)) hidden = 0;',
        '    r = $fscanf(fin, "%d", n);',
        f"    for (i = 0; i < n + {extra}; i = i + 1) begin",
        # read into xin, then assign: Verilator 5.006 does not re-evaluate logic fed by a $fscanf target
        '      if (i < n) begin r = $fscanf(fin, "%h", xin); x = xin; end',
        f"      {step}",
        f'      if (hidden) $fwrite(fout, "%0d{formats}\\n", c{dump}); else $fwrite(fout, "%0d\\n", c);',
        "    end",
        "    $fclose(fout); $finish;",
        "  end", "endmodule", "",
    ])


def _require_writable(out_dir, overwrite):
    existing = [name for name in FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass overwrite=True to replace them.")
    os.makedirs(out_dir, exist_ok=True)


def to_verilog(model_or_lowered, out_dir, pipeline=True, overwrite=False, granularity="layer"):
    """Write the Verilog netlist, its testbench and ``design.json``; returns the :class:`VerilogDesign`.

    ``granularity``: ``"layer"`` (one module per layer, the tables as constants inside) or
    ``"neuron"`` (one module per neuron, instantiated by its layer's module).
    """
    if granularity not in ("layer", "neuron"):
        raise ValueError(f"granularity must be 'layer' or 'neuron', got {granularity!r}.")
    net = check_lut_net(lowered_of(model_or_lowered))
    out_dir = os.fspath(out_dir)
    _require_writable(out_dir, overwrite)
    class_bits = max(1, (net.num_classes - 1).bit_length())
    lines, modules, info = [f"// {TOP}: generated by iprune_tf.export.verilog", "`default_nettype none"], [], []
    fraction_bits = conflicts = 0
    for i, layer in enumerate(net.layers, start=1):
        module = f"layer_{i}_{layer.name}"
        modules.append(module)
        if layer is net.layers[-1]:
            body, fraction_bits, conflicts = _score_layer(layer, module, class_bits)
            style = "popcount_argmax"
        elif layer.kind == "sparse":
            body, style = _table_layer(layer, module, granularity), "truth_tables"
        else:
            body, style = _popcount_threshold_layer(layer, module), "popcount_threshold"
        lines += body
        info.append({"name": layer.name, "module": module, "style": style, "kind": layer.kind, "k": layer.k,
                     "fan_in": layer.fan_in, "units": layer.units})
    lines += _top(net, modules, class_bits, pipeline) + ["`default_nettype wire", ""]
    design = VerilogDesign(out_dir, net.layers[0].fan_in, class_bits, net.num_classes,
                           len(net.layers) if pipeline else 0, pipeline, granularity, info, fraction_bits, conflicts)
    with open(design.path("net.v"), "w") as f:
        f.write("\n".join(lines))
    with open(design.path("tb.v"), "w") as f:
        f.write(_testbench(design))
    with open(design.path("design.json"), "w") as f:
        json.dump({k: v for k, v in dataclasses.asdict(design).items() if k != "out_dir"}, f, indent=2)
    return design
