"""Reading nextpnr's results for :mod:`iprune_tf.export.fpga`: its report and log, and the :class:`FpgaReport` they fill.

nextpnr's ``--report`` JSON gives the utilization of the part's resources, the Fmax per clock and
the critical path (cells, nets, delays, source lines); :func:`critical_path` names the layers that
path crosses. :func:`stage_seconds` reads nextpnr's own placement and routing times from its log.
"""
import dataclasses
import json
import os
import re

from iprune_tf.export.verilog_tops import STREAM_TOP, TOP


@dataclasses.dataclass
class FpgaReport:
    """What :func:`~iprune_tf.export.fpga.place_and_route` measured (``tools``: the program and version behind each figure)."""

    device: str
    top: str
    out_of_context: bool
    clock_mhz: float
    cells: dict
    luts: int
    flip_flops: int
    utilization: dict
    logic_percent: float
    fmax_mhz: float
    critical_path: dict
    bitstream: str | None
    bitstream_bytes: int | None
    seconds: dict
    tools: dict
    files: dict
    latency_clocks: int | None = None
    latency_ns: float | None = None
    images_per_s: float | None = None
    speed_grade: int | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def critical_path(report, design, synth_json=None):
    """The longest path of nextpnr's report: start and end cells, delay and the layers it runs through.

    ``synth_json``: Yosys' netlist, where :func:`register_lines` finds the ``net.v`` line of each
    endpoint register. Where both ends have one, the path is labelled by the layers whose outputs the
    two registers hold; else by its nets (:func:`_layers_of`). Register names alone mislead: Yosys names
    a flip-flop after any alias of its output, e.g. a layer's output register after a wire inside the
    next layer.
    """
    paths = report.get("critical_paths") or []
    if not paths:
        return {}
    path = paths[0]["path"]
    ends = [path[0]["from"]["cell"], path[-1]["to"]["cell"]]
    found = register_lines(synth_json, ends) if synth_json else {}
    lines = [found.get(cell) for cell in ends]
    if all(lines):
        spans, text = _spans(design)
        layers = _unique([_register_label(line, spans, text, design) for line in lines])
    else:
        layers = _layers_of(path, design)
    return {"from": ends[0], "to": ends[1], "delay_ns": round(sum(step.get("delay", 0.0) for step in path), 3),
            "layers": layers, "steps": len(path)}


def register_lines(synth_json, cells):
    """The ``net.v`` line of each of ``cells`` in Yosys' netlist (its ``src`` attribute), where it has one."""
    with open(synth_json) as f:
        modules = json.load(f)["modules"].values()
    found = {}
    for cell in cells:
        for module in modules:
            src = module["cells"].get(cell, {}).get("attributes", {}).get("src", "")
            line = re.match(r"net\.v:(\d+)\.", src)
            if line:
                found[cell] = int(line.group(1))
    return found


def _spans(design):
    """(first line, last line, part of the design) of each module in ``net.v``, and its lines."""
    names = {layer["module"]: layer["name"] for layer in design.layers}
    names.update({TOP: "layer registers", STREAM_TOP: "stream input"})
    spans, module = [], None
    with open(design.path("net.v")) as f:
        text = f.read().splitlines()
    for number, line in enumerate(text, start=1):
        found = re.match(r"module (\w+)", line)
        if found:
            module, first = found.group(1), number
        elif line.startswith("endmodule") and module:
            spans.append((first, number, names.get(module, module)))
    return spans, text


def _register_label(line, spans, text, design):
    """The layer whose output a register (its ``net.v`` line) holds; a register inside a layer: that layer."""
    part = next((name for first, last, name in spans if first <= line <= last), None)
    held = re.search(r"\b(?:h(\d+)|(c)) <=", text[line - 1])
    if part == "layer registers" and held:
        return design.layers[int(held.group(1)) - 1 if held.group(1) else -1]["name"]
    return part


def _unique(labels):
    """``labels`` without Nones and without a label repeating the one before it."""
    result = []
    for label in labels:
        if label and (not result or result[-1] != label):
            result.append(label)
    return result


def _layers_of(path, design):
    """The parts of the design (a layer, lut_net's layer registers, the stream input) a path's nets come from.

    From the nets' source lines in ``net.v`` where Yosys kept any, else from their hierarchical names
    (``net.u3.…``: the instance of layer 3; ``net.u3.x…``: its input register, fed by layer 2).
    """
    spans, _ = _spans(design)
    by_source = [next((name for src in step.get("sources", []) for m in [re.match(r"net\.v:(\d+)\.", src)] if m
                       for first, last, name in spans if first <= int(m.group(1)) <= last), None) for step in path]
    if not any(by_source):
        by_source = [_instance_of(step.get("net", ""), design) for step in path]
    return _unique(by_source)


def _instance_of(net, design):
    """The layer a flattened net name points to: ``u<i>.…`` layer i, ``u<i>.x…`` (its input) layer i - 1."""
    found = re.match(r"net\.u(\d+)\.(x\b|x_|x\[)?", net)
    if not found:
        return None
    index = int(found.group(1)) - (2 if found.group(2) else 1)
    return design.layers[index]["name"] if 0 <= index < len(design.layers) else "stream input"


def utilization(report, arch):
    used = {name: {"used": v["used"], "available": v["available"]} for name, v in report.get("utilization", {}).items()
            if v.get("used")}
    logic = used.get("TRELLIS_COMB" if arch == "ecp5" else "ICESTORM_LC", {"used": 0, "available": 1})
    return used, round(100.0 * logic["used"] / logic["available"], 2)


def fmax(report):
    clocks = report.get("fmax", {})
    return round(min(v["achieved"] for v in clocks.values()), 2) if clocks else float("inf")


def stage_seconds(log):
    """nextpnr's own placement and routing seconds, from its log."""
    return {stage: round(sum(float(t) for t in re.findall(pattern, log)), 1) for stage, pattern in (
        ("placement", r"(?:Placer Time:|SA placement time) ([\d.]+)s"), ("routing", r"Router\d* time ([\d.]+)s"))}


def summary(report):
    """One line of an :class:`FpgaReport`: cells, utilization, Fmax, critical path, latency, throughput, bitstream."""
    text = (f"{report.device}{' out of context' if report.out_of_context else ''}: {report.luts:,} LUT4, "
            f"{report.flip_flops:,} FF, {report.logic_percent}% of the logic, Fmax {report.fmax_mhz} MHz "
            f"(target {report.clock_mhz}; critical path: {' -> '.join(report.critical_path.get('layers', [])) or '?'})")
    if report.latency_clocks is not None:
        text += (f", latency {report.latency_clocks} clocks = {report.latency_ns} ns, "
                 f"{report.images_per_s:,.0f} images/s")
    if report.bitstream:
        text += f", {os.path.basename(report.bitstream)} {report.bitstream_bytes:,} bytes"
    return text
