"""Run a :func:`~iprune_tf.export.verilog.to_verilog` design in the hardware toolchain.

* :func:`simulate`: its generated testbench in Icarus Verilog or Verilator on given input vectors;
  returns the predicted classes and, on request, every hidden layer's bits per input.
* :func:`synthesize`: Yosys to generic 6-input LUTs (``synth -lut 6``) or to iCE40 LUT4s
  (``synth_ice40``): LUTs, flip-flops and logic depth (``ltp -noff``) per layer and in total.
* :func:`verify`: simulate on inputs and compare with Keras' classes and the lowered model's bits.

The tools are Debian packages (``iverilog``, ``verilator``, ``yosys``); a missing one raises
:class:`~iprune_tf.export.tools.ToolMissing` naming the package.
"""
import dataclasses
import os
import re
import resource
import subprocess
import tempfile

import numpy as np

from iprune_tf.export.lowered import LoweredLayer
from iprune_tf.export.verilog import VerilogDesign, input_bits, lowered_of
from iprune_tf.export import verilog_tops as tops
from iprune_tf.export.tools import require_tool

SYNTH = {  # (flattened, hierarchy kept)
    "lut6": ("synth -flatten -lut 6 -top {top}", "synth -lut 6 -top {top}"),
    "ice40": ("synth_ice40 -top {top}", "synth_ice40 -noflatten -top {top}"),
}
LUT_CELLS = {"lut6": ("$lut",), "ice40": ("SB_LUT4",)}



def _run(cmd, cwd, timeout):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}{result.stdout[-2000:]}")
    return result.stdout


@dataclasses.dataclass
class Simulation:
    """Classes (N,) predicted by the netlist and, if asked for, hidden bits per layer [(N, units)]."""

    classes: np.ndarray
    hidden: list


def _write_inputs(path, bits, design):
    """One line per input vector: its chunks (:func:`~iprune_tf.export.verilog_tops.input_chunks`) in hex, lowest
    chunk first."""
    chunk, count = tops.input_chunks(design)
    digits, mask = -(-chunk // 4), (1 << chunk) - 1
    weights = 1 << np.arange(bits.shape[1], dtype=object)
    with open(path, "w") as f:
        f.write(f"{len(bits)}\n")
        for row in bits:
            value = int(np.dot(row.astype(object), weights))
            f.write(" ".join(f"{(value >> (p * chunk)) & mask:0{digits}x}" for p in range(count)) + "\n")


def _hex_bits(text, units):
    """Bits 0..units-1 (LSB first) of a hex number."""
    data = int(text, 16).to_bytes(-(-units // 8), "little")
    return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:units]


def _build(design, simulator, work, sources=None, include=(), defines=()):
    """Compile the testbench with ``sources`` (default the design's ``net.v``); returns the command to run."""
    flags = [*(f"-I{i}" for i in include), *(f"-D{d}" for d in defines)]
    tb_v = os.path.abspath(design.path("tb.v"))
    sources = [os.path.abspath(s) for s in (sources or [design.path("net.v")])]
    if simulator == "iverilog":
        _run([require_tool("iverilog"), "-g2005", *flags, "-o", "sim", tb_v, *sources], work, 3600)
        return [require_tool("vvp"), "-n", "sim"]
    if simulator == "verilator":
        _run([require_tool("verilator"), "--binary", "-j", "2", "-Wno-fatal", "-Wno-lint",
              *flags, "--top-module", "tb", "-Mdir", "obj", tb_v, *sources], work, 3600)
        return [os.path.join(work, "obj", "Vtb")]
    raise ValueError(f"simulator must be 'iverilog' or 'verilator', got {simulator!r}.")


def simulate(design, bits, simulator="iverilog", hidden=False, timeout=3600, sources=None, include=(), defines=()):
    """Run the testbench on input vectors ``bits`` (uint8 (N, input_bits)); returns a :class:`Simulation`.

    ``sources`` replace ``net.v`` (e.g. a synthesized netlist and its cell models, with their include
    directories and preprocessor ``defines``). A streaming design's testbench writes one class per valid output, no hidden bits.
    """
    design = design if isinstance(design, VerilogDesign) else VerilogDesign.load(design)
    bits = np.asarray(bits, dtype=np.uint8)
    if bits.ndim != 2 or bits.shape[1] != design.input_bits:
        raise ValueError(f"Expected input vectors of shape (N, {design.input_bits}), got {bits.shape}.")
    if hidden and design.io == "stream":
        raise ValueError("A streaming design's testbench writes classes only; export with io='parallel' for hidden bits.")
    with tempfile.TemporaryDirectory(prefix="iprune_sim_") as work:
        command = _build(design, simulator, work, sources, include, defines)
        _write_inputs(os.path.join(work, "inputs.hex"), bits, design)
        _run(command + [f"+hidden={int(hidden)}"], work, timeout)
        with open(os.path.join(work, "outputs.txt")) as f:
            rows = [line.split() for line in f if line.strip()]
    skip = design.latency - 1 if design.pipeline and design.io == "parallel" else 0
    classes = np.array([int(r[0]) for r in rows[skip:]], dtype=np.int64)
    layers = []
    for i, layer in enumerate(design.layers[:-1] if hidden else [], start=1):
        offset = design.clocks_to(i) - 1 if design.pipeline else 0  # h_i holds input k-c+1 after clock k, c clocks in
        layers.append(np.array([_hex_bits(r[i], layer["units"]) for r in rows[offset : offset + len(bits)]], np.uint8))
    if len(classes) != len(bits):
        raise RuntimeError(f"The testbench wrote {len(classes)} classes for {len(bits)} inputs.")
    return Simulation(classes, layers)


def _module_figures(section, target):
    cells = {name: int(n) for name, n in re.findall(r"^\s+(\S+)\s+(\d+)\s*$", section, re.M)}
    return {"luts": sum(cells.get(c, 0) for c in LUT_CELLS[target]),
            "flip_flops": sum(n for c, n in cells.items() if "DFF" in c),
            "cells": int(re.search(r"Number of cells:\s+(\d+)", section).group(1))}


def _yosys_figures(log, target, design):
    """Per layer module and total: LUTs, flip-flops, cells and depth, from ``stat -top; ltp -noff``."""
    sections = dict(re.findall(r"=== (.+?) ===\n(.*?)(?==== |\d+\. Executing|\Z)", log, re.S))
    depths = dict(re.findall(r"Longest topological path in (\S+) \(length=(\d+)\)", log))
    layers = {}
    for layer in design.layers:
        layers[layer["name"]] = {**_module_figures(sections[layer["module"]], target),
                                 "depth": int(depths.get(layer["module"], 0))}
    total = _module_figures(sections["design hierarchy"], target)
    per_layer = [f["depth"] for f in layers.values()]
    total["depth"] = max(per_layer) if design.pipeline else sum(per_layer)
    return {"target": target, "total": total, "layers": layers}


def synthesize(design, target="lut6", flatten=True, timeout=7200):
    """Yosys synthesis of the whole design for ``target`` ('lut6' or 'ice40'), figures per layer and total.

    Layer modules keep their hierarchy (``keep_hierarchy``), so one run gives each layer's LUTs and
    depth (LUTs on the longest path; with ``pipeline`` the total depth is the deepest stage, else the
    sum). ``flatten=False`` also keeps per-neuron modules separate (no optimization across them).
    """
    design = design if isinstance(design, VerilogDesign) else VerilogDesign.load(design)
    if target not in SYNTH:
        raise ValueError(f"target must be one of {sorted(SYNTH)}, got {target!r}.")
    command = SYNTH[target][0 if flatten else 1].format(top=tops.TOP)
    script = (f"read_verilog {os.path.abspath(design.path('net.v'))}; {command}; "
              f"tee -o stat.log stat -top {tops.TOP}; tee -a stat.log ltp -noff")
    before = _children_cpu()
    with tempfile.TemporaryDirectory(prefix="iprune_yosys_") as work:
        _run([require_tool("yosys"), "-q", "-p", script], work, timeout)
        with open(os.path.join(work, "stat.log")) as f:
            figures = _yosys_figures(f.read(), target, design)
    return {**figures, "cpu_s": round(_children_cpu() - before, 1)}


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def verify(model, design, x, simulator="iverilog"):
    """Simulate ``x`` once and compare: classes with Keras' argmax, every hidden bit with the lowered model's.

    Returns counts: ``class_agreement`` (inputs whose netlist class equals Keras') and
    ``hidden_bit_mismatches`` (per hidden layer), plus the netlist's ``classes``.
    """
    net = lowered_of(model)
    keras_classes = np.argmax(model.predict(x, batch_size=1000, verbose=0), axis=1)
    sim = simulate(design, input_bits(net, x), simulator, hidden=design.io == "parallel")
    mismatched = [0] * len(sim.hidden)
    for start in range(0, len(x), 1000):
        outputs = net.activations(x[start : start + 1000])[1 if net.input_encoding else 0 :]
        acts = [a for a, step in zip(outputs, net.steps) if isinstance(step, LoweredLayer) and step is not net.layers[-1]]
        for i, (h, a) in enumerate(zip(sim.hidden, acts)):
            mismatched[i] += int(np.sum(h[start : start + 1000] != (a.reshape(len(a), -1) > 0)))
    return {"samples": len(x), "class_agreement": int(np.sum(sim.classes == keras_classes)),
            "hidden_bit_mismatches": mismatched, "classes": sim.classes}
