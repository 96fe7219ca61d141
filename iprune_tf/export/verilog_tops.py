"""The top modules and testbenches around the layer chain of :mod:`iprune_tf.export.verilog`.

``lut_net`` chains the layer modules (registered with ``pipeline``); ``lut_stream`` feeds it from a
``bus_width``-bit input bus with valid flags. Each has a testbench that reads ``inputs.hex`` and
writes the classes (and, for ``lut_net``, every hidden layer's bits) to ``outputs.txt``.
"""
TOP = "lut_net"
STREAM_TOP = "lut_stream"


def top_module(net, modules, class_bits, pipeline, clocked):
    """``lut_net``: the layer modules in a chain, each output registered with ``pipeline``; ``clocked``: the
    layer numbers (1-based) whose modules hold registers of their own and take the clock."""
    n_in = net.layers[0].fan_in
    ports = ["input wire clk"] if pipeline else []
    lines = [f"module {TOP} ({', '.join(ports + [f'input wire [{n_in - 1}:0] x', f'output wire [{class_bits - 1}:0] class_idx'])});"]
    previous = "x"
    for i, (layer, module) in enumerate(zip(net.layers, modules), start=1):
        last = layer is net.layers[-1]
        width, port, reg = (class_bits, "class_idx", "c") if last else (layer.units, "y", f"h{i}")
        clock = ".clk(clk), " if i in clocked else ""
        lines.append(f"  wire [{width - 1}:0] {reg}_d;")
        lines.append(f"  {module} u{i} ({clock}.x({previous}), .{port}({reg}_d));")
        if pipeline:
            lines += [f"  reg [{width - 1}:0] {reg} = 0;", f"  always @(posedge clk) {reg} <= {reg}_d;"]
        else:
            lines.append(f"  wire [{width - 1}:0] {reg} = {reg}_d;")
        previous = reg
    return lines + ["  assign class_idx = c;", "endmodule"]


def stream_top(design):
    """``lut_stream``: an input shift register filled ``bus_width`` bits per valid clock, ``lut_net`` and a valid chain.

    Word i of an image lands in bits ``[i*W +: W]``; the clock after its last word, the network reads
    the full register while the next image may already shift in (its first stage registers first).
    """
    w, words, latency = design.bus_width, design.words, design.latency
    count_bits = max(1, (words - 1).bit_length())
    shift = "in_data" if words == 1 else f"{{in_data, frame[{words * w - 1}:{w}]}}"
    return [
        f"module {STREAM_TOP} (input wire clk, input wire in_valid, input wire [{w - 1}:0] in_data,",
        f"                   output wire out_valid, output wire [{design.class_bits - 1}:0] class_idx);",
        f"  reg [{words * w - 1}:0] frame = 0;",
        f"  reg [{count_bits - 1}:0] count = 0;",
        "  reg start = 0;",
        f"  reg [{latency - 1}:0] valid = 0;",
        "  always @(posedge clk) begin",
        f"    start <= in_valid && count == {words - 1};",
        "    valid <= {valid, start};" if latency > 1 else "    valid <= start;",
        "    if (in_valid) begin",
        f"      frame <= {shift};",
        f"      count <= count == {words - 1} ? 0 : count + 1;",
        "    end",
        "  end",
        f"  {TOP} net (.clk(clk), .x(frame[{design.input_bits - 1}:0]), .class_idx(class_idx));",
        f"  assign out_valid = valid[{latency - 1}];",
        "endmodule",
    ]


INPUT_CHUNK_BITS = 4096  # Verilator refuses $fscanf targets wider than 8,192 bits


def input_chunks(design):
    """(bits per chunk, chunks) of one input vector in ``inputs.hex``, lowest chunk first: wide inputs (11,760 bits
    for 15 thermometer levels) are read a chunk at a time."""
    width = design.words * design.bus_width if design.io == "stream" else design.input_bits
    chunk = min(width, INPUT_CHUNK_BITS)
    return chunk, -(-width // chunk)


def _read_vector(design):
    """Testbench declarations and the statement that reads one input vector into ``xin``."""
    chunk, count = input_chunks(design)
    declarations = [f"  reg [{chunk - 1}:0] part = 0;", f"  reg [{chunk * count - 1}:0] xin = 0;", "  integer p;"]
    return declarations, (f'for (p = 0; p < {count}; p = p + 1) begin r = $fscanf(fin, "%h", part); '
                          f"xin[p * {chunk} +: {chunk}] = part; end")


def testbench(design):
    declarations, read = _read_vector(design)
    hidden = [f"h{i}" for i in range(1, len(design.layers))]
    formats, dump = " %h" * len(hidden), "".join(f", dut.{h}" for h in hidden)
    clock = ".clk(clk), " if design.pipeline else ""
    step = "#1 clk = 1; #1 clk = 0;" if design.pipeline else "#1;"
    extra = design.latency - 1 if design.pipeline else 0
    return "\n".join([
        "`timescale 1ns/1ps", "module tb;",
        "  reg clk = 0;", f"  reg [{design.input_bits - 1}:0] x = 0;", *declarations,
        f"  wire [{design.class_bits - 1}:0] c;",
        "  integer fin, fout, n, i, r, hidden;",
        f"  {TOP} dut ({clock}.x(x), .class_idx(c));",
        "  initial begin",
        '    fin = $fopen("inputs.hex", "r"); fout = $fopen("outputs.txt", "w");',
        '    if (!$value$plusargs("hidden=%d", hidden)) hidden = 0;',
        '    r = $fscanf(fin, "%d", n);',
        f"    for (i = 0; i < n + {extra}; i = i + 1) begin",
        # read into xin, then assign: Verilator 5.006 does not re-evaluate logic fed by a $fscanf target
        f"      if (i < n) begin {read} x = xin[{design.input_bits - 1}:0]; end",
        f"      {step}",
        f'      if (hidden) $fwrite(fout, "%0d{formats}\\n", c{dump}); else $fwrite(fout, "%0d\\n", c);',
        "    end",
        "    $fclose(fout); $finish;",
        "  end", "endmodule", "",
    ])


def stream_testbench(design):
    """Feeds every image word by word, an idle clock after every third image; writes each valid class."""
    w, words = design.bus_width, design.words
    declarations, read = _read_vector(design)
    return "\n".join([
        "`timescale 1ns/1ps", "module tb;",
        "  reg clk = 0, in_valid = 0;", f"  reg [{w - 1}:0] in_data = 0;",
        *declarations, f"  wire [{design.class_bits - 1}:0] c;", "  wire out_valid;",
        "  integer fin, fout, n, i, j, r, done;",
        f"  {STREAM_TOP} dut (.clk(clk), .in_valid(in_valid), .in_data(in_data), .out_valid(out_valid), .class_idx(c));",
        "  task tick; begin",
        "    #1 clk = 1; #1 clk = 0;",
        '    if (out_valid) begin $fwrite(fout, "%0d\\n", c); done = done + 1; end',
        "  end endtask",
        "  initial begin",
        '    fin = $fopen("inputs.hex", "r"); fout = $fopen("outputs.txt", "w"); done = 0;',
        '    r = $fscanf(fin, "%d", n);',
        "    for (i = 0; i < n; i = i + 1) begin",
        f"      {read}",
        f"      for (j = 0; j < {words}; j = j + 1) begin in_valid = 1; in_data = xin[j * {w} +: {w}]; tick; end",
        "      if (i % 3 == 2) begin in_valid = 0; tick; end",
        "    end",
        "    in_valid = 0;",
        f"    for (i = 0; i < {design.latency + 1} && done < n; i = i + 1) tick;",
        "    $fclose(fout); $finish;",
        "  end", "endmodule", "",
    ])
