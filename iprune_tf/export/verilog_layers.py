"""The Verilog module of each lowered layer: truth tables per neuron, popcount thresholds, and the output head.

The output head (any of dense, pruned or group-sum) is a popcount per class, an integer score and an
argmax, built as trees whose levels can be registered (``tree_levels``) so that no pipeline stage is
much deeper than a hidden layer. :mod:`iprune_tf.export.verilog` assembles these modules into a design.
"""
import numpy as np

from iprune_tf.export.verilog_trees import LUT_ROM_ENTRIES, Levels, kept_register

KEEP = "(* keep_hierarchy *)"  # layer modules survive Yosys' flatten: per-layer figures from one synthesis


def _hex(bits):
    """Verilog hex digits of a bit sequence, bits[0] the least significant."""
    value = int("".join("1" if b else "0" for b in reversed(list(bits))), 2)
    return f"{len(bits)}'h{value:0{-(-len(bits) // 4)}x}"


def table_layer(layer, module, granularity, input_registers=False):
    """A pruned layer: one truth table per neuron, in one module or one module per neuron.

    ``input_registers``: each neuron reads its K inputs through a K-bit register of its own (one
    clock more), which Yosys must not merge with another neuron's copy of the same bits: the placer
    can then put it between the bits' source and the neuron, splitting a long wire over two clocks.
    """
    tables, lines, neurons = layer.truth_tables(), [], []
    clock = "input wire clk, " if input_registers else ""
    header = f"{KEEP}\nmodule {module} ({clock}input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"
    for n in range(layer.units):
        address = _address(layer.indices[n])
        if input_registers:
            lines += kept_register(f"a{n}", layer.k, address)
            address = f"a{n}"
        if granularity == "neuron":
            neurons += [f"module {module}_n{n} (input wire [{layer.k - 1}:0] a, output wire y);",
                        f"  localparam [{2 ** layer.k - 1}:0] T = {_hex(tables[n])};", "  assign y = T[a];", "endmodule"]
            lines.append(f"  {module}_n{n} n{n} (.a({address}), .y(y[{n}]));")
        else:
            lines += [f"  localparam [{2 ** layer.k - 1}:0] T{n} = {_hex(tables[n])};",
                      f"  assign y[{n}] = T{n}[{address}];"]
    return neurons + [header, *lines, "endmodule"]


def _address(indices, source="x"):
    return "{" + ", ".join(f"{source}[{i}]" for i in reversed(indices.tolist())) + "}"


def _terms(layer, n, source="x"):
    """(Verilog bit vector of a neuron's inputs in ``source``, its weight bits, count) for a popcount of agreements."""
    if layer.kind == "sparse":
        return _address(layer.indices[n], source), layer.signs[n] > 0, layer.k
    return source, layer.signs[n] > 0, layer.fan_in


def _popcounts(levels, layer, flip=()):
    """Per neuron the popcount of its agreement bits (disagreements for neurons in ``flip``): items ((wire, count),).

    A carry-save tree (:meth:`~iprune_tf.export.verilog_trees.Levels.count_ones`): counters of up to
    COUNTER_BITS bits, then one adder. With ``levels.input_copies`` G, the neurons fall into G groups
    (consecutive neurons), each reading its own registered copy of the input (one clock before level 0).
    """
    bits, copies = [], {}
    for n in range(layer.units):
        source = "x"
        if levels.input_copies:
            group = n * levels.input_copies // layer.units
            if group not in copies:
                copies[group] = levels.copy(f"xg{group}", layer.fan_in, "x")
            source = copies[group]
        vector, weights, count = _terms(layer, n, source)
        weights = ~weights if n in flip else weights
        levels.lines.append(f"  wire [{count - 1}:0] t{n} = ~({vector} ^ {_hex(weights)});")
        bits.append([f"t{n}[{i}]" for i in range(count)])
    return [(item,) for item in levels.count_ones("p", bits)]


def popcount_threshold_layer(layer, module):
    levels = Levels()
    counts = _popcounts(levels, layer)
    lines = [KEEP, f"module {module} (input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"]
    for n, ((p, count),) in enumerate(counts):
        need = -(-(int(layer.threshold[n]) + count) // 2)  # s >= T  <=>  popcount >= ceil((T + count) / 2)
        levels.lines.append(f"  assign y[{n}] = {'1' if need <= 0 else '0' if need > count else f'{p} >= {need}'};")
    return lines + levels.lines + ["endmodule"]


def unsigned_scores(layer):
    """``(A, B, flip, F, conflicts)``: class scores ``A[c] * popcount + B[c]`` with A, B >= 0, ordered as Keras'.

    From :meth:`~iprune_tf.export.lowered.LoweredLayer.integer_scores`; a class with ``a < 0`` counts disagreements instead
    (``a * p + b = |a| * (count - p) + b + a * count``) and one offset common to all classes makes
    every B non-negative, so the hardware adds and compares unsigned numbers only.
    """
    a, b, fraction_bits, conflicts = layer.integer_scores()
    counts = [_terms(layer, n)[2] for n in range(layer.units)]
    flip = {n for n in range(layer.units) if a[n] < 0}
    b = [b[n] + (a[n] * counts[n] if n in flip else 0) for n in range(layer.units)]
    low = min(b)
    return [abs(v) for v in a], [v - min(low, 0) for v in b], flip, fraction_bits, conflicts


def _score_terms(p, count, a, b, width):
    """Items summing to ``a * p + b``: shifted copies of p per set bit of a, or a's multiples per bit of p."""
    if a == 0:
        terms = []
    elif bin(a).count("1") <= count.bit_length():
        terms = [(f"{{{p}, {i}'b0}}" if i else p, count << i) for i in range(a.bit_length()) if a >> i & 1]
    else:
        terms = [(f"{p}[{j}] ? {width}'d{a << j} : {width}'d0", a << j) for j in range(count.bit_length())]
    terms += [(f"{width}'d{b}", b)] if b or not terms else []
    return [(term,) for term in terms]


def score_ranks(layer):
    """int (units, count + 1): the rank of each class's float32 score at each popcount among all of them.

    Equal scores get equal ranks, so an argmax over ranks that keeps the lower class on ties picks
    Keras' class exactly, with ``ceil(log2(units * (count + 1)))``-bit numbers instead of ``A * p + B``.
    """
    floats = layer.reachable_scores()
    return np.unique(floats, return_inverse=True)[1].reshape(floats.shape)


def _affine_scores(levels, layer):
    """Per class ``A * popcount + B`` (:func:`unsigned_scores`): items, F, conflicts."""
    a, b, flip, fraction_bits, conflicts = unsigned_scores(layer)
    scores = _popcounts(levels, layer, flip)
    if len(set(zip(a, b))) > 1 or a[0] == 0:  # else every score is one positive A times the popcount plus one B
        width = max(v * p[0][1] + w for v, w, p in zip(a, b, scores)).bit_length() + 1
        terms = [_score_terms(p[0][0], p[0][1], v, w, width) for v, w, p in zip(a, b, scores)]
        scores = levels.reduce("s", terms, levels.add)
    return scores, fraction_bits, conflicts


def _rank_scores(levels, layer):
    """Per class its :func:`score_ranks` table read at its popcount (the popcount itself where that orders the same)."""
    ranks = score_ranks(layer)
    counts = _popcounts(levels, layer)
    if (ranks == ranks[0]).all() and (np.diff(ranks[0]) > 0).all():
        return counts, None, 0
    reads = [levels.table(f"r{c}q", p, ranks[c].tolist()) for c, ((p, _),) in enumerate(counts)]
    levels.level += 1
    if ranks.shape[1] <= LUT_ROM_ENTRIES:  # tables in LUTs: the read is as deep as a hidden layer
        return [(q,) for q in reads], None, 0
    # a second register after a block RAM's read: its clock-to-output alone is most of a stage
    scores = [(levels.signal(f"r{c}", m, q),) for c, (q, m) in enumerate(reads)]
    levels.level += 1
    return scores, None, 0


SCORES = {"affine": _affine_scores, "ranks": _rank_scores}


def _head(layer, class_bits, scores, registered=frozenset(), compare_bits=None, input_copies=None):
    """The output layer's popcounts, scores and argmax: (levels, class index expression, F, conflicts, score bits)."""
    levels = Levels(registered, compare_bits, input_copies)
    items, fraction_bits, conflicts = SCORES[scores](levels, layer)
    items = [(score[0], (f"{class_bits}'d{c}", c)) for c, score in enumerate(items)]
    score_bits = max(int(m).bit_length() for (_, m), _ in items)
    _, (winner, _) = levels.argmax(items)
    return levels, winner, fraction_bits, conflicts, score_bits


def score_layer(layer, module, class_bits, tree_levels, scores="affine", compare_bits=None, input_copies=None):
    """The output layer as a module: (lines, F, conflicts, registers, score bits).

    ``scores``: "affine" (``A * popcount + B``) or "ranks" (:func:`score_ranks`). With
    ``tree_levels``, a register after every that many levels, except after the last (the top
    registers the class). ``compare_bits``: the argmax compares chunks of at most that many bits
    (:meth:`Levels.argmax`); ``input_copies``: that many registered copies of the input, each read by
    a group of classes (:func:`_popcounts`).
    """
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {tuple(SCORES)}, got {scores!r}.")
    registered = frozenset()
    if tree_levels:
        depth = _head(layer, class_bits, scores, compare_bits=compare_bits)[0].level
        registered = frozenset(range(tree_levels - 1, depth - 1, tree_levels))
    levels, winner, fraction_bits, conflicts, score_bits = _head(layer, class_bits, scores, registered, compare_bits,
                                                                 input_copies)
    clocks = len(registered) + int(bool(input_copies))
    ports = (["input wire clk"] if clocks else []) + [f"input wire [{layer.fan_in - 1}:0] x",
                                                      f"output wire [{class_bits - 1}:0] class_idx"]
    what = (f"A * popcount + B, scaled by 2**{fraction_bits} ({conflicts} reachable pairs ordered differently)"
            if scores == "affine" else "the rank of the float32 score among all classes' reachable scores")
    lines = [f"// class score ({score_bits} bits) = {what}; {clocks} pipeline registers", KEEP,
             f"module {module} ({', '.join(ports)});"]
    body = lines + levels.lines + [f"  assign class_idx = {winner};", "endmodule"]
    return body, fraction_bits, conflicts, clocks, score_bits
